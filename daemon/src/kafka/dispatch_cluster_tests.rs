//! A cluster member through dispatch: answers follow the partitions it
//! hosts and leads, the leader epochs it was given, and the cluster view
//! its owner sets; topic changes through the API are refused.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use uuid::Uuid;

use super::api::topic_name;
use super::dispatch_tests::{answer, batch, check_decodes, dispatch_now_with, frame};
use super::listener::ListenerLimits;
use crate::broker::assignment_tests::assignment;
use crate::broker::{
    Broker, ClusterView, ControllerRefusal, HostedPartition, Leadership, TopicAssignment,
    TopicChanges, ViewBroker, ViewPartition, ViewTopic,
};
use crate::group::{
    CommittedOffset, GroupCoordinator, GroupError, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS,
    offsets_log,
};

fn member() -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../../etc/local-3.toml");
    let spec = crate::config::parse_spec(text, "local-3.toml").unwrap();
    let broker = Broker::open_member(spec, 1, dir.path().to_path_buf()).unwrap();
    broker.apply_assignment(&assignment(3)).unwrap();
    (dir, broker)
}

fn call<R: kafka_protocol::protocol::Decodable>(
    broker: &Arc<Broker>,
    key: ApiKey,
    version: i16,
    body: &impl kafka_protocol::protocol::Encodable,
) -> R {
    call_with(broker, None, key, version, body)
}

/// `call` with a group coordinator.
fn call_with<R: kafka_protocol::protocol::Decodable>(
    broker: &Arc<Broker>,
    groups: Option<&Arc<crate::group::GroupCoordinator>>,
    key: ApiKey,
    version: i16,
    body: &impl kafka_protocol::protocol::Encodable,
) -> R {
    let reply = dispatch_now_with(
        broker,
        groups,
        &ListenerLimits::default(),
        frame(key, version, body),
    );
    check_decodes(key, version, answer(reply.unwrap()))
}

fn produce(broker: &Arc<Broker>, index: i32) -> (i16, i64) {
    let data = PartitionProduceData::default()
        .with_index(index)
        .with_records(Some(batch()));
    let topic = TopicProduceData::default()
        .with_name(topic_name("t"))
        .with_partition_data(vec![data]);
    let body = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![topic]);
    let r: ProduceResponse = call(broker, ApiKey::Produce, 9, &body);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// (error code, record bytes) of a fetch of partition 0 from offset 0.
fn fetch(broker: &Arc<Broker>, current_leader_epoch: i32) -> (i16, Option<Bytes>) {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(current_leader_epoch)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(topic_name("t"))
        .with_partitions(vec![partition]);
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![topic]);
    let r: FetchResponse = call(broker, ApiKey::Fetch, 12, &body);
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.records.clone())
}

/// OffsetForLeaderEpoch of partition 0: (error, epoch, end offset).
fn epoch_end(
    broker: &Arc<Broker>,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> (i16, i32, i64) {
    let partition = OffsetForLeaderPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(current_leader_epoch)
        .with_leader_epoch(leader_epoch);
    let topic = OffsetForLeaderTopic::default()
        .with_topic(topic_name("t"))
        .with_partitions(vec![partition]);
    let body = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![topic]);
    let r: OffsetForLeaderEpochResponse = call(broker, ApiKey::OffsetForLeaderEpoch, 4, &body);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// The partitionLeaderEpoch field of the first batch (bytes 12..16).
fn batch_leader_epoch(records: &[u8]) -> i32 {
    i32::from_be_bytes(records[12..16].try_into().unwrap())
}

#[test]
fn produce_and_fetch_follow_hosting_leadership_and_epochs() {
    let (_dir, broker) = member();
    assert_eq!(produce(&broker, 0), (0, 0), "led here");
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    assert_eq!(produce(&broker, 1).0, not_leader, "hosted elsewhere");
    assert_eq!(produce(&broker, 2).0, not_leader, "hosted, led elsewhere");
    assert_eq!(
        produce(&broker, 3).0,
        ResponseError::UnknownTopicOrPartition.code(),
        "beyond the count"
    );

    let (code, records) = fetch(&broker, 3);
    assert_eq!(code, 0);
    let records = records.expect("the produced batch");
    assert_eq!(
        batch_leader_epoch(&records),
        3,
        "stamped with the epoch led at"
    );
    assert_eq!(fetch(&broker, -1).0, 0, "-1: no check");
    assert_eq!(fetch(&broker, 2).0, ResponseError::FencedLeaderEpoch.code());
    assert_eq!(
        fetch(&broker, 4).0,
        ResponseError::UnknownLeaderEpoch.code()
    );

    // ListOffsets tells the epoch it answers at.
    let partition = ListOffsetsPartition::default()
        .with_partition_index(0)
        .with_current_leader_epoch(3)
        .with_timestamp(-1);
    let body = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(topic_name("t"))
            .with_partitions(vec![partition]),
    ]);
    let r: ListOffsetsResponse = call(&broker, ApiKey::ListOffsets, 7, &body);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.leader_epoch), (0, 1, 3));
}

