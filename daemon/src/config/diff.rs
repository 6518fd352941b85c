//! The reload diff: from the running spec and a newly loaded one to the
//! actions that carry the change out. A pure function; the broker applies the
//! actions, `sluiced` logs one line per action.

use std::fmt;

use super::spec::ClusterSpec;
use super::topic_config::TopicConfig;

/// One Kafka-named setting that changes value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub key: &'static str,
    pub from: String,
    pub to: String,
}

/// What a reload does, or why part of it cannot be done live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAction {
    CreateTopic {
        topic: String,
        config: TopicConfig,
    },
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    /// New settings for a declared topic (retention, segments, flush, …).
    UpdateTopicConfig {
        topic: String,
        changes: Vec<SettingChange>,
        config: TopicConfig,
    },
    /// Topic defaults changed: topics created through the API re-derive theirs.
    UpdateTopicDefaults {
        changes: Vec<SettingChange>,
    },
    /// The replicas of existing partitions change (an explicit list or the
    /// replication factor): the controller reassigns them, adding the new
    /// replicas, waiting until they are in sync, then removing the old.
    Reassign {
        topic: String,
        from: String,
        to: String,
    },
    /// Removed from the file while it had `allow_delete = true`.
    DeleteTopic {
        topic: String,
    },
    /// Removed from the file without `allow_delete`: kept, now governed by
    /// the topic defaults like an API-created topic.
    KeepRemovedTopic {
        topic: String,
    },
    UpdateClusterSettings {
        auto_create_topics: bool,
        allow_api_topic_creation: bool,
        producer_id_expiration_ms: u64,
    },
    /// Brokers added to a cluster's spec (the others unchanged): every
    /// node links to them and accepts them, without a restart.
    AddBrokers {
        ids: Vec<i32>,
    },
    /// Takes effect only after `systemctl restart`; nothing of it is applied.
    NeedsRestart {
        key: String,
        from: String,
        to: String,
    },
    /// Not possible (e.g. fewer partitions); nothing of it is applied.
    Refused {
        key: String,
        reason: String,
    },
}

impl fmt::Display for ReloadAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changes = |c: &[SettingChange]| {
            c.iter()
                .map(|c| format!("{}: {} -> {}", c.key, c.from, c.to))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::CreateTopic { topic, config } => {
                write!(f, "create topic {topic} ({} partitions)", config.partitions)
            }
            Self::AddPartitions { topic, from, to } => {
                write!(f, "add partitions to {topic}: {from} -> {to}")
            }
            Self::UpdateTopicConfig {
                topic, changes: c, ..
            } => write!(f, "update topic {topic}: {}", changes(c)),
            Self::UpdateTopicDefaults { changes: c } => {
                write!(f, "update topic defaults: {}", changes(c))
            }
            Self::Reassign { topic, from, to } => {
                write!(f, "reassign topic {topic}: {from} -> {to}")
            }
            Self::DeleteTopic { topic } => write!(f, "delete topic {topic}"),
            Self::KeepRemovedTopic { topic } => {
                write!(
                    f,
                    "keep topic {topic}: removed from the spec without allow_delete = true"
                )
            }
            Self::UpdateClusterSettings {
                auto_create_topics,
                allow_api_topic_creation,
                producer_id_expiration_ms,
            } => write!(
                f,
                "update cluster settings: auto_create_topics = {auto_create_topics}, allow_api_topic_creation = {allow_api_topic_creation}, producer_id_expiration_ms = {producer_id_expiration_ms}"
            ),
            Self::AddBrokers { ids } => write!(f, "add brokers {ids:?}"),
            Self::NeedsRestart { key, from, to } => {
                write!(f, "needs restart: {key}: {from} -> {to}")
            }
            Self::Refused { key, reason } => write!(f, "refused: {key}: {reason}"),
        }
    }
}

impl ReloadAction {
    /// Whether the action is carried out by this reload.
    pub fn is_live(&self) -> bool {
        !matches!(self, Self::NeedsRestart { .. } | Self::Refused { .. })
    }
}

fn setting_changes(old: &TopicConfig, new: &TopicConfig) -> Vec<SettingChange> {
    old.to_kafka_configs()
        .into_iter()
        .zip(new.to_kafka_configs())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((key, from), (_, to))| SettingChange { key, from, to })
        .collect()
}

