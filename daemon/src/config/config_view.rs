//! What DescribeConfigs shows: every Kafka-named setting of a topic or of
//! the broker, with its value, where it comes from (the topic's own table
//! or API overrides, `[topic_defaults]`, or the built-in default) and its
//! synonyms in precedence order, as Kafka reports them. Pure.

use std::collections::BTreeMap;

use super::spec::{ClusterSpec, TopicSettings};
use super::topic_config::TopicConfig;

/// Kafka's `ConfigSource` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigSource {
    /// Set for this topic: its `[topics.NAME]` table, or an API override.
    Topic = 1,
    /// Set in the spec for every topic (`[topic_defaults]`) or the broker.
    StaticBroker = 4,
    /// Not set anywhere: Sluice's built-in default.
    Default = 5,
}

/// Kafka's `ConfigType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub config_type: ConfigType,
    /// Whether an AlterConfigs call may change it.
    pub read_only: bool,
    /// Highest precedence first; the first one is where `value` comes from.
    pub synonyms: Vec<ConfigSynonym>,
    pub documentation: &'static str,
}

/// One topic-level setting: its topic name, its broker-level synonym, its
/// type, whether a `[topics]`/`[topic_defaults]` table sets it, and what it does.
struct TopicKey {
    name: &'static str,
    broker_name: &'static str,
    config_type: ConfigType,
    is_set: fn(&TopicSettings) -> bool,
    /// Whether the broker can change it on a running topic it owns.
    alterable: bool,
    documentation: &'static str,
}

const fn key(
    name: &'static str,
    broker_name: &'static str,
    config_type: ConfigType,
    is_set: fn(&TopicSettings) -> bool,
    documentation: &'static str,
) -> TopicKey {
    TopicKey {
        name,
        broker_name,
        config_type,
        is_set,
        alterable: true,
        documentation,
    }
}

/// In the order of `TopicConfig::to_kafka_configs` (sorted by name).
const TOPIC_KEYS: &[TopicKey] = &[
    key(
        "cleanup.policy",
        "log.cleanup.policy",
        ConfigType::List,
        |s| s.cleanup_policy.is_some(),
        "delete (old segments go by retention), compact (the latest record per key stays), or both",
    ),
    key(
        "compression.type",
        "compression.type",
        ConfigType::String,
        |s| s.compression.is_some(),
        "codec of stored batches; producer keeps the producer's",
    ),
    key(
        "delete.retention.ms",
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        |s| s.delete_retention_ms.is_some(),
        "how long a tombstone stays in a compacted topic after it was written",
    ),
    key(
        "flush.messages",
        "log.flush.interval.messages",
        ConfigType::Long,
        |s| s.flush_interval_messages.is_some(),
        "fsync after this many messages",
    ),
    key(
        "flush.ms",
        "log.flush.interval.ms",
        ConfigType::Long,
        |s| s.flush_interval_ms.is_some(),
        "fsync at least this often",
    ),
    key(
        "index.interval.bytes",
        "log.index.interval.bytes",
        ConfigType::Int,
        |s| s.index_interval_bytes.is_some(),
        "one offset index entry per this many bytes of log",
    ),
    key(
        "max.compaction.lag.ms",
        "log.cleaner.max.compaction.lag.ms",
        ConfigType::Long,
        |s| s.max_compaction_lag_ms.is_some(),
        "a dirty segment older than this is compacted whatever the dirty ratio",
    ),
    key(
        "max.message.bytes",
        "message.max.bytes",
        ConfigType::Int,
        |s| s.max_message_bytes.is_some(),
        "largest record batch accepted",
    ),
    key(
        "message.timestamp.type",
        "log.message.timestamp.type",
        ConfigType::String,
        |s| s.message_timestamp_type.is_some(),
        "CreateTime (the producer's) or LogAppendTime (the broker's)",
    ),
    key(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double,
        |s| s.min_cleanable_dirty_ratio.is_some(),
        "compaction starts when this share of the cleanable bytes is dirty",
    ),
    key(
        "min.compaction.lag.ms",
        "log.cleaner.min.compaction.lag.ms",
        ConfigType::Long,
        |s| s.min_compaction_lag_ms.is_some(),
        "records younger than this are never compacted",
    ),
    key(
        "min.insync.replicas",
        "min.insync.replicas",
        ConfigType::Int,
        |s| s.min_insync_replicas.is_some(),
        "replicas that must hold an acks=all write",
    ),
    key(
        "retention.bytes",
        "log.retention.bytes",
        ConfigType::Long,
        |s| s.retention_bytes.is_some(),
        "size per partition beyond which old segments are deleted; -1 unlimited",
    ),
    key(
        "retention.ms",
        "log.retention.ms",
        ConfigType::Long,
        |s| s.retention_ms.is_some(),
        "age beyond which old segments are deleted; -1 forever",
    ),
    key(
        "segment.bytes",
        "log.segment.bytes",
        ConfigType::Int,
        |s| s.segment_bytes.is_some(),
        "a segment rolls at this size",
    ),
    key(
        "segment.index.bytes",
        "log.index.size.max.bytes",
        ConfigType::Int,
        |s| s.segment_index_bytes.is_some(),
        "preallocated size of each index file",
    ),
    key(
        "segment.ms",
        "log.roll.ms",
        ConfigType::Long,
        |s| s.segment_ms.is_some(),
        "a segment rolls at this age",
    ),
    key(
        "sluice.flush.mode",
        "sluice.flush.mode",
        ConfigType::String,
        |s| s.flush.is_some(),
        "page-cache (acknowledge on write) or fsync (acknowledge after fsync)",
    ),
    key(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        |s| s.unclean_leader_election.is_some(),
        "whether a replica outside the ISR may become leader",
    ),
];

