//! DescribeCluster: the brokers (a single node: this one; a cluster member:
//! the live ones of its cluster view), the controller and the
//! operations clients may perform on the cluster: all of them, as Kafka
//! answers when no authorizer is configured.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::group_common::string;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

/// Kafka's AclOperation codes a cluster resource supports: CREATE (4),
/// ALTER (7), DESCRIBE (8), CLUSTER_ACTION (9), DESCRIBE_CONFIGS (10),
/// ALTER_CONFIGS (11), IDEMPOTENT_WRITE (12), as a bit set.
pub(crate) const CLUSTER_OPERATIONS: i32 =
    (1 << 4) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// What Kafka answers when authorized operations were not asked for.
pub(crate) const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;
/// DescribeCluster v1's endpoint types: 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(
    ctx: &RequestContext,
    request: DescribeClusterRequest,
) -> Result<Reply, DispatchError> {
    let broker = &ctx.broker;
    let spec = broker.spec();
    let (host, port) = broker.advertised_endpoint();
    let rack = broker.broker_spec().rack;
    let view = broker.cluster_view();
    let controller_id = view.as_ref().map_or(broker.node_id(), |v| v.controller_id);
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(string(&spec.cluster.name))
        .with_controller_id(BrokerId(controller_id))
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_NOT_REQUESTED
        });
    if ctx.version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        // There are no separate controller endpoints to list.
        response.error_code = kafka_protocol::ResponseError::UnsupportedEndpointType.code();
        response.error_message = Some(string("only broker endpoints (type 1) exist"));
        return ctx.encode(&response).map(Reply::Ready);
    }
    response.brokers = match &view {
        Some(view) => view
            .brokers
            .iter()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(string(&b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.as_deref().map(string))
            })
            .collect(),
        None => vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.node_id()))
                .with_host(string(&host))
                .with_port(port)
                .with_rack(rack.map(|r| string(&r))),
        ],
    };
    ctx.encode(&response).map(Reply::Ready)
}
