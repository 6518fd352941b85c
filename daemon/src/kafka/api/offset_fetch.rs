//! OffsetFetch (v1–v7, one group per request): committed offsets, -1 where
//! nothing is committed; a null topic list (v2+) means every one.

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::group_common::{coordinator, not_available, string};
use super::topic_name;
use crate::group::{CommittedOffset, Coordinator};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(ctx: &RequestContext, request: OffsetFetchRequest) -> Result<Reply, DispatchError> {
    let version = ctx.version;
    let Some(coordinator) = coordinator(ctx) else {
        let mut response = OffsetFetchResponse::default();
        if version >= 2 {
            response.error_code = not_available();
        }
        return ctx.encode(&response).map(Reply::Ready);
    };
    let group_id = request.group_id.to_string();
    let asked = (version < 2).then(|| request.topics.clone().unwrap_or_default());
    let read = coordinator.read_group(&group_id, |c| {
        answers(c, &group_id, request.topics, version)
    });
    let response = match (read, asked) {
        (Ok(topics), _) => OffsetFetchResponse::default().with_topics(topics),
        (Err(error), None) => {
            OffsetFetchResponse::default().with_error_code(group_error_code(&error))
        }
        // v0–1 carry errors per partition only.
        (Err(error), Some(asked)) => {
            let code = group_error_code(&error);
            let topics = asked
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .into_iter()
                        .map(|index| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    };
    ctx.encode(&response).map(Reply::Ready)
}

/// Every wanted partition's committed offset (-1 where none is); `topics`
/// None (v2+): all the group has.
fn answers(
    c: &Coordinator,
    group_id: &str,
    topics: Option<Vec<OffsetFetchRequestTopic>>,
    version: i16,
) -> Vec<OffsetFetchResponseTopic> {
    let wanted: Vec<(String, Vec<i32>)> = match topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect(),
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for ((topic, partition), _) in c.committed_all(group_id) {
                match all.last_mut() {
                    Some((t, ps)) if *t == topic => ps.push(partition),
                    _ => all.push((topic, vec![partition])),
                }
            }
            all
        }
    };
    wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    let key = (topic.clone(), index);
                    answer(index, c.committed(group_id, &key), version)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect()
}

/// The leader epoch field exists from v5.
fn answer(
    index: i32,
    committed: Option<&CommittedOffset>,
    version: i16,
) -> OffsetFetchResponsePartition {
    let base = OffsetFetchResponsePartition::default().with_partition_index(index);
    match committed {
        None => base.with_committed_offset(-1),
        Some(c) => {
            let epoch = if version >= 5 { c.leader_epoch } else { -1 };
            base.with_committed_offset(c.offset)
                .with_committed_leader_epoch(epoch)
                .with_metadata(Some(string(&c.metadata)))
        }
    }
}
