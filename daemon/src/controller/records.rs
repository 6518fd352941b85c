//! The metadata log's records, and their byte layout. One Raft entry holds
//! one `RecordBatch`; the batch is the unit the image applies atomically, so
//! a fence and the partition changes it forces can never be seen apart.
//!
//! ```text
//! batch  := "SLMB" format:u8 crc32c:u32 count:u16 record × count
//!           (the CRC-32C covers count and every record)
//! record := kind:u8 version:u8 body_bytes:u32 body
//! ```
//! Integers are big-endian. Strings and lists carry a u16 length (u32 for the
//! spec text). A record's body must be consumed exactly, and so must the
//! batch: bytes left over are refused, not skipped. A reader refuses a kind or
//! version it does not know: the image cannot skip what it does not understand.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use uuid::Uuid;

use super::codec::{Reader, Writer};
use super::error::CodecError;
use crate::config::HostPort;

pub type BrokerId = i32;
/// `leader` of a partition that has none.
pub const NO_LEADER: BrokerId = -1;

const MAGIC: &[u8; 4] = b"SLMB";
pub const FORMAT_VERSION: u8 = 1;
/// Partition records are at version 2 (version 1 had no reassignment
/// lists, read as none); every other kind is at version 1.
const PARTITION_RECORD_VERSION: u8 = 2;
const RECORD_VERSION: u8 = 1;

fn record_version(kind: u8) -> u8 {
    match kind {
        6 | 7 => PARTITION_RECORD_VERSION,
        _ => RECORD_VERSION,
    }
}
const HEADER_BYTES: usize = 4 + 1 + 4 + 2;
const RECORD_HEADER_BYTES: usize = 1 + 1 + 4;

/// One batch fits one Raft frame (1 MiB) with room for the message around it.
pub const BATCH_BYTES_MAX: usize = 960 * 1024;
/// Enough for one batch creating a topic of several thousand partitions.
pub const RECORDS_PER_BATCH_MAX: usize = 10_000;
/// Kafka's limit on topic names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// A DNS name.
pub const HOST_BYTES_MAX: usize = 255;
pub const RACK_BYTES_MAX: usize = 255;
pub const CONFIG_KEY_BYTES_MAX: usize = 255;
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;
pub const SETTINGS_PER_TOPIC_MAX: usize = 64;
pub const REPLICAS_MAX: usize = 32;
pub const SPEC_HASH_BYTES_MAX: usize = 64;
/// The applied spec travels in one batch. Smaller than the 16 MiB a spec
/// file may have (config::document): reload must refuse a bigger spec.
pub const SPEC_TEXT_BYTES_MAX: usize = 512 * 1024;

const _: () = assert!(SPEC_TEXT_BYTES_MAX + HEADER_BYTES + 4096 < BATCH_BYTES_MAX);
const _: () = assert!(RECORDS_PER_BATCH_MAX <= u16::MAX as usize);
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(REPLICAS_MAX <= u16::MAX as usize && SETTINGS_PER_TOPIC_MAX <= 65_535);

/// Why a broker was fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceReason {
    SessionExpired,
    ControlledShutdown,
    /// The broker asked (`want_fence` in its heartbeat).
    Requested,
}

impl FenceReason {
    fn code(self) -> u8 {
        match self {
            FenceReason::SessionExpired => 0,
            FenceReason::ControlledShutdown => 1,
            FenceReason::Requested => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, CodecError> {
        match code {
            0 => Ok(FenceReason::SessionExpired),
            1 => Ok(FenceReason::ControlledShutdown),
            2 => Ok(FenceReason::Requested),
            other => Err(CodecError::InvalidValue {
                what: "fence reason",
                value: i64::from(other),
            }),
        }
    }
}

/// What a broker tells the controller about itself when it (re)starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// New at every process start: tells a restart from a retried request.
    pub incarnation_id: Uuid,
    /// What clients are told in Metadata.
    pub kafka: HostPort,
    pub quic: SocketAddr,
    pub rack: Option<String>,
}

/// A partition's replication state, whole: changes carry all of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionState {
    /// Preferred leader first. While a reassignment runs (KIP-455), the
    /// target replicas first and then those being removed.
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas a reassignment adds: not yet counted as placed here until
    /// they are in the ISR, never elected uncleanly.
    pub adding: Vec<BrokerId>,
    /// Replicas a reassignment removes once every adding one is in sync.
    pub removing: Vec<BrokerId>,
}

