//! Interop with librdkafka (through the `rdkafka` crate) and kcat against the
//! real `sluiced` process: every codec round-trips 100k messages with keys,
//! headers and timestamps over 8 partitions, in per-partition order.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Daemon;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

const MESSAGES: usize = 100_000;
const PARTITIONS: i32 = 8;
const KEYS: usize = 1_000;
const PHASE_TIMEOUT: Duration = Duration::from_secs(240);
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// Delivery reports, indexed by message number.
struct Acks {
    acked: Mutex<Vec<Option<(i32, i64)>>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Ok(m) => self.acked.lock().unwrap()[index] = Some((m.partition(), m.offset())),
            Err((e, _)) => self.failed.lock().unwrap().push(e.to_string()),
        }
    }
}

fn payload(topic: &str, i: usize) -> String {
    format!("{topic}|{i}|{}", "x".repeat(64 + i % 64))
}

fn key(i: usize) -> String {
    format!("key-{}", i % KEYS)
}

/// Produces `count` keyed messages; returns each one's (partition, offset).
fn produce(bootstrap: &str, topic: &str, codec: &str, count: usize) -> Vec<(i32, i64)> {
    let context = Acks {
        acked: Mutex::new(vec![None; count]),
        failed: Mutex::new(Vec::new()),
    };
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", codec)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create_with_context(context)
        .expect("producer");
    let deadline = Instant::now() + PHASE_TIMEOUT;
    for i in 0..count {
        let (k, v, seq) = (key(i), payload(topic, i), i.to_string());
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&seq),
        });
        let mut record = BaseRecord::with_opaque_to(topic, i)
            .key(&k)
            .payload(&v)
            .timestamp(BASE_TIMESTAMP_MS + i as i64)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    assert!(Instant::now() < deadline, "producing {topic} timed out");
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
    }
    producer.flush(PHASE_TIMEOUT).expect("flush");
    let context = producer.context();
    assert!(
        context.failed.lock().unwrap().is_empty(),
        "{:?}",
        context.failed.lock().unwrap()
    );
    let acked = context.acked.lock().unwrap();
    acked
        .iter()
        .enumerate()
        .map(|(i, a)| a.unwrap_or_else(|| panic!("message {i} never acknowledged")))
        .collect()
}

/// A consumed message reduced to what the checks need.
#[derive(Debug)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    payload: String,
    seq_header: String,
    timestamp: Option<i64>,
}

fn consume(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<Seen> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "interop-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = message.expect("consume error");
        let seq_header = m
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == "seq")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .unwrap_or_default();
        seen.push(Seen {
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            seq_header,
            timestamp: m.timestamp().to_millis(),
        });
    }
    // Nothing beyond what was produced arrives.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(300)) {
        panic!(
            "unexpected extra message at {}:{}",
            extra.partition(),
            extra.offset()
        );
    }
    seen
}

fn check_round_trip(topic: &str, acked: &[(i32, i64)], seen: &[Seen]) {
    assert_eq!(seen.len(), acked.len(), "{topic}: consumed count");
    let mut positions = HashSet::new();
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_seq_of_key: BTreeMap<String, usize> = BTreeMap::new();
    for s in seen {
        assert!(
            positions.insert((s.partition, s.offset)),
            "{topic}: duplicate {}:{}",
            s.partition,
            s.offset
        );
        let previous = last_offset.insert(s.partition, s.offset);
        assert!(
            previous.is_none_or(|p| p < s.offset),
            "{topic}: partition {} out of order",
            s.partition
        );
        let i: usize = s
            .payload
            .split('|')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("payload format");
        assert_eq!(s.payload, payload(topic, i));
        assert_eq!(
            acked[i],
            (s.partition, s.offset),
            "{topic}: message {i} not at its acknowledged offset"
        );
        assert_eq!(s.key, key(i));
        assert_eq!(s.seq_header, i.to_string());
        assert_eq!(s.timestamp, Some(BASE_TIMESTAMP_MS + i as i64));
        if let Some(prev) = last_seq_of_key.insert(s.key.clone(), i) {
            assert!(prev < i, "{topic}: key {} reordered", s.key);
        }
    }
    let used: HashSet<i32> = acked.iter().map(|a| a.0).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "{topic}: keys should spread over every partition"
    );
}

fn round_trip_with(codec: &str) {
    let topic = format!("interop-{codec}");
    let daemon = Daemon::start(&format!("[topics.{topic}]\npartitions = {PARTITIONS}\n"));
    let started = Instant::now();
    let acked = produce(&daemon.bootstrap(), &topic, codec, MESSAGES);
    let produced = started.elapsed();
    let seen = consume(&daemon.bootstrap(), &topic, PARTITIONS, MESSAGES);
    eprintln!(
        "{codec}: produced {MESSAGES} in {produced:?}, consumed in {:?}",
        started.elapsed() - produced
    );
    check_round_trip(&topic, &acked, &seen);
}

#[test]
fn round_trip_100k_uncompressed() {
    round_trip_with("none");
}

#[test]
fn round_trip_100k_gzip() {
    round_trip_with("gzip");
}

#[test]
fn round_trip_100k_snappy() {
    round_trip_with("snappy");
}

#[test]
fn round_trip_100k_lz4() {
    round_trip_with("lz4");
}

