//! What can go wrong in the metadata core, split by who is at fault (as
//! rustls splits its errors): `CodecError` for bytes that are not a metadata
//! batch, `SnapshotError` for bytes that are not a metadata snapshot (or
//! hold an image that breaks an `InvariantError` rule), `ApplyError` for a well-formed batch that the image refuses (a bug
//! in whoever wrote it, or a diverged log), `DecideError` for a broker's
//! request that the active controller turns down. Each `DecideError` variant
//! names the Kafka error code the broker is answered with, and
//! `DecideError::code` is the one place that maps them.

use thiserror::Error;
use uuid::Uuid;

use super::records::BrokerId;

/// Kafka's error codes that the controller answers brokers with.
pub mod code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    pub const INELIGIBLE_REPLICA: i16 = 107;
}

/// Bytes that do not decode as a metadata batch, or a batch too big to encode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("metadata batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { len: usize, max: usize },
    #[error("not a metadata batch: magic bytes {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error(
        "metadata batch format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedFormat { found: u8, supported: u8 },
    #[error("metadata batch CRC-32C {stored:#010x} does not match its bytes ({computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("a metadata batch holds {count} records; it must hold 1 to {max}")]
    RecordCount { count: usize, max: usize },
    #[error("{what} is cut short: needs {needed} bytes, {left} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("{what} is {len} long; the limit is {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown metadata record kind {0}")]
    UnknownKind(u8),
    #[error("{kind} record version {found} is not supported (this build reads {supported})")]
    UnsupportedRecordVersion {
        kind: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("{what}: {count} bytes left over after it")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what} is not UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("{what} has the invalid value {value}")]
    InvalidValue { what: &'static str, value: i64 },
    #[error("{what} names {key:?} twice")]
    DuplicateKey { what: &'static str, key: String },
    #[error("metadata snapshot of {len} bytes exceeds the limit of {max} bytes")]
    SnapshotTooLarge { len: usize, max: usize },
}

/// Bytes that are not a metadata snapshot, or one whose image breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("metadata snapshot of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("not a metadata snapshot: magic bytes {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error(
        "metadata snapshot format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedFormat { found: u8, supported: u8 },
    #[error("metadata snapshot CRC-32C {stored:#010x} does not match its bytes ({computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("metadata snapshot: {0}")]
    Codec(#[from] CodecError),
    #[error("metadata snapshot holds an image that breaks a rule: {0}")]
    Invariant(#[from] InvariantError),
}

/// A rule of a whole `MetadataImage` that does not hold. `apply` keeps them
/// all; only a snapshot from a bug or a corrupt disk can break one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvariantError {
    #[error("applied index {0} does not fit a broker epoch (i64)")]
    AppliedIndexTooLarge(u64),
    #[error("the image holds {topics} topics but {names} topic names")]
    TopicCount { topics: usize, names: usize },
    #[error("topic name {name:?} maps to topic id {topic_id}, which is missing or named otherwise")]
    TopicNameIndex { name: String, topic_id: Uuid },
    #[error("a topic named {0:?} appears twice")]
    DuplicateTopicName(String),
    #[error("topic id {0} appears twice")]
    DuplicateTopicId(Uuid),
    #[error("topic {0:?} has the nil topic id")]
    NilTopicId(String),
    #[error("topic name {name:?}: {why}")]
    InvalidTopicName { name: String, why: &'static str },
    #[error("topic {topic}: {key:?} is not a topic config key")]
    UnknownConfigKey { topic: String, key: String },
    #[error("{topic}-{partition}: {why}")]
    InvalidPartition {
        topic: String,
        partition: usize,
        why: &'static str,
    },
    #[error("{topic}-{partition}: leader {leader} is not a registered unfenced broker")]
    LeaderNotEligible {
        topic: String,
        partition: usize,
        leader: i32,
    },
    #[error("broker {0} appears twice")]
    DuplicateBroker(i32),
    #[error("broker {key} is filed under a registration for broker {registered}")]
    BrokerIdMismatch { key: i32, registered: i32 },
    #[error("broker id {0} is negative")]
    InvalidBrokerId(i32),
    #[error("broker {broker_id}: epoch {broker_epoch} is not in 1..={applied_index}")]
    BrokerEpochOutOfRange {
        broker_id: i32,
        broker_epoch: i64,
        applied_index: u64,
    },
    #[error("the next producer id {0} is negative")]
    NegativeProducerId(i64),
    #[error("applied spec hash {0:?} is not 16 lowercase hex digits")]
    InvalidSpecHash(String),
}

/// Why the image refused record `position` of the batch at log `index`.
/// Nothing of the batch is applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("metadata entry {index}, record {position}: {reason}")]
pub struct ApplyError {
    pub index: u64,
    pub position: usize,
    pub reason: ApplyReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ApplyReason {
    #[error("entry index {index} does not follow the applied index {applied}")]
    IndexNotIncreasing { index: u64, applied: u64 },
    #[error("entry index {0} does not fit a broker epoch (i64)")]
    IndexTooLarge(u64),
    #[error("the batch holds no records")]
    EmptyBatch,
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(i32),
    #[error("broker {broker_id}: the record carries epoch {record}, the image {image}")]
    BrokerEpochMismatch {
        broker_id: i32,
        record: i64,
        image: i64,
    },
    #[error("broker {0} is registered and unfenced; it must be fenced before it registers again")]
    RegisterUnfenced(i32),
    #[error("broker {0} is already fenced")]
    AlreadyFenced(i32),
    #[error("broker {0} is not fenced")]
    NotFenced(i32),
    #[error("broker id {0} is negative")]
    InvalidBrokerId(i32),
    #[error("broker {broker_id} is fenced or gone but still leads {topic}-{partition}")]
    FencedLeader {
        broker_id: i32,
        topic: String,
        partition: i32,
    },
    #[error("topic name {name:?}: {why}")]
    InvalidTopicName { name: String, why: &'static str },
    #[error("a topic named {0:?} exists already")]
    DuplicateTopicName(String),
    #[error("topic id {0} exists already")]
    DuplicateTopicId(Uuid),
    #[error("no topic with id {0}")]
    UnknownTopic(Uuid),
    #[error("topic {topic}: partition {partition} is not the next one ({expected})")]
    PartitionOutOfOrder {
        topic: String,
        partition: i32,
        expected: i32,
    },
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("{topic}-{partition}: {why}")]
    InvalidPartition {
        topic: String,
        partition: i32,
        why: &'static str,
    },
    #[error("{topic}-{partition}: {what} is {got}, expected {expected}")]
    EpochRule {
        topic: String,
        partition: i32,
        what: &'static str,
        got: i32,
        expected: i32,
    },
    #[error("{topic}-{partition}: the change changes nothing")]
    NoChange { topic: String, partition: i32 },
    #[error("{topic}-{partition}: leader {leader} is not a registered unfenced broker")]
    LeaderNotEligible {
        topic: String,
        partition: i32,
        leader: i32,
    },
    #[error("{0:?} is not a topic config key")]
    UnknownConfigKey(String),
    #[error("producer id block [{first_id}, +{size}) is invalid: {why}")]
    InvalidProducerIdBlock {
        first_id: i64,
        size: i32,
        why: &'static str,
    },
    #[error("spec hash {0:?} is not 16 lowercase hex digits")]
    InvalidSpecHash(String),
}

/// A broker request the controller refuses; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecideError {
    /// DUPLICATE_BROKER_REGISTRATION (101).
    #[error(
        "broker {broker_id} is registered as incarnation {existing} whose session is alive; \
         incarnation {requested} must wait for it to expire"
    )]
    DuplicateBrokerRegistration {
        broker_id: i32,
        existing: Uuid,
        requested: Uuid,
    },
    /// STALE_BROKER_EPOCH (77).
    #[error("broker {broker_id} sent epoch {got}; its current epoch is {current}")]
    StaleBrokerEpoch {
        broker_id: i32,
        got: i64,
        current: i64,
    },
    /// BROKER_ID_NOT_REGISTERED (102).
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(i32),
    /// TOPIC_ALREADY_EXISTS (36).
    #[error("topic {0:?} exists already")]
    TopicExists(String),
    /// UNKNOWN_TOPIC_ID (100).
    #[error("no topic with id {0}")]
    UnknownTopic(Uuid),
    /// INVALID_TOPIC_EXCEPTION (17).
    #[error("topic name {name:?}: {why}")]
    InvalidTopicName { name: String, why: &'static str },
    /// INVALID_CONFIG (40).
    #[error("topic config {key:?}: {why}")]
    InvalidConfig { key: String, why: &'static str },
    /// INVALID_REQUEST (42).
    #[error("registration of broker {broker_id}: {why}")]
    InvalidRegistration { broker_id: i32, why: &'static str },
    /// INVALID_REQUEST (42): ids are drawn at random; draw again.
    #[error("topic id {0} is taken")]
    TopicIdInUse(Uuid),
    /// INVALID_REQUEST (42).
    #[error(
        "topic {name} of the adopted data directory has id {adopted}, but the cluster holds a topic of that name with id {existing}"
    )]
    AdoptionConflict {
        name: String,
        adopted: Uuid,
        existing: Uuid,
    },
    /// INVALID_PARTITIONS (37) / INVALID_REPLICATION_FACTOR (38) /
    /// INVALID_REPLICA_ASSIGNMENT (39), by the placement error's kind.
    #[error("placement: {0}")]
    Placement(#[from] PlacementError),
    /// POLICY_VIOLATION (44): the records would not fit one batch.
    #[error("the change needs {records} records; one batch holds at most {max}")]
    TooManyRecords { records: usize, max: usize },
    /// UNKNOWN_SERVER_ERROR (-1): the 64-bit producer id space is used up.
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
    /// NOT_LEADER_OR_FOLLOWER (6): a fenced broker leads nothing.
    #[error("broker {0} is fenced: it leads nothing until it is unfenced")]
    BrokerFenced(BrokerId),
    /// UNKNOWN_TOPIC_OR_PARTITION (3).
    #[error("no partition {partition} of topic id {topic_id}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    /// NOT_LEADER_OR_FOLLOWER (6): only the leader changes its ISR.
    #[error("{topic}-{partition}: broker {broker_id} is not the leader (the leader is {leader})")]
    NotLeader {
        topic: String,
        partition: i32,
        broker_id: BrokerId,
        leader: BrokerId,
    },
    /// FENCED_LEADER_EPOCH (74), for an older epoch and for a newer one.
    #[error(
        "{topic}-{partition}: the request is at leader epoch {got}; the controller's is {current}"
    )]
    FencedLeaderEpoch {
        topic: String,
        partition: i32,
        got: i32,
        current: i32,
    },
    /// INVALID_UPDATE_VERSION (95): the partition changed since the leader read it.
    #[error(
        "{topic}-{partition}: the request is at partition epoch {got}; the controller's is {current}"
    )]
    StalePartitionEpoch {
        topic: String,
        partition: i32,
        got: i32,
        current: i32,
    },
    /// REQUEST_TIMED_OUT (7): this attempt, or a later one of the same
    /// leader for this partition, was decided already; asking again finds
    /// out what came of it.
    #[error(
        "{topic_id}-{partition}: request {request_id} comes after request {latest} of the same leader was decided"
    )]
    SupersededAttempt {
        topic_id: Uuid,
        partition: i32,
        request_id: u64,
        latest: u64,
    },
    /// INVALID_REQUEST (42).
    #[error("{topic}-{partition}: ISR {isr:?} is invalid: {why}")]
    InvalidIsr {
        topic: String,
        partition: i32,
        isr: Vec<BrokerId>,
        why: &'static str,
    },
    /// INELIGIBLE_REPLICA (107): only a registered unfenced broker joins an ISR.
    #[error("{topic}-{partition}: broker {broker_id} cannot join the ISR: it is {why}")]
    IneligibleReplica {
        topic: String,
        partition: i32,
        broker_id: BrokerId,
        why: &'static str,
    },
}

