//! CreateTopics: admin clients (and apps like Kafka Streams) creating their
//! own topics, when the cluster spec allows it; in a cluster the active
//! controller creates them.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{CreateTopicError, TopicRequest};
use crate::config::TopicConfig;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::create_topic_error_code;

/// Config source value DescribeConfigs uses for a topic-level override.
const CONFIG_SOURCE_TOPIC: i8 = 1;

pub fn handle(ctx: &RequestContext, request: CreateTopicsRequest) -> Result<Reply, DispatchError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &request.topics {
        *seen.entry(t.name.as_str().to_string()).or_default() += 1;
    }
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.clone();
            let result = CreatableTopicResult::default().with_name(name.clone());
            let result = if seen.get(name.as_str()).copied().unwrap_or(0) > 1 {
                failed(
                    result,
                    ResponseError::InvalidRequest.code(),
                    "topic named twice in one request".into(),
                )
            } else {
                create_one(ctx, topic, request.validate_only, result)
            };
            for_version(result, ctx.version)
        })
        .collect();
    ctx.encode(&CreateTopicsResponse::default().with_topics(results))
        .map(Reply::Ready)
}

/// Clears what `version` cannot carry: partition count, replication factor
/// and configs exist from v5.
fn for_version(mut result: CreatableTopicResult, version: i16) -> CreatableTopicResult {
    if version < 5 {
        result.num_partitions = -1;
        result.replication_factor = -1;
        result.configs = None;
    }
    result
}

fn failed(result: CreatableTopicResult, code: i16, message: String) -> CreatableTopicResult {
    result
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn create_one(
    ctx: &RequestContext,
    topic: CreatableTopic,
    validate_only: bool,
    result: CreatableTopicResult,
) -> CreatableTopicResult {
    let broker = &ctx.broker;
    let spec = broker.spec();
    if !spec.cluster.allow_api_topic_creation {
        let e = CreateTopicError::CreationDisabled;
        return failed(result, create_topic_error_code(&e), e.to_string());
    }
    if broker.is_cluster_member() && !topic.assignments.is_empty() {
        return failed(
            result,
            ResponseError::InvalidRequest.code(),
            "explicit replica assignments through the Kafka API are not built yet in a cluster: \
             the controller places the partitions (or declare them in the spec)"
                .into(),
        );
    }
    let partitions = match partitions_wanted(&topic, broker.node_id()) {
        Ok(p) => p,
        Err((code, message)) => return failed(result, code, message),
    };
    if broker.is_cluster_member() {
        return create_in_cluster(ctx, topic, partitions, validate_only, result);
    }
    let brokers = spec.brokers.len();
    if topic.replication_factor == 0
        || topic.replication_factor < -1
        || topic.replication_factor as i64 > brokers as i64
    {
        let e = CreateTopicError::InvalidReplicationFactor(topic.replication_factor, brokers);
        return failed(result, create_topic_error_code(&e), e.to_string());
    }
    let overrides = overrides(&topic);
    match broker.create_topic(topic.name.as_str(), partitions, &overrides, validate_only) {
        Ok(created) => succeeded(ctx, result, &created.config, created.id),
        Err(e) => {
            tracing::info!(event = "create_topic_refused", topic = %topic.name.as_str(), reason = %e);
            failed(result, create_topic_error_code(&e), e.to_string())
        }
    }
}

/// A member checks the request as a single node would, then has the
/// active controller create the topic (placed over the declared brokers,
/// not declared itself).
fn create_in_cluster(
    ctx: &RequestContext,
    topic: CreatableTopic,
    partitions: Option<i32>,
    validate_only: bool,
    result: CreatableTopicResult,
) -> CreatableTopicResult {
    let name = topic.name.to_string();
    let overrides = overrides(&topic);
    let checked = TopicRequest::for_api(&ctx.broker.spec(), &name, partitions, &overrides);
    let request = match checked {
        Ok(request) => request,
        Err(e) => return failed(result, create_topic_error_code(&e), e.to_string()),
    };
    let replication_factor = match topic.replication_factor {
        -1 => request.config.replication_factor,
        given => given,
    };
    let brokers = ctx.broker.spec().brokers.len();
    if replication_factor < 1 || replication_factor as usize > brokers {
        let e = CreateTopicError::InvalidReplicationFactor(replication_factor, brokers);
        return failed(result, create_topic_error_code(&e), e.to_string());
    }
    let created = ctx.broker.topic_changes().and_then(|changes| {
        changes.create(
            &name,
            request.partitions,
            replication_factor,
            overrides.into_iter().collect(),
            validate_only,
        )
    });
    match created {
        Ok(id) => succeeded(ctx, result, &request.config, id),
        Err(refusal) => {
            tracing::info!(event = "create_topic_refused", topic = %name, reason = %refusal);
            let e = CreateTopicError::Controller(refusal);
            failed(result, create_topic_error_code(&e), e.to_string())
        }
    }
}

fn overrides(topic: &CreatableTopic) -> Vec<(String, String)> {
    topic
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.to_string(), v.to_string()))
        })
        .collect()
}

/// The answer for a created topic: v5+ carries its settings, v7+ its id.
fn succeeded(
    ctx: &RequestContext,
    mut result: CreatableTopicResult,
    config: &TopicConfig,
    id: uuid::Uuid,
) -> CreatableTopicResult {
    if ctx.version >= 5 {
        let configs = config
            .to_kafka_configs()
            .into_iter()
            .map(|(name, value)| {
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_config_source(CONFIG_SOURCE_TOPIC)
            })
            .collect();
        result.num_partitions = config.partitions;
        result.replication_factor = config.replication_factor;
        result.configs = Some(configs);
    }
    if ctx.version >= 7 {
        result.topic_id = id;
    }
    result
}

/// Partition count from `num_partitions` or an explicit assignment, which
/// on one broker may only name this broker.
fn partitions_wanted(topic: &CreatableTopic, node_id: i32) -> Result<Option<i32>, (i16, String)> {
    if topic.assignments.is_empty() {
        return Ok((topic.num_partitions != -1).then_some(topic.num_partitions));
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest.code(),
            "give either an assignment or num_partitions/replication_factor, not both".into(),
        ));
    }
    for assignment in &topic.assignments {
        if assignment.broker_ids.len() != 1 || assignment.broker_ids[0].0 != node_id {
            return Err((
                ResponseError::InvalidReplicaAssignment.code(),
                format!(
                    "partition {} must be assigned to broker {node_id} only",
                    assignment.partition_index
                ),
            ));
        }
    }
    Ok(Some(topic.assignments.len() as i32))
}
