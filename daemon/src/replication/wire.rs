//! A follower's fetch and the leader's answer on a replication stream,
//! encoded as Kafka's own FetchRequest/FetchResponse (one topic, one
//! partition) with the codec crate, so the fields mean exactly what they
//! mean between Kafka brokers: replica id and broker epoch, current leader
//! epoch, last fetched epoch, diverging epoch. A payload is the version
//! (i16, big-endian) and the body; frames carry payloads (transport/frame.rs).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use uuid::Uuid;

use super::divergence::EpochEnd;

/// The Fetch version spoken on replication streams: the first with the
/// follower's broker epoch (KIP-903) and topic ids.
pub const REPLICA_FETCH_VERSION: i16 = 15;

/// A follower's fetch of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetch {
    pub replica_id: i32,
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    pub current_leader_epoch: i32,
    pub fetch_offset: i64,
    /// The epoch of the follower's last batch (-1: its log is empty).
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
    pub max_bytes: i32,
    /// How long the leader may hold the fetch while there is nothing new.
    pub max_wait_ms: i32,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchAnswer {
    /// A Kafka error code (0: none).
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Set when the follower's log diverges from the leader's.
    pub diverging: Option<EpochEnd>,
    /// The leader and epoch the answering broker knows, on a leadership error.
    pub current_leader: Option<(i32, i32)>,
    pub records: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("payload shorter than its version field")]
    NoVersion,
    #[error("replication payload of version {0}; this broker speaks {REPLICA_FETCH_VERSION}")]
    Version(i16),
    #[error("malformed replica fetch: {0}")]
    Malformed(String),
    #[error("a replica fetch names exactly one topic and one partition")]
    NotOnePartition,
}

fn with_version(encode: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(REPLICA_FETCH_VERSION);
    // Only values we built go in: an error is a broken invariant.
    encode(&mut out).expect("a replica fetch message encodes");
    out.freeze()
}

fn split_version(mut payload: Bytes) -> Result<Bytes, WireError> {
    if payload.len() < 2 {
        return Err(WireError::NoVersion);
    }
    let version = payload.get_i16();
    if version != REPLICA_FETCH_VERSION {
        return Err(WireError::Version(version));
    }
    Ok(payload)
}

