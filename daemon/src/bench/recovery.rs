//! `sluiced bench-recovery`: how long a real daemon takes to be ready
//! again with many partitions, after a SIGKILL and after a clean stop.
//! Ready means the Kafka port accepts and every partition answers
//! ListOffsets with the offsets it had: READY is sent after recovery and
//! bind, so nothing is deferred past it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

use crate::client;

const TOPIC: &str = "recovery-bench";
/// Bound on each start of the daemon.
const START_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    pub partitions: i32,
    pub rounds: usize,
    pub dir: PathBuf,
}

/// One start of the daemon: how long until its port accepted, and until
/// every partition answered with its offsets.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    pub listening: Duration,
    pub served: Duration,
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_spec(dir: &Path, partitions: i32) -> anyhow::Result<(PathBuf, SocketAddr)> {
    let kafka: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let spec = format!(
        "[cluster]\nname = \"recovery-bench\"\n\n[controller]\nvoters = [1]\n\n[[brokers]]\nid = 1\nkafka = \"{kafka}\"\nquic = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\ndata_dir = \"data\"\n\n[topics.{TOPIC}]\npartitions = {partitions}\n",
        free_port()?,
        free_port()?,
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, spec)?;
    Ok((path, kafka))
}

fn start(spec: &Path, kafka: SocketAddr, log: &Path) -> anyhow::Result<(Daemon, Duration)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(spec)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting sluiced")?;
    let mut daemon = Daemon { child };
    while TcpStream::connect_timeout(&kafka, Duration::from_millis(100)).is_err() {
        anyhow::ensure!(
            started.elapsed() < START_TIMEOUT,
            "sluiced did not start in time"
        );
        if let Some(status) = daemon.child.try_wait()? {
            anyhow::bail!("sluiced exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((daemon, started.elapsed()))
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

async fn produce_one_each(kafka: SocketAddr, partitions: i32) -> anyhow::Result<()> {
    let record = crate::log::producer_record(
        0,
        1_700_000_000_000,
        Some(Bytes::from_static(b"key")),
        Some(Bytes::from_static(b"value")),
    );
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, [record].iter(), &options)?;
    let request = super::produce_request(TOPIC, partitions, &batch.freeze());
    let (mut writer, mut reader) = client::connect(kafka).await?;
    writer.send(ApiKey::Produce, 9, &request).await?;
    writer.flush().await?;
    let (_, response): (_, ProduceResponse) = reader.receive(ApiKey::Produce, 9).await?;
    for partition in &response.responses[0].partition_responses {
        anyhow::ensure!(
            partition.error_code == 0,
            "produce to {} failed",
            partition.index
        );
    }
    Ok(())
}

/// Whether every partition answers ListOffsets (latest) with `expected`.
async fn all_served(kafka: SocketAddr, partitions: i32, expected: i64) -> anyhow::Result<bool> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name())
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let (mut writer, mut reader) = client::connect(kafka).await?;
    writer.send(ApiKey::ListOffsets, 7, &request).await?;
    writer.flush().await?;
    let (_, response): (_, ListOffsetsResponse) = reader.receive(ApiKey::ListOffsets, 7).await?;
    let answers = &response.topics[0].partitions;
    Ok(answers.len() == partitions as usize
        && answers
            .iter()
            .all(|p| p.error_code == 0 && p.offset == expected))
}

fn measure_start(
    runtime: &tokio::runtime::Runtime,
    spec: &Path,
    kafka: SocketAddr,
    log: &Path,
    partitions: i32,
) -> anyhow::Result<(Daemon, StartTimes)> {
    let started = Instant::now();
    let (daemon, listening) = start(spec, kafka, log)?;
    let served = runtime.block_on(all_served(kafka, partitions, 1))?;
    anyhow::ensure!(served, "a partition did not come back with its record");
    Ok((
        daemon,
        StartTimes {
            listening,
            served: started.elapsed(),
        },
    ))
}

/// The time the last start spent in its syncfs, from the daemon's log
/// (other writers on the same filesystem make it longer).
fn last_sync_note(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .find(|line| line.contains("event=\"recovered_partitions_synced\""))
        .and_then(|line| line.split("millis=").nth(1))
        .map(|millis| format!(" (syncfs {} ms)", millis.trim()))
        .unwrap_or_default()
}

/// Runs the measurement and prints one line per start.
pub fn run(options: &RecoveryOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=10_000).contains(&options.partitions),
        "--partitions must be 1..=10000"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&options.dir)?;
    let work = tempfile::Builder::new()
        .prefix("sluice-recovery-bench")
        .tempdir_in(&options.dir)?;
    let (spec, kafka) = write_spec(work.path(), options.partitions)?;
    let log = work.path().join("sluiced.log");
    println!(
        "recovery bench: {} partitions, one record each, {} round(s); daemon log {}",
        options.partitions,
        options.rounds,
        log.display()
    );
    let (daemon, first) = start(&spec, kafka, &log)?;
    println!(
        "first start (creating partitions): listening after {:.3}s",
        first.as_secs_f64()
    );
    runtime.block_on(produce_one_each(kafka, options.partitions))?;
    let mut daemon = Some(daemon);
    for round in 1..=options.rounds {
        // Each start is measured from a filesystem with no writeback left
        // over from earlier phases, as the throughput bench does.
        super::baseline::settle_writeback(work.path())?;
        // SIGKILL: the crash case.
        drop(daemon.take());
        let (after_kill, unclean) =
            measure_start(&runtime, &spec, kafka, &log, options.partitions)?;
        println!(
            "round {round}: after SIGKILL   listening {:.3}s, every partition served {:.3}s{}",
            unclean.listening.as_secs_f64(),
            unclean.served.as_secs_f64(),
            last_sync_note(&log)
        );
        // SIGTERM: a clean stop.
        let mut after_kill = after_kill;
        super::baseline::settle_writeback(work.path())?;
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(after_kill.child.id() as i32, libc::SIGTERM) };
        let status = after_kill.child.wait()?;
        anyhow::ensure!(status.success(), "clean stop exited with {status}");
        let (after_stop, clean) = measure_start(&runtime, &spec, kafka, &log, options.partitions)?;
        println!(
            "round {round}: after SIGTERM   listening {:.3}s, every partition served {:.3}s",
            clean.listening.as_secs_f64(),
            clean.served.as_secs_f64()
        );
        daemon = Some(after_stop);
    }
    Ok(())
}
