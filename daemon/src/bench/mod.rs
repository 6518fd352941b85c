//! `sluiced bench`: produce and consume throughput of an in-process broker,
//! each reported beside the raw disk write and loopback TCP rates measured
//! in the same run on the same machine.

mod baseline;
pub mod recovery;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use tokio::sync::watch;

use crate::client;

use crate::broker::Broker;
use crate::kafka::{self, ListenerLimits};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
/// Fetch sizes of a default consumer: `max.partition.fetch.bytes` and
/// `fetch.max.bytes` as Kafka's and librdkafka's defaults set them.
const FETCH_PARTITION_BYTES: i32 = 1024 * 1024;
const FETCH_RESPONSE_BYTES: i32 = 50 * 1024 * 1024;

/// Bound on the whole run of one phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub messages: u64,
    pub message_bytes: usize,
    pub partitions: Vec<i32>,
    pub batch_messages: usize,
    pub in_flight: usize,
    /// Times each phase (with its baseline) is repeated; the report gives
    /// every round and the median ratio.
    pub rounds: usize,
    pub dir: PathBuf,
}

/// One round of one partition count.
#[derive(Debug, Clone)]
pub struct BenchRun {
    pub partitions: i32,
    pub round: usize,
    /// Raw buffered write rate (bytes/s) measured just before the produce.
    pub disk_rate: f64,
    /// Loopback TCP rate (bytes/s) measured just before the consume.
    pub loopback_rate: f64,
    pub produce_seconds: f64,
    pub consume_seconds: f64,
    pub reconsume_seconds: f64,
    pub payload_bytes: u64,
    pub messages: u64,
}

pub fn run(options: &BenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.messages > 0 && options.message_bytes > 0 && options.batch_messages > 0
    );
    anyhow::ensure!(options.in_flight > 0 && !options.partitions.is_empty());
    anyhow::ensure!(options.rounds > 0, "at least one round");
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let runs = run_phases(options)?;
    print_report(options, &runs);
    Ok(())
}

/// Each broker phase runs right after the baseline it is compared with, so
/// both meet the same machine, and the pair is repeated `rounds` times: on
/// a VM the loopback rate alone varies by a factor of 1.7 between runs, and
/// a buffered write runs at memory speed into pages just freed but at the
/// host's page-fault rate into memory the guest has handed back. Every
/// timed write starts with no dirty data outstanding, and what is written
/// stays until the end (the baseline's files as the log's segments), so
/// neither side writes into memory the other just freed.
///
/// The broker serves from its own multi-threaded runtime, as `sluiced run`
/// does; the client runs on this thread's single-threaded runtime, as a
/// client process would: the thread that reads a socket also polls its
/// readiness, and the broker's workers are left to the broker.
fn run_phases(options: &BenchOptions) -> anyhow::Result<Vec<BenchRun>> {
    let total_bytes = options.messages * options.message_bytes as u64;
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir_in(&options.dir)?;
    let data_dir = scratch.path().join("data");
    let spec = crate::config::parse_spec(crate::config::DEFAULT_SPEC_TOML, "<embedded default>")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = Broker::open(spec, 1, data_dir)?;
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = server_runtime.spawn(kafka::serve(
        listener,
        broker.clone(),
        None,
        ListenerLimits::default(),
        stop_rx,
    ));
    let housekeeping = server_runtime.spawn(broker.clone().run_housekeeping());
    let mut runs = Vec::new();
    for &partitions in &options.partitions {
        let topic = format!("bench-{partitions}p");
        broker.create_topic(&topic, Some(partitions), &[], false)?;
        let per_partition = rounded_messages(options, partitions) / partitions as u64;
        for round in 1..=options.rounds {
            let raw_file = scratch
                .path()
                .join(format!("raw-write-{partitions}p-{round}"));
            let disk_rate = baseline::disk_write_bytes_per_sec(&raw_file, total_bytes)
                .context("raw disk baseline")?;
            baseline::settle_writeback(&options.dir)?;
            let started = Instant::now();
            client_runtime.block_on(produce(address, &topic, partitions, options))?;
            let produce_seconds = started.elapsed().as_secs_f64();
            let loopback_rate =
                baseline::loopback_tcp_bytes_per_sec(total_bytes).context("loopback baseline")?;
            // This round's messages follow the earlier rounds' in every partition.
            let from = (per_partition * (round as u64 - 1)) as i64;
            let to = from + per_partition as i64;
            let started = Instant::now();
            let messages =
                client_runtime.block_on(consume(address, &topic, partitions, from..to))?;
            let consume_seconds = started.elapsed().as_secs_f64();
            // A second read of the same data: consumers that are not tailing,
            // once writeback of what was just produced has settled.
            baseline::settle_writeback(&options.dir)?;
            let started = Instant::now();
            client_runtime.block_on(consume(address, &topic, partitions, from..to))?;
            let reconsume_seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                messages == per_partition * partitions as u64,
                "consumed {messages} messages"
            );
            runs.push(BenchRun {
                partitions,
                round,
                disk_rate,
                loopback_rate,
                produce_seconds,
                consume_seconds,
                reconsume_seconds,
                payload_bytes: messages * options.message_bytes as u64,
                messages,
            });
        }
    }
    let _ = stop_tx.send(true);
    let _ = server_runtime.block_on(server);
    housekeeping.abort();
    broker.close()?;
    Ok(runs)
}

