//! `sluiced bench`: produce and consume throughput of an in-process broker,
//! each reported beside the raw disk write and loopback TCP rates measured
//! in the same run on the same machine.

mod baseline;
pub mod client;

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
    pub dir: PathBuf,
}

/// One partition count's results.
#[derive(Debug, Clone)]
pub struct BenchRun {
    pub partitions: i32,
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
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let runs = run_phases(options)?;
    print_report(options, &runs);
    Ok(())
}

/// Each broker phase runs right after the baseline it is compared with, so
/// both meet the same machine: on a VM the loopback rate alone varies by a
/// factor of 1.7 between runs, and buffered writes into just-freed blocks
/// run several times faster than into fresh ones. Every timed write starts
/// with no dirty data outstanding, and what is written stays until the end
/// (the baseline's files as the log's segments), so neither side writes into
/// blocks the other just freed.
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
        ListenerLimits::default(),
        stop_rx,
    ));
    let housekeeping = server_runtime.spawn(broker.clone().run_housekeeping());
    let mut runs = Vec::new();
    for &partitions in &options.partitions {
        let topic = format!("bench-{partitions}p");
        broker.create_topic(&topic, Some(partitions), &[], false)?;
        let raw_file = scratch.path().join(format!("raw-write-{partitions}p"));
        let disk_rate = baseline::disk_write_bytes_per_sec(&raw_file, total_bytes)
            .context("raw disk baseline")?;
        baseline::settle_writeback(&options.dir)?;
        let started = Instant::now();
        client_runtime.block_on(produce(address, &topic, partitions, options))?;
        let produce_seconds = started.elapsed().as_secs_f64();
        let loopback_rate =
            baseline::loopback_tcp_bytes_per_sec(total_bytes).context("loopback baseline")?;
        let started = Instant::now();
        let messages = client_runtime.block_on(consume(address, &topic, partitions, options))?;
        let consume_seconds = started.elapsed().as_secs_f64();
        // A second read of the same data: consumers that are not tailing,
        // once writeback of what was just produced has settled.
        baseline::settle_writeback(&options.dir)?;
        let started = Instant::now();
        client_runtime.block_on(consume(address, &topic, partitions, options))?;
        let reconsume_seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            messages == rounded_messages(options, partitions),
            "consumed {messages} messages"
        );
        runs.push(BenchRun {
            partitions,
            disk_rate,
            loopback_rate,
            produce_seconds,
            consume_seconds,
            reconsume_seconds,
            payload_bytes: messages * options.message_bytes as u64,
            messages,
        });
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

async fn produce(
    address: std::net::SocketAddr,
    topic: &str,
    partitions: i32,
    options: &BenchOptions,
) -> anyhow::Result<()> {
    let batch = encode_batch(options)?;
    let data = (0..partitions)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch.clone()))
        })
        .collect();
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(crate::kafka::api::topic_name(topic))
                .with_partition_data(data),
        ]);
    let requests =
        rounded_messages(options, partitions) / (options.batch_messages as u64 * partitions as u64);
    let mut frame = client::encode_frame(ApiKey::Produce, PRODUCE_VERSION, &request)?;
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

async fn consume(
    address: std::net::SocketAddr,
    topic: &str,
    partitions: i32,
    options: &BenchOptions,
) -> anyhow::Result<u64> {
    let per_partition = rounded_messages(options, partitions) / partitions as u64;
    let mut next: Vec<i64> = vec![0; partitions as usize];
    let (mut writer, mut reader) = client::connect(address).await?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut consumed = 0u64;
    while next.iter().any(|&o| (o as u64) < per_partition) {
        anyhow::ensure!(Instant::now() < deadline, "consume phase timed out");
        let wanted = next
            .iter()
            .enumerate()
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
    const MIB: f64 = 1024.0 * 1024.0;
    println!(
        "sluiced bench: {} x {} B messages, acks=1, {} per batch, {} requests in flight, data under {}",
        options.messages,
        options.message_bytes,
        options.batch_messages,
        options.in_flight,
        options.dir.display()
    );
    for run in runs {
        let rate = |seconds: f64| run.payload_bytes as f64 / seconds;
        let messages = |seconds: f64| run.messages as f64 / seconds;
        let (produce, consume, reconsume) = (
            rate(run.produce_seconds),
            rate(run.consume_seconds),
            rate(run.reconsume_seconds),
        );
        let p = run.partitions;
        println!(
            "{p:>2} partition(s)  raw disk write {:>8.1} MiB/s",
            run.disk_rate / MIB
        );
        println!(
            "{p:>2} partition(s)  produce        {:>8.1} MiB/s {:>9.0} msg/s = {:.2} x disk",
            produce / MIB,
            messages(run.produce_seconds),
            produce / run.disk_rate
        );
        println!(
            "{p:>2} partition(s)  loopback TCP   {:>8.1} MiB/s",
            run.loopback_rate / MIB
        );
        println!(
            "{p:>2} partition(s)  consume        {:>8.1} MiB/s {:>9.0} msg/s = {:.2} x loopback",
            consume / MIB,
            messages(run.consume_seconds),
            consume / run.loopback_rate
        );
        println!(
            "{p:>2} partition(s)  re-read        {:>8.1} MiB/s {:>9.0} msg/s = {:.2} x loopback",
            reconsume / MIB,
            messages(run.reconsume_seconds),
            reconsume / run.loopback_rate
        );
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
            dir: std::env::temp_dir(),
        };
        let batch = encode_batch(&options).unwrap();
        let headers = crate::log::validate_batches(&batch, u32::MAX).unwrap();
        assert_eq!(headers.len(), 1, "the encoder must not split the batch");
        assert_eq!(headers[0].record_count, 16);
    }
}
