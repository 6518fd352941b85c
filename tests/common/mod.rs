//! Test harness: starts the real `sluiced` binary as a process on loopback
//! with its own spec, data directory and free ports, and cleans up after.

#![allow(dead_code)]

pub mod cluster;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to recover and bind.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn sluiced_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluiced"))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `sluiced` with its own directory; killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub kafka: SocketAddr,
    pub metrics: SocketAddr,
    pub spec_path: PathBuf,
    data: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    /// Extra environment for the process (e.g. `TOKIO_WORKER_THREADS`).
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a single-node daemon; `topics_toml` is appended to the spec
    /// (e.g. `[topics.orders]\npartitions = 8\n`).
    pub fn start(topics_toml: &str) -> Daemon {
        Self::start_with(topics_toml, "")
    }

    /// As `start`, with `topic_defaults_toml` placed under `[topic_defaults]`.
    pub fn start_with(topics_toml: &str, topic_defaults_toml: &str) -> Daemon {
        Self::start_full(topics_toml, topic_defaults_toml, "")
    }

    /// As `start`, with `limits_toml` placed under `[limits]`.
    pub fn start_with_limits(topics_toml: &str, limits_toml: &str) -> Daemon {
        Self::start_full(topics_toml, "", limits_toml)
    }

    /// As `start`, with extra environment variables for the process.
    pub fn start_with_env(topics_toml: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full_env(topics_toml, "", "", env)
    }

    fn start_full(topics_toml: &str, topic_defaults_toml: &str, limits_toml: &str) -> Daemon {
        Self::start_at(topics_toml, topic_defaults_toml, limits_toml, None, &[])
    }

    /// As `start`, with the data directory at `data_dir` (e.g. on a
    /// filesystem the test mounted) instead of inside the daemon's temp dir.
    pub fn start_with_data_dir(topics_toml: &str, data_dir: &Path) -> Daemon {
        Self::start_at(topics_toml, "", "", Some(data_dir), &[])
    }

    fn start_full_env(
        topics_toml: &str,
        topic_defaults_toml: &str,
        limits_toml: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_at(topics_toml, topic_defaults_toml, limits_toml, None, env)
    }

    fn start_at(
        topics_toml: &str,
        topic_defaults_toml: &str,
        limits_toml: &str,
        data_dir: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = data_dir.map_or(dir.path().join("data"), Path::to_path_buf);
        // Relative by default: tests edit the spec text around this line.
        let data_dir = data_dir.map_or("data".to_string(), |d| d.display().to_string());
        let port = free_port();
        let kafka: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let spec = format!(
            r#"[cluster]
name = "test"
auto_create_topics = true
allow_api_topic_creation = true

[controller]
voters = [1]

[[brokers]]
id = 1
kafka = "127.0.0.1:{port}"
quic = "127.0.0.1:{quic}"
metrics = "{metrics}"
data_dir = "{data_dir}"

[limits]
{limits_toml}

[topic_defaults]
{topic_defaults_toml}

{topics_toml}
"#,
            quic = free_port(),
        );
        let spec_path = dir.path().join("cluster.toml");
        std::fs::write(&spec_path, spec).expect("writing spec");
        let log_path = dir.path().join("sluiced.log");
        let mut daemon = Daemon {
            dir,
            kafka,
            metrics,
            spec_path,
            data,
            child: None,
            log_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.spawn();
        daemon
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// GET /metrics: the exposition text.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(self.metrics).expect("metrics endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("metrics response");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    pub fn bootstrap(&self) -> String {
        self.kafka.to_string()
    }

    /// Starts the process (again) on the same spec and data, waiting until
    /// the Kafka port accepts connections.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(sluiced_bin())
            .arg("--config")
            .arg(&self.spec_path)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning sluiced");
        self.child = Some(child);
        let kafka = self.kafka;
        let up = wait_until(START_TIMEOUT, || {
            self.assert_running();
            TcpStream::connect_timeout(&kafka, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up,
            "sluiced did not start listening on {kafka}:\n{}",
            self.log()
        );
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("sluiced exited with {status}:\n{}", self.log());
        }
    }

    /// Whether the process is still alive.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon running").id() as i32
    }

    /// SIGKILL: the crash case. Waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    /// Waits up to `timeout` for the process to exit by itself; its exit code.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("waiting for sluiced");
        status.code()
    }

    pub fn restart_after_kill(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The daemon's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_lines(&self) -> Vec<String> {
        std::fs::File::open(&self.log_path)
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A producer context recording where each acknowledged message (by its
/// index, the delivery opaque) was stored: (partition, offset), and the
/// first delivery errors.
#[derive(Default)]
pub struct Acked(
    pub std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, (i32, i64)>>>,
    /// The first few delivery errors, for failure messages.
    pub std::sync::Arc<std::sync::Mutex<Vec<String>>>,
);

impl rdkafka::ClientContext for Acked {}

impl rdkafka::producer::ProducerContext for Acked {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, index: usize) {
        use rdkafka::Message;
        match result {
            Ok(m) => {
                self.0
                    .lock()
                    .expect("acks lock")
                    .insert(index, (m.partition(), m.offset()));
            }
            Err((error, _)) => {
                let mut errors = self.1.lock().expect("errors lock");
                if errors.len() < 5 {
                    errors.push(error.to_string());
                }
            }
        }
    }
}

/// The newest `.log` segment file of a partition directory.
pub fn active_segment(partition_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .expect("partition dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("at least one segment")
}

/// Runs named test cases in order for a `harness = false` test binary,
/// printing libtest's lines (the CI summary counts them); returns the exit
/// status. A first argument that is not a flag filters by name.
pub fn run_cases(cases: &[(&str, fn())]) -> i32 {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<&(&str, fn())> = cases
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, case) in &selected {
        println!("test {name} ...");
        match std::panic::catch_unwind(case) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    let passed = selected.len() - failed.len();
    let outcome = if failed.is_empty() { "ok" } else { "FAILED" };
    for name in &failed {
        println!("    {name}");
    }
    println!(
        "\ntest result: {outcome}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        failed.len(),
        cases.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    i32::from(!failed.is_empty())
}

/// Consumes `partitions` partitions of `topic` from the start and checks
/// that every acknowledged message (index → (partition, offset)) is at its
/// offset with the value `payload(index)`, and that no value is stored twice.
pub fn assert_acknowledged_readable(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &std::collections::HashMap<usize, (i32, i64)>,
    payload: fn(usize) -> String,
) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "acknowledged-check")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let expected: std::collections::HashMap<(i32, i64), usize> =
        acked.iter().map(|(i, at)| (*at, *i)).collect();
    let mut values = std::collections::HashSet::new();
    let mut matched = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while matched < expected.len() && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let value = String::from_utf8(message.payload().expect("a value").to_vec()).expect("utf-8");
        assert!(
            values.insert(value.clone()),
            "a message stored twice: {value:.20}"
        );
        if let Some(i) = expected.get(&(message.partition(), message.offset())) {
            assert_eq!(
                value,
                payload(*i),
                "an acknowledged offset holds another message"
            );
            matched += 1;
        }
    }
    assert_eq!(
        matched,
        expected.len(),
        "every acknowledged message is back at its offset"
    );
}
