//! SyncGroup: the leader's assignment, handed to every member.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::group_common::{coordinator, not_available, optional};
use crate::group::SyncRequest;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> Result<Reply, DispatchError> {
    let Some(coordinator) = coordinator(ctx) else {
        let response = SyncGroupResponse::default().with_error_code(not_available());
        return ctx.encode(&response).map(Reply::Ready);
    };
    let sync = SyncRequest {
        group_id: request.group_id.to_string(),
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: optional(&request.group_instance_id),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let pending = coordinator.sync(sync);
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        let response = match pending.resolve().await {
            Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
            Err(e) => SyncGroupResponse::default().with_error_code(group_error_code(&e)),
        };
        ctx.encode(&response)
    })))
}
