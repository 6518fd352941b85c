//! One connection's heavy or slow request does not stall the others: a
//! produce whose batches decompress to a gigabyte is validated off the async
//! workers, and clients that announce 100 MiB requests and trickle them a
//! byte at a time hold neither the request-memory budget nor their
//! connections for long.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::Daemon;
use common::wire::{connect, read_correlation_id, read_response, request_frame};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const PRODUCE_VERSION: i16 = 9;

/// Records per large batch and the zero bytes each carries: 200 MiB
/// decompressed, under the broker's 256 MiB budget per batch.
const LARGE_RECORDS: i32 = 3_200;
const LARGE_VALUE_BYTES: usize = 64 * 1024;
/// Copies of the large batch in the one produce request: about 2 GiB to
/// decompress, which takes the broker a second or more in a debug build.
const LARGE_BATCHES: i32 = 10;
/// Answers the bystander must get while the large produce is unanswered.
/// Before the broker starts on the large request (~2 MiB on the wire)
/// it could answer a few; a hundred takes far longer than reading it.
const BYSTANDER_ANSWERS: usize = 100;

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A gzip record batch (v2) of `LARGE_RECORDS` records of zeros, built as a
/// stream so the test never holds the 200 MiB it decompresses to.
fn large_gzip_batch() -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zeros = vec![0u8; LARGE_VALUE_BYTES];
    for offset_delta in 0..LARGE_RECORDS {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i64::from(offset_delta));
        put_varint(&mut body, -1); // no key
        put_varint(&mut body, LARGE_VALUE_BYTES as i64);
        let mut head = Vec::new();
        put_varint(&mut head, (body.len() + LARGE_VALUE_BYTES + 1) as i64);
        encoder.write_all(&head).unwrap();
        encoder.write_all(&body).unwrap();
        encoder.write_all(&zeros).unwrap();
        encoder.write_all(&[0]).unwrap(); // no headers
    }
    let compressed = encoder.finish().unwrap();
    let timestamp = 1_700_000_000_000i64;
    let mut after_crc = BytesMut::new();
    after_crc.put_i16(1); // attributes: gzip
    after_crc.put_i32(LARGE_RECORDS - 1); // last offset delta
    after_crc.put_i64(timestamp);
    after_crc.put_i64(timestamp);
    after_crc.put_i64(-1); // producer id
    after_crc.put_i16(-1); // producer epoch
    after_crc.put_i32(-1); // base sequence
    after_crc.put_i32(LARGE_RECORDS);
    after_crc.extend_from_slice(&compressed);
    let mut batch = BytesMut::new();
    batch.put_i64(0); // base offset
    batch.put_i32((after_crc.len() + 9) as i32); // from the leader epoch on
    batch.put_i32(-1); // partition leader epoch
    batch.put_i8(2); // magic
    batch.put_u32(crc32c::crc32c(&after_crc));
    batch.extend_from_slice(&after_crc);
    batch.freeze()
}

/// One uncompressed record, for the bystander's small produces.
fn small_batch(value: &str) -> Bytes {
    let record = sluice::log::producer_record(
        0,
        1_700_000_000_000,
        None,
        Some(Bytes::from(value.to_string())),
    );
    let mut batch = BytesMut::new();
    let options = kafka_protocol::records::RecordEncodeOptions {
        version: 2,
        compression: kafka_protocol::records::Compression::None,
    };
    kafka_protocol::records::RecordBatchEncoder::encode(&mut batch, [record].iter(), &options)
        .unwrap();
    batch.freeze()
}

