//! QUIC between nodes on real loopback sockets (127.0.0.2, 127.0.0.3):
//! who is admitted, what strangers get, and how soon a silent peer is noticed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::certs::{self, CertsRun, NODE_CERT_DAYS_DEFAULT, Renew};
use super::frame::{self, FrameKind, Hello};
use super::quic::{CloseCode, NodeEndpoint, Peer};
use super::tls::TlsMaterial;

const NODES: [i32; 3] = [1, 2, 3];

fn certs(out: &Path, cluster: &str) {
    let run = CertsRun {
        out,
        cluster,
        node_ids: &NODES,
        days: NODE_CERT_DAYS_DEFAULT,
    };
    certs::make(run, Renew::Missing, OffsetDateTime::now_utc()).unwrap();
}

fn endpoint(dir: &Path, cluster: &str, id: i32) -> NodeEndpoint {
    let material = TlsMaterial::load(dir, id).unwrap();
    let address: SocketAddr = format!("127.0.0.{id}:0").parse().unwrap();
    NodeEndpoint::bind(&material, cluster, address, NODES.to_vec()).unwrap()
}

async fn accept_within(endpoint: &NodeEndpoint, limit: Duration) -> Option<Peer> {
    tokio::time::timeout(limit, endpoint.accept())
        .await
        .ok()
        .flatten()
}

/// Nodes 2 and 3 of cluster "test" (certificates in `dir`), node 2
/// connected to node 3: (two, three, two's peer 3, three's peer 2).
async fn two_connected_to_three(dir: &Path) -> (NodeEndpoint, NodeEndpoint, Peer, Peer) {
    certs(dir, "test");
    let (two, three) = (endpoint(dir, "test", 2), endpoint(dir, "test", 3));
    let (dialled, accepted) = tokio::join!(
        two.connect(3, three.local_addr().unwrap()),
        accept_within(&three, Duration::from_secs(5))
    );
    let accepted = accepted.expect("node 3 admits node 2");
    (two, three, dialled.unwrap(), accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_from_their_own_address_and_know_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (two, _three, dialled, accepted) = two_connected_to_three(dir.path()).await;
    assert_eq!(dialled.node_id, 3);
    assert_eq!(accepted.node_id, 2);
    assert_eq!(
        accepted.connection.remote_address(),
        two.local_addr().unwrap(),
        "node 2 dials from its own bound address"
    );
    // A request and its answer on a stream of their own.
    let (mut send, mut recv) = dialled.connection.open_bi().await.unwrap();
    frame::write_frame(&mut send, FrameKind::Message, b"ping")
        .await
        .unwrap();
    send.finish().unwrap();
    let (mut their_send, mut their_recv) = accepted.connection.accept_bi().await.unwrap();
    let (kind, payload) = frame::read_frame(&mut their_recv).await.unwrap().unwrap();
    assert_eq!((kind, &payload[..]), (FrameKind::Message, &b"ping"[..]));
    frame::write_frame(&mut their_send, FrameKind::Message, b"pong")
        .await
        .unwrap();
    their_send.finish().unwrap();
    let (_, answer) = frame::read_frame(&mut recv).await.unwrap().unwrap();
    assert_eq!(&answer[..], b"pong");
    assert_eq!(
        frame::read_frame(&mut recv).await.unwrap(),
        None,
        "clean end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_node_goes_on() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certs(ours.path(), "test");
    certs(theirs.path(), "other");
    let three = endpoint(ours.path(), "test", 3);
    let three_at = three.local_addr().unwrap();

    // A node that trusts our CA but shows another cluster's certificate:
    // node 3 refuses it in the handshake.
    let mixed = super::tests::trusting_ours_with_their_node_two(ours.path(), theirs.path());
    let stranger = endpoint(mixed.path(), "test", 2);
    let (dialled, admitted) = tokio::join!(
        stranger.connect(3, three_at),
        accept_within(&three, Duration::from_millis(1_500))
    );
    assert!(admitted.is_none(), "a foreign certificate is refused");
    if let Ok(peer) = dialled {
        tokio::time::timeout(Duration::from_secs(5), peer.connection.closed())
            .await
            .expect("the stranger's connection is closed");
    }

    // Node 2's certificate, claiming to be node 1: closed for its hello.
    let two = endpoint(ours.path(), "test", 2);
    let liar = Hello {
        cluster: "test".into(),
        node_id: 1,
    };
    let (dialled, admitted) = tokio::join!(
        two.connect_claiming(3, three_at, &liar),
        accept_within(&three, Duration::from_millis(1_500))
    );
    assert!(
        admitted.is_none(),
        "a node claiming another's id is refused"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), dialled.unwrap().connection.closed())
        .await
        .expect("closed by node 3");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(CloseCode::Hello as u32)),
        "{closed}"
    );

    // Garbage datagrams change nothing; a real node still gets in.
    let junk = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    for size in [1, 20, 1200] {
        junk.send_to(&vec![0xab; size], three_at).unwrap();
    }
    let (dialled, admitted) = tokio::join!(
        two.connect(3, three_at),
        accept_within(&three, Duration::from_secs(5))
    );
    dialled.unwrap();
    assert_eq!(admitted.expect("node 2 admitted").node_id, 2);
}

