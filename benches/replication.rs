//! RF=3 with acks=all beside RF=1, on three real `sluiced` processes on
//! 127.0.0.1–3 in one run: the same librdkafka producers and settings
//! write 1 KiB messages to a topic of each kind, round after round, and a
//! consumer reads them as they arrive. Reports throughput (absolute and
//! the RF=3 / RF=1 ratio) and latency: produce acknowledgement and end to
//! end (producer timestamp to consumer), p50 and p99.
//!
//! Run: `cargo bench --bench replication` (`-- --producers 4 --messages
//! 20000 --rounds 3`). Under `cargo test --all-targets` it only says so:
//! a benchmark reports figures, it asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::Cluster;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const MESSAGE_BYTES: usize = 1024;
/// Bound on one phase, whatever the machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

struct Options {
    producers: usize,
    messages: usize,
    rounds: usize,
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} {v}: not a number"))
            })
            .unwrap_or(default)
    };
    Some(Options {
        producers: value("--producers", 4),
        messages: value("--messages", 20_000),
        rounds: value("--rounds", 3),
    })
}

/// One phase's figures.
struct Phase {
    seconds: f64,
    messages: usize,
    ack_ms: Vec<f64>,
    end_to_end_ms: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// Reads `topic` from its end until `want` messages arrived or `stop`;
/// returns each message's producer-timestamp-to-arrival time.
fn consume(bootstrap: &str, topic: &str, want: usize, stop: Arc<AtomicBool>) -> Vec<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::End)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut latencies = Vec::with_capacity(want);
    let started = Instant::now();
    while latencies.len() < want && started.elapsed() < PHASE_TIMEOUT {
        if stop.load(Ordering::Relaxed) && latencies.len() >= want {
            break;
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && let Timestamp::CreateTime(sent) = message.timestamp()
        {
            latencies.push((now_ms() - sent) as f64);
        }
    }
    latencies
}

fn phase(bootstrap: &str, topic: &str, options: &Options) -> Phase {
    let total = options.producers * options.messages;
    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let (bootstrap, topic, stop) = (bootstrap.to_string(), topic.to_string(), stop.clone());
        std::thread::spawn(move || consume(&bootstrap, &topic, total, stop))
    };
    // The consumer is at the end before anything is written.
    std::thread::sleep(Duration::from_millis(1500));
    let payload = vec![b'x'; MESSAGE_BYTES];
    let started = Instant::now();
    let writers: Vec<_> = (0..options.producers)
        .map(|w| {
            let (bootstrap, topic, payload) =
                (bootstrap.to_string(), topic.to_string(), payload.clone());
            let messages = options.messages;
            std::thread::spawn(move || {
                let producer = producer(&bootstrap);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut acks = Vec::with_capacity(messages);
                    // At most this many unacknowledged per producer.
                    let mut window = std::collections::VecDeque::new();
                    for i in 0..messages {
                        let key = format!("{w}-{i}");
                        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                        let sent = Instant::now();
                        let delivery = producer
                            .send_result(record)
                            .map_err(|(error, _)| error)
                            .expect("queued");
                        window.push_back((sent, delivery));
                        if window.len() >= 1000 {
                            let (sent, delivery) = window.pop_front().expect("window");
                            delivery.await.expect("delivered").expect("acknowledged");
                            acks.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    for (sent, delivery) in window {
                        delivery.await.expect("delivered").expect("acknowledged");
                        acks.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    acks
                })
            })
        })
        .collect();
    let mut ack_ms = Vec::new();
    for writer in writers {
        ack_ms.extend(writer.join().expect("producer thread"));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut end_to_end_ms = reading.join().expect("consumer thread");
    ack_ms.sort_by(f64::total_cmp);
    end_to_end_ms.sort_by(f64::total_cmp);
    Phase {
        seconds,
        messages: total,
        ack_ms,
        end_to_end_ms,
    }
}

fn main() {
    let Some(options) = options() else {
        println!("replication benchmark: run it with `cargo bench --bench replication`");
        return;
    };
    let topics = format!(
        "\n[topics.rf1]\npartitions = {PARTITIONS}\nreplication_factor = 1\n\
         \n[topics.rf3]\npartitions = {PARTITIONS}\nreplication_factor = 3\nmin_insync_replicas = 2\n"
    );
    let cluster = Cluster::start(&topics);
    cluster.wait_formed(3, Duration::from_secs(60));
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka.to_string()).collect();
    let bootstrap = bootstrap.join(",");
    println!(
        "replication benchmark: 3 brokers on 127.0.0.1-3, {} producers (acks=all, idempotent, linger 5 ms) x {} messages of {MESSAGE_BYTES} B per phase, topics of {PARTITIONS} partitions, {} rounds",
        options.producers, options.messages, options.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=options.rounds {
        let mut rates = Vec::new();
        for topic in ["rf1", "rf3"] {
            let figures = phase(&bootstrap, topic, &options);
            let rate = figures.messages as f64 / figures.seconds;
            rates.push(rate);
            println!(
                "round {round} {topic}: {:.0} msg/s ({:.1} MB/s); ack p50 {:.1} ms p99 {:.1} ms; end-to-end p50 {:.1} ms p99 {:.1} ms ({} of {} read)",
                rate,
                rate * MESSAGE_BYTES as f64 / 1e6,
                percentile(&figures.ack_ms, 0.5),
                percentile(&figures.ack_ms, 0.99),
                percentile(&figures.end_to_end_ms, 0.5),
                percentile(&figures.end_to_end_ms, 0.99),
                figures.end_to_end_ms.len(),
                figures.messages
            );
        }
        ratios.push(rates[1] / rates[0]);
        println!(
            "round {round}: RF=3 / RF=1 throughput {:.2}",
            rates[1] / rates[0]
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median RF=3 / RF=1 throughput ratio over {} rounds: {:.2}",
        ratios.len(),
        ratios[ratios.len() / 2]
    );
}