impl DecideError {
    /// The Kafka error code the asking broker is answered with.
    pub fn code(&self) -> i16 {
        match self {
            DecideError::DuplicateBrokerRegistration { .. } => code::DUPLICATE_BROKER_REGISTRATION,
            DecideError::StaleBrokerEpoch { .. } => code::STALE_BROKER_EPOCH,
            DecideError::BrokerNotRegistered(_) => code::BROKER_ID_NOT_REGISTERED,
            DecideError::TopicExists(_) => code::TOPIC_ALREADY_EXISTS,
            DecideError::UnknownTopic(_) => code::UNKNOWN_TOPIC_ID,
            DecideError::InvalidTopicName { .. } => code::INVALID_TOPIC_EXCEPTION,
            DecideError::InvalidConfig { .. } => code::INVALID_CONFIG,
            DecideError::InvalidRegistration { .. }
            | DecideError::TopicIdInUse(_)
            | DecideError::AdoptionConflict { .. }
            | DecideError::InvalidIsr { .. } => code::INVALID_REQUEST,
            DecideError::Placement(PlacementError::InvalidPartitions(_)) => {
                code::INVALID_PARTITIONS
            }
            DecideError::Placement(PlacementError::InvalidReplicationFactor { .. }) => {
                code::INVALID_REPLICATION_FACTOR
            }
            DecideError::Placement(_) => code::INVALID_REPLICA_ASSIGNMENT,
            DecideError::TooManyRecords { .. } => code::POLICY_VIOLATION,
            DecideError::ProducerIdsExhausted => code::UNKNOWN_SERVER_ERROR,
            DecideError::BrokerFenced(_) | DecideError::NotLeader { .. } => {
                code::NOT_LEADER_OR_FOLLOWER
            }
            DecideError::UnknownPartition { .. } => code::UNKNOWN_TOPIC_OR_PARTITION,
            DecideError::FencedLeaderEpoch { .. } => code::FENCED_LEADER_EPOCH,
            DecideError::StalePartitionEpoch { .. } => code::INVALID_UPDATE_VERSION,
            // Its outcome is another attempt's, unknown to this one.
            DecideError::SupersededAttempt { .. } => code::REQUEST_TIMED_OUT,
            DecideError::IneligibleReplica { .. } => code::INELIGIBLE_REPLICA,
        }
    }
}

/// Why partitions cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlacementError {
    #[error("partition count {0} is invalid")]
    InvalidPartitions(i64),
    #[error("replication factor {replication_factor} is invalid with {brokers} declared brokers")]
    InvalidReplicationFactor {
        replication_factor: i16,
        brokers: usize,
    },
    #[error("explicit replicas list {lists} partitions, not {partitions}")]
    ReplicaListCount { lists: usize, partitions: usize },
    #[error("partition {partition}: {why}")]
    InvalidReplicaList { partition: i32, why: String },
}
