//! A topic on this broker: its id, resolved settings and partitions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

use super::leadership::Leadership;
use super::log_config::log_config_for;
use super::parallel::{PARTITION_IO_THREADS, parallel_map};
use super::partition::Partition;
use super::registry::{RegistryEntry, RegistryError, TopicOrigin};
use crate::config::{ClusterSpec, FlushMode, TopicConfig};
use crate::log::{DirCheckpoints, LogError, PartitionLog, Storage};

/// Most partitions one topic may have on this broker.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

#[derive(Debug, Error)]
pub enum CreateTopicError {
    #[error("topic {0} already exists")]
    AlreadyExists(String),
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    #[error("invalid partition count {0}: must be 1..={TOPIC_PARTITIONS_MAX}")]
    InvalidPartitions(i32),
    #[error("invalid replication factor {0}: this cluster has {1} broker(s)")]
    InvalidReplicationFactor(i16, usize),
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    #[error("topic creation through the Kafka API is disabled by the cluster spec")]
    CreationDisabled,
    /// A cluster member: the controller creates topics.
    #[error(
        "topic {0}: in a cluster, topics are created by the controller from the spec file; creating them through the Kafka API is not built yet"
    )]
    ManagedByController(String),
    #[error("{0}")]
    Controller(super::ControllerRefusal),
    #[error("creating {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Registry(RegistryError),
}

/// Everything needed to open or create a topic.
#[derive(Debug, Clone)]
pub struct TopicRequest {
    pub origin: TopicOrigin,
    pub config: TopicConfig,
    pub partitions: i32,
    pub id: Uuid,
    /// Kafka-named overrides (API topics), kept for the registry.
    pub overrides: Vec<(String, String)>,
    /// A creation request: an existing topic of that name is an error.
    pub is_new: bool,
}

impl TopicRequest {
    /// A topic found at startup: declared in the spec, or recorded in the
    /// registry after an API creation.
    pub fn from_registry_or_spec(
        spec: &ClusterSpec,
        name: &str,
        entry: Option<&RegistryEntry>,
    ) -> Self {
        let id = entry
            .and_then(|e| Uuid::parse_str(&e.id).ok())
            .unwrap_or_else(Uuid::new_v4);
        if spec.topics.contains_key(name) {
            let config = spec.topic_config(name);
            // Partitions are never removed: keep what the disk already has.
            let partitions = config.partitions.max(entry.map_or(0, |e| e.partitions));
            return Self {
                origin: TopicOrigin::Spec,
                config,
                partitions,
                id,
                overrides: Vec::new(),
                is_new: false,
            };
        }
        let entry = entry.expect("a topic neither declared nor recorded is never opened");
        let overrides: Vec<(String, String)> = entry.configs.clone().into_iter().collect();
        let config = spec.new_topic_config(Some(entry.partitions), &overrides).unwrap_or_else(|e| {
            tracing::warn!(event = "topic_config_invalid", topic = %name, error = %e, action = "using topic_defaults");
            spec.topic_config(name)
        });
        Self {
            origin: TopicOrigin::Api,
            partitions: entry.partitions,
            config,
            id,
            overrides,
            is_new: false,
        }
    }

    /// A topic asked for through the Kafka API (CreateTopics or first use).
    pub fn for_api(
        spec: &ClusterSpec,
        name: &str,
        partitions: Option<i32>,
        overrides: &[(String, String)],
    ) -> Result<Self, CreateTopicError> {
        crate::config::validate_topic_name(name).map_err(CreateTopicError::InvalidName)?;
        if let Some(p) = partitions
            && !(1..=TOPIC_PARTITIONS_MAX).contains(&p)
        {
            return Err(CreateTopicError::InvalidPartitions(p));
        }
        let config = spec
            .new_topic_config(partitions, overrides)
            .map_err(CreateTopicError::InvalidConfig)?;
        if config.replication_factor as usize > spec.brokers.len() {
            return Err(CreateTopicError::InvalidReplicationFactor(
                config.replication_factor,
                spec.brokers.len(),
            ));
        }
        Ok(Self {
            origin: TopicOrigin::Api,
            partitions: config.partitions,
            config,
            id: Uuid::new_v4(),
            overrides: overrides.to_vec(),
            is_new: true,
        })
    }

