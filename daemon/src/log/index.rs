//! Sparse offset index: `.index` files of 8-byte big-endian entries
//! `(relative_offset: u32, position: u32)`, preallocated and memory-mapped
//! while the segment is active, trimmed to the used entries when it rolls.
//!
//! The first batch of a segment (position 0) is never indexed, so an
//! all-zero entry marks the end of the used part of a preallocated file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};

use super::error::LogError;

/// Bytes per `.index` entry.
pub const OFFSET_INDEX_ENTRY_BYTES: u32 = 8;

/// A file of fixed-size entries, memory-mapped read-write. Shared by the
/// offset and time indexes; knows nothing about what the entries mean.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    /// Shared so a group commit can fsync it without the partition's lock
    /// (fsync writes back pages dirtied through the map as well).
    file: Arc<File>,
    mmap: MmapMut,
    entry_bytes: u32,
    entries: u32,
}

/// Why an existing index file cannot be used as is (it is rebuilt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexDefect {
    Missing,
    LengthNotMultiple,
}

impl IndexFile {
    /// Creates (or empties) the file and preallocates `capacity_bytes`.
    pub(crate) fn create(
        path: &Path,
        entry_bytes: u32,
        capacity_bytes: u32,
    ) -> Result<IndexFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(LogError::io("create", path))?;
        let mut index = IndexFile::map(path, file, entry_bytes, 0)?;
        index.resize(capacity_bytes)?;
        Ok(index)
    }

    /// Opens an existing file; the caller then finds the used entries.
    pub(crate) fn open(
        path: &Path,
        entry_bytes: u32,
    ) -> Result<Result<IndexFile, IndexDefect>, LogError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(IndexDefect::Missing));
            }
            Err(error) => return Err(LogError::io("open", path)(error)),
        };
        let len = file.metadata().map_err(LogError::io("stat", path))?.len();
        if len % u64::from(entry_bytes) != 0 || len > u64::from(u32::MAX) {
            return Ok(Err(IndexDefect::LengthNotMultiple));
        }
        let entries = (len / u64::from(entry_bytes)) as u32;
        Ok(Ok(IndexFile::map(path, file, entry_bytes, entries)?))
    }

    fn map(path: &Path, file: File, entry_bytes: u32, entries: u32) -> Result<IndexFile, LogError> {
        // SAFETY: the file is private to this partition directory, which only
        // this process writes; it is never shrunk while this map exists
        // (`resize` drops the map before set_len).
        let mmap =
            unsafe { MmapOptions::new().map_mut(&file) }.map_err(LogError::io("mmap", path))?;
        advise_random(&mmap, path)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            mmap,
            entry_bytes,
            entries,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }
    pub(crate) fn capacity_entries(&self) -> u32 {
        (self.mmap.len() / self.entry_bytes as usize) as u32
    }
    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity_entries()
    }

    /// The raw bytes of entry `n` (which may lie past `entries()` but inside
    /// the mapping, for scanning a preallocated file).
    pub(crate) fn raw_entry(&self, n: u32) -> &[u8] {
        assert!(n < self.capacity_entries());
        let start = n as usize * self.entry_bytes as usize;
        &self.mmap[start..start + self.entry_bytes as usize]
    }

    /// Declares the first `entries` entries used (after scanning).
    pub(crate) fn set_entries(&mut self, entries: u32) {
        assert!(entries <= self.capacity_entries());
        self.entries = entries;
    }

    pub(crate) fn push(&mut self, entry: &[u8]) {
        assert_eq!(entry.len(), self.entry_bytes as usize);
        assert!(!self.is_full(), "caller rolls before an index fills up");
        let start = self.entries as usize * self.entry_bytes as usize;
        self.mmap[start..start + entry.len()].copy_from_slice(entry);
        self.entries += 1;
    }

    /// Forgets entries from `n` on and zeroes them so a later scan of the
    /// preallocated file stops at the same place.
    pub(crate) fn truncate_entries(&mut self, n: u32) {
        assert!(n <= self.entries);
        let start = n as usize * self.entry_bytes as usize;
        let end = self.entries as usize * self.entry_bytes as usize;
        self.mmap[start..end].fill(0);
        self.entries = n;
    }

    /// Changes the file size to `capacity_bytes` (rounded down to whole
    /// entries, never below the used entries) and remaps.
    pub(crate) fn resize(&mut self, capacity_bytes: u32) -> Result<(), LogError> {
        let used = self.entries * self.entry_bytes;
        let wanted = (capacity_bytes / self.entry_bytes * self.entry_bytes).max(used);
        if wanted as usize == self.mmap.len() {
            return Ok(());
        }
        // Replace the map with an empty anonymous one first: a shrinking
        // set_len under a live map would turn later accesses into SIGBUS.
        self.mmap = MmapMut::map_anon(0).map_err(LogError::io("mmap", &self.path))?;
        self.file
            .set_len(u64::from(wanted))
            .map_err(LogError::io("set_len", &self.path))?;
        // SAFETY: as in `map`.
        self.mmap = unsafe { MmapOptions::new().map_mut(&self.file) }
            .map_err(LogError::io("mmap", &self.path))?;
        advise_random(&self.mmap, &self.path)?;
        assert_eq!(self.mmap.len(), wanted as usize);
        Ok(())
    }

    /// Shrinks the file to the used entries (segment no longer active).
    pub(crate) fn trim(&mut self) -> Result<(), LogError> {
        self.resize(self.entries * self.entry_bytes)
    }

    /// Writes dirty pages back (msync) and makes the size durable.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.mmap
            .flush()
            .map_err(LogError::io("msync", &self.path))?;
        self.file
            .sync_all()
            .map_err(LogError::io("fsync", &self.path))
    }
}