impl ReplicaFetch {
    pub fn encode(&self) -> Bytes {
        let partition = FetchPartition::default()
            .with_partition(self.partition)
            .with_current_leader_epoch(self.current_leader_epoch)
            .with_fetch_offset(self.fetch_offset)
            .with_last_fetched_epoch(self.last_fetched_epoch)
            .with_log_start_offset(self.log_start_offset)
            .with_partition_max_bytes(self.max_bytes);
        let topic = FetchTopic::default()
            .with_topic_id(self.topic_id)
            .with_partitions(vec![partition]);
        let request = FetchRequest::default()
            .with_replica_state(
                ReplicaState::default()
                    .with_replica_id(BrokerId(self.replica_id))
                    .with_replica_epoch(self.broker_epoch),
            )
            .with_max_wait_ms(self.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(self.max_bytes)
            .with_topics(vec![topic]);
        with_version(|out| request.encode(out, REPLICA_FETCH_VERSION))
    }

    pub fn decode(payload: Bytes) -> Result<ReplicaFetch, WireError> {
        let mut body = split_version(payload)?;
        let request = FetchRequest::decode(&mut body, REPLICA_FETCH_VERSION)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if body.has_remaining() {
            return Err(WireError::Malformed("bytes after the request".into()));
        }
        let [topic] = request.topics.as_slice() else {
            return Err(WireError::NotOnePartition);
        };
        let [partition] = topic.partitions.as_slice() else {
            return Err(WireError::NotOnePartition);
        };
        Ok(ReplicaFetch {
            replica_id: request.replica_state.replica_id.0,
            broker_epoch: request.replica_state.replica_epoch,
            topic_id: topic.topic_id,
            partition: partition.partition,
            current_leader_epoch: partition.current_leader_epoch,
            fetch_offset: partition.fetch_offset,
            last_fetched_epoch: partition.last_fetched_epoch,
            log_start_offset: partition.log_start_offset,
            max_bytes: partition.partition_max_bytes,
            max_wait_ms: request.max_wait_ms,
        })
    }
}

impl ReplicaFetchAnswer {
    /// The answer to `fetch`.
    pub fn encode(&self, fetch: &ReplicaFetch) -> Bytes {
        let mut partition = PartitionData::default()
            .with_partition_index(fetch.partition)
            .with_error_code(self.error_code)
            .with_high_watermark(self.high_watermark)
            .with_last_stable_offset(self.high_watermark)
            .with_log_start_offset(self.log_start_offset)
            .with_records(Some(self.records.clone()));
        if let Some(diverging) = self.diverging {
            partition = partition.with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(diverging.epoch)
                    .with_end_offset(diverging.end_offset),
            );
        }
        if let Some((leader, epoch)) = self.current_leader {
            partition = partition.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
            );
        }
        let topic = FetchableTopicResponse::default()
            .with_topic_id(fetch.topic_id)
            .with_partitions(vec![partition]);
        let response = FetchResponse::default().with_responses(vec![topic]);
        with_version(|out| response.encode(out, REPLICA_FETCH_VERSION))
    }

    pub fn decode(payload: Bytes) -> Result<ReplicaFetchAnswer, WireError> {
        let mut body = split_version(payload)?;
        let response = FetchResponse::decode(&mut body, REPLICA_FETCH_VERSION)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let [topic] = response.responses.as_slice() else {
            return Err(WireError::NotOnePartition);
        };
        let [partition] = topic.partitions.as_slice() else {
            return Err(WireError::NotOnePartition);
        };
        let diverging = (partition.diverging_epoch.epoch >= 0).then_some(EpochEnd {
            epoch: partition.diverging_epoch.epoch,
            end_offset: partition.diverging_epoch.end_offset,
        });
        let current_leader = (partition.current_leader.leader_id.0 >= 0).then_some((
            partition.current_leader.leader_id.0,
            partition.current_leader.leader_epoch,
        ));
        Ok(ReplicaFetchAnswer {
            error_code: partition.error_code,
            high_watermark: partition.high_watermark,
            log_start_offset: partition.log_start_offset,
            diverging,
            current_leader,
            records: partition.records.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch() -> ReplicaFetch {
        ReplicaFetch {
            replica_id: 2,
            broker_epoch: 41,
            topic_id: Uuid::from_u128(7),
            partition: 3,
            current_leader_epoch: 5,
            fetch_offset: 1_000,
            last_fetched_epoch: 4,
            log_start_offset: 10,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        }
    }

    #[test]
    fn fetches_and_answers_round_trip() {
        let request = fetch();
        assert_eq!(ReplicaFetch::decode(request.encode()).unwrap(), request);
        let answers = [
            ReplicaFetchAnswer {
                error_code: 0,
                high_watermark: 990,
                log_start_offset: 10,
                diverging: None,
                current_leader: None,
                records: Bytes::from_static(b"batches"),
            },
            ReplicaFetchAnswer {
                error_code: 0,
                high_watermark: 990,
                log_start_offset: 10,
                diverging: Some(EpochEnd {
                    epoch: 3,
                    end_offset: 950,
                }),
                current_leader: None,
                records: Bytes::new(),
            },
            ReplicaFetchAnswer {
                error_code: 74,
                high_watermark: -1,
                log_start_offset: -1,
                diverging: None,
                current_leader: Some((1, 6)),
                records: Bytes::new(),
            },
        ];
        for answer in answers {
            let decoded = ReplicaFetchAnswer::decode(answer.encode(&request)).unwrap();
            assert_eq!(decoded, answer);
        }
    }

    #[test]
    fn bad_payloads_are_refused_not_trusted() {
        let bytes = fetch().encode();
        assert!(matches!(
            ReplicaFetch::decode(Bytes::from_static(&[0])),
            Err(WireError::NoVersion)
        ));
        let mut other_version = BytesMut::from(&bytes[..]);
        other_version[..2].copy_from_slice(&12i16.to_be_bytes());
        assert!(matches!(
            ReplicaFetch::decode(other_version.freeze()),
            Err(WireError::Version(12))
        ));
        for cut in 2..bytes.len() {
            assert!(
                ReplicaFetch::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let two = FetchRequest::default().with_topics(vec![
            FetchTopic::default().with_partitions(vec![FetchPartition::default(); 2]),
        ]);
        let payload = with_version(|out| two.encode(out, REPLICA_FETCH_VERSION));
        assert!(matches!(
            ReplicaFetch::decode(payload),
            Err(WireError::NotOnePartition)
        ));
    }
}
