//! ListOffsets: earliest, latest (the high watermark), the largest
//! timestamp, or the first offset at or after a timestamp.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Partition;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::{log_error_code, partition_error_code};

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Whether any partition asks for a timestamp lookup, which reads (and
/// may decompress) a batch from its segment rather than offsets in memory.
pub fn reads_records(request: &ListOffsetsRequest) -> bool {
    request
        .topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .any(|p| p.timestamp >= 0 || p.timestamp == MAX_TIMESTAMP)
}

pub fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> Result<Reply, DispatchError> {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    // Only the leader answers (Kafka's fetchOnlyFromLeader for clients).
                    match ctx.broker.leader_partition(
                        topic.name.as_str(),
                        p.partition_index,
                        p.current_leader_epoch,
                    ) {
                        Err(e) => base.with_error_code(partition_error_code(&e)),
                        Ok(partition) => answer(&partition, p.timestamp, base, ctx.version),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ctx.encode(&ListOffsetsResponse::default().with_topics(topics))
        .map(Reply::Ready)
}

fn answer(
    partition: &Partition,
    timestamp: i64,
    base: ListOffsetsPartitionResponse,
    version: i16,
) -> ListOffsetsPartitionResponse {
    // The leader epoch field exists from v4 on.
    let epoch = if version >= 4 {
        partition.leadership().epoch()
    } else {
        -1
    };
    // KIP-207: a new leader's high watermark may still be below what the
    // previous leader exposed; answering from it would move a client's
    // view back. Retriable: the client asks again.
    if !partition.high_watermark_settled() {
        return base.with_error_code(ResponseError::OffsetNotAvailable.code());
    }
    let offsets = partition.offsets();
    // Records at or above the high watermark are not visible to consumers.
    let visible =
        |found: Option<(i64, i64)>| found.filter(|(offset, _)| *offset < offsets.high_watermark);
    let found = match timestamp {
        LATEST_TIMESTAMP => Ok(Some((offsets.high_watermark, -1))),
        EARLIEST_TIMESTAMP => Ok(Some((offsets.log_start_offset, -1))),
        MAX_TIMESTAMP => Ok(visible(
            partition.max_timestamp().map(|(ts, offset)| (offset, ts)),
        )),
        t if t >= 0 => partition.offset_for_timestamp(t).map(visible),
        _ => return base.with_error_code(ResponseError::UnsupportedVersion.code()),
    };
    match found {
        Ok(Some((offset, ts))) => base
            .with_offset(offset)
            .with_timestamp(ts)
            .with_leader_epoch(epoch),
        Ok(_) => base.with_leader_epoch(epoch),
        Err(e) => base.with_error_code(log_error_code(&e)),
    }
}
