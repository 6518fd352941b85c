//! Storage faults, injected through the log's storage trait by a backend
//! that fails a write or fdatasync on command and can then drop what a power
//! loss would (common/fault_storage.rs):
//! - a partition log whose fdatasync fails is reopened (the page cache still
//!   holds the bytes the failed sync did not write), appended to and synced,
//!   then loses power: every acknowledged batch survives, because recovery
//!   wrote the unsynced range again before its first sync;
//! - a failed write leaves nothing of the append and keeps what was synced;
//! - a broker whose fdatasync fails stops with exit status 74 while an
//!   acks=all producer writes; restarted, it takes more writes; after a power
//!   loss the real `sluiced` serves every acknowledged message at its offset;
//! - a panic in a task ends the process with exit status 70.
//!
//! The broker cases need a broker built with the fault backend, which only
//! this test crate has: the test binary runs itself as that broker (harness
//! = false; `SLUICE_TEST_CHILD` selects the child's part).

mod common;
#[path = "common/fault_storage.rs"]
mod fault_storage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Acked, wait_until};
use fault_storage::{FAIL_SYNC_COMMAND, FaultStorage, power_loss};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::log::{BATCH_HEADER_BYTES, LogConfig, PartitionLog, parse_header, producer_record};

const CHILD_ENV: &str = "SLUICE_TEST_CHILD";
const TOPIC: &str = "payments";
const PARTITIONS: i32 = 2;
const STORAGE_FAILURE_EXIT_CODE: i32 = sluice::failstop::STORAGE_FAILURE_EXIT_CODE;
const PANIC_EXIT_CODE: i32 = sluice::failstop::PANIC_EXIT_CODE;

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("broker") => child_broker(),
        Ok("panic") => child_panic(),
        Ok(other) => panic!("unknown child part {other:?}"),
        Err(_) => {}
    }
    let cases: [(&str, fn()); 4] = [
        (
            "a_failed_fsync_loses_no_acknowledged_batch_across_restart_and_power_loss",
            a_failed_fsync_loses_no_acknowledged_batch_across_restart_and_power_loss,
        ),
        (
            "a_failed_write_leaves_nothing_of_the_append",
            a_failed_write_leaves_nothing_of_the_append,
        ),
        (
            "a_broker_whose_fsync_fails_stops_and_loses_no_acknowledged_write",
            a_broker_whose_fsync_fails_stops_and_loses_no_acknowledged_write,
        ),
        (
            "a_panic_in_a_task_ends_the_process",
            a_panic_in_a_task_ends_the_process,
        ),
    ];
    std::process::exit(common::run_cases(&cases));
}

// ---- the partition log -------------------------------------------------

fn batch(i: u32) -> Vec<u8> {
    let records: Vec<Record> = (0..4)
        .map(|r| {
            let value = format!("batch-{i:06}-record-{r}-{}", "v".repeat(300));
            producer_record(
                r,
                1_700_000_000_000 + i64::from(i),
                None,
                Some(value.into()),
            )
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encoding a batch");
    buf.to_vec()
}

/// The record values of every batch from `from` on, in order.
fn values_from(log: &PartitionLog, from: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let bytes = log
            .read(offset, 1, i64::MAX, true)
            .expect("read")
            .file
            .expect("a batch")
            .read_to_vec()
            .expect("pread");
        let header = parse_header(&bytes, 0).expect("a batch header");
        // Skip the header fields the leader patched; compare records.
        out.push((header.base_offset, bytes[BATCH_HEADER_BYTES..].to_vec()));
        offset = header.next_offset();
    }
    out
}

fn append_and_sync(log: &mut PartitionLog, i: u32) -> std::io::Result<i64> {
    let info = log.append_as_leader(&batch(i), 0, 10).expect("append");
    let pending = log.pending_sync().expect("something to sync");
    let durable = pending.sync()?;
    log.complete_sync(durable, 10).expect("recording the sync");
    Ok(info.base_offset)
}

fn a_failed_fsync_loses_no_acknowledged_batch_across_restart_and_power_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, partition) = (dir.path().join("journal"), dir.path().join("log"));
    let storage = Arc::new(FaultStorage::new(&journal, dir.path()));
    let config = LogConfig::default();
    let mut acked: Vec<u32> = Vec::new();

    let (mut log, _) =
        PartitionLog::open_with(storage.clone(), &partition, config.clone(), 0).expect("open");
    for i in 0..20 {
        append_and_sync(&mut log, i).expect("sync");
        acked.push(i);
    }
    storage.fail_next_sync();
    let failed = append_and_sync(&mut log, 20);
    assert!(
        failed.is_err(),
        "the injected fdatasync failure is reported"
    );
    assert_eq!(storage.faults(), 1);
    // The broker stops here (fail-stop): no close, no marker.
    drop(log);

    // Restarted; the page cache still holds batch 20, marked clean.
    let (mut log, report) =
        PartitionLog::open_with(storage.clone(), &partition, config.clone(), 0).expect("reopen");
    assert!(
        report.rewritten_bytes > 0,
        "recovery rewrites what lies past the recovery point: {report:?}"
    );
    for i in 21..40 {
        append_and_sync(&mut log, i).expect("sync after restart");
        acked.push(i);
    }
    drop(log);

    let zeroed = power_loss(&journal);
    let (log, _) = PartitionLog::open(&partition, config, 0).expect("open after power loss");
    let survived: Vec<Vec<u8>> = values_from(&log, 0).into_iter().map(|(_, v)| v).collect();
    let survived_batches: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|i| survived.contains(&batch(*i)[BATCH_HEADER_BYTES..].to_vec()))
        .collect();
    assert_eq!(
        survived_batches, acked,
        "every acknowledged batch survives the power loss ({zeroed} bytes lost)"
    );
}

