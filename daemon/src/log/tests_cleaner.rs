//! Compaction through the whole log: a property test against a
//! latest-value-per-key model across cleanings, crashes and reopens (it
//! also checks that what should go is gone), and a crash injected at each
//! step of a swap, which must recover to the old or the new set of segments.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use proptest::prelude::*;

use super::*;

const NOW_MS: i64 = 1_000_000;

fn compacted_config(delete_retention_ms: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        segment_index_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio_bp: 0,
            delete_retention_ms,
            ..CompactionConfig::default()
        },
        ..LogConfig::default()
    }
}

/// One record as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Bytes,
    value: Option<Bytes>,
}

/// A batch of (key, value) records; `None` values are tombstones.
fn batch(records: &[(u8, Option<u32>)], timestamp_ms: i64, compression: Compression) -> Vec<u8> {
    let records: Vec<kafka_protocol::records::Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            crate::log::producer_record(
                i,
                timestamp_ms,
                Some(Bytes::from(format!("key-{key}"))),
                value.map(|v| Bytes::from(format!("value-{v}"))),
            )
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.to_vec()
}

fn read_all(log: &PartitionLog) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log
            .read(offset, 1 << 20, i64::MAX, true)
            .unwrap()
            .file
            .expect("batches up to the log end");
        let mut bytes = Bytes::from(slice.read_to_vec().unwrap());
        let next = slice.offsets.end;
        for set in RecordBatchDecoder::decode_all(&mut bytes).unwrap() {
            for record in set.records {
                seen.push(Seen {
                    offset: record.offset,
                    key: record.key.unwrap(),
                    value: record.value,
                });
            }
        }
        assert!(next > offset, "reads make progress");
        offset = next;
    }
    seen
}

#[derive(Clone, Debug)]
enum Op {
    Produce(Vec<(u8, Option<u32>)>, bool),
    Roll,
    Clean,
    Crash,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::collection::vec((0u8..12, proptest::option::weighted(0.8, 0u32..1000)), 1..6), any::<bool>())
            .prop_map(|(records, zstd)| Op::Produce(records, zstd)),
        2 => Just(Op::Roll),
        3 => Just(Op::Clean),
        1 => Just(Op::Crash),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn compaction_keeps_exactly_the_latest_value_per_key(
        ops in proptest::collection::vec(op(), 1..40),
        keep_tombstones in any::<bool>(),
    ) {
        let delete_retention_ms = if keep_tombstones { u64::MAX / 2 } else { 0 };
        let dir = tempfile::tempdir().unwrap();
        let config = compacted_config(delete_retention_ms);
        let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), NOW_MS).unwrap();
        // Everything ever written, by offset.
        let mut written: BTreeMap<i64, (Bytes, Option<Bytes>)> = BTreeMap::new();
        let mut cleaned_up_to = 0;
        for op in ops {
            match op {
                Op::Produce(records, zstd) => {
                    let compression = if zstd { Compression::Zstd } else { Compression::None };
                    let bytes = batch(&records, NOW_MS - 10, compression);
                    let info = log.append_as_leader(&bytes, 0, NOW_MS).unwrap();
                    for (i, (key, value)) in records.iter().enumerate() {
                        written.insert(
                            info.base_offset + i as i64,
                            (
                                Bytes::from(format!("key-{key}")),
                                value.map(|v| Bytes::from(format!("value-{v}"))),
                            ),
                        );
                    }
                }
                Op::Roll => {
                    log.roll_now(NOW_MS).unwrap();
                }
                Op::Clean => {
                    let end = log.log_end_offset();
                    if let Some(stats) = log.clean_now(NOW_MS, end).unwrap() {
                        cleaned_up_to = stats.cleaned_up_to;
                    }
                }
                Op::Crash => {
                    drop(log);
                    log = PartitionLog::open(dir.path(), config.clone(), NOW_MS).unwrap().0;
                }
                Op::Close => {
                    log.close(NOW_MS).unwrap();
                    log = PartitionLog::open(dir.path(), config.clone(), NOW_MS).unwrap().0;
                }
            }
        }
        let seen = read_all(&log);
        // Every record read is one that was written, at its offset, in order.
        for pair in seen.windows(2) {
            prop_assert!(pair[0].offset < pair[1].offset);
        }
        for record in &seen {
            let (key, value) = &written[&record.offset];
            prop_assert_eq!(&record.key, key);
            prop_assert_eq!(&record.value, value);
        }
        // The latest record of every key is there, unless it is a tombstone
        // the cleaner was allowed to drop.
        let mut latest: BTreeMap<&Bytes, (i64, &Option<Bytes>)> = BTreeMap::new();
        for (offset, (key, value)) in &written {
            latest.insert(key, (*offset, value));
        }
        for (key, (offset, value)) in &latest {
            let present = seen.iter().any(|r| r.offset == *offset);
            let droppable = value.is_none() && !keep_tombstones && *offset < cleaned_up_to;
            prop_assert!(present || droppable, "latest of {:?} at {} is missing", key, offset);
        }
        // What should go is gone: below the cleaned point, one record per
        // key, and no superseded record.
        for record in seen.iter().filter(|r| r.offset < cleaned_up_to) {
            let (latest_offset, _) = latest[&record.key];
            let superseded_below = latest_offset < cleaned_up_to || latest_offset > record.offset;
            prop_assert!(
                record.offset == latest_offset || !superseded_below || latest_offset >= cleaned_up_to,
                "{:?} at {} survived though {} is later", record.key, record.offset, latest_offset
            );
            if latest_offset < cleaned_up_to {
                prop_assert_eq!(record.offset, latest_offset);
            }
            if !keep_tombstones {
                prop_assert!(record.value.is_some(), "an expired tombstone survived");
            }
        }
        prop_assert_eq!(log.log_end_offset(), written.keys().next_back().map_or(0, |o| o + 1));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A log with several sealed segments full of overwritten keys and one
