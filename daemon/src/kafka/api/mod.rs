//! One handler per Kafka API. Each takes the decoded request and returns a
//! `Reply`; per-partition failures are answered per partition.

pub mod api_versions;
pub mod create_topics;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}
