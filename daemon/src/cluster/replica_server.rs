//! The leader's end of replication: every bidirectional stream a peer
//! opens carries one partition's fetches, answered in order (DESIGN §3).
//! Streams are independent, so a partition whose disk is slow holds up its
//! own stream only. The decisions are the partition's (broker/partition.rs
//! and the replication cores); this moves frames, parks fetches that find
//! nothing new (long poll), and hands ISR expansions to `IsrUpdates`.
//! Disk work runs on blocking threads of the replication runtime, never on
//! the QUIC runtime that carries heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::isr_updates::IsrUpdates;
use crate::broker::{Broker, Partition, PartitionError, now_ms};
use crate::kafka::errors::partition_error_code;
use crate::replication::{ReplicaFetch, ReplicaFetchAnswer};
use crate::transport::frame::{self, FrameKind, MESSAGE_BYTES_MAX};
use crate::transport::path_stats::StreamKind;
use crate::transport::quic::{CloseCode, Peer};

/// The longest a follower's fetch is parked.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(5);
/// Record bytes one answer carries at most (below the frame limit, with
/// room for the answer's own fields).
const ANSWER_RECORDS_MAX: i32 = 8 * 1024 * 1024;

/// What serving needs, shared by every stream.
#[derive(Clone)]
pub(super) struct ReplicaServer {
    pub(super) broker: Arc<Broker>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) isr: IsrUpdates,
}

impl ReplicaServer {
    /// Serves every bidirectional stream `peer` opens, until its connection ends.
    pub(super) fn serve_peer(&self, peer: Peer) {
        let server = self.clone();
        self.runtime.spawn(async move {
            while let Ok((send, recv)) = peer.connection.accept_bi().await {
                let server = server.clone();
                let peer = peer.clone();
                server
                    .runtime
                    .clone()
                    .spawn(async move { server.serve_stream(peer, send, recv).await });
            }
        });
    }

    async fn serve_stream(
        self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let _counted = peer.stream_opened(StreamKind::ReplicaServe);
        let mut resolved: Option<((Uuid, i32), Arc<Partition>)> = None;
        loop {
            let payload = match frame::read_frame(&mut recv).await {
                Ok(Some((FrameKind::Message, payload))) => payload,
                Ok(None) => return,
                Ok(Some((kind, _))) => return refuse(&peer, &format!("a {kind:?} frame")),
                Err(error) => return refuse(&peer, &error.to_string()),
            };
            let fetch = match ReplicaFetch::decode(payload) {
                Ok(fetch) => fetch,
                Err(error) => return refuse(&peer, &error.to_string()),
            };
            if fetch.replica_id != peer.node_id {
                let claim = format!("a fetch for replica {}", fetch.replica_id);
                return refuse(&peer, &claim);
            }
            let key = (fetch.topic_id, fetch.partition);
            let partition = match &resolved {
                Some((at, partition)) if *at == key => Ok(partition.clone()),
                _ => self.broker.partition_by_id(fetch.topic_id, fetch.partition),
            };
            let answer = match partition {
                Ok(partition) => {
                    resolved = Some((key, partition.clone()));
                    self.answer(&partition, &fetch).await
                }
                Err(error) => error_answer(&error),
            };
            let bytes = answer.encode(&fetch);
            let bytes = if bytes.len() > MESSAGE_BYTES_MAX as usize {
                // Only a batch above every limit could do this; say so.
                tracing::error!(
                    event = "replica_answer_too_large",
                    peer = peer.node_id,
                    bytes = bytes.len()
                );
                ReplicaFetchAnswer {
                    records: Bytes::new(),
                    error_code: ResponseError::MessageTooLarge.code(),
                    ..answer
                }
                .encode(&fetch)
            } else {
                bytes
            };
            if frame::write_frame(&mut send, FrameKind::Message, &bytes)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Serves `fetch`, parking it once while there is nothing new.
    async fn answer(&self, partition: &Arc<Partition>, fetch: &ReplicaFetch) -> ReplicaFetchAnswer {
        let wait = Duration::from_millis(u64::try_from(fetch.max_wait_ms).unwrap_or(0))
            .min(FETCH_WAIT_MAX);
        let deadline = Instant::now() + wait;
        let mut parked = false;
        loop {
            let answer = self.serve_once(partition, fetch).await;
            let nothing_new =
                answer.error_code == 0 && answer.diverging.is_none() && answer.records.is_empty();
            if parked || !nothing_new || wait.is_zero() {
                return answer;
            }
            partition
                .wait_for_replica_data(fetch.fetch_offset, answer.high_watermark, deadline)
                .await;
            parked = true;
        }
    }

    async fn serve_once(
        &self,
        partition: &Arc<Partition>,
        fetch: &ReplicaFetch,
    ) -> ReplicaFetchAnswer {
        let (served, request) = (partition.clone(), fetch.clone());
        let mut request = request;
        request.max_bytes = request.max_bytes.clamp(0, ANSWER_RECORDS_MAX);
        let outcome = tokio::task::spawn_blocking(move || {
            let serve = served.serve_replica_fetch(&request, now_ms())?;
            let records = match &serve.records.file {
                Some(slice) => match slice.read_to_vec() {
                    Ok(records) => records,
                    Err(error) => crate::failstop::storage_failure(
                        &format!("reading {served:?} for a follower"),
                        &error,
                    ),
                },
                None => Vec::new(),
            };
            Ok::<_, PartitionError>((serve, records))
        })
        .await;
        match outcome {
            Ok(Ok((serve, records))) => {
                if let Some(proposal) = serve.proposal {
                    self.isr.send(partition.clone(), fetch.topic_id, proposal);
                }
                ReplicaFetchAnswer {
                    error_code: 0,
                    high_watermark: serve.high_watermark,
                    log_start_offset: serve.log_start_offset,
                    diverging: serve.diverging,
                    current_leader: None,
                    records: records.into(),
                }
            }
            Ok(Err(error)) => {
                let mut answer = error_answer(&error);
                if let PartitionError::Log(crate::log::LogError::OffsetOutOfRange {
                    log_start_offset,
                    ..
                }) = error
                {
                    answer.log_start_offset = log_start_offset;
                }
                answer
            }
            Err(error) => {
                tracing::error!(event = "replica_serve_failed", partition = ?partition, %error);
                error_answer(&PartitionError::NotFollower {
                    partition: format!("{partition:?}"),
                })
            }
        }
    }
}

fn error_answer(error: &PartitionError) -> ReplicaFetchAnswer {
    let current_leader = match error {
        PartitionError::NotLeader { leader, epoch, .. } => Some((leader.unwrap_or(-1), *epoch)),
        _ => None,
    };
    ReplicaFetchAnswer {
        error_code: partition_error_code(error),
        high_watermark: -1,
        log_start_offset: -1,
        diverging: None,
        current_leader,
        records: Bytes::new(),
    }
}

/// Bad input from an admitted peer: logged, and its connection closed
/// (it dials again); nothing else is affected.
fn refuse(peer: &Peer, what: &str) {
    tracing::warn!(event = "replica_stream_refused", peer = peer.node_id, reason = %what);
    peer.connection
        .close(CloseCode::BadFrame.var_int(), b"bad replication stream");
}