#[test]
fn a_silent_peer_is_noticed_within_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), "test");
    // Node 3 lives on a runtime of its own, so that it can vanish without
    // a word: no close frame, as when its host dies or is cut off.
    let three_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let three = {
        let _inside = three_runtime.enter();
        std::sync::Arc::new(endpoint(dir.path(), "test", 3))
    };
    let three_at = three.local_addr().unwrap();
    let accepting = three.clone();
    three_runtime.spawn(async move {
        while let Some(peer) = accepting.accept().await {
            // Hold the connection; answer nothing.
            std::mem::forget(peer);
        }
    });
    let two_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    two_runtime.block_on(async {
        let two = endpoint(dir.path(), "test", 2);
        let peer = two.connect(3, three_at).await.unwrap();
        // Alive and quiet: keep-alives hold the connection open.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(
            peer.connection.close_reason().is_none(),
            "a quiet live peer stays connected"
        );
        three_runtime.shutdown_background();
        let vanished = Instant::now();
        let reason = tokio::time::timeout(Duration::from_secs(5), peer.connection.closed())
            .await
            .expect("noticed");
        let noticed = vanished.elapsed();
        eprintln!("a silent peer was noticed after {noticed:?}");
        assert!(
            matches!(reason, quinn::ConnectionError::TimedOut),
            "{reason}"
        );
        assert!(
            noticed < Duration::from_millis(2_500),
            "noticed after {noticed:?}"
        );
    });
}

/// A peer that completes its handshake and then says nothing holds up no
/// other peer: node 2 is admitted long before node 1's hello times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_newcomer_holds_up_no_other_peer() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), "test");
    let three = endpoint(dir.path(), "test", 3);
    let three_at = three.local_addr().unwrap();
    let one = endpoint(dir.path(), "test", 1);
    let _silent = one.connect_without_hello(3, three_at).await.unwrap();
    let two = endpoint(dir.path(), "test", 2);
    let started = Instant::now();
    let (dialled, admitted) = tokio::join!(
        two.connect(3, three_at),
        accept_within(&three, Duration::from_secs(5))
    );
    dialled.unwrap();
    let admitted = admitted.expect("node 2 admitted");
    assert_eq!(admitted.node_id, 2);
    assert!(
        started.elapsed() < super::quic::HELLO_TIMEOUT / 2,
        "admitted after {:?}, behind the silent peer",
        started.elapsed()
    );
}

/// Path statistics come from quinn's live connections: an RTT and packet
/// counts per peer, open streams counted by kind, and counters that keep
/// what a closed connection sent when the peer is dialled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_stats_are_per_peer_and_survive_a_reconnect() {
    use super::path_stats::StreamKind;
    let dir = tempfile::tempdir().unwrap();
    let (two, three, dialled, accepted) = two_connected_to_three(dir.path()).await;
    let three_at = three.local_addr().unwrap();
    let stream = dialled.stream_opened(StreamKind::ReplicaFetch);
    let seen = two.path_stats();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let first = &seen[0];
    assert_eq!((first.peer, first.open_connections), (3, 1));
    assert!(
        first.rtt.is_some_and(|rtt| rtt > Duration::ZERO),
        "{first:?}"
    );
    assert!(first.counts.sent_packets > 0 && first.counts.sent_bytes > 0);
    let open = |paths: &[super::path_stats::PeerPath], kind| {
        paths[0]
            .open_streams
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
    };
    assert_eq!(open(&seen, StreamKind::ReplicaFetch), Some(1));
    assert_eq!(three.path_stats()[0].peer, 2);
    drop(stream);
    assert_eq!(open(&two.path_stats(), StreamKind::ReplicaFetch), Some(0));

    // The connection ends; what it sent stays counted.
    dialled.connection.close(0u32.into(), b"done");
    let before = two.path_stats()[0].counts;
    drop((dialled, accepted));
    let gone = two.path_stats();
    assert_eq!(gone[0].open_connections, 0);
    assert_eq!(gone[0].rtt, None);
    assert!(gone[0].counts.sent_packets >= before.sent_packets);
    let (again, _accepted) = tokio::join!(
        two.connect(3, three_at),
        accept_within(&three, Duration::from_secs(5))
    );
    let _again = again.unwrap();
    let after = two.path_stats();
    assert_eq!(after[0].open_connections, 1);
    assert!(
        after[0].counts.sent_packets > gone[0].counts.sent_packets,
        "{gone:?} then {after:?}"
    );
}
