//! Live reload on SIGHUP: new topics and partitions appear, an invalid file
//! changes nothing and is reported with file and line, a removed topic is
//! kept without the opt-in, and restart-only changes are reported, not applied.

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