fn produce_frame(correlation_id: i32, partition: i32, records: Bytes) -> Vec<u8> {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic("t"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    request_frame(ApiKey::Produce, PRODUCE_VERSION, correlation_id, &request)
}

/// Reads one produce reply: (correlation id, error code, base offset).
fn read_produce_reply(stream: &mut TcpStream) -> (i32, i16, i64) {
    let mut body = Bytes::from(read_response(stream));
    let header = ResponseHeader::decode(
        &mut body,
        ApiKey::Produce.response_header_version(PRODUCE_VERSION),
    )
    .unwrap();
    let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
    let partition = &response.responses[0].partition_responses[0];
    (
        header.correlation_id,
        partition.error_code,
        partition.base_offset,
    )
}

/// Produces one small record and checks it is appended at `expected_offset`.
fn produce_one(stream: &mut TcpStream, correlation_id: i32, partition: i32, expected_offset: i64) {
    stream
        .write_all(&produce_frame(
            correlation_id,
            partition,
            small_batch(&format!("small {correlation_id}")),
        ))
        .unwrap();
    assert_eq!(
        read_produce_reply(stream),
        (correlation_id, 0, expected_offset)
    );
}

/// Whether bytes (or the end of the stream) are waiting to be read.
fn has_data(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peeking: {e}"),
    }
}

/// With `workers` async workers (`TOKIO_WORKER_THREADS`) and as many
/// connections each sending a produce that takes a second or more to
/// validate: if those were validated on the workers, every other connection
/// would go unanswered until they were done. Here the bystander gets a
/// hundred answers, produces included, while none of the large produces is
/// answered yet, and they then succeed whole.
fn large_produces_leave_the_bystander_served(workers: usize) {
    let daemon = Daemon::start_with_env(
        "[topics.t]\npartitions = 3\n",
        &[("TOKIO_WORKER_THREADS", &workers.to_string())],
    );
    let batch = large_gzip_batch();
    let mut records = BytesMut::new();
    for _ in 0..LARGE_BATCHES {
        records.extend_from_slice(&batch);
    }
    let records = records.freeze();
    let bystander_partition = 2;
    let mut bystander = connect(&daemon);
    produce_one(&mut bystander, 0, bystander_partition, 0);
    let mut heavy: Vec<TcpStream> = (0..workers).map(|_| connect(&daemon)).collect();
    for (partition, stream) in heavy.iter_mut().enumerate() {
        let frame = produce_frame(1, partition as i32, records.clone());
        eprintln!("large produce: {} bytes on the wire", frame.len());
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        stream.write_all(&frame).unwrap();
    }
    let sent = Instant::now();
    let any_answered = |heavy: &[TcpStream]| heavy.iter().any(has_data);

    let mut answered = 0;
    let mut produced = 1;
    while answered < BYSTANDER_ANSWERS && !any_answered(&heavy) {
        let correlation_id = 100 + answered as i32;
        if answered % 2 == 0 {
            bystander
                .write_all(&request_frame(
                    ApiKey::ApiVersions,
                    3,
                    correlation_id,
                    &ApiVersionsRequest::default(),
                ))
                .unwrap();
            assert_eq!(read_correlation_id(&mut bystander), correlation_id);
        } else {
            produce_one(
                &mut bystander,
                correlation_id,
                bystander_partition,
                produced,
            );
            produced += 1;
        }
        // Counted only if no large produce is answered yet.
        if any_answered(&heavy) {
            break;
        }
        answered += 1;
    }
    let meanwhile = sent.elapsed();
    assert_eq!(
        answered, BYSTANDER_ANSWERS,
        "{workers} worker(s): the bystander got {answered} answers in {meanwhile:?} before a large produce's reply"
    );
    for (partition, stream) in heavy.iter_mut().enumerate() {
        assert_eq!(read_produce_reply(stream), (1, 0, 0));
        let after = i64::from(LARGE_BATCHES * LARGE_RECORDS);
        produce_one(stream, 2, partition as i32, after);
    }
    eprintln!(
        "{workers} worker(s): {answered} bystander answers in {meanwhile:?}; large produces answered within {:?}",
        sent.elapsed()
    );
}

#[test]
fn a_huge_compressed_batch_does_not_stall_the_only_worker() {
    large_produces_leave_the_bystander_served(1);
}

