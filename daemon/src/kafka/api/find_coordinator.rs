//! FindCoordinator: this broker coordinates every group (single node; in a
//! cluster, the leader of the group's offsets partition will: until then a
//! cluster member answers COORDINATOR_NOT_AVAILABLE, saying why).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::group_common::string;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

/// key_type 0: a consumer group. 1 (transactions) has no coordinator yet.
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> Result<Reply, DispatchError> {
    let (host, port) = ctx.broker.advertised_endpoint();
    let available = ctx.broker.group_coordinator().is_some();
    let error = if request.key_type != KEY_TYPE_GROUP || !available {
        ResponseError::CoordinatorNotAvailable.code()
    } else {
        0
    };
    // The message field exists from v1 on.
    let message = (ctx.broker.is_cluster_member() && ctx.version >= 1).then(|| {
        string(
            "consumer groups are not built yet in a cluster: the group coordinator runs on a single node only",
        )
    });
    let (node, host, port) = if error == 0 {
        (BrokerId(ctx.broker.node_id()), string(&host), port)
    } else {
        (BrokerId(-1), StrBytes::default(), -1)
    };
    let mut response = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        response.coordinators = vec![
            Coordinator::default()
                .with_key(request.key)
                .with_node_id(node)
                .with_host(host)
                .with_port(port)
                .with_error_code(error)
                .with_error_message(message),
        ];
    } else {
        response = response
            .with_error_code(error)
            .with_error_message(message)
            .with_node_id(node)
            .with_host(host)
            .with_port(port);
    }
    ctx.encode(&response).map(Reply::Ready)
}
