//! DescribeConfigs: a topic's settings (value, source, synonyms, type,
//! read-only) or the broker's, under Kafka's names (`config::config_view`).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::group_common::string;
use crate::broker::TopicOrigin;
use crate::config::{ConfigEntry, TopicSettingsSource, describe_broker, describe_topic};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

/// Kafka's resource types.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

pub fn handle(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> Result<Reply, DispatchError> {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            let entries = match entries(ctx, resource.resource_type, &name) {
                Ok(entries) => entries,
                Err((error, message)) => {
                    crate::kafka::errors::count_error(ctx.key, error.code());
                    return result
                        .with_error_code(error.code())
                        .with_error_message(Some(string(&message)));
                }
            };
            let wanted = resource.configuration_keys;
            let configs = entries
                .into_iter()
                .filter(|e| {
                    wanted
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.name))
                })
                .map(|e| {
                    entry(
                        e,
                        request.include_synonyms,
                        request.include_documentation,
                        ctx.version,
                    )
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    ctx.encode(&DescribeConfigsResponse::default().with_results(results))
        .map(Reply::Ready)
}

fn entries(
    ctx: &RequestContext,
    resource_type: i8,
    name: &str,
) -> Result<Vec<ConfigEntry>, (ResponseError, String)> {
    let broker = &ctx.broker;
    match resource_type {
        RESOURCE_TOPIC => {
            let topic = broker
                .topic(name)
                .filter(|t| !t.name.starts_with("__") || name == crate::group::OFFSETS_TOPIC)
                .ok_or((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                ))?;
            let overrides = broker.topic_overrides(name);
            let given = match topic.origin {
                TopicOrigin::Spec => TopicSettingsSource::Declared,
                TopicOrigin::Api => TopicSettingsSource::Api(&overrides),
            };
            Ok(describe_topic(&broker.spec(), name, &topic.config, given))
        }
        RESOURCE_BROKER => {
            // An empty name is the cluster-wide default; ours are the same.
            if !name.is_empty() && name != broker.node_id().to_string() {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("broker {name} is not this broker ({})", broker.node_id()),
                ));
            }
            Ok(describe_broker(&broker.spec(), broker.node_id()))
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} has no configs here (topics: 2, brokers: 4)"),
        )),
    }
}

fn entry(
    e: ConfigEntry,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        e.synonyms
            .iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_static_str(s.name))
                    .with_value(Some(string(&s.value)))
                    .with_source(s.source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(e.name))
        .with_value(Some(string(&e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source as i8)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if version >= 3 {
        result = result
            .with_config_type(e.config_type as i8)
            .with_documentation(
                include_documentation.then(|| StrBytes::from_static_str(e.documentation)),
            );
    }
    result
}