/// active segment; closed cleanly, so copies of it are the same log.
fn dirty_log(dir: &Path) {
    let (mut log, _) = PartitionLog::open(dir, compacted_config(0), NOW_MS).unwrap();
    for round in 0..5u32 {
        for key in 0..8u8 {
            let value = (key % 3 != 0 || round < 4).then_some(round * 100 + u32::from(key));
            log.append_as_leader(
                &batch(&[(key, value)], NOW_MS - 10, Compression::None),
                0,
                NOW_MS,
            )
            .unwrap();
        }
        log.roll_now(NOW_MS).unwrap();
    }
    log.append_as_leader(
        &batch(&[(1, Some(9999))], NOW_MS, Compression::Lz4),
        0,
        NOW_MS,
    )
    .unwrap();
    log.close(NOW_MS).unwrap();
}

#[test]
fn a_crash_at_any_step_of_a_swap_recovers_the_old_or_the_new_segments() {
    let original = tempfile::tempdir().unwrap();
    dirty_log(original.path());
    let config = compacted_config(0);
    let before = {
        let (log, _) = PartitionLog::open(original.path(), config.clone(), NOW_MS).unwrap();
        let records = read_all(&log);
        log.close(NOW_MS).unwrap();
        records
    };
    let after = {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let (mut log, _) = PartitionLog::open(copy.path(), config.clone(), NOW_MS).unwrap();
        let end = log.log_end_offset();
        let stats = log.clean_now(NOW_MS, end).unwrap().expect("due");
        assert!(stats.segments_replaced >= 5, "{stats:?}");
        read_all(&log)
    };
    assert!(
        after.len() < before.len() / 3,
        "{} of {} records stay",
        after.len(),
        before.len()
    );
    // Crash before the commit point (cleaned files written, not renamed),
    // then after each step of the swap.
    let steps = [
        None,
        Some(SwapStep::Renamed),
        Some(SwapStep::OldDeleted),
        Some(SwapStep::Finished),
    ];
    for step in steps {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let (mut log, _) = PartitionLog::open(copy.path(), config.clone(), NOW_MS).unwrap();
        let end = log.log_end_offset();
        let job = log.prepare_clean(NOW_MS, end).expect("due");
        let (map, map_end, _) = job.build_map().unwrap();
        let groups = job.groups(map_end);
        assert_eq!(groups.len(), 1, "one swap covers every sealed segment");
        let cleaned = job.clean_group(groups[0].clone(), &map, map_end).unwrap();
        if let Some(step) = step {
            assert!(log.swap_in(&job, cleaned, Some(step)).unwrap());
        }
        drop(log); // the crash
        let (log, report) = PartitionLog::open(copy.path(), config.clone(), NOW_MS).unwrap();
        let records = read_all(&log);
        let expected = if step.is_some() { &after } else { &before };
        assert_eq!(&records, expected, "crash after {step:?}");
        assert_eq!(report.truncated_bytes, 0, "crash after {step:?}");
        assert!(
            !copy.path().join("cleaner.tmp").exists(),
            "leftovers are removed after {step:?}"
        );
    }
}