#[test]
fn after_reassignment_at_a_higher_epoch_the_old_epoch_ends_where_the_new_begins() {
    let (_dir, broker) = member();
    assert_eq!(produce(&broker, 0).0, 0);
    assert_eq!(produce(&broker, 0).0, 0);
    broker.apply_assignment(&assignment(5)).unwrap();
    let partition = broker.topic("t").unwrap().partition(0).unwrap().clone();
    let last = partition
        .lock_log()
        .leader_epoch_entries()
        .last()
        .copied()
        .unwrap();
    assert_eq!(
        (last.epoch, last.start_offset),
        (5, 2),
        "new epoch at the LEO"
    );
    assert_eq!(epoch_end(&broker, 5, 3), (0, 3, 2));
    assert_eq!(epoch_end(&broker, 5, 5), (0, 5, 2));
    assert_eq!(
        epoch_end(&broker, 3, 3).0,
        ResponseError::FencedLeaderEpoch.code(),
        "a client still at epoch 3 is fenced"
    );
    assert_eq!(produce(&broker, 0), (0, 2));
    let (code, records) = fetch(&broker, 5);
    assert_eq!(code, 0);
    // Batches of 61-byte header + one small record; the third is at epoch 5.
    let records = records.unwrap();
    let epochs: Vec<i32> = walk_batches(&records).map(batch_leader_epoch).collect();
    assert_eq!(epochs, vec![3, 3, 5]);
}

/// Each batch of a record set, by its length field (bytes 8..12).
fn walk_batches(mut records: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if records.len() < 12 {
            return None;
        }
        let length = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize + 12;
        let (batch, rest) = records.split_at(length);
        records = rest;
        Some(batch)
    })
}

fn view() -> ClusterView {
    let broker = |id: i32| ViewBroker {
        id,
        host: format!("127.0.0.{id}"),
        port: 9092,
        rack: Some(format!("rack-{id}")),
    };
    let partition = |leader: i32, epoch: i32| ViewPartition {
        leader,
        leader_epoch: epoch,
        replicas: vec![if leader < 0 { 3 } else { leader }],
        isr: vec![if leader < 0 { 3 } else { leader }],
        offline: if leader < 0 { vec![3] } else { Vec::new() },
    };
    ClusterView {
        brokers: vec![broker(1), broker(2)],
        fenced: vec![broker(3)],
        controller_id: 2,
        topics: [(
            "t".to_string(),
            ViewTopic {
                id: Uuid::from_u128(7),
                partitions: vec![partition(1, 3), partition(-1, 4), partition(2, 1)],
            },
        )]
        .into_iter()
        .collect(),
    }
}

