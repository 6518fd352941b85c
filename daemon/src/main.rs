//! `sluiced`: the Sluice broker daemon and its command-line tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use sluice::broker::Broker;
use sluice::config::{self, ClusterSpec};
use sluice::kafka::{self, ListenerLimits};
use sluice::service;

/// Lying array lengths on the wire must not abort the broker; see alloc_guard.
#[global_allocator]
static ALLOCATOR: sluice::alloc_guard::GuardedAllocator = sluice::alloc_guard::GuardedAllocator;

#[derive(Debug, Parser)]
#[command(
    name = "sluiced",
    version,
    about = "Sluice: a Kafka-compatible, durable commit log"
)]
struct Cli {
    /// Cluster spec (TOML). Without it, the embedded single-node default is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which broker of the spec this host is (else $SLUICE_NODE_ID, /etc/sluice/node.toml,
    /// or the only broker of a one-broker spec).
    #[arg(long, value_name = "ID")]
    node: Option<i32>,
    /// Overrides the broker's data_dir from the spec.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate a cluster spec; exit non-zero with every error found.
    /// A valid spec this build cannot serve yet (several brokers, replicated
    /// topics) exits 0 and says so.
    CheckConfig { file: PathBuf },
    /// Print the embedded default spec (a valid, commented TOML file).
    DefaultConfig,
    /// Make the cluster's CA and a certificate for every broker of the spec
    /// in DIR (kept if present: a second run issues only what is missing),
    /// or take one step of a CA rotation (docs/OPERATIONS.md).
    Certs {
        /// The cluster spec naming the brokers.
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// Where the CA and the node certificates go.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Issue again: one broker's certificate (its id), or `all`.
        #[arg(long, value_name = "ID|all")]
        renew: Option<String>,
        /// Days a node certificate is valid.
        #[arg(long, default_value_t = sluice::transport::certs::NODE_CERT_DAYS_DEFAULT)]
        days: u32,
        /// One step of a CA rotation: start, reissue, finish (in that order).
        #[arg(long, value_name = "STEP")]
        rotate_ca: Option<String>,
    },
    /// Show a cluster: every node's role, term and membership, then the
    /// metadata (brokers, topics, partitions with leader, replicas, ISR and
    /// epochs) as the active controller applied it. Asks each broker of the
    /// spec on its metrics address.
    Status {
        /// The cluster spec naming the nodes.
        #[arg(long, default_value = "/etc/sluice/cluster.toml")]
        config: PathBuf,
        /// Ask one broker's Kafka listener instead (Metadata: brokers,
        /// controller, partitions with leader, epoch, replicas, ISR).
        #[arg(long, conflicts_with = "config")]
        bootstrap: Option<String>,
        /// Wait until this broker is registered, unfenced and in the ISR of
        /// every partition placed on it (a rolling restart's next step),
        /// polling every node; exit 1 if it is not within --timeout.
        #[arg(long, value_name = "BROKER_ID", conflicts_with = "bootstrap")]
        wait_in_sync: Option<i32>,
        /// Seconds --wait-in-sync waits at most.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List consumer groups of a running broker: members, assignments, and
    /// per-partition lag (high watermark − committed offset).
    Groups {
        /// The broker's Kafka address.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    /// Measure how long a daemon with many partitions takes to serve them
    /// all again after a SIGKILL and after a clean stop.
    BenchRecovery {
        /// Partitions of the one topic (each gets one record).
        #[arg(long, default_value_t = 2000)]
        partitions: i32,
        /// Kill-and-restart rounds (each followed by a clean restart).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Directory on the disk to measure (the daemon's data goes under it).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Measure produce/consume throughput of an in-process broker beside the
    /// raw disk write and loopback TCP rates of this machine.
    Bench {
        /// Messages per run.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 1024)]
        message_bytes: usize,
        /// Partition counts to run, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        partitions: Vec<i32>,
        /// Messages per batch (16 x 1 KiB = Kafka's default batch.size).
        #[arg(long, default_value_t = 16)]
        batch_messages: usize,
        /// Produce requests in flight on the connection.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        /// Rounds of every phase, each beside its own baseline; the report
        /// gives each round and the median ratio.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Directory on the disk to measure (the broker's data goes under it).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{}", config::DEFAULT_SPEC_TOML);
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig { ref file }) => match config::load_spec(file) {
            Ok(spec) => {
                println!(
                    "{}: ok ({} broker(s), {} topic(s))",
                    file.display(),
                    spec.brokers.len(),
                    spec.topics.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Bench {
            messages,
            message_bytes,
            ref partitions,
            batch_messages,
            in_flight,
            rounds,
            ref dir,
        }) => {
            let options = sluice::bench::BenchOptions {
                messages,
                message_bytes,
                partitions: partitions.clone(),
                batch_messages,
                in_flight,
                rounds,
                dir: dir.clone(),
            };
            match sluice::bench::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluiced bench: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Groups { ref bootstrap }) => groups(bootstrap),
        Some(Command::Status {
            ref config,
            ref bootstrap,
            wait_in_sync: Some(broker),
            timeout,
        }) if bootstrap.is_none() => wait_in_sync(config, broker, timeout),
        Some(Command::Status {
            ref config,
            ref bootstrap,
            ..
        }) => {
            let report = match bootstrap {
                Some(bootstrap) => kafka_status(bootstrap),
                None => config::load_spec(config)
                    .map_err(|e| e.to_string())
                    .and_then(|spec| sluice::cluster::status::collect(&spec)),
            };
            match report {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluiced status: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Certs {
            ref spec,
            ref out,
            ref renew,
            days,
            ref rotate_ca,
        }) => match certs(spec, out, renew.as_deref(), days, rotate_ca.as_deref()) {
            Ok(lines) => {
                for line in lines {
                    println!("{}: {line}", out.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluiced certs: {e:#}");
                ExitCode::from(1)
            }
        },
        Some(Command::BenchRecovery {
            partitions,
            rounds,
            ref dir,
        }) => {
            let options = sluice::bench::recovery::RecoveryOptions {
                partitions,
                rounds,
                dir: dir.clone(),
            };
            match sluice::bench::recovery::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluiced bench-recovery: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        None => {
            init_tracing();
            sluice::failstop::install_panic_hook();
            match run(cli) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", error = %format!("{e:#}"));
                    eprintln!("sluiced: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `sluiced status --wait-in-sync ID`: polls every node until broker `ID`
/// is in sync (cluster/status.rs `in_sync`) or `timeout_secs` pass.
fn wait_in_sync(config: &std::path::Path, broker: i32, timeout_secs: u64) -> ExitCode {
    let spec = match config::load_spec(config) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("sluiced status: {e}");
            return ExitCode::from(1);
        }
    };
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_secs(timeout_secs);
    let mut last = String::new();
    loop {
        let verdict = sluice::cluster::status::collect(&spec)
            .and_then(|text| sluice::cluster::status::in_sync(&text, broker));
        match verdict {
            Ok(()) => {
                println!(
                    "broker {broker} is in sync ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::SUCCESS;
            }
            Err(why) => {
                if why != last {
                    println!("waiting: {why}");
                    last = why;
                }
            }
        }
        if started.elapsed() >= timeout {
            eprintln!("sluiced status: broker {broker} not in sync after {timeout_secs} s: {last}");
            return ExitCode::from(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn kafka_status(bootstrap: &str) -> Result<String, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(sluice::cluster::status::collect_kafka(bootstrap))
        .map_err(|e| format!("{e:#}"))
}

fn groups(bootstrap: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluiced groups: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sluice::group::report::collect(bootstrap)) {
        Ok(reports) => {
            print!("{}", sluice::group::report::render(&reports));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluiced groups: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// One line per key that needs replication, each naming `origin`; `Ok` when
/// a single-node daemon can serve `spec`.
fn refuse_unservable(spec: &ClusterSpec, origin: &str) -> Result<(), String> {
    let reasons = config::unservable(spec);
    if reasons.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = reasons.iter().map(|r| format!("{origin}: {r}")).collect();
    Err(lines.join("\n"))
}

fn spec_origin(config: Option<&std::path::Path>) -> String {
    config.map_or(config::DEFAULT_SPEC_ORIGIN.to_string(), |p| {
        p.display().to_string()
    })
}

fn load(cli: &Cli) -> anyhow::Result<(ClusterSpec, i32, PathBuf)> {
    let spec = match &cli.config {
        Some(path) => config::load_spec(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => config::parse_spec(config::DEFAULT_SPEC_TOML, config::DEFAULT_SPEC_ORIGIN)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let env = std::env::var(config::NODE_ID_ENV).ok();
    let node_file = PathBuf::from(config::DEFAULT_NODE_FILE);
    let node_file = node_file.exists().then_some(node_file.as_path());
    let node_id = config::resolve_node_id(cli.node, env.as_deref(), node_file, &spec)
        .map_err(|e| anyhow::anyhow!("choosing the broker id: {e}"))?;
    let broker = spec
        .broker(node_id)
        .with_context(|| format!("broker {node_id} not in spec"))?;
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| broker.data_dir.clone());
    Ok((spec, node_id, data_dir))
}

/// `sluiced certs`: see `sluice::transport::certs`.
fn certs(
    spec: &std::path::Path,
    out: &std::path::Path,
    renew: Option<&str>,
    days: u32,
    rotate_ca: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    use sluice::transport::certs::{self, CertsRun, Renew, RotateStep};
    let spec = config::load_spec(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let node_ids = spec.broker_ids();
    let run = CertsRun {
        out,
        cluster: &spec.cluster.name,
        node_ids: &node_ids,
        days,
    };
    let now = time::OffsetDateTime::now_utc();
    if let Some(step) = rotate_ca {
        anyhow::ensure!(
            renew.is_none(),
            "--renew and --rotate-ca go in separate runs"
        );
        let step = match step {
            "start" => RotateStep::Start,
            "reissue" => RotateStep::Reissue,
            "finish" => RotateStep::Finish,
            other => anyhow::bail!("--rotate-ca {other:?}: expected start, reissue or finish"),
        };
        return Ok(certs::rotate(run, step, now)?);
    }
    let renew = match renew {
        None => Renew::Missing,
        Some("all") => Renew::All,
        Some(id) => Renew::Node(
            id.parse()
                .map_err(|_| anyhow::anyhow!("--renew {id:?}: expected a broker id or `all`"))?,
        ),
    };
    Ok(certs::make(run, renew, now)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (spec, node_id, data_dir) = load(&cli)?;
    tracing::info!(event = "starting", node_id, data_dir = %data_dir.display(), spec_hash = %spec.source_hash);
    if spec.brokers.len() > 1 {
        return run_cluster_member(spec, node_id, data_dir, cli.config.clone());
    }
    let limits = listener_limits(&spec);
    let runtime = worker_runtime()?;
    service::status("recovering partition logs");
    let broker = Broker::open(spec, node_id, data_dir).context("opening the broker")?;
    if let Some(path) = &cli.config {
        broker.set_spec_file(path);
    }
    tracing::info!(
        event = "recovered",
        topics = broker.topics().len(),
        partitions = broker.partition_count()
    );
    let groups = sluice::group::GroupCoordinator::start(&broker)
        .map_err(|e| anyhow::anyhow!("starting the group coordinator: {e}"))?;
    tracing::info!(event = "groups_ready");
    runtime.block_on(serve(
        broker.clone(),
        groups,
        limits,
        cli.config.clone(),
        Mode::Single,
    ))?;
    broker.close().context("closing partition logs")?;
    tracing::info!(event = "stopped");
    Ok(())
}

/// The runtime request handling runs on (both modes).
fn worker_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-worker")
        .build()
        .context("starting the async runtime")
}

/// What runs beside the Kafka listener.
enum Mode {
    /// One broker: its own topics and consumer groups.
    Single,
    /// A node of a cluster: it serves what the metadata log assigns it.
    Member(Arc<sluice::cluster::ClusterMember>),
}

/// A node of a multi-broker spec: it joins the controller quorum (if it
/// votes), registers, and serves the partitions the metadata log places on
/// it, coordinating the groups of the offsets partitions it leads.
fn run_cluster_member(
    spec: ClusterSpec,
    node_id: i32,
    data_dir: PathBuf,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let limits = listener_limits(&spec);
    let runtime = worker_runtime()?;
    service::status("recovering partition logs");
    let broker = Broker::open_member(spec.clone(), node_id, data_dir.clone())
        .context("opening the broker")?;
    if let Some(path) = &config {
        broker.set_spec_file(path);
    }
    let adoption = sluice::cluster::adoption::report(&broker, &spec)?;
    service::status("joining the cluster");
    let member = Arc::new(sluice::cluster::ClusterMember::start(
        &spec,
        node_id,
        &data_dir,
        adoption,
        broker.clone(),
    )?);
    broker.set_producer_id_source(member.producer_id_source());
    broker.set_topic_changes(member.topic_changes());
    let groups = sluice::group::GroupCoordinator::start(&broker)
        .map_err(|e| anyhow::anyhow!("starting the group coordinator: {e}"))?;
    runtime.block_on(serve(
        broker.clone(),
        groups,
        limits,
        config,
        Mode::Member(member.clone()),
    ))?;
    runtime.block_on(stop_member(member));
    broker.close().context("closing partition logs")?;
    tracing::info!(event = "stopped");
    Ok(())
}

/// Stops the cluster side once nothing else holds it (a reload running on
/// a blocking thread may, briefly).
async fn stop_member(mut member: Arc<sluice::cluster::ClusterMember>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Arc::try_unwrap(member) {
            // Runtimes are shut down (waiting for their blocking threads)
            // outside any async context.
            Ok(alone) => {
                let _ = tokio::task::spawn_blocking(move || alone.stop()).await;
                return;
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                member = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!(event = "stop_with_reload_running");
                return;
            }
        }
    }
}

/// SIGHUP on a cluster node: the reloaded spec's hash is reported to the
/// controller, which applies it once a majority of voters hold it.
async fn reload_cluster_on_sighup(
    broker: Arc<Broker>,
    member: Arc<sluice::cluster::ClusterMember>,
    config: Option<PathBuf>,
    mut hangups: Signal,
) {
    while hangups.recv().await.is_some() {
        service::reloading();
        let (reloading, config, broker) = (member.clone(), config.clone(), broker.clone());
        let done = tokio::task::spawn_blocking(move || {
            reload_cluster(&broker, &reloading, config.as_deref())
        })
        .await;
        if let Err(e) = done {
            tracing::error!(event = "reload_failed", error = %e);
        }
        service::ready("reloaded");
    }
}

fn reload_cluster(
    broker: &Broker,
    member: &sluice::cluster::ClusterMember,
    config: Option<&std::path::Path>,
) {
    let Some(spec) = load_reloaded(config, false) else {
        return;
    };
    let m = sluice::metrics::metrics();
    let running = member.spec();
    let actions = config::diff_specs(&running, &spec, member.node_id());
    let restart: Vec<_> = actions.iter().filter(|a| !a.is_live()).collect();
    for action in &restart {
        tracing::warn!(event = "reload_action_deferred", action = %action);
    }
    let hash = spec.source_hash.clone();
    match member.reload(spec.clone()) {
        Ok(()) => {
            broker.reload_member_spec(spec, &actions);
            let result = if restart.is_empty() {
                "ok"
            } else {
                "needs_restart"
            };
            m.config_reloads.with_label_values(&[result]).inc();
            m.config_last_reload_success.set(1);
            m.set_spec_hash(&hash);
            tracing::info!(event = "reload_done", spec_hash = %hash, "the controller applies it once a majority of voters hold it");
        }
        Err(e) => {
            tracing::error!(event = "reload_refused", error = %format!("{e:#}"));
            tracing::error!(event = "reload_failed", outcome = "nothing changed");
            m.config_reloads.with_label_values(&["refused"]).inc();
            m.config_last_reload_success.set(0);
        }
    }
}

fn listener_limits(spec: &ClusterSpec) -> ListenerLimits {
    let limits = &spec.limits;
    let defaults = ListenerLimits::default();
    let request_bytes_max = u32::try_from(limits.socket_request_max_bytes).unwrap_or(u32::MAX);
    ListenerLimits {
        request_bytes_max,
        queued_request_bytes_max: defaults.queued_request_bytes_max.max(request_bytes_max),
        connections_max: limits.max_connections as usize,
        connections_per_ip_max: limits
            .max_connections_per_ip
            .as_option()
            .map(|n| n as usize),
        in_flight_requests_max: limits.max_queued_requests_per_connection.max(1) as usize,
        idle_timeout: std::time::Duration::from_millis(limits.connections_max_idle_ms),
        request_read_timeout: defaults.request_read_timeout,
        fetch_response_bytes_max: u32::try_from(limits.fetch_max_bytes).unwrap_or(u32::MAX),
    }
}

async fn serve(
    broker: Arc<Broker>,
    groups: Arc<sluice::group::GroupCoordinator>,
    limits: ListenerLimits,
    config: Option<PathBuf>,
    mode: Mode,
) -> anyhow::Result<()> {
    // Handlers go in before either port opens: a signal that arrives once a
    // client (or a test) can connect must reach us, not the default action.
    let signals = StopSignals::install().context("installing signal handlers")?;
    let hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let metrics_address = broker.broker_spec().metrics;
    let metrics_listener = TcpListener::bind(metrics_address)
        .await
        .with_context(|| format!("binding the metrics endpoint on {metrics_address}"))?;
    let address = broker.broker_spec().kafka;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the Kafka listener on {address}"))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let m = sluice::metrics::metrics();
    m.set_spec_hash(&broker.spec().source_hash);
    m.config_last_reload_success.set(1);
    let status: Option<sluice::metrics::StatusFn> = match &mode {
        Mode::Single => None,
        Mode::Member(member) => {
            let source = member.status_source();
            Some(Arc::new(move || source.render()))
        }
    };
    tokio::spawn(sluice::metrics::serve(
        metrics_listener,
        Some(broker.clone()),
        Some(groups.clone()),
        status,
        stop_rx.clone(),
    ));
    let mut tasks = vec![
        tokio::spawn(broker.clone().run_syncer()),
        tokio::spawn(broker.clone().run_housekeeping()),
        tokio::spawn(broker.clone().run_cleaner()),
    ];
    let handover = match &mode {
        Mode::Single => None,
        Mode::Member(member) => Some((member.clone(), broker.clone())),
    };
    tokio::spawn(signals.wait_then_stop(stop_tx, handover));
    tokio::spawn(service::run_watchdog());
    tasks.push(tokio::spawn(groups.clone().run_driver()));
    match &mode {
        Mode::Single => {
            tasks.push(tokio::spawn(reload_on_sighup(
                broker.clone(),
                config,
                hangups,
            )));
        }
        Mode::Member(member) => {
            tasks.push(tokio::spawn(sluice::cluster::publisher::serve_image(
                broker.clone(),
                groups.clone(),
                member.replica_fetcher(),
                broker.node_id(),
                member.image(),
                member.status(),
            )));
            tasks.push(tokio::spawn(reload_cluster_on_sighup(
                broker.clone(),
                member.clone(),
                config,
                hangups,
            )));
            // READY only once registered: before that the broker serves nothing.
            let mut status = member.status();
            let registered = status
                .wait_for(|s| !matches!(s.membership, sluice::cluster::Membership::Unregistered));
            tokio::select! {
                _ = registered => {}
                _ = stop_rx.wait_for(|stop| *stop) => {
                    tasks.iter().for_each(tokio::task::JoinHandle::abort);
                    return Ok(());
                }
            }
            // The registration that carried a single node's topics is
            // committed: they are the cluster's now.
            if broker.pre_cluster_data().is_some() {
                broker
                    .retire_pre_cluster_registry()
                    .context("retiring the adopted topic registry")?;
            }
        }
    }
    let address = listener.local_addr()?;
    tracing::info!(event = "ready", kafka = %address, metrics = %metrics_address);
    service::ready(&format!(
        "serving {} partition(s) of {} topic(s) on {address}",
        broker.partition_count(),
        broker.topics().len()
    ));
    kafka::serve(listener, broker, Some(groups), limits, stop_rx).await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// How long a controlled shutdown waits for each of its two steps (the
/// ISRs to allow leaving, then the leaderships to move); well inside
/// systemd's stop timeout.
const CONTROLLED_SHUTDOWN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// SIGTERM (`systemctl stop`) and SIGINT, registered before the daemon is
/// reachable so neither can take the default action and skip the clean close.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// On a cluster member (`handover`), leaderships move to the other
    /// replicas before the listener stops (controlled shutdown).
    async fn wait_then_stop(
        mut self,
        stop: watch::Sender<bool>,
        handover: Option<(Arc<sluice::cluster::ClusterMember>, Arc<Broker>)>,
    ) {
        let which = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        tracing::info!(event = "stopping", signal = which);
        service::stopping();
        if let Some((member, broker)) = handover {
            member
                .shut_down_controlled(&broker, CONTROLLED_SHUTDOWN_WAIT_MAX)
                .await;
        }
        let _ = stop.send(true);
    }
}

/// SIGHUP (`systemctl reload`): re-read the spec; an invalid file changes
/// nothing, a valid one is diffed against the running spec and applied.
async fn reload_on_sighup(broker: Arc<Broker>, config: Option<PathBuf>, mut hangups: Signal) {
    while hangups.recv().await.is_some() {
        service::reloading();
        let (reloaded, config) = (broker.clone(), config.clone());
        let ok = tokio::task::spawn_blocking(move || reload(&reloaded, config.as_deref())).await;
        let outcome = if matches!(ok, Ok(true)) {
            "reloaded"
        } else {
            "reload failed, previous spec kept"
        };
        service::ready(&format!(
            "{outcome}; serving {} partition(s)",
            broker.partition_count()
        ));
    }
}

/// One reload; true when the new spec was valid and servable (whatever it changed).
/// Reads and checks the spec for a reload; `None` (logged, counted) when
/// it is invalid or needs what this build cannot serve.
/// `single_node`: a single node refuses a spec only a cluster serves; a
/// cluster member takes replicated topics, of course.
fn load_reloaded(config: Option<&std::path::Path>, single_node: bool) -> Option<ClusterSpec> {
    let origin = spec_origin(config);
    tracing::info!(event = "reload_started", file = %origin);
    let loaded = match config {
        Some(path) => config::load_spec(path).map_err(|e| e.to_string()),
        None => config::parse_spec(config::DEFAULT_SPEC_TOML, config::DEFAULT_SPEC_ORIGIN)
            .map_err(|e| e.to_string()),
    };
    let failed = |result: &str| {
        tracing::error!(event = "reload_failed", file = %origin, outcome = "nothing changed");
        let m = sluice::metrics::metrics();
        m.config_reloads.with_label_values(&[result]).inc();
        m.config_last_reload_success.set(0);
    };
    let spec = match loaded {
        Ok(spec) => spec,
        Err(errors) => {
            for line in errors.lines() {
                tracing::error!(event = "reload_invalid", error = %line);
            }
            failed("invalid");
            return None;
        }
    };
    // Refused whole: applying only the parts a single node can serve would
    // leave a running spec that claims replication it does not do.
    if single_node && let Err(reasons) = refuse_unservable(&spec, &origin) {
        for line in reasons.lines() {
            tracing::error!(event = "reload_unservable", error = %line);
        }
        failed("unservable");
        return None;
    }
    Some(spec)
}

fn reload(broker: &Broker, config: Option<&std::path::Path>) -> bool {
    let Some(spec) = load_reloaded(config, true) else {
        return false;
    };
    let actions = config::diff_specs(&broker.spec(), &spec, broker.node_id());
    let count = actions.len();
    let result = if actions.iter().all(|a| a.is_live()) {
        "ok"
    } else {
        "needs_restart"
    };
    let m = sluice::metrics::metrics();
    m.config_reloads.with_label_values(&[result]).inc();
    m.config_last_reload_success.set(1);
    m.set_spec_hash(&spec.source_hash);
    let spec_hash = spec.source_hash.clone();
    for applied in broker.apply_reload(spec, actions) {
        match applied.result {
            Ok(()) if applied.action.is_live() => {
                tracing::info!(event = "reload_action", action = %applied.action)
            }
            Ok(()) => tracing::warn!(event = "reload_action_deferred", action = %applied.action),
            Err(e) => {
                tracing::error!(event = "reload_action_failed", action = %applied.action, error = %e)
            }
        }
    }
    tracing::info!(event = "reload_done", actions = count, spec_hash = %spec_hash);
    true
}
