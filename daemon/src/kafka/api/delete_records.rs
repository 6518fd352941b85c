//! DeleteRecords: moves partitions' log start offsets forward (up to the
//! high watermark). Records are data, not declared settings, so this works
//! on declared topics too; the internal offsets topic refuses it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::NO_EPOCH_CHECK;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::{log_error_code, partition_error_code};

pub fn handle(ctx: &RequestContext, request: DeleteRecordsRequest) -> Result<Reply, DispatchError> {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let internal = name.starts_with("__") && ctx.broker.topic(&name).is_some();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let outcome = if internal {
                        Err(ResponseError::PolicyViolation.code())
                    } else {
                        ctx.broker
                            .leader_partition(&name, p.partition_index, NO_EPOCH_CHECK)
                            .map_err(|e| partition_error_code(&e))
                            .and_then(|partition| {
                                partition
                                    .delete_records_before(p.offset)
                                    .map_err(|e| log_error_code(&e))
                            })
                    };
                    match outcome {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(code) => {
                            crate::kafka::errors::count_error(ctx.key, code);
                            result.with_error_code(code)
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ctx.encode(&DeleteRecordsResponse::default().with_topics(topics))
        .map(Reply::Ready)
}
