//! Prometheus metrics: one registry, families named `sluice_<noun>_<unit>`,
//! HELP on every family, label sets bounded (API names, error names, topics,
//! partitions, groups; never client or member ids). Hot paths update
//! counters through `metrics()`; partition state is read from the broker at
//! scrape time (`refresh`), so gauges never drift from the truth.

mod http;
mod refresh;

pub use http::{StatusFn, serve};
pub use refresh::{refresh, refresh_quic};

use std::sync::{Arc, Mutex, OnceLock};

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Latency buckets from 100 µs to 10 s: fsyncs on SSDs sit well below the
/// 5 ms where the library's defaults start.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// `sluice_config_reloads_total`'s results: `unservable` is a valid spec this
/// build cannot serve yet (`config::unservable`).
pub const RELOAD_RESULTS: [&str; 4] = ["ok", "invalid", "unservable", "needs_restart"];

/// The error name of a request that closed its connection.
pub const CONNECTION_CLOSED: &str = "ConnectionClosed";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_duration: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub flush_duration: Histogram,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: IntGauge,
    pub spec_info: IntGaugeVec,
    pub connections: IntGauge,
    /// Exported from the start (zero on a single node).
    replication: ReplicationCounters,
    pub(crate) partition: PartitionGauges,
    pub(crate) broker: BrokerGauges,
    /// HW − committed per group and partition (`group::lag`), at scrape time.
    pub(crate) consumer_group_lag: IntGaugeVec,
    /// Registered on first use: only cluster nodes export them.
    cluster: OnceLock<ClusterGauges>,
    /// Read at every scrape for the QUIC path families (set by a cluster node).
    quic_source: Mutex<Option<QuicSource>>,
}

/// One peer's QUIC path figures, as the transport measured them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuicPeerFigures {
    pub peer: i32,
    /// Open connections to the peer now.
    pub open_connections: u64,
    /// quinn's smoothed RTT; `None` without an open connection.
    pub rtt_seconds: Option<f64>,
    /// Cumulative over every connection to the peer since the process started.
    pub counts: crate::transport::path_stats::PathCounts,
    /// Streams open now, by kind label.
    pub open_streams: Vec<(&'static str, u64)>,
}

/// What a scrape calls for the QUIC path families.
pub type QuicSource = Arc<dyn Fn() -> Vec<QuicPeerFigures> + Send + Sync>;

/// What this broker did as a partition leader.
pub struct ReplicationCounters {
    /// Counted when the controller has committed the smaller ISR.
    pub isr_shrinks: IntCounter,
    /// Counted when the controller has committed the larger ISR.
    pub isr_expands: IntCounter,
    /// Partitions this broker became the leader of.
    pub leader_elections: IntCounter,
}

/// The families only a node of a multi-broker cluster exports.
pub struct ClusterGauges {
    /// 1 when the spec this node runs differs from the one the cluster applied.
    pub spec_drift: IntGauge,
    /// Set by the controller thread after every step.
    pub controller: ControllerGauges,
    /// Set at scrape time from the transport's path statistics.
    pub(crate) quic: QuicGauges,
    /// Set by the broker's registration task.
    pub membership: MembershipGauges,
}

/// Per-peer QUIC path families (`peer` = the peer's node id).
pub(crate) struct QuicGauges {
    pub rtt_seconds: GaugeVec,
    pub connections: IntGaugeVec,
    pub open_streams: IntGaugeVec,
    pub sent_packets: IntCounterVec,
    pub lost_packets: IntCounterVec,
    pub congestion_events: IntCounterVec,
    /// `direction` = sent, received.
    pub bytes: IntCounterVec,
    pub stream_frames: IntCounterVec,
}

