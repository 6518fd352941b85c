//! Every advertised version of every API, through dispatch against a real
//! broker on a scratch directory: each request gets a well-formed answer of
//! its own version (the codec refuses fields a version does not have, so
//! this catches a handler setting one).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

use super::api::topic_name;
use super::dispatch::{DispatchError, Reply};
use super::listener::ListenerLimits;
use super::versions::SUPPORTED_APIS;
use crate::broker::Broker;

fn scratch_broker() -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::config::default_spec();
    let broker = Broker::open(spec, 1, dir.path().to_path_buf()).unwrap();
    broker.create_topic("t", Some(2), &[], false).unwrap();
    (dir, broker)
}

pub(super) fn batch() -> Bytes {
    let record = crate::log::producer_record(
        0,
        1_700_000_000_000,
        Some(Bytes::from_static(b"k")),
        Some(Bytes::from_static(b"v")),
    );
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
    buf.freeze()
}

pub(super) fn frame<R: Encodable>(key: ApiKey, version: i16, body: &R) -> Bytes {
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
    buf.freeze()
}

fn request(key: ApiKey, version: i16) -> Bytes {
    let t = || topic_name("t");
    match key {
        ApiKey::ApiVersions => frame(key, version, &ApiVersionsRequest::default()),
        ApiKey::Metadata => {
            let topics = vec![
                MetadataRequestTopic::default().with_name(Some(t())),
                MetadataRequestTopic::default().with_name(Some(topic_name("auto-created"))),
            ];
            frame(
                key,
                version,
                &MetadataRequest::default().with_topics(Some(topics)),
            )
        }
        ApiKey::Produce => {
            let data = PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch()));
            let topic = TopicProduceData::default()
                .with_name(t())
                .with_partition_data(vec![data]);
            frame(
                key,
                version,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![topic]),
            )
        }
        ApiKey::Fetch => {
            let partition = FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20);
            let topic = FetchTopic::default()
                .with_topic(t())
                .with_partitions(vec![partition]);
            frame(
                key,
                version,
                &FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![topic]),
            )
        }
        ApiKey::ListOffsets => {
            let partitions = [-1i64, -2, 0]
                .map(|ts| {
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts)
                })
                .to_vec();
            let topic = ListOffsetsTopic::default()
                .with_name(t())
                .with_partitions(partitions);
            frame(
                key,
                version,
                &ListOffsetsRequest::default().with_topics(vec![topic]),
            )
        }
        ApiKey::CreateTopics => {
            let topic = CreatableTopic::default()
                .with_name(topic_name(&format!("new-{version}")))
                .with_num_partitions(3)
                .with_replication_factor(1);
            frame(
                key,
                version,
                &CreateTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(1000),
            )
        }
        ApiKey::InitProducerId => frame(
            key,
            version,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        ),
        ApiKey::DescribeConfigs => {
            let resource = describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configuration_keys(None);
            frame(
                key,
                version,
                &DescribeConfigsRequest::default()
                    .with_resources(vec![resource])
                    .with_include_synonyms(true),
            )
        }
        ApiKey::AlterConfigs => {
            let config = alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(Some(StrBytes::from_string(format!(
                    "{}",
                    3_600_000 + i32::from(version)
                ))));
            let resource = alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![config]);
            frame(
                key,
                version,
                &AlterConfigsRequest::default().with_resources(vec![resource]),
            )
        }
        ApiKey::IncrementalAlterConfigs => {
            let config = incremental_alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("3600000")));
            let resource = incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![config]);
            frame(
                key,
                version,
                &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
            )
        }
        ApiKey::CreatePartitions => {
            let topic = create_partitions_request::CreatePartitionsTopic::default()
                .with_name(t())
                .with_count(3 + i32::from(version))
                .with_assignments(None);
            frame(
                key,
                version,
                &CreatePartitionsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(1000),
            )
        }
        ApiKey::DeleteTopics => {
            let request = if version >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(topic_name("missing"))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![topic_name("missing")])
            };
            frame(key, version, &request.with_timeout_ms(1000))
        }
        ApiKey::DeleteRecords => {
            let partition = delete_records_request::DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(1);
            let topic = delete_records_request::DeleteRecordsTopic::default()
                .with_name(t())
                .with_partitions(vec![partition]);
            frame(
                key,
                version,
                &DeleteRecordsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(1000),
            )
        }
        ApiKey::DescribeCluster => frame(
            key,
            version,
            &DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(true)
                .with_endpoint_type(1),
        ),
        ApiKey::OffsetForLeaderEpoch => {
            let partition = offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_leader_epoch(0);
            let topic = offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(t())
                .with_partitions(vec![partition]);
            frame(
                key,
                version,
                &OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![topic]),
            )
        }
        other => panic!("no sample request for {other:?}"),
    }
}

