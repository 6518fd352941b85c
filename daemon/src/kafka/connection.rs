//! One client connection: a reader that takes whole frames and dispatches
//! them in arrival order, and a writer that sends replies in that same order
//! while later requests are already being read (pipelining).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};

use super::dispatch::{Reply, dispatch};
use super::frame::{FRAME_SIZE_PREFIX_BYTES, FrameError, frame_length};
use super::listener::ListenerLimits;
use super::response::{ResponseFrame, write_frame};
use crate::broker::Broker;

/// Initial read buffer per connection; grows to the largest frame seen.
const READ_BUFFER_BYTES_INITIAL: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shared by all connections: bounds on memory held by queued requests.
pub struct ConnectionShared {
    pub broker: Arc<Broker>,
    pub limits: ListenerLimits,
    /// One permit per byte of request being read or dispatched.
    pub request_bytes: Arc<Semaphore>,
}

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ConnectionShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let metrics = crate::metrics::metrics();
    metrics.connections.inc();
    let (mut reader, writer) = stream.into_split();
    let (replies_tx, replies_rx) = mpsc::channel::<Queued>(shared.limits.in_flight_requests_max);
    let writer_task = tokio::spawn(write_loop(writer, replies_rx, peer));
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES_INITIAL);
    loop {
        let idle = shared.limits.idle_timeout;
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle, read_frame(&mut reader, &mut buffer, &shared)) => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    tracing::debug!(event = "connection_idle_closed", peer = %peer);
                    break;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (frame, permit) = match frame {
            Ok(Some(taken)) => taken,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(event = "connection_closed", peer = %peer, reason = %e);
                break;
            }
        };
        let started = Instant::now();
        let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok();
        let reply = dispatch(&shared.broker, &shared.limits, frame);
        drop(permit);
        match reply {
            Ok(reply) => {
                if replies_tx
                    .send(Queued {
                        reply,
                        api,
                        started,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => {
                let api = api.map_or("Unknown".to_string(), |a| format!("{a:?}"));
                metrics
                    .request_errors
                    .with_label_values(&[&api, crate::metrics::CONNECTION_CLOSED])
                    .inc();
                tracing::info!(event = "connection_closed", peer = %peer, reason = %e);
                break;
            }
        }
    }
    // Replies already queued are still written before the socket closes.
    drop(replies_tx);
    let _ = writer_task.await;
    metrics.connections.dec();
}

/// A reply waiting its turn, with what the request metrics need.
struct Queued {
    reply: Reply,
    api: Option<ApiKey>,
    started: Instant,
}

/// Replies whose bytes are all in memory are gathered while more are queued
/// and go out in one write (up to this many bytes): each write on loopback is
/// a wake-up of the client, which on a VM costs more than the copy.
const COALESCED_REPLY_BYTES_MAX: usize = 64 * 1024;
/// Requests held back at most, counting acks=0 produces (no bytes, but their
/// metrics wait in order): bounds how long a stream of them can delay a reply.
const COALESCED_REQUESTS_MAX: usize = 256;

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Queued>,
    peer: SocketAddr,
) {
    let mut out = ReplyBuffer::default();
    loop {
        // Wait only with nothing held back; otherwise send what is gathered
        // as soon as no further reply is ready.
        let next = if out.is_empty() {
            replies.recv().await
        } else {
            match replies.try_recv() {
                Ok(queued) => Some(queued),
                Err(mpsc::error::TryRecvError::Empty) => {
                    if !out.flush(&mut writer, peer).await {
                        return;
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        let Some(Queued {
            reply,
            api,
            started,
        }) = next
        else {
            break;
        };
        let frame = match reply {
            Reply::Nothing => {
                out.hold_nothing(api, started);
                if out.is_full() && !out.flush(&mut writer, peer).await {
                    return;
                }
                continue;
            }
            Reply::Ready(frame) => frame,
            Reply::Pending(pending) => {
                // Earlier replies must not wait behind a long poll.
                if !out.flush(&mut writer, peer).await {
                    return;
                }
                match pending.await {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::error!(event = "reply_failed", peer = %peer, error = %e);
                        return;
                    }
                }
            }
        };
        if out.try_gather(&frame, api, started) {
            if out.is_full() && !out.flush(&mut writer, peer).await {
                return;
            }
            continue;
        }
        if !out.flush(&mut writer, peer).await {
            return;
        }
        if let Err(e) = write_frame(&mut writer, &frame).await {
            tracing::debug!(event = "write_failed", peer = %peer, error = %e);
            return;
        }
        observe_request(api, started);
    }
    let _ = out.flush(&mut writer, peer).await;
}

/// Encoded replies held back to share one write, with the request metrics
/// that are recorded once they are on the wire.
#[derive(Default)]
struct ReplyBuffer {
    bytes: BytesMut,
    requests: Vec<(Option<ApiKey>, Instant)>,
}

impl ReplyBuffer {
    fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    fn is_full(&self) -> bool {
        self.bytes.len() >= COALESCED_REPLY_BYTES_MAX
            || self.requests.len() >= COALESCED_REQUESTS_MAX
    }

    /// An acks=0 produce: nothing to send, but its metrics keep their turn
    /// behind the replies held before it.
    fn hold_nothing(&mut self, api: Option<ApiKey>, started: Instant) {
        if self.requests.is_empty() {
            observe_request(api, started);
        } else {
            self.requests.push((api, started));
        }
    }

    /// Takes `frame` if it is all bytes and small; false leaves it to the
    /// caller (file ranges go out with `sendfile`).
    fn try_gather(&mut self, frame: &ResponseFrame, api: Option<ApiKey>, started: Instant) -> bool {
        if !frame.gather_into(&mut self.bytes, COALESCED_REPLY_BYTES_MAX) {
            return false;
        }
        self.requests.push((api, started));
        true
    }

    /// Writes what is gathered; false when the connection is gone.
    async fn flush(&mut self, writer: &mut OwnedWriteHalf, peer: SocketAddr) -> bool {
        if self.requests.is_empty() {
            return true;
        }
        if let Err(e) = writer.write_all(&self.bytes).await {
            tracing::debug!(event = "write_failed", peer = %peer, error = %e);
            return false;
        }
        if self.bytes.capacity() > 2 * COALESCED_REPLY_BYTES_MAX {
            // A burst's buffer is not kept for the life of the connection.
            self.bytes = BytesMut::new();
        } else {
            self.bytes.clear();
        }
        for (api, started) in self.requests.drain(..) {
            observe_request(api, started);
        }
        true
    }
}

fn observe_request(api: Option<ApiKey>, started: Instant) {
    let Some(api) = api else { return };
    let metrics = crate::metrics::metrics();
    let api = format!("{api:?}");
    metrics.requests.with_label_values(&[&api]).inc();
    metrics
        .request_duration
        .with_label_values(&[&api])
        .observe(started.elapsed().as_secs_f64());
}

/// Reads until one whole frame is buffered; `None` on a clean EOF between
/// frames. The permit covers the frame's bytes until dispatch is done.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    shared: &ConnectionShared,
) -> Result<Option<(Bytes, tokio::sync::OwnedSemaphorePermit)>, ReadError> {
    let max_bytes = shared.limits.request_bytes_max;
    let mut permit = None;
    loop {
        if let Some(length) = frame_length(buffer, max_bytes)? {
            if permit.is_none() {
                let acquired = shared
                    .request_bytes
                    .clone()
                    .acquire_many_owned(length as u32)
                    .await;
                permit = Some(acquired.map_err(|_| std::io::Error::other("listener closed"))?);
            }
            let whole = FRAME_SIZE_PREFIX_BYTES + length;
            if buffer.len() >= whole {
                buffer.advance(FRAME_SIZE_PREFIX_BYTES);
                let frame = buffer.split_to(length).freeze();
                let permit = permit.take().expect("permit acquired above");
                return Ok(Some((frame, permit)));
            }
            buffer.reserve(whole - buffer.len());
        }
        if reader.read_buf(buffer).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::TruncatedFrame)
            };
        }
    }
}
