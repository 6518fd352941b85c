//! JoinGroup: answered now (errors, MEMBER_ID_REQUIRED, a member already in
//! the current generation) or when the join barrier completes.

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::group_common::{client_id, coordinator, not_available, optional, string};
use crate::group::{GroupError, JoinOutcome, JoinRequest};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(ctx: &RequestContext, request: JoinGroupRequest) -> Result<Reply, DispatchError> {
    let Some(coordinator) = coordinator(ctx) else {
        return ctx.encode(&failed(not_available(), "")).map(Reply::Ready);
    };
    let join = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: optional(&request.group_instance_id),
        client_id: client_id(ctx),
        client_host: String::new(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let pending = coordinator.join(join);
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        let response = match pending.resolve().await {
            Ok(outcome) => joined(outcome, ctx.version),
            Err(GroupError::MemberIdRequired(member_id)) => failed(
                group_error_code(&GroupError::MemberIdRequired(String::new())),
                &member_id,
            ),
            Err(e) => failed(group_error_code(&e), ""),
        };
        ctx.encode(&response)
    })))
}

fn failed(code: i16, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_member_id(string(member_id))
        .with_protocol_name(Some(string("")))
}

/// Fields only from the version that has them: protocol_type v7+,
/// group_instance_id v5+.
fn joined(outcome: JoinOutcome, version: i16) -> JoinGroupResponse {
    let members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(string(&member_id))
                .with_group_instance_id(instance_id.filter(|_| version >= 5).map(|i| string(&i)))
                .with_metadata(metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_generation_id(outcome.generation)
        .with_protocol_name(Some(string(outcome.protocol_name.as_deref().unwrap_or(""))))
        .with_leader(string(&outcome.leader))
        .with_member_id(string(&outcome.member_id))
        .with_members(members);
    if version >= 7 {
        response.protocol_type = Some(string(&outcome.protocol_type));
    }
    response
}