/// Messages actually sent: whole requests of one batch per partition.
fn rounded_messages(options: &BenchOptions, partitions: i32) -> u64 {
    let per_request = options.batch_messages as u64 * partitions as u64;
    options.messages.div_ceil(per_request) * per_request
}

fn encode_batch(options: &BenchOptions) -> anyhow::Result<Bytes> {
    let now = crate::broker::now_ms();
    let records: Vec<Record> = (0..options.batch_messages)
        .map(|i| {
            crate::log::producer_record(
                i,
                now,
                None,
                Some(Bytes::from(vec![b'v'; options.message_bytes])),
            )
        })
        .collect();
    let mut buf = BytesMut::new();
    let encode_options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &encode_options)?;
    Ok(buf.freeze())
}

/// One acks=1 produce of `batch` to every partition of `topic`.
pub(crate) fn produce_request(topic: &str, partitions: i32, batch: &Bytes) -> ProduceRequest {
    let data = (0..partitions)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch.clone()))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(crate::kafka::api::topic_name(topic))
                .with_partition_data(data),
        ])
}

async fn produce(
    address: std::net::SocketAddr,
    topic: &str,
    partitions: i32,
    options: &BenchOptions,
) -> anyhow::Result<()> {
    let batch = encode_batch(options)?;
    let request = produce_request(topic, partitions, &batch);
    let requests =
        rounded_messages(options, partitions) / (options.batch_messages as u64 * partitions as u64);
    let mut frame = client::encode_frame(ApiKey::Produce, PRODUCE_VERSION, 0, &request)?;
    let (mut writer, mut reader) = client::connect(address).await?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let (mut sent, mut answered) = (0u64, 0u64);
    while answered < requests {
        anyhow::ensure!(Instant::now() < deadline, "produce phase timed out");
        while sent < requests && sent - answered < options.in_flight as u64 {
            writer.send_encoded(&mut frame).await?;
            sent += 1;
        }
        writer.flush().await?;
        let (_, response): (_, ProduceResponse) =
            reader.receive(ApiKey::Produce, PRODUCE_VERSION).await?;
        for p in response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
        {
            anyhow::ensure!(
                p.error_code == 0,
                "produce error {} on partition {}",
                p.error_code,
                p.index
            );
        }
        answered += 1;
    }
    Ok(())
}

/// Reads `offsets` of every partition; returns the records read.
async fn consume(
    address: std::net::SocketAddr,
    topic: &str,
    partitions: i32,
    offsets: std::ops::Range<i64>,
) -> anyhow::Result<u64> {
    let mut next: Vec<i64> = vec![offsets.start; partitions as usize];
    let (mut writer, mut reader) = client::connect(address).await?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut consumed = 0u64;
    while next.iter().any(|&o| o < offsets.end) {
        anyhow::ensure!(Instant::now() < deadline, "consume phase timed out");
        let wanted = next
            .iter()
            .enumerate()
            .filter(|&(_, &offset)| offset < offsets.end)
            .map(|(p, &offset)| {
                FetchPartition::default()
                    .with_partition(p as i32)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(FETCH_PARTITION_BYTES)
            })
            .collect();
        let request = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_RESPONSE_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(crate::kafka::api::topic_name(topic))
                    .with_partitions(wanted),
            ]);
        writer.send(ApiKey::Fetch, FETCH_VERSION, &request).await?;
        writer.flush().await?;
        let (_, response): (_, FetchResponse) =
            reader.receive(ApiKey::Fetch, FETCH_VERSION).await?;
        for data in response.responses.iter().flat_map(|t| &t.partitions) {
            anyhow::ensure!(
                data.error_code == 0,
                "fetch error {} on partition {}",
                data.error_code,
                data.partition_index
            );
            let Some(records) = &data.records else {
                continue;
            };
            let (count, next_offset) = walk_batches(records.clone())?;
            consumed += count;
            next[data.partition_index as usize] =
                next_offset.max(next[data.partition_index as usize]);
        }
    }
    Ok(consumed)
}

