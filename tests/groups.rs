//! Consumer groups against the real `sluiced` with librdkafka (through the
//! `rdkafka` crate), kcat, and a raw Kafka client for the bad-input cases:
//! partition splitting per assignor, failover of a SIGKILLed member with
//! manual commits, auto-commit, durable offsets across restart and SIGKILL,
//! static membership, and refused input that leaves the group usable.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Daemon, wait_until};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice::client;

const PARTITIONS: i32 = 12;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
const CHILD_ENV: &str = "SLUICE_GROUP_CHILD";

fn topic_toml(topic: &str, partitions: i32) -> String {
    format!("[topics.{topic}]\npartitions = {partitions}\n")
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            let payload = format!("{p}-{i}");
            let mut record = BaseRecord::<(), str>::to(topic)
                .partition(p)
                .payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

fn consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until their assignments are disjoint, cover all
/// partitions and hold `each` apiece.
fn wait_for_split(consumers: &[BaseConsumer], each: usize) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(assigned).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        if union.len() == PARTITIONS as usize
            && total == PARTITIONS as usize
            && sets.iter().all(|s| s.len() == each)
        {
            return sets;
        }
        assert!(Instant::now() < deadline, "no even split: {sets:?}");
    }
}

fn split_with(strategy: &str) {
    let topic = "split";
    let daemon = Daemon::start(&topic_toml(topic, PARTITIONS));
    let group = format!("split-{strategy}");
    let consumers: Vec<BaseConsumer> = (0..3)
        .map(|_| {
            let c = consumer(
                &daemon.bootstrap(),
                &group,
                &[("partition.assignment.strategy", strategy)],
            );
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let sets = wait_for_split(&consumers, 4);
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    assert_eq!(union, (0..PARTITIONS).collect::<BTreeSet<_>>());
}

#[test]
fn three_consumers_split_twelve_partitions_with_range() {
    split_with("range");
}

#[test]
fn three_consumers_split_twelve_partitions_with_roundrobin() {
    split_with("roundrobin");
}

#[test]
fn three_consumers_split_twelve_partitions_with_cooperative_sticky() {
    split_with("cooperative-sticky");
}

/// What one member child process reported, line by line.
#[derive(Debug, Default)]
struct Reports {
    /// (member, partition, offset) processed, in report order.
    processed: Vec<(usize, i32, i64)>,
    /// (member, partition) → the offset its last acknowledged commit stored.
    committed: BTreeMap<(usize, i32), i64>,
    /// member → (when, assignment) of its latest assignment report.
    assignment: BTreeMap<usize, (Instant, BTreeSet<i32>)>,
}

/// A group member in its own process, so a SIGKILL stops it mid-stream
/// without a LeaveGroup.
fn spawn_member(bootstrap: &str, member: usize, reports: &Arc<Mutex<Reports>>) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "member_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{bootstrap} {member}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning a member");
    let stdout = child.stdout.take().expect("piped stdout");
    let reports = reports.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mut r = reports.lock().unwrap();
            match fields.as_slice() {
                ["P", p, o] => r
                    .processed
                    .push((member, p.parse().unwrap(), o.parse().unwrap())),
                ["C", p, o] => {
                    r.committed
                        .insert((member, p.parse().unwrap()), o.parse().unwrap());
                }
                ["A", rest @ ..] => {
                    let set = rest.iter().map(|p| p.parse().unwrap()).collect();
                    r.assignment.insert(member, (Instant::now(), set));
                }
                _ => {}
            }
        }
    });
    child
}

/// One line to the parent, flushed at once: the process may be SIGKILLed
/// right after. The leading newline ends libtest's "test member_child ..."
/// line, which has none.
fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