/// Runs `dispatch` to its reply on a runtime of its own, as a connection
/// would await it.
pub(super) fn dispatch_now(
    broker: &Arc<Broker>,
    limits: &ListenerLimits,
    frame: Bytes,
) -> Result<Reply, DispatchError> {
    dispatch_now_with(broker, None, limits, frame)
}

/// `dispatch_now` with a group coordinator.
pub(super) fn dispatch_now_with(
    broker: &Arc<Broker>,
    groups: Option<&Arc<crate::group::GroupCoordinator>>,
    limits: &ListenerLimits,
    frame: Bytes,
) -> Result<Reply, DispatchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(super::dispatch::dispatch(broker, groups, limits, frame))
}

pub(super) fn answer(reply: Reply) -> Vec<u8> {
    let frame = match reply {
        Reply::Nothing => panic!("every sample expects an answer"),
        Reply::Ready(frame) => frame,
        Reply::Pending(pending) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(pending).unwrap()
        }
    };
    frame.to_vec().unwrap()
}

pub(super) fn check_decodes<R: Decodable>(key: ApiKey, version: i16, bytes: Vec<u8>) -> R {
    let mut bytes = Bytes::from(bytes);
    let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let body = R::decode(&mut bytes, version).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    assert!(bytes.is_empty(), "{key:?} v{version}: trailing bytes");
    body
}

