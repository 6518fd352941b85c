//! A cluster member's share of the partitions: its owner (the cluster
//! publisher, following the controller's metadata image) hands over each
//! topic with the partitions placed here and their leadership, and the
//! broker opens their logs and takes that leadership. Plain data in, so the
//! broker knows nothing of the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

use super::leadership::Leadership;
use super::topic::{CreateTopicError, TOPIC_PARTITIONS_MAX, Topic, open_partitions};
use super::{Broker, TopicOrigin, log_config_for, now_ms};
use crate::log::LogError;
use crate::replication::ReplicaSet;

/// One topic as the controller placed it, and this broker's share of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub name: String,
    pub id: Uuid,
    /// Kafka-named settings over the spec's topic defaults, e.g.
    /// `("retention.ms", "86400000")`.
    pub configs: Vec<(String, String)>,
    /// The topic's partitions in the whole cluster.
    pub partition_count: i32,
    /// Replicas per partition (the first partition's; `min.insync.replicas`
    /// is checked against it).
    pub replication_factor: i16,
    /// The partitions placed on this broker, with their leadership.
    pub hosted: Vec<HostedPartition>,
}

/// A partition placed on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedPartition {
    pub index: i32,
    pub leadership: Leadership,
    /// Its replicas and ISR as the controller committed them.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    /// Replicas a reassignment removes when it completes.
    pub removing: Vec<i32>,
}

impl HostedPartition {
    fn replica_set(&self) -> ReplicaSet {
        ReplicaSet {
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader_epoch: self.leadership.epoch(),
            partition_epoch: self.partition_epoch,
            removing: self.removing.clone(),
        }
    }
}

#[derive(Debug, Error)]
pub enum AssignmentError {
    #[error(
        "assignments are for cluster members (Broker::open_member); a single node hosts its topics itself"
    )]
    NotAMember,
    #[error("topic {topic}: {reason}")]
    Invalid { topic: String, reason: String },
    #[error("topic {topic}: invalid settings: {reason}")]
    InvalidConfig { topic: String, reason: String },
    #[error(
        "topic {topic} is open here with id {open}, the assignment names {assigned}: the old one was deleted while this broker was away; remove its directories to serve the new one"
    )]
    IdChanged {
        topic: String,
        open: Uuid,
        assigned: Uuid,
    },
    #[error("opening topic {topic}: {source}")]
    Open {
        topic: String,
        source: CreateTopicError,
    },
    #[error("removing deleted topic {topic}: {reason}")]
    Retire { topic: String, reason: String },
    #[error("{partition}: taking leadership {leadership:?}: {source}")]
    Leadership {
        partition: String,
        leadership: Leadership,
        source: LogError,
    },
}

impl TopicAssignment {
    fn check(&self) -> Result<(), AssignmentError> {
        let invalid = |reason: String| AssignmentError::Invalid {
            topic: self.name.clone(),
            reason,
        };
        if !(1..=TOPIC_PARTITIONS_MAX).contains(&self.partition_count) {
            return Err(invalid(format!(
                "partition count {} is not in 1..={TOPIC_PARTITIONS_MAX}",
                self.partition_count
            )));
        }
        let mut seen = BTreeSet::new();
        for hosted in &self.hosted {
            if !(0..self.partition_count).contains(&hosted.index) {
                return Err(invalid(format!(
                    "hosted partition {} is beyond the topic's {} partition(s)",
                    hosted.index, self.partition_count
                )));
            }
            if !seen.insert(hosted.index) {
                return Err(invalid(format!("partition {} listed twice", hosted.index)));
            }
            if hosted.leadership.epoch() < 0 {
                return Err(invalid(format!(
                    "partition {}: leader epoch {} is negative",
                    hosted.index,
                    hosted.leadership.epoch()
                )));
            }
        }
        Ok(())
    }
}