/// Actions taking `old` (running) to `new` (just loaded and validated) on
/// broker `node_id`, in a stable order: restart-only and refused changes
/// first, then cluster settings, defaults, and topics by name.
pub fn diff_specs(old: &ClusterSpec, new: &ClusterSpec, node_id: i32) -> Vec<ReloadAction> {
    let mut actions = restart_only_changes(old, new, node_id);
    let cluster = &new.cluster;
    if old.cluster.auto_create_topics != cluster.auto_create_topics
        || old.cluster.allow_api_topic_creation != cluster.allow_api_topic_creation
        || old.cluster.producer_id_expiration_ms != cluster.producer_id_expiration_ms
    {
        actions.push(ReloadAction::UpdateClusterSettings {
            auto_create_topics: cluster.auto_create_topics,
            allow_api_topic_creation: cluster.allow_api_topic_creation,
            producer_id_expiration_ms: cluster.producer_id_expiration_ms,
        });
    }
    let defaults = setting_changes(&old.default_topic_config(), &new.default_topic_config());
    if !defaults.is_empty() {
        actions.push(ReloadAction::UpdateTopicDefaults { changes: defaults });
    }
    for (topic, spec) in &old.topics {
        if !new.topics.contains_key(topic) {
            actions.push(if spec.allow_delete {
                ReloadAction::DeleteTopic {
                    topic: topic.clone(),
                }
            } else {
                ReloadAction::KeepRemovedTopic {
                    topic: topic.clone(),
                }
            });
        }
    }
    for topic in new.topics.keys() {
        actions.extend(topic_actions(old, new, topic));
    }
    actions
}

fn topic_actions(old: &ClusterSpec, new: &ClusterSpec, topic: &str) -> Vec<ReloadAction> {
    let new_config = new.topic_config(topic);
    if !old.topics.contains_key(topic) {
        return vec![ReloadAction::CreateTopic {
            topic: topic.to_string(),
            config: new_config,
        }];
    }
    let old_config = old.topic_config(topic);
    let mut actions = Vec::new();
    if new_config.partitions < old_config.partitions {
        actions.push(ReloadAction::Refused {
            key: format!("topics.{topic}.partitions"),
            reason: format!(
                "partitions can only grow ({} -> {})",
                old_config.partitions, new_config.partitions
            ),
        });
    } else if new_config.partitions > old_config.partitions {
        actions.push(ReloadAction::AddPartitions {
            topic: topic.to_string(),
            from: old_config.partitions,
            to: new_config.partitions,
        });
    }
    if new_config.replication_factor != old_config.replication_factor
        || new_config.replicas != old_config.replicas
    {
        let placement = |config: &TopicConfig| match &config.replicas {
            Some(lists) => format!("{lists:?}"),
            None => format!("replication_factor {}", config.replication_factor),
        };
        actions.push(ReloadAction::Reassign {
            topic: topic.to_string(),
            from: placement(&old_config),
            to: placement(&new_config),
        });
    }
    let changes = setting_changes(&old_config, &new_config);
    if !changes.is_empty() {
        actions.push(ReloadAction::UpdateTopicConfig {
            topic: topic.to_string(),
            changes,
            config: new_config,
        });
    }
    actions
}

