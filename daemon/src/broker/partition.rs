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
use crate::replication::divergence::{self, EpochEnd, FetchPosition, Truncation, UNDEFINED_EPOCH};
use crate::replication::leader_state::BrokerId;
use crate::replication::{IsrProposal, LeaderEnd, LeaderState, ReplicaFetch, ReplicaSet};

/// The replica id a single node's partitions are led by (no followers).
const SOLO_REPLICA: BrokerId = 0;

/// What this broker does for a partition's replication.
#[derive(Debug)]
enum Role {
    /// Leads: its followers' progress and the high watermark they allow.
    Leader(LeaderState),
    /// Follows a leader, or waits for one.
    Follower,
}

#[derive(Debug)]
struct Replication {
    role: Role,
    /// The offset below which the log is known fsynced (what a leader
    /// counts towards the high watermark under fsync-before-ack).
    durable_end: i64,
}

/// A leader's answer to a follower's fetch, records still in the file.
#[derive(Debug)]
pub struct ReplicaServe {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Set instead of records when the follower must truncate first.
    pub diverging: Option<EpochEnd>,
    pub records: ReadSlice,
    /// An ISR expansion this fetch makes due: the caller asks the controller.
    pub proposal: Option<IsrProposal>,
}

/// Where a follower fetches from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchState {
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// How an acks=all wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    Yes,
    /// This broker stopped leading at the append's epoch.
    LeaderMoved,
    TimedOut,
}