/// How a topic's settings were given.
#[derive(Debug, Clone, Copy)]
pub enum TopicSettingsSource<'a> {
    /// Declared in the spec: its `[topics.NAME]` table. The spec owns it,
    /// so every setting is read-only through the API.
    Declared,
    /// Created through the API with these Kafka-named overrides.
    Api(&'a BTreeMap<String, String>),
}

/// Every Kafka-named setting of topic `name` whose resolved settings are `config`.
pub fn describe_topic(
    spec: &ClusterSpec,
    name: &str,
    config: &TopicConfig,
    given: TopicSettingsSource<'_>,
) -> Vec<ConfigEntry> {
    let builtin: BTreeMap<_, _> = TopicConfig::kafka_defaults()
        .to_kafka_configs()
        .into_iter()
        .collect();
    let defaults: BTreeMap<_, _> = spec
        .default_topic_config()
        .to_kafka_configs()
        .into_iter()
        .collect();
    let own = config.to_kafka_configs();
    assert_eq!(own.len(), TOPIC_KEYS.len(), "every config has a key");
    own.into_iter()
        .zip(TOPIC_KEYS)
        .map(|((config_name, value), key)| {
            assert_eq!(config_name, key.name);
            let set_for_topic = match given {
                TopicSettingsSource::Declared => spec
                    .topics
                    .get(name)
                    .is_some_and(|t| (key.is_set)(&t.settings)),
                TopicSettingsSource::Api(overrides) => overrides.contains_key(key.name),
            };
            let mut synonyms = Vec::with_capacity(3);
            if set_for_topic {
                synonyms.push(ConfigSynonym {
                    name: key.name,
                    value: value.clone(),
                    source: ConfigSource::Topic,
                });
            }
            if (key.is_set)(&spec.topic_defaults) {
                synonyms.push(ConfigSynonym {
                    name: key.broker_name,
                    value: defaults.get(key.name).cloned().unwrap_or_default(),
                    source: ConfigSource::StaticBroker,
                });
            }
            synonyms.push(ConfigSynonym {
                name: key.broker_name,
                value: builtin.get(key.name).cloned().unwrap_or_default(),
                source: ConfigSource::Default,
            });
            ConfigEntry {
                name: key.name,
                source: synonyms[0].source,
                value,
                config_type: key.config_type,
                read_only: matches!(given, TopicSettingsSource::Declared) || !key.alterable,
                synonyms,
                documentation: key.documentation,
            }
        })
        .collect()
}

