//! The metadata image as bytes: what the Raft log store snapshots so the
//! metadata log can be cut (plan §1.4 "Snapshots bound the log"), and what a
//! lagging node installs in place of the entries it missed. A snapshot comes
//! from disk or another node, so decoding trusts nothing: every length is
//! checked before anything is allocated, and the image is rebuilt only if
//! every rule of `MetadataImage::validate` holds.
//!
//! ```text
//! snapshot := "SLMS" format:u8 crc32c:u32 body   (the CRC-32C covers body)
//! body     := applied_index:u64 next_producer_id:i64
//!             broker_count:u32 broker × broker_count
//!             topic_count:u32 topic × topic_count
//!             has_spec:u8 [spec_hash:string spec_text:string]
//! broker   := registration (RegisterBroker's body) broker_epoch:i64 fenced:u8
//! topic    := topic_id:uuid name:string declared:u8 settings
//!             partition_count:u32 partition × partition_count
//! partition := partition_state adding:i32 list removing:i32 list
//!             (format 1 had no lists: read as no reassignment)
//! ```
//! Fields are as in records.rs (big-endian, length-prefixed), and so are the
//! registration and partition-state layouts, so the two codecs cannot drift
//! apart. Bytes left over are refused.

use super::codec::{Reader, Writer};
use super::error::{CodecError, SnapshotError};
use super::image::{AppliedSpec, BrokerEntry, MetadataImage, TopicEntry};
use super::records::{
    SETTINGS_LIMITS, SPEC_HASH_BYTES_MAX, SPEC_TEXT_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
    decode_partition_state, decode_reassignment, decode_registration, encode_partition_state,
    encode_reassignment, encode_registration,
};
use crate::config::PARTITIONS_MAX;

const MAGIC: &[u8; 4] = b"SLMS";
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;
const HEADER_BYTES: usize = 4 + 1 + 4;

/// A snapshot is held in memory whole (raft-rs hands it over as one
/// buffer), so it is bounded; 64 MiB holds about a million partitions.
pub const SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// More than any cluster the spec can declare.
pub const SNAPSHOT_BROKERS_MAX: usize = 65_536;
pub const SNAPSHOT_TOPICS_MAX: usize = 1_000_000;
/// The spec's limit on a topic's partitions.
pub const SNAPSHOT_PARTITIONS_PER_TOPIC_MAX: usize = PARTITIONS_MAX as usize;

/// The fewest bytes each element can take, so that a count is checked
/// against the bytes left before a `Vec` is sized by it.
const BROKER_BYTES_MIN: usize = 4 + 16 + 2 + 2 + 7 + 1 + 8 + 1;
const TOPIC_BYTES_MIN: usize = 16 + 2 + 1 + 2 + 4;
const PARTITION_BYTES_MIN: usize = 2 + 2 + 4 + 4 + 4;

/// The image's bytes, CRC-checked; refuses an image larger than
/// `SNAPSHOT_BYTES_MAX` or with a field the decoder would refuse.
pub fn encode_image(image: &MetadataImage) -> Result<Vec<u8>, CodecError> {
    let brokers: Vec<&BrokerEntry> = image.brokers().collect();
    let topics: Vec<&TopicEntry> = image.topics().collect();
    encode_parts(
        image.applied_index(),
        image.next_producer_id(),
        &brokers,
        &topics,
        image.applied_spec(),
    )
}

