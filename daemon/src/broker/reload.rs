//! Carrying out a reload on this broker: the actions of
//! `config::diff_specs`, each applied whole or not at all, then the new spec
//! (with its restart-only parts kept as they run) becomes the running one.

use std::sync::Arc;

use super::topic::{Topic, TopicRequest};
use super::{Broker, TopicOrigin, log_config_for, now_ms};
use crate::config::{ClusterSpec, ReloadAction, TopicConfig};

/// What happened to one action.
#[derive(Debug)]
pub struct AppliedAction {
    pub action: ReloadAction,
    /// `Err` with the reason when a live action failed; restart-only and
    /// refused actions are `Ok` (they are reported, not applied).
    pub result: Result<(), String>,
}

impl Broker {
    /// A member's reload: the spec it answers from (declared names, topic
    /// defaults, cluster settings) becomes `new`, restart-only parts kept;
    /// its topics follow the controller, which applies the spec.
    pub fn reload_member_spec(&self, new: ClusterSpec, actions: &[ReloadAction]) {
        assert!(self.member, "a single node applies its reload itself");
        let merged = merge_running(&self.spec(), new, actions);
        *self.spec.write().expect("spec lock poisoned") = Arc::new(merged);
    }

    /// Applies the live actions of a reload from the running spec to `new`.
    pub fn apply_reload(&self, new: ClusterSpec, actions: Vec<ReloadAction>) -> Vec<AppliedAction> {
        let running = self.spec();
        let merged = merge_running(&running, new, &actions);
        *self.spec.write().expect("spec lock poisoned") = Arc::new(merged);
        actions
            .into_iter()
            .map(|action| {
                let result = self.apply_action(&action);
                AppliedAction { action, result }
            })
            .collect()
    }

    fn apply_action(&self, action: &ReloadAction) -> Result<(), String> {
        let spec = self.spec();
        if self.member
            && !matches!(
                action,
                ReloadAction::NeedsRestart { .. }
                    | ReloadAction::Refused { .. }
                    | ReloadAction::UpdateClusterSettings { .. }
            )
        {
            // Topics there follow the controller's metadata log, not the local file.
            return Err("in a cluster the controller carries out topic changes".to_string());
        }
        match action {
            ReloadAction::CreateTopic { topic, .. } => self.create_declared_topic(&spec, topic),
            ReloadAction::AddPartitions { topic, to, .. } => self.add_partitions(topic, *to),
            ReloadAction::UpdateTopicConfig { topic, config, .. } => {
                self.update_topic_config(topic, config.clone())
            }
            ReloadAction::UpdateTopicDefaults { .. } => self.refresh_api_topic_configs(&spec),
            // Validation holds a single node's replicas to its one broker:
            // the placement is the same written another way.
            ReloadAction::Reassign { .. } => Ok(()),
            ReloadAction::DeleteTopic { topic } => self.delete_topic(topic),
            ReloadAction::KeepRemovedTopic { topic } => {
                self.release_topic_to_defaults(&spec, topic)
            }
            ReloadAction::UpdateClusterSettings { .. } => Ok(()), // read from the spec on every request
            // A single node has no peers: a spec with more brokers is a
            // restart (`NeedsRestart`), never this.
            ReloadAction::AddBrokers { .. } => Ok(()),
            ReloadAction::NeedsRestart { .. } | ReloadAction::Refused { .. } => Ok(()),
        }
    }