/// The broker's settings under Kafka's broker config names: all come from
/// the spec (read-only through the API; edit the file and reload).
pub fn describe_broker(spec: &ClusterSpec, node_id: i32) -> Vec<ConfigEntry> {
    let defaults = spec.default_topic_config();
    let builtin: BTreeMap<_, _> = TopicConfig::kafka_defaults()
        .to_kafka_configs()
        .into_iter()
        .collect();
    let mut entries: Vec<ConfigEntry> = defaults
        .to_kafka_configs()
        .into_iter()
        .zip(TOPIC_KEYS)
        .map(|((_, value), key)| {
            let source = if (key.is_set)(&spec.topic_defaults) {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            };
            let mut synonyms = vec![ConfigSynonym {
                name: key.broker_name,
                value: value.clone(),
                source,
            }];
            if source != ConfigSource::Default {
                synonyms.push(ConfigSynonym {
                    name: key.broker_name,
                    value: builtin.get(key.name).cloned().unwrap_or_default(),
                    source: ConfigSource::Default,
                });
            }
            broker_entry(
                key.broker_name,
                value,
                key.config_type,
                synonyms,
                key.documentation,
            )
        })
        .collect();
    let broker = spec.broker(node_id);
    let listener = broker
        .map(|b| format!("PLAINTEXT://{}", b.kafka))
        .unwrap_or_default();
    let advertised = broker
        .map(|b| {
            let address = b.advertised_kafka();
            format!("PLAINTEXT://{}:{}", address.host, address.port)
        })
        .unwrap_or_default();
    let limits = &spec.limits;
    let fixed = [
        (
            "advertised.listeners",
            advertised,
            ConfigType::List,
            "where clients are told to connect",
        ),
        (
            "auto.create.topics.enable",
            spec.cluster.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "cluster.auto_create_topics",
        ),
        (
            "producer.id.expiration.ms",
            spec.cluster.producer_id_expiration_ms.to_string(),
            ConfigType::Int,
            "cluster.producer_id_expiration_ms",
        ),
        (
            "broker.id",
            node_id.to_string(),
            ConfigType::Int,
            "this broker's id in the spec",
        ),
        (
            "default.replication.factor",
            defaults.replication_factor.to_string(),
            ConfigType::Short,
            "topic_defaults.replication_factor",
        ),
        (
            "fetch.max.bytes",
            limits.fetch_max_bytes.to_string(),
            ConfigType::Int,
            "limits.fetch_max_bytes",
        ),
        (
            "listeners",
            listener,
            ConfigType::List,
            "where the Kafka listener binds",
        ),
        (
            "log.dirs",
            broker
                .map(|b| b.data_dir.display().to_string())
                .unwrap_or_default(),
            ConfigType::String,
            "the broker's data_dir",
        ),
        (
            "max.connections",
            limits.max_connections.to_string(),
            ConfigType::Int,
            "limits.max_connections",
        ),
        (
            "num.partitions",
            defaults.partitions.to_string(),
            ConfigType::Int,
            "topic_defaults.partitions",
        ),
        (
            "replica.lag.time.max.ms",
            spec.replication.replica_lag_time_max_ms.to_string(),
            ConfigType::Long,
            "replication.replica_lag_time_max_ms",
        ),
        (
            "socket.request.max.bytes",
            limits.socket_request_max_bytes.to_string(),
            ConfigType::Int,
            "limits.socket_request_max_bytes",
        ),
    ];
    for (name, value, config_type, documentation) in fixed {
        let synonyms = vec![ConfigSynonym {
            name,
            value: value.clone(),
            source: ConfigSource::StaticBroker,
        }];
        entries.push(broker_entry(
            name,
            value,
            config_type,
            synonyms,
            documentation,
        ));
    }
    entries.sort_by_key(|entry| entry.name);
    entries.dedup_by_key(|entry| entry.name);
    entries
}

fn broker_entry(
    name: &'static str,
    value: String,
    config_type: ConfigType,
    synonyms: Vec<ConfigSynonym>,
    documentation: &'static str,
) -> ConfigEntry {
    ConfigEntry {
        name,
        value,
        source: synonyms[0].source,
        config_type,
        read_only: true,
        synonyms,
        documentation,
    }
}

