//! Idempotent producers of three client libraries, each on its defaults
//! with idempotence on, producing while the broker is SIGKILLed and
//! restarted twice: every message is acknowledged, and each partition then
//! holds exactly the messages sent to it, once each, in the order sent (no
//! duplicate from a retried batch, no gap).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::Daemon;
use common::wire::{connect, read_response, request_frame};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const TIMEOUT: Duration = Duration::from_secs(240);

/// fsync before acknowledging: an append waits for the sync before its
/// answer, so a kill often falls between append and answer, and the
/// producer's retry of that batch must be recognised as a duplicate.
fn topic_toml(topic: &str) -> String {
    format!("[topics.{topic}]\npartitions = {PARTITIONS}\nflush = \"fsync\"\n")
}

/// Reads every partition from the start and checks that partition p holds
/// exactly p, p + PARTITIONS, … below `count`, once each, in order.
fn assert_exactly_once_in_order(bootstrap: &str, topic: &str, count: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "idempotence-check")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen: Vec<Vec<usize>> = vec![Vec::new(); PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut total = 0;
    while total < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let value: usize = std::str::from_utf8(message.payload().expect("payload"))
            .unwrap()
            .parse()
            .unwrap();
        seen[message.partition() as usize].push(value);
        total += 1;
    }
    // Anything beyond `count` would be a duplicate: give it a moment to show.
    let extra_deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < extra_deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value = std::str::from_utf8(message.payload().unwrap()).unwrap();
            seen[message.partition() as usize].push(value.parse().unwrap());
        }
    }
    for (p, values) in seen.iter().enumerate() {
        let expected: Vec<usize> = (p..count).step_by(PARTITIONS as usize).collect();
        if *values != expected {
            let first_difference = values
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(values.len().min(expected.len()));
            panic!(
                "partition {p}: {} messages, expected {}; first difference at index {first_difference}: found {:?}, expected {:?}",
                values.len(),
                expected.len(),
                values.get(first_difference..first_difference + 5),
                expected.get(first_difference..first_difference + 5),
            );
        }
    }
}

/// Kills and restarts the daemon once `acked` passes each third of `count`.
struct Killer {
    thresholds: Vec<usize>,
    kills: usize,
}

impl Killer {
    fn new(count: usize) -> Killer {
        Killer {
            thresholds: vec![count / 3, 2 * count / 3],
            kills: 0,
        }
    }

    fn on_progress(&mut self, daemon: &mut Daemon, acked: usize) {
        if self.thresholds.first().is_some_and(|t| acked >= *t) {
            self.thresholds.remove(0);
            daemon.restart_after_kill();
            self.kills += 1;
        }
    }
}

struct Counted(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl ClientContext for Counted {}

impl ProducerContext for Counted {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.1.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[test]
fn librdkafka_idempotent_producer_through_two_kills() {
    const TOPIC: &str = "idem-rdkafka";
    const COUNT: usize = 30_000;
    let mut daemon = Daemon::start(&topic_toml(TOPIC));
    let (acked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let producer: BaseProducer<Counted> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .create_with_context(Counted(acked.clone(), failed.clone()))
        .unwrap();
    let mut killer = Killer::new(COUNT);
    let deadline = Instant::now() + TIMEOUT;
    let payloads: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    for (i, payload) in payloads.iter().enumerate() {
        // Keep at most 2,000 unacknowledged so the kills land mid-stream.
        while i - acked.load(Ordering::Relaxed) - failed.load(Ordering::Relaxed) > 2_000 {
            assert!(Instant::now() < deadline, "stalled at {i}");
            producer.poll(Duration::from_millis(5));
        }
        killer.on_progress(&mut daemon, acked.load(Ordering::Relaxed));
        let record: BaseRecord<'_, (), str> = BaseRecord::to(TOPIC)
            .partition(i as i32 % PARTITIONS)
            .payload(payload.as_str());
        producer.send(record).expect("queued");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(killer.kills, 2);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "deliveries failed");
    assert_eq!(acked.load(Ordering::Relaxed), COUNT);
    assert_exactly_once_in_order(&daemon.bootstrap(), TOPIC, COUNT);
}

fn cache_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/sluice")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/clients")
        .join(name)
}

/// Runs a client script that prints "acked N" lines and a final "done …"
/// line, killing and restarting the daemon as it goes.
fn run_client_through_kills(
    mut command: Command,
    daemon: &mut Daemon,
    count: usize,
) -> Vec<String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the client script");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut killer = Killer::new(count);
    let mut lines = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) => {
                if let Some(n) = line.strip_prefix("acked ") {
                    killer.on_progress(daemon, n.parse().unwrap_or(0));
                }
                let done = line.starts_with("done ");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "client did not finish: {lines:?}\nstderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "client failed: {lines:?}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(killer.kills, 2, "{lines:?}");
    let done = lines.last().unwrap();
    assert!(
        done.starts_with(&format!("done acked={count} failed=0")),
        "{done}"
    );
    lines
}

#[test]
fn kafka_python_default_producer_through_two_kills() {
    const TOPIC: &str = "idem-python";
    const COUNT: usize = 6_000;
    let python = std::env::var("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: run .ci/run, or: python3 -m venv ~/.cache/sluice/venv && ~/.cache/sluice/venv/bin/pip install 'kafka-python[crc32c,lz4,snappy,zstd]' (or set SLUICE_PYTHON)",
        python.display()
    );
    let mut daemon = Daemon::start(&topic_toml(TOPIC));
    let mut command = Command::new(python);
    command
        .arg(script("kafka_python_produce.py"))
        .arg(daemon.bootstrap())
        .arg(TOPIC)
        .arg(COUNT.to_string())
        .arg(PARTITIONS.to_string());
    let lines = run_client_through_kills(command, &mut daemon, COUNT);
    assert_eq!(lines[0], "idempotent True", "kafka-python's default");
    assert_exactly_once_in_order(&daemon.bootstrap(), TOPIC, COUNT);
}

