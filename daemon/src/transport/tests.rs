//! Certificates and TLS between nodes, handshaking in memory: who may talk
//! to whom, who a peer is, and that a CA rotation never leaves two nodes
//! unable to trust each other.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};
use time::OffsetDateTime;

use super::certs::{self, CertsRun, NODE_CERT_DAYS_DEFAULT, Renew, RotateStep};
use super::identity::{IdentityError, node_server_name, peer_node_id};
use super::tls::{ALPN_CLUSTER, TlsMaterial, client_config, server_config};

const NODES: [i32; 3] = [1, 2, 3];

fn run<'a>(out: &'a Path, node_ids: &'a [i32]) -> CertsRun<'a> {
    CertsRun {
        out,
        cluster: "test",
        node_ids,
        days: NODE_CERT_DAYS_DEFAULT,
    }
}

fn make(out: &Path, node_ids: &[i32]) -> Vec<String> {
    certs::make(
        run(out, node_ids),
        Renew::Missing,
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

fn material(dir: &Path, id: i32) -> TlsMaterial {
    TlsMaterial::load(dir, id).unwrap()
}

/// A TLS handshake in memory: `client` dials `server` expecting `name`.
/// Returns the server side (to read the peer's certificate) or the first error.
fn handshake(
    client: &TlsMaterial,
    server: &TlsMaterial,
    name: ServerName<'static>,
) -> Result<ServerConnection, rustls::Error> {
    let mut c = ClientConnection::new(Arc::new(client_config(client).unwrap()), name)?;
    let mut s = ServerConnection::new(Arc::new(server_config(server).unwrap()))?;
    // Bounded: a TLS 1.3 handshake with client auth takes a few flights.
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        s.read_tls(&mut wire.as_slice()).unwrap();
        s.process_new_packets()?;
        let mut wire = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        c.read_tls(&mut wire.as_slice()).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s);
        }
    }
    panic!("the handshake did not finish");
}

fn dial(client: &TlsMaterial, server: &TlsMaterial) -> Result<ServerConnection, rustls::Error> {
    handshake(client, server, node_server_name(server.node_id))
}

#[test]
fn nodes_of_one_cluster_trust_each_other_and_learn_who_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let lines = make(dir.path(), &NODES);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let (two, three) = (material(dir.path(), 2), material(dir.path(), 3));
    let server = dial(&two, &three).expect("node 2 dials node 3");
    assert_eq!(server.alpn_protocol(), Some(ALPN_CLUSTER));
    let chain = server.peer_certificates().expect("a client certificate");
    assert_eq!(peer_node_id(chain, &NODES), Ok(2));
    assert_eq!(
        peer_node_id(chain, &[1, 3]),
        Err(IdentityError::NotADeclaredNode {
            declared: vec![1, 3]
        })
    );
    assert_eq!(peer_node_id(&[], &NODES), Err(IdentityError::NoCertificate));
}

#[test]
fn another_clusters_certificates_are_refused_both_ways() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make(ours.path(), &NODES);
    make(theirs.path(), &NODES);
    let (our_two, their_two) = (material(ours.path(), 2), material(theirs.path(), 2));
    let our_three = material(ours.path(), 3);
    // Same cluster name, so the same CA name: the signature gives them away.
    let refused = dial(&their_two, &our_three).expect_err("a foreign client");
    assert!(
        matches!(refused, rustls::Error::InvalidCertificate(_)),
        "{refused}"
    );
    let refused = dial(&our_two, &material(theirs.path(), 3)).expect_err("a foreign server");
    assert!(
        matches!(refused, rustls::Error::InvalidCertificate(_)),
        "{refused}"
    );
    // A client that trusts our CA but shows another's certificate: the
    // server's own check refuses it.
    let mixed = trusting_ours_with_their_node_two(ours.path(), theirs.path());
    let refused = dial(&material(mixed.path(), 2), &our_three).expect_err("a foreign client");
    assert!(
        matches!(refused, rustls::Error::InvalidCertificate(_)),
        "refused by the server: {refused}"
    );
}

