//! Replication as real processes: three `sluiced` on 127.0.0.1–3, a topic
//! with three replicas and `min.insync.replicas = 2`, librdkafka producing
//! with acks=all and idempotence (its defaults). A checker reads every
//! replica's segment files: followers copy the leader's batches byte for
//! byte, so replicas that caught up hold identical files. Failover is
//! measured and printed as a figure; the bound asserted is generous.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous next to the 2 s budget: a broken failover still fails it.
const FAILOVER_BOUND: Duration = Duration::from_secs(6);
/// The same for the 3 s budget of a leader that is also the controller.
const BOTH_BOUND: Duration = Duration::from_secs(8);
const PARTITIONS: i32 = 3;
const ORDERS: &str = "\n[topics.orders]\npartitions = 3\nreplication_factor = 3\n\
                      min_insync_replicas = 2\n";

/// The bytes of every segment file of `topic`-`partition` in `data_dir`,
/// in offset order: what the replica holds.
fn replica_bytes(data_dir: &Path, topic: &str, partition: i32) -> Vec<u8> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut logs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

/// Whether the replicas on `ids` of every partition hold the same bytes.
fn replicas_identical(cluster: &Cluster, ids: &[i32]) -> bool {
    (0..PARTITIONS).all(|p| {
        let first = replica_bytes(&cluster.data_dir(ids[0]), "orders", p);
        ids[1..]
            .iter()
            .all(|id| replica_bytes(&cluster.data_dir(*id), "orders", p) == first)
    })
}

/// (leader, isr) of each partition of `topic` from a node's `/status`.
fn partitions(status: &str, topic: &str) -> Vec<(i32, String)> {
    let mut lines = status
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("topic {topic} ")));
    lines.next();
    lines
        .take_while(|l| l.trim_start().starts_with("partition "))
        .map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix(key))
                    .unwrap_or("")
                    .to_string()
            };
            let leader = field("leader=").parse().unwrap_or(-1);
            let isr = l.split("isr=").nth(1).unwrap_or("");
            let isr = isr.split_inclusive(']').next().unwrap_or("").to_string();
            (leader, isr)
        })
        .collect()
}

/// Whether every partition of `orders` has a leader and all three
/// replicas in its ISR, by the active controller's `/status`.
fn all_in_sync(cluster: &Cluster, active: i32) -> bool {
    cluster.status(active).is_some_and(|s| {
        let now = partitions(&s, "orders");
        now.len() == PARTITIONS as usize
            && now
                .iter()
                .all(|(l, isr)| *l > 0 && isr.matches(',').count() == 2)
    })
}

/// Waits until `all_in_sync` (each preferred replica leading its partition).
fn wait_all_in_sync(cluster: &Cluster, active: i32) {
    let full = common::wait_until(Duration::from_secs(20), || all_in_sync(cluster, active));
    assert!(full, "{}", cluster.status(active).unwrap_or_default());
}

/// Each follower holds a replication stream per partition to its leader,
/// and the leader serves it: counted by both ends' QUIC stream gauges.
fn wait_replication_streams(cluster: &Cluster, active: i32) {
    let status = cluster.status(active).unwrap_or_default();
    let mut led: BTreeMap<i32, f64> = BTreeMap::new();
    for (leader, _) in partitions(&status, "orders") {
        *led.entry(leader).or_default() += 1.0;
    }
    let streams = |id: i32, kind: &str, peer: i32| {
        let name = format!("sluice_quic_open_streams{{kind=\"{kind}\",peer=\"{peer}\"}}");
        cluster.gauge(id, &name).unwrap_or(0.0)
    };
    let counted = common::wait_until(Duration::from_secs(10), || {
        led.iter().all(|(leader, n)| {
            cluster.ids().into_iter().filter(|f| f != leader).all(|f| {
                streams(f, "replica_fetch", *leader) >= *n
                    && streams(*leader, "replica_serve", f) >= *n
            })
        })
    });
    let scrapes: String = cluster
        .ids()
        .into_iter()
        .map(|id| format!("--- node {id}\n{}", cluster.scrape(id).unwrap_or_default()))
        .collect();
    assert!(counted, "leaders {led:?}, {status}\n{scrapes}");
}

fn producer(cluster: &Cluster) -> FutureProducer {
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka.to_string()).collect();
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Sends `payloads` to `orders`-`partition` pipelined; returns what was
/// acknowledged (payload and offset).
async fn send_all(
    producer: &FutureProducer,
    partition: i32,
    payloads: &[String],
) -> Vec<(String, i64)> {
    send_to(producer, "orders", partition, payloads).await
}

/// `send_all` to any topic.
async fn send_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payloads: &[String],
) -> Vec<(String, i64)> {
    let sends: Vec<_> = payloads
        .iter()
        .map(|payload| {
            let record = FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(payload);
            producer.send(record, Duration::from_secs(30))
        })
        .collect();
    let mut acknowledged = Vec::new();
    for (send, payload) in sends.into_iter().zip(payloads) {
        if let Ok(delivery) = send.await {
            acknowledged.push((payload.clone(), delivery.offset));
        }
    }
    acknowledged
}

/// Writes one message at a time to `orders`-`partition` until one is
/// acknowledged (30 s at most): how long after `since` that was, and what
/// was acknowledged.
fn write_again(
    runtime: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    partition: i32,
    since: Instant,
) -> (Option<Duration>, Vec<(String, i64)>) {
    let mut acknowledged = Vec::new();
    let mut attempt = 0;
    while acknowledged.is_empty() && since.elapsed() < Duration::from_secs(30) {
        attempt += 1;
        let payload = vec![format!("after-{partition}-{attempt}")];
        acknowledged = runtime.block_on(send_all(producer, partition, &payload));
    }
    let written_again = (!acknowledged.is_empty()).then(|| since.elapsed());
    (written_again, acknowledged)
}

/// Everything in every partition of `orders`, read from the start.
fn consume_all(cluster: &Cluster, from: i32, want: usize) -> BTreeMap<i32, Vec<(i64, String)>> {
    consume_topic(cluster, from, "orders", PARTITIONS, want)
}