#[test]
fn kafkajs_idempotent_producer_through_two_kills() {
    const TOPIC: &str = "idem-kafkajs";
    const COUNT: usize = 6_000;
    let modules = std::env::var("SLUICE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("node/node_modules"));
    assert!(
        modules.join("kafkajs").exists(),
        "kafkajs not found under {}: run .ci/run, or: mkdir -p ~/.cache/sluice/node && cd ~/.cache/sluice/node && npm install kafkajs@2 (or set SLUICE_NODE_MODULES)",
        modules.display()
    );
    let mut daemon = Daemon::start(&topic_toml(TOPIC));
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", &modules)
        .arg(script("kafkajs_produce.js"))
        .arg(daemon.bootstrap())
        .arg(TOPIC)
        .arg(COUNT.to_string())
        .arg(PARTITIONS.to_string());
    run_client_through_kills(command, &mut daemon, COUNT);
    assert_exactly_once_in_order(&daemon.bootstrap(), TOPIC, COUNT);
}

const PRODUCE_VERSION: i16 = 9;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// A raw connection, to send exactly the retries a client would.
struct Wire {
    stream: std::net::TcpStream,
    correlation_id: i32,
}

impl Wire {
    fn new(daemon: &Daemon) -> Wire {
        Wire {
            stream: connect(daemon),
            correlation_id: 0,
        }
    }

    fn call<R: kafka_protocol::protocol::Encodable, A: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &R,
    ) -> A {
        use std::io::Write;
        self.correlation_id += 1;
        let frame = request_frame(key, version, self.correlation_id, request);
        self.stream.write_all(&frame).unwrap();
        let mut body = Bytes::from(read_response(&mut self.stream));
        let header =
            ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        A::decode(&mut body, version).unwrap()
    }

    fn init_producer_id(&mut self) -> i64 {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let response: InitProducerIdResponse =
            self.call(ApiKey::InitProducerId, INIT_PRODUCER_ID_VERSION, &request);
        assert_eq!((response.error_code, response.producer_epoch), (0, 0));
        response.producer_id.0
    }

    /// Produces one batch of `count` records; returns (error code, base offset).
    fn produce(&mut self, pid: i64, epoch: i16, first_seq: i32, count: i32) -> (i16, i64) {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                producer_id: pid,
                producer_epoch: epoch,
                sequence: first_seq + i,
                ..sluice::log::producer_record(
                    i as usize,
                    1_700_000_000_000,
                    None,
                    Some(Bytes::from(format!("{epoch}/{}", first_seq + i))),
                )
            })
            .collect();
        let mut batch = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut batch, records.iter(), &options).unwrap();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("dup")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let response: ProduceResponse = self.call(ApiKey::Produce, PRODUCE_VERSION, &request);
        let partition = &response.responses[0].partition_responses[0];
        (partition.error_code, partition.base_offset)
    }
}

/// What a client's retry after a lost answer looks like on the wire: the
/// same batch again. Answered with the original offsets and not appended,
/// also after a SIGKILL (state rebuilt from the log) and a clean restart
/// (from the snapshot); gaps and fenced epochs refused; producer ids never
/// repeat across restarts.
#[test]
fn retried_batches_are_answered_with_their_original_offsets_across_restarts() {
    let mut daemon = Daemon::start("[topics.dup]\npartitions = 1\n");
    let mut wire = Wire::new(&daemon);
    let pid = wire.init_producer_id();
    let other_pid = wire.init_producer_id();
    assert_ne!(pid, other_pid);
    for (i, seq) in (0..15).step_by(3).enumerate() {
        assert_eq!(wire.produce(pid, 0, seq, 3), (0, 3 * i as i64));
    }
    assert_eq!(
        wire.produce(pid, 0, 9, 3),
        (0, 9),
        "a retry gets its original offset"
    );
    assert_eq!(wire.produce(pid, 0, 15, 1), (0, 15), "and appends nothing");

    daemon.restart_after_kill();
    let mut wire = Wire::new(&daemon);
    assert_eq!(
        wire.produce(pid, 0, 15, 1),
        (0, 15),
        "recognised after a crash"
    );
    assert_eq!(wire.produce(pid, 0, 12, 3), (0, 12));
    assert_eq!(wire.produce(pid, 0, 18, 1).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(wire.produce(pid, 0, 16, 2), (0, 16));
    // A bumped epoch starts again at sequence 0; the old epoch is fenced.
    assert_eq!(wire.produce(pid, 1, 0, 2), (0, 18));
    assert_eq!(wire.produce(pid, 0, 18, 1).0, INVALID_PRODUCER_EPOCH);
    let after_crash = wire.init_producer_id();
    assert!(after_crash != pid && after_crash != other_pid);

    assert_eq!(daemon.terminate(), Some(0));
    daemon.spawn();
    let mut wire = Wire::new(&daemon);
    assert_eq!(
        wire.produce(pid, 1, 0, 2),
        (0, 18),
        "recognised after a clean restart"
    );
    assert_eq!(wire.produce(pid, 1, 2, 1), (0, 20));
    let after_restart = wire.init_producer_id();
    assert!(![pid, other_pid, after_crash].contains(&after_restart));
}