/// Counts records and finds the next offset by reading batch headers only.
fn walk_batches(mut records: Bytes) -> anyhow::Result<(u64, i64)> {
    let (mut count, mut next_offset) = (0u64, 0i64);
    while records.remaining() >= 61 {
        let base_offset = i64::from_be_bytes(records[0..8].try_into()?);
        let batch_length = i32::from_be_bytes(records[8..12].try_into()?) as usize;
        let last_offset_delta = i32::from_be_bytes(records[23..27].try_into()?);
        let record_count = i32::from_be_bytes(records[57..61].try_into()?);
        if records.remaining() < 12 + batch_length {
            break; // a partial trailing batch, cut by max_bytes
        }
        count += record_count as u64;
        next_offset = base_offset + last_offset_delta as i64 + 1;
        records.advance(12 + batch_length);
    }
    Ok((count, next_offset))
}

fn print_report(options: &BenchOptions, runs: &[BenchRun]) {
    println!(
        "sluiced bench: {} x {} B messages per round, {} round(s), acks=1, {} per batch, {} requests in flight, data under {}",
        options.messages,
        options.message_bytes,
        options.rounds,
        options.batch_messages,
        options.in_flight,
        options.dir.display()
    );
    println!(
        "partitions round | raw write  produce      msg/s  x disk | loopback  consume  x lo | re-read  x lo"
    );
    for &partitions in &options.partitions {
        let rounds: Vec<&BenchRun> = runs.iter().filter(|r| r.partitions == partitions).collect();
        for run in &rounds {
            println!("{}", report_row(run));
        }
        if rounds.len() > 1 {
            let ratios = |ratio: fn(&BenchRun) -> f64| median(rounds.iter().map(|r| ratio(r)));
            println!(
                "{partitions:>10} median{:>40.2}{:>24.2}{:>16.2}",
                ratios(BenchRun::produce_ratio),
                ratios(BenchRun::consume_ratio),
                ratios(BenchRun::reconsume_ratio),
            );
        }
    }
}

fn report_row(run: &BenchRun) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    format!(
        "{:>10} {:>5} | {:>9.1} {:>8.1} {:>10.0} {:>7.2} | {:>8.1} {:>8.1} {:>5.2} | {:>7.1} {:>5.2}",
        run.partitions,
        run.round,
        run.disk_rate / MIB,
        run.rate(run.produce_seconds) / MIB,
        run.messages as f64 / run.produce_seconds,
        run.produce_ratio(),
        run.loopback_rate / MIB,
        run.rate(run.consume_seconds) / MIB,
        run.consume_ratio(),
        run.rate(run.reconsume_seconds) / MIB,
        run.reconsume_ratio(),
    )
}

impl BenchRun {
    fn rate(&self, seconds: f64) -> f64 {
        self.payload_bytes as f64 / seconds
    }

    fn produce_ratio(&self) -> f64 {
        self.rate(self.produce_seconds) / self.disk_rate
    }

    fn consume_ratio(&self) -> f64 {
        self.rate(self.consume_seconds) / self.loopback_rate
    }

    fn reconsume_ratio(&self) -> f64 {
        self.rate(self.reconsume_seconds) / self.loopback_rate
    }
}

/// The middle value (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_batch_is_one_batch_of_the_requested_size() {
        let options = BenchOptions {
            messages: 16,
            message_bytes: 1024,
            partitions: vec![1],
            batch_messages: 16,
            in_flight: 1,
            rounds: 1,
            dir: std::env::temp_dir(),
        };
        let batch = encode_batch(&options).unwrap();
        let headers = crate::log::validate_batches(&batch, u32::MAX).unwrap();
        assert_eq!(headers.len(), 1, "the encoder must not split the batch");
        assert_eq!(headers[0].record_count, 16);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([0.3, 0.1, 0.2].into_iter()), 0.2);
        assert_eq!(median([0.4, 0.1, 0.2, 0.3].into_iter()), 0.25);
        assert!(median(std::iter::empty()).is_nan());
    }
}
