//! Whole-spec tests: the shipped specs parse, bad specs fail with exact messages,
//! topic configs resolve and map to Kafka's names.

use std::path::PathBuf;

use super::*;

/// A valid one-broker spec; text appended to it starts on line 13, inside [[brokers]].
const ONE: &str = r#"[cluster]
name = "test"

[controller]
voters = [1]

[[brokers]]
id = 1
kafka = "127.0.0.1:9092"
quic = "127.0.0.1:9093"
metrics = "127.0.0.1:9644"
data_dir = "data/1"
"#;

/// A valid three-broker spec; text appended to it starts on line 27.
const THREE: &str = r#"[cluster]
name = "test"

[controller]
voters = [1, 2, 3]

[[brokers]]
id = 1
kafka = "127.0.0.1:9092"
quic = "127.0.0.1:9093"
metrics = "127.0.0.1:9644"
data_dir = "data/1"

[[brokers]]
id = 2
kafka = "127.0.0.2:9092"
quic = "127.0.0.2:9093"
metrics = "127.0.0.2:9644"
data_dir = "data/2"

[[brokers]]
id = 3
kafka = "127.0.0.3:9092"
quic = "127.0.0.3:9093"
metrics = "127.0.0.3:9644"
data_dir = "data/3"
"#;

fn errors(text: &str) -> String {
    match parse_spec(text, "cluster.toml") {
        Ok(_) => panic!("spec unexpectedly valid:\n{text}"),
        Err(errors) => errors.to_string(),
    }
}

fn one(extra: &str) -> String {
    format!("{ONE}{extra}")
}

fn three(extra: &str) -> String {
    format!("{THREE}{extra}")
}

#[test]
fn bases_are_valid_and_line_numbers_are_as_documented() {
    assert_eq!(ONE.lines().count(), 12);
    assert_eq!(THREE.lines().count(), 26);
    parse_spec(ONE, "one.toml").unwrap();
    parse_spec(THREE, "three.toml").unwrap();
}

// ---- The shipped specs ----

#[test]
fn embedded_default_is_etc_sluice_toml() {
    assert_eq!(DEFAULT_SPEC_TOML, include_str!("../../../etc/sluice.toml"));
}

#[test]
fn embedded_default_parses_to_the_documented_values() {
    let spec = default_spec();
    assert_eq!(spec.cluster.name, "sluice-dev");
    assert!(spec.cluster.auto_create_topics);
    assert!(spec.cluster.allow_api_topic_creation);
    assert_eq!(spec.controller.voters, vec![1]);
    assert_eq!(spec.brokers.len(), 1);
    let broker = &spec.brokers[0];
    assert_eq!(broker.id, 1);
    assert_eq!(broker.kafka, "127.0.0.1:9092".parse().unwrap());
    assert_eq!(broker.advertised_kafka().to_string(), "127.0.0.1:9092");
    assert_eq!(broker.quic, "127.0.0.1:9093".parse().unwrap());
    assert_eq!(broker.metrics, "127.0.0.1:9644".parse().unwrap());
    assert_eq!(broker.data_dir, PathBuf::from("data"));
    assert_eq!(broker.rack, None);
    assert!(spec.topics.is_empty());
    // The file writes out every default: it must agree with the built-in ones.
    assert_eq!(spec.limits, Limits::default());
    assert_eq!(spec.replication, ReplicationSection::default());
    assert_eq!(spec.topic_config("anything"), TopicConfig::kafka_defaults());
    assert_eq!(spec.source_hash.len(), 16);
}

#[test]
fn cluster_3_parses_with_placement_and_overrides() {
    let spec = parse_spec(
        include_str!("../../../etc/cluster-3.toml"),
        "cluster-3.toml",
    )
    .unwrap();
    assert_eq!(spec.broker_ids(), vec![1, 2, 3]);
    assert_eq!(spec.controller.voters, vec![1, 2, 3]);
    assert_eq!(spec.broker(2).unwrap().rack.as_deref(), Some("b"));
    let audit = spec.topic_config("audit-log");
    assert_eq!(audit.partitions, 3);
    assert_eq!(audit.replication_factor, 3);
    assert_eq!(
        audit.replicas,
        Some(vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]])
    );
    assert_eq!(audit.retention_ms, None);
    assert_eq!(audit.segment_bytes, 256 * units::MIB);
    assert_eq!(audit.message_timestamp_type, TimestampKind::LogAppendTime);
    assert_eq!(audit.min_insync_replicas, 2);
    let payments = spec.topic_config("payments");
    assert_eq!((payments.partitions, payments.replication_factor), (6, 3));
    assert_eq!(payments.flush, FlushMode::Fsync);
    assert_eq!(payments.retention_ms, Some(30 * units::DAY_MS));
    let orders = spec.topic_config("orders");
    assert_eq!((orders.partitions, orders.replication_factor), (12, 3));
    assert_eq!(orders.compression, CompressionSetting::Producer);
    let undeclared = spec.topic_config("not-declared");
    assert_eq!(
        (undeclared.partitions, undeclared.replication_factor),
        (1, 3)
    );
    assert_eq!(undeclared.min_insync_replicas, 2);
    assert_eq!(undeclared.replicas, None);
}