#[test]
fn every_advertised_version_answers_in_its_own_format() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let mut producer_ids = std::collections::BTreeSet::new();
    for api in SUPPORTED_APIS {
        // The group APIs have their own walk in dispatch_group_tests.rs.
        if super::dispatch_group_tests::GROUP_APIS.contains(&api.key) {
            continue;
        }
        for version in api.min_version..=api.max_version {
            let reply = dispatch_now(&broker, &limits, request(api.key, version))
                .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", api.key));
            let bytes = answer(reply);
            match api.key {
                ApiKey::ApiVersions => {
                    let r: ApiVersionsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.error_code, 0);
                    assert_eq!(r.api_keys.len(), SUPPORTED_APIS.len());
                }
                ApiKey::Metadata => {
                    let r: MetadataResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.topics.len(), 2);
                    assert!(
                        r.topics
                            .iter()
                            .all(|t| t.error_code == 0 && !t.partitions.is_empty())
                    );
                }
                ApiKey::Produce => {
                    let r: ProduceResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
                }
                ApiKey::Fetch => {
                    let r: FetchResponse = check_decodes(api.key, version, bytes);
                    let p = &r.responses[0].partitions[0];
                    assert_eq!(p.error_code, 0);
                    assert!(
                        p.records.as_ref().is_some_and(|r| !r.is_empty()),
                        "v{version} returned no records"
                    );
                }
                ApiKey::ListOffsets => {
                    let r: ListOffsetsResponse = check_decodes(api.key, version, bytes);
                    let offsets: Vec<i64> =
                        r.topics[0].partitions.iter().map(|p| p.offset).collect();
                    assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
                    assert_eq!(offsets[1], 0, "earliest");
                    assert!(offsets[0] > 0, "latest is past what was produced");
                }
                ApiKey::CreateTopics => {
                    let r: CreateTopicsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
                }
                ApiKey::InitProducerId => {
                    let r: InitProducerIdResponse = check_decodes(api.key, version, bytes);
                    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
                    assert!(
                        producer_ids.insert(r.producer_id.0),
                        "a producer id repeated"
                    );
                }
                ApiKey::DescribeConfigs => {
                    let r: DescribeConfigsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.results[0].error_code, 0);
                    let retention = r.results[0]
                        .configs
                        .iter()
                        .find(|c| c.name.as_str() == "retention.ms")
                        .unwrap();
                    assert!(!retention.read_only && !retention.synonyms.is_empty());
                }
                ApiKey::AlterConfigs => {
                    let r: AlterConfigsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(
                        r.responses[0].error_code, 0,
                        "{:?}",
                        r.responses[0].error_message
                    );
                    let overrides = broker.topic_overrides("t");
                    assert_eq!(
                        overrides["retention.ms"],
                        (3_600_000 + i32::from(version)).to_string()
                    );
                }
                ApiKey::IncrementalAlterConfigs => {
                    let r: IncrementalAlterConfigsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(
                        r.responses[0].error_code, 0,
                        "{:?}",
                        r.responses[0].error_message
                    );
                    assert_eq!(broker.topic("t").unwrap().config.segment_ms, 3_600_000);
                }
                ApiKey::CreatePartitions => {
                    let r: CreatePartitionsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(
                        r.results[0].error_code, 0,
                        "{:?}",
                        r.results[0].error_message
                    );
                    assert_eq!(
                        broker.topic("t").unwrap().partition_count() as usize,
                        3 + version as usize
                    );
                }
                ApiKey::DeleteTopics => {
                    let r: DeleteTopicsResponse = check_decodes(api.key, version, bytes);
                    assert_eq!(r.responses[0].error_code, 3, "unknown topic");
                }
                ApiKey::DeleteRecords => {
                    let r: DeleteRecordsResponse = check_decodes(api.key, version, bytes);
                    let p = &r.topics[0].partitions[0];
                    assert_eq!((p.error_code, p.low_watermark), (0, 1));
                }
                ApiKey::DescribeCluster => {
                    let r: DescribeClusterResponse = check_decodes(api.key, version, bytes);
                    assert_eq!((r.error_code, r.brokers.len()), (0, 1));
                    assert_eq!(r.controller_id.0, 1);
                    assert!(r.cluster_authorized_operations > 0);
                }
                ApiKey::OffsetForLeaderEpoch => {
                    let r: OffsetForLeaderEpochResponse = check_decodes(api.key, version, bytes);
                    let p = &r.topics[0].partitions[0];
                    assert_eq!((p.error_code, p.leader_epoch), (0, 0));
                    assert!(p.end_offset > 0, "produced records end epoch 0");
                }
                other => panic!("unchecked api {other:?}"),
            }
        }
    }
}

/// Settings this build cannot honour are refused, never stored to do nothing:
/// replicas beyond this one broker, and a codec the broker would have to
/// recompress to.
#[test]
fn create_topics_refuses_replication_and_recompression() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let config = |name: &'static str, value: &'static str| {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_static_str(value)))
    };
    let topic = |name: &str, replication_factor: i16, configs: Vec<CreatableTopicConfig>| {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(1)
            .with_replication_factor(replication_factor)
            .with_configs(configs)
    };
    let topics = vec![
        topic("replicated", 2, vec![]),
        topic("min-isr", -1, vec![config("min.insync.replicas", "2")]),
        topic("zstd", -1, vec![config("compression.type", "zstd")]),
        topic(
            "as-produced",
            1,
            vec![config("compression.type", "producer")],
        ),
    ];
    let body = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(1000);
    let reply = dispatch_now(&broker, &limits, frame(ApiKey::CreateTopics, 7, &body)).unwrap();
    let r: CreateTopicsResponse = check_decodes(ApiKey::CreateTopics, 7, answer(reply));
    let outcome: Vec<(i16, String)> = r
        .topics
        .iter()
        .map(|t| {
            let message = t.error_message.as_ref().map(|m| m.to_string());
            (t.error_code, message.unwrap_or_default())
        })
        .collect();
    use kafka_protocol::ResponseError::{InvalidConfig, InvalidReplicationFactor};
    assert_eq!(outcome[0].0, InvalidReplicationFactor.code(), "{outcome:?}");
    assert_eq!(outcome[1].0, InvalidConfig.code(), "{outcome:?}");
    assert_eq!(outcome[2].0, InvalidConfig.code(), "{outcome:?}");
    assert!(
        outcome[2]
            .1
            .contains("compression.type: \"zstd\": recompression is not built yet"),
        "{outcome:?}"
    );
    assert_eq!(outcome[3], (0, String::new()));
    for refused in ["replicated", "min-isr", "zstd"] {
        assert!(broker.topic(refused).is_none(), "{refused} was created");
    }
    assert!(broker.topic("as-produced").is_some());
}