/// `encode_image` over loose parts. Nothing here checks the image's rules,
/// which lets tests write snapshots that break them.
pub(super) fn encode_parts(
    applied_index: u64,
    next_producer_id: i64,
    brokers: &[&BrokerEntry],
    topics: &[&TopicEntry],
    applied_spec: Option<&AppliedSpec>,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Writer::default();
    out.bytes.extend_from_slice(MAGIC);
    out.u8(SNAPSHOT_FORMAT_VERSION);
    out.u32(0); // CRC, patched below
    out.u64(applied_index);
    out.i64(next_producer_id);
    out.length("snapshot brokers", brokers.len(), SNAPSHOT_BROKERS_MAX)?;
    for entry in brokers {
        encode_registration(&mut out, &entry.registration)?;
        out.i64(entry.broker_epoch);
        out.bool(entry.fenced);
    }
    out.length("snapshot topics", topics.len(), SNAPSHOT_TOPICS_MAX)?;
    for topic in topics {
        out.uuid(&topic.topic_id);
        out.string("topic name", &topic.name, TOPIC_NAME_BYTES_MAX)?;
        out.bool(topic.declared);
        out.string_map("topic settings", &topic.settings, SETTINGS_LIMITS)?;
        out.length(
            "topic partitions",
            topic.partitions.len(),
            SNAPSHOT_PARTITIONS_PER_TOPIC_MAX,
        )?;
        for state in &topic.partitions {
            encode_partition_state(&mut out, state)?;
            encode_reassignment(&mut out, state)?;
        }
        // Stop early rather than build a buffer far past the limit.
        check_size(out.bytes.len())?;
    }
    out.bool(applied_spec.is_some());
    if let Some(spec) = applied_spec {
        out.string("spec hash", &spec.hash, SPEC_HASH_BYTES_MAX)?;
        out.string("spec text", &spec.text, SPEC_TEXT_BYTES_MAX)?;
    }
    check_size(out.bytes.len())?;
    let crc = crc32c::crc32c(&out.bytes[HEADER_BYTES..]);
    out.bytes[5..9].copy_from_slice(&crc.to_be_bytes());
    Ok(out.bytes)
}

fn check_size(len: usize) -> Result<(), CodecError> {
    match len <= SNAPSHOT_BYTES_MAX {
        true => Ok(()),
        false => Err(CodecError::SnapshotTooLarge {
            len,
            max: SNAPSHOT_BYTES_MAX,
        }),
    }
}

/// The image a snapshot holds. Size, magic, version and CRC are checked
/// before any field is read; the image is refused, with the broken rule
/// named, unless it is one `apply` could have built.
pub fn decode_image(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
    if bytes.len() > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotError::TooLarge {
            len: bytes.len(),
            max: SNAPSHOT_BYTES_MAX,
        });
    }
    let mut reader = Reader::new(bytes);
    let header = reader.take("snapshot header", HEADER_BYTES)?;
    if &header[..4] != MAGIC {
        return Err(SnapshotError::BadMagic {
            found: header[..4].to_vec(),
        });
    }
    let format = header[4];
    if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&format) {
        return Err(SnapshotError::UnsupportedFormat {
            found: header[4],
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    let stored = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    let computed = crc32c::crc32c(&bytes[HEADER_BYTES..]);
    if stored != computed {
        return Err(SnapshotError::CrcMismatch { stored, computed });
    }
    let applied_index = reader.u64("applied index")?;
    let next_producer_id = reader.i64("next producer id")?;
    let count = reader.length("snapshot brokers", SNAPSHOT_BROKERS_MAX, BROKER_BYTES_MIN)?;
    let mut brokers = Vec::with_capacity(count);
    for _ in 0..count {
        brokers.push(BrokerEntry {
            registration: decode_registration(&mut reader)?,
            broker_epoch: reader.i64("broker epoch")?,
            fenced: reader.bool("fenced")?,
        });
    }
    let count = reader.length("snapshot topics", SNAPSHOT_TOPICS_MAX, TOPIC_BYTES_MIN)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(decode_topic(&mut reader, format)?);
    }
    let applied_spec = match reader.bool("applied spec")? {
        true => Some(AppliedSpec {
            hash: reader.string("spec hash", SPEC_HASH_BYTES_MAX)?,
            text: reader.string("spec text", SPEC_TEXT_BYTES_MAX)?,
        }),
        false => None,
    };
    reader.finish("the snapshot's applied spec")?;
    let image = MetadataImage::from_parts(
        applied_index,
        next_producer_id,
        brokers,
        topics,
        applied_spec,
    )?;
    Ok(image)
}

fn decode_topic(reader: &mut Reader<'_>, format: u8) -> Result<TopicEntry, CodecError> {
    let topic_id = reader.uuid("topic id")?;
    let name = reader.string("topic name", TOPIC_NAME_BYTES_MAX)?;
    let declared = reader.bool("declared")?;
    let settings = reader.string_map("topic settings", SETTINGS_LIMITS)?;
    let count = reader.length(
        "topic partitions",
        SNAPSHOT_PARTITIONS_PER_TOPIC_MAX,
        PARTITION_BYTES_MIN,
    )?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        let state = decode_partition_state(reader)?;
        partitions.push(match format {
            1 => state,
            _ => decode_reassignment(reader, state)?,
        });
    }
    Ok(TopicEntry {
        topic_id,
        name,
        declared,
        settings,
        partitions,
    })
}