#[test]
fn source_hash_follows_the_text() {
    let first = parse_spec(ONE, "a").unwrap();
    let again = parse_spec(ONE, "b").unwrap();
    let other = parse_spec(&one("rack = \"r\"\n"), "a").unwrap();
    assert_eq!(first.source_hash, again.source_hash);
    assert_ne!(first.source_hash, other.source_hash);
}

#[test]
fn load_spec_resolves_data_dirs_against_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("cluster.toml");
    let text = THREE.replace("data_dir = \"data/3\"", "data_dir = \"/var/lib/sluice\"");
    std::fs::write(&path, text).unwrap();
    let spec = load_spec(&path).unwrap();
    assert_eq!(spec.brokers[0].data_dir, directory.path().join("data/1"));
    assert_eq!(spec.brokers[2].data_dir, PathBuf::from("/var/lib/sluice"));
}

#[test]
fn load_spec_errors_name_the_path() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing.toml");
    let error = load_spec(&missing).unwrap_err();
    assert!(matches!(error, LoadError::Read { .. }));
    let expected = format!(
        "cannot read cluster spec {}: No such file or directory",
        missing.display()
    );
    assert!(error.to_string().starts_with(&expected), "{error}");

    let path = directory.path().join("cluster.toml");
    std::fs::write(&path, one("\n[topics.orders]\npartitions = 0\n")).unwrap();
    let error = load_spec(&path).unwrap_err();
    let expected = format!(
        "{}:15:14: topics.orders.partitions: must be between 1 and 100000, got 0",
        path.display()
    );
    assert_eq!(error.to_string(), expected);
}

// ---- Bad specs, each with its full message ----

#[test]
fn partitions_zero() {
    assert_eq!(
        errors(&one("\n[topics.orders]\npartitions = 0\n")),
        "cluster.toml:15:14: topics.orders.partitions: must be between 1 and 100000, got 0"
    );
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        errors(&one("\n[topic.orders]\npartitions = 3\n")),
        "cluster.toml:14:2: topic: unknown key; did you mean `topics`?"
    );
}

#[test]
fn unknown_key_in_a_broker() {
    assert_eq!(
        errors(&one("data-dir = \"x\"\n")),
        "cluster.toml:13:1: brokers[0].data-dir: unknown key; did you mean `data_dir`?"
    );
    assert_eq!(
        errors(&one("colour = \"blue\"\n")),
        "cluster.toml:13:1: brokers[0].colour: unknown key; allowed keys: id, kafka, \
         advertised_kafka, quic, metrics, rack, data_dir"
    );
}

#[test]
fn unknown_key_in_a_topic() {
    assert_eq!(
        errors(&one("\n[topics.orders]\npartitons = 8\n")),
        "cluster.toml:15:1: topics.orders.partitons: unknown key; did you mean `partitions`?"
    );
}

#[test]
fn topic_only_key_in_topic_defaults() {
    assert_eq!(
        errors(&one("\n[topic_defaults]\nallow_delete = true\n")),
        "cluster.toml:15:1: topic_defaults.allow_delete: `allow_delete` can only be set in a \
         [topics.NAME] table"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors(&one("\n[topics.orders]\npartitions = \"8\"\n")),
        "cluster.toml:15:14: topics.orders.partitions: invalid type: string \"8\", expected an integer"
    );
    assert_eq!(
        errors(&one("\n[limits]\nmax_connections = 1.5\n")),
        "cluster.toml:15:19: limits.max_connections: invalid type: floating point `1.5`, expected an integer"
    );
    assert_eq!(
        errors(&one("\n[topics.orders]\npartitions = 5000000000\n")),
        "cluster.toml:15:14: topics.orders.partitions: invalid value: integer `5000000000`, \
         expected an integer from -2147483648 to 2147483647"
    );
    assert_eq!(
        errors(&one("\n[topics]\norders = 5\n")),
        "cluster.toml:15:10: topics.orders: expected a table, got integer"
    );
    assert_eq!(
        errors(&one("\n[topics.orders]\nflush = \"fsnyc\"\n")),
        "cluster.toml:15:9: topics.orders.flush: unknown value `fsnyc`, expected `page-cache` or `fsync`"
    );
}