/// The `[topics.NAME]` key (or `[topic_defaults]` key) that holds a
/// Kafka-named topic setting, for messages that send an operator to the spec.
pub fn toml_key_for(kafka_name: &str) -> Option<&'static str> {
    Some(match kafka_name {
        "cleanup.policy" => "cleanup_policy",
        "compression.type" => "compression",
        "delete.retention.ms" => "delete_retention_ms",
        "max.compaction.lag.ms" => "max_compaction_lag_ms",
        "min.cleanable.dirty.ratio" => "min_cleanable_dirty_ratio",
        "min.compaction.lag.ms" => "min_compaction_lag_ms",
        "flush.messages" => "flush_interval_messages",
        "flush.ms" => "flush_interval_ms",
        "index.interval.bytes" => "index_interval_bytes",
        "max.message.bytes" => "max_message_bytes",
        "message.timestamp.type" => "message_timestamp_type",
        "min.insync.replicas" => "min_insync_replicas",
        "retention.bytes" => "retention_bytes",
        "retention.ms" => "retention_ms",
        "segment.bytes" => "segment_bytes",
        "segment.index.bytes" => "segment_index_bytes",
        "segment.ms" => "segment_ms",
        "sluice.flush.mode" => "flush",
        "unclean.leader.election.enable" => "unclean_leader_election",
        "num.partitions" | "partitions" => "partitions",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_spec;

    fn spec() -> ClusterSpec {
        parse_spec(
            r#"
[cluster]
name = "t"
[controller]
voters = [1]
[[brokers]]
id = 1
kafka = "127.0.0.1:9092"
quic = "127.0.0.1:9093"
metrics = "127.0.0.1:9644"
data_dir = "data"
[topic_defaults]
retention_ms = "2d"
[topics.orders]
partitions = 2
segment_bytes = "64MiB"
"#,
            "cluster.toml",
        )
        .unwrap()
    }

    fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
        entries.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn a_declared_topic_shows_where_each_value_comes_from_and_is_read_only() {
        let spec = spec();
        let config = spec.topic_config("orders");
        let entries = describe_topic(&spec, "orders", &config, TopicSettingsSource::Declared);
        let segment = entry(&entries, "segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("67108864", ConfigSource::Topic)
        );
        assert_eq!(segment.synonyms.len(), 2);
        assert_eq!(segment.synonyms[1].name, "log.segment.bytes");
        assert_eq!(segment.synonyms[1].value, "1073741824");
        let retention = entry(&entries, "retention.ms");
        assert_eq!(
            (retention.value.as_str(), retention.source),
            ("172800000", ConfigSource::StaticBroker)
        );
        assert_eq!(retention.synonyms[1].value, "604800000");
        let policy = entry(&entries, "cleanup.policy");
        assert_eq!(
            (policy.value.as_str(), policy.source),
            ("delete", ConfigSource::Default)
        );
        assert!(entries.iter().all(|e| e.read_only));
    }

    #[test]
    fn an_api_topic_marks_its_overrides_and_may_be_altered() {
        let spec = spec();
        let overrides: BTreeMap<String, String> =
            [("retention.ms".to_string(), "1000".to_string())].into();
        let config = spec
            .new_topic_config(Some(1), &[("retention.ms".into(), "1000".into())])
            .unwrap();
        let entries = describe_topic(&spec, "made", &config, TopicSettingsSource::Api(&overrides));
        let retention = entry(&entries, "retention.ms");
        assert_eq!(
            (retention.value.as_str(), retention.source),
            ("1000", ConfigSource::Topic)
        );
        assert_eq!(retention.synonyms.len(), 3);
        assert!(!retention.read_only);
        assert_eq!(
            entry(&entries, "segment.bytes").source,
            ConfigSource::Default
        );
        assert!(!entry(&entries, "cleanup.policy").read_only);
    }

    #[test]
    fn the_broker_shows_its_spec_settings_under_kafka_names() {
        let entries = describe_broker(&spec(), 1);
        assert_eq!(entry(&entries, "log.retention.ms").value, "172800000");
        assert_eq!(
            entry(&entries, "log.retention.ms").source,
            ConfigSource::StaticBroker
        );
        assert_eq!(entry(&entries, "broker.id").value, "1");
        assert_eq!(entry(&entries, "num.partitions").value, "1");
        assert!(entries.iter().all(|e| e.read_only));
        assert!(entries.is_sorted_by_key(|e| e.name));
    }
}