#[test]
fn metadata_answers_from_the_cluster_view() {
    let (_dir, broker) = member();
    broker.set_cluster_view(view());
    for version in [0, 1, 5, 7, 12] {
        let r: MetadataResponse = call(
            &broker,
            ApiKey::Metadata,
            version,
            &MetadataRequest::default().with_topics(None),
        );
        let brokers: Vec<(i32, String)> = r
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string()))
            .collect();
        // The fenced broker 3 is listed after the live ones.
        assert_eq!(
            brokers,
            vec![
                (1, "127.0.0.1".to_string()),
                (2, "127.0.0.2".to_string()),
                (3, "127.0.0.3".to_string())
            ],
            "v{version}"
        );
        if version >= 1 {
            assert_eq!(r.controller_id.0, 2, "v{version}");
            assert_eq!(r.brokers[1].rack.as_deref(), Some("rack-2"));
        }
        let t = &r.topics[0];
        assert_eq!(t.name.as_ref().map(|n| n.as_str()), Some("t"));
        let leaders: Vec<(i16, i32)> = t
            .partitions
            .iter()
            .map(|p| (p.error_code, p.leader_id.0))
            .collect();
        assert_eq!(
            leaders,
            vec![
                (0, 1),
                (ResponseError::LeaderNotAvailable.code(), -1),
                (0, 2)
            ],
            "v{version}"
        );
        if version >= 7 {
            let epochs: Vec<i32> = t.partitions.iter().map(|p| p.leader_epoch).collect();
            assert_eq!(epochs, vec![3, 4, 1]);
            assert_eq!(t.partitions[1].offline_replicas, vec![BrokerId(3)]);
        }
    }
    // A topic the view does not know is unknown when the client does not
    // allow auto-creation (auto-creation: the forwarding test below).
    let wanted =
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name("nowhere")));
    let r: MetadataResponse = call(
        &broker,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default()
            .with_topics(Some(vec![wanted]))
            .with_allow_auto_topic_creation(false),
    );
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(broker.topic("nowhere").is_none());
    let r: DescribeClusterResponse = call(
        &broker,
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(r.controller_id.0, 2);
    assert_eq!(
        r.brokers.len(),
        2,
        "DescribeCluster lists the live brokers only"
    );
}

/// Records what a member forwards to the controller, and agrees.
#[derive(Default)]
struct Forwarded(std::sync::Mutex<Vec<String>>);

impl TopicChanges for Forwarded {
    fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        settings: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid, ControllerRefusal> {
        let call =
            format!("create {name} {partitions} {replication_factor} {settings:?} {validate_only}");
        self.0.lock().unwrap().push(call);
        Ok(Uuid::from_u128(77))
    }

    fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), ControllerRefusal> {
        if name == "busy" {
            return Err(ControllerRefusal::Unavailable("no answer".into()));
        }
        self.0
            .lock()
            .unwrap()
            .push(format!("grow {name} {total} {validate_only}"));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), ControllerRefusal> {
        self.0.lock().unwrap().push(format!("delete {name}"));
        Ok(())
    }
}

fn create_topics(broker: &Arc<Broker>, topic: CreatableTopic) -> (i16, String, Uuid, i32) {
    let body = CreateTopicsRequest::default().with_topics(vec![topic]);
    let r: CreateTopicsResponse = call(broker, ApiKey::CreateTopics, 7, &body);
    let t = &r.topics[0];
    let message = t.error_message.as_deref().unwrap_or_default().to_string();
    (t.error_code, message, t.topic_id, t.num_partitions)
}