#[test]
fn bad_size_string() {
    assert_eq!(
        errors(&one("\n[topic_defaults]\nsegment_bytes = \"10XB\"\n")),
        "cluster.toml:15:17: topic_defaults.segment_bytes: invalid size \"10XB\": unknown unit \
         \"XB\" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
    );
    assert_eq!(
        errors(&one("\n[topics.orders]\nretention_bytes = -1\n")),
        "cluster.toml:15:19: topics.orders.retention_bytes: invalid size -1: must not be \
         negative; write \"unlimited\" for no limit"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        errors(&one("\n[topics.orders]\nretention_ms = \"7days\"\n")),
        "cluster.toml:15:16: topics.orders.retention_ms: invalid duration \"7days\": unknown unit \
         \"days\" (use ms, s, m, h, d or w)"
    );
    assert_eq!(
        errors(&one("\n[topics.orders]\nsegment_ms = \"forever\"\n")),
        "cluster.toml:15:14: topics.orders.segment_ms: \"forever\" is not allowed here: this \
         duration needs a finite value"
    );
}

#[test]
fn duplicate_broker_id() {
    let second = "\n[[brokers]]\nid = 1\nkafka = \"127.0.0.2:9092\"\nquic = \"127.0.0.2:9093\"\n\
                  metrics = \"127.0.0.2:9644\"\ndata_dir = \"data/2\"\n";
    assert_eq!(
        errors(&one(second)),
        "cluster.toml:15:6: brokers[1].id: duplicate broker id 1 (also used by brokers[0])"
    );
}

#[test]
fn shared_listen_addresses_and_data_dirs() {
    let second = "\n[[brokers]]\nid = 2\nkafka = \"127.0.0.1:9092\"\nquic = \"127.0.0.2:9093\"\n\
                  metrics = \"127.0.0.1:9093\"\ndata_dir = \"data/1\"\n";
    assert_eq!(
        errors(&one(second)),
        "cluster.toml:16:9: brokers[1].kafka: address 127.0.0.1:9092 is already used by brokers[0].kafka\n\
         cluster.toml:19:12: brokers[1].data_dir: data/1 is also the data_dir of brokers[0], and \
         both run on this machine (loopback addresses)"
    );
}

#[test]
fn wildcard_kafka_needs_advertised_address() {
    let text = ONE.replace("kafka = \"127.0.0.1:9092\"", "kafka = \"0.0.0.0:9092\"");
    assert_eq!(
        errors(&text),
        "cluster.toml:9:9: brokers[0].kafka: binds to a wildcard address; set advertised_kafka \
         to the host:port clients should use"
    );
    let fixed = format!("{text}advertised_kafka = \"broker-1.example.com:9092\"\n");
    let spec = parse_spec(&fixed, "cluster.toml").unwrap();
    assert_eq!(
        spec.brokers[0].advertised_kafka().to_string(),
        "broker-1.example.com:9092"
    );
}

#[test]
fn bind_address_must_be_ip_and_port() {
    let text = ONE.replace("127.0.0.1:9093", "localhost:9093");
    assert_eq!(
        errors(&text),
        "cluster.toml:10:8: brokers[0].quic: invalid bind address \"localhost:9093\": expected \
         IP:port, like \"127.0.0.1:9092\", \"0.0.0.0:9092\" or \"[::1]:9092\" (host names are \
         allowed only in advertised_kafka)"
    );
}

#[test]
fn missing_required_key() {
    let text = ONE.replace("data_dir = \"data/1\"\n", "");
    assert_eq!(
        errors(&text),
        "cluster.toml:7:1: brokers[0]: missing required key `data_dir`"
    );
}

#[test]
fn unknown_broker_in_replicas() {
    assert_eq!(
        errors(&one("\n[topics.orders]\nreplicas = [[1], [2]]\n")),
        "cluster.toml:15:19: topics.orders.replicas[1][0]: broker 2 is not declared in \
         [[brokers]] (declared: 1)"
    );
}

#[test]
fn inconsistent_replica_lists() {
    let extra = "\n[topics.orders]\npartitions = 2\nreplication_factor = 2\n\
                 replicas = [[1, 2, 3], [2, 2], [3, 1, 2]]\n";
    assert_eq!(
        errors(&three(extra)),
        "cluster.toml:29:14: topics.orders.partitions: is 2 but replicas lists 3 partitions\n\
         cluster.toml:30:22: topics.orders.replication_factor: is 2 but replicas lists 3 replicas \
         per partition\n\
         cluster.toml:31:24: topics.orders.replicas[1]: partition 1 has 2 replicas but partition \
         0 has 3; every partition needs the same number\n\
         cluster.toml:31:28: topics.orders.replicas[1][1]: broker 2 appears twice in the replicas \
         of partition 1"
    );
}