/// Everything bound at startup: this broker's addresses and data directory,
/// the cluster's identity and membership, listener limits.
fn restart_only_changes(old: &ClusterSpec, new: &ClusterSpec, node_id: i32) -> Vec<ReloadAction> {
    let mut out = Vec::new();
    let mut check = |key: &str, from: String, to: String| {
        if from != to {
            out.push(ReloadAction::NeedsRestart {
                key: key.to_string(),
                from,
                to,
            });
        }
    };
    check(
        "cluster.name",
        old.cluster.name.clone(),
        new.cluster.name.clone(),
    );
    check(
        "controller.voters",
        format!("{:?}", old.controller.voters),
        format!("{:?}", new.controller.voters),
    );
    check(
        "controller.broker_heartbeat_interval_ms",
        old.controller.broker_heartbeat_interval_ms.to_string(),
        new.controller.broker_heartbeat_interval_ms.to_string(),
    );
    check(
        "controller.broker_session_timeout_ms",
        old.controller.broker_session_timeout_ms.to_string(),
        new.controller.broker_session_timeout_ms.to_string(),
    );
    check(
        "controller.tls_dir",
        format!("{:?}", old.controller.tls_dir),
        format!("{:?}", new.controller.tls_dir),
    );
    check(
        "controller.adopt_broker",
        format!("{:?}", old.controller.adopt_broker),
        format!("{:?}", new.controller.adopt_broker),
    );
    // A cluster takes new brokers live; any other change to the list (a
    // broker removed or readdressed, a single node becoming a cluster)
    // needs restarts.
    let added: Vec<i32> = new
        .broker_ids()
        .into_iter()
        .filter(|id| old.broker(*id).is_none())
        .collect();
    let others_kept = old.brokers.iter().all(|b| new.broker(b.id) == Some(b));
    let adds_brokers = old.brokers.len() > 1 && others_kept && !added.is_empty();
    if !adds_brokers {
        check(
            "brokers",
            format!("{:?}", old.broker_ids()),
            format!("{:?}", new.broker_ids()),
        );
    }
    check(
        "limits",
        format!("{:?}", old.limits),
        format!("{:?}", new.limits),
    );
    check(
        "replication",
        format!("{:?}", old.replication),
        format!("{:?}", new.replication),
    );
    match (old.broker(node_id), new.broker(node_id)) {
        (Some(a), Some(b)) => {
            check("brokers.kafka", a.kafka.to_string(), b.kafka.to_string());
            check(
                "brokers.advertised_kafka",
                a.advertised_kafka().to_string(),
                b.advertised_kafka().to_string(),
            );
            check("brokers.quic", a.quic.to_string(), b.quic.to_string());
            check(
                "brokers.metrics",
                a.metrics.to_string(),
                b.metrics.to_string(),
            );
            check(
                "brokers.rack",
                format!("{:?}", a.rack),
                format!("{:?}", b.rack),
            );
            check(
                "brokers.data_dir",
                a.data_dir.display().to_string(),
                b.data_dir.display().to_string(),
            );
        }
        (Some(_), None) => check("brokers", format!("broker {node_id}"), "absent".to_string()),
        _ => {}
    }
    if adds_brokers {
        out.push(ReloadAction::AddBrokers { ids: added });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_SPEC_TOML, parse_spec};

    fn spec(extra: &str) -> ClusterSpec {
        parse_spec(&format!("{DEFAULT_SPEC_TOML}\n{extra}"), "test.toml").unwrap()
    }

    #[test]
    fn identical_specs_need_nothing() {
        assert_eq!(diff_specs(&spec(""), &spec(""), 1), vec![]);
    }

    #[test]
    fn new_topics_more_partitions_and_settings_apply_live() {
        let old = spec("[topics.orders]\npartitions = 2\n");
        let new = spec(
            "[topics.orders]\npartitions = 4\nretention_ms = \"1d\"\n\n[topics.audit]\npartitions = 3\n",
        );
        let actions = diff_specs(&old, &new, 1);
        assert!(actions.iter().all(ReloadAction::is_live), "{actions:?}");
        let text: Vec<String> = actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "create topic audit (3 partitions)".to_string(),
                "add partitions to orders: 2 -> 4".to_string(),
                "update topic orders: retention.ms: 604800000 -> 86400000".to_string(),
            ]
        );
    }

    #[test]
    fn fewer_partitions_are_refused() {
        let actions = diff_specs(
            &spec("[topics.t]\npartitions = 4\n"),
            &spec("[topics.t]\npartitions = 2\n"),
            1,
        );
        assert!(
            matches!(&actions[..], [ReloadAction::Refused { key, .. }] if key == "topics.t.partitions")
        );
    }

    #[test]
    fn changed_replicas_are_a_live_reassignment() {
        let actions = diff_specs(
            &spec("[topics.t]\npartitions = 1\nreplicas = [[1]]\n"),
            &spec("[topics.t]\npartitions = 1\n"),
            1,
        );
        assert!(actions.iter().all(ReloadAction::is_live), "{actions:?}");
        let text: Vec<String> = actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec!["reassign topic t: [[1]] -> replication_factor 1".to_string()]
        );
    }

    #[test]
    fn removing_a_topic_deletes_only_with_the_opt_in() {
        let kept = diff_specs(&spec("[topics.t]\npartitions = 1\n"), &spec(""), 1);
        assert_eq!(
            kept,
            vec![ReloadAction::KeepRemovedTopic { topic: "t".into() }]
        );
        let deleted = diff_specs(
            &spec("[topics.t]\npartitions = 1\nallow_delete = true\n"),
            &spec(""),
            1,
        );
        assert_eq!(
            deleted,
            vec![ReloadAction::DeleteTopic { topic: "t".into() }]
        );
    }

    #[test]
    fn listener_address_and_data_dir_need_a_restart() {
        let old = spec("");
        let text = DEFAULT_SPEC_TOML
            .replace("kafka = \"127.0.0.1:9092\"", "kafka = \"127.0.0.1:9192\"")
            .replace("data_dir = \"data\"", "data_dir = \"elsewhere\"");
        let new = parse_spec(&text, "test.toml").unwrap();
        let actions = diff_specs(&old, &new, 1);
        let keys: Vec<&str> = actions
            .iter()
            .map(|a| match a {
                ReloadAction::NeedsRestart { key, .. } => key.as_str(),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                "brokers.kafka",
                "brokers.advertised_kafka",
                "brokers.data_dir"
            ]
        );
    }

    #[test]
    fn default_changes_and_cluster_switches_are_reported() {
        let old = spec("");
        let text = DEFAULT_SPEC_TOML
            .replace("segment_bytes = \"1GiB\"", "segment_bytes = \"256MiB\"")
            .replace("auto_create_topics = true", "auto_create_topics = false");
        let actions = diff_specs(&old, &parse_spec(&text, "t.toml").unwrap(), 1);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(
            &actions[0],
            ReloadAction::UpdateClusterSettings {
                auto_create_topics: false,
                ..
            }
        ));
        assert!(
            matches!(&actions[1], ReloadAction::UpdateTopicDefaults { changes } if changes[0].key == "segment.bytes")
        );
    }
}