/// Everything in `partitions` partitions of `topic`, read from the start.
fn consume_topic(
    cluster: &Cluster,
    from: i32,
    topic: &str,
    partitions: i32,
    want: usize,
) -> BTreeMap<i32, Vec<(i64, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.node(from).kafka.to_string())
        .set("group.id", "replication-checker")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.values().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let text = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
            seen.entry(m.partition())
                .or_default()
                .push((m.offset(), text));
        }
    }
    seen
}

/// acks=all writes reach every replica (identical segment files); the
/// leader of a partition is SIGKILLed: a new leader from the ISR takes
/// writes again within the budget, nothing acknowledged is lost or
/// duplicated, and the killed broker catches up when it returns.
#[test]
fn acks_all_writes_are_on_every_replica_and_survive_the_leaders_sigkill() {
    leader_sigkill(false);
}

/// The same when the leader SIGKILLed is also the active controller: a new
/// controller first, then the fencing and the new leader (budget 3 s).
#[test]
fn acks_all_writes_survive_the_sigkill_of_a_leader_that_is_the_active_controller() {
    leader_sigkill(true);
}

fn leader_sigkill(controller: bool) {
    let _serial = serial();
    let mut cluster = Cluster::start(ORDERS);
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    wait_all_in_sync(&cluster, active);
    wait_replication_streams(&cluster, active);
    let producer = producer(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut acknowledged: BTreeMap<i32, Vec<(String, i64)>> = BTreeMap::new();
    const FIRST: usize = 300;
    let started = Instant::now();
    for p in 0..PARTITIONS {
        let payloads: Vec<String> = (0..FIRST).map(|i| format!("orders-{p}-{i}")).collect();
        let acked = runtime.block_on(send_all(&producer, p, &payloads));
        assert_eq!(acked.len(), FIRST, "partition {p}:\n{}", cluster.logs());
        acknowledged.entry(p).or_default().extend(acked);
    }
    println!(
        "figure: {} acks=all messages to RF=3 in {:.3} s (sequential partitions, pipelined)",
        FIRST * PARTITIONS as usize,
        started.elapsed().as_secs_f64()
    );
    let identical = common::wait_until(Duration::from_secs(20), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(identical, "replicas differ:\n{}", cluster.logs());

    // SIGKILL a partition leader that is (or is not) the active controller.
    let status = cluster.status(active).unwrap();
    let now = partitions(&status, "orders");
    let victim = now
        .iter()
        .map(|(l, _)| *l)
        .find(|l| (*l == active) == controller)
        .unwrap_or_else(|| panic!("no leader fits (controller {active}): {now:?}"));
    let victim_partition = now.iter().position(|(l, _)| *l == victim).unwrap() as i32;
    let killed = Instant::now();
    cluster.kill(victim);
    let (written_again, acked) = write_again(&runtime, &producer, victim_partition, killed);
    acknowledged
        .entry(victim_partition)
        .or_default()
        .extend(acked);
    let written_again =
        written_again.unwrap_or_else(|| panic!("no write after the kill:\n{}", cluster.logs()));
    let whom = match controller {
        true => "partition leader and active controller",
        false => "partition leader",
    };
    println!(
        "figure: {whom} SIGKILLed, acks=all producer writing again after {:.3} s",
        written_again.as_secs_f64()
    );
    let bound = match controller {
        true => BOTH_BOUND,
        false => FAILOVER_BOUND,
    };
    assert!(written_again <= bound, "{written_again:?}");
    // Two replicas remain, min.insync.replicas = 2: every partition takes writes.
    for p in 0..PARTITIONS {
        let payloads: Vec<String> = (0..100).map(|i| format!("orders-{p}-late-{i}")).collect();
        let acked = runtime.block_on(send_all(&producer, p, &payloads));
        assert_eq!(acked.len(), 100, "partition {p}:\n{}", cluster.logs());
        acknowledged.entry(p).or_default().extend(acked);
    }
    let reader = cluster.ids().into_iter().find(|id| *id != victim).unwrap();
    let total: usize = acknowledged.values().map(Vec::len).sum();
    let seen = consume_all(&cluster, reader, total);
    for p in 0..PARTITIONS {
        let got = seen.get(&p).cloned().unwrap_or_default();
        let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
        let mut unique = offsets.clone();
        unique.dedup();
        assert_eq!(offsets, unique, "partition {p}: an offset twice");
        let payloads: Vec<&String> = got.iter().map(|(_, t)| t).collect();
        let mut distinct = payloads.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), payloads.len(), "partition {p}: a duplicate");
        for (payload, offset) in &acknowledged[&p] {
            assert!(
                got.iter().any(|(o, t)| o == offset && t == payload),
                "partition {p}: acknowledged {payload} at {offset} is lost"
            );
        }
    }

    // The killed broker returns and catches up: identical replicas again.
    cluster.spawn(victim);
    cluster.wait_formed(3, FORM_TIMEOUT);
    let caught_up = common::wait_until(Duration::from_secs(30), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(
        caught_up,
        "the returned broker never caught up:\n{}",
        cluster.logs()
    );
    let rejoined = common::wait_until(Duration::from_secs(30), || {
        let active = cluster.active_controller().unwrap_or(active);
        cluster.status(active).is_some_and(|s| {
            partitions(&s, "orders")
                .iter()
                .all(|(_, isr)| isr.contains(&victim.to_string()))
        })
    });
    assert!(
        rejoined,
        "not back in every ISR:\n{}",
        cluster
            .status(cluster.active_controller().unwrap_or(active))
            .unwrap_or_default()
    );
    drop(producer);
}

/// What the background producer of the rolling-restart test saw.
#[derive(Default)]
struct Produced {
    acknowledged: Vec<(i32, i64, String)>,
    failures: Vec<String>,
    /// The longest time between two acknowledgements.
    longest_gap: Duration,
}

/// Produces acks=all to every partition of `orders` in rounds of 30
/// messages until `stop` is set, or a bound on count or time is reached.
fn produce_until(
    producer: FutureProducer,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Produced {
    const MESSAGES_MAX: usize = 60_000;
    const TIME_MAX: Duration = Duration::from_secs(240);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut produced = Produced::default();
    let started = Instant::now();
    let mut last_ack = Instant::now();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && i < MESSAGES_MAX
        && started.elapsed() < TIME_MAX
    {
        let round: Vec<(i32, String)> = (i..i + 30)
            .map(|n| ((n % PARTITIONS as usize) as i32, format!("roll-{n}")))
            .collect();
        i += round.len();
        runtime.block_on(async {
            let sends: Vec<_> = round
                .iter()
                .map(|(p, payload)| {
                    let record = FutureRecord::<(), _>::to("orders")
                        .partition(*p)
                        .payload(payload);
                    producer.send(record, Duration::from_secs(30))
                })
                .collect();
            for (send, (p, payload)) in sends.into_iter().zip(&round) {
                match send.await {
                    Ok(delivery) => {
                        produced.longest_gap = produced.longest_gap.max(last_ack.elapsed());
                        last_ack = Instant::now();
                        produced
                            .acknowledged
                            .push((*p, delivery.offset, payload.clone()));
                    }
                    Err((error, _)) => produced.failures.push(format!("{payload}: {error}")),
                }
            }
        });
    }
    produced
}

/// A rolling restart (SIGTERM, start, wait until back in every ISR, next
/// broker) under a continuous acks=all produce: every broker hands its
/// leaderships over before it exits, no write fails, nothing acknowledged
/// is lost or duplicated, and `sluiced status --wait-in-sync` says when the
/// next broker may go.
#[test]
fn a_rolling_restart_under_acks_all_produce_fails_and_loses_nothing() {
    let _serial = serial();
    let mut cluster = Cluster::start(ORDERS);
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    wait_all_in_sync(&cluster, active);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let (producer, stop) = (producer(&cluster), stop.clone());
        std::thread::spawn(move || produce_until(producer, stop))
    };
    for id in cluster.ids() {
        let handed = cluster.terminate(id, Duration::from_secs(70));
        let (took, clean) =
            handed.unwrap_or_else(|| panic!("node {id} did not exit:\n{}", cluster.log(id)));
        assert!(
            clean,
            "node {id} exited with a failure:\n{}",
            cluster.log(id)
        );
        let log = cluster.log(id);
        assert!(
            log.contains("controlled_shutdown_done"),
            "node {id} did not hand over:\n{log}"
        );
        println!(
            "figure: broker {id} handed over and exited {:.3} s after SIGTERM",
            took.as_secs_f64()
        );
        cluster.spawn(id);
        let waited = Command::new(common::sluiced_bin())
            .arg("status")
            .arg("--config")
            .arg(&cluster.spec_path)
            .arg("--wait-in-sync")
            .arg(id.to_string())
            .arg("--timeout")
            .arg("60")
            .output()
            .unwrap();
        assert!(
            waited.status.success(),
            "broker {id} never back in sync: {}{}\n{}",
            String::from_utf8_lossy(&waited.stdout),
            String::from_utf8_lossy(&waited.stderr),
            cluster.logs()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let produced = producing.join().unwrap();
    println!(
        "figure: rolling restart of 3 brokers under acks=all produce: {} acknowledged, {} failed, longest gap between acknowledgements {:.3} s",
        produced.acknowledged.len(),
        produced.failures.len(),
        produced.longest_gap.as_secs_f64()
    );
    assert!(
        produced.failures.is_empty(),
        "{:?}",
        &produced.failures[..produced.failures.len().min(10)]
    );
    assert!(!produced.acknowledged.is_empty());
    let seen = consume_all(&cluster, 1, produced.acknowledged.len());
    for p in 0..PARTITIONS {
        let got = seen.get(&p).cloned().unwrap_or_default();
        let want: Vec<(i64, String)> = produced
            .acknowledged
            .iter()
            .filter(|(q, _, _)| *q == p)
            .map(|(_, o, t)| (*o, t.clone()))
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "partition {p}: a loss or a duplicate"
        );
        assert_eq!(got, want, "partition {p}");
    }
    assert!(
        replicas_identical(&cluster, &[1, 2, 3])
            || common::wait_until(Duration::from_secs(20), || replicas_identical(
                &cluster,
                &[1, 2, 3]
            ))
    );
}

/// The ISR of `topic`-`partition` from `/status` (`[1, 2, 3]`).
fn isr_of(cluster: &Cluster, active: i32, partition: usize) -> String {
    cluster
        .status(active)
        .map(|s| partitions(&s, "orders")[partition].1.clone())
        .unwrap_or_default()
}

/// A follower whose replication to its leader is cut by nft (its
/// heartbeats to the active controller still flowing) leaves the ISR after
/// `replica.lag.time.max.ms`, and acks=all writes go on with the other two
/// (min.insync.replicas = 2); healed, it catches up and rejoins. A
/// SIGSTOPped follower stops heartbeating: it is fenced and leaves the ISR
/// at once, and rejoins after SIGCONT.
#[test]
fn a_follower_cut_off_or_stopped_leaves_the_isr_and_rejoins() {
    let _serial = serial();
    let cluster = Cluster::start(&format!(
        "{ORDERS}\n[replication]\nreplica_lag_time_max_ms = 2000\n"
    ));
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    let all_in = |cluster: &Cluster| all_in_sync(cluster, active);
    assert!(
        common::wait_until(Duration::from_secs(20), || all_in(&cluster)),
        "{}",
        cluster.status(active).unwrap_or_default()
    );
    let now = partitions(&cluster.status(active).unwrap(), "orders");
    let Some(partition) = now.iter().position(|(l, _)| *l != active) else {
        panic!("the active controller {active} leads every partition: {now:?}");
    };
    let leader = now[partition].0;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != active)
        .unwrap();
    let producer = producer(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |what: &str, n: usize| {
        let payloads: Vec<String> = (0..n).map(|i| format!("{what}-{i}")).collect();
        runtime.block_on(send_all(&producer, partition as i32, &payloads))
    };
    assert_eq!(send("before", 50).len(), 50);
    let shrinks_before = cluster
        .gauge(leader, "sluice_isr_shrinks_total")
        .unwrap_or(0.0);

    let cut = common::cluster::Isolation::cut_between(follower, leader);
    let cut_at = Instant::now();
    let during = send("during", 50);
    let written = cut_at.elapsed();
    assert_eq!(during.len(), 50, "{}", cluster.logs());
    let isr = isr_of(&cluster, active, partition);
    assert!(!isr.contains(&follower.to_string()), "{isr}");
    println!(
        "figure: follower {follower} cut from leader {leader} (lag time 2 s): acks=all writes went on after {:.3} s, ISR {isr}",
        written.as_secs_f64()
    );
    assert!(
        cluster
            .gauge(leader, "sluice_isr_shrinks_total")
            .unwrap_or(0.0)
            > shrinks_before
    );
    assert!(
        cluster
            .gauge(leader, "sluice_under_replicated_partitions")
            .unwrap_or(0.0)
            >= 1.0
    );
    let status = cluster.status(active).unwrap_or_default();
    assert!(
        status.contains(&format!("broker {follower} unfenced")),
        "its heartbeats kept flowing: {status}"
    );
    let expands_before = cluster
        .gauge(leader, "sluice_isr_expands_total")
        .unwrap_or(0.0);
    cut.heal();
    let healed = Instant::now();
    assert!(
        common::wait_until(Duration::from_secs(30), || all_in(&cluster)),
        "never rejoined:\n{}",
        cluster.status(active).unwrap_or_default()
    );
    println!(
        "figure: healed follower back in the ISR after {:.3} s",
        healed.elapsed().as_secs_f64()
    );
    assert!(
        cluster
            .gauge(leader, "sluice_isr_expands_total")
            .unwrap_or(0.0)
            > expands_before
    );

    // SIGSTOP: no heartbeats, fenced after the session, out of every ISR.
    let pid = cluster.pid(follower).unwrap();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let stopped = Instant::now();
    let out = common::wait_until(Duration::from_secs(10), || {
        cluster.status(active).is_some_and(|s| {
            partitions(&s, "orders")
                .iter()
                .all(|(_, isr)| !isr.contains(&follower.to_string()))
        })
    });
    let left = stopped.elapsed();
    signal("-CONT");
    assert!(out, "{}", cluster.status(active).unwrap_or_default());
    println!(
        "figure: SIGSTOPped follower out of every ISR after {:.3} s",
        left.as_secs_f64()
    );
    assert_eq!(send("stopped", 50).len(), 50);
    assert!(
        common::wait_until(Duration::from_secs(30), || all_in(&cluster)),
        "never rejoined after SIGCONT:\n{}",
        cluster.status(active).unwrap_or_default()
    );
    let identical = common::wait_until(Duration::from_secs(20), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(
        identical,
        "replicas differ: {}\n{}",
        replica_sizes(&cluster),
        cluster.status(active).unwrap_or_default()
    );
}

/// Whether `needle` occurs in `haystack` (a payload in segment bytes:
/// librdkafka sends uncompressed by default).
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// A cluster of `orders` all in sync, and a partition (with its leader)
/// that the active controller does not lead.
/// Returns (cluster, active controller, partition, leader).
fn leader_not_the_controller() -> (Cluster, i32, i32, i32) {
    let cluster = Cluster::start(ORDERS);
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    wait_all_in_sync(&cluster, active);
    let now = partitions(&cluster.status(active).unwrap(), "orders");
    let Some(partition) = now.iter().position(|(l, _)| *l != active) else {
        panic!("the active controller {active} leads every partition: {now:?}");
    };
    let leader = now[partition].0;
    (cluster, active, partition as i32, leader)
}

/// A leader's host gone silent for everyone, clients included (nft drops
/// its QUIC datagrams and its Kafka port: a power cut, no reset anywhere).
/// The cluster fails over as for a SIGKILL, but a client hears of it only
/// when its request to the silent host times out: librdkafka's
/// `socket.timeout.ms` (60 s by default, capped by `message.timeout.ms`).
/// A producer that bounds it (1 s here, as OPERATIONS advises for such
/// producers) writes again within the failover budget, and nothing it had
/// acknowledged is lost.
#[test]
fn a_leader_host_gone_silent_is_replaced_and_a_client_with_a_socket_timeout_moves_on() {
    let _serial = serial();
    let (cluster, _, partition, leader) = leader_not_the_controller();
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka.to_string()).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "1000")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before: Vec<String> = (0..100).map(|i| format!("before-{i}")).collect();
    let mut acknowledged = runtime.block_on(send_all(&producer, partition, &before));
    assert_eq!(acknowledged.len(), 100, "{}", cluster.logs());

    let silent =
        common::cluster::Isolation::cut_off_entirely(leader, cluster.node(leader).kafka.port());
    let cut_at = Instant::now();
    let (written_again, acked) = write_again(&runtime, &producer, partition, cut_at);
    acknowledged.extend(acked);
    let written_again =
        written_again.unwrap_or_else(|| panic!("no write after the cut:\n{}", cluster.logs()));
    println!(
        "figure: partition leader's host gone silent (clients too), producer with socket.timeout.ms=1000 writing again after {:.3} s",
        written_again.as_secs_f64()
    );
    assert!(written_again <= FAILOVER_BOUND, "{written_again:?}");
    silent.heal();
    let reader = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let seen = consume_all(&cluster, reader, acknowledged.len());
    let read: BTreeMap<&str, i64> = seen
        .get(&partition)
        .into_iter()
        .flatten()
        .map(|(offset, payload)| (payload.as_str(), *offset))
        .collect();
    for (payload, offset) in &acknowledged {
        assert_eq!(read.get(payload.as_str()), Some(offset), "{payload}");
    }
    let identical = common::wait_until(Duration::from_secs(20), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(identical, "replicas differ: {}", replica_sizes(&cluster));
}

/// A running leader cut off from the other two by nft (UDP dropped on lo,
/// so no reset reaches anyone; its Kafka port still answers clients): the
/// controller fences it and elects a new leader from the ISR, and acks=all
/// writes go on there. What the cut-off leader took alone (acks=1 writes
/// it acknowledged before its lease ran out) is never acknowledged to an
/// acks=all producer, and is truncated when it returns: the replicas end
/// identical, without those writes.
#[test]
fn a_leader_cut_off_is_replaced_and_truncates_what_it_took_alone_when_it_returns() {
    let _serial = serial();
    let (cluster, active, partition, leader) = leader_not_the_controller();
    let producer = producer(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut acknowledged = Vec::new();
    let before: Vec<String> = (0..100).map(|i| format!("before-{i}")).collect();
    acknowledged.extend(runtime.block_on(send_all(&producer, partition, &before)));
    assert_eq!(acknowledged.len(), 100, "{}", cluster.logs());
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka.to_string()).collect();
    let alone: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap.join(","))
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("message.timeout.ms", "5000")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    // Both producers know the leader before the cut.
    let warm = runtime.block_on(send_all(&alone, partition, &["warm".to_string()]));
    assert_eq!(warm.len(), 1);
    acknowledged.extend(warm);
    assert!(common::wait_until(Duration::from_secs(20), || {
        replicas_identical(&cluster, &[1, 2, 3])
    }));

    let cut = common::cluster::Isolation::cut_off(leader);
    let cut_at = Instant::now();
    let solo: Vec<String> = (0..20).map(|i| format!("alone-{i}")).collect();
    let taken_alone = runtime.block_on(send_all(&alone, partition, &solo));
    let (written_again, acked) = write_again(&runtime, &producer, partition, cut_at);
    acknowledged.extend(acked);
    let written_again =
        written_again.unwrap_or_else(|| panic!("no write after the cut:\n{}", cluster.logs()));
    println!(
        "figure: partition leader cut off by nft, acks=all producer writing again after {:.3} s ({} acks=1 writes taken by the cut-off leader alone)",
        written_again.as_secs_f64(),
        taken_alone.len()
    );
    assert!(written_again <= FAILOVER_BOUND, "{written_again:?}");
    assert!(
        !taken_alone.is_empty(),
        "the cut-off leader took no acks=1 write before its lease ran out"
    );
    let after: Vec<String> = (0..100).map(|i| format!("after-cut-{i}")).collect();
    let acked = runtime.block_on(send_all(&producer, partition, &after));
    assert_eq!(acked.len(), 100, "{}", cluster.logs());
    acknowledged.extend(acked);
    let moved = partitions(&cluster.status(active).unwrap(), "orders")[partition as usize].0;
    assert!(moved != leader && moved > 0, "leader {moved}");

    cut.heal();
    wait_all_in_sync(&cluster, active);
    let identical = common::wait_until(Duration::from_secs(30), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(
        identical,
        "replicas differ: {}\n{}",
        replica_sizes(&cluster),
        cluster.logs()
    );
    assert!(
        cluster.log(leader).contains("replica_truncated"),
        "the returned leader did not truncate:\n{}",
        cluster.log(leader)
    );
    for id in cluster.ids() {
        let bytes = replica_bytes(&cluster.data_dir(id), "orders", partition);
        for (payload, _) in &taken_alone {
            assert!(!holds(&bytes, payload), "{payload} is still on broker {id}");
        }
    }
    let reader = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let seen = consume_all(&cluster, reader, acknowledged.len());
    let got = seen.get(&partition).cloned().unwrap_or_default();
    let payloads: Vec<&String> = got.iter().map(|(_, t)| t).collect();
    let mut distinct = payloads.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), payloads.len(), "a duplicate");
    for (payload, offset) in &acknowledged {
        assert!(
            got.iter().any(|(o, t)| o == offset && t == payload),
            "acknowledged {payload} at {offset} is lost"
        );
    }
    drop((producer, alone));
}

