//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log,
//! so consumers can validate their position after a leader change
//! (KIP-320) and, later, followers can find where their log diverged.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::partition_error_code;

const UNDEFINED: (i32, i64) = (-1, -1);

pub fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> Result<Reply, DispatchError> {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    // Consumers ask the leader (KIP-320); followers, later, too.
                    let partition = match ctx.broker.leader_partition(
                        topic.topic.as_str(),
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(partition) => partition,
                        Err(e) => {
                            let code = partition_error_code(&e);
                            crate::kafka::errors::count_error(ctx.key, code);
                            return result
                                .with_error_code(code)
                                .with_leader_epoch(UNDEFINED.0)
                                .with_end_offset(UNDEFINED.1);
                        }
                    };
                    let (epoch, end) = partition
                        .leader_epoch_end_offset(p.leader_epoch)
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