fn a_failed_write_leaves_nothing_of_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, partition) = (dir.path().join("journal"), dir.path().join("log"));
    let storage = Arc::new(FaultStorage::new(&journal, dir.path()));
    let config = LogConfig::default();
    let (mut log, _) =
        PartitionLog::open_with(storage.clone(), &partition, config.clone(), 0).expect("open");
    for i in 0..5 {
        append_and_sync(&mut log, i).expect("sync");
    }
    let end = log.log_end_offset();
    storage.fail_next_write();
    let error = log
        .append_as_leader(&batch(5), 0, 10)
        .expect_err("the injected write failure is reported");
    assert!(
        error.to_string().contains("injected write failure"),
        "{error}"
    );
    assert_eq!(log.log_end_offset(), end, "nothing of the append counts");
    drop(log);
    power_loss(&journal);
    let (log, report) = PartitionLog::open(&partition, config, 0).expect("reopen");
    assert_eq!(report.log_end_offset, end, "{report:?}");
    assert_eq!(values_from(&log, 0).len(), 5);
}

// ---- the broker --------------------------------------------------------

/// The child's part: a broker like `sluiced`'s, its logs on the fault
/// backend, serving until a storage failure or a panic ends the process.
fn child_broker() -> ! {
    sluice::failstop::install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let var = |name: &str| PathBuf::from(std::env::var(name).expect(name));
    let spec = sluice::config::load_spec(&var("SLUICE_TEST_SPEC")).expect("spec");
    let storage = Arc::new(FaultStorage::new(
        &var("SLUICE_TEST_JOURNAL"),
        &var("SLUICE_TEST_COMMANDS"),
    ));
    let broker =
        sluice::broker::Broker::open_with_storage(spec, 1, var("SLUICE_TEST_DATA"), storage)
            .expect("opening the broker");
    let groups = sluice::group::GroupCoordinator::start(&broker).expect("groups");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(broker.broker_spec().kafka)
            .await
            .expect("binding");
        tokio::spawn(broker.clone().run_syncer());
        tokio::spawn(groups.clone().run_driver());
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        sluice::kafka::serve(listener, broker, Some(groups), Default::default(), stop_rx).await;
    });
    std::process::exit(0)
}

