//! The Prometheus endpoint: every family the dashboards use is exported
//! with HELP from the start, series whose labels are known in advance (APIs,
//! partitions held) exist at zero before any traffic, counters follow real
//! traffic, partition gauges match the log, and no label carries a
//! client-chosen id.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Families only a node of a multi-broker cluster exports.
const CLUSTER_ONLY: [&str; 18] = [
    "sluice_unclean_elections_total",
    "sluice_cluster_reassigning_partitions",
    "sluice_quic_rtt_seconds",
    "sluice_quic_connections",
    "sluice_quic_open_streams",
    "sluice_quic_sent_packets_total",
    "sluice_quic_lost_packets_total",
    "sluice_quic_congestion_events_total",
    "sluice_quic_bytes_total",
    "sluice_quic_stream_frames_total",
    "sluice_spec_drift",
    "sluice_controller_active",
    "sluice_controller_term",
    "sluice_controller_leader",
    "sluice_metadata_applied_index",
    "sluice_cluster_brokers",
    "sluice_broker_epoch",
    "sluice_broker_fenced",
];

#[test]
fn metrics_follow_traffic_and_cover_the_dashboards() {
    let daemon = Daemon::start("[topics.m]\npartitions = 2\n");
    let text = daemon.scrape();
    let allowed: BTreeSet<&str> = include_str!("../grafana/metrics.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for name in &allowed {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        // `up` is Prometheus' own; group lag has no series (and so no HELP
        // line) until a group commits, follower lag until a partition has
        // followers: their labels are not known in advance.
        // Cluster families are exported by cluster nodes only (tests/cluster.rs).
        let cluster_only = CLUSTER_ONLY.contains(&family);
        let unlabelled = [
            "up",
            "sluice_consumer_group_lag",
            "sluice_follower_lag_messages",
        ];
        if unlabelled.contains(&family) || cluster_only {
            assert!(
                !exported.contains(family) || !cluster_only,
                "{family} on a single node"
            );
            continue;
        }
        assert!(
            exported.contains(family),
            "family {family} used by the dashboards is not exported"
        );
    }
    assert_eq!(
        sample(&text, "sluice_log_end_offset{partition=\"1\",topic=\"m\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "sluice_config_last_reload_success"),
        Some(1.0)
    );

    let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("client.id", "never-a-label")
        .create()
        .unwrap();
    for i in 0..100 {
        let payload = format!("message-{i:03}");
        producer
            .send(
                BaseRecord::<(), _>::to("m")
                    .partition(i % 2)
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let settled = wait_until(Duration::from_secs(10), || {
        let text = daemon.scrape();
        sample(
            &text,
            "sluice_records_in_total{partition=\"0\",topic=\"m\"}",
        ) == Some(50.0)
            && sample(
                &text,
                "sluice_records_in_total{partition=\"1\",topic=\"m\"}",
            ) == Some(50.0)
            && sample(&text, "sluice_log_end_offset{partition=\"1\",topic=\"m\"}") == Some(50.0)
            && sample(&text, "sluice_high_watermark{partition=\"0\",topic=\"m\"}") == Some(50.0)
    });
    let text = daemon.scrape();
    assert!(settled, "{text}");
    assert!(sample(&text, "sluice_bytes_in_total{partition=\"1\",topic=\"m\"}").unwrap() > 500.0);
    assert!(sample(&text, "sluice_requests_total{api=\"Produce\"}").unwrap() >= 1.0);
    assert!(text.contains("sluice_request_duration_seconds_bucket{api=\"Metadata\""));
    assert!(
        !text.contains("never-a-label"),
        "client ids must not become labels"
    );
    // The group coordinator's __consumer_offsets partitions count too, as in Kafka.
    let internal = f64::from(sluice::group::OFFSETS_TOPIC_PARTITIONS);
    assert_eq!(sample(&text, "sluice_partitions"), Some(2.0 + internal));

    // A consume shows up as bytes out; a fetch of a partition that does not exist as an error.
    let output = std::process::Command::new("kcat")
        .args([
            "-b",
            &daemon.bootstrap(),
            "-C",
            "-t",
            "m",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .output()
        .expect("kcat");
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 50);
    let text = daemon.scrape();
    assert!(
        sample(&text, "sluice_bytes_out_total{partition=\"0\",topic=\"m\"}").unwrap() > 500.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_records_out_total{partition=\"0\",topic=\"m\"}"
        ),
        Some(50.0),
        "one read of a 50-record partition"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_records_out_total{partition=\"1\",topic=\"m\"}"
        ),
        Some(0.0),
        "partition 1 was not read"
    );
}

/// Before any request: every advertised API and every partition held has
/// its series at 0, so dashboards show zeros, not gaps; a partition that
/// appears later (CreateTopics, reload) gets its zeros too, and a deleted
/// topic's counters go with it.
#[test]
fn known_series_exist_at_zero_from_the_first_scrape() {
    let mut daemon = Daemon::start(
        "[topics.declared]\npartitions = 3\n\n[topics.doomed]\npartitions = 1\nallow_delete = true\n",
    );
    let text = daemon.scrape();
    assert_eq!(
        sample(&text, "sluice_requests_total{api=\"Produce\"}"),
        Some(0.0),
        "{text}"
    );
    for api in sluice::kafka::versions::SUPPORTED_APIS {
        let api = format!("{:?}", api.key);
        for series in [
            format!("sluice_requests_total{{api=\"{api}\"}}"),
            format!("sluice_request_duration_seconds_count{{api=\"{api}\"}}"),
            format!("sluice_request_errors_total{{api=\"{api}\",error=\"ConnectionClosed\"}}"),
        ] {
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in:\n{text}");
        }
    }
    let partition_families = [
        "sluice_bytes_in_total",
        "sluice_records_in_total",
        "sluice_bytes_out_total",
        "sluice_records_out_total",
        "sluice_log_end_offset",
        "sluice_high_watermark",
        "sluice_partition_hw_lag_messages",
    ];
    let zeros = |text: &str, topic: &str, partitions: i32| {
        for family in partition_families {
            for partition in 0..partitions {
                let series = format!("{family}{{partition=\"{partition}\",topic=\"{topic}\"}}");
                assert_eq!(sample(text, &series), Some(0.0), "{series} in:\n{text}");
            }
        }
    };
    zeros(&text, "declared", 3);
    zeros(&text, "doomed", 1);
    assert_eq!(
        sample(&text, "sluice_config_reloads_total{result=\"unservable\"}"),
        Some(0.0)
    );

    // Created through the API: zeros at the next scrape, before any produce.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new("later", 2, TopicReplication::Fixed(1))],
            &options,
        ))
        .unwrap();
    assert_eq!(created[0], Ok("later".to_string()));
    zeros(&daemon.scrape(), "later", 2);

    // Deleted by a reload: its counters go too.
    let spec = std::fs::read_to_string(&daemon.spec_path).unwrap();
    let spec = spec.replace("[topics.doomed]\npartitions = 1\nallow_delete = true\n", "");
    std::fs::write(&daemon.spec_path, spec).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(daemon.pid(), libc::SIGHUP) }, 0);
    let gone = wait_until(Duration::from_secs(30), || {
        !daemon.scrape().contains("topic=\"doomed\"")
    });
    assert!(gone, "{}\n{}", daemon.scrape(), daemon.log());
    zeros(&daemon.scrape(), "declared", 3);
    assert!(daemon.running());
}
