//! The async shell around the sans-IO `Coordinator`: a lock, the channels
//! parked JoinGroup/SyncGroup answers complete through, durable commits to
//! the offsets log, replay at startup, the timer driver and compaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::coordinator::{
    CommittedOffset, Coordinator, CoordinatorConfig, Effect, JoinOutcome, Parked,
};
use super::error::GroupError;
use super::join::JoinRequest;
use super::offset_commit::{OffsetChange, OffsetKey};
use super::offsets_log::{self, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS};
use super::state::ReplyToken;
use super::sync::SyncRequest;
use crate::broker::{Broker, Partition, now_ms};

/// Longest the driver sleeps with no deadline armed (compaction checks).
const DRIVER_IDLE_WAKEUP: Duration = Duration::from_secs(5);
/// An offsets partition is compacted once its log exceeds this and twice
/// its size after the previous compaction.
pub const OFFSETS_COMPACT_BYTES_MIN: u64 = 16 * 1024 * 1024;
/// Bytes read per step when replaying the offsets log at startup.
const REPLAY_READ_BYTES: u32 = 1024 * 1024;

type JoinSender = oneshot::Sender<Result<JoinOutcome, GroupError>>;
type SyncSender = oneshot::Sender<Result<Bytes, GroupError>>;

/// An answer now, or a channel it will arrive on.
pub enum Pending<T> {
    Now(Result<T, GroupError>),
    Wait(oneshot::Receiver<Result<T, GroupError>>),
}

impl<T> Pending<T> {
    pub async fn resolve(self) -> Result<T, GroupError> {
        match self {
            Pending::Now(result) => result,
            // A dropped sender means the coordinator shut down.
            Pending::Wait(rx) => rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable)),
        }
    }
}

struct Inner {
    core: Coordinator,
    joins: HashMap<ReplyToken, JoinSender>,
    syncs: HashMap<ReplyToken, SyncSender>,
    /// Per offsets partition: its size right after the last compaction.
    compacted_bytes: Vec<u64>,
}