fn create_partitions(broker: &Arc<Broker>, name: &str, count: i32) -> (i16, String) {
    let topic =
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(count);
    let body = CreatePartitionsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(1000);
    let r: CreatePartitionsResponse = call(broker, ApiKey::CreatePartitions, 2, &body);
    let t = &r.results[0];
    (
        t.error_code,
        t.error_message.as_deref().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_member_forwards_topic_changes_to_the_controller_and_refuses_what_it_cannot_make() {
    let (_dir, broker) = member();
    let new = |name: &str| {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(4)
            .with_replication_factor(-1)
    };
    // Before the cluster side is up: retriable.
    let (code, _, _, _) = create_topics(&broker, new("early"));
    assert_eq!(code, ResponseError::RequestTimedOut.code());

    let forwarded = Arc::new(Forwarded::default());
    broker.set_topic_changes(forwarded.clone());
    let (code, message, id, partitions) = create_topics(&broker, new("new"));
    assert_eq!(
        (code, id, partitions),
        (0, Uuid::from_u128(77), 4),
        "{message}"
    );
    assert_eq!(create_partitions(&broker, "new", 6).0, 0);
    assert_eq!(
        *forwarded.0.lock().unwrap(),
        vec!["create new 4 1 {} false", "grow new 6 false"]
    );
    // More replicas than declared brokers is refused before the controller.
    let (code, message, _, _) = create_topics(&broker, new("wide").with_replication_factor(4));
    assert_eq!(code, ResponseError::InvalidReplicationFactor.code());
    assert!(
        message.contains("this cluster has 3 broker(s)"),
        "{message}"
    );
    let (code, message, _, _) = create_topics(&broker, new("wide").with_replication_factor(3));
    assert_eq!(code, 0, "{message}");
    // A declared topic grows through the spec: the message names the key.
    let (code, message) = create_partitions(&broker, "events", 12);
    assert_eq!(code, ResponseError::PolicyViolation.code());
    assert!(
        message.contains("topics.events.partitions") && message.contains("reload"),
        "{message}"
    );
    // The controller's refusals pass through with their code.
    assert_eq!(
        create_partitions(&broker, "busy", 2).0,
        ResponseError::RequestTimedOut.code()
    );
    assert_eq!(
        forwarded.0.lock().unwrap().len(),
        3,
        "nothing else forwarded"
    );
    assert!(broker.topic("new").is_none(), "the controller's to place");

    // DeleteTopics: a declared topic goes through the spec, an internal
    // one never; the others are forwarded.
    let body = DeleteTopicsRequest::default().with_topic_names(vec![
        topic_name("events"),
        topic_name("__consumer_offsets"),
        topic_name("t"),
    ]);
    let r: DeleteTopicsResponse = call(&broker, ApiKey::DeleteTopics, 5, &body);
    let codes: Vec<i16> = r.responses.iter().map(|t| t.error_code).collect();
    let policy = ResponseError::PolicyViolation.code();
    assert_eq!(codes, vec![policy, policy, 0]);
    let message = r.responses[0].error_message.as_deref().unwrap_or_default();
    assert!(message.contains("remove [topics.events]"), "{message}");
    assert_eq!(
        forwarded.0.lock().unwrap().last().map(String::as_str),
        Some("delete t")
    );

    // Metadata for an unknown topic creates it (auto_create_topics is on
    // in local-3.toml) with the spec's defaults (3 partitions); the client
    // asks again.
    broker.set_cluster_view(view());
    let wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
        .with_name(Some(topic_name("auto")));
    let body = MetadataRequest::default()
        .with_topics(Some(vec![wanted]))
        .with_allow_auto_topic_creation(true);
    let r: MetadataResponse = call(&broker, ApiKey::Metadata, 9, &body);
    assert_eq!(
        r.topics[0].error_code,
        ResponseError::LeaderNotAvailable.code()
    );
    let calls = forwarded.0.lock().unwrap().clone();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("create auto 3 1 {} false")
    );
}

/// (node id, error code, message) FindCoordinator v2 answers for `group`.
fn find_coordinator(
    broker: &Arc<Broker>,
    groups: &Arc<GroupCoordinator>,
    group: &str,
) -> (i32, i16, String) {
    let body = FindCoordinatorRequest::default().with_key(topic_name(group).0);
    let r: FindCoordinatorResponse =
        call_with(broker, Some(groups), ApiKey::FindCoordinator, 2, &body);
    let message = r.error_message.as_deref().unwrap_or_default().to_string();
    (r.node_id.0, r.error_code, message)
}

/// The error code OffsetFetch v5 answers for `group`, and partition 0's
/// committed offset of topic `t`.
fn offset_fetch(broker: &Arc<Broker>, groups: &Arc<GroupCoordinator>, group: &str) -> (i16, i64) {
    let topic = kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
        .with_name(topic_name("t"))
        .with_partition_indexes(vec![0]);
    let body = OffsetFetchRequest::default()
        .with_group_id(topic_name(group).0.into())
        .with_topics(Some(vec![topic]));
    let r: OffsetFetchResponse = call_with(broker, Some(groups), ApiKey::OffsetFetch, 5, &body);
    let committed = r
        .topics
        .first()
        .map_or(-1, |t| t.partitions[0].committed_offset);
    (r.error_code, committed)
}

/// `__consumer_offsets` with partition `mine` hosted here as `leadership`.
fn offsets_assignment(mine: i32, leadership: Leadership) -> TopicAssignment {
    TopicAssignment {
        name: OFFSETS_TOPIC.into(),
        id: Uuid::from_u128(50),
        configs: crate::group::offsets_log::topic_settings(),
        partition_count: OFFSETS_TOPIC_PARTITIONS,
        replication_factor: 1,
        hosted: vec![HostedPartition {
            index: mine,
            leadership,
            replicas: vec![1],
            isr: vec![1],
            partition_epoch: 0,
            removing: Vec::new(),
        }],
    }
}

#[test]
fn a_member_coordinates_the_groups_of_the_offsets_partitions_it_leads() {
    let (_dir, broker) = member();
    let groups = crate::group::GroupCoordinator::start(&broker).unwrap();
    let (_, code, message) = find_coordinator(&broker, &groups, "g");
    assert_eq!(code, ResponseError::CoordinatorNotAvailable.code());
    assert!(message.contains("cluster metadata"), "{message}");
    let mut cluster = view();
    broker.set_cluster_view(cluster.clone());
    let (_, code, message) = find_coordinator(&broker, &groups, "g");
    assert_eq!(code, ResponseError::CoordinatorNotAvailable.code());
    assert!(
        message.contains("not created __consumer_offsets yet"),
        "{message}"
    );

    // Two groups on different offsets partitions: `here` is led by this
    // broker (1), `away` by broker 2.
    let index = |g: &str| offsets_log::partition_for(g, OFFSETS_TOPIC_PARTITIONS);
    let here = "group-here";
    let away = (0..)
        .map(|i| format!("group-{i}"))
        .find(|g| index(g) != index(here))
        .unwrap();
    let p_here = index(here);
    let offsets_view = |leader_here: i32| ViewTopic {
        id: Uuid::from_u128(50),
        partitions: (0..OFFSETS_TOPIC_PARTITIONS)
            .map(|p| {
                let leader = if p == p_here { leader_here } else { 2 };
                ViewPartition {
                    leader,
                    leader_epoch: 1,
                    replicas: vec![leader],
                    isr: vec![leader],
                    offline: Vec::new(),
                }
            })
            .collect(),
    };
    cluster.topics.insert(OFFSETS_TOPIC.into(), offsets_view(1));
    broker.set_cluster_view(cluster.clone());
    broker
        .apply_assignment(&offsets_assignment(p_here, Leadership::Leader { epoch: 1 }))
        .unwrap();
    groups.follow_leadership(&broker);

    assert_eq!(find_coordinator(&broker, &groups, here).0, 1);
    assert_eq!(find_coordinator(&broker, &groups, &away).0, 2);
    let body = FindCoordinatorRequest::default().with_key(topic_name(here).0);
    let r: FindCoordinatorResponse =
        call_with(&broker, Some(&groups), ApiKey::FindCoordinator, 2, &body);
    assert_eq!((r.host.as_str(), r.port), ("127.0.0.1", 9092));
    let commit = |group: &str, offset: i64| {
        let value = CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        };
        groups.commit(
            &broker,
            (group, "", None, -1),
            vec![(("t".into(), 0), value)],
        )
    };
    commit(here, 42).unwrap();
    assert_eq!(commit(&away, 7).unwrap_err(), GroupError::NotCoordinator);
    assert_eq!(offset_fetch(&broker, &groups, here), (0, 42));
    assert_eq!(
        offset_fetch(&broker, &groups, &away).0,
        ResponseError::NotCoordinator.code()
    );
    let body = HeartbeatRequest::default()
        .with_group_id(topic_name(&away).0.into())
        .with_member_id(topic_name("m").0)
        .with_generation_id(1);
    let r: HeartbeatResponse = call_with(&broker, Some(&groups), ApiKey::Heartbeat, 3, &body);
    assert_eq!(r.error_code, ResponseError::NotCoordinator.code());

    // The partition moves to broker 2: this broker forgets the group...
    broker
        .apply_assignment(&offsets_assignment(
            p_here,
            Leadership::NotLeader {
                leader: Some(2),
                epoch: 2,
            },
        ))
        .unwrap();
    groups.follow_leadership(&broker);
    assert_eq!(
        offset_fetch(&broker, &groups, here).0,
        ResponseError::NotCoordinator.code()
    );
    assert_eq!(commit(here, 43).unwrap_err(), GroupError::NotCoordinator);
    assert_eq!(groups.read(|c| c.groups().count()), 0);
    // ...and when it leads again, replays its commits from the log.
    broker
        .apply_assignment(&offsets_assignment(p_here, Leadership::Leader { epoch: 3 }))
        .unwrap();
    groups.follow_leadership(&broker);
    assert_eq!(offset_fetch(&broker, &groups, here), (0, 42));
    commit(here, 44).unwrap();
    assert_eq!(offset_fetch(&broker, &groups, here), (0, 44));
}
