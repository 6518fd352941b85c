//! OffsetFetch (v1–v7, one group per request): committed offsets, -1 where
//! nothing is committed; a null topic list (v2+) means every one.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::group_common::{coordinator, not_available, string};
use super::topic_name;
use crate::group::CommittedOffset;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

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
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect(),
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for ((topic, partition), _) in coordinator.read(|c| c.committed_all(&group_id)) {
                match all.last_mut() {
                    Some((t, ps)) if *t == topic => ps.push(partition),
                    _ => all.push((topic, vec![partition])),
                }
            }
            all
        }
    };
    let topics = coordinator.read(|c| {
        wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|index| {
                        let key = (topic.clone(), index);
                        answer(index, c.committed(&group_id, &key), version)
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect()
    });
    ctx.encode(&OffsetFetchResponse::default().with_topics(topics))
        .map(Reply::Ready)
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
