//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log,
//! so consumers can validate their position after a leader change
//! (KIP-320) and, later, followers can find where their log diverged.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::fetch::leader_epoch_error;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

const UNDEFINED: (i32, i64) = (-1, -1);

pub fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> Result<Reply, DispatchError> {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = ctx.broker.topic(topic.topic.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    let partition = found.as_ref().and_then(|t| t.partition(p.partition));
                    let code = match partition {
                        None => Some(ResponseError::UnknownTopicOrPartition.code()),
                        Some(_) => leader_epoch_error(p.current_leader_epoch),
                    };
                    if let Some(code) = code {
                        crate::kafka::errors::count_error(ctx.key, code);
                        return result
                            .with_error_code(code)
                            .with_leader_epoch(UNDEFINED.0)
                            .with_end_offset(UNDEFINED.1);
                    }
                    let (epoch, end) = partition
                        .and_then(|partition| partition.leader_epoch_end_offset(p.leader_epoch))
                        .unwrap_or(UNDEFINED);
                    result.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    ctx.encode(&OffsetForLeaderEpochResponse::default().with_topics(topics))
        .map(Reply::Ready)
}
