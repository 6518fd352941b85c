//! The follower's end of replication: for every partition this broker
//! follows, a task that fetches from the leader on a stream of its own over
//! one QUIC connection per leader (DESIGN §3), appends what comes, and
//! truncates when the leader says the logs diverge. Each applied metadata
//! image says which partitions to follow, from whom, at which leader epoch;
//! a task whose leader or epoch changed is replaced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::watch;
use uuid::Uuid;

use super::lifecycle::Membership;
use super::runtime::MemberStatus;
use crate::broker::{Broker, Partition, now_ms};
use crate::controller::image::MetadataImage;
use crate::controller::records::{BrokerId, NO_LEADER};
use crate::replication::divergence::{self, Truncation};
use crate::replication::{ReplicaFetch, ReplicaFetchAnswer};
use crate::transport::frame::{self, FrameKind};
use crate::transport::path_stats::StreamKind;
use crate::transport::quic::{NodeEndpoint, Peer};

/// How long the leader may park a fetch that finds nothing new.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Record bytes asked for per fetch (Kafka's `replica.fetch.max.bytes`).
const FETCH_MAX_BYTES: i32 = 1024 * 1024;
/// Slack over the parking time before an answer counts as lost.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Wait after an error before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One followed partition's task, and what it follows.
struct Following {
    leader: BrokerId,
    leader_epoch: i32,
    topic_id: Uuid,
    task: tokio::task::AbortHandle,
}

/// Keeps a fetch task running for every partition this broker follows.
pub struct ReplicaFetcher {
    self_id: BrokerId,
    endpoint: Arc<NodeEndpoint>,
    status: watch::Receiver<MemberStatus>,
    runtime: tokio::runtime::Handle,
    connections: Arc<tokio::sync::Mutex<BTreeMap<BrokerId, Peer>>>,
    following: std::sync::Mutex<BTreeMap<(String, i32), Following>>,
}

impl ReplicaFetcher {
    pub(super) fn new(
        self_id: BrokerId,
        endpoint: Arc<NodeEndpoint>,
        status: watch::Receiver<MemberStatus>,
        runtime: tokio::runtime::Handle,
    ) -> ReplicaFetcher {
        ReplicaFetcher {
            self_id,
            endpoint,
            status,
            runtime,
            connections: Arc::default(),
            following: std::sync::Mutex::default(),
        }
    }

    /// Follows what `image` says this broker follows (after the broker
    /// applied the image's assignments): starts, replaces and stops tasks.
    pub fn follow(&self, broker: &Broker, image: &MetadataImage) {
        let mut wanted: BTreeMap<(String, i32), (BrokerId, i32, Uuid, SocketAddr)> =
            BTreeMap::new();
        for topic in image.topics() {
            for (index, state) in (0..).zip(&topic.partitions) {
                let leader = state.leader;
                if leader == NO_LEADER
                    || leader == self.self_id
                    || !state.replicas.contains(&self.self_id)
                {
                    continue;
                }
                let Some(entry) = image.broker(leader) else {
                    continue;
                };
                let address = entry.registration.quic;
                wanted.insert(
                    (topic.name.clone(), index),
                    (leader, state.leader_epoch, topic.topic_id, address),
                );
            }
        }
        let mut following = self.following.lock().unwrap_or_else(|e| e.into_inner());
        following.retain(|key, current| {
            let keep = wanted.get(key).is_some_and(|(leader, epoch, id, _)| {
                (*leader, *epoch, *id) == (current.leader, current.leader_epoch, current.topic_id)
            });
            if !keep {
                current.task.abort();
            }
            keep
        });
        for (key, (leader, leader_epoch, topic_id, address)) in wanted {
            if following.contains_key(&key) {
                continue;
            }
            let Ok(partition) = broker.hosted_partition(&key.0, key.1) else {
                continue;
            };
            if partition.leadership().is_leader() {
                continue;
            }
            let task = FetchTask {
                self_id: self.self_id,
                partition,
                topic_id,
                leader,
                leader_epoch,
                address,
                endpoint: self.endpoint.clone(),
                status: self.status.clone(),
                connections: self.connections.clone(),
            };
            let handle = self.runtime.spawn(task.run());
            tracing::debug!(event = "following", topic = %key.0, partition = key.1, leader, leader_epoch);
            following.insert(
                key,
                Following {
                    leader,
                    leader_epoch,
                    topic_id,
                    task: handle.abort_handle(),
                },
            );
        }
    }

    /// Stops every task (shutdown).
    pub fn stop(&self) {
        let mut following = self.following.lock().unwrap_or_else(|e| e.into_inner());
        for (_, current) in std::mem::take(&mut *following) {
            current.task.abort();
        }
    }
}

/// One followed partition.
struct FetchTask {
    self_id: BrokerId,
    partition: Arc<Partition>,
    topic_id: Uuid,
    leader: BrokerId,
    leader_epoch: i32,
    address: SocketAddr,
    endpoint: Arc<NodeEndpoint>,
    status: watch::Receiver<MemberStatus>,
    connections: Arc<tokio::sync::Mutex<BTreeMap<BrokerId, Peer>>>,
}

