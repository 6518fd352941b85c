//! The broker's state on one host: which topics and partitions it holds,
//! their logs, and the background work (group commit, flush, retention).
//! Kafka request handlers in `kafka/` call into this; it does no networking.

mod admin;
mod assignment;
mod cluster_view;
mod io_pool;
mod leadership;
mod log_config;
mod parallel;
mod partition;
mod producer_ids;
mod registry;
mod reload;
mod topic;

/// The log's types the broker's callers see (reads, append errors): the
/// Kafka layer names them through the broker, never the log directly.
pub use crate::log::{FileSlice, LogError, ProducerError, parse_header};
pub use admin::{AdminError, ControllerRefusal, TopicChanges};
pub use assignment::{AssignmentError, HostedPartition, TopicAssignment};
pub use cluster_view::{ClusterView, ViewBroker, ViewPartition, ViewTopic};
pub use io_pool::{IoPool, IoPoolError, JobCost};
pub use leadership::{Leadership, NO_EPOCH_CHECK, PartitionError, SINGLE_NODE_LEADER_EPOCH};
pub use log_config::log_config_for;
pub use partition::{Partition, PartitionOffsets, PartitionRead, PartitionStats, Replicated};
pub use producer_ids::{PRODUCER_ID_BLOCK, ProducerIdAllocator, ProducerIdError, ProducerIdSource};
pub use registry::{RegistryEntry, RegistryError, TopicOrigin, TopicRegistry};
pub use reload::AppliedAction;
pub use topic::{CreateTopicError, Topic, TopicRequest};

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::Notify;

use crate::config::{BrokerSpec, ClusterSpec};
use crate::log::{DirCheckpoints, Storage};