#[test]
fn replication_factor_above_broker_count() {
    assert_eq!(
        errors(&one("\n[topics.orders]\nreplication_factor = 3\n")),
        "cluster.toml:15:22: topics.orders.replication_factor: replication_factor 3 exceeds the \
         number of declared brokers (1)"
    );
}

#[test]
fn compression_other_than_producer_is_refused_where_written() {
    let extra = "\n[topic_defaults]\ncompression = \"none\"\n\n[topics.orders]\ncompression = \"zstd\"\n\n\
                 [topics.kept]\ncompression = \"producer\"\n";
    assert_eq!(
        errors(&one(extra)),
        "cluster.toml:15:15: topic_defaults.compression: \"none\": recompression is not built \
         yet; batches are stored as the producer compressed them, so only \"producer\" is \
         accepted\n\
         cluster.toml:18:15: topics.orders.compression: \"zstd\": recompression is not built \
         yet; batches are stored as the producer compressed them, so only \"producer\" is \
         accepted"
    );
    let spec = parse_spec(&one("\n[topics.kept]\ncompression = \"producer\"\n"), "c").unwrap();
    assert_eq!(
        spec.topic_config("kept").compression,
        CompressionSetting::Producer
    );
}

#[test]
fn min_insync_above_replication_factor() {
    assert_eq!(
        errors(&three(
            "\n[topics.orders]\nreplication_factor = 2\nmin_insync_replicas = 3\n"
        )),
        "cluster.toml:30:23: topics.orders.min_insync_replicas: min_insync_replicas 3 exceeds \
         replication_factor 2: acks=all writes could never succeed"
    );
}

#[test]
fn inherited_problems_are_reported_once_where_they_are_fixed() {
    // Every topic inherits min_insync_replicas = 2 with replication_factor 1.
    let extra =
        "\n[topic_defaults]\nmin_insync_replicas = 2\n\n[topics.a]\n\n[topics.b]\npartitions = 2\n";
    assert_eq!(
        errors(&three(extra)),
        "cluster.toml:29:23: topic_defaults.min_insync_replicas: min_insync_replicas 2 exceeds \
         replication_factor 1: acks=all writes could never succeed"
    );
}

#[test]
fn illegal_topic_names() {
    assert_eq!(
        errors(&one("\n[topics.\"bad name\"]\npartitions = 1\n")),
        "cluster.toml:14:1: topics.\"bad name\": topic name contains ' ', which is not allowed: \
         use only ASCII letters, digits, '.', '_' and '-'"
    );
    assert_eq!(
        errors(&one("\n[topics.__internal]\n")),
        "cluster.toml:14:1: topics.__internal: topic names starting with \"__\" are reserved for \
         internal topics such as __consumer_offsets"
    );
    assert_eq!(
        errors(&one("\n[topics.\"..\"]\n")),
        "cluster.toml:14:1: topics.\"..\": \"..\" is not a legal topic name"
    );
    assert_eq!(
        errors(&one("\n[topics.\"a.b\"]\n[topics.a_b]\n")),
        "cluster.toml:15:1: topics.a_b: collides with topic \"a.b\": names that differ only in \
         '.' and '_' clash in metric names"
    );
}

#[test]
fn voters_must_be_declared_and_odd() {
    let text = ONE.replace("voters = [1]", "voters = [1, 2]");
    assert_eq!(
        errors(&text),
        "cluster.toml:5:10: controller.voters: must name 1, 3 or 5 brokers (an odd number, so \
         that a majority exists), got 2\n\
         cluster.toml:5:14: controller.voters[1]: broker 2 is not declared in [[brokers]] \
         (declared: 1)"
    );
    let text = THREE.replace("voters = [1, 2, 3]", "voters = [1, 3, 3]");
    assert_eq!(
        errors(&text),
        "cluster.toml:5:17: controller.voters[2]: broker 3 is listed twice"
    );
}

#[test]
fn toml_syntax_errors() {
    assert_eq!(
        errors(&one("\n[topics.orders\npartitions = 1\n")),
        "cluster.toml:14:15: topics.orders: unclosed table, expected `]`"
    );
    assert_eq!(
        errors(&one("\n[topics.orders]\npartitions = 1\npartitions = 2\n")),
        "cluster.toml:16:1: topics.orders.partitions: duplicate key"
    );
}

#[test]
fn missing_tables() {
    assert_eq!(
        errors("[cluster]\nname = \"x\"\n"),
        "cluster.toml:1:1: controller: missing required table [controller]\n\
         cluster.toml:1:1: brokers: missing required [[brokers]] tables: declare at least one broker"
    );
}

