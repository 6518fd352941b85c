//! The shell with real storage: commits go to `__consumer_offsets`, are
//! replayed on reopen, and the log cleaner keeps only live state.

use std::sync::Arc;

use super::*;
use crate::broker::{Broker, now_ms};

fn open(dir: &std::path::Path) -> (Arc<Broker>, Arc<GroupCoordinator>) {
    let broker = Broker::open(crate::config::default_spec(), 1, dir.to_path_buf()).unwrap();
    broker.create_topic("t", Some(2), &[], false).ok();
    let coordinator = crate::group::GroupCoordinator::start(&broker).unwrap();
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
    let partition = c.offsets_partition("g").unwrap();
    let before = partition.offsets();
    assert_eq!(
        before.log_end_offset,
        400 + i64::from(c.offsets_partition("other").unwrap().index == partition.index)
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
    let partition = c.offsets_partition("g").unwrap();
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
        broker.topic(OFFSETS_TOPIC).unwrap().hosted_count(),
        OFFSETS_TOPIC_PARTITIONS as usize
    );
}

/// Holds writes under one directory until opened: a disk that stalls.
#[derive(Debug, Default)]
struct StallingDisk {
    /// The stalled directory, and whether a write is waiting on it.
    state: std::sync::Mutex<(Option<std::path::PathBuf>, bool)>,
    changed: std::sync::Condvar,
}

impl StallingDisk {
    fn stall(&self, dir: &std::path::Path) {
        self.state.lock().unwrap().0 = Some(dir.to_path_buf());
    }

    fn resume(&self) {
        self.state.lock().unwrap().0 = None;
        self.changed.notify_all();
    }

    fn wait_for_a_stalled_write(&self, timeout: std::time::Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !s.1)
            .unwrap();
        state.1
    }
}

impl crate::log::Storage for StallingDisk {
    fn write_at(
        &self,
        file: &std::fs::File,
        path: &std::path::Path,
        pieces: &[std::io::IoSlice<'_>],
        offset: u64,
    ) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap();
        while state.0.as_ref().is_some_and(|dir| path.starts_with(dir)) {
            state.1 = true;
            self.changed.notify_all();
            state = self.changed.wait(state).unwrap();
        }
        drop(state);
        crate::log::OsStorage.write_at(file, path, pieces, offset)
    }

    fn set_len(
        &self,
        file: &std::fs::File,
        path: &std::path::Path,
        len: u64,
    ) -> std::io::Result<()> {
        crate::log::OsStorage.set_len(file, path, len)
    }

    fn sync_data(&self, file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
        crate::log::OsStorage.sync_data(file, path)
    }

    fn sync_filesystem(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::log::OsStorage.sync_filesystem(path)
    }
}

/// Opens the stall again however the test ends, so no thread stays stuck.
struct ResumeOnDrop(Arc<StallingDisk>);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// No lock that every group needs is held across a write: while one
/// group's commit is stuck in a stalled write to its offsets partition,
/// a group on another offsets partition commits and the coordinator
/// answers reads.
#[test]
fn a_commit_stuck_on_a_stalled_disk_holds_up_no_other_group() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(StallingDisk::default());
    let _resume = ResumeOnDrop(disk.clone());
    let broker = Broker::open_with_storage(
        crate::config::default_spec(),
        1,
        dir.path().to_path_buf(),
        disk.clone(),
    )
    .unwrap();
    broker.create_topic("t", Some(2), &[], false).unwrap();
    let c = crate::group::GroupCoordinator::start(&broker).unwrap();
    let stuck_group = "stuck";
    let stuck_partition = c.offsets_partition(stuck_group).unwrap().index;
    let other_group = (0..)
        .map(|i| format!("other-{i}"))
        .find(|g| c.offsets_partition(g).unwrap().index != stuck_partition)
        .unwrap();
    disk.stall(
        &dir.path()
            .join(format!("{OFFSETS_TOPIC}-{stuck_partition}")),
    );

    let stuck = {
        let (broker, c) = (broker.clone(), c.clone());
        std::thread::spawn(move || commit(&broker, &c, stuck_group, 0, 1))
    };
    assert!(
        disk.wait_for_a_stalled_write(std::time::Duration::from_secs(10)),
        "the commit reached the stalled write"
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let (broker, c) = (broker.clone(), c.clone());
        std::thread::spawn(move || {
            commit(&broker, &c, &other_group, 0, 2);
            let groups = c.read(|core| core.groups().count());
            let _ = done_tx.send(groups);
        });
    }
    let groups = done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("another group's commit and a read finish while one write is stalled");
    assert!(groups >= 1);
    assert!(!stuck.is_finished(), "the stalled commit is still waiting");
    disk.resume();
    stuck.join().unwrap();
    c.read(|core| {
        assert_eq!(
            core.committed(stuck_group, &("t".into(), 0))
                .map(|v| v.offset),
            Some(1)
        );
    });
}
