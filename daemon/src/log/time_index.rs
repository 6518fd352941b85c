//! Sparse time index: `.timeindex` files of 12-byte big-endian entries
//! `(timestamp: i64, relative_offset: u32)`. An entry `(t, o)` promises that
//! every record at or before offset `o` in the segment has a timestamp ≤ t,
//! so a search for the first record with timestamp ≥ T may start after the
//! last entry with t < T. Timestamps strictly increase from entry to entry.

use std::path::Path;

use super::error::LogError;
use super::index::{IndexDefect, IndexFile};

/// Bytes per `.timeindex` entry.
pub const TIME_INDEX_ENTRY_BYTES: u32 = 12;

#[derive(Debug)]
pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
}

impl TimeIndex {
    pub(crate) fn create(
        path: &Path,
        base_offset: i64,
        capacity_bytes: u32,
    ) -> Result<TimeIndex, LogError> {
        let file = IndexFile::create(path, TIME_INDEX_ENTRY_BYTES, capacity_bytes)?;
        Ok(TimeIndex { file, base_offset })
    }

    /// Opens an existing time index and keeps its longest plausible prefix:
    /// strictly increasing timestamps and offsets, offsets below
    /// `next_offset_bound`; an all-zero entry marks unused space.
    pub(crate) fn open(
        path: &Path,
        base_offset: i64,
        next_offset_bound: i64,
    ) -> Result<Result<TimeIndex, IndexDefect>, LogError> {
        let mut file = match IndexFile::open(path, TIME_INDEX_ENTRY_BYTES)? {
            Ok(file) => file,
            Err(defect) => return Ok(Err(defect)),
        };
        let mut used = 0u32;
        let mut previous: Option<(i64, u32)> = None;
        while used < file.entries() {
            let (timestamp, relative) = decode(file.raw_entry(used));
            let all_zero = timestamp == 0 && relative == 0;
            let increasing = previous.is_none_or(|(t, r)| timestamp > t && relative >= r);
            let in_segment = base_offset + i64::from(relative) < next_offset_bound;
            if all_zero || !increasing || !in_segment {
                break;
            }
            previous = Some((timestamp, relative));
            used += 1;
        }
        file.set_entries(used);
        Ok(Ok(TimeIndex { file, base_offset }))
    }

    pub(crate) fn entries(&self) -> u32 {
        self.file.entries()
    }
    pub(crate) fn is_full(&self) -> bool {
        self.file.is_full()
    }
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
    pub(crate) fn file(&self) -> &std::sync::Arc<std::fs::File> {
        self.file.file()
    }
    pub(crate) fn capacity_entries(&self) -> u32 {
        self.file.capacity_entries()
    }

    /// Entry `n` as (timestamp, absolute offset).
    pub(crate) fn entry(&self, n: u32) -> (i64, i64) {
        assert!(n < self.entries());
        let (timestamp, relative) = decode(self.file.raw_entry(n));
        (timestamp, self.base_offset + i64::from(relative))
    }

    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        self.entries().checked_sub(1).map(|n| self.entry(n))
    }

    /// Appends `(timestamp, offset)` if it raises the indexed maximum.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        let relative = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&relative),
            "relative offset fits u32"
        );
        if let Some((last_timestamp, last_offset)) = self.last_entry() {
            if timestamp <= last_timestamp {
                return;
            }
            assert!(offset >= last_offset, "time index offsets never decrease");
        }
        if timestamp == 0 && relative == 0 {
            return; // would read back as unused space; the index stays correct without it
        }
        let mut entry = [0u8; TIME_INDEX_ENTRY_BYTES as usize];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&(relative as u32).to_be_bytes());
        self.file.push(&entry);
    }

    /// The offset after which the first record with timestamp ≥ `target`
    /// must lie: the last entry with timestamp < target, or None (scan the
    /// whole segment).
    pub(crate) fn lookup_before(&self, target: i64) -> Option<(i64, i64)> {
        let (mut low, mut high) = (0u32, self.entries());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.entry(middle).0 < target {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low.checked_sub(1).map(|n| self.entry(n))
    }

    /// Drops entries for offsets ≥ `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        let keep = (0..self.entries())
            .take_while(|&n| self.entry(n).1 < offset)
            .count() as u32;
        self.file.truncate_entries(keep);
    }

    pub(crate) fn resize(&mut self, capacity_bytes: u32) -> Result<(), LogError> {
        self.file.resize(capacity_bytes)
    }
    pub(crate) fn trim(&mut self) -> Result<(), LogError> {
        self.file.trim()
    }
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.file.sync()
    }
}

fn decode(raw: &[u8]) -> (i64, u32) {
    let mut timestamp = [0u8; 8];
    timestamp.copy_from_slice(&raw[..8]);
    let relative = u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
    (i64::from_be_bytes(timestamp), relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lookup_truncate_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000050.timeindex");
        let mut index = TimeIndex::create(&path, 50, 120).unwrap();
        index.maybe_append(1000, 55);
        index.maybe_append(900, 57); // not a new maximum: skipped
        index.maybe_append(2000, 60);
        index.maybe_append(3000, 70);
        assert_eq!(index.entries(), 3);
        assert_eq!(index.lookup_before(1000), None);
        assert_eq!(index.lookup_before(1001), Some((1000, 55)));
        assert_eq!(index.lookup_before(2500), Some((2000, 60)));
        assert_eq!(index.lookup_before(99_999), Some((3000, 70)));
        index.truncate_to(60);
        assert_eq!(index.last_entry(), Some((1000, 55)));
        index.maybe_append(1500, 58);
        drop(index);
        let reopened = TimeIndex::open(&path, 50, 100).unwrap().unwrap();
        assert_eq!(reopened.entries(), 2);
        let bounded = TimeIndex::open(&path, 50, 56).unwrap().unwrap();
        assert_eq!(bounded.entries(), 1);
    }
}
