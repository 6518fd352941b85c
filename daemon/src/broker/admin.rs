//! Admin operations on topics (AlterConfigs, CreatePartitions,
//! DeleteTopics, DeleteRecords). The spec is the single source of truth for
//! what it declares: a call that would change or delete a declared topic is
//! refused with a message naming the spec file and the key to edit. Topics
//! created through the API are fully managed here and their settings are
//! recorded in the topic registry, so they survive restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use super::{Broker, RegistryEntry, TopicOrigin};
use crate::config::toml_key_for;

/// Why an admin call was refused; `kafka::errors` maps each to a code.
#[derive(Debug, Error)]
pub enum AdminError {
    /// Only the spec may change this (POLICY_VIOLATION).
    #[error("{0}")]
    PolicyViolation(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// Writing the registry or a partition directory failed.
    #[error("{0}")]
    Storage(String),
    /// A cluster member's change that the controller did not make.
    #[error("{0}")]
    Controller(ControllerRefusal),
}

/// Why the active controller did not make a change a member forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControllerRefusal {
    /// Decided and refused, with the Kafka error code to answer.
    #[error("{message}")]
    Refused { code: i16, message: String },
    /// No active controller answered in time (retriable).
    #[error("the controller did not answer: {0}")]
    Unavailable(String),
}

/// Where a cluster member sends topic changes from the Kafka API: to the
/// active controller, which records them in the metadata log
/// (cluster/runtime.rs). A call blocks the calling storage thread for a few
/// seconds at most, until the change is committed and applied here.
pub trait TopicChanges: Send + Sync {
    /// Creates topic `name` (not declared); returns its id.
    fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        settings: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<uuid::Uuid, ControllerRefusal>;

    /// Grows topic `name` to `total` partitions.
    fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), ControllerRefusal>;

    /// Deletes topic `name` (its brokers remove its data).
    fn delete(&self, name: &str) -> Result<(), ControllerRefusal>;
}

impl Broker {
    /// Records the spec file's path (`--config`); without it the broker runs
    /// the embedded default.
    pub fn set_spec_file(&self, path: &std::path::Path) {
        let _ = self.spec_file.set(path.display().to_string());
    }

    /// The spec file's path as named in refusals.
    pub fn spec_file(&self) -> &str {
        self.spec_file.get().map_or(
            "the embedded default spec (start with --config FILE to declare topics)",
            |s| s.as_str(),
        )
    }

    /// The refusal for a call that would change declared topic `name`
    /// through `kafka_key`; None for topics created through the API.
    pub fn declared_topic_refusal(&self, name: &str, kafka_key: &str) -> Option<AdminError> {
        // A member may not host the topic: the spec says what it declares.
        let declared = match self.member {
            true => self.spec().topics.contains_key(name),
            false => self.topic(name)?.origin == TopicOrigin::Spec,
        };
        if !declared {
            return None;
        }
        let key = match kafka_key {
            "delete" => format!("remove [topics.{name}] (it needs allow_delete = true first)"),
            other => match toml_key_for(other) {
                Some(toml_key) => format!("edit topics.{name}.{toml_key}"),
                None => format!("edit [topics.{name}]"),
            },
        };
        Some(AdminError::PolicyViolation(format!(
            "topic {name} is declared in {}: {key} there and reload (systemctl reload sluice)",
            self.spec_file()
        )))
    }

    /// The refusal, on a cluster member, of a topic change the Kafka API
    /// cannot make there yet (`what`); None on a single node.
    pub fn cluster_topic_change_refusal(&self, name: &str, what: &str) -> Option<AdminError> {
        self.member.then(|| {
            AdminError::PolicyViolation(format!(
                "topic {name}: {what} through the Kafka API is not built yet in a cluster; \
                 declare the topic in the spec file ({}) instead",
                self.spec_file()
            ))
        })
    }

    /// A member's data directory that a single node left: the topics of
    /// its registry (a member never writes one) and the end of its last
    /// producer-id block, for the controller to adopt. None if there are
    /// none.
    pub fn pre_cluster_data(&self) -> Option<(BTreeMap<String, RegistryEntry>, i64)> {
        let topics = self.lock_registry().topics.clone();
        if !self.member || topics.is_empty() {
            return None;
        }
        let block_end = self
            .producer_ids
            .lock()
            .expect("producer id lock poisoned")
            .block_end();
        Some((topics, block_end))
    }