    fn create_declared_topic(&self, spec: &ClusterSpec, name: &str) -> Result<(), String> {
        if self.topic(name).is_some() {
            // Created earlier through the API: the spec now governs it.
            self.set_origin(name, TopicOrigin::Spec)?;
            return self.update_topic_config(name, spec.topic_config(name));
        }
        let request = TopicRequest::from_registry_or_spec(spec, name, None);
        self.install_topic(name, request)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Replaces a topic under the registry lock with `build(old)`, and
    /// records it.
    fn replace_topic(
        &self,
        name: &str,
        build: impl FnOnce(&Topic) -> Result<Topic, String>,
    ) -> Result<(), String> {
        let mut registry = self.lock_registry();
        let old = self
            .topic(name)
            .ok_or_else(|| format!("topic {name} is not open"))?;
        let new = Arc::new(build(&old)?);
        if let Some(entry) = registry.topics.get_mut(name) {
            entry.partitions = new.partition_count();
            entry.origin = new.origin;
        }
        registry.store(&self.data_dir).map_err(|e| e.to_string())?;
        self.topics
            .write()
            .expect("topics lock poisoned")
            .insert(name.to_string(), new);
        Ok(())
    }

    pub(super) fn add_partitions(&self, name: &str, count: i32) -> Result<(), String> {
        let data_dir = self.data_dir.clone();
        let (storage, checkpoints) = (self.storage().clone(), self.checkpoints().clone());
        self.replace_topic(name, |old| {
            old.with_partitions(&storage, &checkpoints, &data_dir, count, now_ms())
                .map_err(|e| e.to_string())
        })
    }

    pub(super) fn update_topic_config(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<(), String> {
        self.replace_topic(name, |old| {
            let log_config = log_config_for(&config);
            for partition in old.hosted_partitions() {
                partition.set_config(log_config.clone());
            }
            Ok(Topic {
                config,
                ..old.shallow_clone()
            })
        })
    }

    fn set_origin(&self, name: &str, origin: TopicOrigin) -> Result<(), String> {
        self.replace_topic(name, |old| {
            Ok(Topic {
                origin,
                ..old.shallow_clone()
            })
        })
    }

    /// API-created topics follow the defaults plus their own overrides.
    fn refresh_api_topic_configs(&self, spec: &ClusterSpec) -> Result<(), String> {
        let entries = self.lock_registry().topics.clone();
        for (name, entry) in entries
            .into_iter()
            .filter(|(_, e)| e.origin == TopicOrigin::Api)
        {
            let overrides: Vec<(String, String)> = entry.configs.into_iter().collect();
            let config = spec.new_topic_config(Some(entry.partitions), &overrides)?;
            self.update_topic_config(&name, config)?;
        }
        Ok(())
    }

    fn release_topic_to_defaults(&self, spec: &ClusterSpec, name: &str) -> Result<(), String> {
        self.set_origin(name, TopicOrigin::Api)?;
        let partitions = self.topic(name).map_or(1, |t| t.partition_count());
        self.update_topic_config(name, spec.new_topic_config(Some(partitions), &[])?)
    }

    /// Forgets the topic, closes its logs and removes its directories (a
    /// member has no registry: the metadata log records its topics).
    pub(super) fn delete_topic(&self, name: &str) -> Result<(), String> {
        let topic = {
            if !self.member {
                let mut registry = self.lock_registry();
                registry.topics.remove(name);
                registry.store(&self.data_dir).map_err(|e| e.to_string())?;
            }
            self.topics
                .write()
                .expect("topics lock poisoned")
                .remove(name)
        };
        let Some(topic) = topic else { return Ok(()) };
        // Only hosted partitions have directories here.
        let hosted: Vec<i32> = topic.hosted_partitions().map(|p| p.index).collect();
        for result in topic.close_partitions() {
            result.map_err(|e| e.to_string())?;
        }
        // Gone from the directory's checkpoints, durably, before the files
        // go: a topic created later under this name starts from nothing.
        for &index in &hosted {
            let dir = super::topic::partition_dir(&self.data_dir, name, index);
            self.checkpoints().forget(&dir);
        }
        self.checkpoints()
            .write(now_ms(), true)
            .map_err(|e| e.to_string())?;
        for &index in &hosted {
            let dir = super::topic::partition_dir(&self.data_dir, name, index);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// The new spec, but with everything only a restart can change kept as it
/// runs, and refused topic changes kept as they were, so that the running
/// spec always describes what this process really does.
fn merge_running(
    running: &ClusterSpec,
    mut new: ClusterSpec,
    actions: &[ReloadAction],
) -> ClusterSpec {
    new.cluster.name = running.cluster.name.clone();
    new.controller = running.controller.clone();
    if !actions
        .iter()
        .any(|a| matches!(a, ReloadAction::AddBrokers { .. }))
    {
        new.brokers = running.brokers.clone();
    }
    new.limits = running.limits.clone();
    new.replication = running.replication.clone();
    for action in actions {
        let ReloadAction::Refused { key, .. } = action else {
            continue;
        };
        let Some(topic) = key
            .strip_prefix("topics.")
            .and_then(|k| k.rsplit_once('.'))
            .map(|(t, _)| t)
        else {
            continue;
        };
        if let (Some(old), Some(kept)) = (running.topics.get(topic), new.topics.get_mut(topic)) {
            kept.settings.partitions = old.settings.partitions;
            kept.settings.replication_factor = old.settings.replication_factor;
            kept.replicas = old.replicas.clone();
        }
    }
    new
}
