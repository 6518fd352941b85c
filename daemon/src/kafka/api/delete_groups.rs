//! DeleteGroups: an Empty group's offsets are tombstoned in the offsets
//! log, then the group is gone; a group with members is NON_EMPTY_GROUP.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_common::{coordinator, not_available};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

const DELETE_SYNC_WAIT_MAX: Duration = Duration::from_secs(30);

pub fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> Result<Reply, DispatchError> {
    let coordinator = coordinator(ctx);
    let mut waits = Vec::new();
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in request.groups_names {
        let code = match &coordinator {
            None => not_available(),
            Some(c) => match c.delete_group(&ctx.broker, id.as_str()) {
                Ok(wait) => {
                    waits.extend(wait.map(|w| (results.len(), w)));
                    0
                }
                Err(e) => group_error_code(&e),
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    if waits.is_empty() {
        return ctx
            .encode(&DeleteGroupsResponse::default().with_results(results))
            .map(Reply::Ready);
    }
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        let deadline = Instant::now() + DELETE_SYNC_WAIT_MAX;
        for (at, (partition, offset)) in waits {
            if !partition.wait_for_high_watermark(offset, deadline).await {
                results[at].error_code = ResponseError::RequestTimedOut.code();
            }
        }
        ctx.encode(&DeleteGroupsResponse::default().with_results(results))
    })))
}