    /// Once the controller adopted them (the registration committed), the
    /// single node's registry is kept beside, as `topics.adopted.toml`, and
    /// no longer read.
    pub fn retire_pre_cluster_registry(&self) -> Result<(), AdminError> {
        let path = super::registry::registry_path(&self.data_dir);
        let kept = path.with_file_name("topics.adopted.toml");
        let moved = std::fs::rename(&path, &kept)
            .and_then(|()| std::fs::File::open(self.data_dir.join("meta"))?.sync_all());
        moved.map_err(|e| {
            AdminError::Storage(format!(
                "renaming {} to {}: {e}",
                path.display(),
                kept.display()
            ))
        })?;
        self.lock_registry().topics.clear();
        tracing::info!(event = "pre_cluster_registry_retired", kept = %kept.display());
        Ok(())
    }

    /// Installs where a member's topic changes go (once).
    pub fn set_topic_changes(&self, changes: Arc<dyn TopicChanges>) {
        assert!(self.member, "only a cluster member forwards topic changes");
        let _ = self.topic_changes.set(changes);
    }

    /// Where this member's topic changes go: `Unavailable` before the
    /// cluster side is up.
    pub fn topic_changes(&self) -> Result<&Arc<dyn TopicChanges>, ControllerRefusal> {
        self.topic_changes.get().ok_or_else(|| {
            ControllerRefusal::Unavailable("the cluster side has not started".into())
        })
    }

    /// The Kafka-named overrides an API-created topic was given.
    pub fn topic_overrides(&self, name: &str) -> BTreeMap<String, String> {
        self.lock_registry()
            .topics
            .get(name)
            .map(|entry| entry.configs.clone())
            .unwrap_or_default()
    }

    /// Replaces an API topic's overrides with `overrides` (validated against
    /// the spec's defaults), applies them live and records them.
    pub fn set_topic_overrides(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let pairs: Vec<(String, String)> = overrides.clone().into_iter().collect();
        let config = self
            .spec()
            .new_topic_config(Some(topic.partition_count()), &pairs)
            .map_err(AdminError::InvalidConfig)?;
        if validate_only {
            return Ok(());
        }
        self.update_topic_config(name, config)
            .map_err(AdminError::Storage)?;
        let mut registry = self.lock_registry();
        if let Some(entry) = registry.topics.get_mut(name) {
            entry.configs = overrides;
        }
        registry
            .store(&self.data_dir)
            .map_err(|e| AdminError::Storage(e.to_string()))?;
        tracing::info!(event = "topic_configs_altered", topic = %name);
        Ok(())
    }

    /// CreatePartitions on an API topic: grows it to `count` partitions.
    pub fn grow_topic(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.to_string()))?;
        let current = topic.partition_count();
        if count <= current {
            return Err(AdminError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count {count} must be larger"
            )));
        }
        if count > super::topic::TOPIC_PARTITIONS_MAX {
            return Err(AdminError::InvalidPartitions(format!(
                "{count} partitions is more than the most a topic may have ({})",
                super::topic::TOPIC_PARTITIONS_MAX
            )));
        }
        if validate_only {
            return Ok(());
        }
        self.add_partitions(name, count)
            .map_err(AdminError::Storage)?;
        tracing::info!(event = "topic_partitions_added", topic = %name, from = current, to = count);
        Ok(())
    }

    /// DeleteTopics on an API topic: forgets it and removes its data.
    pub fn delete_api_topic(&self, name: &str) -> Result<(), AdminError> {
        if self.topic(name).is_none() {
            return Err(AdminError::UnknownTopic(name.to_string()));
        }
        self.delete_topic(name).map_err(AdminError::Storage)?;
        tracing::info!(event = "topic_deleted", topic = %name, by = "api");
        Ok(())
    }

    /// Topics by id (DeleteTopics v6 names topics by id).
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<super::Topic>> {
        self.topics().into_iter().find(|topic| topic.id == id)
    }
}
