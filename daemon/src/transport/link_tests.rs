//! Messages between nodes on loopback: in order and tagged with the
//! sender's verified id, across a restart of the receiving node, and never
//! more queued than the bound while a peer is away.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::certs::{self, CertsRun, NODE_CERT_DAYS_DEFAULT, Renew};
use super::link::{Inbound, spawn_inbound, spawn_peer_link};
use super::quic::NodeEndpoint;
use super::tls::TlsMaterial;

const NODES: [i32; 3] = [1, 2, 3];

fn endpoint(dir: &Path, id: i32, address: SocketAddr) -> Arc<NodeEndpoint> {
    let material = TlsMaterial::load(dir, id).unwrap();
    Arc::new(NodeEndpoint::bind(&material, "test", address, NODES.to_vec()).unwrap())
}

/// A receiving node on a runtime of its own (so it can die without a word):
/// every admitted peer's messages go to the returned inbox.
fn receiver(
    dir: &Path,
    address: SocketAddr,
) -> (tokio::runtime::Runtime, SocketAddr, mpsc::Receiver<Inbound>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (inbox, received) = mpsc::channel(1024);
    let three = {
        let _inside = runtime.enter();
        endpoint(dir, 3, address)
    };
    let bound = three.local_addr().unwrap();
    runtime.spawn(async move {
        while let Some(peer) = three.accept().await {
            spawn_inbound(peer, inbox.clone());
        }
    });
    (runtime, bound, received)
}

async fn receive(inbox: &mut mpsc::Receiver<Inbound>, count: usize) -> Vec<Inbound> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
            Ok(Some(message)) => got.push(message),
            _ => panic!("only {} of {count} messages arrived", got.len()),
        }
    }
    got
}

#[test]
fn messages_arrive_in_order_and_again_after_the_peer_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let run = CertsRun {
        out: dir.path(),
        cluster: "test",
        node_ids: &NODES,
        days: NODE_CERT_DAYS_DEFAULT,
    };
    certs::make(run, Renew::Missing, OffsetDateTime::now_utc()).unwrap();
    let (three, three_at, mut inbox) = receiver(dir.path(), "127.0.0.3:0".parse().unwrap());
    let sender_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let two = {
        let _inside = sender_runtime.enter();
        endpoint(dir.path(), 2, "127.0.0.2:0".parse().unwrap())
    };
    let to_three = sender_runtime.block_on(async {
        let to_three = spawn_peer_link(two.clone(), 3, three_at, 64);
        for i in 0..50u32 {
            // Never more than the queue holds at once.
            if !to_three.send(Bytes::from(i.to_be_bytes().to_vec())) {
                panic!("queue full at {i}");
            }
            if i % 32 == 31 {
                receive(&mut inbox, 32).await;
            }
        }
        let rest = receive(&mut inbox, 18).await;
        let numbers: Vec<u32> = rest
            .iter()
            .map(|(from, payload)| {
                assert_eq!(*from, 2, "tagged with the sender's verified id");
                u32::from_be_bytes(payload[..].try_into().unwrap())
            })
            .collect();
        assert_eq!(numbers, (32..50).collect::<Vec<_>>(), "in order");
        to_three
    });

    // Node 3 dies without a word; the queue fills and then drops.
    three.shutdown_background();
    sender_runtime.block_on(async {
        let away = Instant::now();
        while to_three.dropped() == 0 {
            assert!(
                away.elapsed() < Duration::from_secs(10),
                "the queue never filled"
            );
            to_three.send(Bytes::from_static(b"while away"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    // Node 3 comes back on the same address; the link redials by itself.
    let (restarted, _, mut inbox) = receiver(dir.path(), three_at);
    sender_runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no message after the restart");
            to_three.send(Bytes::from_static(b"back"));
            if let Ok(Some((from, payload))) =
                tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await
            {
                assert_eq!(from, 2);
                if &payload[..] == b"back" {
                    break;
                }
            }
        }
    });
    restarted.shutdown_background();
    sender_runtime.shutdown_background();
}
