//! Messages between nodes over their QUIC connections, for the layers above
//! (the controller quorum first). Sending never waits on the network: each
//! peer has a bounded queue drained by a task of its own that dials the peer,
//! sends every message as a frame on one stream, in order, and redials with
//! backoff when the connection drops. A full queue drops the message and
//! says so: Raft retries what it needs, and a dead peer must not let memory
//! grow. Receiving: every stream of an admitted peer is read by a task that
//! hands each message, tagged with the peer's verified node id, to one
//! bounded inbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::frame::{self, FrameKind};
use super::path_stats::StreamKind;
use super::quic::{CloseCode, NodeEndpoint, Peer};

/// First wait before redialling a peer; doubles up to `REDIAL_BACKOFF_MAX`.
pub const REDIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A message from another node: its verified id and the payload.
pub type Inbound = (i32, Bytes);

/// The sending end of one peer's queue.
#[derive(Clone, Debug)]
pub struct PeerSender {
    node_id: i32,
    queue: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl PeerSender {
    /// Queues `payload` for the peer; false (and counted) if the queue is full.
    pub fn send(&self, payload: Bytes) -> bool {
        match self.queue.try_send(payload) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the task that keeps node `node_id` at `address` dialled and
/// drains its queue of `queue_len` messages, on the current runtime.
pub fn spawn_peer_link(
    endpoint: Arc<NodeEndpoint>,
    node_id: i32,
    address: SocketAddr,
    queue_len: usize,
) -> PeerSender {
    let (queue, mut pending) = mpsc::channel::<Bytes>(queue_len);
    tokio::spawn(async move {
        let mut backoff = REDIAL_BACKOFF_MIN;
        // Ends when every sender is gone or the endpoint is closed.
        loop {
            let senders_gone = pending.is_closed() && pending.is_empty();
            if senders_gone || endpoint.is_closed() {
                return;
            }
            match endpoint.connect(node_id, address).await {
                Ok(peer) => {
                    let connected = std::time::Instant::now();
                    match drain(&peer, &mut pending).await {
                        Ok(()) => return,
                        // A peer that refuses us after the handshake (another
                        // spec, a rolling change) must not make this a busy
                        // loop; one that was up a while is redialled soon.
                        Err(error) => {
                            tracing::info!(event = "peer_link_lost", peer = node_id, %error);
                            if connected.elapsed() > REDIAL_BACKOFF_MAX {
                                backoff = REDIAL_BACKOFF_MIN;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(event = "peer_dial_failed", peer = node_id, %error);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(REDIAL_BACKOFF_MAX);
        }
    });
    PeerSender {
        node_id,
        queue,
        dropped: Arc::new(AtomicU64::new(0)),
    }
}

/// Sends queued messages on one stream until the queue closes (Ok) or the
/// connection fails (Err; the message in hand is lost, as on a network).
async fn drain(peer: &Peer, pending: &mut mpsc::Receiver<Bytes>) -> Result<(), String> {
    let mut stream = peer
        .connection
        .open_uni()
        .await
        .map_err(|e| e.to_string())?;
    let _counted = peer.stream_opened(StreamKind::MessagesOut);
    while let Some(payload) = pending.recv().await {
        frame::write_frame(&mut stream, FrameKind::Message, &payload)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = stream.finish();
    Ok(())
}

/// Reads every stream the admitted `peer` opens and hands its messages to
/// `inbox` (waiting while the inbox is full), until the connection ends. A
/// bad frame closes the connection: the peer dials again.
pub fn spawn_inbound(peer: Peer, inbox: mpsc::Sender<Inbound>) {
    tokio::spawn(async move {
        while let Ok(mut stream) = peer.connection.accept_uni().await {
            let (inbox, connection, node_id) =
                (inbox.clone(), peer.connection.clone(), peer.node_id);
            let counted = peer.stream_opened(StreamKind::MessagesIn);
            tokio::spawn(async move {
                let _counted = counted;
                loop {
                    match frame::read_frame(&mut stream).await {
                        Ok(Some((FrameKind::Message, payload))) => {
                            if inbox.send((node_id, payload)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Ok(Some((kind, _))) => {
                            tracing::warn!(event = "peer_bad_frame", peer = node_id, ?kind);
                            connection.close(CloseCode::BadFrame.var_int(), b"unexpected frame");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(event = "peer_bad_frame", peer = node_id, %error);
                            connection.close(CloseCode::BadFrame.var_int(), b"bad frame");
                            return;
                        }
                    }
                }
            });
        }
    });
}
