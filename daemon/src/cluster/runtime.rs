//! The moving parts of one node of a cluster, wired together: the QUIC
//! endpoint and a link to every other declared node on the `sluice-quic`
//! runtime (two threads at most, no file I/O, so disk stalls cannot delay a
//! heartbeat), the controller thread on voters, and the broker's
//! registration and heartbeat task. Messages a node addresses to itself
//! never touch the network.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::controller_client::{ControllerClient, IsrChanges};
use super::follower::MetadataFollower;
use super::isr_updates::{IsrUpdates, check_lagging_followers};
use super::lifecycle::{Lifecycle, Membership, Timings};
use super::replica_fetcher::ReplicaFetcher;
use super::replica_server::ReplicaServer;
use crate::broker::{Broker, ProducerIdSource, TopicChanges};
use crate::config::ClusterSpec;
use crate::controller::adoption::Adoption;
use crate::controller::image::MetadataImage;
use crate::controller::log_store::{OsDir, StoreLimits};
use crate::controller::node::ControllerNode;
use crate::controller::quorum::{Quorum, QuorumSpec};
use crate::controller::records::{BrokerId, BrokerRegistration};
use crate::controller::rpc::{ClusterMessage, Outcome, Reply};
use crate::controller::service::{ControllerInbox, ControllerService};
use crate::transport::frame::MESSAGE_BYTES_MAX;
use crate::transport::link::{PeerSender, spawn_inbound, spawn_peer_link};
use crate::transport::quic::NodeEndpoint;
use crate::transport::tls::TlsMaterial;

/// The controller's Raft log, under the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata";
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_LEN: usize = 1024;
/// Messages from all peers waiting to be sorted.
const INBOX_LEN: usize = 4096;
/// Replies waiting for the broker task.
const REPLIES_LEN: usize = 256;

/// What the broker side of this node knows about its membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub membership: Membership,
    /// Until when this broker may act as a member (see lifecycle.rs).
    pub lease_until: Option<Instant>,
    /// The voter that last answered as the active controller.
    pub controller: Option<BrokerId>,
}

/// One running cluster node.
pub struct ClusterMember {
    node_id: BrokerId,
    controller_client: Arc<ControllerClient>,
    /// The router's links, for brokers a reload adds.
    peers: Arc<std::sync::RwLock<BTreeMap<BrokerId, PeerSender>>>,
    /// The spec this node runs: the one it started with or last reloaded.
    running: std::sync::Mutex<ClusterSpec>,
    spec_hash: watch::Sender<String>,
    controller_inbox: Option<ControllerInbox>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Replication's own runtime: its disk work never delays a heartbeat.
    replication_runtime: Option<tokio::runtime::Runtime>,
    fetcher: Arc<ReplicaFetcher>,
    controller: Option<ControllerService>,
    endpoint: Arc<NodeEndpoint>,
    status: watch::Receiver<MemberStatus>,
    image: watch::Receiver<Arc<MetadataImage>>,
    stop: watch::Sender<bool>,
    /// Set by a controlled shutdown: heartbeats ask to be fenced.
    want_fence: watch::Sender<bool>,
}

/// Callers blocked on an answer, by request id (producer-id blocks).
pub(super) type Waiters =
    Arc<std::sync::Mutex<BTreeMap<u64, std::sync::mpsc::SyncSender<Outcome>>>>;

/// Sends what this node says, to a peer or to itself.
#[derive(Clone)]
pub(super) struct Router {
    self_id: BrokerId,
    /// A link to every other declared node; a reload adds brokers.
    peers: Arc<std::sync::RwLock<BTreeMap<BrokerId, PeerSender>>>,
    controller: Option<ControllerInbox>,
    replies: mpsc::Sender<(BrokerId, Reply)>,
    pub(super) waiters: Waiters,
}

impl Router {
    pub(super) fn send(&self, to: BrokerId, message: ClusterMessage) {
        if to == self.self_id {
            return self.deliver(Instant::now(), self.self_id, message);
        }
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let Some(peer) = peers.get(&to) else {
            tracing::warn!(event = "cluster_message_unroutable", to);
            return;
        };
        match message.encode() {
            Ok(bytes) if bytes.len() > MESSAGE_BYTES_MAX as usize => {
                // Only a metadata snapshot can be this big (an image of
                // hundreds of thousands of partitions): not shipped yet.
                tracing::error!(
                    event = "cluster_message_too_large",
                    to,
                    bytes = bytes.len(),
                    max = MESSAGE_BYTES_MAX
                );
            }
            Ok(bytes) => {
                if !peer.send(Bytes::from(bytes)) {
                    tracing::debug!(event = "peer_queue_full", peer = to);
                }
            }
            Err(error) => tracing::error!(event = "cluster_message_unencodable", to, %error),
        }
    }

