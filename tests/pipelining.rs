//! Pipelined requests on one connection are answered in the order they
//! were sent, whether the replies are ready at once (produce acks=1) or wait
//! (a fetch's long poll), and a ready reply is not held back behind a later
//! request that waits.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::Daemon;
use common::wire::{connect, read_correlation_id, read_response, request_frame};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

fn produce_frame(correlation_id: i32, records_per_batch: i32) -> Vec<u8> {
    let records: Vec<Record> = (0..records_per_batch)
        .map(|i| {
            let value = Bytes::from(format!("message {correlation_id}/{i}"));
            sluice::log::producer_record(i as usize, 1_700_000_000_000, None, Some(value))
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, records.iter(), &options).unwrap();
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic("t"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.freeze())),
                ]),
        ]);
    request_frame(ApiKey::Produce, PRODUCE_VERSION, correlation_id, &request)
}

/// Hundreds of produce requests written at once: every reply comes back in
/// order, each with the base offset its batch was given.
#[test]
fn pipelined_produce_replies_come_back_in_order_with_their_offsets() {
    let daemon = Daemon::start("[topics.t]\npartitions = 1\n");
    let mut stream = connect(&daemon);
    const REQUESTS: i32 = 300;
    const RECORDS: i32 = 3;
    let mut frames = Vec::new();
    for correlation_id in 0..REQUESTS {
        frames.extend(produce_frame(correlation_id, RECORDS));
    }
    stream.write_all(&frames).unwrap();
    for correlation_id in 0..REQUESTS {
        let mut body = Bytes::from(read_response(&mut stream));
        let header = ResponseHeader::decode(
            &mut body,
            ApiKey::Produce.response_header_version(PRODUCE_VERSION),
        )
        .unwrap();
        assert_eq!(
            header.correlation_id, correlation_id,
            "replies out of order"
        );
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.base_offset, i64::from(correlation_id * RECORDS));
    }
}

/// A fetch whose records go out with `sendfile`, between two replies that
/// are gathered in memory: all three in order, the records intact.
#[test]
fn a_fetch_with_records_keeps_its_place_between_gathered_replies() {
    let daemon = Daemon::start("[topics.t]\npartitions = 1\n");
    let mut stream = connect(&daemon);
    stream.write_all(&produce_frame(1, 5)).unwrap();
    assert_eq!(read_correlation_id(&mut stream), 1);
    let mut frames = Vec::new();
    for correlation_id in [2, 3] {
        frames.extend(request_frame(
            ApiKey::ApiVersions,
            3,
            correlation_id,
            &ApiVersionsRequest::default(),
        ));
    }
    frames.extend(request_frame(
        ApiKey::Fetch,
        FETCH_VERSION,
        4,
        &fetch_request(0, Duration::ZERO),
    ));
    frames.extend(request_frame(
        ApiKey::ApiVersions,
        3,
        5,
        &ApiVersionsRequest::default(),
    ));
    stream.write_all(&frames).unwrap();
    assert_eq!(read_correlation_id(&mut stream), 2);
    assert_eq!(read_correlation_id(&mut stream), 3);
    let mut body = Bytes::from(read_response(&mut stream));
    let header = ResponseHeader::decode(
        &mut body,
        ApiKey::Fetch.response_header_version(FETCH_VERSION),
    )
    .unwrap();
    assert_eq!(header.correlation_id, 4, "replies out of order");
    let fetched = FetchResponse::decode(&mut body, FETCH_VERSION).unwrap();
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let mut records = partition.records.clone().expect("records");
    let batch = RecordBatchDecoder::decode(&mut records).unwrap();
    assert_eq!(batch.records.len(), 5);
    assert_eq!(read_correlation_id(&mut stream), 5);
}

fn fetch_request(offset: i64, max_wait: Duration) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(1024 * 1024)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic("t"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1024 * 1024),
                ]),
        ])
}

/// ApiVersions, then a fetch that long-polls an empty partition, then
/// ApiVersions: the first reply arrives while the fetch still waits, and
/// the third only after the fetch's reply.
#[test]
fn a_ready_reply_is_not_held_behind_a_long_poll() {
    let daemon = Daemon::start("[topics.t]\npartitions = 1\n");
    let mut stream = connect(&daemon);
    let long_poll = Duration::from_secs(3);
    let fetch = fetch_request(0, long_poll);
    let mut frames = request_frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    frames.extend(request_frame(ApiKey::Fetch, FETCH_VERSION, 2, &fetch));
    frames.extend(request_frame(
        ApiKey::ApiVersions,
        3,
        3,
        &ApiVersionsRequest::default(),
    ));
    let sent = Instant::now();
    stream.write_all(&frames).unwrap();
    assert_eq!(read_correlation_id(&mut stream), 1);
    assert!(
        sent.elapsed() < long_poll / 2,
        "the first reply waited {:?}, behind the fetch's long poll",
        sent.elapsed()
    );
    assert_eq!(read_correlation_id(&mut stream), 2);
    assert!(
        sent.elapsed() >= long_poll - Duration::from_millis(100),
        "the fetch answered before its long poll ended, with nothing to return"
    );
    assert_eq!(read_correlation_id(&mut stream), 3);
}
