//! Metadata: this broker, and the topics asked for (creating unknown ones
//! on first use when the spec allows it).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::topic_name;
use crate::broker::{Broker, SINGLE_NODE_LEADER_EPOCH, Topic};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::create_topic_error_code;

/// Whether answering may create a topic (files, an fsynced registry): the
/// request names one that does not exist and auto-creation is allowed.
pub fn may_create_topics(ctx: &RequestContext, request: &MetadataRequest) -> bool {
    may_auto_create(ctx, request)
        && request.topics.iter().flatten().any(|wanted| {
            wanted
                .name
                .as_ref()
                .is_some_and(|name| ctx.broker.topic(name.as_str()).is_none())
        })
}

fn may_auto_create(ctx: &RequestContext, request: &MetadataRequest) -> bool {
    ctx.broker.spec().cluster.auto_create_topics
        && (ctx.version < 4 || request.allow_auto_topic_creation)
}

pub fn handle(ctx: &RequestContext, request: MetadataRequest) -> Result<Reply, DispatchError> {
    let broker = &ctx.broker;
    let spec = broker.spec();
    // v0 has no null list: an empty one means every topic.
    let all_topics = match &request.topics {
        None => true,
        Some(list) => list.is_empty() && ctx.version == 0,
    };
    let may_create = may_auto_create(ctx, &request);
    let topics = if all_topics {
        broker
            .topics()
            .iter()
            // Internal topics are listed only when asked for by name, as in Kafka.
            .filter(|t| &*t.name != crate::group::OFFSETS_TOPIC)
            .map(|t| describe(broker, t, ctx.version))
            .collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => lookup_or_create(broker, name.as_str(), may_create, ctx.version),
                None => lookup_by_id(broker, wanted.topic_id, ctx.version),
            })
            .collect()
    };
    let (host, port) = broker.advertised_endpoint();
    let version = ctx.version;
    let own = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(StrBytes::from_string(host))
        .with_port(port)
        .with_rack(
            broker
                .broker_spec()
                .rack
                .filter(|_| version >= 1)
                .map(StrBytes::from_string),
        );
    let mut response = MetadataResponse::default()
        .with_brokers(vec![own])
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(broker.node_id());
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(spec.cluster.name.clone()));
    }
    ctx.encode(&response).map(Reply::Ready)
}

fn lookup_or_create(
    broker: &Arc<Broker>,
    name: &str,
    may_create: bool,
    version: i16,
) -> MetadataResponseTopic {
    if let Some(topic) = broker.topic(name) {
        return describe(broker, &topic, version);
    }
    let unknown = MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(ResponseError::UnknownTopicOrPartition.code());
    if !may_create {
        return unknown;
    }
    match broker.create_topic(name, None, &[], false) {
        Ok(topic) => describe(broker, &topic, version),
        Err(e) => {
            tracing::info!(event = "auto_create_refused", topic = %name, reason = %e);
            unknown.with_error_code(create_topic_error_code(&e))
        }
    }
}

fn lookup_by_id(broker: &Arc<Broker>, id: Uuid, version: i16) -> MetadataResponseTopic {
    match broker.topics().into_iter().find(|t| t.id == id) {
        Some(topic) => describe(broker, &topic, version),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code()),
    }
}

/// Fields are set only from the version that carries them: the codec
/// refuses to encode a non-default value a version does not have.
fn describe(broker: &Broker, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let me = BrokerId(broker.node_id());
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let partition = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(me)
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me]);
            if version >= 7 {
                partition.with_leader_epoch(SINGLE_NODE_LEADER_EPOCH)
            } else {
                partition
            }
        })
        .collect();
    let mut described = MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_partitions(partitions);
    if version >= 1 {
        described.is_internal = topic.name.starts_with("__");
    }
    if version >= 10 {
        described.topic_id = topic.id;
    }
    described
}
