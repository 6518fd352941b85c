//! Admin APIs through librdkafka's AdminClient: DescribeConfigs,
//! AlterConfigs, CreatePartitions, DeleteTopics, DeleteRecords on a topic created through
//! the API (accepted, persisted across a restart) and on one declared in the
//! spec (refused with POLICY_VIOLATION naming the spec file and key).

mod common;

use std::time::Duration;

use common::Daemon;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

struct Admin {
    client: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Runtime,
    options: AdminOptions,
}

impl Admin {
    fn new(daemon: &Daemon) -> Admin {
        Admin {
            client: ClientConfig::new()
                .set("bootstrap.servers", daemon.bootstrap())
                .create()
                .unwrap(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            options: AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        }
    }

    fn config(&self, specifier: ResourceSpecifier<'_>) -> rdkafka::admin::ConfigResource {
        let mut results = self
            .runtime
            .block_on(self.client.describe_configs([&specifier], &self.options))
            .expect("describe_configs");
        results.remove(0).expect("a described resource")
    }

    /// AlterConfigs (which replaces the topic's whole set of overrides).
    fn alter(&self, topic: &str, key: &str, value: &str) -> Result<(), RDKafkaErrorCode> {
        let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
        let mut results = self
            .runtime
            .block_on(self.client.alter_configs([&change], &self.options))
            .expect("alter_configs");
        results.remove(0).map(|_| ()).map_err(|(_, code)| code)
    }

    fn partitions(&self, topic: &str) -> usize {
        let metadata = self
            .client
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    }
}

const POLICY_VIOLATION: i16 = 44;
const INVALID_CONFIG: i16 = 40;

/// IncrementalAlterConfigs SET of one key, on a raw connection: (error code, message).
fn alter_on_the_wire(daemon: &Daemon, topic: &str, key: &str, value: &str) -> (i16, String) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(value.to_string()))),
            ]),
    ]);
    let mut stream = common::wire::connect(daemon);
    let version = 1;
    let key_api = ApiKey::IncrementalAlterConfigs;
    stream
        .write_all(&common::wire::request_frame(key_api, version, 1, &request))
        .unwrap();
    let mut body = bytes::Bytes::from(common::wire::read_response(&mut stream));
    ResponseHeader::decode(&mut body, key_api.response_header_version(version)).unwrap();
    let response = IncrementalAlterConfigsResponse::decode(&mut body, version).unwrap();
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn api_topics_take_admin_calls_and_declared_topics_refuse_them() {
    let mut daemon = Daemon::start("[topics.declared]\npartitions = 2\nretention_ms = \"2d\"\n");
    let admin = Admin::new(&daemon);
    let created = admin
        .runtime
        .block_on(admin.client.create_topics(
            [&NewTopic::new("made", 2, TopicReplication::Fixed(1)).set("segment.ms", "3600000")],
            &admin.options,
        ))
        .unwrap();
    assert_eq!(created[0], Ok("made".to_string()));

    // DescribeConfigs: where each value comes from, and who may change it.
    let declared = admin.config(ResourceSpecifier::Topic("declared"));
    let retention = declared.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("172800000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(declared.entries.iter().all(|e| e.is_read_only));
    let made = admin.config(ResourceSpecifier::Topic("made"));
    let segment_ms = made.get("segment.ms").unwrap();
    assert_eq!(segment_ms.value.as_deref(), Some("3600000"));
    assert_eq!(segment_ms.source, ConfigSource::DynamicTopic);
    assert!(!segment_ms.is_read_only);
    assert_eq!(
        made.get("retention.ms").unwrap().source,
        ConfigSource::Default
    );
    let broker = admin.config(ResourceSpecifier::Broker(1));
    let log_retention = broker.get("log.retention.ms").unwrap();
    assert_eq!(log_retention.value.as_deref(), Some("604800000"));
    assert!(log_retention.is_read_only);

    // AlterConfigs: the spec owns declared topics. (rdkafka's AlterConfigs
    // result drops per-resource errors, so those are read off the wire.)
    let (code, message) = alter_on_the_wire(&daemon, "declared", "retention.ms", "1000");
    assert_eq!(code, POLICY_VIOLATION);
    let spec_path = daemon.spec_path.display().to_string();
    assert!(
        message.contains(&spec_path) && message.contains("topics.declared.retention_ms"),
        "{message}"
    );
    let declared = admin.config(ResourceSpecifier::Topic("declared"));
    assert_eq!(
        declared.get("retention.ms").unwrap().value.as_deref(),
        Some("172800000")
    );
    admin.alter("made", "retention.ms", "7200000").unwrap();
    let made = admin.config(ResourceSpecifier::Topic("made"));
    assert_eq!(
        made.get("retention.ms").unwrap().value.as_deref(),
        Some("7200000")
    );
    // AlterConfigs replaces the whole set, as in Kafka; the incremental one adds.
    assert_eq!(
        made.get("segment.ms").unwrap().source,
        ConfigSource::Default
    );
    assert_eq!(
        alter_on_the_wire(&daemon, "made", "segment.ms", "3600000").0,
        0
    );
    assert_eq!(
        alter_on_the_wire(&daemon, "made", "retention.ms", "banana").0,
        INVALID_CONFIG
    );
    assert_eq!(
        alter_on_the_wire(&daemon, "made", "no.such.config", "1").0,
        INVALID_CONFIG
    );

    // CreatePartitions.
    let grow = |topic: &'static str, count: usize| {
        let results = admin
            .runtime
            .block_on(
                admin
                    .client
                    .create_partitions([&NewPartitions::new(topic, count)], &admin.options),
            )
            .unwrap();
        results[0].clone().map(|_| ()).map_err(|(_, code)| code)
    };
    assert_eq!(grow("made", 5), Ok(()));
    assert_eq!(admin.partitions("made"), 5);
    assert_eq!(grow("made", 3), Err(RDKafkaErrorCode::InvalidPartitions));
    assert_eq!(grow("declared", 4), Err(RDKafkaErrorCode::PolicyViolation));
    assert_eq!(admin.partitions("declared"), 2);

    // DeleteRecords works on data of any topic, declared or not.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .create()
        .unwrap();
    for i in 0..20 {
        let value = format!("record {i}");
        producer
            .send(
                BaseRecord::<(), str>::to("declared")
                    .partition(0)
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("declared", 0, Offset::Offset(5))
        .unwrap();
    let deleted = admin
        .runtime
        .block_on(admin.client.delete_records(&cut, &admin.options))
        .unwrap();
    assert!(deleted.elements()[0].error().is_ok());
    let watermarks = |admin: &Admin| {
        admin
            .client
            .inner()
            .fetch_watermarks("declared", 0, Duration::from_secs(10))
            .unwrap()
    };
    assert_eq!(watermarks(&admin), (5, 20));

    // Everything done through the API survives a restart.
    drop(admin);
    assert_eq!(daemon.terminate(), Some(0));
    daemon.spawn();
    let admin = Admin::new(&daemon);
    let made = admin.config(ResourceSpecifier::Topic("made"));
    assert_eq!(
        made.get("retention.ms").unwrap().value.as_deref(),
        Some("7200000")
    );
    assert_eq!(
        made.get("segment.ms").unwrap().value.as_deref(),
        Some("3600000")
    );
    assert_eq!(admin.partitions("made"), 5);
    assert_eq!(watermarks(&admin), (5, 20));

    // DeleteTopics.
    let delete = |topic: &str| {
        let results = admin
            .runtime
            .block_on(admin.client.delete_topics(&[topic], &admin.options))
            .unwrap();
        results[0].clone().map(|_| ()).map_err(|(_, code)| code)
    };
    assert_eq!(delete("declared"), Err(RDKafkaErrorCode::PolicyViolation));
    assert_eq!(delete("made"), Ok(()));
    assert!(!daemon.data_dir().join("made-0").exists());
    assert!(daemon.data_dir().join("declared-0").exists());
    assert_eq!(
        delete("made"),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
}