impl Broker {
    /// A topic the metadata log deleted (its id left the image this member
    /// served before): its logs are closed and its directories removed.
    /// A local topic of that name under another id is left alone.
    pub fn retire_topic(&self, name: &str, id: Uuid) -> Result<(), AssignmentError> {
        if !self.member {
            return Err(AssignmentError::NotAMember);
        }
        let _serial = self.assignments.lock().expect("assignments lock poisoned");
        if self.topic(name).is_none_or(|topic| topic.id != id) {
            return Ok(());
        }
        self.delete_topic(name)
            .map_err(|reason| AssignmentError::Retire {
                topic: name.to_string(),
                reason,
            })?;
        tracing::info!(event = "topic_retired", topic = %name, %id);
        Ok(())
    }

    /// The hosted partitions of topic `name` (id `id`) that the controller
    /// no longer places here, a reassignment having moved them away: each
    /// takes the leadership the controller gave it (`moved_to`: never this
    /// broker's), so acks=all waits answer NOT_LEADER_OR_FOLLOWER at once,
    /// leaves the topic, and has its log closed (a fetch or request holding
    /// it may still read; changes are refused); its checkpoint entries go,
    /// durably, and then its directory. Returns the partitions retired.
    pub fn retire_partitions(
        &self,
        name: &str,
        id: Uuid,
        placed: &BTreeSet<i32>,
        moved_to: &dyn Fn(i32) -> Leadership,
    ) -> Result<Vec<i32>, AssignmentError> {
        if !self.member {
            return Err(AssignmentError::NotAMember);
        }
        let _serial = self.assignments.lock().expect("assignments lock poisoned");
        let Some(open) = self.topic(name).filter(|topic| topic.id == id) else {
            return Ok(Vec::new());
        };
        let (kept, leaving): (BTreeMap<i32, Arc<super::Partition>>, Vec<_>) = {
            let (kept, leaving): (Vec<_>, Vec<_>) = open
                .hosted
                .iter()
                .map(|(index, partition)| (*index, partition.clone()))
                .partition(|(index, _)| placed.contains(index));
            (kept.into_iter().collect(), leaving)
        };
        if leaving.is_empty() {
            return Ok(Vec::new());
        }
        let retire = |reason: String| AssignmentError::Retire {
            topic: name.to_string(),
            reason,
        };
        let topic = Topic::assigned(
            open.name.clone(),
            open.id,
            open.origin,
            open.config.clone(),
            open.partition_count,
            kept,
        );
        self.topics
            .write()
            .expect("topics lock poisoned")
            .insert(name.to_string(), Arc::new(topic));
        for (index, partition) in &leaving {
            let leadership = moved_to(*index);
            assert!(
                !leadership.is_leader(),
                "{partition:?} moved away, not led here"
            );
            let no_set = ReplicaSet {
                replicas: Vec::new(),
                isr: Vec::new(),
                leader_epoch: leadership.epoch(),
                partition_epoch: -1,
                removing: Vec::new(),
            };
            partition
                .set_assignment(leadership, self.node_id(), no_set)
                .map_err(|e| retire(e.to_string()))?;
            partition
                .close(now_ms())
                .map_err(|e| retire(e.to_string()))?;
            let dir = super::topic::partition_dir(&self.data_dir, name, *index);
            self.checkpoints().forget(&dir);
        }
        self.checkpoints()
            .write(now_ms(), true)
            .map_err(|e| retire(e.to_string()))?;
        let mut retired = Vec::with_capacity(leaving.len());
        for (index, _) in &leaving {
            let dir = super::topic::partition_dir(&self.data_dir, name, *index);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| retire(format!("removing {}: {e}", dir.display())))?;
            tracing::info!(event = "partition_retired", topic = %name, partition = index);
            retired.push(*index);
        }
        Ok(retired)
    }

    /// Brings one topic to `assignment`, idempotently: opens the logs of
    /// hosted partitions not open yet (directories `<topic>-<index>`,
    /// recovered as at startup), applies the settings, and sets each hosted
    /// partition's leadership (becoming leader at a higher epoch records it
    /// in the leader-epoch cache at the log end; an epoch never moves back:
    /// that panics, see `Partition::set_leadership`).
    ///
    /// Nothing stops being hosted here: a partition open here but missing
    /// from `assignment.hosted` is `retire_partitions`' job, a smaller
    /// partition count or another topic id is refused.
    /// Nothing goes to the topic registry either: in a cluster the metadata
    /// log is the record of topics.
    ///
    /// Logs are opened without the topics lock, and the new topic replaces
    /// the old one in a single write, so produce and fetch on partitions
    /// already open go on meanwhile.
    pub fn apply_assignment(&self, assignment: &TopicAssignment) -> Result<(), AssignmentError> {
        if !self.member {
            return Err(AssignmentError::NotAMember);
        }
        assignment.check()?;
        let _serial = self.assignments.lock().expect("assignments lock poisoned");
        let name = assignment.name.as_str();
        let spec = self.spec();
        let config = spec
            .new_topic_config_with_replication(
                Some(assignment.partition_count),
                Some(assignment.replication_factor),
                &assignment.configs,
            )
            .map_err(|reason| AssignmentError::InvalidConfig {
                topic: name.to_string(),
                reason,
            })?;
        let existing = self.topic(name);
        if let Some(open) = &existing {
            if open.id != assignment.id {
                return Err(AssignmentError::IdChanged {
                    topic: name.to_string(),
                    open: open.id,
                    assigned: assignment.id,
                });
            }
            if assignment.partition_count < open.partition_count() {
                return Err(AssignmentError::Invalid {
                    topic: name.to_string(),
                    reason: format!(
                        "partition count would shrink from {} to {}: partitions are never removed",
                        open.partition_count(),
                        assignment.partition_count
                    ),
                });
            }
        }
        let topic_name: Arc<str> = existing
            .as_ref()
            .map_or_else(|| name.into(), |t| t.name.clone());
        let mut hosted: BTreeMap<i32, Arc<super::Partition>> = existing
            .as_ref()
            .map(|t| {
                t.hosted_partitions()
                    .map(|p| (p.index, p.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let to_open: Vec<(i32, Leadership)> = assignment
            .hosted
            .iter()
            .filter(|h| !hosted.contains_key(&h.index))
            .map(|h| (h.index, Leadership::UNASSIGNED))
            .collect();
        let opened = open_partitions(
            self.storage(),
            self.checkpoints(),
            &self.data_dir,
            &topic_name,
            &config,
            &to_open,
            now_ms(),
        )
        .map_err(|source| AssignmentError::Open {
            topic: name.to_string(),
            source,
        })?;
        let opened_count = opened.len();
        hosted.extend(opened.into_iter().map(|p| (p.index, p)));
        if existing.as_ref().is_some_and(|t| t.config != config) {
            let log_config = log_config_for(&config);
            for partition in hosted.values() {
                partition.set_config(log_config.clone());
            }
        }
        // New partitions take their leadership before anyone can see them.
        for wanted in &assignment.hosted {
            let partition = &hosted[&wanted.index];
            partition
                .set_assignment(wanted.leadership, self.node_id(), wanted.replica_set())
                .map_err(|source| AssignmentError::Leadership {
                    partition: format!("{partition:?}"),
                    leadership: wanted.leadership,
                    source,
                })?;
        }
        let origin = if spec.topics.contains_key(name) {
            TopicOrigin::Spec
        } else {
            TopicOrigin::Api
        };
        let topic = Topic::assigned(
            topic_name,
            assignment.id,
            origin,
            config,
            assignment.partition_count,
            hosted,
        );
        self.topics
            .write()
            .expect("topics lock poisoned")
            .insert(name.to_string(), Arc::new(topic));
        if existing.is_none() || opened_count > 0 {
            tracing::info!(event = "topic_assigned", topic = %name, partitions = assignment.partition_count, opened = opened_count);
        }
        Ok(())
    }
}