#[test]
fn malformed_and_unknown_requests_close_the_connection() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(dispatch_now(&broker, &limits, unknown).is_err());
    let mut truncated = request(ApiKey::Produce, 9).to_vec();
    truncated.truncate(truncated.len() - 10);
    assert!(dispatch_now(&broker, &limits, Bytes::from(truncated)).is_err());
    // Trailing bytes are tolerated (librdkafka sends some with Metadata v12).
    let mut trailing = request(ApiKey::Metadata, 12).to_vec();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert!(dispatch_now(&broker, &limits, Bytes::from(trailing)).is_ok());
    // A future ApiVersions gets our table with UNSUPPORTED_VERSION, in v0.
    let future_api_versions = frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let mut raised = future_api_versions.to_vec();
    raised[2..4].copy_from_slice(&99i16.to_be_bytes());
    let bytes = answer(dispatch_now(&broker, &limits, Bytes::from(raised)).unwrap());
    let r: ApiVersionsResponse = check_decodes(ApiKey::ApiVersions, 0, bytes);
    assert_eq!(
        r.error_code,
        kafka_protocol::ResponseError::UnsupportedVersion.code()
    );
}

#[test]
fn produce_of_an_old_format_or_corrupt_batch_is_refused_and_appends_nothing() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let produce_with = |records: Bytes| {
        let data = PartitionProduceData::default()
            .with_index(1)
            .with_records(Some(records));
        let topic = TopicProduceData::default()
            .with_name(topic_name("t"))
            .with_partition_data(vec![data]);
        let body = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![topic]);
        let bytes =
            answer(dispatch_now(&broker, &limits, frame(ApiKey::Produce, 9, &body)).unwrap());
        let r: ProduceResponse = check_decodes(ApiKey::Produce, 9, bytes);
        r.responses[0].partition_responses[0].error_code
    };
    let mut old_magic = batch().to_vec();
    old_magic[16] = 1;
    assert_eq!(
        produce_with(Bytes::from(old_magic)),
        kafka_protocol::ResponseError::UnsupportedForMessageFormat.code()
    );
    let mut bad_crc = batch().to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce_with(Bytes::from(bad_crc)),
        kafka_protocol::ResponseError::CorruptMessage.code()
    );
    let partition = broker.topic("t").unwrap().partition(1).unwrap().clone();
    assert_eq!(partition.offsets().log_end_offset, 0, "nothing appended");
    assert_eq!(produce_with(batch()), 0);
    assert_eq!(partition.offsets().log_end_offset, 1);
}

fn fetch_frame(max_wait_ms: i32, min_bytes: i32) -> Bytes {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(topic_name("t"))
        .with_partitions(vec![partition]);
    let body = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_topics(vec![topic]);
    frame(ApiKey::Fetch, 12, &body)
}

#[test]
fn a_waiting_fetch_is_answered_when_data_arrives_and_at_max_wait_otherwise() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Nothing to read: the answer comes at max_wait, empty.
    let Reply::Pending(empty) = dispatch_now(&broker, &limits, fetch_frame(300, 1)).unwrap() else {
        panic!("an empty partition with min_bytes 1 must wait");
    };
    let started = std::time::Instant::now();
    let bytes = runtime.block_on(empty).unwrap().to_vec().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(290));
    let r: FetchResponse = check_decodes(ApiKey::Fetch, 12, bytes);
    assert!(
        r.responses[0].partitions[0]
            .records
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );

    // A produce releases a fetch waiting up to 60 s.
    let Reply::Pending(waiting) = dispatch_now(&broker, &limits, fetch_frame(60_000, 1)).unwrap()
    else {
        panic!("must wait");
    };
    let waiting = runtime.spawn(waiting);
    let produced = answer(dispatch_now(&broker, &limits, request(ApiKey::Produce, 9)).unwrap());
    let _: ProduceResponse = check_decodes(ApiKey::Produce, 9, produced);
    let bytes = runtime
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await })
        .expect("the produce must release the fetch long before max_wait")
        .unwrap()
        .unwrap()
        .to_vec()
        .unwrap();
    let r: FetchResponse = check_decodes(ApiKey::Fetch, 12, bytes);
    assert!(
        r.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    );
}

