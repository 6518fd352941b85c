//! The async shell around the sans-IO `Coordinator`: a lock, the channels
//! parked JoinGroup/SyncGroup answers complete through, durable commits to
//! the offsets log, replay of the offsets partitions and the timer driver
//! (the log cleaner compacts the offsets topic like any compacted topic).
//!
//! A group is coordinated by the leader of the offsets partition it hashes
//! to. A single node leads all 16 and loads them at start; a cluster member
//! loads a partition's groups when it becomes its leader and forgets them
//! when it stops leading (`follow_leadership`), as Kafka's
//! GroupMetadataManager does. Every request checks, under the same lock,
//! that its group's partition is loaded here.

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
use crate::broker::{Broker, Leadership, Partition, PartitionError, now_ms};

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

/// Where the groups of one offsets partition are coordinated, as this
/// broker knows it.
#[derive(Debug, Clone)]
enum Slot {
    /// By another broker, or by none yet: NOT_COORDINATOR.
    Elsewhere,
    /// Here, once the partition is replayed: COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// Here: commits go to `partition`, which this broker leads at `epoch`.
    Here {
        partition: Arc<Partition>,
        epoch: i32,
    },
}

struct Inner {
    core: Coordinator,
    joins: HashMap<ReplyToken, JoinSender>,
    syncs: HashMap<ReplyToken, SyncSender>,
    /// By offsets partition index.
    slots: Vec<Slot>,
}

impl Inner {
    /// The offsets partition `group_id`'s commits go to, if this broker
    /// coordinates the group (Kafka's checks, in Kafka's order).
    fn owned(&self, group_id: &str) -> Result<&Arc<Partition>, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        match &self.slots[offsets_index(group_id)] {
            Slot::Here { partition, .. } => Ok(partition),
            Slot::Loading => Err(GroupError::LoadInProgress),
            Slot::Elsewhere => Err(GroupError::NotCoordinator),
        }
    }

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
    /// One per offsets partition, taken before `inner`: the commits of the
    /// groups on one partition are checked, appended and applied in one
    /// order, and `inner` (every group's state) is never held across the
    /// write, so a stalled disk under one offsets partition stalls no
    /// other group's heartbeats, joins or commits. Loading and unloading a
    /// partition take it too, so no commit straddles either.
    append_order: Vec<Mutex<()>>,
    wakeup: Notify,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

/// A durable commit's wait: the partition and the offset its high
/// watermark must pass (fsynced, and on every ISR member).
pub type CommitWait = Option<(Arc<Partition>, i64)>;

impl GroupCoordinator {
    /// The coordinator `broker` runs: a single node's (`open`) or a
    /// cluster member's (`open_member`).
    pub fn start(broker: &Arc<Broker>) -> Result<Arc<Self>, GroupError> {
        match broker.is_cluster_member() {
            true => Ok(Self::open_member()),
            false => Self::open(broker),
        }
    }

