//! Leader epoch cache (KIP-101): for each epoch, the first offset written in
//! it. Persisted as Kafka's `leader-epoch-checkpoint` text file, replaced
//! atomically on every change (changes are rare: once per leader election).

use std::path::{Path, PathBuf};

use super::checkpoint;
use super::error::LogError;

/// File name inside the partition directory (Kafka's name).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Bound on remembered epochs; the oldest are dropped past it (only
/// retention-deleted history would be that old).
const EPOCH_ENTRIES_MAX: usize = 100_000;

/// One epoch and the first offset its leader wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Entries sorted by epoch and by start offset, both strictly increasing.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads `dir/leader-epoch-checkpoint`, or starts empty.
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let entries = match checkpoint::read(&path)? {
            None => Vec::new(),
            Some(text) => checkpoint::parse_lines(&path, &text, parse_entry)?,
        };
        let cache = LeaderEpochCache { path, entries };
        if !cache.is_sorted() {
            return Err(LogError::CorruptCheckpoint {
                path: cache.path,
                reason: "epochs or start offsets not increasing".into(),
            });
        }
        Ok(cache)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the
    /// cache changed (and was persisted). Older or equal epochs are ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, LogError> {
        assert!(epoch >= 0 && start_offset >= 0);
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return Ok(false);
        }
        // Epochs that wrote nothing (start at or after this one) are dropped.
        self.entries
            .retain(|entry| entry.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        if self.entries.len() > EPOCH_ENTRIES_MAX {
            self.entries.remove(0);
        }
        assert!(self.is_sorted());
        self.persist()?;
        Ok(true)
    }

    /// OffsetForLeaderEpoch: `(epoch, end_offset)` where end_offset is the
    /// start of the next higher epoch (or `log_end_offset` for the latest).
    /// `None` stands for Kafka's UNDEFINED (-1, -1).
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.entries.last()?;
        if requested_epoch < 0 || requested_epoch > latest.epoch {
            return None;
        }
        if requested_epoch == latest.epoch {
            return Some((latest.epoch, log_end_offset));
        }
        let higher = self
            .entries
            .partition_point(|entry| entry.epoch <= requested_epoch);
        assert!(higher < self.entries.len());
        let end_offset = self.entries[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, end_offset)),
            None => Some((requested_epoch, end_offset)),
        }
    }

    /// After truncating the log to `end_offset`: forget epochs starting at or after it.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// After the log start moved to `start_offset`: the epoch covering it now
    /// starts there; earlier epochs are forgotten.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let covering = self
            .entries
            .partition_point(|entry| entry.start_offset <= start_offset);
        let Some(keep_from) = covering.checked_sub(1) else {
            return Ok(());
        };
        let changed = keep_from > 0 || self.entries[keep_from].start_offset != start_offset;
        if !changed {
            return Ok(());
        }
        self.entries.drain(..keep_from);
        self.entries[0].start_offset = start_offset;
        assert!(self.is_sorted());
        self.persist()
    }

    fn is_sorted(&self) -> bool {
        self.entries.windows(2).all(|pair| {
            pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset
        })
    }

    fn persist(&self) -> Result<(), LogError> {
        let lines: Vec<String> = self
            .entries
            .iter()
            .map(|entry| format!("{} {}", entry.epoch, entry.start_offset))
            .collect();
        checkpoint::write_atomic(&self.path, checkpoint::format_lines(&lines).as_bytes())
    }
}

fn parse_entry(line: &str) -> Option<EpochEntry> {
    let mut fields = line.split_whitespace();
    let epoch = fields.next()?.parse().ok()?;
    let start_offset = fields.next()?.parse().ok()?;
    if fields.next().is_some() || epoch < 0 || start_offset < 0 {
        return None;
    }
    Some(EpochEntry {
        epoch,
        start_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = LeaderEpochCache::load(dir.path()).unwrap();
        (dir, cache)
    }

    #[test]
    fn assign_and_end_offsets() {
        let (dir, mut cache) = cache();
        assert_eq!(cache.end_offset_for(0, 10), None);
        assert!(cache.assign(1, 0).unwrap());
        assert!(!cache.assign(1, 5).unwrap());
        assert!(!cache.assign(0, 5).unwrap());
        assert!(cache.assign(3, 10).unwrap());
        assert!(cache.assign(5, 20).unwrap());
        assert_eq!(cache.end_offset_for(5, 25), Some((5, 25)));
        assert_eq!(cache.end_offset_for(3, 25), Some((3, 20)));
        assert_eq!(cache.end_offset_for(4, 25), Some((3, 20)));
        assert_eq!(cache.end_offset_for(1, 25), Some((1, 10)));
        assert_eq!(cache.end_offset_for(0, 25), Some((0, 0)));
        assert_eq!(cache.end_offset_for(6, 25), None);
        let reloaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), cache.entries());
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n3\n1 0\n3 10\n5 20\n");
    }

    #[test]
    fn epochs_without_data_are_replaced() {
        let (_dir, mut cache) = cache();
        cache.assign(1, 0).unwrap();
        cache.assign(2, 7).unwrap();
        cache.assign(4, 7).unwrap();
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 4,
                    start_offset: 7
                }
            ]
        );
    }

    #[test]
    fn truncation_from_both_ends() {
        let (dir, mut cache) = cache();
        for (epoch, start) in [(1, 0), (2, 10), (3, 20), (4, 30)] {
            cache.assign(epoch, start).unwrap();
        }
        cache.truncate_from_end(20).unwrap();
        assert_eq!(cache.latest_epoch(), Some(2));
        cache.truncate_from_start(15).unwrap();
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 15
            }]
        );
        cache.truncate_from_start(5).unwrap();
        assert_eq!(cache.entries().len(), 1);
        let reloaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), cache.entries());
    }

    #[test]
    fn corrupt_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE),
            "0\n2\n3 10\n1 20\n",
        )
        .unwrap();
        assert!(matches!(
            LeaderEpochCache::load(dir.path()),
            Err(LogError::CorruptCheckpoint { .. })
        ));
    }
}