impl FetchTask {
    async fn run(self) {
        let mut backoff = RETRY_BACKOFF;
        loop {
            match self.fetch_on_a_stream().await {
                Ok(()) => backoff = RETRY_BACKOFF,
                Err(error) => {
                    tracing::debug!(event = "replica_fetch_failed", partition = ?self.partition, leader = self.leader, %error);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }

    /// The leader's connection, dialled if there is none alive. Kept as a
    /// `Peer`, so its path statistics are tracked while it is used.
    async fn connection(&self) -> Result<Peer, String> {
        let mut connections = self.connections.lock().await;
        if let Some(peer) = connections.get(&self.leader)
            && peer.connection.close_reason().is_none()
        {
            return Ok(peer.clone());
        }
        let peer = self
            .endpoint
            .connect(self.leader, self.address)
            .await
            .map_err(|e| e.to_string())?;
        connections.insert(self.leader, peer.clone());
        Ok(peer)
    }

    /// Fetches on one stream until something goes wrong (Ok: a pause the
    /// leader asked for by its answer, e.g. a leadership error).
    async fn fetch_on_a_stream(&self) -> Result<(), String> {
        let peer = self.connection().await?;
        let (mut send, mut recv) = peer.connection.open_bi().await.map_err(|e| e.to_string())?;
        let _counted = peer.stream_opened(StreamKind::ReplicaFetch);
        loop {
            let Membership::Registered { broker_epoch, .. } = self.status.borrow().membership
            else {
                return Err("not registered".into());
            };
            let partition = self.partition.clone();
            let state = tokio::task::spawn_blocking(move || partition.fetch_state())
                .await
                .map_err(|e| e.to_string())?;
            let fetch = ReplicaFetch {
                replica_id: self.self_id,
                broker_epoch,
                topic_id: self.topic_id,
                partition: self.partition.index,
                current_leader_epoch: self.leader_epoch,
                fetch_offset: state.fetch_offset,
                last_fetched_epoch: state.last_fetched_epoch,
                log_start_offset: state.log_start_offset,
                max_bytes: FETCH_MAX_BYTES,
                max_wait_ms: FETCH_MAX_WAIT_MS,
            };
            frame::write_frame(&mut send, FrameKind::Message, &fetch.encode())
                .await
                .map_err(|e| e.to_string())?;
            let wait = Duration::from_millis(FETCH_MAX_WAIT_MS as u64) + ANSWER_SLACK;
            let answer = match tokio::time::timeout(wait, frame::read_frame(&mut recv)).await {
                Err(_) => return Err("no answer in time".into()),
                Ok(Err(error)) => return Err(error.to_string()),
                Ok(Ok(None)) => return Err("the leader closed the stream".into()),
                Ok(Ok(Some((FrameKind::Message, payload)))) => {
                    ReplicaFetchAnswer::decode(payload).map_err(|e| e.to_string())?
                }
                Ok(Ok(Some((kind, _)))) => return Err(format!("a {kind:?} frame")),
            };
            if !self.take(answer, state.fetch_offset).await? {
                return Ok(());
            }
        }
    }

    /// Applies an answer; false when fetching should pause.
    async fn take(&self, answer: ReplicaFetchAnswer, fetch_offset: i64) -> Result<bool, String> {
        let partition = self.partition.clone();
        let code = answer.error_code;
        if code == ResponseError::OffsetOutOfRange.code() {
            let truncation =
                divergence::truncation_for_out_of_range(fetch_offset, answer.log_start_offset);
            if truncation == Truncation::Unresolved {
                tracing::error!(event = "replica_out_of_range", partition = ?partition, fetch_offset, leader_log_start = answer.log_start_offset);
                return Ok(false);
            }
            tracing::info!(event = "replica_restarted", partition = ?partition, ?truncation);
            return blocking(move || partition.truncate_replica(truncation)).await;
        }
        if code != 0 {
            tracing::debug!(event = "replica_fetch_refused", partition = ?partition, code, leader = self.leader);
            return Ok(false);
        }
        if let Some(diverging) = answer.diverging {
            let done = tokio::task::spawn_blocking(move || partition.truncate_diverging(diverging))
                .await
                .map_err(|e| e.to_string())?;
            return match done {
                Ok(Truncation::Unresolved) => {
                    tracing::error!(event = "replica_divergence_unresolved", partition = ?self.partition, ?diverging);
                    Ok(false)
                }
                Ok(truncation) => {
                    tracing::info!(event = "replica_truncated", partition = ?self.partition, ?diverging, ?truncation);
                    Ok(true)
                }
                Err(error) => Err(error.to_string()),
            };
        }
        let had_records = !answer.records.is_empty();
        blocking(move || {
            partition.append_replicated(
                &answer.records,
                answer.high_watermark,
                answer.log_start_offset,
                now_ms(),
            )?;
            // Under fsync-before-ack the next fetch offset vouches for
            // what is synced: the leader counts it towards acks=all.
            if had_records && partition.fsync_before_ack() {
                partition.sync(now_ms())?;
            }
            Ok(())
        })
        .await
    }
}

/// Runs partition work on a blocking thread; Ok(true) when it succeeded.
async fn blocking(
    work: impl FnOnce() -> Result<(), crate::broker::PartitionError> + Send + 'static,
) -> Result<bool, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}