/// Index maps are read by binary search and by a scan that stops at the
/// first unused (zero) entry of a preallocated, sparse file: readahead
/// would fault in and zero megabytes of holes per index (seconds at start
/// with thousands of partitions), so it is turned off.
fn advise_random(mmap: &MmapMut, path: &Path) -> Result<(), LogError> {
    if mmap.is_empty() {
        return Ok(());
    }
    mmap.advise(memmap2::Advice::Random)
        .map_err(LogError::io("madvise", path))
}

/// `.index`: relative offset → byte position of a batch starting there.
#[derive(Debug)]
pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
}

impl OffsetIndex {
    pub(crate) fn create(
        path: &Path,
        base_offset: i64,
        capacity_bytes: u32,
    ) -> Result<OffsetIndex, LogError> {
        let file = IndexFile::create(path, OFFSET_INDEX_ENTRY_BYTES, capacity_bytes)?;
        Ok(OffsetIndex { file, base_offset })
    }

    /// Opens an existing index and keeps its longest plausible prefix:
    /// non-zero entries with strictly increasing offsets and positions
    /// below `log_bytes`. Anything after a zero entry is unused space.
    pub(crate) fn open(
        path: &Path,
        base_offset: i64,
        log_bytes: u64,
    ) -> Result<Result<OffsetIndex, IndexDefect>, LogError> {
        let mut file = match IndexFile::open(path, OFFSET_INDEX_ENTRY_BYTES)? {
            Ok(file) => file,
            Err(defect) => return Ok(Err(defect)),
        };
        let mut used = 0u32;
        let mut previous: Option<(u32, u32)> = None;
        while used < file.entries() {
            let (relative, position) = decode(file.raw_entry(used));
            let increasing = previous.is_none_or(|(r, p)| relative > r && position > p);
            if position == 0 || !increasing || u64::from(position) >= log_bytes {
                break;
            }
            previous = Some((relative, position));
            used += 1;
        }
        file.set_entries(used);
        Ok(Ok(OffsetIndex { file, base_offset }))
    }