#[test]
fn several_structural_errors_at_once() {
    let extra =
        "colour = 1\n\n[topics.a]\npartitons = 1\n\n[topics.b]\nsegment_bytes = \"1 GiB\"\n";
    assert_eq!(
        errors(&one(extra)),
        "cluster.toml:13:1: brokers[0].colour: unknown key; allowed keys: id, kafka, \
         advertised_kafka, quic, metrics, rack, data_dir\n\
         cluster.toml:16:1: topics.a.partitons: unknown key; did you mean `partitions`?\n\
         cluster.toml:19:17: topics.b.segment_bytes: invalid size \"1 GiB\": unknown unit \" GiB\" \
         (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
    );
}

#[test]
fn several_semantic_errors_at_once() {
    let extra = "rack = \"\"\n\n[topic_defaults]\nmin_insync_replicas = 2\n\n\
                 [topics.orders]\npartitions = 0\nsegment_bytes = \"1KiB\"\n\n[topics.\"a b\"]\n";
    let text = one(extra);
    let reported = parse_spec(&text, "cluster.toml").unwrap_err();
    assert_eq!(reported.len(), 6);
    assert_eq!(
        reported.to_string(),
        "cluster.toml:13:8: brokers[0].rack: must not be empty; leave it out instead\n\
         cluster.toml:16:23: topic_defaults.min_insync_replicas: min_insync_replicas 2 exceeds \
         replication_factor 1: acks=all writes could never succeed\n\
         cluster.toml:19:14: topics.orders.partitions: must be between 1 and 100000, got 0\n\
         cluster.toml:20:17: topics.orders.segment_bytes: must be at least 4096 bytes (4KiB), got \
         1024 bytes (1KiB)\n\
         cluster.toml:20:17: topics.orders.segment_bytes: max_message_bytes (1048588) exceeds \
         segment_bytes (1024): a message must fit in one segment\n\
         cluster.toml:22:1: topics.\"a b\": topic name contains ' ', which is not allowed: use \
         only ASCII letters, digits, '.', '_' and '-'"
    );
}

#[test]
fn limits_are_checked() {
    let extra = "\n[limits]\nsocket_request_max_bytes = \"512KiB\"\nmax_connections = 0\n";
    assert_eq!(
        errors(&one(extra)),
        "cluster.toml:15:28: limits.socket_request_max_bytes: max_message_bytes (1048588) \
         exceeds limits.socket_request_max_bytes (524288): no producer could send such a message\n\
         cluster.toml:16:19: limits.max_connections: must be at least 1, got 0"
    );
}

#[test]
fn small_segments_for_tests_are_allowed() {
    let extra = "\n[topics.tiny]\nsegment_bytes = \"64KiB\"\nmax_message_bytes = \"16KiB\"\n\
                 segment_index_bytes = \"1KiB\"\nindex_interval_bytes = 0\n";
    let spec = parse_spec(&one(extra), "cluster.toml").unwrap();
    let config = spec.topic_config("tiny");
    assert_eq!(config.segment_bytes, 64 * units::KIB);
    assert_eq!(config.max_message_bytes, 16 * 1024);
    assert_eq!(config.segment_index_bytes, 1024);
    assert_eq!(config.index_interval_bytes, 0);
}

// ---- Kafka config names ----

#[test]
fn default_kafka_configs() {
    let configs = TopicConfig::kafka_defaults().to_kafka_configs();
    let expected = [
        ("cleanup.policy", "delete"),
        ("compression.type", "producer"),
        ("delete.retention.ms", "86400000"),
        ("flush.messages", "9223372036854775807"),
        ("flush.ms", "1000"),
        ("index.interval.bytes", "4096"),
        ("max.compaction.lag.ms", "9223372036854775807"),
        ("max.message.bytes", "1048588"),
        ("message.timestamp.type", "CreateTime"),
        ("min.cleanable.dirty.ratio", "0.5"),
        ("min.compaction.lag.ms", "0"),
        ("min.insync.replicas", "1"),
        ("retention.bytes", "-1"),
        ("retention.ms", "604800000"),
        ("segment.bytes", "1073741824"),
        ("segment.index.bytes", "10485760"),
        ("segment.ms", "604800000"),
        ("sluice.flush.mode", "page-cache"),
        ("unclean.leader.election.enable", "false"),
    ];
    let expected: Vec<(&str, String)> = expected
        .iter()
        .map(|(name, value)| (*name, value.to_string()))
        .collect();
    assert_eq!(configs, expected);
}

fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn new_topic_config_applies_kafka_overrides() {
    let spec = parse_spec(
        include_str!("../../../etc/cluster-3.toml"),
        "cluster-3.toml",
    )
    .unwrap();
    let config = spec
        .new_topic_config(
            Some(4),
            &overrides(&[
                ("cleanup.policy", "delete"),
                ("retention.ms", "86400000"),
                ("retention.bytes", "-1"),
                ("compression.type", "producer"),
                ("min.insync.replicas", "3"),
                ("segment.bytes", "65536"),
                ("max.message.bytes", "65536"),
                ("unclean.leader.election.enable", "TRUE"),
                ("message.timestamp.type", "LogAppendTime"),
                ("flush.messages", "9223372036854775807"),
                ("sluice.flush.mode", "fsync"),
            ]),
        )
        .unwrap();
    assert_eq!(config.partitions, 4);
    assert_eq!(config.replication_factor, 3, "from [topic_defaults]");
    assert_eq!(config.retention_ms, Some(86_400_000));
    assert_eq!(config.retention_bytes, None);
    assert_eq!(config.compression, CompressionSetting::Producer);
    assert_eq!(config.min_insync_replicas, 3);
    assert_eq!(config.segment_bytes, 65_536);
    assert!(config.unclean_leader_election);
    assert_eq!(config.message_timestamp_type, TimestampKind::LogAppendTime);
    assert_eq!(config.flush_interval_messages, None);
    assert_eq!(config.flush, FlushMode::Fsync);
    assert!(!config.allow_delete);
    assert_eq!(config.replicas, None);

    let defaults = spec.new_topic_config(None, &[]).unwrap();
    assert_eq!(defaults, spec.default_topic_config());
    assert_eq!(spec.new_topic_config(Some(-1), &[]).unwrap().partitions, 1);
    let one_replica = overrides(&[("min.insync.replicas", "1")]);
    let with_replication = spec
        .new_topic_config_with_replication(Some(2), Some(1), &one_replica)
        .unwrap();
    assert_eq!(with_replication.replication_factor, 1);
    assert_eq!(
        spec.new_topic_config_with_replication(Some(2), Some(1), &[])
            .unwrap_err(),
        "min.insync.replicas 2 exceeds replication_factor 1: acks=all writes could never succeed"
    );
}

#[test]
fn new_topic_config_rejects_bad_overrides() {
    let spec = default_spec();
    let reject = |partitions: Option<i32>, pairs: &[(&str, &str)]| {
        spec.new_topic_config(partitions, &overrides(pairs))
            .unwrap_err()
    };
    assert_eq!(
        reject(None, &[("retention.msec", "1")]),
        "unknown topic config \"retention.msec\"; Sluice supports cleanup.policy, \
         compression.type, delete.retention.ms, flush.messages, flush.ms, \
         index.interval.bytes, max.compaction.lag.ms, max.message.bytes, \
         message.timestamp.type, min.cleanable.dirty.ratio, min.compaction.lag.ms, \
         min.insync.replicas, retention.bytes, retention.ms, segment.bytes, \
         segment.index.bytes, segment.ms, sluice.flush.mode, unclean.leader.election.enable"
    );
    assert_eq!(
        reject(None, &[("cleanup.policy", "compact,shred")]),
        "cleanup.policy: \"compact,shred\" is not one of delete, compact, compact,delete"
    );
    assert_eq!(
        reject(None, &[("retention.ms", "7d")]),
        "retention.ms: \"7d\" is not an integer (Kafka configs are plain numbers)"
    );
    assert_eq!(
        reject(None, &[("segment.bytes", "100")]),
        "segment.bytes: must be at least 4096 bytes (4KiB), got 100 bytes"
    );
    assert_eq!(
        reject(None, &[("compression.type", "brotli")]),
        "compression.type: \"brotli\" is not one of producer, uncompressed, gzip, snappy, lz4, zstd"
    );
    for codec in ["uncompressed", "gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(
            reject(None, &[("compression.type", codec)]),
            format!(
                "compression.type: {codec:?}: recompression is not built yet; batches are stored \
                 as the producer compressed them, so only \"producer\" is accepted"
            )
        );
    }
    assert_eq!(
        reject(None, &[("min.insync.replicas", "2")]),
        "min.insync.replicas 2 exceeds replication_factor 1: acks=all writes could never succeed"
    );
    assert_eq!(
        reject(Some(0), &[("unclean.leader.election.enable", "yes")]),
        "num_partitions: must be between 1 and 100000, got 0; \
         unclean.leader.election.enable: \"yes\" is not true or false"
    );
    assert_eq!(
        spec.new_topic_config_with_replication(None, Some(3), &[])
            .unwrap_err(),
        "replication_factor 3 exceeds the number of declared brokers (1)"
    );
}

