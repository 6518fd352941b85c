//! Three `sluiced` processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with
//! their certificates from `sluiced certs`, each with its own ports, data
//! directory and log; observed through their metrics endpoints. Killed on
//! drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, sluiced_bin, wait_until};

pub const NODES: [i32; 3] = [1, 2, 3];

pub struct ClusterNode {
    pub id: i32,
    pub kafka: SocketAddr,
    pub quic: SocketAddr,
    pub metrics: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The spec as first written; each node runs its own copy
    /// (`node_spec_path`), so a test can edit one host's file.
    pub spec_path: PathBuf,
    pub nodes: Vec<ClusterNode>,
}

fn address(id: i32, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], port))
}

impl Cluster {
    /// Three nodes, all voters: see `start_nodes`.
    pub fn start(extra_toml: &str) -> Cluster {
        Self::start_nodes(&NODES, &NODES, extra_toml)
    }

    /// Writes the spec for brokers `ids` (1 to 9, on 127.0.0.<id>) with
    /// `voters` (`extra_toml` appended), makes the certificates and starts
    /// every node; does not wait for the cluster to form.
    pub fn start_nodes(ids: &[i32], voters: &[i32], extra_toml: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<ClusterNode> = ids
            .iter()
            .map(|id| ClusterNode {
                id: *id,
                kafka: address(*id, free_port()),
                quic: address(*id, free_port()),
                metrics: address(*id, free_port()),
                child: None,
                log_path: dir.path().join(format!("node-{id}.log")),
            })
            .collect();
        let tls = dir.path().join("tls");
        let mut spec = format!(
            "[cluster]\nname = \"test-cluster\"\n\n[controller]\nvoters = {voters:?}\n\
             tls_dir = \"{}\"\n",
            tls.display()
        );
        for node in &nodes {
            spec.push_str(&format!(
                "\n[[brokers]]\nid = {}\nkafka = \"{}\"\nquic = \"{}\"\nmetrics = \"{}\"\n\
                 data_dir = \"data-{}\"\n",
                node.id, node.kafka, node.quic, node.metrics, node.id
            ));
        }
        spec.push_str(extra_toml);
        let spec_path = dir.path().join("cluster.toml");
        std::fs::write(&spec_path, &spec).expect("writing the spec");
        for id in ids {
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            std::fs::write(node_dir.join("cluster.toml"), &spec).expect("writing the spec");
        }
        let certs = Command::new(sluiced_bin())
            .arg("certs")
            .arg("--spec")
            .arg(&spec_path)
            .arg("--out")
            .arg(&tls)
            .output()
            .expect("running sluiced certs");
        assert!(
            certs.status.success(),
            "sluiced certs failed: {}",
            String::from_utf8_lossy(&certs.stderr)
        );
        let mut cluster = Cluster {
            dir,
            spec_path,
            nodes,
        };
        for id in ids {
            cluster.spawn(*id);
        }
        cluster
    }

