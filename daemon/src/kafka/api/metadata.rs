//! Metadata: the brokers and the topics asked for. A single node describes
//! itself and its topics (creating unknown ones on first use when the spec
//! allows it); a cluster member answers from the cluster view its owner
//! keeps (every live broker, every partition's leader), and has the
//! active controller create unknown topics when the spec allows it.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::topic_name;
use crate::broker::{
    Broker, ClusterView, CreateTopicError, Leadership, Topic, TopicRequest, ViewTopic,
};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::create_topic_error_code;

/// Whether answering may create a topic (files, an fsynced registry): the
/// request names one that does not exist and auto-creation is allowed.
pub fn may_create_topics(ctx: &RequestContext, request: &MetadataRequest) -> bool {
    let view = ctx.broker.cluster_view();
    let known = |name: &str| match &view {
        Some(view) => view.topics.contains_key(name),
        None => ctx.broker.topic(name).is_some(),
    };
    may_auto_create(ctx, request)
        && request.topics.iter().flatten().any(|wanted| {
            wanted
                .name
                .as_ref()
                .is_some_and(|name| !known(name.as_str()))
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
    if let Some(view) = broker.cluster_view() {
        let create = may_auto_create(ctx, &request).then_some(&**broker);
        let response = from_view(&view, request, all_topics, create, ctx.version);
        return ctx
            .encode(&with_cluster_id(response, &spec.cluster.name, ctx.version))
            .map(Reply::Ready);
    }
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
    ctx.encode(&with_cluster_id(response, &spec.cluster.name, version))
        .map(Reply::Ready)
}

fn with_cluster_id(mut response: MetadataResponse, name: &str, version: i16) -> MetadataResponse {
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(name.to_string()));
    }
    response
}

/// A cluster member's answer: brokers, controller and partitions as the
/// view says, whether or not this broker hosts them. With `create`, an
/// unknown topic is created through the controller.
fn from_view(
    view: &ClusterView,
    request: MetadataRequest,
    all_topics: bool,
    create: Option<&Broker>,
    version: i16,
) -> MetadataResponse {
    let topics = if all_topics {
        view.topics
            .iter()
            .filter(|(name, _)| name.as_str() != crate::group::OFFSETS_TOPIC)
            .map(|(name, topic)| describe_view_topic(name, topic, version))
            .collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => match (view.topics.get(name.as_str()), create) {
                    (Some(topic), _) => describe_view_topic(name.as_str(), topic, version),
                    (None, Some(broker)) => auto_create_in_cluster(broker, name),
                    (None, None) => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                },
                None => match view.topic_by_id(wanted.topic_id) {
                    Some((name, topic)) => describe_view_topic(name, topic, version),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(wanted.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                },
            })
            .collect()
    };
    let brokers = view
        .brokers
        .iter()
        .chain(&view.fenced)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(
                    b.rack
                        .clone()
                        .filter(|_| version >= 1)
                        .map(StrBytes::from_string),
                )
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(view.controller_id);
    }
    response
}

fn describe_view_topic(name: &str, topic: &ViewTopic, version: i16) -> MetadataResponseTopic {
    let ids = |list: &[i32]| list.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let partitions = (0..)
        .zip(&topic.partitions)
        .map(|(index, p)| {
            partition_answer(
                index,
                p.leader,
                p.leader_epoch,
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline),
                version,
            )
        })
        .collect();
    topic_answer(name, topic.id, partitions, version)
}

/// One partition's answer; LEADER_NOT_AVAILABLE while none leads. Fields
/// only from the version that carries them.
fn partition_answer(
    index: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    offline: Vec<BrokerId>,
    version: i16,
) -> MetadataResponsePartition {
    let mut partition = MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_leader_id(BrokerId(leader))
        .with_replica_nodes(replicas)
        .with_isr_nodes(isr);
    if leader < 0 {
        partition.error_code = ResponseError::LeaderNotAvailable.code();
    }
    if version >= 5 {
        partition.offline_replicas = offline;
    }
    if version >= 7 {
        partition.leader_epoch = leader_epoch;
    }
    partition
}

fn topic_answer(
    name: &str,
    id: Uuid,
    partitions: Vec<MetadataResponsePartition>,
    version: i16,
) -> MetadataResponseTopic {
    let mut described = MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_partitions(partitions);
    if version >= 1 {
        described.is_internal = name.starts_with("__");
    }
    if version >= 10 {
        described.topic_id = id;
    }
    described
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

/// Has the controller create `name` with the spec's topic defaults; the
/// answer says LEADER_NOT_AVAILABLE, as Kafka's does for a topic just
/// created, and the client asks again.
fn auto_create_in_cluster(broker: &Broker, name: TopicName) -> MetadataResponseTopic {
    let answer = |code: i16| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(code)
    };
    let checked = TopicRequest::for_api(&broker.spec(), name.as_str(), None, &[]);
    let created = checked
        .map_err(|e| create_topic_error_code(&e))
        .and_then(|request| {
            let changes = broker.topic_changes().map_err(|refusal| {
                create_topic_error_code(&CreateTopicError::Controller(refusal))
            })?;
            changes
                .create(
                    name.as_str(),
                    request.partitions,
                    request.config.replication_factor,
                    Default::default(),
                    false,
                )
                .map_err(|refusal| create_topic_error_code(&CreateTopicError::Controller(refusal)))
        });
    match created {
        Ok(_) => answer(ResponseError::LeaderNotAvailable.code()),
        // Another broker created it first: it is there.
        Err(code) if code == ResponseError::TopicAlreadyExists.code() => {
            answer(ResponseError::LeaderNotAvailable.code())
        }
        Err(code) => {
            tracing::info!(event = "auto_create_refused", topic = %name.as_str(), code);
            answer(code)
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

/// A topic as this broker alone knows it: the leadership of the partitions
/// it hosts (a single node: all of them, led here), LEADER_NOT_AVAILABLE for
/// the others (a member before its owner set a cluster view).
fn describe(broker: &Broker, topic: &Topic, version: i16) -> MetadataResponseTopic {
    let me = BrokerId(broker.node_id());
    let partitions = (0..topic.partition_count())
        .map(
            |index| match topic.partition(index).map(|p| p.leadership()) {
                Some(Leadership::Leader { epoch }) => {
                    partition_answer(index, me.0, epoch, vec![me], vec![me], Vec::new(), version)
                }
                Some(Leadership::NotLeader { leader, epoch }) => partition_answer(
                    index,
                    leader.unwrap_or(-1),
                    epoch,
                    vec![me],
                    Vec::new(),
                    Vec::new(),
                    version,
                ),
                None => {
                    partition_answer(index, -1, -1, Vec::new(), Vec::new(), Vec::new(), version)
                }
            },
        )
        .collect();
    topic_answer(&topic.name, topic.id, partitions, version)
}
