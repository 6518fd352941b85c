//! Durability: acks=all writes acknowledged before a SIGKILL are all there
//! after restart, exactly once, at their acknowledged offsets — also when a
//! torn batch is left at the tail of the active segment.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Acked, Daemon, active_segment, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "durable";
const PARTITIONS: i32 = 4;
const ACKED_BEFORE_KILL: usize = 20_000;
const SEND_LIMIT: usize = 2_000_000;
const TIMEOUT: Duration = Duration::from_secs(120);

fn payload(i: usize) -> String {
    format!("durable-{i:08}-{}", "p".repeat(100))
}

/// Produces with acks=all until the daemon is killed mid-stream; returns
/// what was acknowledged.
fn produce_through_kill(daemon: &mut Daemon) -> HashMap<usize, (i32, i64)> {
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let delivery_errors = Arc::new(Mutex::new(Vec::new()));
    let producer: BaseProducer<Acked> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "5000")
        .create_with_context(Acked(acked.clone(), delivery_errors.clone()))
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut killed = false;
    for i in 0..SEND_LIMIT {
        assert!(
            Instant::now() < deadline,
            "only {} acked before the deadline",
            acked.lock().unwrap().len()
        );
        if !killed && acked.lock().unwrap().len() >= ACKED_BEFORE_KILL {
            daemon.kill();
            killed = true;
        }
        if killed && i % 1000 == 0 {
            break;
        }
        let v = payload(i);
        let mut record = BaseRecord::with_opaque_to(TOPIC, i)
            .key(&v[..12])
            .payload(&v);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    // Whatever was in flight at the kill is abandoned, never retried.
    producer.purge(PurgeConfig::default().queue().inflight());
    producer.poll(Duration::from_millis(100));
    drop(producer);
    assert!(killed, "the daemon was never killed");
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn read_everything(daemon: &Daemon) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("group.id", "durability-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let total: i64 = ends.values().sum();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    assert_eq!(out.len() as i64, total, "could not read the whole log back");
    out
}

fn check(acked: &HashMap<usize, (i32, i64)>, log: &[(i32, i64, String)]) {
    let mut at: HashMap<(i32, i64), &str> = HashMap::new();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for (p, o, v) in log {
        assert!(
            at.insert((*p, *o), v).is_none(),
            "offset {p}:{o} read twice"
        );
        *copies.entry(v.as_str()).or_default() += 1;
    }
    for (i, position) in acked {
        let expected = payload(*i);
        assert_eq!(
            at.get(position).copied(),
            Some(expected.as_str()),
            "acknowledged message {i} lost from {position:?}"
        );
        assert_eq!(
            copies[expected.as_str()],
            1,
            "acknowledged message {i} duplicated"
        );
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut daemon = Daemon::start(&format!("[topics.{TOPIC}]\npartitions = {PARTITIONS}\n"));
    let acked = produce_through_kill(&mut daemon);
    assert!(acked.len() >= ACKED_BEFORE_KILL);
    daemon.spawn();
    check(&acked, &read_everything(&daemon));
}

#[test]
fn acknowledged_writes_survive_a_torn_tail() {
    let mut daemon = Daemon::start(&format!("[topics.{TOPIC}]\npartitions = {PARTITIONS}\n"));
    let acked = produce_through_kill(&mut daemon);
    // A batch cut short by the crash: a plausible header claiming 4 KiB, then garbage.
    let segment = active_segment(&daemon.data_dir().join(format!("{TOPIC}-0")));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    let mut torn = Vec::new();
    torn.extend_from_slice(&1_000_000i64.to_be_bytes());
    torn.extend_from_slice(&4096i32.to_be_bytes());
    torn.extend_from_slice(&[0, 0, 0, 0, 2]);
    torn.extend_from_slice(&[0xAB; 700]);
    file.write_all(&torn).unwrap();
    drop(file);
    daemon.spawn();
    check(&acked, &read_everything(&daemon));
    let log = daemon.log();
    assert!(
        wait_until(Duration::from_secs(5), || daemon.log().contains("truncat")),
        "recovery did not report the torn tail:\n{log}"
    );
}
