//! Every advertised version of every group API through dispatch, against a
//! real broker with its group coordinator and timer driver running: each
//! answer decodes in its own version (the codec refuses a field the
//! version lacks), on success paths as well as error paths.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::api::topic_name;
use super::dispatch::{Reply, dispatch};
use super::listener::ListenerLimits;
use super::versions::supported_range;
use crate::broker::Broker;

pub(super) const GROUP_APIS: &[ApiKey] = &[
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
];

struct Harness {
    _dir: tempfile::TempDir,
    broker: Arc<Broker>,
    groups: Arc<crate::group::GroupCoordinator>,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(crate::config::default_spec(), 1, dir.path().into()).unwrap();
        broker.create_topic("t", Some(2), &[], false).unwrap();
        let coordinator = crate::group::GroupCoordinator::start(&broker).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(coordinator.clone().run_driver());
        Self {
            _dir: dir,
            broker,
            groups: coordinator,
            runtime,
        }
    }

    fn call<Q: Encodable, R: Decodable>(&self, key: ApiKey, version: i16, body: &Q) -> R {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let reply = self
            .runtime
            .block_on(dispatch(
                &self.broker,
                Some(&self.groups),
                &ListenerLimits::default(),
                buf.freeze(),
            ))
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
        let frame = match reply {
            Reply::Nothing => panic!("{key:?} v{version}: no answer"),
            Reply::Ready(frame) => frame,
            Reply::Pending(pending) => self.runtime.block_on(pending).unwrap(),
        };
        let mut bytes = Bytes::from(frame.to_vec().unwrap());
        let header =
            ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, 7);
        let body =
            R::decode(&mut bytes, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
        assert!(bytes.is_empty(), "{key:?} v{version}: trailing bytes");
        body
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let range = supported_range(key).unwrap();
    range.min_version..=range.max_version
}

/// Joins `group` as its only member (through MEMBER_ID_REQUIRED on v4+),
/// then syncs; returns (member id, generation).
fn join_and_sync(h: &Harness, group: &str, version: i16) -> (String, i32) {
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0")),
        ]);
    if version >= 1 {
        request.rebalance_timeout_ms = 30_000;
    }
    if version >= 5 {
        request.group_instance_id = Some(s(&format!("{group}-instance")));
    }
    let mut response: JoinGroupResponse = h.call(ApiKey::JoinGroup, version, &request);
    if response.error_code == ResponseError::MemberIdRequired.code() {
        request.member_id = response.member_id.clone();
        response = h.call(ApiKey::JoinGroup, version, &request);
    }
    assert_eq!(response.error_code, 0, "JoinGroup v{version}");
    assert_eq!(response.members.len(), 1, "the leader sees itself");
    let member = response.member_id.to_string();
    let sync_version = version.min(*versions(ApiKey::SyncGroup).end());
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(response.generation_id)
        .with_member_id(s(&member))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(Bytes::from_static(b"x")),
        ]);
    let synced: SyncGroupResponse = h.call(ApiKey::SyncGroup, sync_version, &sync);
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment.as_ref(), b"x");
    (member, response.generation_id)
}

#[test]
fn membership_apis_answer_in_every_advertised_version() {
    let h = Harness::new();
    for version in versions(ApiKey::FindCoordinator) {
        let r: FindCoordinatorResponse = h.call(
            ApiKey::FindCoordinator,
            version,
            &FindCoordinatorRequest::default().with_key(s("g")),
        );
        assert_eq!((r.error_code, r.node_id.0), (0, 1), "v{version}");
    }
    for version in versions(ApiKey::JoinGroup) {
        let group = format!("join-{version}");
        let (member, generation) = join_and_sync(&h, &group, version);
        for hb in versions(ApiKey::Heartbeat) {
            let r: HeartbeatResponse = h.call(
                ApiKey::Heartbeat,
                hb,
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member)),
            );
            assert_eq!(r.error_code, 0, "Heartbeat v{hb}");
        }
        for dg in versions(ApiKey::DescribeGroups) {
            let r: DescribeGroupsResponse = h.call(
                ApiKey::DescribeGroups,
                dg,
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&group))]),
            );
            assert_eq!(r.groups[0].group_state.as_str(), "Stable");
            assert_eq!(r.groups[0].members.len(), 1, "DescribeGroups v{dg}");
        }
        let leave_version = version.min(*versions(ApiKey::LeaveGroup).end());
        let r: LeaveGroupResponse = h.call(
            ApiKey::LeaveGroup,
            leave_version,
            &LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member)),
        );
        assert_eq!(r.error_code, 0);
    }
    for version in versions(ApiKey::ListGroups) {
        let r: ListGroupsResponse =
            h.call(ApiKey::ListGroups, version, &ListGroupsRequest::default());
        assert_eq!(r.error_code, 0);
        assert!(r.groups.len() >= 5, "v{version}");
    }
}

fn commit(group: &str, generation: i32, member: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(9)
                        .with_committed_offset(offset),
                ]),
        ])
}

#[test]
fn offset_apis_answer_in_every_advertised_version() {
    let h = Harness::new();
    for version in versions(ApiKey::OffsetCommit) {
        let group = format!("offsets-{version}");
        let r: OffsetCommitResponse =
            h.call(ApiKey::OffsetCommit, version, &commit(&group, -1, "", 42));
        let codes: Vec<i16> = r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(
            codes,
            vec![0, ResponseError::UnknownTopicOrPartition.code()],
            "v{version}"
        );
        for fetch_version in versions(ApiKey::OffsetFetch) {
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name("t"))
                        .with_partition_indexes(vec![0, 1]),
                ]));
            let r: OffsetFetchResponse = h.call(ApiKey::OffsetFetch, fetch_version, &request);
            let offsets: Vec<i64> = r.topics[0]
                .partitions
                .iter()
                .map(|p| p.committed_offset)
                .collect();
            assert_eq!(offsets, vec![42, -1], "OffsetFetch v{fetch_version}");
        }
    }
    let r: OffsetDeleteResponse = h.call(
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("offsets-2")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic_name("t"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]),
    );
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    for version in versions(ApiKey::DeleteGroups) {
        let group = format!("offsets-{}", 3 + version);
        let r: DeleteGroupsResponse = h.call(
            ApiKey::DeleteGroups,
            version,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s(&group)), GroupId(s("never-seen"))]),
        );
        let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
        assert_eq!(codes, vec![0, ResponseError::GroupIdNotFound.code()]);
    }
}

#[test]
fn the_offsets_topic_is_hidden_from_all_topics_and_refuses_produce() {
    let h = Harness::new();
    let offsets = crate::group::OFFSETS_TOPIC;
    let all: MetadataResponse = h.call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert!(
        all.topics
            .iter()
            .all(|t| t.name.as_ref().unwrap().as_str() != offsets)
    );
    let named = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(offsets))),
    ]));
    let named: MetadataResponse = h.call(ApiKey::Metadata, 12, &named);
    assert_eq!(named.topics[0].error_code, 0);
    assert!(named.topics[0].is_internal);
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(topic_name(offsets))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from_static(b"not even a batch"))),
                ]),
        ]);
    let r: ProduceResponse = h.call(ApiKey::Produce, 9, &produce);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
}