impl ClusterGauges {
    fn register(r: &Registry) -> Self {
        ClusterGauges {
            spec_drift: gauge(
                r,
                "sluice_spec_drift",
                "1 when this node's spec file differs from the spec the cluster applied.",
            ),
            controller: ControllerGauges {
                active: gauge(
                    r,
                    "sluice_controller_active",
                    "1 on the active controller, 0 on other voters.",
                ),
                term: gauge(
                    r,
                    "sluice_controller_term",
                    "The Raft term this voter is in.",
                ),
                leader: gauge(
                    r,
                    "sluice_controller_leader",
                    "The voter this one takes for the Raft leader; -1 when it knows none.",
                ),
                applied_index: gauge(
                    r,
                    "sluice_metadata_applied_index",
                    "The last metadata log entry this voter applied.",
                ),
                brokers: gauge_vec(
                    r,
                    "sluice_cluster_brokers",
                    "Registered brokers in the applied metadata, by state.",
                    &["state"],
                ),
                reassigning: gauge(
                    r,
                    "sluice_cluster_reassigning_partitions",
                    "Partitions whose replicas are being reassigned (new replicas catching up \
                     before the old ones go), in the applied metadata.",
                ),
                unclean_elections: counter(
                    r,
                    "sluice_unclean_elections_total",
                    "Leaders elected from outside the ISR (the topic allows it) in metadata \
                     entries this voter committed as the active controller.",
                ),
            },
            quic: QuicGauges::register(r),
            membership: MembershipGauges {
                broker_epoch: gauge(
                    r,
                    "sluice_broker_epoch",
                    "This broker's epoch from its last registration; -1 before one.",
                ),
                fenced: gauge(
                    r,
                    "sluice_broker_fenced",
                    "1 while this broker may not act as a member: unregistered, fenced, or no heartbeat acknowledged within the session timeout.",
                ),
            },
        }
    }
}

impl QuicGauges {
    fn register(r: &Registry) -> Self {
        let peer = ["peer"];
        let directed = ["peer", "direction"];
        QuicGauges {
            rtt_seconds: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "sluice_quic_rtt_seconds",
                        "quinn's smoothed round-trip time to a peer: the largest among this \
                         node's open connections to it (no series without one).",
                    ),
                    &peer,
                )
                .expect("valid metric"),
            ),
            connections: gauge_vec(
                r,
                "sluice_quic_connections",
                "Open QUIC connections to a peer, whichever node dialled.",
                &peer,
            ),
            open_streams: gauge_vec(
                r,
                "sluice_quic_open_streams",
                "QUIC streams open to a peer, by kind: message_out, message_in (node messages), \
                 replica_fetch (partitions this node follows from the peer), replica_serve \
                 (partitions the peer follows from this node).",
                &["peer", "kind"],
            ),
            sent_packets: counter_vec(
                r,
                "sluice_quic_sent_packets_total",
                "QUIC packets sent to a peer, summed over every connection since start.",
                &peer,
            ),
            lost_packets: counter_vec(
                r,
                "sluice_quic_lost_packets_total",
                "QUIC packets to a peer that quinn declared lost, summed over every connection \
                 since start.",
                &peer,
            ),
            congestion_events: counter_vec(
                r,
                "sluice_quic_congestion_events_total",
                "Congestion events (window reductions) on connections to a peer since start.",
                &peer,
            ),
            bytes: counter_vec(
                r,
                "sluice_quic_bytes_total",
                "UDP payload bytes of QUIC connections with a peer since start, by direction \
                 (sent, received).",
                &directed,
            ),
            stream_frames: counter_vec(
                r,
                "sluice_quic_stream_frames_total",
                "QUIC STREAM frames on connections with a peer since start, by direction \
                 (sent, received).",
                &directed,
            ),
        }
    }
}

/// What the controller thread knows, after its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerFigures {
    pub active: bool,
    pub term: u64,
    pub leader: Option<i32>,
    pub applied_index: u64,
    pub brokers_unfenced: i64,
    pub brokers_fenced: i64,
    pub reassigning_partitions: i64,
}

pub struct ControllerGauges {
    active: IntGauge,
    term: IntGauge,
    leader: IntGauge,
    applied_index: IntGauge,
    brokers: IntGaugeVec,
    reassigning: IntGauge,
    /// Counted by the controller thread as the active controller commits them.
    pub unclean_elections: IntCounter,
}

impl ControllerGauges {
    pub fn set(&self, figures: ControllerFigures) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.active.set(i64::from(figures.active));
        self.term.set(clamp(figures.term));
        self.leader.set(figures.leader.map_or(-1, i64::from));
        self.applied_index.set(clamp(figures.applied_index));
        self.brokers
            .with_label_values(&["unfenced"])
            .set(figures.brokers_unfenced);
        self.brokers
            .with_label_values(&["fenced"])
            .set(figures.brokers_fenced);
        self.reassigning.set(figures.reassigning_partitions);
    }
}

