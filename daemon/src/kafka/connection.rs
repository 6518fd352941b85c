//! One client connection: a reader that takes whole frames and dispatches
//! them in arrival order, and a writer that sends replies in that same order
//! while later requests are already being read (pipelining).
//!
//! Memory for a request is reserved from the broker-wide budget as its bytes
//! arrive, not when its size is announced, and a request must arrive whole
//! within `request_read_timeout`: a client that announces 100 MiB and sends
//! a byte a second holds a few KiB of the budget, and only for that long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::dispatch::{Reply, dispatch_all};
use super::frame::{FRAME_SIZE_PREFIX_BYTES, FrameError, frame_length};
use super::listener::ListenerLimits;
use super::response::{ResponseFrame, write_frame};
use crate::broker::Broker;

/// Initial read buffer per connection; grows to the largest frame seen.
const READ_BUFFER_BYTES_INITIAL: usize = 64 * 1024;
/// Budget reserved ahead of a frame's bytes, and the most its buffer grows
/// by before they arrive: a frame this size or smaller is reserved whole.
const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Pipelined produces already whole in the read buffer are dispatched
/// together, up to this many requests and bytes, so they share one trip
/// off the async worker (see `dispatch_all`).
const PRODUCE_BATCH_REQUESTS_MAX: usize = 16;
const PRODUCE_BATCH_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
    #[error("no request for {idle:?}")]
    Idle { idle: std::time::Duration },
    #[error(
        "request not whole after {timeout:?}: {received_bytes} of {} bytes received",
        announced_bytes.map_or_else(|| "?".to_string(), |n| n.to_string())
    )]
    RequestTimeout {
        timeout: std::time::Duration,
        received_bytes: usize,
        announced_bytes: Option<usize>,
    },
    #[error("the listener is closed")]
    ListenerClosed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Shared by all connections: bounds on memory held by queued requests.