/// How often partitions are checked for age-based rolls and due flushes.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(200);
/// How often compacted partitions are checked for a due cleaning pass
/// (Kafka's log.cleaner.backoff.ms is 15 s).
pub const CLEANER_INTERVAL: Duration = Duration::from_secs(2);
/// How often retention runs (Kafka: log.retention.check.interval.ms, 5 min).
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("broker {node_id} is not declared in the cluster spec")]
    UnknownNode { node_id: i32 },
    #[error("cluster spec: {}: {}", list(.reasons), crate::config::SINGLE_NODE_ONE_REPLICA)]
    Unservable {
        reasons: Vec<crate::config::Unservable>,
    },
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another sluiced (lock file held)")]
    DataDirLocked { path: PathBuf },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    ProducerIds(#[from] ProducerIdError),
    #[error("data directory checkpoints: {0}")]
    Checkpoints(#[from] LogError),
    #[error("opening topic {topic}: {source}")]
    OpenTopic {
        topic: String,
        source: CreateTopicError,
    },
}

/// `key = value, key = value` for one error line.
fn list(reasons: &[crate::config::Unservable]) -> String {
    let pairs: Vec<String> = reasons
        .iter()
        .map(|r| format!("{} = {}", r.key, r.value))
        .collect();
    pairs.join(", ")
}

/// Milliseconds since the Unix epoch: record timestamps, segment ages and
/// retention all use wall-clock time, as Kafka does.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Broker {
    node_id: i32,
    spec: RwLock<Arc<ClusterSpec>>,
    data_dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and registry writes.
    registry: Mutex<TopicRegistry>,
    /// Wakes the syncer when an append waits for an fsync.
    sync_wakeup: Notify,
    /// Held open for the broker's life: an exclusive flock on the data dir.
    _dir_lock: File,
    /// The spec file's path, named in refusals (`set_spec_file`).
    spec_file: std::sync::OnceLock<String>,
    /// Hands out producer ids (InitProducerId).
    producer_ids: Mutex<ProducerIdAllocator>,
    /// A member's topic changes go to the controller through this.
    topic_changes: std::sync::OnceLock<Arc<dyn TopicChanges>>,
    /// Where request handlers run appends and other storage work.
    io: IoPool,
    /// Where every partition log writes and syncs (the OS; a test's faults).
    storage: Arc<dyn Storage>,
    /// The data directory's recovery point, log start and cleaner offsets.
    checkpoints: Arc<DirCheckpoints>,
    /// A member of a multi-broker cluster (`open_member`): the controller
    /// decides topics and leaders; a single node decides them itself.
    member: bool,
    /// The cluster as the owner last described it (members only).
    cluster_view: RwLock<Option<Arc<ClusterView>>>,
    /// Serialises `apply_assignment` calls (held across their file I/O;
    /// requests never take it).
    assignments: Mutex<()>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Broker {
    /// Locks the data directory, recovers every partition it holds and opens
    /// the topics the spec declares. Runs before any listener is bound.
    pub fn open(
        spec: ClusterSpec,
        node_id: i32,
        data_dir: PathBuf,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::open_with_storage(spec, node_id, data_dir, crate::log::os_storage())
    }

    /// `open` with every log writing and syncing through `storage`.
    pub fn open_with_storage(
        spec: ClusterSpec,
        node_id: i32,
        data_dir: PathBuf,
        storage: Arc<dyn Storage>,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::open_in_mode(spec, node_id, data_dir, storage, false)
    }

    /// Locks the data directory of a member of a multi-broker cluster. No
    /// topic is opened: the controller places partitions, and its owner
    /// hands this broker its share through `apply_assignment`. Topics are
    /// neither created from the spec's `[topics]` nor through the Kafka API
    /// here (the controller creates them), and the group coordinator is not
    /// started (it will follow the offsets topic's leaders).
    pub fn open_member(
        spec: ClusterSpec,
        node_id: i32,
        data_dir: PathBuf,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::open_in_mode(spec, node_id, data_dir, crate::log::os_storage(), true)
    }

    fn open_in_mode(
        spec: ClusterSpec,
        node_id: i32,
        data_dir: PathBuf,
        storage: Arc<dyn Storage>,
        member: bool,
    ) -> Result<Arc<Self>, BrokerError> {
        if spec.broker(node_id).is_none() {
            return Err(BrokerError::UnknownNode { node_id });
        }
        // `sluiced` checks first and names the file; this keeps every other
        // caller (bench, tests) from running a spec whose replication is ignored.
        let reasons = crate::config::unservable(&spec);
        if !member && !reasons.is_empty() {
            return Err(BrokerError::Unservable { reasons });
        }
        std::fs::create_dir_all(&data_dir).map_err(|source| BrokerError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let dir_lock = lock_data_dir(&data_dir)?;
        let registry = TopicRegistry::load(&data_dir)?;
        let producer_ids = ProducerIdAllocator::open(&data_dir.join("meta"))?;
        let checkpoints = Arc::new(DirCheckpoints::open(&data_dir)?);
        let broker = Arc::new(Self {
            node_id,
            spec: RwLock::new(Arc::new(spec)),
            data_dir,
            topics: RwLock::new(BTreeMap::new()),
            registry: Mutex::new(registry),
            producer_ids: Mutex::new(producer_ids),
            spec_file: std::sync::OnceLock::new(),
            sync_wakeup: Notify::new(),
            _dir_lock: dir_lock,
            topic_changes: std::sync::OnceLock::new(),
            io: IoPool::default(),
            storage,
            checkpoints,
            member,
            cluster_view: RwLock::new(None),
            assignments: Mutex::new(()),
        });
        if member {
            return Ok(broker);
        }
        broker.open_all_topics()?;
        // Every partition's offsets, in three files, before anything is served.
        broker.checkpoints.write(now_ms(), false)?;
        Ok(broker)
    }

    fn open_all_topics(&self) -> Result<(), BrokerError> {
        let spec = self.spec();
        let recorded: Vec<(String, RegistryEntry)> = self
            .lock_registry()
            .topics
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut names: Vec<String> = spec.topics.keys().cloned().collect();
        for (name, _) in &recorded {
            if !spec.topics.contains_key(name) {
                names.push(name.clone());
            }
        }
        let total = names.len();
        for (done, name) in names.into_iter().enumerate() {
            tracing::info!(event = "topic_open", topic = %name, progress = %format!("{}/{}", done + 1, total));
            let request = TopicRequest::from_registry_or_spec(
                &spec,
                &name,
                self.lock_registry().topics.get(&name),
            );
            self.install_topic(&name, request)
                .map_err(|source| BrokerError::OpenTopic {
                    topic: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// A member's producer ids come from the controller from now on (its
    /// local block file is no longer read or written).
    pub fn set_producer_id_source(&self, source: Arc<dyn ProducerIdSource>) {
        assert!(
            self.member,
            "only a cluster member gets ids from a controller"
        );
        *self.producer_ids.lock().expect("producer id lock poisoned") =
            ProducerIdAllocator::from_source(source);
    }

    /// A producer id never handed out before (InitProducerId). On a
    /// member this may wait (on a storage thread) for the controller.
    pub fn allocate_producer_id(&self) -> Result<i64, ProducerIdError> {
        let mut ids = self.producer_ids.lock().expect("producer id lock poisoned");
        if self.member && !ids.has_source() {
            return Err(ProducerIdError::Unavailable(
                "this member is not connected to the controller yet".into(),
            ));
        }
        ids.allocate()
    }

    /// Where partition logs write and sync.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Where partition logs report their checkpointed offsets.
    pub(crate) fn checkpoints(&self) -> &Arc<DirCheckpoints> {
        &self.checkpoints
    }

    /// The bounded storage threads (see `io_pool`).
    pub fn io(&self) -> &IoPool {
        &self.io
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn spec(&self) -> Arc<ClusterSpec> {
        self.spec.read().expect("spec lock poisoned").clone()
    }

    /// This broker's entry in the spec (checked present at open).
    pub fn broker_spec(&self) -> BrokerSpec {
        let spec = self.spec();
        spec.broker(self.node_id)
            .cloned()
            .expect("own broker present in spec: checked at open")
    }

    /// The host and port clients are told to connect to.
    pub fn advertised_endpoint(&self) -> (String, i32) {
        let address = self.broker_spec().advertised_kafka();
        (address.host, i32::from(address.port))
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, TopicRegistry> {
        self.registry.lock().expect("registry lock poisoned")
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock poisoned")
            .get(name)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Whether this broker is a member of a multi-broker cluster.
    pub fn is_cluster_member(&self) -> bool {
        self.member
    }

    /// Replaces the cluster view Metadata and DescribeCluster answer from.
    pub fn set_cluster_view(&self, view: ClusterView) {
        *self
            .cluster_view
            .write()
            .expect("cluster view lock poisoned") = Some(Arc::new(view));
    }

    /// The cluster view, once its owner set one (never on a single node).
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.cluster_view
            .read()
            .expect("cluster view lock poisoned")
            .clone()
    }

    /// The partition a request for `topic`-`index` must be served by, as
    /// its leader: it must exist, be hosted here, be led here, and
    /// `current_leader_epoch` (`NO_EPOCH_CHECK`: none) must be its epoch.
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let partition = self.hosted_partition(topic, index)?;
        partition.check_leader(current_leader_epoch)?;
        Ok(partition)
    }

    /// The hosted partition `index` of the topic with id `topic_id` (a
    /// follower's fetch names topics by id).
    pub fn partition_by_id(
        &self,
        topic_id: uuid::Uuid,
        index: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let topic = self
            .topics()
            .into_iter()
            .find(|topic| topic.id == topic_id)
            .ok_or_else(|| PartitionError::UnknownTopic {
                topic: topic_id.to_string(),
            })?;
        self.hosted_partition(&topic.name, index)
    }

    /// The partition `topic`-`index` if this broker hosts it, or why not.
    /// A topic with no partition here is known from the cluster view.
    pub fn hosted_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, PartitionError> {
        let count = match self.topic(topic) {
            Some(local) => {
                if let Some(partition) = local.partition(index) {
                    return Ok(partition.clone());
                }
                local.partition_count()
            }
            None => match self.cluster_view().and_then(|v| {
                v.topics
                    .get(topic)
                    .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
            }) {
                Some(count) => count,
                None => {
                    return Err(PartitionError::UnknownTopic {
                        topic: topic.to_string(),
                    });
                }
            },
        };
        if !(0..count).contains(&index) {
            return Err(PartitionError::UnknownPartition {
                topic: topic.to_string(),
                index,
                count,
            });
        }
        Err(PartitionError::NotHosted {
            topic: topic.to_string(),
            index,
            broker: self.node_id,
        })
    }

    /// How many partitions this broker hosts, over every topic.
    pub fn partition_count(&self) -> usize {
        self.topics().iter().map(|t| t.hosted_count()).sum()
    }

    /// Creates a topic (CreateTopics, or first use when the spec allows it).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<i32>,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        if self.member {
            return Err(CreateTopicError::ManagedByController(name.to_string()));
        }
        let spec = self.spec();
        let request = TopicRequest::for_api(&spec, name, partitions, configs)?;
        if validate_only {
            return Ok(Arc::new(Topic::unopened(name, &request)));
        }
        self.install_topic(name, request)
    }

    /// Creates an internal topic (`__consumer_offsets`): the "__" prefix is
    /// refused to clients, not to the broker itself.
    pub fn create_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: &[(String, String)],
    ) -> Result<Arc<Topic>, CreateTopicError> {
        assert!(name.starts_with("__"), "internal topics start with __");
        let config = self
            .spec()
            .new_topic_config(Some(partitions), overrides)
            .map_err(CreateTopicError::InvalidConfig)?;
        let request = TopicRequest {
            origin: TopicOrigin::Api,
            partitions: config.partitions,
            config,
            id: uuid::Uuid::new_v4(),
            overrides: overrides.to_vec(),
            is_new: true,
        };
        self.install_topic(name, request)
    }

    /// Opens (creating if needed) a topic's partitions and records it.
    fn install_topic(
        &self,
        name: &str,
        request: TopicRequest,
    ) -> Result<Arc<Topic>, CreateTopicError> {
        if self.member {
            return Err(CreateTopicError::ManagedByController(name.to_string()));
        }
        let mut registry = self.lock_registry();
        if let Some(existing) = self.topic(name) {
            if request.is_new {
                return Err(CreateTopicError::AlreadyExists(name.to_string()));
            }
            return Ok(existing);
        }
        let topic = Arc::new(Topic::open(
            &self.storage,
            &self.checkpoints,
            &self.data_dir,
            name,
            &request,
            now_ms(),
        )?);
        registry
            .topics
            .insert(name.to_string(), request.registry_entry(&topic));
        registry
            .store(&self.data_dir)
            .map_err(CreateTopicError::Registry)?;
        self.topics
            .write()
            .expect("topics lock poisoned")
            .insert(name.to_string(), topic.clone());
        tracing::info!(event = "topic_ready", topic = %name, partitions = topic.partition_count(), origin = ?request.origin);
        Ok(topic)
    }

    /// Asks the syncer to fsync this partition soon (group commit).
    pub fn request_sync(&self, partition: &Partition) {
        if partition.request_sync() {
            self.sync_wakeup.notify_one();
        }
    }

    /// The group-commit loop: each wakeup fsyncs every partition that asked,
    /// concurrently, off the async workers.
    pub async fn run_syncer(self: Arc<Self>) {
        loop {
            self.sync_wakeup.notified().await;
            let mut syncs = tokio::task::JoinSet::new();
            for topic in self.topics() {
                for partition in topic.hosted_partitions() {
                    if partition.take_sync_request() {
                        let partition = partition.clone();
                        syncs.spawn_blocking(move || (partition.sync(now_ms()), partition));
                    }
                }
            }
            while let Some(done) = syncs.join_next().await {
                if let Ok((Err(e), partition)) = done {
                    tracing::error!(event = "sync_failed", partition = ?partition, error = %e);
                }
            }
        }
    }

    /// Periodic rolls, policy flushes and retention, off the async workers.
    pub async fn run_housekeeping(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention = std::time::Instant::now();
        loop {
            ticker.tick().await;
            let retention_due = last_retention.elapsed() >= RETENTION_CHECK_INTERVAL;
            if retention_due {
                last_retention = std::time::Instant::now();
            }
            let broker = self.clone();
            let _ =
                tokio::task::spawn_blocking(move || broker.housekeeping(now_ms(), retention_due))
                    .await;
        }
    }

    /// The log cleaner: one thread's worth of compaction passes, off the
    /// async workers; each partition's pass holds its lock only to start
    /// and to swap cleaned segments in.
    pub async fn run_cleaner(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(CLEANER_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let broker = self.clone();
            let _ = tokio::task::spawn_blocking(move || broker.clean_due()).await;
        }
    }

    fn clean_due(&self) {
        for topic in self.topics() {
            for partition in topic.hosted_partitions() {
                if let Err(e) = partition.clean(now_ms()) {
                    tracing::error!(event = "clean_failed", partition = ?partition, error = %e);
                }
            }
        }
    }

    fn housekeeping(&self, now_ms: i64, retention_due: bool) {
        let producer_expiry_ms =
            i64::try_from(self.spec().cluster.producer_id_expiration_ms).unwrap_or(i64::MAX);
        let retention = retention_due.then_some(producer_expiry_ms);
        for topic in self.topics() {
            for partition in topic.hosted_partitions() {
                if let Err(e) = partition.housekeeping(now_ms, retention) {
                    tracing::error!(event = "housekeeping_failed", partition = ?partition, error = %e);
                }
            }
        }
        if self.checkpoints.write_due(now_ms)
            && let Err(error) = self.checkpoints.write(now_ms, false)
        {
            crate::failstop::storage_failure("writing the data directory's checkpoints", &error);
        }
    }

    /// Flushes and closes every log; called once no request can touch them.
    pub fn close(&self) -> Result<(), LogError> {
        let topics = std::mem::take(&mut *self.topics.write().expect("topics lock poisoned"));
        let mut first_error = None;
        for (_, topic) in topics {
            for partition in topic.close_partitions() {
                if let Err(e) = partition {
                    tracing::error!(event = "close_failed", error = %e);
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_none() {
            self.checkpoints.write(now_ms(), false)?;
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn lock_data_dir(data_dir: &Path) -> Result<File, BrokerError> {
    let path = data_dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BrokerError::DataDir {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(BrokerError::DataDirLocked {
            path: data_dir.to_path_buf(),
        });
    }
    Ok(file)
}

#[cfg(test)]
#[path = "housekeeping_tests.rs"]
mod housekeeping_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicated_spec_is_refused_before_the_data_dir_is_touched() {
        let text = include_str!("../../../etc/cluster-3.toml");
        let spec = crate::config::parse_spec(text, "cluster-3.toml").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let error = Broker::open(spec, 1, data_dir.clone()).unwrap_err();
        assert!(matches!(error, BrokerError::Unservable { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("cluster spec: topic_defaults.replication_factor = 3, "),
            "{message}"
        );
        assert!(
            message.ends_with(crate::config::SINGLE_NODE_ONE_REPLICA),
            "{message}"
        );
        assert!(!data_dir.exists(), "nothing created before refusing");
    }
}

#[cfg(test)]
#[path = "assignment_tests.rs"]
pub(crate) mod assignment_tests;
