//! DeleteTopics: deletes topics created through the API (by name, or by
//! id from v6; in a cluster, through the active controller, and each
//! broker then removes the topic's data). A declared topic is deleted by removing it from the spec
//! (with `allow_delete = true`); internal topics are never deleted.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::group_common::string;
use super::topic_name;
use crate::broker::AdminError;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::admin_error_code;

pub fn handle(ctx: &RequestContext, request: DeleteTopicsRequest) -> Result<Reply, DispatchError> {
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or id.
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|name| (Some(name.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let name = name.or_else(|| topic_by_id(ctx, id));
            let mut result = DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(id);
            let outcome = match &name {
                None => Err(ResponseError::UnknownTopicId.code()),
                Some(name) => delete(ctx, name).map_err(|error| {
                    result.error_message = Some(string(&error.to_string()));
                    admin_error_code(&error)
                }),
            };
            if let Err(code) = outcome {
                crate::kafka::errors::count_error(ctx.key, code);
                result.error_code = code;
            }
            if ctx.version < 5 {
                result.error_message = None;
            }
            if ctx.version < 6 {
                result.topic_id = uuid::Uuid::nil();
            }
            result
        })
        .collect();
    ctx.encode(&DeleteTopicsResponse::default().with_responses(responses))
        .map(Reply::Ready)
}

/// A topic's name by id: a member looks in the cluster view (it may not
/// host the topic).
fn topic_by_id(ctx: &RequestContext, id: uuid::Uuid) -> Option<String> {
    match ctx.broker.cluster_view() {
        Some(view) => view.topic_by_id(id).map(|(name, _)| name.to_string()),
        None => ctx.broker.topic_by_id(id).map(|t| t.name.to_string()),
    }
}

fn delete(ctx: &RequestContext, name: &str) -> Result<(), AdminError> {
    if ctx.broker.is_cluster_member() {
        if name.starts_with("__") {
            return Err(AdminError::PolicyViolation(format!(
                "{name} is an internal topic and cannot be deleted"
            )));
        }
        if let Some(refusal) = ctx.broker.declared_topic_refusal(name, "delete") {
            return Err(refusal);
        }
        let changes = ctx.broker.topic_changes().map_err(AdminError::Controller)?;
        return changes.delete(name).map_err(AdminError::Controller);
    }
    if name.starts_with("__") && ctx.broker.topic(name).is_some() {
        return Err(AdminError::PolicyViolation(format!(
            "{name} is an internal topic and cannot be deleted"
        )));
    }
    if let Some(refusal) = ctx.broker.declared_topic_refusal(name, "delete") {
        return Err(refusal);
    }
    ctx.broker.delete_api_topic(name)
}