    /// A message for this node: replies to the broker task, the rest to
    /// the controller (a broker that does not vote has none).
    fn deliver(&self, arrival: Instant, from: BrokerId, message: ClusterMessage) {
        match message {
            ClusterMessage::Reply(reply) => {
                let waiter = self
                    .waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&reply.request_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.try_send(reply.outcome);
                    return;
                }
                if self.replies.try_send((from, reply)).is_err() {
                    tracing::warn!(event = "broker_replies_full", from);
                }
            }
            message => match &self.controller {
                Some(controller) => {
                    controller.deliver(arrival, from, message);
                }
                None => tracing::debug!(event = "controller_message_to_non_voter", from),
            },
        }
    }
}

impl ClusterMember {
    /// Starts node `node_id` of `spec` (which declares more than one broker).
    /// The controller's Raft log lives in `data_dir/__cluster_metadata`.
    /// `adoption` goes with the registration (cluster/adoption.rs).
    pub fn start(
        spec: &ClusterSpec,
        node_id: BrokerId,
        data_dir: &Path,
        adoption: Option<Adoption>,
        served: Arc<Broker>,
    ) -> anyhow::Result<ClusterMember> {
        let broker = spec
            .broker(node_id)
            .with_context(|| format!("broker {node_id} is not in the spec"))?;
        let tls_dir = spec
            .controller
            .tls_dir
            .clone()
            .context("a cluster spec names its TLS directory")?;
        let material = TlsMaterial::load(&tls_dir, node_id).with_context(|| {
            format!(
                "loading node {node_id}'s certificates from {} (make them with `sluiced certs`)",
                tls_dir.display()
            )
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-quic")
            .enable_all()
            .build()
            .context("starting the sluice-quic runtime")?;
        let _inside = runtime.enter();
        let declared = spec.broker_ids();
        let endpoint = Arc::new(
            NodeEndpoint::bind(&material, &spec.cluster.name, broker.quic, declared)
                .with_context(|| format!("binding the QUIC endpoint on {}", broker.quic))?,
        );
        crate::metrics::metrics().set_quic_source(quic_source(&endpoint));
        let peers: BTreeMap<BrokerId, PeerSender> = spec
            .brokers
            .iter()
            .filter(|peer| peer.id != node_id)
            .map(|peer| {
                let link = spawn_peer_link(endpoint.clone(), peer.id, peer.quic, PEER_QUEUE_LEN);
                (peer.id, link)
            })
            .collect();
        let (replies_tx, replies) = mpsc::channel(REPLIES_LEN);
        let voters = spec.controller.voters.clone();
        let mut router = Router {
            self_id: node_id,
            peers: Arc::new(std::sync::RwLock::new(peers)),
            controller: None,
            replies: replies_tx,
            waiters: Arc::default(),
        };
        let timings = Timings::from_spec(
            spec.controller.broker_heartbeat_interval_ms,
            spec.controller.broker_session_timeout_ms,
        );
        let (controller, image, follower) = match voters.contains(&node_id) {
            true => {
                let controller = start_controller(spec, node_id, data_dir, router.clone())?;
                let image = controller.image();
                router.controller = Some(controller.inbox());
                (Some(controller), image, None)
            }
            false => {
                let follower = MetadataFollower::new(
                    timings.heartbeat_interval,
                    timings.request_timeout,
                    Instant::now(),
                );
                let (publish, image) = watch::channel(Arc::new(MetadataImage::default()));
                (None, image, Some((follower, publish)))
            }
        };
        let (stop, stopped) = watch::channel(false);
        let (inbox_tx, inbox) = mpsc::channel(INBOX_LEN);
        let replication_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-repl")
            .enable_all()
            .build()
            .context("starting the sluice-repl runtime")?;
        let (status_tx, status) = watch::channel(MemberStatus {
            membership: Membership::Unregistered,
            lease_until: None,
            controller: None,
        });
        runtime.spawn(sort_inbox(inbox, router.clone()));
        let registration = BrokerRegistration {
            broker_id: node_id,
            incarnation_id: Uuid::new_v4(),
            kafka: broker.advertised_kafka(),
            quic: broker.quic,
            rack: broker.rack.clone(),
        };
        let lifecycle = Lifecycle::new(
            registration,
            spec.source_hash.clone(),
            voters,
            timings,
            Instant::now(),
        )
        .with_adoption(adoption);
        let (spec_hash, hashes) = watch::channel(spec.source_hash.clone());
        let (want_fence, fence_wanted) = watch::channel(false);
        let controller_inbox = router.controller.clone();
        let peers = router.peers.clone();
        let router_for_ids = router.clone();
        runtime.spawn(run_membership(
            lifecycle,
            follower,
            router,
            replies,
            image.clone(),
            status_tx,
            hashes,
            fence_wanted,
            stopped,
        ));
        drop(_inside);
        let controller_client = Arc::new(ControllerClient::new(
            node_id,
            spec.controller.voters.clone(),
            router_for_ids,
            status.clone(),
            image.clone(),
            runtime.handle().clone(),
        ));
        let isr = IsrUpdates::new(
            node_id,
            controller_client.clone(),
            status.clone(),
            replication_runtime.handle().clone(),
        );
        let server = ReplicaServer {
            broker: served.clone(),
            runtime: replication_runtime.handle().clone(),
            isr: isr.clone(),
        };
        runtime.spawn(accept_peers(endpoint.clone(), inbox_tx, server));
        let lag_time_max_ms =
            i64::try_from(spec.replication.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        replication_runtime.spawn(check_lagging_followers(served, isr, lag_time_max_ms));
        let fetcher = Arc::new(ReplicaFetcher::new(
            node_id,
            endpoint.clone(),
            status.clone(),
            replication_runtime.handle().clone(),
        ));
        Ok(ClusterMember {
            node_id,
            controller_client,
            peers,
            running: std::sync::Mutex::new(spec.clone()),
            spec_hash,
            controller_inbox,
            runtime: Some(runtime),
            replication_runtime: Some(replication_runtime),
            fetcher,
            controller,
            endpoint,
            status,
            image,
            stop,
            want_fence,
        })
    }

    /// Controlled shutdown: waits (at most `wait_max`, logged) while
    /// leaving would take a replicated partition below its
    /// `min.insync.replicas`, then asks to be fenced and waits (at most
    /// `wait_max` again) until the image shows this broker leading
    /// nothing. Returns whether it handed over in time.
    pub async fn shut_down_controlled(
        &self,
        broker: &Broker,
        wait_max: std::time::Duration,
    ) -> bool {
        use super::controlled_shutdown::{handed_over, held_at_min_isr};
        let mut image = self.image.clone();
        let min_insync = |topic: &str| {
            broker.topic(topic).map_or(1, |t| {
                usize::try_from(t.config.min_insync_replicas).unwrap_or(1)
            })
        };
        let started = tokio::time::Instant::now();
        let deadline = started + wait_max;
        loop {
            let held = held_at_min_isr(&image.borrow_and_update(), self.node_id, min_insync);
            if held.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(event = "controlled_shutdown_gave_up_waiting", partitions = ?held, "leaving takes these below min.insync.replicas");
                break;
            }
            tracing::info!(event = "controlled_shutdown_waiting", partitions = ?held, "leaving now would take these below min.insync.replicas");
            let _ = tokio::time::timeout_at(deadline, image.changed()).await;
        }
        self.want_fence.send_replace(true);
        let deadline = tokio::time::Instant::now() + wait_max;
        let moved = tokio::time::timeout_at(
            deadline,
            image.wait_for(|image| handed_over(image, self.node_id)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        let millis = started.elapsed().as_millis() as u64;
        match moved {
            true => tracing::info!(event = "controlled_shutdown_done", millis),
            false => tracing::warn!(event = "controlled_shutdown_timed_out", millis),
        }
        moved
    }

    pub fn status(&self) -> watch::Receiver<MemberStatus> {
        self.status.clone()
    }

    /// The applied metadata image.
    pub fn image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// What `GET /status` renders.
    pub fn status_source(&self) -> super::status::StatusSource {
        super::status::StatusSource {
            node_id: self.node_id,
            spec_hash: self.spec_hash.subscribe(),
            member: self.status.clone(),
            image: self.image.clone(),
            controller: self
                .controller
                .as_ref()
                .map(ControllerService::status_reader),
        }
    }

    /// Producer-id blocks from the active controller, for the broker.
    pub fn producer_id_source(&self) -> Arc<dyn ProducerIdSource> {
        self.controller_client.clone()
    }

    /// Topic changes from the Kafka API go to the active controller.
    pub fn topic_changes(&self) -> Arc<dyn TopicChanges> {
        self.controller_client.clone()
    }

    /// ISR changes of the partitions this broker leads go to the active
    /// controller.
    /// Follows, for each applied image, the partitions it places here under
    /// another leader.
    pub fn replica_fetcher(&self) -> Arc<ReplicaFetcher> {
        self.fetcher.clone()
    }

    pub fn isr_changes(&self) -> Arc<dyn IsrChanges> {
        self.controller_client.clone()
    }

    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }

    /// The spec this node runs.
    pub fn spec(&self) -> ClusterSpec {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a reloaded spec (already validated): this node reports its
    /// hash from now on, and on a voter the controller plans it, to apply
    /// once a majority of voters hold the same file. The voters and the
    /// addresses bound at start stay as they are (the caller logs what
    /// needs a restart); changed voters are refused.
    pub fn reload(&self, new: ClusterSpec) -> anyhow::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        anyhow::ensure!(
            new.controller.voters == running.controller.voters,
            "controller.voters changed from {:?} to {:?}: the quorum is static; \
             put the old list back",
            running.controller.voters,
            new.controller.voters
        );
        let desired = super::spec_plan::desired_spec(&new, Some(&running))?;
        if let Some(inbox) = &self.controller_inbox {
            anyhow::ensure!(inbox.set_desired(desired), "the controller has stopped");
        }
        self.link_new_brokers(&running, &new);
        self.spec_hash.send_replace(new.source_hash.clone());
        *running = new;
        Ok(())
    }

    /// Brokers the reloaded spec adds: accepted by the endpoint and linked
    /// to, so they can register without any node restarting. (A broker
    /// removed or readdressed still needs restarts: diff_specs says so.)
    fn link_new_brokers(&self, running: &ClusterSpec, new: &ClusterSpec) {
        let added: Vec<_> = new
            .brokers
            .iter()
            .filter(|b| running.broker(b.id).is_none() && b.id != self.node_id)
            .collect();
        let Some(runtime) = self.runtime.as_ref().filter(|_| !added.is_empty()) else {
            return;
        };
        let mut declared = running.broker_ids();
        declared.extend(added.iter().map(|b| b.id));
        self.endpoint.set_declared(declared);
        let _inside = runtime.enter();
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        for broker in added {
            let link = spawn_peer_link(
                self.endpoint.clone(),
                broker.id,
                broker.quic,
                PEER_QUEUE_LEN,
            );
            peers.insert(broker.id, link);
            tracing::info!(event = "broker_linked", broker = broker.id, quic = %broker.quic);
        }
    }

    /// Stops heartbeating, the controller and the endpoint.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        self.fetcher.stop();
        if let Some(runtime) = self.replication_runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        if let Some(controller) = self.controller.take() {
            controller.stop();
        }
        self.endpoint.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for ClusterMember {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The scrape-time reader of `endpoint`'s path statistics. Holds it weakly:
/// a stopped member's endpoint reads as nothing.
fn quic_source(endpoint: &Arc<NodeEndpoint>) -> crate::metrics::QuicSource {
    let endpoint = Arc::downgrade(endpoint);
    Arc::new(move || {
        let Some(endpoint) = endpoint.upgrade() else {
            return Vec::new();
        };
        endpoint
            .path_stats()
            .into_iter()
            .map(|path| crate::metrics::QuicPeerFigures {
                peer: path.peer,
                open_connections: path.open_connections as u64,
                rtt_seconds: path.rtt.map(|rtt| rtt.as_secs_f64()),
                counts: path.counts,
                open_streams: path
                    .open_streams
                    .iter()
                    .map(|(kind, open)| (kind.name(), *open))
                    .collect(),
            })
            .collect()
    })
}

fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

fn start_controller(
    spec: &ClusterSpec,
    node_id: BrokerId,
    data_dir: &Path,
    router: Router,
) -> anyhow::Result<ControllerService> {
    let quorum_spec = QuorumSpec {
        self_id: node_id,
        voters: spec.controller.voters.clone(),
        election_seed: None,
    };
    let path = data_dir.join(METADATA_DIR);
    let dir = OsDir::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let store = Quorum::open_store(&quorum_spec, Arc::new(dir), StoreLimits::default())
        .with_context(|| format!("opening the metadata log in {}", path.display()))?;
    let image = store
        .image()
        .with_context(|| format!("reading the metadata snapshot in {}", path.display()))?;
    let quorum = Quorum::new(&quorum_spec, store, Instant::now())?;
    let desired = super::spec_plan::desired_spec(spec, None)?;
    let node = ControllerNode::new(
        node_id,
        spec.controller.voters.clone(),
        quorum,
        image,
        millis(spec.controller.broker_session_timeout_ms),
        desired,
    );
    let outbound = Box::new(move |to, message| router.send(to, message));
    Ok(ControllerService::spawn(node, outbound)?)
}

/// Admits peers: their one-way streams carry cluster messages into one
/// inbox, their two-way streams replication fetches.
async fn accept_peers(
    endpoint: Arc<NodeEndpoint>,
    inbox: mpsc::Sender<(i32, Bytes)>,
    replicas: ReplicaServer,
) {
    while let Some(peer) = endpoint.accept().await {
        replicas.serve_peer(peer.clone());
        spawn_inbound(peer, inbox.clone());
    }
}

/// Decodes every message from a peer, stamps its arrival, and routes it.
async fn sort_inbox(mut inbox: mpsc::Receiver<(i32, Bytes)>, router: Router) {
    while let Some((from, bytes)) = inbox.recv().await {
        let arrival = Instant::now();
        match ClusterMessage::decode(&bytes) {
            Ok(message) => router.deliver(arrival, from, message),
            Err(error) => tracing::warn!(event = "cluster_message_refused", from, %error),
        }
    }
}

/// Registers and heartbeats until told to stop; on a broker that does not
/// vote, also follows the metadata log.
#[allow(clippy::too_many_arguments)]
async fn run_membership(
    mut lifecycle: Lifecycle,
    mut follower: Option<(MetadataFollower, watch::Sender<Arc<MetadataImage>>)>,
    router: Router,
    mut replies: mpsc::Receiver<(BrokerId, Reply)>,
    mut image: watch::Receiver<Arc<MetadataImage>>,
    status: watch::Sender<MemberStatus>,
    mut hashes: watch::Receiver<String>,
    mut fence_wanted: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let metrics = crate::metrics::metrics();
    loop {
        let now = Instant::now();
        let hash = hashes.borrow_and_update().clone();
        if hash != lifecycle.spec_hash() {
            lifecycle.set_spec_hash(hash);
        }
        lifecycle.set_want_fence(*fence_wanted.borrow_and_update(), now);
        let (applied, drift) = {
            let image = image.borrow_and_update();
            let drift = image
                .applied_spec()
                .is_some_and(|spec| spec.hash != lifecycle.spec_hash());
            (image.applied_index(), drift)
        };
        metrics.cluster().spec_drift.set(i64::from(drift));
        while let Some((to, message)) = lifecycle.poll_transmit(now, applied) {
            router.send(to, message);
        }
        if let Some((follower, _)) = follower.as_mut() {
            let voter = lifecycle.target_voter();
            if let Some((to, message)) =
                follower.poll_transmit(now, lifecycle.metadata_commit(), voter)
            {
                router.send(to, message);
            }
        }
        let current = MemberStatus {
            membership: lifecycle.membership(),
            lease_until: lifecycle.lease_until(),
            controller: lifecycle.controller(),
        };
        status.send_if_modified(|old| std::mem::replace(old, current) != current);
        let epoch = match current.membership {
            Membership::Unregistered => -1,
            Membership::Registered { broker_epoch, .. } => broker_epoch,
        };
        metrics.cluster().membership.broker_epoch.set(epoch);
        metrics
            .cluster()
            .membership
            .fenced
            .set(i64::from(!lifecycle.lease_valid(now)));
        let mut wake = lifecycle.poll_timeout();
        if let Some((follower, _)) = &follower {
            wake = wake.min(follower.poll_timeout());
        }
        let wake = tokio::time::Instant::from_std(wake);
        tokio::select! {
            reply = replies.recv() => match reply {
                Some((_, reply)) if follower.as_ref().is_some_and(|(f, _)| f.owns(&reply)) => {
                    let Some((follower, publish)) = follower.as_mut() else { continue };
                    match follower.handle_reply(Instant::now(), reply) {
                        Ok(true) => {
                            publish.send_replace(Arc::new(follower.image().clone()));
                        }
                        Ok(false) => {}
                        Err(error) => crate::failstop::invariant_failure("following the metadata log", &error),
                    }
                }
                Some((from, reply)) => lifecycle.handle_reply(Instant::now(), from, reply),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
            // A closed channel disables its branch rather than spinning.
            Ok(()) = hashes.changed() => {}
            Ok(()) = fence_wanted.changed() => {}
            Ok(()) = image.changed() => {}
            _ = stopped.changed() => return,
        }
    }
}
