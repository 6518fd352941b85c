//! The partition log's producer state: rebuilt at open from the newest
//! usable snapshot plus the batch headers after it, snapshotted at rolls
//! and at close, rewound with every truncation (DESIGN §2). A child module
//! of `partition_log`, so it works on the log's own fields.

use super::PartitionLog;
use crate::log::checkpoint;
use crate::log::error::LogError;
use crate::log::producer_snapshot;
use crate::log::producer_state::ProducerStateMap;
use crate::log::segment::{HeaderScanner, Scanned};

impl PartitionLog {
    /// Rebuilds producer state for the log as it is now. Snapshots above
    /// the log end (their batches were truncated away) or below the log
    /// start (their segments are gone) are deleted first; a corrupt one is
    /// deleted and the next older one tried; then the headers from the
    /// snapshot's offset to the log end are replayed.
    pub(super) fn rebuild_producer_state(&mut self) -> Result<(), LogError> {
        // The physical start: batches below a DeleteRecords start are still
        // on disk and still describe their producers.
        let (log_start, log_end) = (self.first_segment_base(), self.log_end_offset());
        self.delete_snapshots_where(|offset| offset > log_end || offset < log_start)?;
        self.producers = ProducerStateMap::new();
        let mut replay_from = log_start;
        while let Some(&offset) = self.snapshots.last() {
            match producer_snapshot::read(&producer_snapshot::path(&self.dir, offset)) {
                Ok(state) => {
                    self.producers = state;
                    replay_from = offset;
                    break;
                }
                Err(LogError::CorruptCheckpoint { path, reason }) => {
                    tracing::warn!(path = %path.display(), reason, "ignoring corrupt producer snapshot");
                    self.delete_snapshots_where(|candidate| candidate == offset)?;
                }
                Err(error) => return Err(error),
            }
        }
        self.replay_producers(replay_from)?;
        Ok(())
    }

    /// Applies the producer fields of every batch from `from` to the log end.
    fn replay_producers(&mut self, from: i64) -> Result<(), LogError> {
        if from >= self.log_end_offset() {
            return Ok(());
        }
        let first = self.segment_holding(from.max(self.first_segment_base()));
        for segment in &self.segments[first..] {
            let Some(start) = segment.find_batch(from.max(segment.base_offset))? else {
                continue;
            };
            let mut scanner =
                HeaderScanner::new(&segment.log, &segment.log_path, segment.size_bytes);
            let mut position = start.position;
            // Bounded: each pass moves forward by at least one header.
            loop {
                match scanner.at(position)? {
                    Scanned::End => break,
                    Scanned::Invalid(error) => return Err(error),
                    Scanned::Batch(header) => {
                        if let Some(batch) = header.producer_batch() {
                            self.producers.apply(&batch);
                        }
                        position += u64::from(header.batch_bytes);
                    }
                }
            }
        }
        Ok(())
    }

    /// Snapshots the state as of the log end (a roll or a clean close).
    pub(super) fn write_producer_snapshot(&mut self) -> Result<(), LogError> {
        let offset = self.log_end_offset();
        producer_snapshot::write(&self.dir, offset, &self.producers)?;
        self.snapshots.insert(offset);
        Ok(())
    }

    /// Removes the snapshot files whose offset matches `doomed`.
    pub(super) fn delete_snapshots_where(
        &mut self,
        doomed: impl Fn(i64) -> bool,
    ) -> Result<(), LogError> {
        let gone: Vec<i64> = self
            .snapshots
            .iter()
            .copied()
            .filter(|&o| doomed(o))
            .collect();
        for offset in &gone {
            checkpoint::remove_if_exists(&producer_snapshot::path(&self.dir, *offset))?;
            self.snapshots.remove(offset);
        }
        Ok(())
    }

    /// Producers expire `expiration_ms` after their last batch
    /// (`producer.id.expiration.ms`); returns how many went.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// The idempotent producers this partition holds state for.
    pub fn producer_state(&self) -> &ProducerStateMap {
        &self.producers
    }
}
