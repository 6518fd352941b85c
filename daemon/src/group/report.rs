//! `sluiced groups`: groups, members, assignments and per-partition lag,
//! read from a running broker over the Kafka protocol (ListGroups,
//! DescribeGroups, OffsetFetch, ListOffsets) with the bench's small client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::describe::assigned_partitions;
use super::lag::{LagRow, partition_lag};
use crate::client::Connection;

/// ListOffsets "latest": the high watermark.
const LATEST_TIMESTAMP: i64 = -1;
/// Groups described per DescribeGroups request.
const DESCRIBE_BATCH_MAX: usize = 100;

/// One member as DescribeGroups reports it, with its decoded assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub member_id: String,
    pub client_id: String,
    pub instance_id: Option<String>,
    pub assignment: Vec<(String, Vec<i32>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: Vec<MemberReport>,
    pub lag: Vec<LagRow>,
}

/// Connects to `bootstrap` and builds a report of every group.
pub async fn collect(bootstrap: &str) -> anyhow::Result<Vec<GroupReport>> {
    let mut conn = Connection::open(bootstrap).await?;
    let listed: ListGroupsResponse = conn
        .call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())
        .await?;
    anyhow::ensure!(
        listed.error_code == 0,
        "ListGroups error {}",
        listed.error_code
    );
    let ids: Vec<GroupId> = listed.groups.into_iter().map(|g| g.group_id).collect();
    let mut reports = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(DESCRIBE_BATCH_MAX) {
        let request = DescribeGroupsRequest::default().with_groups(chunk.to_vec());
        let described: DescribeGroupsResponse =
            conn.call(ApiKey::DescribeGroups, 4, &request).await?;
        for group in described.groups {
            reports.push(describe(&mut conn, group).await?);
        }
    }
    Ok(reports)
}

async fn describe(
    conn: &mut Connection,
    group: kafka_protocol::messages::describe_groups_response::DescribedGroup,
) -> anyhow::Result<GroupReport> {
    let consumer = group.protocol_type.as_str() == "consumer";
    let members: Vec<MemberReport> = group
        .members
        .iter()
        .map(|m| MemberReport {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            assignment: if consumer {
                assigned_partitions(&m.member_assignment)
            } else {
                Vec::new()
            },
        })
        .collect();
    let fetch = OffsetFetchRequest::default()
        .with_group_id(group.group_id.clone())
        .with_topics(None);
    let fetched: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 7, &fetch).await?;
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &fetched.topics {
        for p in &topic.partitions {
            committed.insert(
                (topic.name.to_string(), p.partition_index),
                p.committed_offset,
            );
        }
    }
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &members {
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                owners.insert((topic.clone(), *p), m.member_id.clone());
            }
        }
    }
    let keys: BTreeSet<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    let high_watermarks = high_watermarks(conn, &keys).await?;
    let group_id = group.group_id.to_string();
    let lag = keys
        .into_iter()
        .map(|key| {
            let hw = high_watermarks.get(&key).copied().unwrap_or(-1);
            let done = committed.get(&key).copied();
            LagRow {
                group: group_id.clone(),
                lag: partition_lag(hw, done),
                committed: done.filter(|c| *c >= 0),
                high_watermark: hw,
                owner: owners.get(&key).cloned(),
                topic: key.0,
                partition: key.1,
            }
        })
        .collect();
    Ok(GroupReport {
        group: group_id,
        state: group.group_state.to_string(),
        protocol: group.protocol_data.to_string(),
        members,
        lag,
    })
}

async fn high_watermarks(
    conn: &mut Connection,
    keys: &BTreeSet<(String, i32)>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in keys {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let topics = by_topic
        .iter()
        .map(|(topic, partitions)| {
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(LATEST_TIMESTAMP)
                        })
                        .collect(),
                )
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(topics);
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &request).await?;
    let mut found = BTreeMap::new();
    for topic in response.topics {
        for p in topic.partitions.iter().filter(|p| p.error_code == 0) {
            found.insert((topic.name.to_string(), p.partition_index), p.offset);
        }
    }
    Ok(found)
}

/// The report as text: one block per group, then a lag table.
pub fn render(reports: &[GroupReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no consumer groups\n");
    }
    for report in reports {
        let total: i64 = report.lag.iter().filter_map(|r| r.lag).sum();
        let _ = writeln!(
            out,
            "GROUP {} state={} protocol={} members={} total_lag={}",
            report.group,
            report.state,
            report.protocol,
            report.members.len(),
            total
        );
        for m in &report.members {
            let assigned: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| format!("{t}{ps:?}"))
                .collect();
            let instance = m.instance_id.as_deref().unwrap_or("-");
            let _ = writeln!(
                out,
                "  MEMBER {} client={} instance={} assigned={}",
                m.member_id,
                m.client_id,
                instance,
                assigned.join(",")
            );
        }
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>12} {:>14} {:>10}  OWNER",
            "TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"
        );
        for row in &report.lag {
            let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  {:<24} {:>9} {:>12} {:>14} {:>10}  {}",
                row.topic,
                row.partition,
                dash(row.committed),
                row.high_watermark,
                dash(row.lag),
                row.owner.as_deref().unwrap_or("-")
            );
        }
    }
    out
}