    /// Opens (creating) the offsets topic and rebuilds every group's
    /// committed offsets from it.
    pub fn open(broker: &Arc<Broker>) -> Result<Arc<Self>, GroupError> {
        let topic = match broker.topic(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let overrides = offsets_log::topic_settings();
                broker
                    .create_internal_topic(OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, &overrides)
                    .map_err(|e| GroupError::Storage(e.to_string()))?
            }
        };
        // Offsets topics from before the log cleaner were compacted here.
        let wanted: std::collections::BTreeMap<String, String> =
            offsets_log::topic_settings().into_iter().collect();
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
        let coordinator = Self::empty();
        for partition in topic.hosted_partitions() {
            let epoch = partition.leadership().epoch();
            coordinator.load(partition.index, partition.clone(), epoch)?;
        }
        tracing::info!(
            event = "groups_loaded",
            groups = coordinator.read(|core| core.groups().count())
        );
        Ok(coordinator)
    }

    /// A cluster member's coordinator: it coordinates nothing until this
    /// broker leads an offsets partition (`follow_leadership`). The offsets
    /// topic comes from the controller like any topic.
    pub fn open_member() -> Arc<Self> {
        Self::empty()
    }

    fn empty() -> Arc<Self> {
        let config = CoordinatorConfig {
            member_id_nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            ..CoordinatorConfig::default()
        };
        let partitions = OFFSETS_TOPIC_PARTITIONS as usize;
        Arc::new(Self {
            inner: Mutex::new(Inner {
                core: Coordinator::new(config),
                joins: HashMap::new(),
                syncs: HashMap::new(),
                slots: vec![Slot::Elsewhere; partitions],
            }),
            append_order: (0..partitions).map(|_| Mutex::new(())).collect(),
            wakeup: Notify::new(),
        })
    }

    /// Loads the groups of each offsets partition this broker has come to
    /// lead, and forgets those of each it no longer leads; a partition led
    /// at a new epoch is loaded afresh. Blocking (replays the log): run it
    /// off the async workers, after every leadership change.
    pub fn follow_leadership(&self, broker: &Broker) {
        let topic = broker.topic(OFFSETS_TOPIC);
        for index in 0..OFFSETS_TOPIC_PARTITIONS {
            let led = topic
                .as_ref()
                .and_then(|t| t.partition(index))
                .and_then(|p| match p.leadership() {
                    Leadership::Leader { epoch } => Some((p.clone(), epoch)),
                    Leadership::NotLeader { .. } => None,
                });
            let loaded = match &self.lock().slots[index as usize] {
                Slot::Here { epoch, .. } => Some(*epoch),
                Slot::Loading | Slot::Elsewhere => None,
            };
            match (led, loaded) {
                (Some((_, epoch)), Some(at)) if epoch == at => {}
                (None, None) => {}
                (led, _) => {
                    self.unload(index);
                    if let Some((partition, epoch)) = led
                        && let Err(error) = self.load(index, partition, epoch)
                    {
                        // Left loading: requests are told to retry, and the
                        // next leadership change tries again.
                        tracing::error!(event = "offsets_load_failed", partition = index, %error);
                    }
                }
            }
        }
    }

    /// Replays offsets partition `index` (led here at `epoch`) into the
    /// core; its groups are served once it is in.
    fn load(&self, index: i32, partition: Arc<Partition>, epoch: i32) -> Result<(), GroupError> {
        let slot = index as usize;
        let _order = self.append_order[slot]
            .lock()
            .expect("offsets append lock poisoned");
        self.lock().slots[slot] = Slot::Loading;
        let started = Instant::now();
        let replayed = replay(&partition, |changes| {
            self.lock().core.apply_offsets(changes)
        })?;
        self.lock().slots[slot] = Slot::Here { partition, epoch };
        tracing::debug!(
            event = "offsets_loaded",
            partition = index,
            epoch,
            records = replayed,
            ms = started.elapsed().as_millis() as u64
        );
        Ok(())
    }

    /// Forgets the groups of offsets partition `index`.
    fn unload(&self, index: i32) {
        let slot = index as usize;
        let _order = self.append_order[slot]
            .lock()
            .expect("offsets append lock poisoned");
        let was_here = !matches!(self.lock().slots[slot], Slot::Elsewhere);
        let groups = self.with_core(|inner| {
            inner.slots[slot] = Slot::Elsewhere;
            inner
                .core
                .unload_groups(|group| offsets_index(group) == slot)
        });
        if was_here {
            tracing::debug!(event = "offsets_unloaded", partition = index, groups);
        }
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
        self.with_core(|inner| {
            if let Err(error) = inner.owned(&request.group_id) {
                return Pending::Now(Err(error));
            }
            match inner.core.join(Instant::now(), request) {
                Parked::Now(result) => Pending::Now(result),
                Parked::Later(token) => {
                    let (tx, rx) = oneshot::channel();
                    inner.joins.insert(token, tx);
                    Pending::Wait(rx)
                }
            }
        })
    }

    pub fn sync(&self, request: SyncRequest) -> Pending<Bytes> {
        self.with_core(|inner| {
            if let Err(error) = inner.owned(&request.group_id) {
                return Pending::Now(Err(error));
            }
            match inner.core.sync(Instant::now(), request) {
                Parked::Now(result) => Pending::Now(result),
                Parked::Later(token) => {
                    let (tx, rx) = oneshot::channel();
                    inner.syncs.insert(token, tx);
                    Pending::Wait(rx)
                }
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
            inner.owned(group)?;
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
        self.with_core(|inner| {
            inner.owned(group)?;
            inner.core.leave(Instant::now(), group, member, instance)
        })
    }

    /// Reads the core (list, lag) under the lock: every group loaded here.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock().core)
    }

    /// Reads the core for one group (describe, offset fetch), if this
    /// broker coordinates it.
    pub fn read_group<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&Coordinator) -> T,
    ) -> Result<T, GroupError> {
        let inner = self.lock();
        inner.owned(group_id)?;
        Ok(f(&inner.core))
    }

    /// The offsets partition a group's commits go to, while this broker
    /// coordinates the group.
    pub fn offsets_partition(&self, group_id: &str) -> Option<Arc<Partition>> {
        self.lock().owned(group_id).ok().cloned()
    }

    /// Orders the appends to `group_id`'s offsets partition (see `append_order`).
    fn order_appends(&self, group_id: &str) -> MutexGuard<'_, ()> {
        self.append_order[offsets_index(group_id)]
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
        let partition = {
            let mut inner = self.lock();
            let partition = inner.owned(group_id)?.clone();
            inner.core.check_commit(
                Instant::now(),
                group_id,
                member_id,
                instance_id,
                generation,
                &keys,
            )?;
            partition
        };
        let changes: Vec<OffsetChange> = entries
            .into_iter()
            .map(|(key, value)| (group_id.to_string(), key, Some(value)))
            .collect();
        let wait = append(broker, &partition, group_id, &changes)?;
        self.lock().core.apply_offsets(changes);
        Ok(wait)
    }

    /// DeleteGroups for one group: tombstones its offsets, then drops it.
    pub fn delete_group(&self, broker: &Broker, group_id: &str) -> Result<CommitWait, GroupError> {
        let _order = self.order_appends(group_id);
        let (partition, keys) = {
            let inner = self.lock();
            let partition = inner.owned(group_id)?.clone();
            (partition, inner.core.check_delete_group(group_id)?)
        };
        let changes: Vec<OffsetChange> = keys
            .into_iter()
            .map(|k| (group_id.to_string(), k, None))
            .collect();
        let wait = append(broker, &partition, group_id, &changes)?;
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
        let (partition, subscribed, changes) = {
            let inner = self.lock();
            let partition = inner.owned(group_id)?.clone();
            let subscribed = inner.core.check_offset_delete(group_id)?;
            let changes: Vec<OffsetChange> = keys
                .iter()
                .filter(|(topic, _)| !subscribed.contains(topic))
                .filter(|k| inner.core.committed(group_id, k).is_some())
                .map(|k| (group_id.to_string(), k.clone(), None))
                .collect();
            (partition, subscribed, changes)
        };
        let wait = append(broker, &partition, group_id, &changes)?;
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

/// The offsets partition index of `group_id`.
fn offsets_index(group_id: &str) -> usize {
    offsets_log::partition_for(group_id, OFFSETS_TOPIC_PARTITIONS) as usize
}

/// Writes `changes` of one group to its offsets partition. A partition
/// that stopped being led here meanwhile refuses the append: the group
/// moved (NOT_COORDINATOR), nothing was written.
fn append(
    broker: &Broker,
    partition: &Arc<Partition>,
    group_id: &str,
    changes: &[OffsetChange],
) -> Result<CommitWait, GroupError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let batches = offsets_log::encode_batches(changes, now_ms())
        .map_err(|e| GroupError::Storage(e.to_string()))?;
    let mut last_offset = -1;
    for batch in batches {
        let info = partition.append(&batch, now_ms()).map_err(|e| match e {
            PartitionError::NotLeader { .. } => GroupError::NotCoordinator,
            e => {
                tracing::error!(event = "offsets_append_failed", group = %group_id, error = %e);
                GroupError::Storage(e.to_string())
            }
        })?;
        last_offset = info.last_offset;
    }
    assert!(last_offset >= 0);
    if partition.fsync_before_ack() {
        broker.request_sync(partition);
    }
    // Acknowledged once below the high watermark: synced under
    // fsync-before-ack, and on every ISR member of a replicated offsets
    // topic, so a commit survives its coordinator's failover (Kafka commits
    // with acks=all).
    if partition.high_watermark() <= last_offset {
        return Ok(Some((partition.clone(), last_offset + 1)));
    }
    Ok(None)
}

/// Replays one offsets partition through `apply`, a chunk at a time;
/// returns the records applied.
fn replay(
    partition: &Partition,
    mut apply: impl FnMut(Vec<OffsetChange>),
) -> Result<usize, GroupError> {
    let storage = |e: String| GroupError::Storage(format!("replaying {partition:?}: {e}"));
    let mut offset = partition.offsets().log_start_offset;
    let mut applied = 0;
    loop {
        let read = partition
            .read_to_log_end(offset, REPLAY_READ_BYTES)
            .map_err(|e| storage(e.to_string()))?;
        let Some(slice) = read.slice.file else { break };
        let bytes = slice.read_to_vec().map_err(|e| storage(e.to_string()))?;
        let (changes, next) =
            offsets_log::decode_batches(Bytes::from(bytes)).map_err(|e| storage(e.to_string()))?;
        let Some(next) = next.filter(|n| *n > offset) else {
            return Err(storage(format!("no progress at offset {offset}")));
        };
        applied += changes.len();
        apply(changes);
        offset = next;
    }
    Ok(applied)
}
