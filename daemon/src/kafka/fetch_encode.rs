//! Encodes a Fetch response as chunks so record bytes can go from the segment
//! file to the socket with `sendfile`. The codec encodes everything except the
//! records themselves; a unit test checks the result is byte-for-byte what
//! the codec would produce with the records in memory.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use super::response::{Chunk, ResponseFrame};
use crate::broker::FileSlice;

/// First Fetch version using flexible (compact, tagged) encoding.
const FETCH_FLEXIBLE_VERSION_MIN: i16 = 12;
/// Versions whose top-level and topic framing this encoder writes by hand.
pub const FETCH_CHUNKED_VERSION_MAX: i16 = 12;

/// A partition's answer with its records still in the segment file.
#[derive(Debug, Clone)]
pub struct PartitionAnswer {
    /// Everything but `records`, which must be `None` here.
    pub data: PartitionData,
    pub records: Option<FileSlice>,
}

/// One topic's partitions, in request order.
#[derive(Debug, Clone)]
pub struct TopicAnswer {
    pub name: String,
    pub partitions: Vec<PartitionAnswer>,
}

/// The whole response body fields this encoder supports.
#[derive(Debug, Clone)]
pub struct FetchAnswer {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicAnswer>,
}

/// Chunk builder that merges adjacent encoded bytes.
struct Chunks {
    done: Vec<Chunk>,
    current: BytesMut,
}

impl Chunks {
    fn push_file(&mut self, slice: FileSlice) {
        if !self.current.is_empty() {
            self.done.push(Chunk::Bytes(self.current.split().freeze()));
        }
        self.done.push(Chunk::File(slice));
    }

    fn finish(mut self) -> ResponseFrame {
        if !self.current.is_empty() {
            self.done.push(Chunk::Bytes(self.current.split().freeze()));
        }
        ResponseFrame { chunks: self.done }
    }
}

/// Encodes header and body for `version` (4..=12).
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    answer: &FetchAnswer,
) -> anyhow::Result<ResponseFrame> {
    anyhow::ensure!(
        (4..=FETCH_CHUNKED_VERSION_MAX).contains(&version),
        "fetch version {version} not supported by the chunked encoder"
    );
    let flexible = version >= FETCH_FLEXIBLE_VERSION_MIN;
    let mut out = Chunks {
        done: Vec::new(),
        current: BytesMut::with_capacity(512),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(
        &mut out.current,
        ApiKey::Fetch.response_header_version(version),
    )?;
    out.current.put_i32(answer.throttle_time_ms);
    if version >= 7 {
        out.current.put_i16(answer.error_code);
        out.current.put_i32(answer.session_id);
    }
    put_array_len(&mut out.current, answer.topics.len(), flexible)?;
    for topic in &answer.topics {
        put_string(&mut out.current, &topic.name, flexible)?;
        put_array_len(&mut out.current, topic.partitions.len(), flexible)?;
        for partition in &topic.partitions {
            encode_partition(&mut out, partition, version, flexible)?;
        }
        if flexible {
            out.current.put_u8(0); // no tagged fields
        }
    }
    if flexible {
        out.current.put_u8(0);
    }
    Ok(out.finish())
}

fn put_array_len(buf: &mut BytesMut, len: usize, flexible: bool) -> anyhow::Result<()> {
    let len = u32::try_from(len)?;
    if flexible {
        put_unsigned_varint(buf, len + 1);
    } else {
        buf.put_i32(i32::try_from(len)?);
    }
    Ok(())
}

/// Kafka STRING (i16 length) or COMPACT_STRING (varint length + 1).
fn put_string(buf: &mut BytesMut, value: &str, flexible: bool) -> anyhow::Result<()> {
    if flexible {
        put_unsigned_varint(buf, u32::try_from(value.len())? + 1);
    } else {
        buf.put_i16(i16::try_from(value.len())?);
    }
    buf.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Kafka UNSIGNED_VARINT: 7 bits per byte, low bits first.
fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Splits the codec's encoding around the records field: encoding once with
/// null and once with empty records, the first differing byte is where the
/// records length starts; what follows the (null) length is the tail.
fn encode_partition(
    out: &mut Chunks,
    partition: &PartitionAnswer,
    version: i16,
    flexible: bool,
) -> anyhow::Result<()> {
    assert!(
        partition.data.records.is_none(),
        "records travel as a file slice"
    );
    let Some(slice) = partition.records.clone() else {
        let mut data = partition.data.clone();
        data.records = Some(Bytes::new());
        data.encode(&mut out.current, version)?;
        return Ok(());
    };
    let mut with_null = BytesMut::new();
    partition.data.encode(&mut with_null, version)?;
    let mut with_empty = BytesMut::new();
    let mut empty = partition.data.clone();
    empty.records = Some(Bytes::new());
    empty.encode(&mut with_empty, version)?;
    let split = with_null
        .iter()
        .zip(with_empty.iter())
        .position(|(a, b)| a != b)
        .ok_or_else(|| anyhow::anyhow!("records field not found in partition encoding"))?;
    let null_len_bytes = if flexible { 1 } else { 4 };
    out.current.extend_from_slice(&with_null[..split]);
    if flexible {
        put_unsigned_varint(&mut out.current, slice.len + 1);
    } else {
        out.current.put_i32(i32::try_from(slice.len)?);
    }
    let tail = with_null.split_off(split + null_len_bytes);
    out.push_file(slice);
    out.current.extend_from_slice(&tail);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use std::io::Write;
    use std::sync::Arc;

    fn file_with(bytes: &[u8]) -> Arc<std::fs::File> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        Arc::new(file)
    }

    fn partition(index: i32, hw: i64) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(hw)
            .with_last_stable_offset(hw)
            .with_aborted_transactions(None)
            .with_records(None)
    }

    #[test]
    fn chunked_encoding_matches_the_codec_for_every_version() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let file = file_with(&payload);
        for version in 4..=FETCH_CHUNKED_VERSION_MAX {
            let answer = FetchAnswer {
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                topics: vec![
                    TopicAnswer {
                        name: "orders".into(),
                        partitions: vec![
                            PartitionAnswer {
                                data: partition(0, 10),
                                records: Some(FileSlice {
                                    file: file.clone(),
                                    position: 17,
                                    len: 200,
                                    offsets: 10..20,
                                }),
                            },
                            PartitionAnswer {
                                data: partition(1, 0),
                                records: None,
                            },
                        ],
                    },
                    TopicAnswer {
                        name: "payments".into(),
                        partitions: vec![PartitionAnswer {
                            data: partition(3, 99).with_error_code(1),
                            records: Some(FileSlice {
                                file: file.clone(),
                                position: 0,
                                len: 5,
                                offsets: 0..1,
                            }),
                        }],
                    },
                ],
            };
            let ours = encode_fetch_response(42, version, &answer)
                .unwrap()
                .to_vec()
                .unwrap();

            let mut expected = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(42)
                .encode(
                    &mut expected,
                    ApiKey::Fetch.response_header_version(version),
                )
                .unwrap();
            let topics = answer
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let bytes = match &p.records {
                                Some(s) => Bytes::from(s.read_to_vec().unwrap()),
                                None => Bytes::new(),
                            };
                            p.data.clone().with_records(Some(bytes))
                        })
                        .collect();
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_partitions(partitions)
                })
                .collect();
            FetchResponse::default()
                .with_responses(topics)
                .encode(&mut expected, version)
                .unwrap();
            assert_eq!(ours, expected.to_vec(), "fetch v{version}");
        }
    }
}