/// The member process: consume, "process" (report), commit synchronously,
/// report the commit. Runs only when spawned by `spawn_member`.
#[test]
fn member_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (bootstrap, _member) = spec.split_once(' ').expect("bootstrap and member");
    let c = consumer(
        bootstrap,
        "failover",
        &[
            ("enable.auto.commit", "false"),
            ("session.timeout.ms", "3000"),
            ("partition.assignment.strategy", "range"),
        ],
    );
    c.subscribe(&["failover"]).expect("subscribe");
    let mut last = BTreeSet::new();
    loop {
        let message = c.poll(Duration::from_millis(50));
        let now = assigned(&c);
        if now != last {
            let list: Vec<String> = now.iter().map(i32::to_string).collect();
            report(&format!("A {}", list.join(" ")));
            last = now;
        }
        let Some(Ok(m)) = message else { continue };
        report(&format!("P {} {}", m.partition(), m.offset()));
        // Processing takes a while, so the kill lands mid-stream.
        std::thread::sleep(Duration::from_millis(3));
        if c.commit_message(&m, CommitMode::Sync).is_ok() {
            report(&format!("C {} {}", m.partition(), m.offset() + 1));
        }
    }
}

#[test]
fn killed_member_loses_its_partitions_and_nothing_is_skipped() {
    const PER_PARTITION: usize = 150;
    let daemon = Daemon::start(&topic_toml("failover", PARTITIONS));
    produce(&daemon.bootstrap(), "failover", PARTITIONS, PER_PARTITION);
    let reports = Arc::new(Mutex::new(Reports::default()));
    let mut members: Vec<Child> = (0..3)
        .map(|m| spawn_member(&daemon.bootstrap(), m, &reports))
        .collect();
    let split = wait_until(CONVERGE_TIMEOUT, || {
        let r = reports.lock().unwrap();
        r.assignment.len() == 3 && r.assignment.values().all(|(_, s)| s.len() == 4)
    });
    assert!(
        split,
        "no 4/4/4 split: {:?}",
        reports.lock().unwrap().assignment
    );
    let victim = 2;
    let started = wait_until(CONVERGE_TIMEOUT, || {
        let r = reports.lock().unwrap();
        r.committed.keys().filter(|(m, _)| *m == victim).count() >= 1
            && r.processed.iter().filter(|(m, ..)| *m == victim).count() >= 40
    });
    assert!(started, "victim processed nothing");
    members[victim].kill().expect("SIGKILL");
    members[victim].wait().expect("reaped");
    let killed_at = Instant::now();
    let taken_over = wait_until(CONVERGE_TIMEOUT, || {
        let r = reports.lock().unwrap();
        let union: BTreeSet<i32> = (0..2)
            .filter_map(|m| r.assignment.get(&m))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        union.len() == PARTITIONS as usize
    });
    let rebalance = killed_at.elapsed();
    assert!(taken_over, "survivors never took over");
    eprintln!(
        "measured: partitions reassigned {} ms after SIGKILL (session.timeout.ms=3000)",
        rebalance.as_millis()
    );
    assert!(rebalance < Duration::from_secs(3 + 5), "took {rebalance:?}");
    let all = wait_until(CONVERGE_TIMEOUT, || {
        let r = reports.lock().unwrap();
        let distinct: BTreeSet<(i32, i64)> = r.processed.iter().map(|(_, p, o)| (*p, *o)).collect();
        distinct.len() == PARTITIONS as usize * PER_PARTITION
    });
    for m in members.iter_mut() {
        let _ = m.kill();
        let _ = m.wait();
    }
    assert!(all, "some messages were never processed");
    check_duplicates(&reports.lock().unwrap(), victim);
}

/// Every message was processed; a message processed twice was processed
/// by the victim at or after its last acknowledged commit on that partition.
fn check_duplicates(r: &Reports, victim: usize) {
    let mut seen: BTreeMap<(i32, i64), Vec<usize>> = BTreeMap::new();
    for (m, p, o) in &r.processed {
        seen.entry((*p, *o)).or_default().push(*m);
    }
    for ((p, o), by) in &seen {
        if by.len() == 1 {
            continue;
        }
        let committed = r.committed.get(&(victim, *p)).copied().unwrap_or(0);
        assert!(
            by.contains(&victim) && *o >= committed,
            "{p}:{o} processed by {by:?}, victim's last commit there {committed}"
        );
    }
    let duplicates = seen.values().filter(|by| by.len() > 1).count();
    eprintln!("measured: {duplicates} duplicate(s), all after the victim's last commit");
}

fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c = consumer(bootstrap, group, &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

#[test]
fn auto_commit_stores_the_consumed_position() {
    let daemon = Daemon::start(&topic_toml("auto", 2));
    produce(&daemon.bootstrap(), "auto", 2, 50);
    let c = consumer(
        &daemon.bootstrap(),
        "auto-group",
        &[
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "100"),
        ],
    );
    c.subscribe(&["auto"]).expect("subscribe");
    let mut consumed = 0;
    let done = wait_until(CONVERGE_TIMEOUT, || {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
            consumed += 1;
        }
        consumed == 100
    });
    assert!(done, "consumed {consumed}");
    let stored = wait_until(CONVERGE_TIMEOUT, || {
        let _ = c.poll(Duration::from_millis(50));
        committed_offsets(&daemon.bootstrap(), "auto-group", "auto", 2) == vec![50, 50]
    });
    assert!(stored, "auto-commit never reached the end");
}

fn commit(bootstrap: &str, group: &str, topic: &str, offsets: &[i64]) {
    let c = consumer(bootstrap, group, &[]);
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

#[test]
fn committed_offsets_survive_restart_and_sigkill() {
    let mut daemon = Daemon::start(&topic_toml("durable", 3));
    produce(&daemon.bootstrap(), "durable", 3, 20);
    commit(&daemon.bootstrap(), "keeper", "durable", &[5, 10, 15]);
    assert_eq!(
        committed_offsets(&daemon.bootstrap(), "keeper", "durable", 3),
        vec![5, 10, 15]
    );
    assert_eq!(daemon.terminate(), Some(0));
    daemon.spawn();
    assert_eq!(
        committed_offsets(&daemon.bootstrap(), "keeper", "durable", 3),
        vec![5, 10, 15]
    );
    let started = Instant::now();
    commit(&daemon.bootstrap(), "keeper", "durable", &[6, 11, 16]);
    eprintln!(
        "measured: one synchronous 3-partition commit took {} us (incl. connect)",
        started.elapsed().as_micros()
    );
    daemon.restart_after_kill();
    assert_eq!(
        committed_offsets(&daemon.bootstrap(), "keeper", "durable", 3),
        vec![6, 11, 16]
    );
}

#[test]
fn static_member_keeps_its_partitions_across_a_restart_without_rebalance() {
    let daemon = Daemon::start(&topic_toml("static", 4));
    let make = |instance: &str| {
        let c = consumer(
            &daemon.bootstrap(),
            "static-group",
            &[
                ("group.instance.id", instance),
                ("session.timeout.ms", "20000"),
            ],
        );
        c.subscribe(&["static"]).expect("subscribe");
        c
    };
    let a = make("a");
    let mut b = make("b");
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while assigned(&a).len() + assigned(&b).len() != 4
        || assigned(&a).is_empty()
        || assigned(&b).is_empty()
    {
        let _ = a.poll(Duration::from_millis(20));
        let _ = b.poll(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "no split");
    }
    let before_b = assigned(&b);
    let rebalances = || daemon.log().matches("rebalance_started").count();
    let rebalances_before = rebalances();
    drop(b);
    b = make("b");
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while assigned(&b).is_empty() {
        let _ = a.poll(Duration::from_millis(20));
        let _ = b.poll(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "restarted member got nothing");
    }
    assert_eq!(assigned(&b), before_b, "same partitions after the restart");
    assert_eq!(
        rebalances(),
        rebalances_before,
        "no rebalance:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("static_member_replaced"));
}

/// A raw Kafka connection for requests librdkafka would never send.
struct Raw {
    runtime: tokio::runtime::Runtime,
    writer: client::RequestWriter,
    reader: client::ResponseReader,
}

impl Raw {
    fn connect(address: std::net::SocketAddr) -> Raw {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (writer, reader) = runtime.block_on(client::connect(address)).expect("connect");
        Raw {
            runtime,
            writer,
            reader,
        }
    }

    fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, body: &Q) -> R {
        self.runtime.block_on(async {
            self.writer.send(key, version, body).await.expect("send");
            self.writer.flush().await.expect("flush");
            self.reader
                .receive::<R>(key, version)
                .await
                .expect("receive")
                .1
        })
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn join(raw: &mut Raw, member: &str, protocol: &str, metadata: Bytes) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s(protocol))
                .with_metadata(metadata),
        ]);
    raw.call(ApiKey::JoinGroup, 5, &request)
}

