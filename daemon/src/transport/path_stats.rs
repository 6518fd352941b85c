//! QUIC path statistics per peer, read from quinn's own connection state
//! (`quinn::Connection::stats`) only when asked (a metrics scrape), so
//! nothing samples in the background and nothing is estimated.
//!
//! A node may hold several connections to one peer (its message link, the
//! peer's link, replication in each direction) and redials after every
//! loss. quinn's counters belong to one connection, so this table keeps,
//! per peer, the sum over every connection it ever tracked: each read adds
//! what a connection's counters grew since the last read, and a connection
//! whose last handle goes adds its final growth. The sums never go back,
//! whatever reconnects.
//!
//! The table holds connections weakly: a tracked connection lives as long
//! as a `Peer` handle to it (quinn closes a connection when its last handle
//! drops, and tracking must not keep one open).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// What a stream carries, for the open-stream counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamKind {
    /// This node's message link to the peer (one stream per connection).
    MessagesOut,
    /// A message stream the peer's link opened to this node.
    MessagesIn,
    /// A partition this node follows, fetched from the peer (its leader).
    ReplicaFetch,
    /// A partition this node leads, fetched by the peer (a follower).
    ReplicaServe,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [
        StreamKind::MessagesOut,
        StreamKind::MessagesIn,
        StreamKind::ReplicaFetch,
        StreamKind::ReplicaServe,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::MessagesOut => "message_out",
            StreamKind::MessagesIn => "message_in",
            StreamKind::ReplicaFetch => "replica_fetch",
            StreamKind::ReplicaServe => "replica_serve",
        }
    }
}

/// quinn's cumulative counters of one connection, or their sum over many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    /// UDP payload bytes sent and received.
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// STREAM frames sent and received.
    pub stream_frames_sent: u64,
    pub stream_frames_received: u64,
}

impl PathCounts {
    fn of(stats: &quinn::ConnectionStats) -> PathCounts {
        PathCounts {
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            congestion_events: stats.path.congestion_events,
            sent_bytes: stats.udp_tx.bytes,
            received_bytes: stats.udp_rx.bytes,
            stream_frames_sent: stats.frame_tx.stream,
            stream_frames_received: stats.frame_rx.stream,
        }
    }

    /// What grew from `before` to `self` (never negative).
    fn since(&self, before: &PathCounts) -> PathCounts {
        PathCounts {
            sent_packets: self.sent_packets.saturating_sub(before.sent_packets),
            lost_packets: self.lost_packets.saturating_sub(before.lost_packets),
            congestion_events: self
                .congestion_events
                .saturating_sub(before.congestion_events),
            sent_bytes: self.sent_bytes.saturating_sub(before.sent_bytes),
            received_bytes: self.received_bytes.saturating_sub(before.received_bytes),
            stream_frames_sent: self
                .stream_frames_sent
                .saturating_sub(before.stream_frames_sent),
            stream_frames_received: self
                .stream_frames_received
                .saturating_sub(before.stream_frames_received),
        }
    }

    fn add(&mut self, more: &PathCounts) {
        self.sent_packets = self.sent_packets.saturating_add(more.sent_packets);
        self.lost_packets = self.lost_packets.saturating_add(more.lost_packets);
        self.congestion_events = self
            .congestion_events
            .saturating_add(more.congestion_events);
        self.sent_bytes = self.sent_bytes.saturating_add(more.sent_bytes);
        self.received_bytes = self.received_bytes.saturating_add(more.received_bytes);
        self.stream_frames_sent = self
            .stream_frames_sent
            .saturating_add(more.stream_frames_sent);
        self.stream_frames_received = self
            .stream_frames_received
            .saturating_add(more.stream_frames_received);
    }
}

/// One peer's figures at the time of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerPath {
    pub peer: i32,
    /// Connections to the peer that are open now.
    pub open_connections: usize,
    /// The largest smoothed RTT among the open connections (they share one
    /// path and differ only by sampling); `None` without an open one.
    pub rtt: Option<Duration>,
    /// Summed over every connection to the peer since this node started.
    pub counts: PathCounts,
    /// Streams open now, by kind (every kind, zeros included).
    pub open_streams: Vec<(StreamKind, u64)>,
}

/// The connections of one endpoint and the sums per peer.
#[derive(Debug, Default)]
pub struct PathTable {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: BTreeMap<u64, Open>,
    totals: BTreeMap<i32, PathCounts>,
    streams: BTreeMap<(i32, StreamKind), u64>,
}

