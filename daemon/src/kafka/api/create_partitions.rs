//! CreatePartitions: grows a topic created through the API (in a cluster,
//! through the active controller); a declared topic grows by editing
//! `topics.NAME.partitions` in the spec.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::group_common::string;
use crate::broker::AdminError;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::admin_error_code;

pub fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> Result<Reply, DispatchError> {
    let node = ctx.broker.node_id();
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let outcome = grow(
                ctx,
                &name,
                topic.count,
                topic.assignments.as_deref(),
                node,
                request.validate_only,
            );
            let result = CreatePartitionsTopicResult::default().with_name(topic.name);
            match outcome {
                Ok(()) => result,
                Err(error) => {
                    let code = admin_error_code(&error);
                    crate::kafka::errors::count_error(ctx.key, code);
                    result
                        .with_error_code(code)
                        .with_error_message(Some(string(&error.to_string())))
                }
            }
        })
        .collect();
    ctx.encode(&CreatePartitionsResponse::default().with_results(results))
        .map(Reply::Ready)
}

fn grow(
    ctx: &RequestContext,
    name: &str,
    count: i32,
    assignments: Option<
        &[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment],
    >,
    node: i32,
    validate_only: bool,
) -> Result<(), AdminError> {
    if ctx.broker.is_cluster_member() {
        return grow_in_cluster(
            ctx,
            name,
            count,
            assignments.is_some_and(|a| !a.is_empty()),
            validate_only,
        );
    }
    if ctx.broker.topic(name).is_none() || name.starts_with("__") {
        return Err(AdminError::UnknownTopic(name.to_string()));
    }
    if let Some(refusal) = ctx.broker.declared_topic_refusal(name, "partitions") {
        return Err(refusal);
    }
    // A single node can only place a new partition on itself.
    if let Some(assignments) = assignments
        && assignments
            .iter()
            .any(|a| a.broker_ids.iter().any(|id| id.0 != node) || a.broker_ids.is_empty())
    {
        return Err(AdminError::InvalidRequest(format!(
            "replica assignments may name only broker {node}, the only broker of this cluster"
        )));
    }
    ctx.broker.grow_topic(name, count, validate_only)
}

/// A member forwards the change to the controller, which places the new
/// partitions over the declared brokers.
fn grow_in_cluster(
    ctx: &RequestContext,
    name: &str,
    count: i32,
    assigned: bool,
    validate_only: bool,
) -> Result<(), AdminError> {
    if let Some(refusal) = ctx.broker.declared_topic_refusal(name, "partitions") {
        return Err(refusal);
    }
    if assigned {
        return Err(AdminError::InvalidRequest(
            "explicit replica assignments through the Kafka API are not built yet in a cluster: \
             the controller places new partitions"
                .into(),
        ));
    }
    let changes = ctx.broker.topic_changes().map_err(AdminError::Controller)?;
    changes
        .add_partitions(name, count, validate_only)
        .map_err(AdminError::Controller)
}