    pub(crate) fn entries(&self) -> u32 {
        self.file.entries()
    }
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }
    pub(crate) fn file(&self) -> &Arc<File> {
        self.file.file()
    }
    pub(crate) fn capacity_entries(&self) -> u32 {
        self.file.capacity_entries()
    }

    /// Entry `n` as (absolute offset, position).
    pub(crate) fn entry(&self, n: u32) -> (i64, u32) {
        assert!(n < self.entries());
        let (relative, position) = decode(self.file.raw_entry(n));
        (self.base_offset + i64::from(relative), position)
    }

    pub(crate) fn last_entry(&self) -> Option<(i64, u32)> {
        self.entries().checked_sub(1).map(|n| self.entry(n))
    }

    /// Appends an entry for a batch starting at `offset`, `position`.
    pub(crate) fn append(&mut self, offset: i64, position: u32) {
        let relative = offset - self.base_offset;
        assert!(
            relative > 0 && relative <= i64::from(u32::MAX),
            "relative offset fits u32"
        );
        assert!(position > 0);
        if let Some((last_offset, last_position)) = self.last_entry() {
            assert!(
                offset > last_offset && position > last_position,
                "index entries increase"
            );
        }
        let mut entry = [0u8; OFFSET_INDEX_ENTRY_BYTES as usize];
        entry[..4].copy_from_slice(&(relative as u32).to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(&entry);
    }

    /// The last entry at or before `target`, or the segment start (base, 0).
    pub(crate) fn lookup(&self, target: i64) -> (i64, u32) {
        self.floor_entry(|(offset, _)| offset <= target)
    }

    /// The last entry whose batch starts at or before byte `position`, or
    /// the segment start (base, 0).
    pub(crate) fn lookup_position(&self, position: u32) -> (i64, u32) {
        self.floor_entry(|(_, entry_position)| entry_position <= position)
    }

    /// Binary search for the last entry satisfying `at_or_before`, which
    /// must hold for a prefix of the entries: true for offsets and positions
    /// alike, since both grow entry by entry.
    fn floor_entry(&self, at_or_before: impl Fn((i64, u32)) -> bool) -> (i64, u32) {
        let (mut low, mut high) = (0u32, self.entries());
        while low < high {
            let middle = low + (high - low) / 2;
            if at_or_before(self.entry(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        match low.checked_sub(1) {
            Some(n) => self.entry(n),
            None => (self.base_offset, 0),
        }
    }

    /// Drops entries for offsets ≥ `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        let keep = (0..self.entries())
            .take_while(|&n| self.entry(n).0 < offset)
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

fn decode(raw: &[u8]) -> (u32, u32) {
    let relative = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let position = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    (relative, position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut index = OffsetIndex::create(&path, 100, 80).unwrap();
        assert_eq!(index.lookup(150), (100, 0));
        for (offset, position) in [(110, 1000), (120, 2000), (135, 3000)] {
            index.append(offset, position);
        }
        assert_eq!(index.lookup(99), (100, 0));
        assert_eq!(index.lookup(109), (100, 0));
        assert_eq!(index.lookup(110), (110, 1000));
        assert_eq!(index.lookup(134), (120, 2000));
        assert_eq!(index.lookup(10_000), (135, 3000));
        index.truncate_to(120);
        assert_eq!(index.entries(), 1);
        assert_eq!(index.lookup(10_000), (110, 1000));
    }

    #[test]
    fn reopen_keeps_used_prefix_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.index");
        let mut index = OffsetIndex::create(&path, 0, 800).unwrap();
        index.append(5, 500);
        index.append(9, 900);
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 800);
        let mut reopened = OffsetIndex::open(&path, 0, 1000).unwrap().unwrap();
        assert_eq!(reopened.entries(), 2);
        reopened.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        drop(reopened);
        // A position past the log's end is not trusted.
        let short = OffsetIndex::open(&path, 0, 600).unwrap().unwrap();
        assert_eq!(short.entries(), 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(13)
            .unwrap();
        assert_eq!(
            OffsetIndex::open(&path, 0, 1000).unwrap().unwrap_err(),
            IndexDefect::LengthNotMultiple
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            OffsetIndex::open(&path, 0, 1000).unwrap().unwrap_err(),
            IndexDefect::Missing
        );
    }

    #[test]
    #[should_panic(expected = "index entries increase")]
    fn decreasing_entries_are_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = OffsetIndex::create(&dir.path().join("x.index"), 0, 80).unwrap();
        index.append(5, 500);
        index.append(4, 600);
    }
}
