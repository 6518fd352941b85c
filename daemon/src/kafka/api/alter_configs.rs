//! AlterConfigs and IncrementalAlterConfigs. Topics created through the API
//! take any valid change (recorded, applied live, kept across restarts);
//! a declared topic or the broker is refused with POLICY_VIOLATION naming
//! the spec key to edit: the spec is the single source of truth for them.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::group_common::string;
use crate::broker::AdminError;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::admin_error_code;

/// One config change of IncrementalAlterConfigs.
enum Operation {
    Set(String),
    Delete,
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub fn handle(ctx: &RequestContext, request: AlterConfigsRequest) -> Result<Reply, DispatchError> {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            // AlterConfigs replaces the whole set of overrides.
            let first_key = resource.configs.first().map(|c| c.name.to_string());
            let outcome = whole_set(&resource.configs).and_then(|overrides| {
                let target = Target {
                    resource_type: resource.resource_type,
                    name: &name,
                    first_key,
                };
                alter(ctx, target, request.validate_only, |_| Ok(overrides))
            });
            let (code, message) = outcome_code(ctx, outcome);
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message.map(|m| string(&m)))
        })
        .collect();
    ctx.encode(&AlterConfigsResponse::default().with_responses(responses))
        .map(Reply::Ready)
}

pub fn handle_incremental(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> Result<Reply, DispatchError> {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let first_key = resource.configs.first().map(|c| c.name.to_string());
            let outcome = operations(&resource.configs).and_then(|ops| {
                let target = Target {
                    resource_type: resource.resource_type,
                    name: &name,
                    first_key,
                };
                alter(ctx, target, request.validate_only, |mut current| {
                    for (key, op) in ops {
                        match op {
                            Operation::Set(value) => current.insert(key, value),
                            Operation::Delete => current.remove(&key),
                        };
                    }
                    Ok(current)
                })
            });
            let (code, message) = outcome_code(ctx, outcome);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message.map(|m| string(&m)))
        })
        .collect();
    ctx.encode(&IncrementalAlterConfigsResponse::default().with_responses(responses))
        .map(Reply::Ready)
}

fn outcome_code(ctx: &RequestContext, outcome: Result<(), AdminError>) -> (i16, Option<String>) {
    match outcome {
        Ok(()) => (0, None),
        Err(error) => {
            let code = admin_error_code(&error);
            crate::kafka::errors::count_error(ctx.key, code);
            (code, Some(error.to_string()))
        }
    }
}

fn whole_set(
    configs: &[kafka_protocol::messages::alter_configs_request::AlterableConfig],
) -> Result<BTreeMap<String, String>, AdminError> {
    configs
        .iter()
        .map(|c| {
            let value = c.value.as_ref().ok_or_else(|| {
                AdminError::InvalidConfig(format!("{}: a null value is not a setting", c.name))
            })?;
            Ok((c.name.to_string(), value.to_string()))
        })
        .collect()
}

fn operations(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<(String, Operation)>, AdminError> {
    configs
        .iter()
        .map(|c| {
            let op = match (c.config_operation, &c.value) {
                (OP_SET, Some(value)) => Operation::Set(value.to_string()),
                (OP_SET, None) => {
                    return Err(AdminError::InvalidConfig(format!(
                        "{}: SET needs a value",
                        c.name
                    )));
                }
                (OP_DELETE, _) => Operation::Delete,
                // APPEND and SUBTRACT apply to list configs; ours are scalar
                // (cleanup.policy is fixed while compaction is not built).
                (other, _) => {
                    return Err(AdminError::InvalidRequest(format!(
                        "{}: operation {other} applies to list configs only; none of this topic's settings is a list",
                        c.name
                    )));
                }
            };
            Ok((c.name.to_string(), op))
        })
        .collect()
}

/// The resource a change names, and the first key it changes (for the
/// message that sends an operator to the spec).
struct Target<'a> {
    resource_type: i8,
    name: &'a str,
    first_key: Option<String>,
}

/// Checks ownership, computes the new overrides from the current ones and
/// applies them (unless `validate_only`).
fn alter(
    ctx: &RequestContext,
    target: Target<'_>,
    validate_only: bool,
    change: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AdminError>,
) -> Result<(), AdminError> {
    let broker = &ctx.broker;
    let name = target.name;
    match target.resource_type {
        RESOURCE_TOPIC => {
            if let Some(refusal) = broker.cluster_topic_change_refusal(name, "changing settings") {
                return Err(refusal);
            }
            if broker.topic(name).is_none() || name.starts_with("__") {
                return Err(AdminError::UnknownTopic(name.to_string()));
            }
            let key = target.first_key.unwrap_or_default();
            if let Some(refusal) = broker.declared_topic_refusal(name, &key) {
                return Err(refusal);
            }
            let new = change(broker.topic_overrides(name))?;
            broker.set_topic_overrides(name, new, validate_only)
        }
        RESOURCE_BROKER => Err(AdminError::PolicyViolation(format!(
            "broker settings come from the cluster spec: edit {} and reload (systemctl reload sluice)",
            broker.spec_file()
        ))),
        other => Err(AdminError::InvalidRequest(format!(
            "resource type {other} has no configs here (topics: 2, brokers: 4)"
        ))),
    }
}