#[test]
fn huge_compressed_batches_on_every_worker_stall_none() {
    large_produces_leave_the_bystander_served(2);
}

/// Requests announced by the slow clients: `socket_request_max_bytes`.
const ANNOUNCED_BYTES: i32 = 100 * 1024 * 1024;
const SLOW_CLIENTS: usize = 6;
/// How often each slow client sends one more byte.
const TRICKLE_INTERVAL: Duration = Duration::from_secs(1);
/// Produces made while the slow clients hold their connections open.
const PRODUCES_WHILE_SLOW: i64 = 8;
/// The broker's bound on reading one request (`REQUEST_READ_TIMEOUT`).
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the server has closed `stream`: end of stream or a reset.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let read = (&*stream).read(&mut [0u8; 64]);
    stream.set_nonblocking(false).unwrap();
    match read {
        Ok(0) => true,
        Ok(_) => panic!("a slow client got an answer to half a request"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => true,
        Err(e) => panic!("reading from a slow client's socket: {e}"),
    }
}

/// Six clients each announce a 100 MiB request (together more than the
/// 512 MiB request budget) and then send a byte a second. Memory is
/// reserved as bytes arrive, so another client keeps producing meanwhile;
/// each slow request must arrive whole within 30 s, so the slow clients are
/// then disconnected.
#[test]
fn slow_loris_clients_neither_starve_producers_nor_stay_connected() {
    let daemon = Daemon::start("[topics.t]\npartitions = 1\n");
    let mut producer = connect(&daemon);
    produce_one(&mut producer, 0, 0, 0);

    let mut slow: Vec<TcpStream> = (0..SLOW_CLIENTS).map(|_| connect(&daemon)).collect();
    for stream in &mut slow {
        stream.write_all(&ANNOUNCED_BYTES.to_be_bytes()).unwrap();
        stream.write_all(&[0]).unwrap();
    }
    let started = Instant::now();
    // Writes one byte to each slow client still open; the pace of a slow
    // client, not a synchronisation.
    let trickle = |slow: &mut Vec<TcpStream>, tick: u32| {
        let next = started + TRICKLE_INTERVAL * tick;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for stream in slow.iter_mut() {
            // A write to a connection the server closed may fail: fine.
            let _ = stream.write_all(&[0]);
        }
    };

    let mut tick = 0;
    for offset in 1..=PRODUCES_WHILE_SLOW {
        tick += 1;
        trickle(&mut slow, tick);
        let asked = Instant::now();
        produce_one(&mut producer, offset as i32, 0, offset);
        eprintln!("produce {offset} answered in {:?}", asked.elapsed());
    }
    assert!(
        started.elapsed() < REQUEST_READ_TIMEOUT,
        "the produces took too long to show the slow clients were still connected"
    );
    for (i, stream) in slow.iter().enumerate() {
        assert!(
            !closed_by_server(stream),
            "slow client {i} was closed after {:?}, before its request deadline",
            started.elapsed()
        );
    }

    // Each slow request began when its size arrived: all are closed once
    // the read deadline has passed (bounded in time and in ticks).
    let give_up = REQUEST_READ_TIMEOUT + Duration::from_secs(30);
    let mut open: Vec<usize> = (0..SLOW_CLIENTS).collect();
    while !open.is_empty() && started.elapsed() < give_up {
        tick += 1;
        trickle(&mut slow, tick);
        open.retain(|&i| !closed_by_server(&slow[i]));
    }
    assert!(
        open.is_empty(),
        "slow clients {open:?} still connected after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= REQUEST_READ_TIMEOUT - TRICKLE_INTERVAL,
        "slow clients closed after {:?}, before the read deadline",
        started.elapsed()
    );
    produce_one(&mut producer, 99, 0, PRODUCES_WHILE_SLOW + 1);
    let log = daemon.log();
    assert_eq!(
        log.matches("request not whole after 30s").count(),
        SLOW_CLIENTS,
        "{log}"
    );
}