#[derive(Debug)]
struct Open {
    peer: i32,
    tracked: Weak<Tracked>,
    /// The connection's counters at the last read (added to the totals).
    seen: PathCounts,
}

/// A connection in the table; its drop adds the connection's final growth.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    peer: i32,
    connection: quinn::Connection,
    table: Arc<PathTable>,
}

impl Tracked {
    /// Counts a stream of `kind` on this connection as open until the
    /// guard drops.
    pub fn open_stream(&self, kind: StreamKind) -> OpenStream {
        self.table.open_stream(self.peer, kind)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let last = PathCounts::of(&self.connection.stats());
        let mut inner = self.table.lock();
        if let Some(open) = inner.open.remove(&self.id) {
            inner
                .totals
                .entry(open.peer)
                .or_default()
                .add(&last.since(&open.seen));
        }
    }
}

/// Counts one open stream until dropped.
#[derive(Debug)]
pub struct OpenStream {
    table: Arc<PathTable>,
    key: (i32, StreamKind),
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(count) = inner.streams.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
    }
}

impl PathTable {
    /// A poisoned lock still holds consistent sums: every update is one
    /// statement on plain integers.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks `connection` to `peer` while the returned handle lives.
    pub fn track(self: &Arc<Self>, peer: i32, connection: quinn::Connection) -> Arc<Tracked> {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let tracked = Arc::new(Tracked {
            id,
            peer,
            connection,
            table: self.clone(),
        });
        inner.open.insert(
            id,
            Open {
                peer,
                tracked: Arc::downgrade(&tracked),
                seen: PathCounts::default(),
            },
        );
        inner.totals.entry(peer).or_default();
        for kind in StreamKind::ALL {
            inner.streams.entry((peer, kind)).or_default();
        }
        tracked
    }

    fn open_stream(self: &Arc<Self>, peer: i32, kind: StreamKind) -> OpenStream {
        *self.lock().streams.entry((peer, kind)).or_default() += 1;
        OpenStream {
            table: self.clone(),
            key: (peer, kind),
        }
    }

    /// Every peer this endpoint ever had a connection with, read now.
    pub fn snapshot(&self) -> Vec<PeerPath> {
        // Upgraded outside the lock and dropped after it: a handle that
        // turns out to be the last one runs `Tracked::drop`, which locks.
        let handles: Vec<Arc<Tracked>> = self
            .lock()
            .open
            .values()
            .filter_map(|open| open.tracked.upgrade())
            .collect();
        let read: Vec<(u64, quinn::ConnectionStats, bool)> = handles
            .iter()
            .map(|t| {
                let open = t.connection.close_reason().is_none();
                (t.id, t.connection.stats(), open)
            })
            .collect();
        let mut peers: BTreeMap<i32, (usize, Option<Duration>)> = BTreeMap::new();
        let snapshot = {
            let mut inner = self.lock();
            let Inner {
                open,
                totals,
                streams,
                ..
            } = &mut *inner;
            for (id, stats, is_open) in &read {
                let Some(entry) = open.get_mut(id) else {
                    continue;
                };
                let now = PathCounts::of(stats);
                totals
                    .entry(entry.peer)
                    .or_default()
                    .add(&now.since(&entry.seen));
                entry.seen = now;
                if *is_open {
                    let (count, rtt) = peers.entry(entry.peer).or_default();
                    *count += 1;
                    *rtt = Some(rtt.map_or(stats.path.rtt, |r| r.max(stats.path.rtt)));
                }
            }
            totals
                .iter()
                .map(|(peer, counts)| {
                    let (open_connections, rtt) = peers.get(peer).copied().unwrap_or_default();
                    PeerPath {
                        peer: *peer,
                        open_connections,
                        rtt,
                        counts: *counts,
                        open_streams: StreamKind::ALL
                            .iter()
                            .map(|kind| (*kind, streams.get(&(*peer, *kind)).copied().unwrap_or(0)))
                            .collect(),
                    }
                })
                .collect()
        };
        drop(handles);
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_never_negative_and_sums_add_up() {
        let before = PathCounts {
            sent_packets: 10,
            lost_packets: 2,
            ..PathCounts::default()
        };
        let after = PathCounts {
            sent_packets: 15,
            lost_packets: 1,
            ..PathCounts::default()
        };
        let growth = after.since(&before);
        assert_eq!(growth.sent_packets, 5);
        assert_eq!(growth.lost_packets, 0);
        let mut total = before;
        total.add(&growth);
        assert_eq!(total.sent_packets, 15);
    }

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::BTreeSet<_> =
            StreamKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), StreamKind::ALL.len());
    }
}
