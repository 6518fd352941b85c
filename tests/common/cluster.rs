//! Three `sluiced` processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with
//! their certificates from `sluiced certs`, each with its own ports, data
//! directory and log; observed through their metrics endpoints. Killed on
//! drop. A node's data directory can be put on an ext4 image of its own
//! (`put_on_disk`), loop-mounted, so a test can stall it with `fsfreeze`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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
    /// The loop-mounted filesystems of nodes put on a disk of their own.
    disks: Vec<(i32, LoopDisk)>,
}

fn address(id: i32, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], port))
}

impl ClusterNode {
    /// Node `id` on 127.0.0.<id> with free ports, its log in `dir`.
    fn new(id: i32, dir: &tempfile::TempDir) -> ClusterNode {
        ClusterNode {
            id,
            kafka: address(id, free_port()),
            quic: address(id, free_port()),
            metrics: address(id, free_port()),
            child: None,
            log_path: dir.path().join(format!("node-{id}.log")),
        }
    }

    /// Its `[[brokers]]` table.
    fn broker_table(&self) -> String {
        format!(
            "\n[[brokers]]\nid = {}\nkafka = \"{}\"\nquic = \"{}\"\nmetrics = \"{}\"\n\
             data_dir = \"data-{}\"\n",
            self.id, self.kafka, self.quic, self.metrics, self.id
        )
    }
}

