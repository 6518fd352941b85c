//! What ListGroups and DescribeGroups report, and reading the consumer
//! protocol's embedded subscription and assignment blobs.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;

use super::coordinator::Coordinator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

impl Coordinator {
    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.groups()
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.state.protocol_type().to_string(),
                state: g.state.name(),
            })
            .collect()
    }

    /// None for a group this coordinator does not know (Kafka reports it Dead).
    pub fn describe_group(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.group(group_id)?;
        let Some(membership) = group.state.membership() else {
            return Some(GroupDescription {
                state: group.state.name(),
                protocol_type: group.state.protocol_type().to_string(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let protocol = membership.protocol_name.clone().unwrap_or_default();
        let members = membership
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol).cloned().unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupDescription {
            state: group.state.name(),
            protocol_type: membership.protocol_type.clone(),
            protocol,
            members,
        })
    }
}

/// Topics in a consumer-protocol subscription blob; empty if unreadable.
pub fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// (topic, partitions) in a consumer-protocol assignment blob.
pub fn assigned_partitions(assignment: &Bytes) -> Vec<(String, Vec<i32>)> {
    let mut buf = assignment.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut buf, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .map(|tp| (tp.topic.to_string(), tp.partitions.clone()))
                .collect()
        })
        .unwrap_or_default()
}