/// One broker process on the fault backend, or the real `sluiced`.
struct Broker {
    dir: PathBuf,
    kafka: String,
    spec: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn new(dir: &Path) -> Broker {
        let port = common::free_port();
        let spec = dir.join("cluster.toml");
        std::fs::write(
            &spec,
            format!(
                r#"[cluster]
name = "faults"

[controller]
voters = [1]

[[brokers]]
id = 1
kafka = "127.0.0.1:{port}"
quic = "127.0.0.1:{quic}"
metrics = "127.0.0.1:{metrics}"
data_dir = "{data}"

[topics.{TOPIC}]
partitions = {PARTITIONS}
flush = "fsync"
"#,
                quic = common::free_port(),
                metrics = common::free_port(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("commands")).unwrap();
        Broker {
            dir: dir.to_path_buf(),
            kafka: format!("127.0.0.1:{port}"),
            spec,
            log: dir.join("broker.log"),
            child: None,
        }
    }

    /// Starts the fault-backed broker (this binary), or the real `sluiced`.
    fn start(&mut self, real: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = if real {
            let mut command = Command::new(common::sluiced_bin());
            command.arg("--config").arg(&self.spec);
            command
        } else {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .env(CHILD_ENV, "broker")
                .env("SLUICE_TEST_SPEC", &self.spec)
                .env("SLUICE_TEST_JOURNAL", self.dir.join("journal"))
                .env("SLUICE_TEST_COMMANDS", self.dir.join("commands"))
                .env("SLUICE_TEST_DATA", self.dir.join("data"));
            command
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning a broker");
        self.child = Some(child);
        let address = self.kafka.parse().unwrap();
        let up = wait_until(common::START_TIMEOUT, || {
            assert!(
                self.exit_status().is_none(),
                "broker exited:\n{}",
                self.log()
            );
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "broker not listening:\n{}", self.log());
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn payload(i: usize) -> String {
    format!("payment-{i:08}-{}", "p".repeat(150))
}

/// Sends `range` with acks=all, recording acknowledged offsets in `acked`;
/// stops early when the broker exits. Returns the exit status if it did.
fn produce(
    broker: &mut Broker,
    range: std::ops::Range<usize>,
    acked: &Arc<Mutex<HashMap<usize, (i32, i64)>>>,
    before_each: impl Fn(usize),
) -> Option<ExitStatus> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let producer: BaseProducer<Acked> = ClientConfig::new()
        .set("bootstrap.servers", &broker.kafka)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "5000")
        .create_with_context(Acked(acked.clone(), errors.clone()))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exited = None;
    for i in range {
        assert!(Instant::now() < deadline, "producing took over a minute");
        before_each(i);
        let value = payload(i);
        let record = BaseRecord::with_opaque_to(TOPIC, i)
            .key(&value[..16])
            .payload(&value);
        if let Err((error, _)) = producer.send(record) {
            panic!("send: {error}");
        }
        producer.poll(Duration::ZERO);
        if i % 50 == 0 {
            // A producer waiting on its acks, a few batches in flight.
            while producer.in_flight_count() > 200 {
                producer.poll(Duration::from_millis(5));
            }
            if let Some(status) = broker.exit_status() {
                exited = Some(status);
                break;
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(10));
    exited.or_else(|| broker.exit_status())
}

fn a_broker_whose_fsync_fails_stops_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::new(dir.path());
    let acked = Arc::new(Mutex::new(HashMap::new()));
    broker.start(false);

    let command = dir.path().join("commands").join(FAIL_SYNC_COMMAND);
    let exited = produce(&mut broker, 0..20_000, &acked, |i| {
        if i == 3_000 {
            std::fs::write(&command, b"").unwrap();
        }
    });
    let status = match exited {
        Some(status) => status,
        None => {
            let stopped = wait_until(Duration::from_secs(10), || broker.exit_status().is_some());
            assert!(stopped, "the broker kept running after a failed fdatasync");
            broker.exit_status().unwrap()
        }
    };
    assert_eq!(
        status.code(),
        Some(STORAGE_FAILURE_EXIT_CODE),
        "exit status after a failed fdatasync:\n{}",
        broker.log()
    );
    assert!(!command.exists(), "the fault was injected");
    let log = broker.log();
    let line = log
        .lines()
        .find(|l| l.contains("event=\"storage_failure\""))
        .unwrap_or_else(|| panic!("no storage_failure line:\n{log}"));
    assert!(
        line.contains("injected fdatasync failure") && line.contains(TOPIC),
        "the line names the partition and the error: {line}"
    );
    let before_restart = acked.lock().unwrap().len();
    assert!(
        before_restart >= 1_000,
        "{before_restart} acknowledged before the fault"
    );
    broker.child = None;

    // systemd restarts it; the page cache still holds what the failed sync
    // left clean and unwritten.
    broker.start(false);
    let exited = produce(&mut broker, 20_000..24_000, &acked, |_| {});
    assert!(
        exited.is_none(),
        "the restarted broker stopped:\n{}",
        broker.log()
    );
    broker.kill();
    let after_restart = acked.lock().unwrap().len() - before_restart;
    assert!(
        after_restart >= 4_000,
        "{after_restart} acknowledged after the restart"
    );

    let zeroed = power_loss(&dir.path().join("journal"));
    broker.start(true);
    let acked = acked.lock().unwrap().clone();
    common::assert_acknowledged_readable(&broker.kafka, TOPIC, PARTITIONS, &acked, payload);
    println!(
        "  {} acknowledged, {zeroed} bytes lost to the power loss, all read back",
        acked.len()
    );
}

// ---- panics --------------------------------------------------------------

/// The child's part: the daemon's panic hook, then a task that panics
/// (tokio would catch it and carry on).
fn child_panic() -> ! {
    sluice::failstop::install_panic_hook();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime.block_on(runtime.spawn(async { panic!("a bug in a task") }));
    eprintln!("still running after the panic: {outcome:?}");
    std::process::exit(0)
}

fn a_panic_in_a_task_ends_the_process() {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "panic")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(PANIC_EXIT_CODE),
        "exit status after a panic: {stderr}"
    );
    assert!(stderr.contains("a bug in a task"), "{stderr}");
}