pub struct ConnectionShared {
    pub broker: Arc<Broker>,
    pub groups: Option<Arc<crate::group::GroupCoordinator>>,
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
        let frame = tokio::select! {
            frame = read_frame(&mut reader, &mut buffer, &shared) => frame,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (frame, permit) = match frame {
            Ok(Some(taken)) => taken,
            Ok(None) => break,
            Err(e @ ReadError::Idle { .. }) => {
                tracing::debug!(event = "connection_idle_closed", peer = %peer, reason = %e);
                break;
            }
            Err(e) => {
                tracing::info!(event = "connection_closed", peer = %peer, reason = %e);
                break;
            }
        };
        let started = Instant::now();
        let mut frames = vec![frame];
        let mut permits = vec![permit];
        if api_key(&frames[0]) == Some(ApiKey::Produce) {
            let mut room = PRODUCE_BATCH_BYTES_MAX.saturating_sub(frames[0].len());
            while frames.len() < PRODUCE_BATCH_REQUESTS_MAX {
                let Some((frame, permit)) = take_buffered_produce(&mut buffer, &shared, room)
                else {
                    break;
                };
                room -= frame.len();
                frames.push(frame);
                permits.push(permit);
            }
        }
        let apis: Vec<Option<ApiKey>> = frames.iter().map(|frame| api_key(frame)).collect();
        // Awaited before the next frame is taken: requests apply in order.
        let results = dispatch_all(
            &shared.broker,
            shared.groups.as_ref(),
            &shared.limits,
            frames,
        )
        .await;
        drop(permits);
        let mut open = true;
        for (result, api) in results.into_iter().zip(apis) {
            match result {
                Ok(reply) => {
                    let queued = Queued {
                        reply,
                        api,
                        started,
                    };
                    if replies_tx.send(queued).await.is_err() {
                        open = false;
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
                    open = false;
                    break;
                }
            }
        }
        if !open {
            break;
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

fn api_key(frame: &[u8]) -> Option<ApiKey> {
    ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok()
}

/// The next frame if it is already whole in `buffer`, is a Produce of at
/// most `room` bytes, and its budget is free at once; otherwise `None`, and
/// the frame is left for `read_frame`.
fn take_buffered_produce(
    buffer: &mut BytesMut,
    shared: &ConnectionShared,
    room: usize,
) -> Option<(Bytes, OwnedSemaphorePermit)> {
    let length = frame_length(buffer, shared.limits.request_bytes_max).ok()??;
    let whole = FRAME_SIZE_PREFIX_BYTES + length;
    if buffer.len() < whole || length > room {
        return None;
    }
    let header = &buffer[FRAME_SIZE_PREFIX_BYTES..];
    if api_key(header) != Some(ApiKey::Produce) {
        return None;
    }
    // At most `socket_request_max_bytes`, a u32.
    let permit = shared
        .request_bytes
        .clone()
        .try_acquire_many_owned(length as u32)
        .ok()?;
    buffer.advance(FRAME_SIZE_PREFIX_BYTES);
    Some((buffer.split_to(length).freeze(), permit))
}

/// Reads until one whole frame is buffered; `None` on a clean EOF between
/// frames. Waiting for a frame to begin is bounded by the idle timeout; once
/// it has begun, the rest must arrive within `request_read_timeout`. The
/// permit covers the frame's bytes until dispatch is done.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    shared: &ConnectionShared,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, ReadError> {
    let limits = &shared.limits;
    if buffer.is_empty() {
        let idle = limits.idle_timeout;
        match tokio::time::timeout(idle, reader.read_buf(buffer)).await {
            Err(_) => return Err(ReadError::Idle { idle }),
            Ok(read) => {
                if read? == 0 {
                    return Ok(None);
                }
            }
        }
    }
    let timeout = limits.request_read_timeout;
    match tokio::time::timeout(timeout, read_rest(reader, buffer, shared)).await {
        Ok(taken) => taken.map(Some),
        Err(_) => Err(ReadError::RequestTimeout {
            timeout,
            received_bytes: buffer.len().saturating_sub(FRAME_SIZE_PREFIX_BYTES),
            announced_bytes: frame_length(buffer, limits.request_bytes_max)
                .ok()
                .flatten(),
        }),
    }
}

/// Completes the frame begun in `buffer`. Budget is reserved for the bytes
/// received so far plus `READ_AHEAD_BYTES` (never past the announced size)
/// before each read, so what a connection holds follows what it has sent.
async fn read_rest(
    reader: &mut OwnedReadHalf,
    buffer: &mut BytesMut,
    shared: &ConnectionShared,
) -> Result<(Bytes, OwnedSemaphorePermit), ReadError> {
    let max_bytes = shared.limits.request_bytes_max;
    let mut held = shared
        .request_bytes
        .clone()
        .try_acquire_many_owned(0)
        .map_err(|_| ReadError::ListenerClosed)?;
    loop {
        if let Some(length) = frame_length(buffer, max_bytes)? {
            let whole = FRAME_SIZE_PREFIX_BYTES + length;
            let received = buffer.len().min(whole) - FRAME_SIZE_PREFIX_BYTES;
            let wanted = length.min(received + READ_AHEAD_BYTES);
            if held.num_permits() < wanted {
                // Bounded by the frame's length, itself at most a u32.
                let more = (wanted - held.num_permits()) as u32;
                let acquired = shared
                    .request_bytes
                    .clone()
                    .acquire_many_owned(more)
                    .await
                    .map_err(|_| ReadError::ListenerClosed)?;
                held.merge(acquired);
            }
            if buffer.len() >= whole {
                debug_assert_eq!(held.num_permits(), length);
                buffer.advance(FRAME_SIZE_PREFIX_BYTES);
                let frame = buffer.split_to(length).freeze();
                return Ok((frame, held));
            }
            buffer.reserve((whole - buffer.len()).min(READ_AHEAD_BYTES));
        }
        if reader.read_buf(buffer).await? == 0 {
            return Err(ReadError::TruncatedFrame);
        }
    }
}
