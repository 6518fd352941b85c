//! What nodes say to each other about the controller: Raft messages between
//! voters, and brokers' registrations and heartbeats with their answers.
//! Each is one transport message. Requests carry an id chosen by the broker
//! so that an answer arriving after a retry is recognised as stale.
//!
//! ```text
//! message := version:u8 kind:u8 body
//! raft      (1) := controller::wire bytes
//! register  (2) := request_id:u64 registration spec_hash adoption?
//! adoption  := topics:[topic_id name partitions:i32 settings] producer_id_end:i64
//! heartbeat (3) := request_id:u64 broker_id:i32 broker_epoch:i64
//!                  metadata_offset:i64 want_fence:u8 spec_hash
//! reply     (4) := request_id:u64 outcome
//! fetch     (5) := request_id:u64 after_index:u64
//! ids       (6) := request_id:u64 broker_id:i32 broker_epoch:i64
//! topic     (7) := request_id:u64 broker_id:i32 broker_epoch:i64 change
//! change    := 1 topic_id name partitions:i32 rf:i16 settings validate_only:u8
//!            | 2 name total:i32 validate_only:u8
//!            | 3 name
//! alter     (8) := request_id:u64 broker_id:i32 broker_epoch:i64 topic_id
//!                  partition:i32 leader_epoch:i32 partition_epoch:i32
//!                  isr:[i32] (at most 32, as a partition's replicas)
//! ```

use bytes::Bytes;
use raft::eraftpb::Message;

use super::adoption::{AdoptedTopic, Adoption};
use super::alter_partition::AlterPartitionRequest;
use super::codec::{Reader, Writer};
use super::error::CodecError;
use super::records::{
    BrokerId, BrokerRegistration, PartitionState, REPLICAS_MAX, SETTINGS_LIMITS,
    SPEC_HASH_BYTES_MAX, TOPIC_NAME_BYTES_MAX, decode_partition_state, decode_registration,
    encode_partition_state, encode_registration,
};
use super::topic_change::TopicChange;
use super::wire::{self, WireError};

const RPC_VERSION: u8 = 1;
/// Error messages in replies are cut to this.
pub const REPLY_MESSAGE_BYTES_MAX: usize = 1024;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterMessage {
    Raft(Message),
    Register(RegisterRequest),
    Heartbeat(HeartbeatRequest),
    Reply(Reply),
    /// A broker that is not a voter asks a voter for the committed metadata
    /// log after `after_index`.
    MetadataFetch {
        request_id: u64,
        after_index: u64,
    },
    /// A broker asks the active controller for a block of producer ids.
    AllocateProducerIds {
        request_id: u64,
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// A broker forwards a topic change from the Kafka API.
    ChangeTopic {
        request_id: u64,
        broker_id: BrokerId,
        broker_epoch: i64,
        change: TopicChange,
    },
    /// A partition leader asks to change the ISR.
    AlterPartition {
        request_id: u64,
        request: AlterPartitionRequest,
    },
}

/// Committed metadata log entries, or the snapshot they were compacted into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataChunk {
    /// In index order; empty `data` is a leader's no-op.
    Entries(Vec<(u64, Bytes)>),
    Snapshot {
        index: u64,
        image: Bytes,
    },
}

/// Metadata answers fit one transport message with room for the header.
pub const METADATA_CHUNK_BYTES_MAX: usize = 15 * 1024 * 1024;
const _: () = assert!(
    METADATA_CHUNK_BYTES_MAX + 64 * 1024 <= crate::transport::frame::MESSAGE_BYTES_MAX as usize
);
const METADATA_ENTRIES_MAX: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    pub request_id: u64,
    pub registration: BrokerRegistration,
    /// The hash of the spec file the broker runs with (`ClusterSpec::source_hash`).
    pub spec_hash: String,
    /// A single node's data directory this broker brings (adoption.rs).
    pub adoption: Option<Adoption>,
}