fn from_hex(hex: &str) -> Vec<u8> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Found by fuzzing: a 70-byte batch with one record claiming 2^31 - 1 was
/// accepted and moved the log end by 2^31; a later ListOffsets by timestamp
/// then aborted the broker decoding it.
#[test]
fn a_batch_claiming_more_records_than_it_holds_is_refused() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let poisoned = from_hex(
        "000000000000000000000039ffffffff028fe1823300007ffffffe0000018bcfe568000000018bcfe56800\
         ffffffffffffffffffffffffffff7fffffff0e00000001027600",
    );
    let data = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(poisoned)));
    let topic = TopicProduceData::default()
        .with_name(topic_name("t"))
        .with_partition_data(vec![data]);
    let body = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![topic]);
    let bytes = answer(dispatch_now(&broker, &limits, frame(ApiKey::Produce, 9, &body)).unwrap());
    let r: ProduceResponse = check_decodes(ApiKey::Produce, 9, bytes);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        kafka_protocol::ResponseError::InvalidRecord.code()
    );
    assert_eq!(
        broker
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .offsets()
            .log_end_offset,
        0
    );
}

/// Found by fuzzing: array counts of 2^31 in a 14-byte request made the
/// codec reserve ~150 GB and the process abort. The guarded allocator (also
/// this test binary's) turns that into a refused request.
#[test]
fn requests_with_absurd_array_counts_are_refused() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    for hex in [
        "0003000400000000ffff7fffffff",
        "0003000c00000000ffff00ffffffff0f",
    ] {
        assert!(
            dispatch_now(&broker, &limits, Bytes::from(from_hex(hex))).is_err(),
            "{hex}"
        );
    }
}

/// Requests taken together keep their order: a ListOffsets behind two
/// produces sees both appended; a malformed request stops the rest, so the
/// produce behind it is never appended (the connection closes).
#[test]
fn requests_dispatched_together_apply_in_order_and_stop_at_an_error() {
    let (_dir, broker) = scratch_broker();
    let limits = ListenerLimits::default();
    let produce = || {
        let data = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(batch()));
        let topic = TopicProduceData::default()
            .with_name(topic_name("t"))
            .with_partition_data(vec![data]);
        let body = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![topic]);
        frame(ApiKey::Produce, 9, &body)
    };
    let latest = frame(
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]),
    );
    let mut malformed = produce().to_vec();
    malformed.truncate(malformed.len() - 10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frames = vec![
        produce(),
        produce(),
        latest,
        Bytes::from(malformed),
        produce(),
    ];
    let results = runtime.block_on(super::dispatch::dispatch_all(
        &broker, None, &limits, frames,
    ));
    assert_eq!(results.len(), 4, "nothing runs after the malformed request");
    let mut results = results.into_iter();
    for base_offset in [0, 1] {
        let bytes = answer(results.next().unwrap().unwrap());
        let r: ProduceResponse = check_decodes(ApiKey::Produce, 9, bytes);
        assert_eq!(
            r.responses[0].partition_responses[0].base_offset,
            base_offset
        );
    }
    let bytes = answer(results.next().unwrap().unwrap());
    let r: ListOffsetsResponse = check_decodes(ApiKey::ListOffsets, 7, bytes);
    assert_eq!(r.topics[0].partitions[0].offset, 2, "both produces seen");
    assert!(results.next().unwrap().is_err());
    let partition = broker.topic("t").unwrap().partition(0).cloned().unwrap();
    assert_eq!(partition.offsets().log_end_offset, 2);
}
