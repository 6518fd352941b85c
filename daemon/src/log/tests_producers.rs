//! Producer state through the whole log: duplicates answered with their
//! original offsets, out-of-order and fenced batches refused, and the same
//! state after a clean close (snapshot), a crash (snapshot + replay), a
//! lost or corrupt snapshot, and a truncation (rewound with the log).

use std::path::Path;

use super::batch::test_support::encode_idempotent_batch;
use super::tests::{open, small_config};
use super::*;

const PID: i64 = 4242;

fn produce(
    log: &mut PartitionLog,
    epoch: i16,
    first_seq: i32,
    count: u32,
) -> Result<AppendInfo, LogError> {
    let records =
        encode_idempotent_batch(PID, epoch, first_seq, count, 50_000 + i64::from(first_seq));
    log.append_as_leader(&records, 0, 60_000)
}

/// 40 batches of 5 records, sequences 0..200, over several segments.
fn fill(log: &mut PartitionLog) -> Vec<AppendInfo> {
    (0..40)
        .map(|i| produce(log, 0, i * 5, 5).expect("in-order append"))
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_retry_is_answered_with_its_original_offsets_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let infos = fill(&mut log);
    let end = log.log_end_offset();
    let retry = produce(&mut log, 0, 190, 5).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (infos[38].base_offset, infos[38].last_offset)
    );
    assert_eq!(log.log_end_offset(), end, "nothing appended");
    // Older than the last five batches: no longer recognised, so out of order.
    assert!(matches!(
        produce(&mut log, 0, 170, 5),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            expected: 200,
            ..
        }))
    ));
    assert!(matches!(
        produce(&mut log, 0, 201, 5),
        Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))
    ));
    // A stale epoch is fenced; a bumped epoch restarts at sequence 0.
    let bumped = produce(&mut log, 1, 0, 2).unwrap();
    assert!(!bumped.duplicate && bumped.base_offset == end);
    assert!(matches!(
        produce(&mut log, 0, 200, 1),
        Err(LogError::Producer(ProducerError::FencedEpoch {
            current_epoch: 1,
            ..
        }))
    ));
    assert_eq!(log.log_end_offset(), end + 2);
}

#[test]
fn state_survives_a_clean_close_a_crash_and_a_lost_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    fill(&mut log);
    let expected = log.producer_state().clone();
    assert!(log.segment_count() > 3, "the test needs rolls");
    assert!(
        !snapshot_files(dir.path()).is_empty(),
        "rolls write snapshots"
    );
    // Crash: dropped without close; the newest snapshot + replay rebuilds it.
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(!report.clean_shutdown);
    assert_eq!(log.producer_state(), &expected);
    // Clean close writes a snapshot at the log end.
    let end = log.log_end_offset();
    log.close(2_000).unwrap();
    assert!(snapshot_files(dir.path()).contains(&format!("{end:020}.snapshot")));
    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert_eq!(log.producer_state(), &expected);
    drop(log);
    // Every snapshot corrupt: all are dropped and the whole log is replayed.
    for name in snapshot_files(dir.path()) {
        std::fs::write(dir.path().join(name), b"SLPS garbage").unwrap();
    }
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.producer_state(), &expected);
    assert!(snapshot_files(dir.path()).is_empty());
    // And duplicates are still recognised after all that.
    assert!(produce(&mut log, 0, 195, 5).unwrap().duplicate);
}

#[test]
fn a_truncated_batch_is_never_taken_for_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let infos = fill(&mut log);
    // A follower truncating below the last three batches (and below the
    // snapshots of the segments rolled after them).
    log.truncate_to(infos[37].base_offset).unwrap();
    let last = log
        .producer_state()
        .get(PID)
        .unwrap()
        .batches
        .back()
        .copied()
        .unwrap();
    assert_eq!(last.last_seq, 184);
    let again = produce(&mut log, 0, 185, 5).unwrap();
    assert!(!again.duplicate, "its original was truncated away");
    assert_eq!(again.base_offset, infos[37].base_offset);
    // Reopening sees the same rewound state.
    let expected = log.producer_state().clone();
    drop(log);
    let (log, _) = open(dir.path(), small_config());
    assert_eq!(log.producer_state(), &expected);
}

#[test]
fn a_follower_builds_the_leaders_state_from_the_same_batches() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path(), small_config());
    let (mut follower, _) = open(follower_dir.path(), small_config());
    fill(&mut leader);
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let slice = leader
            .read(offset, 1 << 20, i64::MAX, true)
            .unwrap()
            .file
            .unwrap();
        let bytes = slice.read_to_vec().unwrap();
        let info = follower.append_as_follower(&bytes, 70_000).unwrap();
        offset = info.last_offset + 1;
    }
    assert_eq!(follower.producer_state(), leader.producer_state());
}

#[test]
fn producers_expire_and_are_then_accepted_at_any_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    produce(&mut log, 0, 0, 5).unwrap();
    assert_eq!(log.expire_producers(50_000 + 1_000, 86_400_000), 0);
    assert_eq!(log.expire_producers(50_000 + 86_400_000 + 4, 86_400_000), 1);
    assert!(!produce(&mut log, 0, 777, 1).unwrap().duplicate);
}

#[test]
fn transactional_and_control_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let mut records = encode_idempotent_batch(PID, 0, 0, 2, 1_000);
    for bit in [batch::ATTRIBUTE_TRANSACTIONAL, batch::ATTRIBUTE_CONTROL] {
        let mut flagged = records.clone();
        let at = batch::ATTRIBUTES_AT;
        let attributes = i16::from_be_bytes([flagged[at], flagged[at + 1]]) | bit;
        flagged[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = batch::compute_crc(&flagged);
        flagged[batch::CRC_AT..batch::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            log.append_as_leader(&flagged, 0, 2_000),
            Err(LogError::InvalidBatch { .. })
        ));
    }
    records.truncate(records.len());
    assert_eq!(log.log_end_offset(), 0);
}
