//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells
//! it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_common::{coordinator, not_available, optional};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> Result<Reply, DispatchError> {
    let code = match coordinator(ctx) {
        None => not_available(),
        Some(c) => match c.heartbeat(
            request.group_id.as_str(),
            request.member_id.as_str(),
            optional(&request.group_instance_id).as_deref(),
            request.generation_id,
        ) {
            Ok(()) => 0,
            Err(e) => group_error_code(&e),
        },
    };
    ctx.encode(&HeartbeatResponse::default().with_error_code(code))
        .map(Reply::Ready)
}