proptest::proptest! {
    /// DescribeConfigs output fed back into CreateTopics gives the same config.
    #[test]
    fn kafka_configs_round_trip(
        segment_bytes in SEGMENT_BYTES_MIN..=(i32::MAX as u64),
        retention_ms in proptest::option::of(1u64..=(i64::MAX as u64)),
        retention_bytes in proptest::option::of(0u64..=(i64::MAX as u64)),
        flush_interval_messages in proptest::option::of(1u64..(i64::MAX as u64)),
        index_interval_bytes in 0u32..=(i32::MAX as u32),
        fsync in proptest::bool::ANY,
        unclean in proptest::bool::ANY,
    ) {
        let spec = default_spec();
        let mut config = spec.default_topic_config();
        config.segment_bytes = segment_bytes;
        config.max_message_bytes = 1024;
        config.retention_ms = retention_ms;
        config.retention_bytes = retention_bytes;
        config.flush_interval_messages = flush_interval_messages;
        config.index_interval_bytes = index_interval_bytes;
        config.flush = if fsync { FlushMode::Fsync } else { FlushMode::PageCache };
        config.unclean_leader_election = unclean;
        let described: Vec<(String, String)> = config
            .to_kafka_configs()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let created = spec.new_topic_config(Some(config.partitions), &described);
        proptest::prop_assert_eq!(created, Ok(config));
    }

    /// Whatever the text, parsing returns (no panic), and errors carry positions.
    #[test]
    fn arbitrary_edits_never_panic(position in 0usize..ONE.len(), insert in "[a-z=\\[\\]\" 0-9\n]{0,8}") {
        let mut text = ONE.to_string();
        let position = (0..=position).rev().find(|p| text.is_char_boundary(*p)).unwrap_or(0);
        text.insert_str(position, &insert);
        if let Err(errors) = parse_spec(&text, "fuzz.toml") {
            proptest::prop_assert!(!errors.is_empty());
            for error in errors.iter() {
                proptest::prop_assert!(error.line >= 1 && error.column >= 1);
            }
        }
    }
}

#[test]
fn host_port_parsing() {
    assert_eq!(
        HostPort::parse("broker-1.example.com:9092")
            .unwrap()
            .to_string(),
        "broker-1.example.com:9092"
    );
    assert_eq!(HostPort::parse("[::1]:9092").unwrap().host, "::1");
    assert_eq!(
        HostPort::parse("[::1]:9092").unwrap().to_string(),
        "[::1]:9092"
    );
    assert_eq!(
        HostPort::parse("broker:99999").unwrap_err(),
        "invalid address \"broker:99999\": the port must be a number from 1 to 65535"
    );
    assert_eq!(
        HostPort::parse("::1:9092").unwrap_err(),
        "invalid address \"::1:9092\": IPv6 addresses must be written in brackets, like \"[::1]:9092\""
    );
    assert!(HostPort::parse("no port").is_err());
    assert!(HostPort::parse("bad host!:1").is_err());
}