#[test]
fn round_trip_100k_zstd() {
    round_trip_with("zstd");
}

#[test]
fn offsets_for_times_finds_the_first_offset_at_or_after() {
    let daemon = Daemon::start("[topics.times]\npartitions = 1\n");
    let context = Acks {
        acked: Mutex::new(vec![None; 1000]),
        failed: Mutex::new(Vec::new()),
    };
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("linger.ms", "20")
        .create_with_context(context)
        .unwrap();
    for i in 0..1000usize {
        let v = i.to_string();
        let record = BaseRecord::<(), _, usize>::with_opaque_to("times", i)
            .partition(0)
            .payload(&v)
            .timestamp(BASE_TIMESTAMP_MS + 10 * i as i64);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(PHASE_TIMEOUT).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .create()
        .unwrap();
    let cases = [
        (BASE_TIMESTAMP_MS - 5, Offset::Offset(0)),
        (BASE_TIMESTAMP_MS, Offset::Offset(0)),
        (BASE_TIMESTAMP_MS + 505, Offset::Offset(51)),
        (BASE_TIMESTAMP_MS + 9_990, Offset::Offset(999)),
        (BASE_TIMESTAMP_MS + 9_991, Offset::End),
    ];
    for (timestamp, expected) in cases {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("times", 0, Offset::Offset(timestamp))
            .unwrap();
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .expect("offsets_for_times");
        let got = answer.find_partition("times", 0).unwrap().offset();
        assert_eq!(got, expected, "timestamp {timestamp}");
    }
}

#[test]
fn admin_create_topics_is_honoured_and_validated() {
    let daemon = Daemon::start("");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let topics = [
        NewTopic::new("created", 6, TopicReplication::Fixed(1)).set("retention.ms", "3600000"),
        NewTopic::new("bad name!", 1, TopicReplication::Fixed(1)),
        NewTopic::new("too-replicated", 1, TopicReplication::Fixed(3)),
    ];
    let results = runtime
        .block_on(admin.create_topics(&topics, &options))
        .expect("create_topics");
    assert_eq!(results[0], Ok("created".to_string()));
    assert!(
        matches!(&results[1], Err((_, RDKafkaErrorCode::InvalidTopic))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(
            &results[2],
            Err((_, RDKafkaErrorCode::InvalidReplicationFactor))
        ),
        "{:?}",
        results[2]
    );
    let again = runtime
        .block_on(admin.create_topics(&topics[..1], &options))
        .unwrap();
    assert!(
        matches!(&again[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists))),
        "{:?}",
        again[0]
    );
    let metadata = admin
        .inner()
        .fetch_metadata(Some("created"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 6);
}

/// kcat (librdkafka 2.0 in Debian) produces keyed lines and reads them back.
#[test]
fn kcat_round_trip() {
    let daemon = Daemon::start("");
    let lines: Vec<String> = (0..500).map(|i| format!("k{}:value-{i}", i % 7)).collect();
    let mut producer = Command::new("kcat")
        .args([
            "-b",
            &daemon.bootstrap(),
            "-P",
            "-t",
            "kcat-topic",
            "-K:",
            "-X",
            "acks=all",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (.ci/run installs it)");
    producer
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    assert!(producer.wait().unwrap().success(), "kcat -P failed");
    let output = Command::new("kcat")
        .args([
            "-b",
            &daemon.bootstrap(),
            "-C",
            "-t",
            "kcat-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k:%s\n",
        ])
        .output()
        .expect("kcat -C");
    assert!(
        output.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, lines);
    let listing = Command::new("kcat")
        .args(["-b", &daemon.bootstrap(), "-L"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("topic \"kcat-topic\" with 1 partitions"),
        "{listing}"
    );
}

/// acks=0, 1 and all each deliver every message; an fsync-before-ack topic
/// answers acks=all only after its group commit.
#[test]
fn every_acks_setting_and_the_fsync_policy_deliver() {
    let daemon = Daemon::start("[topics.fsynced]\npartitions = 2\nflush = \"fsync\"\n");
    for (topic, acks) in [
        ("acks0", "0"),
        ("acks1", "1"),
        ("acksall", "all"),
        ("fsynced", "all"),
    ] {
        let count = 3_000;
        let context = Acks {
            acked: Mutex::new(vec![None; count]),
            failed: Mutex::new(Vec::new()),
        };
        let producer: BaseProducer<Acks> = ClientConfig::new()
            .set("bootstrap.servers", daemon.bootstrap())
            .set("acks", acks)
            .set("linger.ms", "2")
            .create_with_context(context)
            .unwrap();
        for i in 0..count {
            let v = payload(topic, i);
            let mut record = BaseRecord::<(), _, usize>::with_opaque_to(topic, i).payload(&v);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("send failed: {e}"),
                }
            }
        }
        producer.flush(PHASE_TIMEOUT).unwrap();
        assert!(
            producer.context().failed.lock().unwrap().is_empty(),
            "{topic}"
        );
        let partitions = if topic == "fsynced" { 2 } else { 1 };
        let seen = consume(&daemon.bootstrap(), topic, partitions, count);
        assert_eq!(seen.len(), count, "{topic} with acks={acks}");
        let distinct: HashSet<&str> = seen.iter().map(|s| s.payload.as_str()).collect();
        assert_eq!(distinct.len(), count, "{topic}: duplicates");
    }
}
