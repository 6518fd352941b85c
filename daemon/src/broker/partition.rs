//! One partition on this broker: its log behind a lock, and the high
//! watermark that producers waiting for acks and long-polling fetchers watch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use super::leadership::{Leadership, PartitionError};
use crate::failstop;
use crate::log::{
    AppendInfo, CleanStats, FlushPolicy, LogConfig, LogError, PartitionLog, ReadSlice,
};

/// A read, with the offsets the fetch response reports beside it.
#[derive(Debug)]
pub struct PartitionRead {
    pub slice: ReadSlice,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What the metrics endpoint reports about a partition.
#[derive(Debug, Clone, Copy)]
pub struct PartitionStats {
    pub offsets: PartitionOffsets,
    pub size_bytes: u64,
    pub segments: usize,
}

/// Offsets describing a partition at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Offsets below this are visible to consumers (and acknowledged for acks=all).
    high_watermark: watch::Sender<i64>,
    /// Set while the log's flush policy is "fsync before acknowledging".
    fsync_before_ack: AtomicBool,
    /// Set by an append that waits for an fsync; cleared by the syncer.
    sync_requested: AtomicBool,
    /// Whether this broker leads, at which epoch. Changed only with the log
    /// lock held (lock order: log, then this), so an append sees the
    /// leadership its batches are stamped with.
    leadership: Mutex<Leadership>,
    /// What `stats` last read, for a scrape that finds the log busy.
    last_stats: Mutex<Option<PartitionStats>>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        fsync_before_ack: bool,
        leadership: Leadership,
    ) -> Self {
        // With fsync-before-ack nothing is visible until a sync proves it
        // durable; after a restart everything recovered was on disk.
        let high_watermark = watch::Sender::new(log.log_end_offset());
        Self {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            fsync_before_ack: AtomicBool::new(fsync_before_ack),
            sync_requested: AtomicBool::new(false),
            leadership: Mutex::new(leadership),
            last_stats: Mutex::new(None),
        }
    }

    pub fn leadership(&self) -> Leadership {
        *self.lock_leadership()
    }

    fn lock_leadership(&self) -> MutexGuard<'_, Leadership> {
        self.leadership
            .lock()
            .expect("partition leadership lock poisoned")
    }

    /// This partition as a leader serves it: `current_leader_epoch` (-1: no
    /// check) must be ours and this broker must lead. Returns our epoch.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<i32, PartitionError> {
        self.leadership()
            .check(&format!("{self:?}"), current_leader_epoch)
    }

    /// Takes the leadership the controller assigned. Becoming leader at a
    /// new epoch records it in the leader-epoch cache at the log end, so
    /// the epoch's first offset is known even before anything is appended
    /// (KIP-101). Returns whether anything changed.
    ///
    /// Panics if the epoch would move back, or change hands without moving:
    /// the controller bumps the epoch on every leader change, so either is a
    /// broken invariant upstream, and acting on it could fork the log.
    pub fn set_leadership(&self, new: Leadership) -> Result<bool, LogError> {
        let mut log = self.lock_log();
        let mut current = self.lock_leadership();
        assert!(
            new.epoch() >= current.epoch(),
            "{self:?}: leader epoch would move back from {:?} to {new:?}",
            *current
        );
        if new == *current {
            return Ok(false);
        }
        // At the same epoch, only this broker's own leadership may come and
        // go (its lease ran out, then a heartbeat was answered again): no
        // other broker can have led at this epoch.
        let own_lease = matches!(
            (*current, new),
            (Leadership::Leader { .. }, Leadership::NotLeader { .. })
                | (Leadership::NotLeader { .. }, Leadership::Leader { .. })
        );
        assert!(
            new.epoch() > current.epoch() || own_lease,
            "{self:?}: leadership changed from {:?} to {new:?} at the same epoch",
            *current
        );
        if let Leadership::Leader { epoch } = new {
            let assigned = log.assign_leader_epoch(epoch);
            self.stop_on_storage_failure("leader epoch checkpoint", assigned)?;
        }
        tracing::info!(event = "leadership_changed", partition = ?self, from = ?*current, to = ?new);
        *current = new;
        Ok(true)
    }

    pub(crate) fn lock_log(&self) -> MutexGuard<'_, PartitionLog> {
        // A poisoned lock means a panic mid-append: the log's in-memory
        // state can no longer be trusted, so stopping is the safe answer.
        self.log.lock().expect("partition log lock poisoned")
    }

    pub fn fsync_before_ack(&self) -> bool {
        self.fsync_before_ack.load(Ordering::Relaxed)
    }

    /// Validates and appends a produce's records, stamped with our leader
    /// epoch; refused unless this broker leads. With the page-cache policy
    /// the data is acknowledged (and visible) at once.
    pub fn append(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, PartitionError> {
        // CRCs and decompression without the lock: fetches and other
        // produces to this partition go on meanwhile.
        let rules = self.lock_log().produce_rules();
        let validated = crate::log::validate_produce(records, rules)?;
        let mut log = self.lock_log();
        // Under the log lock: leadership cannot change until this append is in.
        let epoch = self.check_leader(super::leadership::NO_EPOCH_CHECK)?;
        let info = self.stop_on_storage_failure(
            "append",
            log.append_validated_as_leader(records, validated, epoch, now_ms),
        )?;
        if info.duplicate {
            // A retry: its original is in the log; the caller waits for
            // the high watermark to pass it as for any append.
            return Ok(info);
        }
        assert!(info.last_offset + 1 == log.log_end_offset());
        if !self.fsync_before_ack() {
            self.advance_high_watermark(log.log_end_offset());
        }
        Ok(info)
    }

    /// Marks the partition for the syncer; true if it was not marked yet.
    pub fn request_sync(&self) -> bool {
        !self.sync_requested.swap(true, Ordering::AcqRel)
    }

    /// Clears the mark; true if a sync was requested.
    pub fn take_sync_request(&self) -> bool {
        self.sync_requested.swap(false, Ordering::AcqRel)
    }

    /// Moves the high watermark forward (never back) and wakes its watchers.
    pub fn advance_high_watermark(&self, offset: i64) {
        self.high_watermark.send_if_modified(|hw| {
            if offset > *hw {
                *hw = offset;
                true
            } else {
                false
            }
        });
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.lock_log();
        PartitionOffsets {
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
            high_watermark: self.high_watermark(),
        }
    }

    pub fn read(
        &self,
        offset: i64,
        max_bytes: u32,
        min_one_batch: bool,
    ) -> Result<PartitionRead, LogError> {
        let log = self.lock_log();
        let high_watermark = self.high_watermark();
        let slice = log.read(offset, max_bytes, high_watermark, min_one_batch)?;
        Ok(PartitionRead {
            slice,
            high_watermark,
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Waits until the high watermark reaches `offset` or `deadline` passes.
    pub async fn wait_for_high_watermark(&self, offset: i64, deadline: Instant) -> bool {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|hw| *hw >= offset);
        matches!(
            tokio::time::timeout_at(deadline.into(), wait).await,
            Ok(Ok(_))
        )
    }

    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.lock_log().offset_for_timestamp(timestamp_ms)
    }

    /// One compaction pass if the log is compacted and due: prepared and
    /// swapped in under the log lock, read and written without it, so
    /// produce and fetch go on meanwhile. Never past the high watermark.
    pub fn clean(&self, now_ms: i64) -> Result<Option<CleanStats>, LogError> {
        let job = self.lock_log().prepare_clean(now_ms, self.high_watermark());
        let Some(job) = job else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let (map, map_end, mut stats) =
            self.stop_on_storage_failure("cleaner read", job.build_map())?;
        for group in job.groups(map_end) {
            let cleaned = self
                .stop_on_storage_failure("cleaner write", job.clean_group(group, &map, map_end))?;
            stats.bytes_read += cleaned.bytes_read;
            stats.bytes_written += cleaned.bytes_written;
            let replaced = cleaned.replaces_count();
            let swapped = self.lock_log().swap_in(&job, cleaned, None);
            if !self.stop_on_storage_failure("cleaner swap", swapped)? {
                tracing::info!(event = "clean_abandoned", partition = ?self, reason = "the log changed during the pass");
                return Ok(Some(stats));
            }
            stats.segments_replaced += replaced;
        }
        let finished = self.lock_log().finish_clean(map_end);
        self.stop_on_storage_failure("cleaner checkpoint", finished)?;
        stats.cleaned_up_to = map_end;
        tracing::info!(
            event = "log_cleaned",
            partition = ?self,
            segments = stats.segments_replaced,
            keys = stats.keys,
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            cleaned_up_to = map_end,
            millis = started.elapsed().as_millis() as u64,
        );
        Ok(Some(stats))
    }

    /// DeleteRecords: moves the log start to `offset` (-1: the high
    /// watermark), never past the high watermark; returns the new log start.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut log = self.lock_log();
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        let advanced = log.advance_log_start_offset(target);
        self.stop_on_storage_failure("delete records", advanced)
    }

    /// OffsetForLeaderEpoch: (epoch, end offset), None for UNDEFINED.
    pub fn leader_epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        self.lock_log().leader_epoch_end_offset(epoch)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.lock_log().max_timestamp()
    }

    pub fn set_config(&self, config: LogConfig) {
        let fsync = matches!(config.flush, FlushPolicy::FsyncEveryAppend);
        self.lock_log().set_config(config);
        self.fsync_before_ack.store(fsync, Ordering::Relaxed);
    }

    /// Makes everything appended so far durable without holding the lock
    /// during the fsync, so appends continue meanwhile (group commit).
    pub fn sync(&self, now_ms: i64) -> Result<(), LogError> {
        let Some(pending) = self.lock_log().pending_sync() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let synced = pending.sync();
        crate::metrics::metrics()
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        // Never retried: Linux reports a failed writeback once and marks the
        // pages clean, so a second fsync would "succeed" over lost data.
        let durable = match synced {
            Ok(durable) => durable,
            // Closed (shutdown, deletion) meanwhile: the close synced
            // everything, and a deleted partition's directory may be gone.
            Err(_) if self.lock_log().is_closed() => return Ok(()),
            Err(error) => failstop::storage_failure(&format!("fdatasync of {self:?}"), &error),
        };
        // A truncation between capture and completion makes the sync moot.
        let completed = self.lock_log().complete_pending_sync(&pending, now_ms);
        self.stop_on_storage_failure("recovery-point checkpoint", completed)?;
        if self.fsync_before_ack() {
            self.advance_high_watermark(durable);
        }
        Ok(())
    }

    /// Periodic housekeeping: age-based roll, policy flush, and with
    /// `retention` (the producer id expiration, from the spec) retention and
    /// the expiry of idempotent producers.
    pub fn housekeeping(&self, now_ms: i64, retention: Option<i64>) -> Result<(), LogError> {
        let flush_due = {
            let mut log = self.lock_log();
            self.stop_on_storage_failure("roll", log.roll_if_due(now_ms))?;
            if let Some(producer_expiry_ms) = retention {
                // Never delete what consumers cannot see yet.
                let retained = log.apply_retention_below(now_ms, self.high_watermark());
                self.stop_on_storage_failure("retention", retained)?;
                let expired = log.expire_producers(now_ms, producer_expiry_ms);
                if expired > 0 {
                    tracing::debug!(event = "producers_expired", partition = ?self, expired);
                }
            }
            log.flush_due(now_ms)
        };
        if flush_due {
            self.sync(now_ms)?;
        }
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock_log().size_bytes()
    }

    /// Sizes and offsets for the metrics scrape. It does not wait for the
    /// log lock, which an append stuck on a stalled disk holds for as long
    /// as the stall: then it reports what the last scrape read (the high
    /// watermark is always current), so Prometheus still reaches a broker
    /// whose disk stalls. The first scrape of a partition waits.
    pub fn stats(&self) -> PartitionStats {
        let mut last = self
            .last_stats
            .lock()
            .expect("partition stats lock poisoned");
        let log = match self.log.try_lock() {
            Ok(log) => log,
            Err(std::sync::TryLockError::WouldBlock) if last.is_some() => {
                let mut stale = last.expect("checked above");
                stale.offsets.high_watermark = self.high_watermark();
                return stale;
            }
            Err(std::sync::TryLockError::WouldBlock) => self.lock_log(),
            // A panic mid-append: as `lock_log`.
            Err(std::sync::TryLockError::Poisoned(_)) => {
                panic!("partition log lock poisoned")
            }
        };
        let stats = PartitionStats {
            offsets: PartitionOffsets {
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
                high_watermark: self.high_watermark(),
            },
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
        };
        *last = Some(stats);
        stats
    }
}

impl Partition {
    /// Fail-stop: an I/O error from the log ends the process (the log's
    /// files may now differ from what it believes); other errors are the
    /// caller's to answer.
    pub(crate) fn stop_on_storage_failure<T>(
        &self,
        what: &str,
        result: Result<T, LogError>,
    ) -> Result<T, LogError> {
        if let Err(error @ LogError::Io { .. }) = &result {
            failstop::storage_failure(&format!("{what} on {self:?}"), error);
        }
        result
    }

    /// Closes the log cleanly (shutdown, topic deletion) even while a
    /// request, the cleaner or the group coordinator still holds the
    /// partition: later changes are refused, reads go on.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        let mut log = self.lock_log();
        let closed = log.close_in_place(now_ms);
        self.stop_on_storage_failure("close", closed)
    }
}
