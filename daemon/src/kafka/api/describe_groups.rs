//! DescribeGroups: state, protocol and members with their metadata and
//! assignments. An unknown group is reported Dead, as Kafka does.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::group_common::{coordinator, not_available, string};
use crate::group::describe::GroupDescription;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

pub fn handle(
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
) -> Result<Reply, DispatchError> {
    let coordinator = coordinator(ctx);
    let version = ctx.version;
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let base = DescribedGroup::default().with_group_id(id.clone());
            let Some(coordinator) = &coordinator else {
                return base.with_error_code(not_available());
            };
            match coordinator.read_group(id.as_str(), |c| c.describe_group(id.as_str())) {
                Ok(Some(description)) => described(base, description, version),
                Ok(None) => base.with_group_state(string("Dead")),
                Err(error) => base.with_error_code(group_error_code(&error)),
            }
        })
        .collect();
    ctx.encode(&DescribeGroupsResponse::default().with_groups(groups))
        .map(Reply::Ready)
}

/// group_instance_id exists from v4.
fn described(base: DescribedGroup, d: GroupDescription, version: i16) -> DescribedGroup {
    let members = d
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(string(&m.member_id))
                .with_group_instance_id(m.instance_id.filter(|_| version >= 4).map(|i| string(&i)))
                .with_client_id(string(&m.client_id))
                .with_client_host(string(&m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    let _ = GroupId::default();
    base.with_group_state(string(d.state))
        .with_protocol_type(string(&d.protocol_type))
        .with_protocol_data(string(&d.protocol))
        .with_members(members)
}
