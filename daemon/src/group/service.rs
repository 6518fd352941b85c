//! The async shell around the sans-IO `Coordinator`: a lock, the channels
//! parked JoinGroup/SyncGroup answers complete through, durable commits to
//! the offsets log, replay at startup and the timer driver (the log cleaner
//! compacts the offsets topic like any compacted topic).

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

/// Longest the driver sleeps with no deadline armed.
const DRIVER_IDLE_WAKEUP: Duration = Duration::from_secs(5);
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
    /// One per offsets partition, taken before `inner`: the commits of the
    /// groups on one partition are checked, appended and applied in one
    /// order, and `inner` (every group's state) is never held across the
    /// write, so a stalled disk under one offsets partition stalls no
    /// other group's heartbeats, joins or commits.
    append_order: Vec<Mutex<()>>,
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

/// Kafka's settings of its offsets topic: compacted by the log cleaner,
/// never deleted by retention, 100 MiB segments (`offsets.topic.segment.bytes`).
fn offsets_topic_overrides() -> Vec<(String, String)> {
    [
        ("cleanup.policy", "compact"),
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl GroupCoordinator {
    /// Opens (creating) the offsets topic and rebuilds every group's
    /// committed offsets from it.
    pub fn open(broker: &Arc<Broker>) -> Result<Arc<Self>, GroupError> {
        let topic = match broker.topic(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let overrides = offsets_topic_overrides();
                broker
                    .create_internal_topic(OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, &overrides)
                    .map_err(|e| GroupError::Storage(e.to_string()))?
            }
        };
        // Offsets topics from before the log cleaner were compacted here.
        let wanted: std::collections::BTreeMap<String, String> =
            offsets_topic_overrides().into_iter().collect();
        if broker.topic_overrides(OFFSETS_TOPIC) != wanted {
            broker
                .set_topic_overrides(OFFSETS_TOPIC, wanted, false)
                .map_err(|e| GroupError::Storage(e.to_string()))?;
        }
        // This coordinator serves every group, so it needs every offsets
        // partition here (a single node hosts them all).
        if topic.partition_count() != OFFSETS_TOPIC_PARTITIONS
            || topic.hosted_count() != OFFSETS_TOPIC_PARTITIONS as usize
        {
            return Err(GroupError::Storage(format!(
                "{OFFSETS_TOPIC} has {} partitions of which {} are hosted here, expected all {OFFSETS_TOPIC_PARTITIONS}",
                topic.partition_count(),
                topic.hosted_count()
            )));
        }
        let config = CoordinatorConfig {
            member_id_nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            ..CoordinatorConfig::default()
        };
        let mut core = Coordinator::new(config);
        for partition in topic.hosted_partitions() {
            let replayed = replay(partition, &mut core)?;
            tracing::debug!(
                event = "offsets_replayed",
                partition = partition.index,
                records = replayed
            );
        }
        tracing::info!(event = "groups_loaded", groups = core.groups().count());
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                core,
                joins: HashMap::new(),
                syncs: HashMap::new(),
            }),
            offsets: topic.hosted_partitions().cloned().collect(),
            append_order: topic.hosted_partitions().map(|_| Mutex::new(())).collect(),
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

    /// Orders the appends to `group_id`'s offsets partition (see `append_order`).
    fn order_appends(&self, group_id: &str) -> MutexGuard<'_, ()> {
        let index = offsets_log::partition_for(group_id, OFFSETS_TOPIC_PARTITIONS);
        self.append_order[index as usize]
            .lock()
            .expect("offsets append lock poisoned")
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
        let _order = self.order_appends(group_id);
        self.lock().core.check_commit(
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
        self.lock().core.apply_offsets(changes);
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
        let _order = self.order_appends(group_id);
        let keys = self.lock().core.check_delete_group(group_id)?;
        let changes: Vec<OffsetChange> = keys
            .into_iter()
            .map(|k| (group_id.to_string(), k, None))
            .collect();
        let wait = self.append(broker, group_id, &changes)?;
        let mut inner = self.lock();
        inner.core.apply_offsets(changes);
        // A member may have joined while the tombstones were written: the
        // offsets are gone either way, the group only if still deletable.
        if inner.core.check_delete_group(group_id).is_ok() {
            inner.core.remove_group(group_id);
        }
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
        let _order = self.order_appends(group_id);
        let (subscribed, changes) = {
            let inner = self.lock();
            let subscribed = inner.core.check_offset_delete(group_id)?;
            let changes: Vec<OffsetChange> = keys
                .iter()
                .filter(|(topic, _)| !subscribed.contains(topic))
                .filter(|k| inner.core.committed(group_id, k).is_some())
                .map(|k| (group_id.to_string(), k.clone(), None))
                .collect();
            (subscribed, changes)
        };
        let wait = self.append(broker, group_id, &changes)?;
        self.lock().core.apply_offsets(changes);
        Ok((subscribed, wait))
    }

    /// The timer driver: sleeps until the earliest deadline (or a new
    /// request re-arms it), expires sessions and barriers.
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
        }
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