fn raw_commit(raw: &mut Raw, member: &str, generation: i32, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("rawtopic")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let response: OffsetCommitResponse = raw.call(ApiKey::OffsetCommit, 8, &request);
    response.topics[0].partitions[0].error_code
}

#[test]
fn bad_group_input_gets_its_error_and_the_group_stays_usable() {
    let daemon = Daemon::start(&topic_toml("rawtopic", 1));
    let mut raw = Raw::connect(daemon.kafka);
    let metadata = Bytes::from_static(b"\0\0\0\0\0\0\0\0\0\0");
    let first = join(&mut raw, "", "range", metadata.clone());
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let member = first.member_id.to_string();
    let joined = join(&mut raw, &member, "range", metadata.clone());
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader.as_str(), member);
    let generation = joined.generation_id;
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_generation_id(generation)
        .with_member_id(s(&member))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(Bytes::from_static(b"assigned")),
        ]);
    let synced: SyncGroupResponse = raw.call(ApiKey::SyncGroup, 3, &sync);
    assert_eq!(
        (synced.error_code, synced.assignment.as_ref()),
        (0, &b"assigned"[..])
    );

    let other = join(&mut raw, "", "no-such-assignor", metadata.clone());
    assert_eq!(
        other.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let huge = Bytes::from(vec![0u8; sluice::group::MEMBER_METADATA_BYTES_MAX + 1]);
    let oversized = join(&mut raw, "", "range", huge);
    assert_eq!(oversized.error_code, ResponseError::InvalidRequest.code());
    assert_eq!(
        raw_commit(&mut raw, &member, generation - 1, 3),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        raw_commit(&mut raw, "stranger", generation, 3),
        ResponseError::UnknownMemberId.code()
    );

    // Still usable: heartbeat, commit and fetch from the live member.
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_generation_id(generation)
        .with_member_id(s(&member));
    let beat: HeartbeatResponse = raw.call(ApiKey::Heartbeat, 3, &heartbeat);
    assert_eq!(beat.error_code, 0);
    assert_eq!(raw_commit(&mut raw, &member, generation, 7), 0);
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("raw")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("rawtopic")))
                .with_partition_indexes(vec![0]),
        ]));
    let fetched: OffsetFetchResponse = raw.call(ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 7);
}

