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

use common::Daemon;
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