/// This broker's place in the cluster, as the controller last answered.
pub struct MembershipGauges {
    pub broker_epoch: IntGauge,
    pub fenced: IntGauge,
}

/// Per-partition gauges, rebuilt from the broker at every scrape.
pub(crate) struct PartitionGauges {
    pub log_size_bytes: IntGaugeVec,
    pub log_segments: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub log_end_offset: IntGaugeVec,
    pub high_watermark: IntGaugeVec,
    pub hw_lag_messages: IntGaugeVec,
    pub follower_lag_messages: IntGaugeVec,
}

/// Broker-wide gauges, also set at scrape time.
pub(crate) struct BrokerGauges {
    pub partitions: IntGauge,
    pub leader_partitions: IntGauge,
    pub under_replicated: IntGauge,
    pub under_min_isr: IntGauge,
    pub offline: IntGauge,
    pub data_dir_free_bytes: IntGauge,
    pub data_dir_size_bytes: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric families are registered once, with distinct names");
    collector
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec())
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let partition = ["topic", "partition"];
        let metrics = Self {
            requests: counter_vec(
                &r,
                "sluice_requests_total",
                "Kafka requests handled, by API.",
                &["api"],
            ),
            request_errors: counter_vec(
                &r,
                "sluice_request_errors_total",
                "Error codes answered, by API and Kafka error name.",
                &["api", "error"],
            ),
            request_duration: register(
                &r,
                HistogramVec::new(
                    histogram(
                        "sluice_request_duration_seconds",
                        "Time from a request's arrival to its reply being written, by API.",
                    ),
                    &["api"],
                )
                .expect("valid metric"),
            ),
            bytes_in: counter_vec(
                &r,
                "sluice_bytes_in_total",
                "Record bytes appended by producers, by partition.",
                &partition,
            ),
            bytes_out: counter_vec(
                &r,
                "sluice_bytes_out_total",
                "Record bytes sent to fetchers, by partition.",
                &partition,
            ),
            records_in: counter_vec(
                &r,
                "sluice_records_in_total",
                "Records appended by producers, by partition.",
                &partition,
            ),
            records_out: counter_vec(
                &r,
                "sluice_records_out_total",
                "Records sent to fetchers, by partition: the offsets spanned by the whole batches \
                 sent (a fetch sends whole batches, so records before the fetch offset count too).",
                &partition,
            ),
            flush_duration: register(
                &r,
                Histogram::with_opts(histogram(
                    "sluice_flush_duration_seconds",
                    "Latency of making a partition's appended data durable (fdatasync).",
                ))
                .expect("valid metric"),
            ),
            config_reloads: counter_vec(
                &r,
                "sluice_config_reloads_total",
                "Cluster spec reloads, by result (ok, invalid, unservable, needs_restart).",
                &["result"],
            ),
            config_last_reload_success: gauge(
                &r,
                "sluice_config_last_reload_success",
                "1 if the last reload (or the start) loaded a valid spec, else 0.",
            ),
            spec_info: gauge_vec(
                &r,
                "sluice_spec_info",
                "The hash of the cluster spec this broker runs; value 1.",
                &["hash"],
            ),
            connections: gauge(&r, "sluice_connections", "Open Kafka client connections."),
            replication: ReplicationCounters {
                isr_shrinks: counter(
                    &r,
                    "sluice_isr_shrinks_total",
                    "ISR shrinks this broker committed as partition leader.",
                ),
                isr_expands: counter(
                    &r,
                    "sluice_isr_expands_total",
                    "ISR expands this broker committed as partition leader.",
                ),
                leader_elections: counter(
                    &r,
                    "sluice_leader_elections_total",
                    "Times this broker became a partition's leader (at a new leader epoch, or again after its lease).",
                ),
            },
            consumer_group_lag: gauge_vec(
                &r,
                "sluice_consumer_group_lag",
                "Messages between a consumer group's committed offset and the partition's high watermark.",
                &["group", "topic", "partition"],
            ),
            cluster: OnceLock::new(),
            quic_source: Mutex::new(None),
            partition: PartitionGauges {
                log_size_bytes: gauge_vec(
                    &r,
                    "sluice_log_size_bytes",
                    "Bytes of all segments of a partition.",
                    &partition,
                ),
                log_segments: gauge_vec(
                    &r,
                    "sluice_log_segments",
                    "Segments of a partition.",
                    &partition,
                ),
                log_start_offset: gauge_vec(
                    &r,
                    "sluice_log_start_offset",
                    "First offset still in a partition's log.",
                    &partition,
                ),
                log_end_offset: gauge_vec(
                    &r,
                    "sluice_log_end_offset",
                    "Next offset a partition will assign (LEO).",
                    &partition,
                ),
                high_watermark: gauge_vec(
                    &r,
                    "sluice_high_watermark",
                    "Offsets below this are visible to consumers.",
                    &partition,
                ),
                hw_lag_messages: gauge_vec(
                    &r,
                    "sluice_partition_hw_lag_messages",
                    "On the leader: log end offset minus high watermark.",
                    &partition,
                ),
                follower_lag_messages: gauge_vec(
                    &r,
                    "sluice_follower_lag_messages",
                    "On the leader: its log end offset minus what each follower's last fetch asked for (the whole log before a first fetch).",
                    &["topic", "partition", "replica"],
                ),
            },
            broker: BrokerGauges {
                partitions: gauge(&r, "sluice_partitions", "Partitions on this broker."),
                leader_partitions: gauge(
                    &r,
                    "sluice_leader_partitions",
                    "Partitions this broker leads.",
                ),
                under_replicated: gauge(
                    &r,
                    "sluice_under_replicated_partitions",
                    "Partitions whose ISR is smaller than their replica set.",
                ),
                under_min_isr: gauge(
                    &r,
                    "sluice_under_min_isr_partitions",
                    "Partitions whose ISR is smaller than min.insync.replicas (acks=all fails).",
                ),
                offline: gauge(
                    &r,
                    "sluice_offline_partitions",
                    "Partitions without a leader.",
                ),
                data_dir_free_bytes: gauge(
                    &r,
                    "sluice_data_dir_free_bytes",
                    "Free bytes on the data directory's filesystem.",
                ),
                data_dir_size_bytes: gauge(
                    &r,
                    "sluice_data_dir_size_bytes",
                    "Size of the data directory's filesystem.",
                ),
            },
            registry: r,
        };
        let build = gauge_vec(
            &metrics.registry,
            "sluice_build_info",
            "The running build; value 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.register_process_collector();
        // Series exist from the start, so rates and dashboards see zeros, not gaps.
        for result in RELOAD_RESULTS {
            metrics.config_reloads.with_label_values(&[result]);
        }
        for api in crate::kafka::versions::SUPPORTED_APIS {
            let api = format!("{:?}", api.key);
            metrics.requests.with_label_values(&[&api]);
            metrics.request_duration.with_label_values(&[&api]);
            // Error names depend on the request; any request can close its
            // connection, so this series exists per API and keeps the family
            // (and error ratios per API) present before the first error.
            metrics
                .request_errors
                .with_label_values(&[&api, CONNECTION_CLOSED]);
        }
        metrics
    }

    fn register_process_collector(&self) {
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = self.registry.register(Box::new(process)) {
            tracing::warn!(event = "process_metrics_unavailable", error = %e);
        }
    }

    /// The cluster families, registered with the first call.
    pub fn cluster(&self) -> &ClusterGauges {
        self.cluster
            .get_or_init(|| ClusterGauges::register(&self.registry))
    }

    /// Makes every scrape read the QUIC path families from `source` (a
    /// cluster node's endpoint), replacing any earlier one.
    pub fn set_quic_source(&self, source: QuicSource) {
        *self.quic_source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// What this broker did as a partition leader.
    pub fn replication(&self) -> &ReplicationCounters {
        &self.replication
    }

    /// Records the spec now running, replacing the previous hash.
    pub fn set_spec_hash(&self, hash: &str) {
        self.spec_info.reset();
        self.spec_info.with_label_values(&[hash]).set(1);
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// The process-wide metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
