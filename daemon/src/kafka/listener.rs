//! Accepts Kafka connections on every core, bounded by a connection limit,
//! and stops on the shutdown signal: no new connections, in-flight requests
//! answered, then return.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{self, ConnectionShared};
use crate::broker::Broker;

/// How long shutdown waits for connections to finish what they started.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Once a request's first byte has arrived, the rest must arrive within
/// this: Kafka clients' default `request.timeout.ms`, after which the client
/// has given up on the request anyway. Bounds how long a client that
/// trickles a large request can hold a connection and its share of
/// `queued_request_bytes_max`.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// socket.request.max.bytes: the largest frame a client may send.
    pub request_bytes_max: u32,
    /// queued.max.request.bytes: request bytes buffered across all
    /// connections, reserved as they arrive and held until dispatched.
    pub queued_request_bytes_max: u32,
    pub connections_max: usize,
    /// max.connections.per.ip: connections beyond it are closed at once.
    pub connections_per_ip_max: Option<usize>,
    /// Requests read ahead of their replies on one connection.
    pub in_flight_requests_max: usize,
    /// connections.max.idle.ms: a connection that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// A request begun must arrive whole within this (`REQUEST_READ_TIMEOUT`).
    pub request_read_timeout: Duration,
    /// Broker-side fetch.max.bytes: the most record bytes in one Fetch response.
    pub fetch_response_bytes_max: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            request_bytes_max: 100 * 1024 * 1024,
            queued_request_bytes_max: 512 * 1024 * 1024,
            connections_max: 10_000,
            connections_per_ip_max: None,
            in_flight_requests_max: 100,
            idle_timeout: Duration::from_secs(600),
            request_read_timeout: REQUEST_READ_TIMEOUT,
            fetch_response_bytes_max: 55 * 1024 * 1024,
        }
    }
}

/// Serves `listener` until `shutdown` becomes true, then drains.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    groups: Option<Arc<crate::group::GroupCoordinator>>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    assert!(limits.queued_request_bytes_max >= limits.request_bytes_max);
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let shared = Arc::new(ConnectionShared {
        broker,
        groups,
        limits,
        request_bytes: Arc::new(Semaphore::new(limits.queued_request_bytes_max as usize)),
    });
    let per_ip = PerIpCounts::new(limits.connections_per_ip_max);
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(ip_slot) = per_ip.admit(peer.ip()) else {
                    tracing::info!(event = "connection_refused", peer = %peer, reason = "max_connections_per_ip");
                    continue;
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    connection::run(stream, peer, shared, shutdown).await;
                    drop(ip_slot);
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(event = "accept_failed", error = %e);
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    drain(tasks).await;
}

/// Open connections per client address, for `max.connections.per.ip`.
#[derive(Clone)]
struct PerIpCounts {
    max: Option<usize>,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection's place in its address's count until dropped.
struct IpSlot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIpCounts {
    fn new(max: Option<usize>) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.counts.lock().expect("per-ip counts poisoned");
        let count = counts.entry(ip).or_default();
        if self.max.is_some_and(|max| *count >= max) {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("per-ip counts poisoned");
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn drain(mut tasks: JoinSet<()>) {
    let open = tasks.len();
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            event = "shutdown_drain_timeout",
            connections_open = tasks.len(),
            connections_at_stop = open
        );
        tasks.abort_all();
    }
}
