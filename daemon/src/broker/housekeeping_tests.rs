//! What the broker keeps in order with a real data directory: its
//! checkpoints (three files for every partition, none inside the
//! partitions, DeleteRecords kept across a restart, a data directory from
//! before adopted without losing a log start offset) and the expiry of
//! idempotent producers at the spec's `producer_id_expiration_ms`.

use std::path::Path;

use kafka_protocol::records::Compression;

use super::*;
use crate::log::test_support::encode_batch;
use crate::log::{
    CLEANER_CHECKPOINT_FILE, LOG_START_OFFSET_CHECKPOINT_FILE, RECOVERY_POINT_CHECKPOINT_FILE,
};

const FILES: [&str; 3] = [
    RECOVERY_POINT_CHECKPOINT_FILE,
    LOG_START_OFFSET_CHECKPOINT_FILE,
    CLEANER_CHECKPOINT_FILE,
];

fn open(data_dir: &Path) -> Arc<Broker> {
    Broker::open(crate::config::default_spec(), 1, data_dir.to_path_buf()).expect("open")
}

/// A topic `t` of 3 partitions, 10 records each, and records below 3
/// deleted from partition 1.
fn populate(broker: &Broker) {
    let topic = broker
        .create_topic("t", Some(3), &[], false)
        .expect("topic");
    for partition in topic.hosted_partitions() {
        for i in 0..5 {
            let batch = encode_batch(2, 10, 1_000 + i, Compression::None);
            let info = partition.append(&batch, now_ms()).expect("append");
            partition.advance_high_watermark(info.last_offset + 1);
        }
    }
    assert_eq!(
        topic
            .partition(1)
            .unwrap()
            .delete_records_before(3)
            .unwrap(),
        3
    );
}

fn file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_data_directory_keeps_every_partitions_offsets_in_three_files() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    populate(&broker);
    // DeleteRecords is durable before it answers.
    assert!(file(dir.path(), LOG_START_OFFSET_CHECKPOINT_FILE).contains("t 1 3\n"));
    broker.close().unwrap();
    drop(broker);
    let recovery_points = file(dir.path(), RECOVERY_POINT_CHECKPOINT_FILE);
    for line in ["t 0 10\n", "t 1 10\n", "t 2 10\n"] {
        assert!(recovery_points.contains(line), "{recovery_points}");
    }
    for partition in 0..3 {
        for name in FILES {
            let own = dir.path().join(format!("t-{partition}")).join(name);
            assert!(!own.exists(), "{} exists", own.display());
        }
    }
    let broker = open(dir.path());
    let offsets = broker.topic("t").unwrap().partition(1).unwrap().offsets();
    assert_eq!(
        offsets.log_start_offset, 3,
        "DeleteRecords survives a restart"
    );
}

#[test]
fn a_data_directory_from_before_is_adopted_with_its_log_start_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    populate(&broker);
    broker.close().unwrap();
    drop(broker);
    // The layout before: each partition's offsets in its own files.
    for name in FILES {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    for partition in 0..3 {
        let own = dir.path().join(format!("t-{partition}"));
        let log_start = if partition == 1 { 3 } else { 0 };
        std::fs::write(own.join(RECOVERY_POINT_CHECKPOINT_FILE), "0\n1\n10\n").unwrap();
        std::fs::write(
            own.join(LOG_START_OFFSET_CHECKPOINT_FILE),
            format!("0\n1\n{log_start}\n"),
        )
        .unwrap();
    }

    let broker = open(dir.path());
    let offsets = broker.topic("t").unwrap().partition(1).unwrap().offsets();
    assert_eq!(
        offsets.log_start_offset, 3,
        "the old log start offset is kept"
    );
    assert!(file(dir.path(), LOG_START_OFFSET_CHECKPOINT_FILE).contains("t 1 3\n"));
    for partition in 0..3 {
        let own = dir.path().join(format!("t-{partition}"));
        assert!(!own.join(RECOVERY_POINT_CHECKPOINT_FILE).exists());
        assert!(!own.join(LOG_START_OFFSET_CHECKPOINT_FILE).exists());
    }
}