/// The seed's first KIP-101 story, scripted: a follower restarts after the
/// leader advanced the high watermark past what the follower last heard,
/// then the leader dies and the follower becomes leader. It never
/// truncated to its high watermark (only by leader epochs: nothing of its
/// log diverged), so every acknowledged write is kept. The partition lives
/// on brokers 4 (leader) and 5, neither of them a controller voter (1–3),
/// so the quorum and its active controller outlive both events.
#[test]
fn kip_101_a_restarted_follower_then_the_leaders_death_keeps_every_acknowledged_write() {
    let _serial = serial();
    let story = "\n[topics.story]\npartitions = 1\nreplicas = [[4, 5]]\nmin_insync_replicas = 1\n";
    let mut cluster = Cluster::start_nodes(&[1, 2, 3, 4, 5], &[1, 2, 3], story);
    cluster.wait_formed(5, FORM_TIMEOUT);
    let (leader, follower) = (4, 5);
    let story_state = |cluster: &Cluster| {
        cluster
            .active_controller()
            .and_then(|a| cluster.status(a))
            .and_then(|s| partitions(&s, "story").first().cloned())
    };
    let both = common::wait_until(Duration::from_secs(20), || {
        story_state(&cluster).is_some_and(|(l, isr)| l == leader && isr.matches(',').count() == 1)
    });
    assert!(both, "{}", cluster.logs());
    let producer = producer(&cluster);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |payloads: &[String]| runtime.block_on(send_to(&producer, "story", 0, payloads));
    let payloads: Vec<String> = (0..200).map(|i| format!("story-a-{i:04}")).collect();
    let acknowledged = send(&payloads);
    assert_eq!(acknowledged.len(), payloads.len(), "{}", cluster.logs());

    // The follower restarts (SIGKILL: what it wrote is in the page cache,
    // its checkpointed high watermark at most what it last heard).
    cluster.kill(follower);
    let log_before = cluster.log(follower).len();
    cluster.spawn(follower);
    // Back means registered again (its old incarnation was fenced out of
    // the ISR first), unfenced, and in the ISR once more.
    let back = common::wait_until(Duration::from_secs(30), || {
        cluster.log(follower)[log_before..].contains("fenced=false")
            && story_state(&cluster).is_some_and(|(l, isr)| {
                l == leader && isr.contains(&follower.to_string()) && isr.matches(',').count() == 1
            })
    });
    assert!(back, "the follower never rejoined:\n{}", cluster.logs());
    let truncated = cluster.log(follower)[log_before..]
        .lines()
        .any(|l| l.contains("replica_truncated") && l.contains("story-0"));
    assert!(
        !truncated,
        "the restarted follower truncated story-0:\n{}",
        cluster.log(follower)
    );

    // The leader dies: the follower is the only ISR member left.
    cluster.kill(leader);
    let elected = common::wait_until(Duration::from_secs(30), || {
        story_state(&cluster).is_some_and(|(l, _)| l == follower)
    });
    assert!(elected, "the follower was not elected:\n{}", cluster.logs());
    let bytes = replica_bytes(&cluster.data_dir(follower), "story", 0);
    for (payload, _) in &acknowledged {
        assert!(holds(&bytes, payload), "acknowledged {payload} is lost");
    }
    let more: Vec<String> = (0..50).map(|i| format!("story-a-after-{i:04}")).collect();
    let acked = send(&more);
    assert_eq!(acked.len(), more.len(), "{}", cluster.logs());
    let last = acknowledged.iter().map(|(_, o)| *o).max().unwrap();
    assert!(acked.iter().all(|(_, o)| *o > last), "{acked:?}");
    drop(producer);
}

