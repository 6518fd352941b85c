//! Admin operations on topics (AlterConfigs, CreatePartitions,
//! DeleteTopics, DeleteRecords). The spec is the single source of truth for
//! what it declares: a call that would change or delete a declared topic is
//! refused with a message naming the spec file and the key to edit. Topics
//! created through the API are fully managed here and their settings are
//! recorded in the topic registry, so they survive restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;

use super::{Broker, TopicOrigin};
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
        let topic = self.topic(name)?;
        if topic.origin != TopicOrigin::Spec {
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

    /// The refusal for any topic change through the Kafka API on a cluster
    /// member (the controller owns topics there); None on a single node.
    pub fn cluster_topic_change_refusal(&self, name: &str) -> Option<AdminError> {
        self.member.then(|| {
            AdminError::PolicyViolation(format!(
                "topic {name}: in a cluster, topics change through the spec file ({}) and the controller; \
                 changing them through the Kafka API is not built yet",
                self.spec_file()
            ))
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