impl Inner {
    /// Sends every ready parked answer to its waiting request.
    fn drain(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Join(token, result) => {
                    if let Some(tx) = self.joins.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Sync(token, result) => {
                    if let Some(tx) = self.syncs.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }
}

pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    offsets: Vec<Arc<Partition>>,
    wakeup: Notify,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

/// A durable commit's wait: the partition and the offset its high
/// watermark must pass (fsync-before-ack topics).
pub type CommitWait = Option<(Arc<Partition>, i64)>;

impl GroupCoordinator {
    /// Opens (creating) the offsets topic and rebuilds every group's
    /// committed offsets from it.
    pub fn open(broker: &Arc<Broker>) -> Result<Arc<Self>, GroupError> {
        let topic = match broker.topic(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let overrides = [
                    ("retention.ms".to_string(), "-1".to_string()),
                    ("retention.bytes".to_string(), "-1".to_string()),
                ];
                broker
                    .create_internal_topic(OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, &overrides)
                    .map_err(|e| GroupError::Storage(e.to_string()))?
            }
        };
        if topic.partitions.len() != OFFSETS_TOPIC_PARTITIONS as usize {
            return Err(GroupError::Storage(format!(
                "{OFFSETS_TOPIC} has {} partitions, expected {OFFSETS_TOPIC_PARTITIONS}",
                topic.partitions.len()
            )));
        }
        let config = CoordinatorConfig {
            member_id_nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            ..CoordinatorConfig::default()
        };
        let mut core = Coordinator::new(config);
        let mut compacted_bytes = Vec::new();
        for partition in &topic.partitions {
            let replayed = replay(partition, &mut core)?;
            tracing::debug!(
                event = "offsets_replayed",
                partition = partition.index,
                records = replayed
            );
            compacted_bytes.push(partition.size_bytes());
        }
        tracing::info!(event = "groups_loaded", groups = core.groups().count());
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                core,
                joins: HashMap::new(),
                syncs: HashMap::new(),
                compacted_bytes,
            }),
            offsets: topic.partitions.clone(),
            wakeup: Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside the state machine is a broken invariant: stop.
        self.inner.lock().expect("group coordinator lock poisoned")
    }

    /// Runs `f` on the core, then delivers ready answers and re-arms the driver.
    fn with_core<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.lock();
        let result = f(&mut inner);
        inner.drain();
        drop(inner);
        self.wakeup.notify_one();
        result
    }

    pub fn join(&self, request: JoinRequest) -> Pending<JoinOutcome> {
        self.with_core(|inner| match inner.core.join(Instant::now(), request) {
            Parked::Now(result) => Pending::Now(result),
            Parked::Later(token) => {
                let (tx, rx) = oneshot::channel();
                inner.joins.insert(token, tx);
                Pending::Wait(rx)
            }
        })
    }

    pub fn sync(&self, request: SyncRequest) -> Pending<Bytes> {
        self.with_core(|inner| match inner.core.sync(Instant::now(), request) {
            Parked::Now(result) => Pending::Now(result),
            Parked::Later(token) => {
                let (tx, rx) = oneshot::channel();
                inner.syncs.insert(token, tx);
                Pending::Wait(rx)
            }
        })
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.with_core(|inner| {
            inner
                .core
                .heartbeat(Instant::now(), group, member, instance, generation)
        })
    }

    pub fn leave(
        &self,
        group: &str,
        member: &str,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        self.with_core(|inner| inner.core.leave(Instant::now(), group, member, instance))
    }

    /// Reads the core (describe, list, fetch) under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock().core)
    }

    /// The offsets partition a group's commits go to (and whose leader
    /// coordinates the group, once there are several brokers).
    pub fn partition_for(&self, group_id: &str) -> &Arc<Partition> {
        let index = offsets_log::partition_for(group_id, OFFSETS_TOPIC_PARTITIONS);
        &self.offsets[index as usize]
    }

    /// OffsetCommit: checks fencing, appends the commits to the offsets log
    /// and applies them. The caller waits on the returned high watermark
    /// before acknowledging when the topic syncs before acks.
    pub fn commit(
        &self,
        broker: &Broker,
        member: (&str, &str, Option<&str>, i32),
        entries: Vec<(OffsetKey, CommittedOffset)>,
    ) -> Result<CommitWait, GroupError> {
        let (group_id, member_id, instance_id, generation) = member;
        let keys: Vec<OffsetKey> = entries.iter().map(|(k, _)| k.clone()).collect();
        let mut inner = self.lock();
        inner.core.check_commit(
            Instant::now(),
            group_id,
            member_id,
            instance_id,
            generation,
            &keys,
        )?;
        let changes: Vec<OffsetChange> = entries
            .into_iter()
            .map(|(key, value)| (group_id.to_string(), key, Some(value)))
            .collect();
        let wait = self.append(broker, group_id, &changes)?;
        inner.core.apply_offsets(changes);
        Ok(wait)
    }

    /// Writes `changes` of one group to its offsets partition.
    fn append(
        &self,
        broker: &Broker,
        group_id: &str,
        changes: &[OffsetChange],
    ) -> Result<CommitWait, GroupError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let partition = self.partition_for(group_id);
        let batches = offsets_log::encode_batches(changes, now_ms())
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        let mut last_offset = -1;
        for batch in batches {
            let info = partition.append(&batch, now_ms()).map_err(|e| {
                tracing::error!(event = "offsets_append_failed", group = %group_id, error = %e);
                GroupError::Storage(e.to_string())
            })?;
            last_offset = info.last_offset;
        }
        assert!(last_offset >= 0);
        if partition.fsync_before_ack() {
            broker.request_sync(partition);
            return Ok(Some((partition.clone(), last_offset + 1)));
        }
        Ok(None)
    }

    /// DeleteGroups for one group: tombstones its offsets, then drops it.
    pub fn delete_group(&self, broker: &Broker, group_id: &str) -> Result<CommitWait, GroupError> {
        let mut inner = self.lock();
        let keys = inner.core.check_delete_group(group_id)?;
        let changes: Vec<OffsetChange> = keys
            .into_iter()
            .map(|k| (group_id.to_string(), k, None))
            .collect();
        let wait = self.append(broker, group_id, &changes)?;
        inner.core.apply_offsets(changes);
        inner.core.remove_group(group_id);
        Ok(wait)
    }

    /// OffsetDelete: tombstones the given partitions' offsets; returns the
    /// topics a live member still subscribes to (refused) and the wait.
    pub fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        keys: &[OffsetKey],
    ) -> Result<(Vec<String>, CommitWait), GroupError> {
        let mut inner = self.lock();
        let subscribed = inner.core.check_offset_delete(group_id)?;
        let changes: Vec<OffsetChange> = keys
            .iter()
            .filter(|(topic, _)| !subscribed.contains(topic))
            .filter(|k| inner.core.committed(group_id, k).is_some())
            .map(|k| (group_id.to_string(), k.clone(), None))
            .collect();
        let wait = self.append(broker, group_id, &changes)?;
        inner.core.apply_offsets(changes);
        Ok((subscribed, wait))
    }

    /// The timer driver: sleeps until the earliest deadline (or a new
    /// request re-arms it), expires sessions and barriers, compacts.
    pub async fn run_driver(self: Arc<Self>) {
        loop {
            let next = self.lock().core.poll_timeout();
            let idle = Instant::now() + DRIVER_IDLE_WAKEUP;
            let at = next.map_or(idle, |n| n.min(idle));
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.wakeup.notified() => continue,
            }
            self.with_core(|inner| inner.core.handle_timeout(Instant::now()));
            let this = self.clone();
            let compacted = tokio::task::spawn_blocking(move || this.compact_due()).await;
            if let Ok(Err(e)) = compacted {
                tracing::error!(event = "offsets_compaction_failed", error = %e);
            }
        }
    }

    /// Compacts every offsets partition that has grown enough.
    pub fn compact_due(&self) -> Result<(), GroupError> {
        for partition in &self.offsets {
            let index = partition.index as usize;
            let size = partition.size_bytes();
            let floor = self.lock().compacted_bytes[index];
            if size > OFFSETS_COMPACT_BYTES_MIN.max(2 * floor) {
                self.compact(partition)?;
            }
        }
        Ok(())
    }

    /// Copy-forward compaction: re-append the live offsets of the groups
    /// on `partition` into a fresh segment, sync, then delete every older
    /// segment. Only the re-append holds the coordinator lock, so no commit
    /// interleaves with the snapshot; the roll (which writes and fsyncs a
    /// producer snapshot) and the fsync run without it, since every group
    /// request waits on that lock. Commits appended between the roll and the
    /// snapshot lie above the deleted segments and are already part of the
    /// snapshot, so a replay from the new segment gives the same state.
    pub fn compact(&self, partition: &Arc<Partition>) -> Result<(), GroupError> {
        let rolled = partition.lock_log().roll_now(now_ms());
        let snapshot_base = partition
            .stop_on_storage_failure("offsets compaction roll", rolled)
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        self.snapshot_and_trim(partition, snapshot_base)
    }

    /// Compaction after the roll: `snapshot_base` is where the sealed
    /// segments end; commits may have been appended since.
    pub(super) fn snapshot_and_trim(
        &self,
        partition: &Arc<Partition>,
        snapshot_base: i64,
    ) -> Result<(), GroupError> {
        let storage = |e: crate::log::LogError| GroupError::Storage(e.to_string());
        let live = {
            let inner = self.lock();
            let live: Vec<OffsetChange> = inner
                .core
                .groups()
                .filter(|(id, _)| {
                    offsets_log::partition_for(id, OFFSETS_TOPIC_PARTITIONS) == partition.index
                })
                .flat_map(|(id, g)| {
                    g.offsets
                        .iter()
                        .map(|(k, v)| (id.clone(), k.clone(), Some(v.clone())))
                })
                .collect();
            let batches = offsets_log::encode_batches(&live, now_ms())
                .map_err(|e| GroupError::Storage(e.to_string()))?;
            for batch in batches {
                partition.append(&batch, now_ms()).map_err(storage)?;
            }
            live.len()
        };
        // The snapshot must be durable before what it replaces goes.
        partition.sync(now_ms()).map_err(storage)?;
        let deleted = partition.lock_log().delete_segments_below(snapshot_base);
        let deleted = partition
            .stop_on_storage_failure("offsets compaction delete", deleted)
            .map_err(storage)?;
        let size = partition.size_bytes();
        self.lock().compacted_bytes[partition.index as usize] = size;
        tracing::info!(
            event = "offsets_compacted",
            partition = partition.index,
            live,
            segments_deleted = deleted,
            snapshot_base
        );
        Ok(())
    }
}

/// Replays one offsets partition into `core`; returns the records applied.
fn replay(partition: &Partition, core: &mut Coordinator) -> Result<usize, GroupError> {
    let storage = |e: String| GroupError::Storage(format!("replaying {partition:?}: {e}"));
    let mut offset = partition.offsets().log_start_offset;
    let mut applied = 0;
    loop {
        let read = partition
            .read(offset, REPLAY_READ_BYTES, true)
            .map_err(|e| storage(e.to_string()))?;
        let Some(slice) = read.slice.file else { break };
        let bytes = slice.read_to_vec().map_err(|e| storage(e.to_string()))?;
        let (changes, next) =
            offsets_log::decode_batches(Bytes::from(bytes)).map_err(|e| storage(e.to_string()))?;
        let Some(next) = next.filter(|n| *n > offset) else {
            return Err(storage(format!("no progress at offset {offset}")));
        };
        applied += changes.len();
        core.apply_offsets(changes);
        offset = next;
    }
    Ok(applied)
}