/// The byte offsets where the record batches of `path` begin (base offset
/// 8 bytes, then the batch length 4 bytes), and the file's length.
fn batch_starts(path: &Path) -> (Vec<u64>, u64) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut starts = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let length = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 12 + length > bytes.len() {
            break;
        }
        starts.push(at as u64);
        at += 12 + length;
    }
    (starts, bytes.len() as u64)
}

/// Cuts the last `batches` record batches off the only segment of
/// `topic`-0 on node `id`, as losing the page cache in a power cut would
/// (the topic is never fsynced, so nothing of it was on disk for sure).
fn lose_unsynced_tail(cluster: &Cluster, id: i32, topic: &str, batches: usize) {
    let dir = cluster.data_dir(id).join(format!("{topic}-0"));
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let (starts, _) = batch_starts(&segment);
    assert!(
        starts.len() > batches,
        "{} batches on node {id}",
        starts.len()
    );
    let keep = starts[starts.len() - batches];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(keep).unwrap();
}

/// The seed's second KIP-101 story, scripted: both replicas of a partition
/// crash with unsynced data (SIGKILL, then the page cache's loss emulated
/// by cutting each segment's tail, the ISR member's more). The one the
/// controller kept in the ISR returns first, leads at a new epoch and takes
/// new writes at offsets the other still holds from the old epoch. When the
/// other returns it truncates that divergent suffix by leader epochs, and
/// the two logs end identical, with every new write. Two of the three
/// controller voters stay up: the partition lives on brokers 3 and 4.
#[test]
fn kip_101_b_both_replicas_lose_unsynced_data_and_the_logs_end_identical() {
    let _serial = serial();
    let story = "\n[topics.story]\npartitions = 1\nreplicas = [[4, 3]]\n\
                 min_insync_replicas = 1\nflush_interval_ms = \"unlimited\"\n";
    let mut cluster = Cluster::start_nodes(&[1, 2, 3, 4], &[1, 2, 3], story);
    let active = cluster.wait_formed(4, FORM_TIMEOUT);
    let isr_of_story = |cluster: &Cluster| {
        cluster
            .active_controller()
            .and_then(|a| cluster.status(a))
            .and_then(|s| partitions(&s, "story").first().cloned())
    };
    let both = common::wait_until(Duration::from_secs(20), || {
        isr_of_story(&cluster).is_some_and(|(l, isr)| l == 4 && isr.matches(',').count() == 1)
    });
    assert!(both, "{}", cluster.status(active).unwrap_or_default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |producer: &FutureProducer, topic_payloads: &[String]| {
        let mut acked = Vec::new();
        // One at a time: one batch each, so a tail can be cut by batches.
        for payload in topic_payloads {
            let record = FutureRecord::<(), _>::to("story")
                .partition(0)
                .payload(payload);
            match runtime.block_on(producer.send(record, Duration::from_secs(30))) {
                Ok(delivery) => acked.push((payload.clone(), delivery.offset)),
                Err((error, _)) => eprintln!("story (b): {payload} not written: {error}"),
            }
        }
        acked
    };
    let first: Vec<String> = (0..20).map(|i| format!("old-epoch-{i}")).collect();
    let producer = self::producer(&cluster);
    assert_eq!(
        send(&producer, &first).len(),
        first.len(),
        "{}",
        cluster.logs()
    );
    let same = |cluster: &Cluster| {
        replica_bytes(&cluster.data_dir(3), "story", 0)
            == replica_bytes(&cluster.data_dir(4), "story", 0)
    };
    assert!(common::wait_until(Duration::from_secs(20), || same(
        &cluster
    )));

    cluster.kill(4);
    cluster.kill(3);
    // Both fenced; the controller keeps the last one in the ISR.
    let kept = common::wait_until(Duration::from_secs(20), || {
        isr_of_story(&cluster).is_some_and(|(l, isr)| l < 0 && isr.matches(',').count() == 0)
    });
    assert!(kept, "{}", cluster.logs());
    let (_, isr) = isr_of_story(&cluster).unwrap();
    let first_back: i32 = isr
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("isr {isr}"));
    let second_back = if first_back == 3 { 4 } else { 3 };
    lose_unsynced_tail(&cluster, first_back, "story", 6);
    lose_unsynced_tail(&cluster, second_back, "story", 2);

    cluster.spawn(first_back);
    let leads = common::wait_until(Duration::from_secs(30), || {
        isr_of_story(&cluster).is_some_and(|(l, _)| l == first_back)
    });
    assert!(leads, "{}", cluster.logs());
    // A producer of after the power cut: the first one's sequence numbers
    // run past what the cluster kept, which an idempotent producer reports
    // as the loss it is (beyond the page-cache policy's limit).
    let producer = self::producer(&cluster);
    let new: Vec<String> = (0..10).map(|i| format!("new-epoch-{i}")).collect();
    let acked = send(&producer, &new);
    assert_eq!(acked.len(), new.len(), "{}", cluster.logs());

    let before = cluster.log(second_back).len();
    cluster.spawn(second_back);
    let identical = common::wait_until(Duration::from_secs(30), || {
        same(&cluster)
            && isr_of_story(&cluster).is_some_and(|(_, isr)| isr.matches(',').count() == 1)
    });
    assert!(
        identical,
        "the logs differ: node 3 {} bytes, node 4 {} bytes\n{}",
        replica_bytes(&cluster.data_dir(3), "story", 0).len(),
        replica_bytes(&cluster.data_dir(4), "story", 0).len(),
        cluster.logs()
    );
    assert!(
        cluster.log(second_back)[before..].contains("replica_truncated"),
        "the second replica back did not truncate its divergent suffix:\n{}",
        cluster.log(second_back)
    );
    let bytes = replica_bytes(&cluster.data_dir(second_back), "story", 0);
    for (payload, _) in &acked {
        assert!(holds(&bytes, payload), "{payload} is missing");
    }
    assert!(
        !holds(&bytes, "old-epoch-15"),
        "the divergent suffix is still there"
    );
    drop(producer);
}

