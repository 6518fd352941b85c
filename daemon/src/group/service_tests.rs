//! The shell with real storage: commits go to `__consumer_offsets`, are
//! replayed on reopen, and the log cleaner keeps only live state.

use std::sync::Arc;

use super::*;
use crate::broker::{Broker, now_ms};

fn open(dir: &std::path::Path) -> (Arc<Broker>, Arc<GroupCoordinator>) {
    let broker = Broker::open(crate::config::default_spec(), 1, dir.to_path_buf()).unwrap();
    broker.create_topic("t", Some(2), &[], false).ok();
    let coordinator = broker.start_group_coordinator().unwrap();
    (broker, coordinator)
}

fn value(offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: format!("m{offset}"),
        commit_timestamp_ms: 1,
    }
}

fn commit(broker: &Broker, c: &GroupCoordinator, group: &str, partition: i32, offset: i64) {
    let wait = c
        .commit(
            broker,
            (group, "", None, -1),
            vec![(("t".into(), partition), value(offset))],
        )
        .unwrap();
    assert!(
        wait.is_none(),
        "the default spec acknowledges from the page cache"
    );
}

#[test]
fn commits_replay_after_reopen_and_compaction_keeps_only_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, c) = open(dir.path());
    for offset in 0..200 {
        commit(&broker, &c, "g", 0, offset);
        commit(&broker, &c, "g", 1, offset * 2);
    }
    commit(&broker, &c, "other", 0, 7);
    let partition = c.partition_for("g").clone();
    let before = partition.offsets();
    assert_eq!(
        before.log_end_offset,
        400 + i64::from(c.partition_for("other").index == partition.index)
    );
    let size_before = partition.size_bytes();
    // The log cleaner compacts the offsets topic like any compacted topic.
    partition.lock_log().roll_now(now_ms()).unwrap();
    let stats = partition
        .clean(now_ms())
        .unwrap()
        .expect("a compacted topic, due");
    assert_eq!(stats.cleaned_up_to, before.log_end_offset);
    assert_eq!(
        partition.offsets().log_end_offset,
        before.log_end_offset,
        "offsets stay"
    );
    assert!(
        partition.size_bytes() * 10 < size_before,
        "only live entries remain: {} of {size_before} bytes",
        partition.size_bytes()
    );
    commit(&broker, &c, "g", 0, 500);
    drop(partition);
    drop(c);
    broker.close().unwrap();
    drop(broker);

    let (_broker, c) = open(dir.path());
    c.read(|core| {
        assert_eq!(
            core.committed("g", &("t".into(), 0)).map(|v| v.offset),
            Some(500)
        );
        assert_eq!(
            core.committed("g", &("t".into(), 1)).map(|v| v.offset),
            Some(398)
        );
        assert_eq!(
            core.committed("g", &("t".into(), 1))
                .map(|v| v.metadata.clone()),
            Some("m398".into())
        );
        assert_eq!(
            core.committed("other", &("t".into(), 0)).map(|v| v.offset),
            Some(7)
        );
    });
}

/// The log cleaner runs without the coordinator lock: a commit and a
/// deletion that land while a pass runs (after the roll it cleans up to)
/// are kept, and what the pass removed stays removed after a reopen.
#[test]
fn commits_during_a_cleaning_pass_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, c) = open(dir.path());
    for offset in 0..50 {
        commit(&broker, &c, "g", 0, offset);
    }
    commit(&broker, &c, "g", 1, 5);
    let partition = c.partition_for("g").clone();
    partition.lock_log().roll_now(now_ms()).unwrap();
    commit(&broker, &c, "g", 0, 900);
    c.delete_offsets(&broker, "g", &[("t".into(), 1)]).unwrap();
    let stats = partition.clean(now_ms()).unwrap().expect("due");
    assert!(stats.segments_replaced >= 1);
    drop(partition);
    drop(c);
    broker.close().unwrap();
    drop(broker);
    let (_broker, c) = open(dir.path());
    c.read(|core| {
        assert_eq!(
            core.committed("g", &("t".into(), 0)).map(|v| v.offset),
            Some(900)
        );
        assert!(core.committed("g", &("t".into(), 1)).is_none());
    });
}

#[test]
fn deleted_groups_and_offsets_stay_deleted_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, c) = open(dir.path());
    commit(&broker, &c, "gone", 0, 3);
    commit(&broker, &c, "kept", 0, 4);
    commit(&broker, &c, "kept", 1, 5);
    c.delete_group(&broker, "gone").unwrap();
    c.delete_offsets(&broker, "kept", &[("t".into(), 1)])
        .unwrap();
    assert_eq!(
        c.delete_group(&broker, "gone").unwrap_err(),
        GroupError::GroupIdNotFound
    );
    drop(c);
    broker.close().unwrap();
    drop(broker);
    let (_broker, c) = open(dir.path());
    c.read(|core| {
        assert!(core.group("gone").is_none());
        assert_eq!(
            core.committed("kept", &("t".into(), 0)).map(|v| v.offset),
            Some(4)
        );
        assert!(core.committed("kept", &("t".into(), 1)).is_none());
    });
}

#[test]
fn the_offsets_topic_is_created_with_its_fixed_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _c) = open(dir.path());
    assert!(broker.topic(OFFSETS_TOPIC).is_some());
    assert_eq!(
        broker.topic(OFFSETS_TOPIC).unwrap().partitions.len(),
        OFFSETS_TOPIC_PARTITIONS as usize
    );
}
