//! One QUIC endpoint per node, bound to exactly the address the spec gives
//! it (never a wildcard), dialling from that same address. A connection is
//! accepted only from a node of this cluster: its certificate must come from
//! a trusted CA and name a declared node, and the Hello it sends first must
//! claim that same node and this cluster. Anything else is closed with a
//! code that says why and logged once.
//!
//! quinn spawns its endpoint and connection drivers on the tokio runtime
//! current when `bind` and `connect` run: the caller runs them on a runtime
//! that never does file I/O, so that a stalled disk cannot delay a heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::frame::{self, FrameError, FrameKind, Hello};
use super::identity::{IdentityError, node_dns_name, peer_node_id};
use super::path_stats::{OpenStream, PathTable, PeerPath, StreamKind, Tracked};
use super::tls::{TlsError, TlsMaterial, client_config, server_config};

/// No packet from a peer for this long closes the connection: a dead or
/// cut-off node is noticed within about a second.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Keep-alives keep a quiet but live connection open (five per idle timeout).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long an accepted connection has to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection has from its first packet to being admitted
/// (handshake and Hello).
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Incoming connections being handshaken at once.
const INCOMING_MAX: u32 = 64;
/// Streams a peer may open at once, each way.
const STREAMS_MAX: u32 = 64;

/// Why a connection was closed by the accepting node (the QUIC close code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// The certificate names no declared node.
    Identity = 1,
    /// No Hello, a bad one, or one claiming another node or cluster.
    Hello = 2,
    /// The node is shutting down.
    Shutdown = 3,
    /// A frame of the wrong kind or beyond its limit.
    BadFrame = 4,
}

impl CloseCode {
    pub(crate) fn var_int(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC configuration: {0}")]
    Config(String),
    #[error("binding the QUIC endpoint on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to node {node_id} at {address}: {reason}")]
    Connect {
        node_id: i32,
        address: SocketAddr,
        reason: String,
    },
    #[error("from {remote}: {reason}")]
    Refused { remote: SocketAddr, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A connection to another node of the cluster, whoever dialled. Its path
/// statistics are tracked while a `Peer` (or a clone) lives: hold one, not
/// only the bare `connection`, for as long as the connection is used.
#[derive(Clone, Debug)]
pub struct Peer {
    pub node_id: i32,
    pub connection: quinn::Connection,
    path: Arc<Tracked>,
}

impl Peer {
    fn new(node_id: i32, connection: quinn::Connection, paths: &Arc<PathTable>) -> Peer {
        Peer {
            node_id,
            path: paths.track(node_id, connection.clone()),
            connection,
        }
    }

    /// Counts a stream of `kind` on this connection as open until the
    /// guard drops (`sluice_quic_open_streams`).
    pub fn stream_opened(&self, kind: StreamKind) -> OpenStream {
        self.path.open_stream(kind)
    }
}

/// This node's endpoint.
#[derive(Debug)]
pub struct NodeEndpoint {
    endpoint: quinn::Endpoint,
    hello: Hello,
    client: quinn::ClientConfig,
    /// The node ids admission accepts (shared with it).
    declared: Arc<std::sync::RwLock<Vec<i32>>>,
    /// Connections admitted by the admission tasks (see `admit_all`).
    admitted: tokio::sync::Mutex<mpsc::Receiver<Peer>>,
    closed: AtomicBool,
    /// Every connection this endpoint dialled or admitted, for path stats.
    paths: Arc<PathTable>,
}

/// What admission checks a connection against.
#[derive(Clone, Debug)]
struct Admission {
    hello: Hello,
    /// The spec's node ids; a reload that adds brokers extends them.
    declared: Arc<std::sync::RwLock<Vec<i32>>>,
    paths: Arc<PathTable>,
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("a second fits a VarInt"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .initial_rtt(Duration::from_millis(50))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(STREAMS_MAX))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(STREAMS_MAX))
        .datagram_receive_buffer_size(None);
    Arc::new(config)
}

impl NodeEndpoint {
    /// Binds `address` on the current tokio runtime. `declared`: the node
    /// ids of the spec, the only peers accepted.
    pub fn bind(
        material: &TlsMaterial,
        cluster: &str,
        address: SocketAddr,
        declared: Vec<i32>,
    ) -> Result<NodeEndpoint, TransportError> {
        let config_error = |e: &dyn std::fmt::Display| TransportError::Config(e.to_string());
        let crypto =
            QuicServerConfig::try_from(server_config(material)?).map_err(|e| config_error(&e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server
            .transport_config(transport_config())
            .migration(false)
            .max_incoming(INCOMING_MAX as usize);
        let crypto =
            QuicClientConfig::try_from(client_config(material)?).map_err(|e| config_error(&e))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        let endpoint = quinn::Endpoint::server(server, address)
            .map_err(|source| TransportError::Bind { address, source })?;
        let hello = Hello {
            cluster: cluster.to_string(),
            node_id: material.node_id,
        };
        let (admitted_tx, admitted) = mpsc::channel(INCOMING_MAX as usize);
        let declared = Arc::new(std::sync::RwLock::new(declared));
        let paths = Arc::new(PathTable::default());
        let admission = Admission {
            hello: hello.clone(),
            declared: declared.clone(),
            paths: paths.clone(),
        };
        tokio::spawn(admit_all(endpoint.clone(), admission, admitted_tx));
        Ok(NodeEndpoint {
            endpoint,
            declared,
            hello,
            client,
            admitted: tokio::sync::Mutex::new(admitted),
            closed: AtomicBool::new(false),
            paths,
        })
    }

    /// Accepts the nodes `declared` from now on (a reload added brokers).
    pub fn set_declared(&self, declared: Vec<i32>) {
        *self.declared.write().unwrap_or_else(|e| e.into_inner()) = declared;
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Dials node `node_id` at `address` and says hello.
    pub async fn connect(&self, node_id: i32, address: SocketAddr) -> Result<Peer, TransportError> {
        self.connect_claiming(node_id, address, &self.hello).await
    }

    /// A connection that never says hello (tests: a peer stuck after its
    /// handshake must not hold up the admission of others).
    #[cfg(test)]
    pub(crate) async fn connect_without_hello(
        &self,
        node_id: i32,
        address: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        let failed = |reason: String| TransportError::Connect {
            node_id,
            address,
            reason,
        };
        self.endpoint
            .connect_with(self.client.clone(), address, &node_dns_name(node_id))
            .map_err(|e| failed(e.to_string()))?
            .await
            .map_err(|e| failed(e.to_string()))
    }

    /// `connect` with a chosen Hello (tests: a node claiming to be another).
    pub(crate) async fn connect_claiming(
        &self,
        node_id: i32,
        address: SocketAddr,
        hello: &Hello,
    ) -> Result<Peer, TransportError> {
        let failed = |reason: String| TransportError::Connect {
            node_id,
            address,
            reason,
        };
        let connection = self
            .endpoint
            .connect_with(self.client.clone(), address, &node_dns_name(node_id))
            .map_err(|e| failed(e.to_string()))?
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut stream = connection
            .open_uni()
            .await
            .map_err(|e| failed(e.to_string()))?;
        frame::write_frame(&mut stream, FrameKind::Hello, &hello.encode()).await?;
        stream.finish().map_err(|e| failed(e.to_string()))?;
        Ok(Peer::new(node_id, connection, &self.paths))
    }

    /// The next connection from a node of this cluster; strangers are
    /// refused, logged and skipped. `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Peer> {
        self.admitted.lock().await.recv().await
    }

    /// Path statistics of every peer this endpoint has had a connection
    /// with, read from quinn now (counters summed over reconnects).
    pub fn path_stats(&self) -> Vec<PeerPath> {
        self.paths.snapshot()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.endpoint
            .close(CloseCode::Shutdown.var_int(), b"shutting down");
    }
}

/// The declared node a connection's verified client certificate names.
fn certificate_identity(
    connection: &quinn::Connection,
    declared: &[i32],
) -> Result<i32, IdentityError> {
    let chain = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoCertificate)?;
    peer_node_id(&chain, declared)
}

/// Admits connections, each on a task of its own (at most `INCOMING_MAX`
/// at once, each bounded in time), so a stranger that never finishes its
/// handshake holds up no real peer.
async fn admit_all(endpoint: quinn::Endpoint, admission: Admission, admitted: mpsc::Sender<Peer>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(INCOMING_MAX as usize));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (admission, admitted) = (admission.clone(), admitted.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let outcome = tokio::time::timeout(ADMISSION_TIMEOUT, admit(incoming, &admission))
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Refused {
                        remote,
                        reason: "not admitted within the time allowed".into(),
                    })
                });
            match outcome {
                Ok(peer) => {
                    let _ = admitted.send(peer).await;
                }
                Err(error) => tracing::warn!(event = "peer_refused", remote = %remote, %error),
            }
            drop(slot);
        });
    }
}