    pub fn registry_entry(&self, topic: &Topic) -> RegistryEntry {
        RegistryEntry {
            id: topic.id.hyphenated().to_string(),
            origin: self.origin,
            partitions: topic.partition_count(),
            configs: self.overrides.iter().cloned().collect(),
        }
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub origin: TopicOrigin,
    pub config: TopicConfig,
    /// How many partitions the topic has in the cluster: indexes
    /// `0..partition_count`, hosted here or not.
    pub(super) partition_count: i32,
    /// The partitions this broker hosts, by index: every one on a single
    /// node, those the controller placed here in a cluster.
    pub(super) hosted: BTreeMap<i32, Arc<Partition>>,
}

pub fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> std::path::PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

/// Opens (creating if missing) the logs of `indexes`, recovering existing
/// ones, with the given leadership each; one filesystem sync covers every
/// log recovered after a crash.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_partitions(
    storage: &Arc<dyn Storage>,
    checkpoints: &Arc<DirCheckpoints>,
    data_dir: &Path,
    name: &Arc<str>,
    config: &TopicConfig,
    indexes: &[(i32, Leadership)],
    now_ms: i64,
) -> Result<Vec<Arc<Partition>>, CreateTopicError> {
    let log_config = log_config_for(config);
    let fsync = matches!(config.flush, FlushMode::Fsync);
    let opened = parallel_map(indexes, PARTITION_IO_THREADS, |&(index, _)| {
        let dir = partition_dir(data_dir, name, index);
        std::fs::create_dir_all(&dir).map_err(|source| CreateTopicError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok::<_, CreateTopicError>(PartitionLog::open_unsettled(
            Arc::clone(storage),
            Arc::clone(checkpoints),
            &dir,
            log_config.clone(),
            now_ms,
        )?)
    });
    let opened = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    // One sync for every partition recovered after a crash, not a few each.
    let recovered = opened.iter().filter(|o| o.needs_sync()).count();
    if recovered > 0 {
        let started = std::time::Instant::now();
        storage
            .sync_filesystem(data_dir)
            .map_err(LogError::io("syncfs", data_dir))?;
        tracing::info!(event = "recovered_partitions_synced", topic = %name, partitions = recovered, millis = started.elapsed().as_millis() as u64);
    }
    let mut partitions = Vec::with_capacity(opened.len());
    for (&(index, leadership), unsettled) in indexes.iter().zip(opened) {
        let (log, report) = unsettled.settle()?;
        tracing::debug!(event = "partition_recovered", topic = %name, partition = index, report = ?report);
        partitions.push(Arc::new(Partition::new(
            name.clone(),
            index,
            log,
            fsync,
            leadership,
        )));
    }
    Ok(partitions)
}

impl Topic {
    /// What a validate-only CreateTopics reports: the topic as it would be.
    pub fn unopened(name: &str, request: &TopicRequest) -> Self {
        Self {
            name: name.into(),
            id: request.id,
            origin: request.origin,
            config: request.config.clone(),
            partition_count: request.partitions,
            hosted: BTreeMap::new(),
        }
    }

    /// A topic whose partitions are all hosted here (a single node), led
    /// here at `SINGLE_NODE_LEADER_EPOCH`: opens every partition directory,
    /// creating missing ones; existing logs go through recovery.
    pub fn open(
        storage: &Arc<dyn Storage>,
        checkpoints: &Arc<DirCheckpoints>,
        data_dir: &Path,
        name: &str,
        request: &TopicRequest,
        now_ms: i64,
    ) -> Result<Self, CreateTopicError> {
        assert!(request.partitions >= 1);
        let name: Arc<str> = name.into();
        let indexes: Vec<(i32, Leadership)> = (0..request.partitions)
            .map(|index| (index, Leadership::SINGLE_NODE))
            .collect();
        let partitions = open_partitions(
            storage,
            checkpoints,
            data_dir,
            &name,
            &request.config,
            &indexes,
            now_ms,
        )?;
        Ok(Self {
            name,
            id: request.id,
            origin: request.origin,
            config: request.config.clone(),
            partition_count: request.partitions,
            hosted: partitions.into_iter().map(|p| (p.index, p)).collect(),
        })
    }

    /// A topic of `partition_count` partitions hosting `hosted` here (a
    /// cluster member's assignment).
    pub(super) fn assigned(
        name: Arc<str>,
        id: Uuid,
        origin: TopicOrigin,
        config: TopicConfig,
        partition_count: i32,
        hosted: BTreeMap<i32, Arc<Partition>>,
    ) -> Self {
        assert!(hosted.keys().all(|i| (0..partition_count).contains(i)));
        Self {
            name,
            id,
            origin,
            config,
            partition_count,
            hosted,
        }
    }

    /// The same topic sharing the same partitions (for replacing one field).
    pub fn shallow_clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            id: self.id,
            origin: self.origin,
            config: self.config.clone(),
            partition_count: self.partition_count,
            hosted: self.hosted.clone(),
        }
    }

    /// The topic with partitions added up to `count` (never removed), all
    /// hosted and led here: a single node growing a topic.
    pub fn with_partitions(
        &self,
        storage: &Arc<dyn Storage>,
        checkpoints: &Arc<DirCheckpoints>,
        data_dir: &Path,
        count: i32,
        now_ms: i64,
    ) -> Result<Self, CreateTopicError> {
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&count) || count < self.partition_count {
            return Err(CreateTopicError::InvalidPartitions(count));
        }
        let added: Vec<(i32, Leadership)> = (self.partition_count..count)
            .map(|index| (index, Leadership::SINGLE_NODE))
            .collect();
        let opened = open_partitions(
            storage,
            checkpoints,
            data_dir,
            &self.name,
            &self.config,
            &added,
            now_ms,
        )?;
        let mut hosted = self.hosted.clone();
        hosted.extend(opened.into_iter().map(|p| (p.index, p)));
        Ok(Self {
            partition_count: count,
            hosted,
            ..self.shallow_clone()
        })
    }

    /// How many partitions the topic has, hosted here or not.
    pub fn partition_count(&self) -> i32 {
        self.partition_count
    }

    /// Whether `index` names one of the topic's partitions (hosted or not).
    pub fn has_partition(&self, index: i32) -> bool {
        (0..self.partition_count).contains(&index)
    }

    /// The partitions hosted here, in index order.
    pub fn hosted_partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.hosted.values()
    }

    /// How many of the partitions are hosted here.
    pub fn hosted_count(&self) -> usize {
        self.hosted.len()
    }

    /// The hosted partition `index`, if this broker hosts it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.hosted.get(&index)
    }

    /// Closes each hosted partition's log cleanly, on the partition I/O threads.
    pub fn close_partitions(&self) -> Vec<Result<(), LogError>> {
        let hosted: Vec<&Arc<Partition>> = self.hosted.values().collect();
        parallel_map(&hosted, PARTITION_IO_THREADS, |partition| {
            partition.close(super::now_ms())
        })
    }
}
