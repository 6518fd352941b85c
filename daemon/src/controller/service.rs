//! The controller's thread: it owns the `ControllerNode`, drains its whole
//! inbox before it looks at the clock (so a late wake-up never fences a
//! broker whose heartbeat is already queued), steps the node, and hands
//! what it says to the transport. Persisting (the Raft log's fsyncs)
//! happens on this thread, never on the runtime that carries heartbeats.
//!
//! A failed step is fatal: a write or fsync of the metadata log failed, or
//! a committed entry does not apply. The process stops (fail-stop) and
//! systemd restarts it from what is on disk.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::watch;

use super::image::MetadataImage;
use super::node::{ControllerNode, NodeError};
use super::plan::DesiredSpec;
use super::quorum::{QuorumError, Role};
use super::reassign::reassigning_count;
use super::records::BrokerId;
use super::rpc::ClusterMessage;
use crate::metrics::ControllerFigures;

/// Messages waiting for the controller thread; more are dropped (Raft and
/// brokers retry).
pub const INBOX_LEN: usize = 4096;
/// Messages handled per loop before the clock is looked at again.
const DRAIN_MAX: usize = INBOX_LEN;

/// Where the controller's messages go: the transport, or this process's
/// own broker side for replies addressed to itself.
pub type Outbound = Box<dyn FnMut(BrokerId, ClusterMessage) + Send>;

/// What the rest of the process may read about the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerStatus {
    pub active: bool,
    pub role: Role,
    pub term: u64,
    pub leader: Option<BrokerId>,
    pub applied_index: u64,
}

/// Reads the controller's status as of its last step.
#[derive(Clone)]
pub struct StatusReader(Arc<Mutex<ControllerStatus>>);

impl StatusReader {
    pub fn read(&self) -> ControllerStatus {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Event {
    Message {
        arrival: Instant,
        from: BrokerId,
        message: Box<ClusterMessage>,
    },
    /// A reloaded spec.
    Desired(Box<DesiredSpec>),
    Stop,
}

/// The controller thread, seen from outside.
pub struct ControllerService {
    inbox: SyncSender<Event>,
    image: watch::Receiver<Arc<MetadataImage>>,
    status: Arc<Mutex<ControllerStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// Hands messages to the controller thread; cheap to clone.
#[derive(Clone)]
pub struct ControllerInbox(SyncSender<Event>);

impl ControllerInbox {
    /// Hands the controller a reloaded spec; false if it stopped. Waits
    /// while the inbox is full: a reload must not be lost.
    pub fn set_desired(&self, desired: DesiredSpec) -> bool {
        self.0.send(Event::Desired(Box::new(desired))).is_ok()
    }

    /// Queues a message that arrived at `arrival`; false (dropped) if the
    /// inbox is full or the controller stopped.
    pub fn deliver(&self, arrival: Instant, from: BrokerId, message: ClusterMessage) -> bool {
        match self.0.try_send(Event::Message {
            arrival,
            from,
            message: Box::new(message),
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(event = "controller_inbox_full", from);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl ControllerService {
    /// Starts the thread. `outbound` is called on it for every message.
    pub fn spawn(node: ControllerNode, outbound: Outbound) -> std::io::Result<Self> {
        let (inbox, events) = mpsc::sync_channel(INBOX_LEN);
        let (image_tx, image) = watch::channel(Arc::new(node.image().clone()));
        let status = Arc::new(Mutex::new(status_of(&node)));
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || run(node, events, outbound, image_tx, shared))?;
        Ok(ControllerService {
            inbox,
            image,
            status,
            thread: Some(thread),
        })
    }

    pub fn inbox(&self) -> ControllerInbox {
        ControllerInbox(self.inbox.clone())
    }

    /// The applied image, replaced whenever an entry changes it.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// A cheap handle that reads the status after this service is gone too.
    pub fn status_reader(&self) -> StatusReader {
        StatusReader(self.status.clone())
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        // A full inbox still lets the thread see the sender gone after Stop.
        let _ = self.inbox.try_send(Event::Stop);
        if let Some(thread) = self.thread.take() {
            let (replacement, _) = mpsc::sync_channel(1);
            drop(std::mem::replace(&mut self.inbox, replacement));
            let _ = thread.join();
        }
    }
}

impl Drop for ControllerService {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn status_of(node: &ControllerNode) -> ControllerStatus {
    ControllerStatus {
        active: node.is_active(),
        role: node.role(),
        term: node.term(),
        leader: node.leader(),
        applied_index: node.image().applied_index(),
    }
}

fn run(
    mut node: ControllerNode,
    events: Receiver<Event>,
    mut outbound: Outbound,
    image: watch::Sender<Arc<MetadataImage>>,
    status: Arc<Mutex<ControllerStatus>>,
) {
    let metrics = crate::metrics::metrics();
    // Unclean elections already added to the counter.
    let mut unclean_counted = 0;
    loop {
        let wait = node
            .poll_timeout()
            .saturating_duration_since(Instant::now());
        let first = match events.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut handled = 0;
        let mut next = first;
        while let Some(event) = next {
            match event {
                Event::Message {
                    arrival,
                    from,
                    message,
                } => node.handle_message(arrival, from, *message),
                Event::Desired(desired) => node.set_desired(*desired),
                Event::Stop => return,
            }
            handled += 1;
            next = match handled < DRAIN_MAX {
                true => events.try_recv().ok(),
                false => None,
            };
        }
        let now = Instant::now();
        node.handle_timeout(now);
        let changed = match node.step(now) {
            Ok(changed) => changed,
            Err(NodeError::Quorum(error @ QuorumError::Store(_))) => {
                crate::failstop::storage_failure("the controller's metadata log", &error)
            }
            Err(error) => {
                crate::failstop::invariant_failure("the controller's metadata log", &error)
            }
        };
        while let Some((to, message)) = node.poll_transmit() {
            outbound(to, message);
        }
        if changed {
            image.send_replace(Arc::new(node.image().clone()));
        }
        let now_status = status_of(&node);
        let (unfenced, fenced) =
            node.image()
                .brokers()
                .fold((0, 0), |(u, f), entry| match entry.fenced {
                    true => (u, f + 1),
                    false => (u + 1, f),
                });
        metrics.cluster().controller.set(ControllerFigures {
            active: now_status.active,
            term: now_status.term,
            leader: now_status.leader,
            applied_index: now_status.applied_index,
            brokers_unfenced: unfenced,
            brokers_fenced: fenced,
            reassigning_partitions: i64::try_from(reassigning_count(node.image()))
                .unwrap_or(i64::MAX),
        });
        let unclean = node.unclean_elections();
        metrics
            .cluster()
            .controller
            .unclean_elections
            .inc_by(unclean.saturating_sub(unclean_counted));
        unclean_counted = unclean;
        *status.lock().unwrap_or_else(|e| e.into_inner()) = now_status;
    }
}
