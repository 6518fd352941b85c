//! OffsetDelete: tombstones a group's committed offsets for the given
//! partitions, except topics a live member still subscribes to.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_common::{coordinator, not_available};
use crate::group::{GroupError, OffsetKey};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

const DELETE_SYNC_WAIT_MAX: Duration = Duration::from_secs(30);

pub fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> Result<Reply, DispatchError> {
    let Some(coordinator) = coordinator(ctx) else {
        let response = OffsetDeleteResponse::default().with_error_code(not_available());
        return ctx.encode(&response).map(Reply::Ready);
    };
    let keys: Vec<OffsetKey> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let (subscribed, wait) =
        match coordinator.delete_offsets(&ctx.broker, request.group_id.as_str(), &keys) {
            Ok(done) => done,
            Err(e) => {
                let response =
                    OffsetDeleteResponse::default().with_error_code(group_error_code(&e));
                return ctx.encode(&response).map(Reply::Ready);
            }
        };
    let subscribed_code = group_error_code(&GroupError::GroupSubscribedToTopic);
    let topics: Vec<OffsetDeleteResponseTopic> = request
        .topics
        .into_iter()
        .map(|t| {
            let code = if subscribed.iter().any(|s| s == t.name.as_str()) {
                subscribed_code
            } else {
                0
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let Some((partition, offset)) = wait else {
        return ctx
            .encode(&OffsetDeleteResponse::default().with_topics(topics))
            .map(Reply::Ready);
    };
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        let synced = partition
            .wait_for_high_watermark(offset, Instant::now() + DELETE_SYNC_WAIT_MAX)
            .await;
        let mut response = OffsetDeleteResponse::default().with_topics(topics);
        if !synced {
            response.error_code = ResponseError::RequestTimedOut.code();
        }
        ctx.encode(&response)
    })))
}
