//! LeaveGroup (v0–v2: one member by id): the member goes at once and the
//! rest rebalance without waiting for its session to expire.

use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::group_common::{coordinator, not_available};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> Result<Reply, DispatchError> {
    let code = match coordinator(ctx) {
        None => not_available(),
        Some(c) => match c.leave(request.group_id.as_str(), request.member_id.as_str(), None) {
            Ok(()) => 0,
            Err(e) => group_error_code(&e),
        },
    };
    ctx.encode(&LeaveGroupResponse::default().with_error_code(code))
        .map(Reply::Ready)
}