/// Node 2's files as a stranger would hold them: our CA bundle (it trusts
/// us) but another cluster's certificate and key.
pub(super) fn trusting_ours_with_their_node_two(ours: &Path, theirs: &Path) -> tempfile::TempDir {
    let mixed = tempfile::tempdir().unwrap();
    std::fs::copy(
        ours.join("ca-bundle.pem"),
        mixed.path().join("ca-bundle.pem"),
    )
    .unwrap();
    for file in ["node-2.pem", "node-2.key"] {
        std::fs::copy(theirs.join(file), mixed.path().join(file)).unwrap();
    }
    mixed
}

#[test]
fn a_node_answering_for_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &NODES);
    let (two, three) = (material(dir.path(), 2), material(dir.path(), 3));
    let refused = handshake(&two, &three, node_server_name(1)).expect_err("node 3 is not node 1");
    assert!(
        refused.to_string().contains("not valid for name"),
        "{refused}"
    );
}

#[test]
fn a_second_run_keeps_files_and_signs_a_new_node_with_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &[1, 2]);
    let node_one = std::fs::read(dir.path().join("node-1.pem")).unwrap();
    let lines = make(dir.path(), &NODES);
    assert_eq!(
        lines,
        vec![
            "using the existing CA ca/ca.pem".to_string(),
            "kept node-1.pem".to_string(),
            "kept node-2.pem".to_string(),
            "issued node-3.pem for node-3.sluice (valid 825 days)".to_string(),
        ]
    );
    assert_eq!(
        std::fs::read(dir.path().join("node-1.pem")).unwrap(),
        node_one
    );
    dial(&material(dir.path(), 3), &material(dir.path(), 1)).expect("the new node is trusted");
    certs::make(
        run(dir.path(), &NODES),
        Renew::Node(1),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_ne!(
        std::fs::read(dir.path().join("node-1.pem")).unwrap(),
        node_one
    );
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca/ca.key", "node-1.key", "node-3.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let bad = certs::make(
        run(dir.path(), &NODES),
        Renew::Node(9),
        OffsetDateTime::now_utc(),
    );
    assert!(bad.unwrap_err().to_string().contains("not declared"));
}

/// A node's view of the directory at one moment: what it was given.
fn snapshot(dir: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, into.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_ca_rotation_never_leaves_two_nodes_unable_to_trust_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let views = tempfile::tempdir().unwrap();
    let (out, now) = (dir.path(), OffsetDateTime::now_utc());
    make(out, &[1, 2]);
    let view = |name: &str| {
        let into = views.path().join(name);
        snapshot(out, &into);
        into
    };
    let before = view("before");
    certs::rotate(run(out, &[1, 2]), RotateStep::Start, now).unwrap();
    let started = view("started");
    certs::rotate(run(out, &[1, 2]), RotateStep::Reissue, now).unwrap();
    let reissued = view("reissued");
    certs::rotate(run(out, &[1, 2]), RotateStep::Finish, now).unwrap();
    let finished = view("finished");
    // Nodes move one step at a time, in any order: each neighbouring pair
    // of steps must trust each other both ways.
    for (a, b) in [
        (&before, &started),
        (&started, &reissued),
        (&reissued, &finished),
    ] {
        for (x, y) in [(a, b), (b, a), (a, a), (b, b)] {
            let (one, two) = (material(x, 1), material(y, 2));
            dial(&one, &two)
                .unwrap_or_else(|e| panic!("{} dialling {}: {e}", x.display(), y.display()));
        }
    }
    // Once finished everywhere, the old CA is no longer trusted.
    let refused = dial(&material(&before, 1), &material(&finished, 2));
    assert!(
        refused.is_err(),
        "the retired CA's certificates are refused"
    );
    assert!(
        certs::rotate(run(out, &[1, 2]), RotateStep::Finish, now).is_err(),
        "nothing to finish"
    );
}
