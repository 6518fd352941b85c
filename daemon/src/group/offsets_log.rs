//! The offsets log's record format — Kafka's own, so its tools can read
//! it — and the group → partition mapping.
//!
//! Key (version 1): `i16 version=1, string group, string topic, i32 partition`.
//! Value (version 3): `i16 version=3, i64 offset, i32 leader_epoch,
//! string metadata, i64 commit_timestamp_ms`. A null value is a tombstone
//! (offset deleted). Strings are `i16 length` + UTF-8. Keys of other
//! versions (Kafka's group metadata, version 2) are skipped on replay.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use thiserror::Error;

use super::coordinator::CommittedOffset;
use super::offset_commit::OffsetChange;

/// The internal topic holding commits (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partitions; Kafka's offsets.topic.num.partitions defaults to 50.
/// Fixed for the life of a data directory: the hash below depends on it.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 16;
/// Records per appended batch, so one commit of many partitions stays
/// within the topic's max.message.bytes.
pub const RECORDS_PER_BATCH_MAX: usize = 1_000;

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;

#[derive(Debug, Error)]
pub enum OffsetsLogError {
    #[error("offsets record truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("decoding an offsets batch: {0}")]
    Batch(String),
    #[error("encoding an offsets batch: {0}")]
    Encode(String),
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`: Java's String
/// hash over UTF-16 code units, sign bit masked.
/// Kafka's settings of its offsets topic: compacted by the log cleaner,
/// never deleted by retention, 100 MiB segments (`offsets.topic.segment.bytes`).
pub fn topic_settings() -> Vec<(String, String)> {
    [
        ("cleanup.policy", "compact"),
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let index = (hash & 0x7fff_ffff) % partitions;
    assert!((0..partitions).contains(&index));
    index
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&bytes[..len]);
}

fn get_string(buf: &mut Bytes) -> Result<String, OffsetsLogError> {
    if buf.remaining() < 2 {
        return Err(OffsetsLogError::Malformed("string length"));
    }
    let len = buf.get_i16();
    let len = usize::try_from(len).map_err(|_| OffsetsLogError::Malformed("negative length"))?;
    if buf.remaining() < len {
        return Err(OffsetsLogError::Malformed("string bytes"));
    }
    String::from_utf8(buf.split_to(len).to_vec())
        .map_err(|_| OffsetsLogError::Malformed("string not UTF-8"))
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

pub fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(24 + value.metadata.len());
    buf.put_i16(OFFSET_VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp_ms);
    buf.freeze()
}

/// Decodes one record; `Ok(None)` for a key kind that is not an offset.
pub fn decode_record(
    key: &Bytes,
    value: Option<&Bytes>,
) -> Result<Option<OffsetChange>, OffsetsLogError> {
    let mut k = key.clone();
    if k.remaining() < 2 {
        return Err(OffsetsLogError::Malformed("key version"));
    }
    let version = k.get_i16();
    if !(0..=OFFSET_KEY_VERSION).contains(&version) {
        return Ok(None);
    }
    let group = get_string(&mut k)?;
    let topic = get_string(&mut k)?;
    if k.remaining() < 4 {
        return Err(OffsetsLogError::Malformed("key partition"));
    }
    let partition = k.get_i32();
    let Some(value) = value else {
        return Ok(Some((group, (topic, partition), None)));
    };
    let mut v = value.clone();
    if v.remaining() < 2 + 8 + 4 {
        return Err(OffsetsLogError::Malformed("value header"));
    }
    let value_version = v.get_i16();
    let offset = v.get_i64();
    // Kafka's value v1 has no leader epoch; v3 does. We write v3 only.
    let leader_epoch = if value_version >= 3 { v.get_i32() } else { -1 };
    let metadata = get_string(&mut v)?;
    if v.remaining() < 8 {
        return Err(OffsetsLogError::Malformed("commit timestamp"));
    }
    let commit_timestamp_ms = v.get_i64();
    Ok(Some((
        group,
        (topic, partition),
        Some(CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        }),
    )))
}

/// Encodes changes as record batches of at most `RECORDS_PER_BATCH_MAX`.
pub fn encode_batches(
    changes: &[OffsetChange],
    now_ms: i64,
) -> Result<Vec<Vec<u8>>, OffsetsLogError> {
    let mut batches = Vec::new();
    for chunk in changes.chunks(RECORDS_PER_BATCH_MAX) {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, (group, (topic, partition), value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now_ms,
                key: Some(encode_key(group, topic, *partition)),
                value: value.as_ref().map(encode_value),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options)
            .map_err(|e| OffsetsLogError::Encode(e.to_string()))?;
        batches.push(buf.to_vec());
    }
    Ok(batches)
}

/// Decodes whole batches read back from the log into changes, in order,
/// with the offset just past the last whole batch read.
pub fn decode_batches(bytes: Bytes) -> Result<(Vec<OffsetChange>, Option<i64>), OffsetsLogError> {
    let mut buf = bytes;
    let mut changes = Vec::new();
    let mut next_offset = None;
    // A fetch-style read may end inside a batch: stop at the last whole one.
    while buf.remaining() >= 12 {
        let len = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let whole = usize::try_from(len).is_ok_and(|l| buf.remaining() >= 12 + l);
        if !whole {
            break;
        }
        // The batch's own end: compaction may have removed its last records,
        // or all of them (an empty batch).
        if buf.remaining() >= 27 {
            let base = i64::from_be_bytes(buf[0..8].try_into().unwrap_or([0; 8]));
            let delta = i32::from_be_bytes(buf[23..27].try_into().unwrap_or([0; 4]));
            next_offset = Some(base + i64::from(delta) + 1);
        }
        let set = RecordBatchDecoder::decode(&mut buf)
            .map_err(|e| OffsetsLogError::Batch(e.to_string()))?;
        for record in &set.records {
            let Some(key) = &record.key else { continue };
            if let Some(change) = decode_record(key, record.value.as_ref())? {
                changes.push(change);
            }
        }
    }
    Ok((changes, next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash() {
        // "group-1".hashCode() in Java is 293427299; 293427299 % 50 = 49.
        assert_eq!(partition_for("group-1", 50), 49);
        assert_eq!(partition_for("", 50), 0);
        for g in ["a", "orders", "ä-grüppe", "x".repeat(300).as_str()] {
            assert!((0..16).contains(&partition_for(g, 16)));
        }
    }

    #[test]
    fn commits_and_tombstones_round_trip_through_a_batch() {
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: 0,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let changes: Vec<OffsetChange> = vec![
            ("g".into(), ("t".into(), 3), Some(value.clone())),
            ("g".into(), ("t".into(), 4), None),
        ];
        let batches = encode_batches(&changes, 5).unwrap();
        assert_eq!(batches.len(), 1);
        let (decoded, next) = decode_batches(Bytes::from(batches[0].clone())).unwrap();
        assert_eq!(decoded, changes);
        assert_eq!(next, Some(2));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        assert!(decode_record(&Bytes::from_static(&[0]), None).is_err());
        assert!(decode_record(&Bytes::from_static(&[0, 1, 0, 9, b'a']), None).is_err());
        assert_eq!(
            decode_record(&Bytes::from_static(&[0, 2, 0, 0]), None).unwrap(),
            None
        );
        let key = encode_key("g", "t", 0);
        assert!(decode_record(&key, Some(&Bytes::from_static(&[0, 3, 0]))).is_err());
    }
}