/// Handshake, certificate identity, then the Hello.
async fn admit(incoming: quinn::Incoming, admission: &Admission) -> Result<Peer, TransportError> {
    let remote = incoming.remote_address();
    let refused = |reason: String| TransportError::Refused { remote, reason };
    let connection = incoming
        .await
        .map_err(|e| refused(format!("TLS handshake: {e}")))?;
    let declared = admission
        .declared
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let node_id = match certificate_identity(&connection, &declared) {
        Ok(id) => id,
        Err(error) => {
            connection.close(CloseCode::Identity.var_int(), b"not a node of this cluster");
            return Err(refused(error.to_string()));
        }
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        let mut stream = connection
            .accept_uni()
            .await
            .map_err(|e| FrameError::Read(e.to_string()))?;
        match frame::read_frame(&mut stream).await? {
            Some((FrameKind::Hello, payload)) => Hello::decode(&payload),
            _ => Err(FrameError::BadHello("the first frame is not a Hello")),
        }
    })
    .await
    .unwrap_or(Err(FrameError::BadHello("none within the time allowed")));
    let problem = match &hello {
        Err(error) => Some(error.to_string()),
        Ok(hello) if hello.node_id != node_id => Some(format!(
            "certificate of node {node_id}, hello claims node {}",
            hello.node_id
        )),
        Ok(hello) if hello.cluster != admission.hello.cluster => Some(format!(
            "hello from cluster {:?}, this is {:?}",
            hello.cluster, admission.hello.cluster
        )),
        Ok(_) => None,
    };
    if let Some(reason) = problem {
        connection.close(CloseCode::Hello.var_int(), b"bad hello");
        return Err(refused(reason));
    }
    Ok(Peer::new(node_id, connection, &admission.paths))
}