#[test]
fn keyless_records_are_refused_and_retention_does_not_delete_compacted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = compacted_config(0);
    config.retention_ms = Some(1);
    let (mut log, _) = PartitionLog::open(dir.path(), config, NOW_MS).unwrap();
    let keyless =
        super::batch::test_support::encode_batch(2, 10, NOW_MS - 10_000, Compression::Gzip);
    assert!(matches!(
        log.append_as_leader(&keyless, 0, NOW_MS),
        Err(LogError::InvalidBatch {
            reason: "a compacted topic refuses records without a key",
            ..
        })
    ));
    log.append_as_leader(
        &batch(&[(1, Some(1))], NOW_MS - 10_000, Compression::None),
        0,
        NOW_MS,
    )
    .unwrap();
    log.roll_now(NOW_MS).unwrap();
    let outcome = log.apply_retention(NOW_MS).unwrap();
    assert_eq!(
        outcome.segments_deleted, 0,
        "compact-only: retention does not delete"
    );
}

#[test]
fn never_cleans_the_active_segment_nor_past_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compacted_config(0), NOW_MS).unwrap();
    for value in 0..4 {
        log.append_as_leader(
            &batch(&[(1, Some(value))], NOW_MS, Compression::None),
            0,
            NOW_MS,
        )
        .unwrap();
    }
    // Everything is in the active segment: nothing to clean.
    let end = log.log_end_offset();
    assert!(log.clean_now(NOW_MS, end).unwrap().is_none());
    log.roll_now(NOW_MS).unwrap();
    // Sealed, but the high watermark has not passed it.
    assert!(log.clean_now(NOW_MS, 2).unwrap().is_none());
    let stats = log.clean_now(NOW_MS, end).unwrap().expect("due");
    assert_eq!(stats.cleaned_up_to, end);
    let seen = read_all(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].offset, 3);
}

#[test]
fn a_truncation_below_the_cleaned_point_makes_what_follows_dirty_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), compacted_config(0), NOW_MS).unwrap();
    for value in 0..6 {
        log.append_as_leader(
            &batch(&[(1, Some(value))], NOW_MS, Compression::None),
            0,
            NOW_MS,
        )
        .unwrap();
    }
    log.roll_now(NOW_MS).unwrap();
    let end = log.log_end_offset();
    assert_eq!(
        log.clean_now(NOW_MS, end).unwrap().unwrap().cleaned_up_to,
        6
    );
    // A follower's truncation to offset 2, then new values of the same key.
    log.truncate_to(2).unwrap();
    for value in 10..14 {
        log.append_as_leader(
            &batch(&[(1, Some(value))], NOW_MS, Compression::None),
            0,
            NOW_MS,
        )
        .unwrap();
    }
    log.roll_now(NOW_MS).unwrap();
    let end = log.log_end_offset();
    let stats = log.clean_now(NOW_MS, end).unwrap().expect("dirty again");
    assert_eq!(stats.cleaned_up_to, end);
    let seen = read_all(&log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].value.as_deref(), Some(&b"value-13"[..]));
}