/// One change to the cluster's metadata (plan §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// The broker's epoch becomes the index of the entry holding this record.
    RegisterBroker(BrokerRegistration),
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
        reason: FenceReason,
    },
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    UnregisterBroker {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    CreateTopic {
        topic_id: Uuid,
        name: String,
        /// Declared in the spec (owned by the file) or created through the API.
        declared: bool,
        /// Kafka config names to values; only what differs from the defaults.
        settings: BTreeMap<String, String>,
    },
    CreatePartition {
        topic_id: Uuid,
        partition: i32,
        state: PartitionState,
    },
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        state: PartitionState,
    },
    /// `value: None` removes the override.
    TopicConfig {
        topic_id: Uuid,
        key: String,
        value: Option<String>,
    },
    DeleteTopic {
        topic_id: Uuid,
    },
    ProducerIdBlock {
        broker_id: BrokerId,
        broker_epoch: i64,
        first_id: i64,
        size: i32,
    },
    AppliedSpec {
        /// `ClusterSpec::source_hash`: 16 hex digits.
        hash: String,
        text: String,
    },
}

/// The records of one metadata log entry, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RecordBatch {
    pub records: Vec<Record>,
}

impl RecordBatch {
    pub fn new(records: Vec<Record>) -> Self {
        RecordBatch { records }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The batch's bytes; refuses a batch a reader would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let count = self.records.len();
        if count == 0 || count > RECORDS_PER_BATCH_MAX {
            return Err(CodecError::RecordCount {
                count,
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        let mut out = Writer::default();
        out.bytes.extend_from_slice(MAGIC);
        out.u8(FORMAT_VERSION);
        out.u32(0); // CRC, patched below
        out.u16(count as u16);
        for record in &self.records {
            encode_record(&mut out, record)?;
        }
        let len = out.bytes.len();
        if len > BATCH_BYTES_MAX {
            return Err(CodecError::BatchTooLarge {
                len,
                max: BATCH_BYTES_MAX,
            });
        }
        let crc = crc32c::crc32c(&out.bytes[HEADER_BYTES - 2..]);
        out.bytes[5..9].copy_from_slice(&crc.to_be_bytes());
        Ok(out.bytes)
    }

    /// Reads a batch written by `encode`: magic, version, size and CRC are
    /// checked before any record is read.
    pub fn decode(bytes: &[u8]) -> Result<RecordBatch, CodecError> {
        if bytes.len() > BATCH_BYTES_MAX {
            return Err(CodecError::BatchTooLarge {
                len: bytes.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let mut reader = Reader::new(bytes);
        let header = reader.take("batch header", HEADER_BYTES)?;
        if &header[..4] != MAGIC {
            return Err(CodecError::BadMagic {
                found: header[..4].to_vec(),
            });
        }
        if header[4] != FORMAT_VERSION {
            return Err(CodecError::UnsupportedFormat {
                found: header[4],
                supported: FORMAT_VERSION,
            });
        }
        let stored = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        let computed = crc32c::crc32c(&bytes[HEADER_BYTES - 2..]);
        if stored != computed {
            return Err(CodecError::CrcMismatch { stored, computed });
        }
        let count = usize::from(u16::from_be_bytes([header[9], header[10]]));
        if count == 0 || count > RECORDS_PER_BATCH_MAX {
            return Err(CodecError::RecordCount {
                count,
                max: RECORDS_PER_BATCH_MAX,
            });
        }
        if count * RECORD_HEADER_BYTES > reader.rest.len() {
            return Err(CodecError::Truncated {
                what: "batch records",
                needed: count * RECORD_HEADER_BYTES,
                left: reader.rest.len(),
            });
        }
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            records.push(decode_record(&mut reader)?);
        }
        reader.finish("the batch's last record")?;
        Ok(RecordBatch { records })
    }
}

/// Kind code and name of each record, in one place.
fn kind_of(record: &Record) -> (u8, &'static str) {
    match record {
        Record::RegisterBroker(_) => (1, "RegisterBroker"),
        Record::FenceBroker { .. } => (2, "FenceBroker"),
        Record::UnfenceBroker { .. } => (3, "UnfenceBroker"),
        Record::UnregisterBroker { .. } => (4, "UnregisterBroker"),
        Record::CreateTopic { .. } => (5, "CreateTopic"),
        Record::CreatePartition { .. } => (6, "CreatePartition"),
        Record::PartitionChange { .. } => (7, "PartitionChange"),
        Record::TopicConfig { .. } => (8, "TopicConfig"),
        Record::DeleteTopic { .. } => (9, "DeleteTopic"),
        Record::ProducerIdBlock { .. } => (10, "ProducerIdBlock"),
        Record::AppliedSpec { .. } => (11, "AppliedSpec"),
    }
}

const KIND_NAMES: [&str; 11] = [
    "RegisterBroker",
    "FenceBroker",
    "UnfenceBroker",
    "UnregisterBroker",
    "CreateTopic",
    "CreatePartition",
    "PartitionChange",
    "TopicConfig",
    "DeleteTopic",
    "ProducerIdBlock",
    "AppliedSpec",
];

/// A topic's settings: (entries, key bytes, value bytes); snapshots share them.
pub(super) const SETTINGS_LIMITS: (usize, usize, usize) = (
    SETTINGS_PER_TOPIC_MAX,
    CONFIG_KEY_BYTES_MAX,
    CONFIG_VALUE_BYTES_MAX,
);

fn encode_record(out: &mut Writer, record: &Record) -> Result<(), CodecError> {
    let (kind, _) = kind_of(record);
    out.u8(kind);
    out.u8(record_version(kind));
    let length_at = out.bytes.len();
    out.u32(0); // body length, patched below
    encode_body(out, record)?;
    let body_bytes = out.bytes.len() - length_at - 4;
    let body_bytes = u32::try_from(body_bytes).map_err(|_| CodecError::BatchTooLarge {
        len: body_bytes,
        max: BATCH_BYTES_MAX,
    })?;
    out.bytes[length_at..length_at + 4].copy_from_slice(&body_bytes.to_be_bytes());
    Ok(())
}

fn encode_body(out: &mut Writer, record: &Record) -> Result<(), CodecError> {
    match record {
        Record::RegisterBroker(registration) => encode_registration(out, registration)?,
        Record::FenceBroker {
            broker_id,
            broker_epoch,
            reason,
        } => {
            out.i32(*broker_id);
            out.i64(*broker_epoch);
            out.u8(reason.code());
        }
        Record::UnfenceBroker {
            broker_id,
            broker_epoch,
        }
        | Record::UnregisterBroker {
            broker_id,
            broker_epoch,
        } => {
            out.i32(*broker_id);
            out.i64(*broker_epoch);
        }
        Record::ProducerIdBlock {
            broker_id,
            broker_epoch,
            first_id,
            size,
        } => {
            out.i32(*broker_id);
            out.i64(*broker_epoch);
            out.i64(*first_id);
            out.i32(*size);
        }
        Record::AppliedSpec { hash, text } => {
            out.string("spec hash", hash, SPEC_HASH_BYTES_MAX)?;
            out.string("spec text", text, SPEC_TEXT_BYTES_MAX)?;
        }
        topic_record => encode_topic_body(out, topic_record)?,
    }
    Ok(())
}

/// Bodies of the records about topics and partitions.
fn encode_topic_body(out: &mut Writer, record: &Record) -> Result<(), CodecError> {
    match record {
        Record::CreateTopic {
            topic_id,
            name,
            declared,
            settings,
        } => {
            out.uuid(topic_id);
            out.string("topic name", name, TOPIC_NAME_BYTES_MAX)?;
            out.bool(*declared);
            out.string_map("topic settings", settings, SETTINGS_LIMITS)?;
        }
        Record::CreatePartition {
            topic_id,
            partition,
            state,
        }
        | Record::PartitionChange {
            topic_id,
            partition,
            state,
        } => {
            out.uuid(topic_id);
            out.i32(*partition);
            encode_partition_state(out, state)?;
            encode_reassignment(out, state)?;
        }
        Record::TopicConfig {
            topic_id,
            key,
            value,
        } => {
            out.uuid(topic_id);
            out.string("config key", key, CONFIG_KEY_BYTES_MAX)?;
            out.opt_string("config value", value.as_deref(), CONFIG_VALUE_BYTES_MAX)?;
        }
        Record::DeleteTopic { topic_id } => out.uuid(topic_id),
        other => unreachable!("{} is not a topic record", kind_of(other).1),
    }
    Ok(())
}

pub(super) fn encode_registration(
    out: &mut Writer,
    registration: &BrokerRegistration,
) -> Result<(), CodecError> {
    out.i32(registration.broker_id);
    out.uuid(&registration.incarnation_id);
    out.string("kafka host", &registration.kafka.host, HOST_BYTES_MAX)?;
    out.u16(registration.kafka.port);
    out.socket_addr(&registration.quic);
    out.opt_string("rack", registration.rack.as_deref(), RACK_BYTES_MAX)
}

pub(super) fn encode_partition_state(
    out: &mut Writer,
    state: &PartitionState,
) -> Result<(), CodecError> {
    out.i32_list("replicas", &state.replicas, REPLICAS_MAX)?;
    out.i32_list("isr", &state.isr, REPLICAS_MAX)?;
    out.i32(state.leader);
    out.i32(state.leader_epoch);
    out.i32(state.partition_epoch);
    Ok(())
}

/// The reassignment lists, after `encode_partition_state` where the format
/// has them (partition records from version 2, snapshots from version 2;
/// not the AlterPartition answer, which needs only the ISR and epochs).
pub(super) fn encode_reassignment(
    out: &mut Writer,
    state: &PartitionState,
) -> Result<(), CodecError> {
    out.i32_list("adding replicas", &state.adding, REPLICAS_MAX)?;
    out.i32_list("removing replicas", &state.removing, REPLICAS_MAX)
}

pub(super) fn decode_reassignment(
    body: &mut Reader<'_>,
    mut state: PartitionState,
) -> Result<PartitionState, CodecError> {
    state.adding = body.i32_list("adding replicas", REPLICAS_MAX)?;
    state.removing = body.i32_list("removing replicas", REPLICAS_MAX)?;
    Ok(state)
}

fn decode_record(reader: &mut Reader<'_>) -> Result<Record, CodecError> {
    let kind = reader.u8("record kind")?;
    let name = usize::from(kind)
        .checked_sub(1)
        .and_then(|at| KIND_NAMES.get(at))
        .copied()
        .ok_or(CodecError::UnknownKind(kind))?;
    let version = reader.u8("record version")?;
    if !(1..=record_version(kind)).contains(&version) {
        return Err(CodecError::UnsupportedRecordVersion {
            kind: name,
            found: version,
            supported: record_version(kind),
        });
    }
    let body_bytes = reader.u32("record length")? as usize;
    let mut body = Reader::new(reader.take(name, body_bytes)?);
    let record = decode_body(&mut body, kind, version)?;
    body.finish(name)?;
    assert_eq!(kind_of(&record), (kind, name));
    Ok(record)
}

fn decode_body(body: &mut Reader<'_>, kind: u8, version: u8) -> Result<Record, CodecError> {
    let partition_state = |body: &mut Reader<'_>| {
        let state = decode_partition_state(body)?;
        match version {
            1 => Ok(state),
            _ => decode_reassignment(body, state),
        }
    };
    Ok(match kind {
        1 => Record::RegisterBroker(decode_registration(body)?),
        2 => Record::FenceBroker {
            broker_id: body.i32("broker id")?,
            broker_epoch: body.i64("broker epoch")?,
            reason: FenceReason::from_code(body.u8("fence reason")?)?,
        },
        3 => Record::UnfenceBroker {
            broker_id: body.i32("broker id")?,
            broker_epoch: body.i64("broker epoch")?,
        },
        4 => Record::UnregisterBroker {
            broker_id: body.i32("broker id")?,
            broker_epoch: body.i64("broker epoch")?,
        },
        5 => Record::CreateTopic {
            topic_id: body.uuid("topic id")?,
            name: body.string("topic name", TOPIC_NAME_BYTES_MAX)?,
            declared: body.bool("declared")?,
            settings: body.string_map("topic settings", SETTINGS_LIMITS)?,
        },
        6 => Record::CreatePartition {
            topic_id: body.uuid("topic id")?,
            partition: body.i32("partition")?,
            state: partition_state(body)?,
        },
        7 => Record::PartitionChange {
            topic_id: body.uuid("topic id")?,
            partition: body.i32("partition")?,
            state: partition_state(body)?,
        },
        8 => Record::TopicConfig {
            topic_id: body.uuid("topic id")?,
            key: body.string("config key", CONFIG_KEY_BYTES_MAX)?,
            value: body.opt_string("config value", CONFIG_VALUE_BYTES_MAX)?,
        },
        9 => Record::DeleteTopic {
            topic_id: body.uuid("topic id")?,
        },
        10 => Record::ProducerIdBlock {
            broker_id: body.i32("broker id")?,
            broker_epoch: body.i64("broker epoch")?,
            first_id: body.i64("first producer id")?,
            size: body.i32("producer id block size")?,
        },
        11 => Record::AppliedSpec {
            hash: body.string("spec hash", SPEC_HASH_BYTES_MAX)?,
            text: body.string("spec text", SPEC_TEXT_BYTES_MAX)?,
        },
        other => return Err(CodecError::UnknownKind(other)),
    })
}

pub(super) fn decode_registration(body: &mut Reader<'_>) -> Result<BrokerRegistration, CodecError> {
    Ok(BrokerRegistration {
        broker_id: body.i32("broker id")?,
        incarnation_id: body.uuid("incarnation id")?,
        kafka: HostPort {
            host: body.string("kafka host", HOST_BYTES_MAX)?,
            port: body.u16("kafka port")?,
        },
        quic: body.socket_addr("quic address")?,
        rack: body.opt_string("rack", RACK_BYTES_MAX)?,
    })
}

pub(super) fn decode_partition_state(body: &mut Reader<'_>) -> Result<PartitionState, CodecError> {
    Ok(PartitionState {
        replicas: body.i32_list("replicas", REPLICAS_MAX)?,
        isr: body.i32_list("isr", REPLICAS_MAX)?,
        leader: body.i32("leader")?,
        leader_epoch: body.i32("leader epoch")?,
        partition_epoch: body.i32("partition epoch")?,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

/// Kafka's rule for topic names, internal names (`__consumer_offsets`)
/// included: the controller creates those too.
pub fn check_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"");
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(legal) {
        return Err("may hold only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// `ClusterSpec::source_hash` form: 16 lowercase hex digits.
pub fn is_spec_hash(hash: &str) -> bool {
    hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
