//! The spec as the controller wants it in the metadata log: its hash and
//! text, its declared topics with their settings (only those that differ
//! from Kafka's defaults, as KRaft stores them) and the declared brokers
//! for placement. Topic ids are drawn here, once per process start: a topic
//! the image already holds keeps its id, since only missing topics are
//! created.

use uuid::Uuid;

use crate::config::{ClusterSpec, TopicConfig};
use crate::controller::decide::NewTopic;
use crate::controller::placement::PlacementBroker;
use crate::controller::plan::DesiredSpec;
use crate::controller::records::SPEC_TEXT_BYTES_MAX;
use crate::group::{OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS, offsets_log};

/// `previous`: the spec this node ran before a reload; its declared topics
/// with `allow_delete = true` that `spec` no longer declares may go.
pub fn desired_spec(
    spec: &ClusterSpec,
    previous: Option<&ClusterSpec>,
) -> anyhow::Result<DesiredSpec> {
    anyhow::ensure!(
        spec.source_text.len() <= SPEC_TEXT_BYTES_MAX,
        "the spec is {} bytes; a cluster spec may have at most {SPEC_TEXT_BYTES_MAX}",
        spec.source_text.len()
    );
    let defaults = TopicConfig::kafka_defaults().to_kafka_configs();
    let topics = spec
        .topics
        .keys()
        .map(|name| {
            let config = spec.topic_config(name);
            let settings = config
                .to_kafka_configs()
                .into_iter()
                .filter(|pair| !defaults.contains(pair))
                .map(|(key, value)| (key.to_string(), value))
                .collect();
            NewTopic {
                topic_id: Uuid::new_v4(),
                name: name.clone(),
                declared: true,
                settings,
                partitions: config.partitions,
                replication_factor: config.replication_factor,
                replicas: config.replicas.clone(),
            }
        })
        .collect();
    Ok(DesiredSpec {
        hash: spec.source_hash.clone(),
        text: spec.source_text.to_string(),
        topics,
        brokers: PlacementBroker::declared(spec),
        deletable: previous
            .map(|old| {
                old.topics
                    .iter()
                    .filter(|(name, topic)| topic.allow_delete && !spec.topics.contains_key(*name))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default(),
        internal: vec![offsets_topic(spec)],
        adopt_broker: spec.controller.adopt_broker,
    })
}

/// `__consumer_offsets` as Kafka makes it, with the spec's default
/// replication factor (Kafka's `offsets.topic.replication.factor`).
fn offsets_topic(spec: &ClusterSpec) -> NewTopic {
    NewTopic {
        topic_id: Uuid::new_v4(),
        name: OFFSETS_TOPIC.to_string(),
        declared: false,
        settings: offsets_log::topic_settings().into_iter().collect(),
        partitions: OFFSETS_TOPIC_PARTITIONS,
        replication_factor: spec.default_topic_config().replication_factor,
        replicas: None,
    }
}
