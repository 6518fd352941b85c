//! Live reload on SIGHUP: new topics and partitions appear, an invalid file
//! changes nothing and is reported with file and line, a removed topic is
//! kept without the opt-in, restart-only changes are reported, not applied,
//! and a replicated spec this build cannot serve changes nothing.

mod common;

use std::time::Duration;

use common::{Daemon, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const WAIT: Duration = Duration::from_secs(30);

fn sighup(daemon: &Daemon) {
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(daemon.pid(), libc::SIGHUP) }, 0);
}

fn partitions_of(producer: &BaseProducer<DefaultProducerContext>, topic: &str) -> Option<usize> {
    let metadata = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(5))
        .ok()?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

fn rewrite(daemon: &Daemon, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(&daemon.spec_path).unwrap();
    assert!(text.contains(from), "spec lacks {from:?}");
    let text = text.replace(from, to);
    std::fs::write(&daemon.spec_path, &text).unwrap();
    text
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_for_log(daemon: &Daemon, needle: &str) {
    assert!(
        wait_until(WAIT, || daemon.log().contains(needle)),
        "no {needle:?} in:\n{}",
        daemon.log()
    );
}

#[test]
fn sighup_applies_a_valid_spec_and_refuses_an_invalid_one() {
    let daemon = Daemon::start("[topics.alpha]\npartitions = 1\n");
    let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    assert_eq!(
        partitions_of(&producer, "alpha"),
        Some(1),
        "{}",
        daemon.log()
    );

    rewrite(
        &daemon,
        "[topics.alpha]\npartitions = 1\n",
        "[topics.alpha]\npartitions = 3\nretention_ms = \"1d\"\n\n[topics.beta]\npartitions = 2\n",
    );
    sighup(&daemon);
    assert!(
        wait_until(WAIT, || partitions_of(&producer, "beta") == Some(2)),
        "{}",
        daemon.log()
    );
    assert!(wait_until(WAIT, || partitions_of(&producer, "alpha") == Some(3)));
    wait_for_log(
        &daemon,
        "update topic alpha: retention.ms: 604800000 -> 86400000",
    );
    producer
        .send(
            BaseRecord::<(), _>::to("alpha")
                .partition(2)
                .payload("on a new partition"),
        )
        .unwrap();
    assert_eq!(producer.flush(Duration::from_secs(10)), Ok(()));

    // Invalid: nothing changes, the error names file, line and key.
    let text = rewrite(
        &daemon,
        "[topics.beta]\npartitions = 2\n",
        "[topics.beta]\npartitions = 0\n[topics.gamma]\n",
    );
    let line = text.lines().position(|l| l == "partitions = 0").unwrap() + 1;
    sighup(&daemon);
    wait_for_log(
        &daemon,
        &format!(
            "{}:{line}:14: topics.beta.partitions",
            daemon.spec_path.display()
        ),
    );
    wait_for_log(&daemon, "reload_failed");
    assert_eq!(partitions_of(&producer, "beta"), Some(2));
    assert_eq!(partitions_of(&producer, "gamma"), None);

    // Removed without allow_delete: kept. A new listener address: restart only.
    rewrite(
        &daemon,
        "[topics.beta]\npartitions = 0\n[topics.gamma]\n",
        "",
    );
    let port = daemon.kafka.port();
    rewrite(
        &daemon,
        &format!("kafka = \"127.0.0.1:{port}\""),
        "kafka = \"127.0.0.1:1\"",
    );
    sighup(&daemon);
    wait_for_log(
        &daemon,
        "keep topic beta: removed from the spec without allow_delete = true",
    );
    wait_for_log(&daemon, "needs restart: brokers.kafka");
    assert_eq!(
        partitions_of(&producer, "beta"),
        Some(2),
        "still served on the old address"
    );
}

#[test]
fn a_topic_marked_allow_delete_is_deleted_when_removed() {
    let daemon = Daemon::start("[topics.doomed]\npartitions = 2\nallow_delete = true\n");
    let dir = daemon.data_dir().join("doomed-1");
    assert!(dir.exists());
    rewrite(
        &daemon,
        "[topics.doomed]\npartitions = 2\nallow_delete = true\n",
        "",
    );
    sighup(&daemon);
    wait_for_log(&daemon, "delete topic doomed");
    assert!(
        wait_until(WAIT, || !dir.exists()),
        "partition directory still there"
    );
}

/// A second broker makes the spec unservable: the reload is refused whole,
/// so neither the new topics nor the single-broker parts (more partitions)
/// are applied, and the spec hash stays. The next servable file reloads.
#[test]
fn a_replicated_spec_is_refused_on_reload_and_changes_nothing() {
    let daemon = Daemon::start("[topics.alpha]\npartitions = 1\n");
    let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", daemon.bootstrap())
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    assert_eq!(partitions_of(&producer, "alpha"), Some(1));
    let hash_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("sluice_spec_info{"))
            .map(str::to_string)
    };
    let hash_before = hash_line(&daemon.scrape());
    assert!(hash_before.is_some());

    let second_broker = "data_dir = \"data\"\n\n[[brokers]]\nid = 2\nkafka = \"127.0.0.2:9092\"\n\
                         quic = \"127.0.0.2:9093\"\nmetrics = \"127.0.0.2:9644\"\ndata_dir = \"data-2\"\n";
    rewrite(&daemon, "data_dir = \"data\"\n", second_broker);
    rewrite(
        &daemon,
        "[topics.alpha]\npartitions = 1\n",
        "[topics.alpha]\npartitions = 2\n\n[topics.gamma]\npartitions = 1\n\n\
         [topics.delta]\nreplication_factor = 2\n",
    );
    sighup(&daemon);
    wait_for_log(&daemon, "reload_failed");
    let file = daemon.spec_path.display();
    let not_built = "this daemon runs as a single node, which keeps one replica per partition";
    let log = daemon.log();
    let expected = format!("{file}: topics.delta.replication_factor = 2: {not_built}");
    assert!(log.contains(&expected), "no {expected:?} in:\n{log}");
    let expected = "restart sluiced on every broker it declares";
    assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    assert_eq!(partitions_of(&producer, "alpha"), Some(1), "{log}");
    assert_eq!(partitions_of(&producer, "gamma"), None, "{log}");
    assert_eq!(partitions_of(&producer, "delta"), None, "{log}");
    assert!(!daemon.data_dir().join("gamma-0").exists());
    let text = daemon.scrape();
    assert_eq!(hash_line(&text), hash_before, "the running spec changed");
    assert_eq!(
        sample(&text, "sluice_config_reloads_total{result=\"unservable\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "sluice_config_last_reload_success"),
        Some(0.0)
    );

    // Back to one broker, without delta: the rest now applies.
    rewrite(&daemon, second_broker, "data_dir = \"data\"\n");
    rewrite(
        &daemon,
        "\n\n[topics.delta]\nreplication_factor = 2\n",
        "\n",
    );
    sighup(&daemon);
    assert!(
        wait_until(WAIT, || partitions_of(&producer, "gamma") == Some(1)),
        "{}",
        daemon.log()
    );
    assert!(wait_until(WAIT, || partitions_of(&producer, "alpha") == Some(2)));
    assert_eq!(
        sample(&daemon.scrape(), "sluice_config_last_reload_success"),
        Some(1.0)
    );
}