/// Topics one adoption may bring (Kafka's own clusters hold fewer).
const ADOPTED_TOPICS_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub request_id: u64,
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The last metadata log index the broker has applied.
    pub metadata_offset: i64,
    /// Set during controlled shutdown.
    pub want_fence: bool,
    pub spec_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub request_id: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The registration is committed: the broker's epoch is its index.
    Registered { broker_epoch: i64 },
    /// The heartbeat's effect (if any) is committed; `metadata_commit` is
    /// the controller's commit index, so a follower knows it is behind.
    HeartbeatAck { fenced: bool, metadata_commit: u64 },
    /// The answer to a `MetadataFetch`.
    Metadata(MetadataChunk),
    /// Producer ids `first .. first + size`, committed to this broker.
    ProducerIds { first: i64, size: i32 },
    /// Done: committed at metadata log `index` (0: nothing was written).
    Done { index: u64 },
    /// The answer to an `AlterPartition`: the partition as committed (the
    /// ISR asked for, at its new partition epoch), for the leader to adopt.
    PartitionAltered(PartitionState),
    /// This node is not the active controller; `leader` is who it believes is.
    NotController { leader: Option<BrokerId> },
    /// Refused with a Kafka error code and why.
    Refused { code: i16, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cluster message version {0} is not supported (this build speaks {RPC_VERSION})")]
    Version(u8),
    #[error("unknown cluster message kind {0}")]
    Kind(u8),
    #[error("cluster message: {0}")]
    Codec(#[from] CodecError),
    #[error("raft message: {0}")]
    Wire(#[from] WireError),
}

impl ClusterMessage {
    pub fn encode(&self) -> Result<Vec<u8>, RpcError> {
        let mut out = Writer::default();
        out.u8(RPC_VERSION);
        match self {
            ClusterMessage::Raft(message) => {
                out.u8(1);
                out.bytes.extend_from_slice(&wire::encode(message)?);
            }
            ClusterMessage::Register(request) => {
                out.u8(2);
                out.u64(request.request_id);
                encode_registration(&mut out, &request.registration)?;
                out.string("spec hash", &request.spec_hash, SPEC_HASH_BYTES_MAX)?;
                out.bool(request.adoption.is_some());
                if let Some(adoption) = &request.adoption {
                    encode_adoption(&mut out, adoption)?;
                }
            }
            ClusterMessage::Heartbeat(request) => {
                out.u8(3);
                out.u64(request.request_id);
                out.i32(request.broker_id);
                out.i64(request.broker_epoch);
                out.i64(request.metadata_offset);
                out.bool(request.want_fence);
                out.string("spec hash", &request.spec_hash, SPEC_HASH_BYTES_MAX)?;
            }
            ClusterMessage::Reply(reply) => {
                out.u8(4);
                out.u64(reply.request_id);
                encode_outcome(&mut out, &reply.outcome)?;
            }
            ClusterMessage::MetadataFetch {
                request_id,
                after_index,
            } => {
                out.u8(5);
                out.u64(*request_id);
                out.u64(*after_index);
            }
            ClusterMessage::AllocateProducerIds {
                request_id,
                broker_id,
                broker_epoch,
            } => {
                out.u8(6);
                out.u64(*request_id);
                out.i32(*broker_id);
                out.i64(*broker_epoch);
            }
            ClusterMessage::ChangeTopic {
                request_id,
                broker_id,
                broker_epoch,
                change,
            } => {
                out.u8(7);
                out.u64(*request_id);
                out.i32(*broker_id);
                out.i64(*broker_epoch);
                encode_change(&mut out, change)?;
            }
            ClusterMessage::AlterPartition {
                request_id,
                request,
            } => {
                out.u8(8);
                out.u64(*request_id);
                out.i32(request.broker_id);
                out.i64(request.broker_epoch);
                out.uuid(&request.topic_id);
                out.i32(request.partition);
                out.i32(request.leader_epoch);
                out.i32(request.partition_epoch);
                out.i32_list("isr", &request.isr, REPLICAS_MAX)?;
            }
        }
        Ok(out.bytes)
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<ClusterMessage, RpcError> {
        let mut input = Reader::new(bytes);
        let version = input.u8("message version")?;
        if version != RPC_VERSION {
            return Err(RpcError::Version(version));
        }
        let message = match input.u8("message kind")? {
            1 => return Ok(ClusterMessage::Raft(wire::decode(input.rest)?)),
            2 => ClusterMessage::Register(RegisterRequest {
                request_id: input.u64("request id")?,
                registration: decode_registration(&mut input)?,
                spec_hash: input.string("spec hash", SPEC_HASH_BYTES_MAX)?,
                adoption: match input.bool("adoption")? {
                    true => Some(decode_adoption(&mut input)?),
                    false => None,
                },
            }),
            3 => ClusterMessage::Heartbeat(HeartbeatRequest {
                request_id: input.u64("request id")?,
                broker_id: input.i32("broker id")?,
                broker_epoch: input.i64("broker epoch")?,
                metadata_offset: input.i64("metadata offset")?,
                want_fence: input.bool("want fence")?,
                spec_hash: input.string("spec hash", SPEC_HASH_BYTES_MAX)?,
            }),
            4 => ClusterMessage::Reply(Reply {
                request_id: input.u64("request id")?,
                outcome: decode_outcome(&mut input)?,
            }),
            5 => ClusterMessage::MetadataFetch {
                request_id: input.u64("request id")?,
                after_index: input.u64("after index")?,
            },
            6 => ClusterMessage::AllocateProducerIds {
                request_id: input.u64("request id")?,
                broker_id: input.i32("broker id")?,
                broker_epoch: input.i64("broker epoch")?,
            },
            7 => ClusterMessage::ChangeTopic {
                request_id: input.u64("request id")?,
                broker_id: input.i32("broker id")?,
                broker_epoch: input.i64("broker epoch")?,
                change: decode_change(&mut input)?,
            },
            8 => ClusterMessage::AlterPartition {
                request_id: input.u64("request id")?,
                request: AlterPartitionRequest {
                    broker_id: input.i32("broker id")?,
                    broker_epoch: input.i64("broker epoch")?,
                    topic_id: input.uuid("topic id")?,
                    partition: input.i32("partition")?,
                    leader_epoch: input.i32("leader epoch")?,
                    partition_epoch: input.i32("partition epoch")?,
                    isr: input.i32_list("isr", REPLICAS_MAX)?,
                },
            },
            kind => return Err(RpcError::Kind(kind)),
        };
        input.finish("cluster message")?;
        Ok(message)
    }
}

fn encode_adoption(out: &mut Writer, adoption: &Adoption) -> Result<(), CodecError> {
    out.length("adopted topics", adoption.topics.len(), ADOPTED_TOPICS_MAX)?;
    for topic in &adoption.topics {
        out.uuid(&topic.topic_id);
        out.string("topic name", &topic.name, TOPIC_NAME_BYTES_MAX)?;
        out.i32(topic.partitions);
        out.string_map("topic settings", &topic.settings, SETTINGS_LIMITS)?;
    }
    out.i64(adoption.producer_id_end);
    Ok(())
}

fn decode_adoption(input: &mut Reader<'_>) -> Result<Adoption, CodecError> {
    // Each topic is at least an id, a name's length, a count and a map's length.
    let count = input.length("adopted topics", ADOPTED_TOPICS_MAX, 16 + 2 + 4 + 2)?;
    let mut topics = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        topics.push(AdoptedTopic {
            topic_id: input.uuid("topic id")?,
            name: input.string("topic name", TOPIC_NAME_BYTES_MAX)?,
            partitions: input.i32("partitions")?,
            settings: input.string_map("topic settings", SETTINGS_LIMITS)?,
        });
    }
    Ok(Adoption {
        topics,
        producer_id_end: input.i64("producer id end")?,
    })
}

fn encode_change(out: &mut Writer, change: &TopicChange) -> Result<(), CodecError> {
    match change {
        TopicChange::Create {
            topic_id,
            name,
            partitions,
            replication_factor,
            settings,
            validate_only,
        } => {
            out.u8(1);
            out.uuid(topic_id);
            out.string("topic name", name, TOPIC_NAME_BYTES_MAX)?;
            out.i32(*partitions);
            out.u16(*replication_factor as u16);
            out.string_map("topic settings", settings, SETTINGS_LIMITS)?;
            out.bool(*validate_only);
        }
        TopicChange::AddPartitions {
            name,
            total,
            validate_only,
        } => {
            out.u8(2);
            out.string("topic name", name, TOPIC_NAME_BYTES_MAX)?;
            out.i32(*total);
            out.bool(*validate_only);
        }
        TopicChange::Delete { name } => {
            out.u8(3);
            out.string("topic name", name, TOPIC_NAME_BYTES_MAX)?;
        }
    }
    Ok(())
}

fn decode_change(input: &mut Reader<'_>) -> Result<TopicChange, CodecError> {
    Ok(match input.u8("topic change")? {
        1 => TopicChange::Create {
            topic_id: input.uuid("topic id")?,
            name: input.string("topic name", TOPIC_NAME_BYTES_MAX)?,
            partitions: input.i32("partitions")?,
            replication_factor: input.u16("replication factor")? as i16,
            settings: input.string_map("topic settings", SETTINGS_LIMITS)?,
            validate_only: input.bool("validate only")?,
        },
        2 => TopicChange::AddPartitions {
            name: input.string("topic name", TOPIC_NAME_BYTES_MAX)?,
            total: input.i32("partitions")?,
            validate_only: input.bool("validate only")?,
        },
        3 => TopicChange::Delete {
            name: input.string("topic name", TOPIC_NAME_BYTES_MAX)?,
        },
        other => {
            return Err(CodecError::InvalidValue {
                what: "topic change",
                value: i64::from(other),
            });
        }
    })
}

fn encode_outcome(out: &mut Writer, outcome: &Outcome) -> Result<(), CodecError> {
    match outcome {
        Outcome::Registered { broker_epoch } => {
            out.u8(1);
            out.i64(*broker_epoch);
        }
        Outcome::HeartbeatAck {
            fenced,
            metadata_commit,
        } => {
            out.u8(2);
            out.bool(*fenced);
            out.u64(*metadata_commit);
        }
        Outcome::Metadata(MetadataChunk::Entries(entries)) => {
            out.u8(5);
            out.length("metadata entries", entries.len(), METADATA_ENTRIES_MAX)?;
            for (index, data) in entries {
                out.u64(*index);
                out.length("metadata entry", data.len(), METADATA_CHUNK_BYTES_MAX)?;
                out.bytes.extend_from_slice(data);
            }
        }
        Outcome::ProducerIds { first, size } => {
            out.u8(7);
            out.i64(*first);
            out.i32(*size);
        }
        Outcome::Done { index } => {
            out.u8(8);
            out.u64(*index);
        }
        Outcome::PartitionAltered(state) => {
            out.u8(9);
            encode_partition_state(out, state)?;
        }
        Outcome::Metadata(MetadataChunk::Snapshot { index, image }) => {
            out.u8(6);
            out.u64(*index);
            out.length("metadata snapshot", image.len(), METADATA_CHUNK_BYTES_MAX)?;
            out.bytes.extend_from_slice(image);
        }
        Outcome::NotController { leader } => {
            out.u8(3);
            out.i32(leader.unwrap_or(-1));
        }
        Outcome::Refused { code, message } => {
            out.u8(4);
            out.u16(*code as u16);
            let cut = cut_utf8(message, REPLY_MESSAGE_BYTES_MAX);
            out.string("reply message", cut, REPLY_MESSAGE_BYTES_MAX)?;
        }
    }
    Ok(())
}

fn decode_outcome(input: &mut Reader<'_>) -> Result<Outcome, CodecError> {
    Ok(match input.u8("outcome")? {
        1 => Outcome::Registered {
            broker_epoch: input.i64("broker epoch")?,
        },
        2 => Outcome::HeartbeatAck {
            fenced: input.bool("fenced")?,
            metadata_commit: input.u64("metadata commit")?,
        },
        5 => {
            let count = input.length("metadata entries", METADATA_ENTRIES_MAX, 8 + 4)?;
            let mut entries = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let index = input.u64("entry index")?;
                let len = input.length("metadata entry", METADATA_CHUNK_BYTES_MAX, 1)?;
                let data = Bytes::copy_from_slice(input.take("metadata entry", len)?);
                entries.push((index, data));
            }
            Outcome::Metadata(MetadataChunk::Entries(entries))
        }
        6 => {
            let index = input.u64("snapshot index")?;
            let len = input.length("metadata snapshot", METADATA_CHUNK_BYTES_MAX, 1)?;
            let image = Bytes::copy_from_slice(input.take("metadata snapshot", len)?);
            Outcome::Metadata(MetadataChunk::Snapshot { index, image })
        }
        3 => Outcome::NotController {
            leader: match input.i32("leader")? {
                id if id >= 0 => Some(id),
                _ => None,
            },
        },
        4 => Outcome::Refused {
            code: input.u16("error code")? as i16,
            message: input.string("reply message", REPLY_MESSAGE_BYTES_MAX)?,
        },
        7 => Outcome::ProducerIds {
            first: input.i64("first producer id")?,
            size: input.i32("producer id count")?,
        },
        8 => Outcome::Done {
            index: input.u64("metadata index")?,
        },
        9 => Outcome::PartitionAltered(decode_partition_state(input)?),
        other => {
            return Err(CodecError::InvalidValue {
                what: "outcome",
                value: i64::from(other),
            });
        }
    })
}

/// The longest prefix of `text` within `max` bytes that ends on a char boundary.
fn cut_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostPort;
    use uuid::Uuid;

    fn every_kind() -> Vec<ClusterMessage> {
        let mut raft = Message::default();
        raft.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        raft.to = 2;
        raft.from = 1;
        raft.term = 7;
        vec![
            ClusterMessage::Raft(raft),
            ClusterMessage::Register(RegisterRequest {
                request_id: 9,
                registration: BrokerRegistration {
                    broker_id: 3,
                    incarnation_id: Uuid::from_u128(0xfeed),
                    kafka: HostPort {
                        host: "127.0.0.3".into(),
                        port: 9092,
                    },
                    quic: "127.0.0.3:9093".parse().unwrap(),
                    rack: Some("r1".into()),
                },
                spec_hash: "00112233aabbccdd".into(),
                adoption: None,
            }),
            ClusterMessage::Register(RegisterRequest {
                request_id: 10,
                registration: BrokerRegistration {
                    broker_id: 1,
                    incarnation_id: Uuid::from_u128(0xbeef),
                    kafka: HostPort {
                        host: "127.0.0.1".into(),
                        port: 9092,
                    },
                    quic: "127.0.0.1:9093".parse().unwrap(),
                    rack: None,
                },
                spec_hash: "00112233aabbccdd".into(),
                adoption: Some(Adoption {
                    topics: vec![AdoptedTopic {
                        topic_id: Uuid::from_u128(3),
                        name: "declared".into(),
                        partitions: 2,
                        settings: [("retention.ms".to_string(), "-1".to_string())].into(),
                    }],
                    producer_id_end: 1000,
                }),
            }),
            ClusterMessage::Heartbeat(HeartbeatRequest {
                request_id: u64::MAX,
                broker_id: 0,
                broker_epoch: 41,
                metadata_offset: -1,
                want_fence: true,
                spec_hash: String::new(),
            }),
            ClusterMessage::Reply(Reply {
                request_id: 1,
                outcome: Outcome::Registered { broker_epoch: 12 },
            }),
            ClusterMessage::Reply(Reply {
                request_id: 2,
                outcome: Outcome::HeartbeatAck {
                    fenced: true,
                    metadata_commit: 77,
                },
            }),
            ClusterMessage::MetadataFetch {
                request_id: 6,
                after_index: 41,
            },
            ClusterMessage::AllocateProducerIds {
                request_id: 9,
                broker_id: 2,
                broker_epoch: 17,
            },
            ClusterMessage::ChangeTopic {
                request_id: 10,
                broker_id: 2,
                broker_epoch: 17,
                change: TopicChange::Create {
                    topic_id: Uuid::from_u128(5),
                    name: "orders".into(),
                    partitions: 12,
                    replication_factor: 1,
                    settings: [("retention.ms".to_string(), "60000".to_string())].into(),
                    validate_only: true,
                },
            },
            ClusterMessage::ChangeTopic {
                request_id: 11,
                broker_id: 3,
                broker_epoch: 18,
                change: TopicChange::AddPartitions {
                    name: "orders".into(),
                    total: 20,
                    validate_only: false,
                },
            },
            ClusterMessage::ChangeTopic {
                request_id: 12,
                broker_id: 3,
                broker_epoch: 18,
                change: TopicChange::Delete {
                    name: "orders".into(),
                },
            },
            ClusterMessage::Reply(Reply {
                request_id: 12,
                outcome: Outcome::Done { index: 99 },
            }),
            ClusterMessage::AlterPartition {
                request_id: 13,
                request: alter_request(vec![3, 1, 2]),
            },
            ClusterMessage::AlterPartition {
                request_id: 14,
                request: alter_request(Vec::new()),
            },
            ClusterMessage::Reply(Reply {
                request_id: 13,
                outcome: Outcome::PartitionAltered(PartitionState {
                    replicas: vec![1, 2, 3],
                    isr: vec![3, 1],
                    leader: 3,
                    leader_epoch: i32::MAX,
                    partition_epoch: 12,
                    adding: Vec::new(),
                    removing: Vec::new(),
                }),
            }),
            ClusterMessage::Reply(Reply {
                request_id: 9,
                outcome: Outcome::ProducerIds {
                    first: 5000,
                    size: 1000,
                },
            }),
            ClusterMessage::Reply(Reply {
                request_id: 7,
                outcome: Outcome::Metadata(MetadataChunk::Entries(vec![
                    (42, Bytes::new()),
                    (43, Bytes::from_static(b"batch")),
                ])),
            }),
            ClusterMessage::Reply(Reply {
                request_id: 8,
                outcome: Outcome::Metadata(MetadataChunk::Snapshot {
                    index: 90,
                    image: Bytes::from_static(b"image"),
                }),
            }),
            ClusterMessage::Reply(Reply {
                request_id: 3,
                outcome: Outcome::NotController { leader: None },
            }),
            ClusterMessage::Reply(Reply {
                request_id: 4,
                outcome: Outcome::NotController { leader: Some(0) },
            }),
            ClusterMessage::Reply(Reply {
                request_id: 5,
                outcome: Outcome::Refused {
                    code: 101,
                    message: "é".repeat(REPLY_MESSAGE_BYTES_MAX),
                },
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_every_cut_is_refused() {
        for message in every_kind() {
            let bytes = message.encode().unwrap();
            let decoded = ClusterMessage::decode(&bytes).unwrap();
            match (&message, &decoded) {
                (
                    ClusterMessage::Reply(Reply {
                        outcome: Outcome::Refused { message: long, .. },
                        ..
                    }),
                    ClusterMessage::Reply(Reply {
                        outcome: Outcome::Refused { message: cut, .. },
                        ..
                    }),
                ) => {
                    assert!(cut.len() <= REPLY_MESSAGE_BYTES_MAX && long.starts_with(cut.as_str()))
                }
                _ => assert_eq!(decoded, message),
            }
            for len in 0..bytes.len() {
                assert!(
                    ClusterMessage::decode(&bytes[..len]).is_err(),
                    "{message:?} cut at {len} of {}",
                    bytes.len()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(ClusterMessage::decode(&longer).is_err());
        }
    }

    fn alter_request(isr: Vec<BrokerId>) -> AlterPartitionRequest {
        AlterPartitionRequest {
            broker_id: 3,
            broker_epoch: 18,
            topic_id: Uuid::from_u128(0xabc),
            partition: 5,
            leader_epoch: 7,
            partition_epoch: 11,
            isr,
        }
    }

    #[test]
    fn an_isr_longer_than_a_partitions_replicas_can_be_is_refused() {
        let longest = ClusterMessage::AlterPartition {
            request_id: 1,
            request: alter_request((0..REPLICAS_MAX as i32).collect()),
        };
        let bytes = longest.encode().unwrap();
        assert_eq!(ClusterMessage::decode(&bytes).unwrap(), longest);
        let too_long = ClusterMessage::AlterPartition {
            request_id: 1,
            request: alter_request((0..=REPLICAS_MAX as i32).collect()),
        };
        assert!(matches!(
            too_long.encode(),
            Err(RpcError::Codec(CodecError::TooLong { what: "isr", .. }))
        ));
        // The same bytes as a sender that does not check would write: the
        // count is refused before any element is read.
        let mut forged = bytes.clone();
        let count_at = bytes.len() - 2 - 4 * REPLICAS_MAX;
        forged[count_at..count_at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            ClusterMessage::decode(&forged),
            Err(RpcError::Codec(CodecError::TooLong { what: "isr", .. }))
        ));
    }

    #[test]
    fn unknown_versions_and_kinds_are_refused() {
        assert!(matches!(
            ClusterMessage::decode(&[2, 1]),
            Err(RpcError::Version(2))
        ));
        assert!(matches!(
            ClusterMessage::decode(&[RPC_VERSION, 99]),
            Err(RpcError::Kind(99))
        ));
    }
}