#[test]
fn a_deleted_topic_leaves_the_checkpoints_before_its_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    populate(&broker);
    broker.delete_topic("t").unwrap();
    for name in FILES {
        let text = file(dir.path(), name);
        assert!(!text.contains("t "), "{name}: {text}");
    }
    // Recreated under the same name, it starts from nothing.
    let topic = broker.create_topic("t", Some(3), &[], false).unwrap();
    assert_eq!(topic.partition(1).unwrap().offsets().log_start_offset, 0);
}

#[test]
fn idempotent_producers_expire_after_the_specs_producer_id_expiration() {
    use crate::log::test_support::encode_idempotent_batch;
    let text = crate::config::DEFAULT_SPEC_TOML.replace(
        "producer_id_expiration_ms = \"1d\"",
        "producer_id_expiration_ms = \"1h\"",
    );
    let spec = crate::config::parse_spec(&text, "test").unwrap();
    assert_eq!(spec.cluster.producer_id_expiration_ms, 3_600_000);
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(spec, 1, dir.path().to_path_buf()).unwrap();
    let topic = broker.create_topic("t", Some(1), &[], false).unwrap();
    let partition = &topic.partition(0).unwrap();
    let now = now_ms();
    partition
        .append(&encode_idempotent_batch(7, 0, 0, 3, now), now)
        .unwrap();
    let producers = || partition.lock_log().producer_state().len();
    assert_eq!(producers(), 1);
    broker.housekeeping(now + 3_599_000, true);
    assert_eq!(producers(), 1, "kept within the hour");
    broker.housekeeping(now + 3_601_000, false);
    assert_eq!(producers(), 1, "expiry runs with retention");
    broker.housekeeping(now + 3_601_000, true);
    assert_eq!(producers(), 0, "forgotten after the hour");
}

/// Every log closes cleanly at shutdown, also those the group coordinator
/// (or a request) still holds: each has its clean-shutdown marker and
/// trimmed indexes, and a change after the close is refused.
#[test]
fn close_closes_every_log_even_those_still_held() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    populate(&broker);
    let _groups = crate::group::GroupCoordinator::start(&broker).unwrap();
    let held = broker.topic("t").unwrap().partition(0).unwrap().clone();
    broker.close().unwrap();
    let mut closed = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let partition_dir = entry.unwrap().path();
        if !partition_dir.join("00000000000000000000.log").exists() {
            continue;
        }
        assert!(
            partition_dir.join(crate::log::CLEAN_SHUTDOWN_FILE).exists(),
            "{} was not closed cleanly",
            partition_dir.display()
        );
        let index = partition_dir.join("00000000000000000000.index");
        assert!(
            std::fs::metadata(&index).unwrap().len() < 4096,
            "{}",
            index.display()
        );
        closed += 1;
    }
    assert_eq!(closed, 3 + crate::group::OFFSETS_TOPIC_PARTITIONS as usize);
    let batch = encode_batch(1, 10, 1_000, Compression::None);
    let refused = held.append(&batch, now_ms()).unwrap_err();
    assert!(
        matches!(refused, PartitionError::Log(LogError::Closed { .. })),
        "{refused}"
    );
}

#[test]
fn a_scrape_does_not_wait_for_a_log_held_by_a_stalled_append() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    populate(&broker);
    let partition = broker.topic("t").unwrap().partition(0).unwrap().clone();
    let first = partition.stats();
    assert_eq!(first.offsets.log_end_offset, 10);
    // Another thread holds the log lock, as an append whose write or
    // fsync is stuck on the disk does, until told to let go.
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = {
        let partition = partition.clone();
        std::thread::spawn(move || {
            let _log = partition.lock_log();
            held_tx.send(()).unwrap();
            released.recv().unwrap();
        })
    };
    held.recv().unwrap();
    partition.advance_high_watermark(10);
    let (done_tx, done) = std::sync::mpsc::channel();
    {
        let partition = partition.clone();
        std::thread::spawn(move || done_tx.send(partition.stats()).unwrap());
    }
    let during = done.recv_timeout(std::time::Duration::from_secs(10));
    release.send(()).unwrap();
    holder.join().unwrap();
    let during = during.expect("the scrape waited for the log lock");
    assert_eq!(during.offsets.log_end_offset, 10, "the last figures");
    assert_eq!(during.size_bytes, first.size_bytes);
}
