//! FindCoordinator: a single node coordinates every group; in a cluster,
//! the leader of the group's `__consumer_offsets` partition does (from the
//! cluster view). Versions 0–2: one key per request.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::group_common::string;
use crate::group::{OFFSETS_TOPIC, offsets_log};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

/// key_type 0: a consumer group. 1 (transactions) has no coordinator yet.
const KEY_TYPE_GROUP: i8 = 0;

/// A coordinator's address, or why there is none now.
type Located = Result<(i32, String, i32), String>;

pub fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> Result<Reply, DispatchError> {
    let located = locate(ctx, request.key_type, &request.key);
    let response = match located {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node))
            .with_host(string(&host))
            .with_port(port),
        Err(why) => {
            tracing::debug!(event = "coordinator_not_available", why = %why);
            FindCoordinatorResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                // The message field exists from v1 on.
                .with_error_message((ctx.version >= 1).then(|| string(&why)))
                .with_node_id(BrokerId(-1))
                .with_port(-1)
        }
    };
    ctx.encode(&response).map(Reply::Ready)
}

/// Where the group `key` is coordinated.
fn locate(ctx: &RequestContext, key_type: i8, key: &str) -> Located {
    if key_type != KEY_TYPE_GROUP {
        return Err("transactions are not built yet: there is no transaction coordinator".into());
    }
    if ctx.groups.is_none() {
        return Err("the group coordinator has not started".into());
    }
    if !ctx.broker.is_cluster_member() {
        let (host, port) = ctx.broker.advertised_endpoint();
        return Ok((ctx.broker.node_id(), host, port));
    }
    let view = ctx
        .broker
        .cluster_view()
        .ok_or("this broker has not read the cluster metadata yet")?;
    let topic = view.topics.get(OFFSETS_TOPIC).ok_or(
        "the controller has not created __consumer_offsets yet (it does once enough brokers are registered)",
    )?;
    let count = i32::try_from(topic.partitions.len()).unwrap_or(0);
    if count == 0 {
        return Err("__consumer_offsets has no partitions".into());
    }
    let index = offsets_log::partition_for(key, count);
    let leader = topic.partitions[index as usize].leader;
    view.broker(leader)
        .map(|b| (b.id, b.host.clone(), b.port))
        .ok_or_else(|| format!("__consumer_offsets-{index} has no live leader"))
}