#[test]
fn compaction_settings_parse_from_the_spec_and_from_kafka_names() {
    let spec = parse_spec(
        &format!(
            "{}\n[topics.compacted]\ncleanup_policy = \"compact,delete\"\nmin_cleanable_dirty_ratio = 0.25\nmin_compaction_lag_ms = \"1m\"\nmax_compaction_lag_ms = \"1h\"\ndelete_retention_ms = \"2h\"\n",
            DEFAULT_SPEC_TOML
        ),
        "cluster.toml",
    )
    .unwrap();
    let config = spec.topic_config("compacted");
    assert_eq!(config.cleanup_policy, CleanupPolicyKind::CompactDelete);
    assert_eq!(config.min_cleanable_dirty_ratio, DirtyRatio(2_500));
    assert_eq!(config.min_compaction_lag_ms, 60_000);
    assert_eq!(config.max_compaction_lag_ms, Some(3_600_000));
    assert_eq!(config.delete_retention_ms, 7_200_000);
    let api = spec
        .new_topic_config(
            None,
            &overrides(&[
                ("cleanup.policy", "compact"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "100"),
            ]),
        )
        .unwrap();
    assert_eq!(api.cleanup_policy, CleanupPolicyKind::Compact);
    assert_eq!(api.min_cleanable_dirty_ratio, DirtyRatio(100));
    assert_eq!(api.delete_retention_ms, 100);
    for bad in [
        ("cleanup.policy", "shred"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("delete.retention.ms", "-5"),
    ] {
        assert!(
            spec.new_topic_config(None, &overrides(&[bad])).is_err(),
            "{bad:?}"
        );
    }
    let bad_ratio = format!(
        "{}\n[topics.x]\nmin_cleanable_dirty_ratio = 2.0\n",
        DEFAULT_SPEC_TOML
    );
    let error = parse_spec(&bad_ratio, "cluster.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("min_cleanable_dirty_ratio"), "{error}");
}

#[test]
fn producer_id_expiration_is_a_positive_duration() {
    let spec = parse_spec(ONE, "cluster.toml").unwrap();
    assert_eq!(spec.cluster.producer_id_expiration_ms, 86_400_000);
    let text = ONE.replace(
        "name = \"test\"\n",
        "name = \"test\"\nproducer_id_expiration_ms = 0\n",
    );
    assert_eq!(
        errors(&text),
        "cluster.toml:3:29: cluster.producer_id_expiration_ms: must be at least 1 ms, got 0 ms"
    );
}

/// The metadata log refuses topic config keys `is_topic_config_name` does
/// not know: every key DescribeConfigs shows must be one of them.
#[test]
fn every_described_topic_config_is_a_known_key() {
    for (name, _) in TopicConfig::kafka_defaults().to_kafka_configs() {
        assert!(super::is_topic_config_name(name), "{name}");
    }
    assert!(!super::is_topic_config_name("retention"));
    assert!(!super::is_topic_config_name(""));
}

#[test]
fn broker_timings_and_the_tls_dir_are_checked() {
    let spec = parse_spec(THREE, "cluster.toml").expect("valid");
    assert_eq!(spec.controller.broker_heartbeat_interval_ms, 100);
    assert_eq!(spec.controller.broker_session_timeout_ms, 800);
    // The defaults pass their own rule: four heartbeats in a session.
    assert!(
        spec.controller.broker_session_timeout_ms
            >= 4 * spec.controller.broker_heartbeat_interval_ms
    );
    let with = |text: &str, key: &str| {
        text.replace("voters = [1, 2, 3]", &format!("voters = [1, 2, 3]\n{key}"))
    };
    let fast = errors(&with(THREE, "broker_heartbeat_interval_ms = \"10ms\""));
    assert!(
        fast.contains("controller.broker_heartbeat_interval_ms: must be 50ms to 5s, got 10ms"),
        "{fast}"
    );
    let short = errors(&with(THREE, "broker_session_timeout_ms = \"300ms\""));
    assert!(
        short.contains(
            "controller.broker_session_timeout_ms: must be at least 4 heartbeat intervals (400ms) \
             and at most 60s, got 300ms"
        ),
        "{short}"
    );
    let single = errors(&ONE.replace("voters = [1]", "voters = [1]\ntls_dir = \"tls\""));
    assert!(
        single
            .contains("controller.tls_dir: a single broker talks to no other node; remove the key"),
        "{single}"
    );
}

#[test]
fn adopt_broker_names_a_declared_broker_of_a_cluster() {
    let with =
        |text: &str, voters: &str, key: &str| text.replace(voters, &format!("{voters}\n{key}"));
    let spec = parse_spec(
        &with(THREE, "voters = [1, 2, 3]", "adopt_broker = 2"),
        "c.toml",
    )
    .unwrap();
    assert_eq!(spec.controller.adopt_broker, Some(2));
    let unknown = errors(&with(THREE, "voters = [1, 2, 3]", "adopt_broker = 7"));
    assert!(
        unknown.contains("controller.adopt_broker: broker 7 is not declared in [[brokers]]"),
        "{unknown}"
    );
    let single = errors(&with(ONE, "voters = [1]", "adopt_broker = 1"));
    assert!(
        single.contains("controller.adopt_broker: a single broker keeps its data directory"),
        "{single}"
    );
}

#[test]
fn a_broker_added_to_a_cluster_is_live_and_any_other_broker_change_needs_restarts() {
    let old = parse_spec(THREE, "c.toml").unwrap();
    let fourth = "\n[[brokers]]\nid = 4\nkafka = \"127.0.0.4:9092\"\nquic = \"127.0.0.4:9093\"\n\
                  metrics = \"127.0.0.4:9644\"\ndata_dir = \"data/4\"\n";
    let added = parse_spec(&format!("{THREE}{fourth}"), "c.toml").unwrap();
    let actions = diff_specs(&old, &added, 1);
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].to_string(), "add brokers [4]");
    assert!(actions[0].is_live());
    // Broker 3 readdressed as well: restarts, and no live part.
    let moved = format!("{THREE}{fourth}").replace("127.0.0.3:9093", "127.0.0.3:9999");
    let actions = diff_specs(&old, &parse_spec(&moved, "c.toml").unwrap(), 1);
    assert!(
        actions
            .iter()
            .all(|a| !a.is_live() && a.to_string().starts_with("needs restart: brokers")),
        "{actions:?}"
    );
}