/// How many replicas count for acks=all now (`min.insync.replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrSizes {
    /// The replication factor: replicas but those a reassignment removes.
    pub replicas: usize,
    pub committed: usize,
    pub maximal: usize,
}

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
    /// Leader or follower bookkeeping. Lock order: log, leadership, this.
    replication: Mutex<Replication>,
    /// The log end, for followers' fetches parked until the leader appends.
    log_end: watch::Sender<i64>,
    /// The fsynced end, for acks=1 under fsync-before-ack.
    durable: watch::Sender<i64>,
    /// The epoch this broker leads at, -1 when it does not lead.
    led_epoch: std::sync::atomic::AtomicI32,
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
        let log_end = log.log_end_offset();
        // A single node leads alone: all it recovered is visible. A cluster
        // member's partition starts as a follower at the high watermark it
        // checkpointed (its log may end with writes that were never
        // committed): it learns newer ones from its leader, or as leader
        // from its ISR's fetches, so it never exposes more than the ISR holds.
        let initial_high_watermark = match leadership {
            Leadership::Leader { .. } => log_end,
            Leadership::NotLeader { .. } => log
                .checkpointed_high_watermark()
                .unwrap_or(log.log_start_offset()),
        };
        let high_watermark = watch::Sender::new(initial_high_watermark);
        let role = match leadership {
            Leadership::Leader { epoch } => Role::Leader(LeaderState::new(
                SOLO_REPLICA,
                ReplicaSet {
                    replicas: vec![SOLO_REPLICA],
                    isr: vec![SOLO_REPLICA],
                    leader_epoch: epoch,
                    partition_epoch: 0,
                    removing: Vec::new(),
                },
                LeaderEnd::all_durable(log_end),
                initial_high_watermark,
                super::now_ms(),
            )),
            Leadership::NotLeader { .. } => Role::Follower,
        };
        Self {
            topic,
            index,
            log: Mutex::new(log),
            high_watermark,
            fsync_before_ack: AtomicBool::new(fsync_before_ack),
            sync_requested: AtomicBool::new(false),
            leadership: Mutex::new(leadership),
            last_stats: Mutex::new(None),
            replication: Mutex::new(Replication {
                role,
                // Whatever recovery found is on disk.
                durable_end: log_end,
            }),
            log_end: watch::Sender::new(log_end),
            durable: watch::Sender::new(log_end),
            led_epoch: std::sync::atomic::AtomicI32::new(match leadership {
                Leadership::Leader { epoch } => epoch,
                Leadership::NotLeader { .. } => -1,
            }),
        }
    }

    fn lock_replication(&self) -> MutexGuard<'_, Replication> {
        self.replication
            .lock()
            .expect("partition replication lock poisoned")
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
        let solo = ReplicaSet {
            replicas: vec![SOLO_REPLICA],
            isr: vec![SOLO_REPLICA],
            leader_epoch: new.epoch(),
            partition_epoch: 0,
            removing: Vec::new(),
        };
        self.set_assignment(new, SOLO_REPLICA, solo)
    }

    /// `set_leadership` in a cluster: this broker is `self_id`, and `set`
    /// is the partition's replicas and ISR as the controller committed
    /// them. A leader keeps its followers' progress while its epoch holds
    /// and takes a newer partition epoch's ISR.
    pub fn set_assignment(
        &self,
        new: Leadership,
        self_id: BrokerId,
        set: ReplicaSet,
    ) -> Result<bool, LogError> {
        let mut log = self.lock_log();
        let mut current = self.lock_leadership();
        if new == *current {
            let mut replication = self.lock_replication();
            if let Role::Leader(state) = &mut replication.role
                && let Some(high_watermark) = state.on_committed(set)
            {
                self.advance_high_watermark(high_watermark);
            }
            return Ok(false);
        }
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
        let mut replication = self.lock_replication();
        match new {
            Leadership::Leader { epoch } => {
                let assigned = log.assign_leader_epoch(epoch);
                self.stop_on_storage_failure("leader epoch checkpoint", assigned)?;
                assert_eq!(
                    set.leader_epoch, epoch,
                    "{self:?}: the set is of this epoch"
                );
                let end = self.leader_end(&log, &replication);
                let state =
                    LeaderState::new(self_id, set, end, self.high_watermark(), super::now_ms());
                if state.high_watermark() > self.high_watermark() {
                    self.advance_high_watermark(state.high_watermark());
                }
                replication.role = Role::Leader(state);
            }
            Leadership::NotLeader { .. } => replication.role = Role::Follower,
        }
        tracing::info!(event = "leadership_changed", partition = ?self, from = ?*current, to = ?new);
        *current = new;
        let led = match new {
            Leadership::Leader { epoch } => epoch,
            Leadership::NotLeader { .. } => -1,
        };
        self.led_epoch.store(led, Ordering::Release);
        if led >= 0 {
            crate::metrics::metrics()
                .replication()
                .leader_elections
                .inc();
        }
        drop(replication);
        drop(current);
        // Wakes acks=all waits, which answer a leader that moved at once.
        self.high_watermark.send_modify(|_| {});
        Ok(true)
    }

    /// The leader's log end and the part of it that counts for the high
    /// watermark under the current flush policy.
    fn leader_end(&self, log: &PartitionLog, replication: &Replication) -> LeaderEnd {
        let log_end = log.log_end_offset();
        let durable_end = match self.fsync_before_ack() {
            true => replication.durable_end.min(log_end),
            false => log_end,
        };
        LeaderEnd {
            log_end,
            durable_end,
        }
    }

    /// After the log or its durable end moved: wake parked replica fetches
    /// and, as leader, move the high watermark as far as the ISR allows.
    fn log_moved(&self, log: &PartitionLog) {
        self.log_end.send_if_modified(|end| {
            let moved = *end != log.log_end_offset();
            *end = log.log_end_offset();
            moved
        });
        let mut replication = self.lock_replication();
        let end = self.leader_end(log, &replication);
        if let Role::Leader(state) = &mut replication.role
            && let Some(high_watermark) = state.on_leader_end(end)
        {
            self.advance_high_watermark(high_watermark);
        }
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
        self.log_moved(&log);
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

    /// acks=all: waits until the high watermark reaches `offset` while this
    /// broker still leads at `epoch`. A leader that loses the partition
    /// answers at once (NOT_LEADER_OR_FOLLOWER; the producer retries at the
    /// new leader, which dedupes what had been replicated) rather than hold
    /// the request until it times out.
    pub async fn wait_for_replication(
        &self,
        offset: i64,
        epoch: i32,
        deadline: Instant,
    ) -> Replicated {
        let mut rx = self.subscribe();
        // Lock-free: the watch's predicate must not take the leadership
        // lock, which is held while the high watermark is advanced.
        let still_leader = || self.led_epoch.load(Ordering::Acquire) == epoch;
        let wait = rx.wait_for(|hw| *hw >= offset || !still_leader());
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(hw)) if *hw >= offset => Replicated::Yes,
            Ok(_) => Replicated::LeaderMoved,
            Err(_) => Replicated::TimedOut,
        }
    }

    /// `read` up to the log end rather than the high watermark: a new
    /// group coordinator loads its offsets partition to the end, as Kafka
    /// does, so no commit its predecessor appended is missing while the
    /// high watermark catches up.
    pub fn read_to_log_end(&self, offset: i64, max_bytes: u32) -> Result<PartitionRead, LogError> {
        let log = self.lock_log();
        let slice = log.read(offset, max_bytes, log.log_end_offset(), true)?;
        Ok(PartitionRead {
            slice,
            high_watermark: self.high_watermark(),
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
        let log = self.lock_log();
        let mut log = log;
        let completed = log.complete_pending_sync(&pending, now_ms);
        self.stop_on_storage_failure("recovery-point checkpoint", completed)?;
        if log.recovery_point() >= durable.min(log.log_end_offset()) {
            let mut replication = self.lock_replication();
            replication.durable_end = replication.durable_end.max(durable);
            drop(replication);
            self.durable.send_if_modified(|end| {
                let moved = durable > *end;
                *end = (*end).max(durable);
                moved
            });
            self.log_moved(&log);
        }
        Ok(())
    }

    /// Waits until the log is fsynced up to `offset` or `deadline` passes
    /// (acks=1 under fsync-before-ack: the leader's own copy only).
    pub async fn wait_for_durable(&self, offset: i64, deadline: Instant) -> bool {
        let mut rx = self.durable.subscribe();
        let wait = rx.wait_for(|end| *end >= offset);
        matches!(
            tokio::time::timeout_at(deadline.into(), wait).await,
            Ok(Ok(_))
        )
    }

    /// Periodic housekeeping: age-based roll, policy flush, and with
    /// `retention` (the producer id expiration, from the spec) retention and
    /// the expiry of idempotent producers.
    pub fn housekeeping(&self, now_ms: i64, retention: Option<i64>) -> Result<(), LogError> {
        let flush_due = {
            let mut log = self.lock_log();
            log.note_high_watermark(self.high_watermark());
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
        log.note_high_watermark(self.high_watermark());
        let closed = log.close_in_place(now_ms);
        self.stop_on_storage_failure("close", closed)
    }
}

/// Replication: the leader serving its followers' fetches and ISR changes,
/// and a follower copying its leader. The decisions are the replication
/// cores'; this moves the log and the high watermark accordingly.
impl Partition {
    /// A follower's fetch, served as leader: the epoch checks, then the
    /// divergence check (KIP-279/595), then the follower's progress (which
    /// may move the high watermark) and the records from its offset up to
    /// the log end (not the high watermark: followers copy everything).
    pub fn serve_replica_fetch(
        &self,
        fetch: &ReplicaFetch,
        now_ms: i64,
    ) -> Result<ReplicaServe, PartitionError> {
        let log = self.lock_log();
        self.check_leader(fetch.current_leader_epoch)?;
        let (log_start_offset, log_end_offset) = (log.log_start_offset(), log.log_end_offset());
        let position = divergence::check_fetch_position(
            fetch.fetch_offset,
            fetch.last_fetched_epoch,
            log_start_offset,
            log_end_offset,
            |epoch| log.leader_epoch_end_offset(epoch),
        );
        let answer = |diverging, records, proposal| ReplicaServe {
            high_watermark: self.high_watermark(),
            log_start_offset,
            log_end_offset,
            diverging,
            records,
            proposal,
        };
        match position {
            FetchPosition::Read => {}
            FetchPosition::Diverging(diverging) => {
                return Ok(answer(Some(diverging), ReadSlice::default(), None));
            }
            FetchPosition::OutOfRange => {
                return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                    offset: fetch.fetch_offset,
                    log_start_offset,
                    log_end_offset,
                }));
            }
        }
        let proposal = {
            let mut replication = self.lock_replication();
            let Role::Leader(state) = &mut replication.role else {
                unreachable!("{self:?}: leadership says leader, replication does not");
            };
            let moved = state
                .on_follower_fetch(fetch.replica_id, fetch.fetch_offset, now_ms)
                .map_err(|_| PartitionError::NotAReplica {
                    partition: format!("{self:?}"),
                    broker: fetch.replica_id,
                })?;
            if let Some(high_watermark) = moved {
                self.advance_high_watermark(high_watermark);
            }
            state.propose_expand(fetch.replica_id)
        };
        let max_bytes = u32::try_from(fetch.max_bytes).unwrap_or(0);
        let records = log.read(fetch.fetch_offset, max_bytes, log_end_offset, true)?;
        Ok(answer(None, records, proposal))
    }

    /// Waits until the log end passes `offset` or the high watermark moves
    /// from `high_watermark`, or `deadline`: a parked follower fetch.
    pub async fn wait_for_replica_data(&self, offset: i64, high_watermark: i64, deadline: Instant) {
        let mut ends = self.log_end.subscribe();
        let mut watermarks = self.subscribe();
        let grown = ends.wait_for(|end| *end > offset);
        let moved = watermarks.wait_for(|hw| *hw != high_watermark);
        let _ = tokio::time::timeout_at(deadline.into(), async {
            tokio::select! {
                _ = grown => {}
                _ = moved => {}
            }
        })
        .await;
    }

    /// ISR members that fell behind for longer than `lag_time_max_ms`, as
    /// a shrink to ask the controller for (none while another is in flight
    /// or when this broker does not lead).
    pub fn propose_isr_shrink(&self, now_ms: i64, lag_time_max_ms: i64) -> Option<IsrProposal> {
        match &mut self.lock_replication().role {
            Role::Leader(state) => state.propose_shrink(now_ms, lag_time_max_ms),
            Role::Follower => None,
        }
    }

    /// The controller committed an ISR change this leader asked for.
    pub fn isr_change_committed(&self, mut set: ReplicaSet) {
        let mut replication = self.lock_replication();
        if let Role::Leader(state) = &mut replication.role
            && state.leader_epoch() == set.leader_epoch
        {
            // An ISR change leaves the replicas, and a reassignment's
            // removals, as they were (the answer does not carry those).
            if set.replicas == state.replicas() {
                set.removing = state.set().removing.clone();
            }
            if let Some(high_watermark) = state.on_committed(set) {
                self.advance_high_watermark(high_watermark);
            }
        }
    }

    /// Whether `proposal` is still this leader's ISR change in flight.
    pub fn isr_change_in_flight(&self, proposal: &IsrProposal) -> bool {
        match &self.lock_replication().role {
            Role::Leader(state) => state.pending() == Some(proposal),
            Role::Follower => false,
        }
    }

    /// The controller refused `proposal`.
    pub fn isr_change_refused(&self, proposal: &IsrProposal) {
        let mut replication = self.lock_replication();
        if let Role::Leader(state) = &mut replication.role
            && state.leader_epoch() == proposal.leader_epoch
            && let Some(high_watermark) = state.on_refused(proposal)
        {
            self.advance_high_watermark(high_watermark);
        }
    }

    /// The ISR sizes acks=all checks against `min.insync.replicas`; None
    /// unless this broker leads.
    pub fn isr_sizes(&self) -> Option<IsrSizes> {
        match &self.lock_replication().role {
            Role::Leader(state) => Some(IsrSizes {
                replicas: state.set().target_len(),
                committed: state.isr().len(),
                maximal: state.maximal_isr().len(),
            }),
            Role::Follower => None,
        }
    }

    /// KIP-207: a new leader's high watermark may lag what the previous
    /// leader exposed until it reaches the start of this epoch.
    pub fn high_watermark_settled(&self) -> bool {
        match &self.lock_replication().role {
            Role::Leader(state) => state.high_watermark_reached_epoch_start(),
            Role::Follower => true,
        }
    }

    /// Each follower's lag behind the leader's log end (messages), for
    /// metrics; empty unless this broker leads.
    pub fn follower_lags(&self) -> Vec<(BrokerId, i64)> {
        let log_end = *self.log_end.borrow();
        match &self.lock_replication().role {
            Role::Leader(state) => state
                .followers()
                .map(|(id, end)| (id, if end < 0 { log_end } else { log_end - end }))
                .collect(),
            Role::Follower => Vec::new(),
        }
    }

    /// Where a follower fetches from: its log end, the epoch of its last
    /// batch, its log start.
    pub fn fetch_state(&self) -> FetchState {
        let log = self.lock_log();
        FetchState {
            fetch_offset: log.log_end_offset(),
            last_fetched_epoch: log.latest_leader_epoch().unwrap_or(UNDEFINED_EPOCH),
            log_start_offset: log.log_start_offset(),
        }
    }

    /// A follower appends what its leader sent (offsets and epochs kept,
    /// producer state rebuilt from the batches), then takes the leader's
    /// high watermark as far as its own log reaches and its log start if
    /// the leader's moved past it. Refused while this broker leads.
    pub fn append_replicated(
        &self,
        records: &[u8],
        leader_high_watermark: i64,
        leader_log_start: i64,
        now_ms: i64,
    ) -> Result<(), PartitionError> {
        let mut log = self.lock_log();
        if self.leadership().is_leader() {
            return Err(PartitionError::NotFollower {
                partition: format!("{self:?}"),
            });
        }
        if !records.is_empty() {
            let appended = log.append_as_follower(records, now_ms);
            self.stop_on_storage_failure("follower append", appended)?;
        }
        self.log_moved(&log);
        let high_watermark = leader_high_watermark.min(log.log_end_offset());
        self.advance_high_watermark(high_watermark);
        let start = leader_log_start.min(self.high_watermark());
        if start > log.log_start_offset() {
            let advanced = log.advance_log_start_offset(start);
            self.stop_on_storage_failure("follower log start", advanced)?;
        }
        Ok(())
    }

    /// A follower truncates as its leader's diverging answer requires;
    /// returns what it did.
    pub fn truncate_diverging(&self, diverging: EpochEnd) -> Result<Truncation, PartitionError> {
        let log = self.lock_log();
        let truncation =
            divergence::truncation_for_diverging(diverging, log.log_end_offset(), |epoch| {
                log.leader_epoch_end_offset(epoch)
            });
        drop(log);
        self.truncate_replica(truncation)?;
        Ok(truncation)
    }

    /// A follower drops its divergent suffix, or its whole log when its
    /// fetch position fell below the leader's log start.
    pub fn truncate_replica(&self, truncation: Truncation) -> Result<(), PartitionError> {
        let mut log = self.lock_log();
        if self.leadership().is_leader() {
            return Err(PartitionError::NotFollower {
                partition: format!("{self:?}"),
            });
        }
        let truncated = match truncation {
            Truncation::To(offset) => log.truncate_to(offset),
            Truncation::StartAt(offset) => log.restart_at(offset),
            Truncation::Unresolved => return Ok(()),
        };
        self.stop_on_storage_failure("follower truncation", truncated)?;
        let log_end = log.log_end_offset();
        // Only an unclean election can truncate below what was committed.
        self.high_watermark.send_if_modified(|hw| {
            let above = *hw > log_end;
            *hw = (*hw).min(log_end);
            above
        });
        let mut replication = self.lock_replication();
        replication.durable_end = replication.durable_end.min(log_end);
        drop(replication);
        self.durable.send_if_modified(|end| {
            let above = *end > log_end;
            *end = (*end).min(log_end);
            above
        });
        self.log_moved(&log);
        Ok(())
    }
}