/// Each replica's byte count per partition, for a failure message.
fn replica_sizes(cluster: &Cluster) -> String {
    (0..PARTITIONS)
        .map(|p| {
            let sizes: Vec<String> = cluster
                .ids()
                .iter()
                .map(|id| {
                    let bytes = replica_bytes(&cluster.data_dir(*id), "orders", p).len();
                    format!("{id}:{bytes}")
                })
                .collect();
            format!("orders-{p} [{}]", sizes.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An admitted peer (a real node certificate) that sends garbage on a
/// replication stream, or a fetch in another replica's name, has its
/// connection closed, and the leader logs why; replication and acks=all
/// writes carry on.
#[test]
fn bad_input_on_a_replication_stream_is_refused_and_replication_carries_on() {
    use sluice::transport::frame::{FrameKind, write_frame};
    let _serial = serial();
    let cluster = Cluster::start(ORDERS);
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    wait_all_in_sync(&cluster, active);
    let status = cluster.status(active).unwrap();
    let orders_id = status
        .lines()
        .find(|l| l.trim_start().starts_with("topic orders "))
        .and_then(|l| l.split("id=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .expect("the topic id in /status");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tls = cluster.dir.path().join("tls");
        let material = sluice::transport::tls::TlsMaterial::load(&tls, 3).unwrap();
        let node3 = sluice::transport::quic::NodeEndpoint::bind(
            &material,
            "test-cluster",
            "127.0.0.4:0".parse().unwrap(),
            common::cluster::NODES.to_vec(),
        )
        .unwrap();
        let leader = cluster.node(1);
        let garbage: &[u8] = b"\x00\x0fnot a fetch at all";
        let impersonation = sluice::replication::ReplicaFetch {
            replica_id: 2,
            broker_epoch: 1,
            topic_id: orders_id,
            partition: 0,
            current_leader_epoch: -1,
            fetch_offset: 0,
            last_fetched_epoch: -1,
            log_start_offset: 0,
            max_bytes: 1024,
            max_wait_ms: 0,
        }
        .encode();
        for payload in [garbage, &impersonation[..]] {
            let peer = node3.connect(1, leader.quic).await.expect("admitted");
            let (mut send, mut recv) = peer.connection.open_bi().await.unwrap();
            write_frame(&mut send, FrameKind::Message, payload)
                .await
                .unwrap();
            let answer =
                tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
            assert!(
                matches!(answer, Ok(Err(_))),
                "the connection stayed open: {answer:?}"
            );
        }
    });
    let logged = common::wait_until(Duration::from_secs(5), || {
        cluster.log(1).matches("replica_stream_refused").count() >= 2
    });
    assert!(logged, "{}", cluster.log(1));
    let producer = producer(&cluster);
    for p in 0..PARTITIONS {
        let payloads: Vec<String> = (0..20).map(|i| format!("after-bad-{p}-{i}")).collect();
        let acked = runtime.block_on(send_all(&producer, p, &payloads));
        assert_eq!(acked.len(), 20, "partition {p}:\n{}", cluster.logs());
    }
    let identical = common::wait_until(Duration::from_secs(20), || {
        replicas_identical(&cluster, &[1, 2, 3])
    });
    assert!(identical, "replicas differ: {}", replica_sizes(&cluster));
    cluster.wait_formed(3, FORM_TIMEOUT);
}

/// A replica's record batches by base offset (Kafka's batch header: base
/// offset, then the length of the rest).
fn batches_by_offset(bytes: &[u8]) -> BTreeMap<i64, Vec<u8>> {
    let mut batches = BTreeMap::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let length = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let Some(batch) = bytes.get(at..at + 12 + length) else {
            break;
        };
        batches.insert(base, batch.to_vec());
        at += 12 + length;
    }
    batches
}

/// The partition line of `topic`-`partition` in a node's `/status`.
fn partition_line(status: &str, topic: &str, partition: i32) -> Option<String> {
    let mut lines = status
        .lines()
        .map(str::trim_start)
        .skip_while(|l| !l.starts_with(&format!("topic {topic} ")));
    lines.next()?;
    lines
        .take_while(|l| l.starts_with("partition "))
        .find(|l| l.starts_with(&format!("partition {partition} ")))
        .map(str::to_string)
}

/// Reassignment through the spec: `moving` goes from replicas [1, 2] to
/// [2, 3] while acks=all writes go on (`min.insync.replicas = 2`). Broker 3
/// is down when the spec changes, so the reassignment visibly waits (in
/// `sluiced status` and the metric) with 3 adding and 1 removing, and the
/// leader 1 still serving. Once 3 returns and catches up into the ISR the
/// controller completes it: 1 leaves, leadership moves to 2, 1's replica
/// directory goes, and every acknowledged write is read back once, at its
/// offset, with the two new replicas' files identical. Records deleted
/// before 3 returned (DeleteRecords) make the leader's log start past 0,
/// as retention does: 3 starts its copy there.
#[test]
fn a_reassignment_through_the_spec_adds_waits_moves_the_leader_and_removes() {
    const LOG_START: i64 = 150;
    let _serial = serial();
    let topic = "\n[topics.moving]\npartitions = 1\nreplicas = [[1, 2]]\nmin_insync_replicas = 2\n";
    let mut cluster = Cluster::start(topic);
    let active = cluster.wait_formed(3, FORM_TIMEOUT);
    let line = |cluster: &Cluster| {
        let active = cluster.active_controller()?;
        partition_line(&cluster.status(active)?, "moving", 0)
    };
    let ready = common::wait_until(Duration::from_secs(20), || {
        line(&cluster).is_some_and(|l| l.contains("leader=1 ") && l.contains("isr=[1, 2]"))
    });
    assert!(ready, "{}", cluster.status(active).unwrap_or_default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let producer = producer(&cluster);
    let mut acknowledged: Vec<(String, i64)> = Vec::new();
    let mut send = |payloads: Vec<String>| {
        let acked = runtime.block_on(send_to(&producer, "moving", 0, &payloads));
        let count = acked.len();
        acknowledged.extend(acked);
        count
    };
    let before: Vec<String> = (0..200).map(|i| format!("before-{i}")).collect();
    assert_eq!(send(before), 200, "{}", cluster.logs());

    cluster.kill(3);
    let moved = |spec: &str| spec.replace("replicas = [[1, 2]]", "replicas = [[2, 3]]");
    let spec3 = cluster.node_spec_path(3);
    let text = std::fs::read_to_string(&spec3).unwrap();
    std::fs::write(&spec3, moved(&text)).unwrap();
    cluster.reload(1, moved);
    cluster.reload(2, moved);
    let waiting = common::wait_until(Duration::from_secs(20), || {
        line(&cluster).is_some_and(|l| {
            l.contains("replicas=[2, 3, 1]")
                && l.contains("reassigning adding=[3] removing=[1]")
                && l.contains("leader=1 ")
        })
    });
    let status = cluster
        .active_controller()
        .and_then(|a| cluster.status(a))
        .unwrap_or_default();
    assert!(waiting, "{status}\n{}", cluster.logs());
    assert!(status.contains("reassigning partitions: 1"), "{status}");
    let gauge = "sluice_cluster_reassigning_partitions";
    let now = cluster
        .active_controller()
        .and_then(|a| cluster.gauge(a, gauge));
    assert_eq!(now, Some(1.0), "{gauge} while 3 is away");
    // As Kafka counts: the ISR [1, 2] holds as many as the new list.
    let under = cluster.gauge(1, "sluice_under_replicated_partitions");
    assert_eq!(
        under,
        Some(0.0),
        "moving made the partition under-replicated"
    );
    let during: Vec<String> = (0..100).map(|i| format!("during-{i}")).collect();
    assert_eq!(send(during), 100, "writes go on while reassigning");
    // The leader's log no longer starts at 0 (DeleteRecords, as retention
    // would): the new replica starts at the leader's log start.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.node(1).kafka.to_string())
        .create()
        .unwrap();
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("moving", 0, Offset::Offset(LOG_START))
        .unwrap();
    let deleted = runtime
        .block_on(admin.delete_records(&cut, &AdminOptions::new()))
        .unwrap();
    assert!(deleted.elements()[0].error().is_ok(), "{deleted:?}");

    let returned = Instant::now();
    cluster.spawn(3);
    let mut round = 0;
    let done = |cluster: &Cluster| {
        line(cluster).is_some_and(|l| {
            l.contains("replicas=[2, 3] ") && l.contains("isr=[2, 3]") && !l.contains("reassigning")
        })
    };
    while !done(&cluster) && returned.elapsed() < Duration::from_secs(60) {
        round += 1;
        let written = send(vec![format!("moving-{round}")]);
        assert_eq!(written, 1, "an acks=all write failed while moving");
    }
    let completed = returned.elapsed();
    assert!(done(&cluster), "{}", cluster.logs());
    println!(
        "figure: reassignment [1, 2] -> [2, 3] completed {:.3} s after broker 3 returned ({round} writes meanwhile, none failed)",
        completed.as_secs_f64()
    );
    let final_line = line(&cluster).unwrap();
    assert!(final_line.contains("leader=2 "), "{final_line}");
    let after: Vec<String> = (0..100).map(|i| format!("after-{i}")).collect();
    assert_eq!(send(after), 100, "{}", cluster.logs());

    let gone = common::wait_until(Duration::from_secs(20), || {
        !cluster.data_dir(1).join("moving-0").exists()
    });
    assert!(gone, "node 1 kept its replica:\n{}", cluster.log(1));
    assert!(cluster.log(1).contains("partition_retired"));
    let zero = common::wait_until(Duration::from_secs(10), || {
        cluster
            .active_controller()
            .and_then(|a| cluster.gauge(a, gauge))
            == Some(0.0)
    });
    assert!(zero, "{gauge} did not return to 0");
    let from_log_start = |id: i32| {
        let mut batches = batches_by_offset(&replica_bytes(&cluster.data_dir(id), "moving", 0));
        batches.split_off(&LOG_START)
    };
    let same = common::wait_until(Duration::from_secs(20), || {
        let (two, three) = (from_log_start(2), from_log_start(3));
        !two.is_empty() && two == three
    });
    assert!(same, "replicas 2 and 3 differ:\n{}", cluster.logs());
    let three = replica_bytes(&cluster.data_dir(3), "moving", 0);
    assert!(
        !holds(&three, "before-0"),
        "3 copied what was deleted before it started"
    );

    let kept: Vec<&(String, i64)> = acknowledged
        .iter()
        .filter(|(_, offset)| *offset >= LOG_START)
        .collect();
    assert_eq!(acknowledged.len() - kept.len(), LOG_START as usize);
    let seen = consume_topic(&cluster, 2, "moving", 1, kept.len());
    let read: BTreeMap<String, i64> = seen
        .get(&0)
        .into_iter()
        .flatten()
        .map(|(offset, payload)| (payload.clone(), *offset))
        .collect();
    let total = seen.get(&0).map_or(0, Vec::len);
    assert_eq!(total, read.len(), "a payload was read twice");
    assert_eq!(total, kept.len(), "read {total}, kept {}", kept.len());
    for (payload, offset) in kept {
        assert_eq!(read.get(payload), Some(offset), "{payload}");
    }
    drop(producer);
}