#[test]
fn kcat_balanced_consumer_reads_and_commits() {
    if Command::new("kcat").arg("-V").output().is_err() {
        eprintln!("kcat not installed; skipped");
        return;
    }
    let daemon = Daemon::start(&topic_toml("kcat", 2));
    produce(&daemon.bootstrap(), "kcat", 2, 10);
    let output = Command::new("kcat")
        .args(["-b", &daemon.bootstrap(), "-G", "kcat-group", "kcat"])
        .args(["-o", "beginning", "-e", "-q", "-f", "%p %o\n"])
        .args([
            "-X",
            "enable.auto.commit=true",
            "-X",
            "auto.commit.interval.ms=100",
        ])
        .output()
        .expect("kcat");
    let lines = String::from_utf8_lossy(&output.stdout).lines().count();
    assert_eq!(
        lines,
        20,
        "kcat stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = committed_offsets(&daemon.bootstrap(), "kcat-group", "kcat", 2);
    assert_eq!(committed, vec![10, 10], "kcat's commits on exit");
}

#[test]
fn groups_cli_lists_members_assignments_and_lag() {
    let daemon = Daemon::start(&topic_toml("lagged", 2));
    produce(&daemon.bootstrap(), "lagged", 2, 20);
    let c = consumer(
        &daemon.bootstrap(),
        "lag-group",
        &[("enable.auto.commit", "false")],
    );
    c.subscribe(&["lagged"]).expect("subscribe");
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while assigned(&c).len() != 2 {
        let _ = c.poll(Duration::from_millis(20));
        assert!(Instant::now() < deadline, "no assignment");
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lagged", 0, Offset::Offset(5))
        .unwrap();
    tpl.add_partition_offset("lagged", 1, Offset::Offset(20))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    let output = Command::new(common::sluiced_bin())
        .args(["groups", "--bootstrap", &daemon.bootstrap()])
        .output()
        .expect("sluiced groups");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("GROUP lag-group state=Stable protocol=range members=1 total_lag=15"),
        "{text}"
    );
    assert!(text.contains("assigned=lagged[0, 1]"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.first() == Some(&"lagged"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(&rows[0][1..5], &["0", "5", "20", "15"]);
    assert_eq!(&rows[1][1..5], &["1", "20", "20", "0"]);
    // The same lag on the metrics endpoint.
    let metrics = daemon.scrape();
    for (partition, lag) in [(0, 15), (1, 0)] {
        let series = format!(
            "sluice_consumer_group_lag{{group=\"lag-group\",partition=\"{partition}\",topic=\"lagged\"}} {lag}"
        );
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
    }
}

/// Not a timed assertion: prints synchronous commit latency (librdkafka
/// round trip, one partition) for the issue note, with the offsets topic
/// acknowledging from the page cache and with fsync before acknowledging.
#[test]
fn commit_latency_is_measured() {
    for (mode, defaults) in [("page-cache", ""), ("fsync", "flush = \"fsync\"\n")] {
        let daemon = Daemon::start_with(&topic_toml("latency", 1), defaults);
        measure_commits(&daemon, mode);
    }
}

fn measure_commits(daemon: &Daemon, mode: &str) {
    const COMMITS: usize = 200;
    let c = consumer(&daemon.bootstrap(), "latency-group", &[]);
    let mut samples = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("latency", 0, Offset::Offset(i as i64))
            .unwrap();
        let started = Instant::now();
        c.commit(&tpl, CommitMode::Sync).expect("commit");
        samples.push(started.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((COMMITS as f64 * q) as usize).min(COMMITS - 1)].as_micros();
    eprintln!(
        "measured: {mode} sync commit latency over {COMMITS}: p50 {} us, p99 {} us, max {} us",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    assert_eq!(
        committed_offsets(&daemon.bootstrap(), "latency-group", "latency", 1),
        vec![COMMITS as i64 - 1]
    );
}

/// Group membership lives in memory: after a broker restart a running
/// consumer is told UNKNOWN_MEMBER_ID, rejoins, and carries on from its
/// committed offset: no gap, and a message comes again only if its commit
/// was refused.
#[test]
fn a_running_consumer_rejoins_after_a_broker_restart_and_resumes() {
    let mut daemon = Daemon::start(&topic_toml("resume", 1));
    produce(&daemon.bootstrap(), "resume", 1, 20);
    let c = consumer(
        &daemon.bootstrap(),
        "resume-group",
        &[("enable.auto.commit", "false")],
    );
    c.subscribe(&["resume"]).expect("subscribe");
    // (offset, whether its commit was acknowledged)
    let mut seen: Vec<(i64, bool)> = Vec::new();
    let mut consume_until = |c: &BaseConsumer, last: i64| {
        wait_until(CONVERGE_TIMEOUT, || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let ok = c.commit_message(&m, CommitMode::Sync).is_ok();
                seen.push((m.offset(), ok));
            }
            seen.last().is_some_and(|(o, ok)| *o == last && *ok)
        })
    };
    assert!(consume_until(&c, 19), "first 20");
    assert_eq!(daemon.terminate(), Some(0));
    daemon.spawn();
    produce(&daemon.bootstrap(), "resume", 1, 5);
    assert!(consume_until(&c, 24), "resumed after the restart");
    let distinct: BTreeSet<i64> = seen.iter().map(|(o, _)| *o).collect();
    assert_eq!(distinct, (0..25).collect::<BTreeSet<i64>>(), "no gap");
    for (i, (offset, _)) in seen.iter().enumerate() {
        let earlier = seen[..i]
            .iter()
            .filter(|(o, _)| o == offset)
            .collect::<Vec<_>>();
        assert!(
            earlier.iter().all(|(_, ok)| !ok),
            "{offset} replayed after an acknowledged commit: {seen:?}"
        );
    }
    let committed = wait_until(CONVERGE_TIMEOUT, || {
        let _ = c.poll(Duration::from_millis(20));
        committed_offsets(&daemon.bootstrap(), "resume-group", "resume", 1) == vec![25]
    });
    assert!(committed);
}