    /// The ids of every node, running or not.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes.iter().find(|n| n.id == id).expect("a node")
    }

    fn node_mut(&mut self, id: i32) -> &mut ClusterNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("a node")
    }

    /// Node `id`'s own copy of the spec.
    pub fn node_spec_path(&self, id: i32) -> PathBuf {
        self.dir
            .path()
            .join(format!("node-{id}"))
            .join("cluster.toml")
    }

    /// Rewrites node `id`'s spec file with `edit` and sends it SIGHUP.
    pub fn reload(&self, id: i32, edit: impl FnOnce(&str) -> String) {
        let path = self.node_spec_path(id);
        let text = std::fs::read_to_string(&path).expect("reading the spec");
        std::fs::write(&path, edit(&text)).expect("writing the spec");
        let child = self.node(id).child.as_ref().expect("node running");
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    }

    /// `GET /status` of a running node.
    pub fn status(&self, id: i32) -> Option<String> {
        self.get(id, "/status")
    }

    /// Starts node `id` (again); waits until its metrics endpoint answers.
    pub fn spawn(&mut self, id: i32) {
        let spec_path = self.node_spec_path(id);
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let child = Command::new(sluiced_bin())
            .arg("--config")
            .arg(&spec_path)
            .arg("--node")
            .arg(id.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning sluiced");
        node.child = Some(child);
        let metrics = node.metrics;
        let up = wait_until(super::START_TIMEOUT, || {
            TcpStream::connect_timeout(&metrics, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "node {id} did not open {metrics}:\n{}", self.log(id));
    }

    /// SIGKILL; waits for the process to be gone.
    pub fn kill(&mut self, id: i32) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self, id: i32) -> bool {
        self.node(id).child.is_some()
    }

    pub fn log(&self, id: i32) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        self.ids()
            .iter()
            .map(|id| format!("--- node {id}\n{}", self.log(*id)))
            .collect()
    }

    /// The metrics text of a running node, or `None` if it does not answer.
    pub fn scrape(&self, id: i32) -> Option<String> {
        self.get(id, "/metrics")
    }

    /// The body of `GET path` on a running node's metrics address.
    fn get(&self, id: i32, path: &str) -> Option<String> {
        let node = self.node(id);
        node.child.as_ref()?;
        let mut stream =
            TcpStream::connect_timeout(&node.metrics, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
    }

    /// One sample of a running node, by its full name with labels.
    pub fn gauge(&self, id: i32, name: &str) -> Option<f64> {
        let text = self.scrape(id)?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The running node that says it is the active controller, if exactly
    /// one does; panics if two do.
    pub fn active_controller(&self) -> Option<i32> {
        let active: Vec<i32> = self
            .ids()
            .into_iter()
            .filter(|id| self.running(*id))
            .filter(|id| self.gauge(*id, "sluice_controller_active") == Some(1.0))
            .collect();
        assert!(active.len() <= 1, "two active controllers: {active:?}");
        active.first().copied()
    }

    /// Waits until one node is active, it counts `unfenced` unfenced
    /// brokers, and every running node says it is unfenced.
    pub fn wait_formed(&self, unfenced: usize, timeout: Duration) -> i32 {
        let mut formed = None;
        let ok = wait_until(timeout, || {
            let Some(active) = self.active_controller() else {
                return false;
            };
            let counted = self.gauge(active, "sluice_cluster_brokers{state=\"unfenced\"}");
            let all_in = self
                .ids()
                .into_iter()
                .filter(|id| self.running(*id))
                .all(|id| self.gauge(id, "sluice_broker_fenced") == Some(0.0));
            formed = Some(active);
            counted == Some(unfenced as f64) && all_in
        });
        assert!(
            ok,
            "the cluster did not form within {timeout:?}:\n{}",
            self.logs()
        );
        formed.expect("an active controller")
    }

    /// Polls `condition` every 10 ms; the time from `since` until it held,
    /// or `None` once `timeout` has passed since `since`.
    pub fn time_until(
        &self,
        since: Instant,
        timeout: Duration,
        mut condition: impl FnMut(&Cluster) -> bool,
    ) -> Option<Duration> {
        while since.elapsed() < timeout {
            if condition(self) {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}

/// nft rules that drop every UDP datagram (so every QUIC packet) between
/// node `id` and the other nodes, in the input chain so that senders see
/// nothing: a cable pulled, not a refusal. Metrics (TCP) still answer.
/// Removed on drop.
pub struct Isolation {
    table: String,
}

fn nft(script: &str) {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nft (the nftables package; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing the nft script");
    let output = child.wait_with_output().expect("nft");
    assert!(
        output.status.success(),
        "nft failed: {}\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Isolation {
    pub fn cut_off(id: i32) -> Isolation {
        let table = format!("sluice_test_{}_{id}", std::process::id());
        let others: Vec<String> = NODES
            .iter()
            .filter(|other| **other != id)
            .map(|other| format!("127.0.0.{other}"))
            .collect();
        let others = others.join(", ");
        nft(&format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             meta l4proto udp ip saddr 127.0.0.{id} ip daddr {{ {others} }} drop\n    \
             meta l4proto udp ip saddr {{ {others} }} ip daddr 127.0.0.{id} drop\n  }}\n}}\n"
        ));
        Isolation { table }
    }

    pub fn heal(self) {}
}

impl Drop for Isolation {
    fn drop(&mut self) {
        nft(&format!("delete table inet {}\n", self.table));
    }
}
