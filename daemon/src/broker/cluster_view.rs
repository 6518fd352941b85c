//! What a cluster member tells clients about the whole cluster: the live
//! brokers, the controller and every partition's leader. Plain data built
//! by its owner (the cluster publisher, from the controller's metadata
//! image) and replaced whole, so a Metadata answer reads one consistent
//! snapshot. A single node has none and answers from its own topics.

use std::collections::BTreeMap;

use uuid::Uuid;

/// The cluster as Metadata and DescribeCluster describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The brokers clients may connect to (registered and unfenced).
    pub brokers: Vec<ViewBroker>,
    /// Registered brokers that are fenced (dead, cut off, shutting down or
    /// catching up). Metadata lists them after `brokers`; nothing else
    /// does. A client drops a broker missing from a Metadata answer, and
    /// librdkafka drops it in the middle of moving that broker's partitions
    /// to their new leaders: the partitions then wait for its next one-second
    /// scan. Listed, the dead leader's handle stays, and the answer that
    /// names the new leader moves its partitions at once.
    pub fenced: Vec<ViewBroker>,
    /// The broker Metadata names as controller (Kafka's `controller_id`).
    pub controller_id: i32,
    /// Every topic by name.
    pub topics: BTreeMap<String, ViewTopic>,
}

/// A broker's client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTopic {
    pub id: Uuid,
    /// By partition index: `partitions[i]` is partition i.
    pub partitions: Vec<ViewPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPartition {
    /// The leader's broker id, or -1 when none leads (LEADER_NOT_AVAILABLE).
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on brokers that are down.
    pub offline: Vec<i32>,
}

impl ClusterView {
    pub fn broker(&self, id: i32) -> Option<&ViewBroker> {
        self.brokers.iter().find(|b| b.id == id)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<(&str, &ViewTopic)> {
        self.topics
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(name, t)| (name.as_str(), t))
    }
}