/// `sluiced certs` for `spec`: the CA (once) and what each node lacks.
fn make_certs(spec: &std::path::Path, tls: &std::path::Path) {
    let certs = Command::new(sluiced_bin())
        .arg("certs")
        .arg("--spec")
        .arg(spec)
        .arg("--out")
        .arg(tls)
        .output()
        .expect("running sluiced certs");
    assert!(
        certs.status.success(),
        "sluiced certs failed: {}",
        String::from_utf8_lossy(&certs.stderr)
    );
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
        let mut cluster = Self::prepare_nodes(ids, voters, extra_toml);
        for id in ids {
            cluster.spawn(*id);
        }
        cluster
    }

    /// Everything `start_nodes` does but start the nodes: the spec, each
    /// node's copy and the certificates. The caller `spawn`s each node.
    pub fn prepare_nodes(ids: &[i32], voters: &[i32], extra_toml: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<ClusterNode> = ids.iter().map(|id| ClusterNode::new(*id, &dir)).collect();
        let tls = dir.path().join("tls");
        let mut spec = format!(
            "[cluster]\nname = \"test-cluster\"\n\n[controller]\nvoters = {voters:?}\n\
             tls_dir = \"{}\"\n",
            tls.display()
        );
        for node in &nodes {
            spec.push_str(&node.broker_table());
        }
        spec.push_str(extra_toml);
        let spec_path = dir.path().join("cluster.toml");
        std::fs::write(&spec_path, &spec).expect("writing the spec");
        for id in ids {
            let node_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            std::fs::write(node_dir.join("cluster.toml"), &spec).expect("writing the spec");
        }
        make_certs(&spec_path, &tls);
        Cluster {
            dir,
            spec_path,
            nodes,
            disks: Vec::new(),
        }
    }

    /// Declares broker `id` (on 127.0.0.<id>) in the spec and in every
    /// node's copy, issues its certificate from the cluster's CA (`sluiced
    /// certs` again) and makes its directory. Starts nothing and signals
    /// nobody: the test reloads and spawns.
    pub fn declare_node(&mut self, id: i32) {
        let node = ClusterNode::new(id, &self.dir);
        let table = node.broker_table();
        self.nodes.push(node);
        let spec = std::fs::read_to_string(&self.spec_path).expect("reading the spec") + &table;
        std::fs::write(&self.spec_path, &spec).expect("writing the spec");
        std::fs::create_dir_all(self.dir.path().join(format!("node-{id}"))).expect("node dir");
        std::fs::write(self.node_spec_path(id), &spec).expect("writing the spec");
        for other in self.ids().into_iter().filter(|other| *other != id) {
            let path = self.node_spec_path(other);
            let text = std::fs::read_to_string(&path).expect("reading the spec") + &table;
            std::fs::write(&path, text).expect("writing the spec");
        }
        make_certs(&self.spec_path, &self.dir.path().join("tls"));
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

    /// Node `id`'s data directory (`data_dir = "data-<id>"` in its spec).
    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.dir
            .path()
            .join(format!("node-{id}"))
            .join(format!("data-{id}"))
    }

    /// Puts node `id`'s data directory, empty, on an ext4 image of its own
    /// (`megabytes` big, beside the spec), loop-mounted; before the node
    /// first starts. Unmounted when the cluster is dropped, after the nodes
    /// are killed.
    pub fn put_on_disk(&mut self, id: i32, megabytes: u64) {
        assert!(!self.running(id), "node {id} is running");
        let image = self.dir.path().join(format!("node-{id}.img"));
        let disk = LoopDisk::mount(&image, &self.data_dir(id), megabytes);
        self.disks.push((id, disk));
    }

    fn disk(&self, id: i32) -> &LoopDisk {
        self.disks
            .iter()
            .find_map(|(on, disk)| (*on == id).then_some(disk))
            .expect("the node was put on a disk of its own")
    }

    /// Freezes node `id`'s filesystem (`fsfreeze -f`): its writes and
    /// fsyncs block in the kernel until `thaw_disk`. Thawed on drop in any
    /// case, and by a watchdog process after `FREEZE_MAX` even if this
    /// process dies.
    pub fn freeze_disk(&self, id: i32) {
        self.disk(id).freeze();
    }

    /// `fsfreeze -u` on node `id`'s filesystem.
    pub fn thaw_disk(&self, id: i32) {
        self.disk(id).thaw();
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
        self.start_process(id);
        let metrics = self.node(id).metrics;
        let up = wait_until(super::START_TIMEOUT, || {
            TcpStream::connect_timeout(&metrics, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "node {id} did not open {metrics}:\n{}", self.log(id));
    }

    /// Starts node `id`, which must refuse to run: waits for it to exit
    /// with a failure.
    pub fn spawn_expecting_exit(&mut self, id: i32) {
        self.start_process(id);
        let mut child = self.node_mut(id).child.take().expect("started");
        let mut status = None;
        let exited = wait_until(super::START_TIMEOUT, || {
            status = child.try_wait().expect("waiting for sluiced");
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(exited, "node {id} kept running:\n{}", self.log(id));
        assert!(!status.unwrap().success(), "node {id}:\n{}", self.log(id));
    }

    fn start_process(&mut self, id: i32) {
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
    }

    /// SIGKILL; waits for the process to be gone.
    pub fn kill(&mut self, id: i32) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (`systemctl stop`); waits up to `timeout` for the process
    /// to exit and returns how long it took and whether it exited cleanly
    /// (SIGKILLed after the timeout: `None`).
    pub fn terminate(&mut self, id: i32, timeout: Duration) -> Option<(Duration, bool)> {
        let mut child = self.node_mut(id).child.take()?;
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let mut status = None;
        let exited = wait_until(timeout, || {
            status = child.try_wait().expect("waiting for sluiced");
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some((started.elapsed(), status.is_some_and(|s| s.success())))
    }

    /// The process id of running node `id`.
    pub fn pid(&self, id: i32) -> Option<u32> {
        self.node(id).child.as_ref().map(std::process::Child::id)
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
        metric(&self.scrape(id)?, name)
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

/// One sample in a metrics text, by its full name with labels.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A frozen filesystem first, whatever happened: a process blocked
        // on it cannot be reaped, and one left frozen hangs whatever on
        // this machine touches it next.
        for (_, disk) in &self.disks {
            disk.thaw();
        }
        for id in self.ids() {
            self.kill(id);
        }
        // Unmounted (and the loop device detached) before the temp dir
        // that holds the mount points and images is removed.
        self.disks.clear();
    }
}

/// The longest a disk stays frozen if its thaw never runs: a process of
/// its own thaws it then, even when the test process was killed.
pub const FREEZE_MAX: Duration = Duration::from_secs(10);

/// An ext4 filesystem in an image file on a loop device, mounted at a
/// directory; `fsfreeze` stalls it. Drop thaws it (ignoring errors),
/// unmounts it (lazily if it is busy) and detaches the loop device.
pub struct LoopDisk {
    mount: PathBuf,
    device: Option<String>,
    mounted: bool,
    /// The process that thaws the disk after `FREEZE_MAX`, while frozen.
    watchdog: Mutex<Option<Child>>,
}

/// Runs a system tool; its stdout, or a panic that says what failed.
fn run_tool(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (the test needs e2fsprogs, mount and util-linux, as root)")
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs a system tool for cleanup: errors ignored; whether it succeeded.
fn try_tool(program: &str, args: &[&std::ffi::OsStr]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl LoopDisk {
    /// Makes an ext4 image of `megabytes` at `image` and mounts it at
    /// `mount` (created, left empty: `lost+found` is removed).
    pub fn mount(image: &Path, mount: &Path, megabytes: u64) -> LoopDisk {
        std::fs::File::create(image)
            .and_then(|f| f.set_len(megabytes << 20))
            .expect("creating the disk image");
        run_tool("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), image.as_ref()]);
        std::fs::create_dir_all(mount).expect("the mount point");
        // From here on, drop cleans up whatever was done.
        let mut disk = LoopDisk {
            mount: mount.to_path_buf(),
            device: None,
            mounted: false,
            watchdog: Mutex::new(None),
        };
        let device = run_tool(
            "losetup",
            &["--find".as_ref(), "--show".as_ref(), image.as_ref()],
        );
        disk.device = Some(device.clone());
        run_tool("mount", &[device.as_ref(), mount.as_ref()]);
        disk.mounted = true;
        std::fs::remove_dir(mount.join("lost+found")).expect("removing lost+found");
        disk
    }

    pub fn freeze(&self) {
        let mut watchdog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        assert!(watchdog.is_none(), "already frozen");
        // In its own process group, so that it outlives this process and
        // whatever signal its group gets.
        use std::os::unix::process::CommandExt as _;
        let thaws = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep {}; exec fsfreeze -u \"$0\"",
                FREEZE_MAX.as_secs()
            ))
            .arg(&self.mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting the thaw watchdog");
        *watchdog = Some(thaws);
        run_tool("fsfreeze", &["-f".as_ref(), self.mount.as_ref()]);
    }

    /// `fsfreeze -u`, errors ignored (it was not frozen); stops the watchdog.
    pub fn thaw(&self) {
        try_tool("fsfreeze", &["-u".as_ref(), self.mount.as_ref()]);
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut watchdog) = watchdog {
            // Its group (the shell and its `sleep`), by the id we started it with.
            // SAFETY: a signal to a process group this test created.
            unsafe { libc::killpg(watchdog.id() as i32, libc::SIGKILL) };
            let _ = watchdog.wait();
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.thaw();
        if self.mounted && !try_tool("umount", &[self.mount.as_ref()]) {
            try_tool("umount", &["-l".as_ref(), self.mount.as_ref()]);
        }
        if let Some(device) = &self.device {
            // Detaches at once, or (still busy after a lazy unmount) as
            // soon as the last user lets go.
            try_tool("losetup", &["-d".as_ref(), device.as_ref()]);
        }
    }
}

/// nft rules that drop every UDP datagram (so every QUIC packet) between
/// node `id` and the other nodes, in the input chain so that senders see
/// nothing: a cable pulled, not a refusal. Metrics (TCP) still answer.
/// Removed on drop.
pub struct Isolation {
    table: String,
    also: Vec<String>,
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
        Isolation {
            table,
            also: Vec::new(),
        }
    }

    /// `cut_off`, and the node's Kafka port dropped too (TCP, both ways):
    /// a host gone silent for its clients as well (a power cut), where
    /// no reset tells a client anything.
    pub fn cut_off_entirely(id: i32, kafka_port: u16) -> Isolation {
        let mut isolation = Isolation::cut_off(id);
        let table = format!("sluice_test_{}_{id}_kafka", std::process::id());
        nft(&format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             ip daddr 127.0.0.{id} tcp dport {kafka_port} drop\n    \
             ip saddr 127.0.0.{id} tcp sport {kafka_port} drop\n  }}\n}}\n"
        ));
        isolation.also.push(table);
        isolation
    }

    /// Drops UDP between nodes `a` and `b` only, both ways: each still
    /// reaches the third node (the active controller, say).
    pub fn cut_between(a: i32, b: i32) -> Isolation {
        let table = format!("sluice_test_{}_{a}_{b}", std::process::id());
        nft(&format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             meta l4proto udp ip saddr 127.0.0.{a} ip daddr 127.0.0.{b} drop\n    \
             meta l4proto udp ip saddr 127.0.0.{b} ip daddr 127.0.0.{a} drop\n  }}\n}}\n"
        ));
        Isolation {
            table,
            also: Vec::new(),
        }
    }

    pub fn heal(self) {}
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for table in self.also.iter().chain([&self.table]) {
            nft(&format!("delete table inet {table}\n"));
        }
    }
}
