//! ListGroups: every group this coordinator knows, filtered by state (v4+)
//! and type (v5+; all of ours are "classic").

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::group_common::{coordinator, not_available, string};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

const GROUP_TYPE_CLASSIC: &str = "classic";

pub fn handle(ctx: &RequestContext, request: ListGroupsRequest) -> Result<Reply, DispatchError> {
    let Some(coordinator) = coordinator(ctx) else {
        let response = ListGroupsResponse::default().with_error_code(not_available());
        return ctx.encode(&response).map(Reply::Ready);
    };
    let version = ctx.version;
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == GROUP_TYPE_CLASSIC) {
        return ctx.encode(&ListGroupsResponse::default()).map(Reply::Ready);
    }
    let groups = coordinator
        .read(|c| c.list_groups())
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(string(&g.group_id)))
                .with_protocol_type(string(&g.protocol_type));
            if version >= 4 {
                listed.group_state = string(g.state);
            }
            if version >= 5 {
                listed.group_type = string(GROUP_TYPE_CLASSIC);
            }
            listed
        })
        .collect();
    ctx.encode(&ListGroupsResponse::default().with_groups(groups))
        .map(Reply::Ready)
}
