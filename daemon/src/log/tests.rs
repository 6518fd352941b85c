//! Whole-log tests: reads, rolls, retention, truncation, flushing, and the
//! crash and corruption cases of docs/log-format.md. The model-based
//! property test lives in `tests_model`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::batch::test_support::{as_stored_by_leader, encode_batch, encode_batch_with_timestamps};
use super::*;

pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_index_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub(crate) fn open(dir: &Path, config: LogConfig) -> (PartitionLog, RecoveryReport) {
    PartitionLog::open(dir, config, 1_000).expect("open")
}

/// Appends `batches` batches of `count` records; returns each batch's bytes as stored.
fn append_batches(
    log: &mut PartitionLog,
    batches: u32,
    count: u32,
    value_bytes: usize,
) -> Vec<(i64, Vec<u8>)> {
    (0..batches)
        .map(|i| {
            let records = encode_batch(
                count,
                value_bytes,
                10_000 + i64::from(i) * 10,
                Compression::None,
            );
            let info = log.append_as_leader(&records, 1, 2_000).expect("append");
            let stored = as_stored_by_leader(&records, info.base_offset, 1);
            (info.base_offset, stored)
        })
        .collect()
}

/// Reads the whole log batch by batch and returns (base offset, bytes) per batch.
fn read_all(log: &PartitionLog) -> Vec<(i64, Vec<u8>)> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log
            .read(offset, 1, i64::MAX, true)
            .expect("read")
            .file
            .expect("a batch");
        let bytes = slice.read_to_vec().expect("pread");
        let header = parse_header(&bytes, 0).expect("header");
        assert_eq!(header.batch_bytes as usize, bytes.len());
        batches.push((header.base_offset, bytes));
        offset = header.next_offset();
    }
    batches
}

/// Every byte the log holds, from its start, as one read returns them.
fn stored_bytes(log: &PartitionLog) -> Vec<u8> {
    log.read(log.log_start_offset(), u32::MAX, i64::MAX, false)
        .expect("read")
        .file
        .expect("records")
        .read_to_vec()
        .expect("pread")
}

fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

#[test]
fn append_assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), LogConfig::default());
    assert_eq!((report.log_start_offset, report.log_end_offset), (0, 0));
    let mut records = encode_batch(3, 10, 5_000, Compression::None);
    records.extend(encode_batch(2, 10, 6_000, Compression::Zstd));
    let info = log.append_as_leader(&records, 4, 7_000).unwrap();
    let records = as_stored_by_leader(&records, 0, 4);
    assert_eq!(
        info,
        AppendInfo {
            base_offset: 0,
            last_offset: 4,
            record_count: 5,
            log_append_time_ms: -1,
            max_timestamp_ms: 6_001,
            duplicate: false,
            leader_epoch: 4,
        }
    );
    assert_eq!(stored_bytes(&log), records);
    let mut bytes = bytes::Bytes::from(records);
    let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
    let offsets: Vec<i64> = sets
        .iter()
        .flat_map(|set| set.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    assert!(
        sets.iter()
            .all(|set| set.records.iter().all(|r| r.partition_leader_epoch == 4))
    );
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.leader_epoch_end_offset(4), Some((4, 5)));
}

#[test]
fn invalid_append_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    append_batches(&mut log, 2, 2, 10);
    let size_before = log.size_bytes();
    let mut records = encode_batch(2, 10, 1, Compression::None);
    let mut bad = encode_batch(2, 10, 1, Compression::None);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    records.extend(bad);
    let stored_before = read_all(&log);
    let error = log.append_as_leader(&records, 1, 1).unwrap_err();
    assert!(matches!(error, LogError::CorruptBatch { .. }), "{error}");
    assert_eq!((log.log_end_offset(), log.size_bytes()), (4, size_before));
    assert_eq!(
        read_all(&log),
        stored_before,
        "a refused append writes nothing"
    );
    let too_big = encode_batch(1, 2_000, 1, Compression::None);
    log.set_config(LogConfig {
        max_message_bytes: 1_000,
        ..LogConfig::default()
    });
    assert!(matches!(
        log.append_as_leader(&too_big, 1, 1),
        Err(LogError::BatchTooLarge { .. })
    ));
    let small = encode_batch(1, 20, 1, Compression::None);
    assert!(matches!(
        log.append_as_leader(&small, 0, 1),
        Err(LogError::StaleLeaderEpoch { .. })
    ));
    assert_eq!(log.log_end_offset(), 4);
}

/// A record set of more batches than one `pwritev` takes iovecs (two per
/// batch: the patched header, the untouched rest) is written whole.
#[test]
fn an_append_of_many_batches_spans_several_vectored_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let mut records = Vec::new();
    for i in 0..700 {
        records.extend(encode_batch(2, 7, 1_000 + i, Compression::None));
    }
    let info = log.append_as_leader(&records, 3, 5_000).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 1_399));
    let stored = stored_bytes(&log);
    assert_eq!(stored, as_stored_by_leader(&records, 0, 3));
    drop(log);
    let (_, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report.log_end_offset, 1_400);
}

#[test]
fn read_respects_max_bytes_min_one_batch_and_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let batches = append_batches(&mut log, 4, 5, 20); // offsets 0-4, 5-9, 10-14, 15-19
    let batch_len = batches[0].1.len() as u32;
    assert!(
        batches
            .iter()
            .all(|(_, bytes)| bytes.len() as u32 == batch_len)
    );
    let len_of = |slice: ReadSlice| slice.file.map_or(0, |file| file.len);
    assert_eq!(
        len_of(log.read(0, batch_len - 1, i64::MAX, false).unwrap()),
        0
    );
    assert_eq!(
        len_of(log.read(0, batch_len - 1, i64::MAX, true).unwrap()),
        batch_len
    );
    // max_bytes ends the read at the last whole batch within it.
    assert_eq!(
        len_of(log.read(0, 2 * batch_len + 5, i64::MAX, false).unwrap()),
        2 * batch_len
    );
    // Mid-batch start: the whole containing batch comes back.
    let slice = log
        .read(7, batch_len, i64::MAX, false)
        .unwrap()
        .file
        .unwrap();
    assert_eq!(slice.read_to_vec().unwrap(), batches[1].1);
    // High watermark 12: batch 10-14 is not fully below it, so it is excluded.
    assert_eq!(
        len_of(log.read(0, u32::MAX, 12, true).unwrap()),
        2 * batch_len
    );
    assert_eq!(
        len_of(log.read(0, u32::MAX, 15, true).unwrap()),
        3 * batch_len
    );
    assert_eq!(len_of(log.read(12, u32::MAX, 12, true).unwrap()), 0);
    assert_eq!(len_of(log.read(20, u32::MAX, i64::MAX, true).unwrap()), 0);
    // Each slice knows the offsets its whole batches span (records out).
    let offsets_of = |slice: ReadSlice| slice.file.map(|file| file.offsets);
    let read = |offset, max_bytes, below| log.read(offset, max_bytes, below, true).unwrap();
    assert_eq!(offsets_of(read(0, batch_len - 1, i64::MAX)), Some(0..5));
    assert_eq!(
        offsets_of(read(0, 2 * batch_len + 5, i64::MAX)),
        Some(0..10)
    );
    assert_eq!(offsets_of(read(7, batch_len, i64::MAX)), Some(5..10));
    assert_eq!(offsets_of(read(0, u32::MAX, 12)), Some(0..10));
    assert_eq!(offsets_of(read(3, u32::MAX, 15)), Some(0..15));
    assert_eq!(offsets_of(read(11, u32::MAX, i64::MAX)), Some(10..20));
    assert!(matches!(
        log.read(21, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { offset: 21, .. })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn rolls_indexes_and_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let written = append_batches(&mut log, 40, 3, 30);
    assert!(log.segment_count() > 3, "small segments roll");
    assert_eq!(read_all(&log), written);
    let max = log.max_timestamp();
    let bases = log.segment_base_offsets();
    log.close(3_000).unwrap();
    // Sealed segments' indexes are trimmed to their used entries.
    assert!(file_len(&segment_path(dir.path(), bases[0], ".index")) < 1024);
    assert!(dir.path().join(".clean-shutdown").exists());
    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert_eq!(
        (
            report.segments_recovered,
            report.indexes_rebuilt,
            report.truncated_bytes
        ),
        (0, 0, 0)
    );
    assert!(
        !dir.path().join(".clean-shutdown").exists(),
        "marker is consumed by open"
    );
    assert_eq!(read_all(&log), written);
    assert_eq!(log.max_timestamp(), max);
    assert_eq!(log.segment_base_offsets(), bases);
    assert_eq!(log.recovery_point(), log.log_end_offset());
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    // Non-monotonic producer timestamps across batches and segments.
    let timestamps: Vec<Vec<i64>> = (0..30)
        .map(|i| vec![1_000 + i * 10, 900 + i * 10, 1_005 + i * 10])
        .collect();
    for (i, batch_timestamps) in timestamps.iter().enumerate() {
        let codec = if i % 2 == 0 {
            Compression::None
        } else {
            Compression::Snappy
        };
        let records = encode_batch_with_timestamps(batch_timestamps, 40, codec);
        log.append_as_leader(&records, 1, 5).unwrap();
    }
    let flat: Vec<i64> = timestamps.concat();
    for target in [
        0, 900, 1_001, 1_006, 1_150, 1_195, 1_290, 1_295, 1_296, 5_000,
    ] {
        let expected = flat
            .iter()
            .position(|&t| t >= target)
            .map(|i| (i as i64, flat[i]));
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expected,
            "target {target}"
        );
    }
    assert_eq!(log.max_timestamp(), Some((1_295, 89)));
}

#[test]
fn log_append_time_topics_stamp_batches() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let (mut log, _) = open(dir.path(), config);
    // Two batches in one request: each is stamped and gets its own CRC.
    let mut records = encode_batch(3, 10, 5, Compression::Gzip);
    records.extend(encode_batch(2, 10, 9, Compression::None));
    let info = log.append_as_leader(&records, 0, 77_000).unwrap();
    assert_eq!(
        (info.log_append_time_ms, info.max_timestamp_ms),
        (77_000, 77_000)
    );
    let stored = stored_bytes(&log);
    // validate_batches checks every CRC.
    let headers = validate_batches(&stored, u32::MAX).unwrap();
    assert_eq!(
        headers.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        [0, 3]
    );
    for header in &headers {
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 77_000);
    }
    assert_eq!(
        headers.iter().map(|h| h.record_count).collect::<Vec<_>>(),
        [3, 2]
    );
    // The decoder reads the first (gzip) batch: its records survive stamping.
    let decoded = RecordBatchDecoder::decode(&mut bytes::Bytes::from(stored)).unwrap();
    assert_eq!(decoded.records.len(), 3);
    assert_eq!(log.offset_for_timestamp(70_000).unwrap(), Some((0, 77_000)));
    assert_eq!(log.offset_for_timestamp(77_001).unwrap(), None);
}

/// Writes 12 batches over several segments, then drops the log without
/// closing it (a crash of the process; the page cache survives).
fn crashed_log(dir: &Path) -> (Vec<(i64, Vec<u8>)>, PathBuf) {
    let (mut log, _) = open(dir, small_config());
    let written = append_batches(&mut log, 12, 4, 40);
    let active_base = *log.segment_base_offsets().last().unwrap();
    drop(log);
    (written, segment_path(dir, active_base, ".log"))
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (written, active) = crashed_log(dir.path());
    let valid_len = file_len(&active);
    let mut file = OpenOptions::new().append(true).open(&active).unwrap();
    std::io::Write::write_all(&mut file, &[0xAB; 333]).unwrap();
    drop(file);
    let (log, report) = open(dir.path(), small_config());
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, 333);
    assert_eq!(file_len(&active), valid_len);
    assert_eq!(read_all(&log), written);
}

#[test]
fn torn_last_batch_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (written, active) = crashed_log(dir.path());
    let last_len = written.last().unwrap().1.len() as u64;
    let len = file_len(&active);
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - last_len / 2)
        .unwrap();
    let (mut log, report) = open(dir.path(), small_config());
    assert_eq!(report.truncated_bytes, last_len - last_len / 2);
    assert_eq!(read_all(&log), written[..written.len() - 1].to_vec());
    // The log continues at the dropped batch's offset.
    let info = log
        .append_as_leader(&encode_batch(1, 5, 1, Compression::None), 1, 1)
        .unwrap();
    assert_eq!(info.base_offset, written.last().unwrap().0);
}

#[test]
fn flipped_byte_in_last_batch_fails_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    let (written, active) = crashed_log(dir.path());
    let len = file_len(&active);
    let mut bytes = fs::read(&active).unwrap();
    bytes[len as usize - 3] ^= 0x10;
    fs::write(&active, &bytes).unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(
        report.truncated_bytes,
        written.last().unwrap().1.len() as u64
    );
    assert_eq!(read_all(&log), written[..written.len() - 1].to_vec());
}

#[test]
fn corrupt_middle_segment_keeps_the_longest_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (written, _) = crashed_log(dir.path());
    let (log, _) = open(dir.path(), small_config());
    let bases = log.segment_base_offsets();
    log.close(2_000).unwrap();
    // Corrupt the first batch of the second segment, then "crash" (no marker).
    let second = segment_path(dir.path(), bases[1], ".log");
    let mut bytes = fs::read(&second).unwrap();
    bytes[70] ^= 0xFF;
    fs::write(&second, &bytes).unwrap();
    fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();
    fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.segments_deleted as usize, bases.len() - 2);
    assert_eq!(log.log_end_offset(), bases[1]);
    let kept: Vec<_> = written
        .iter()
        .filter(|(offset, _)| *offset < bases[1])
        .cloned()
        .collect();
    assert_eq!(read_all(&log), kept);
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let written = append_batches(&mut log, 30, 3, 30);
    let bases = log.segment_base_offsets();
    let expected_lookup = log.offset_for_timestamp(10_155).unwrap();
    log.close(2_000).unwrap();
    fs::remove_file(segment_path(dir.path(), bases[0], ".index")).unwrap();
    fs::remove_file(segment_path(dir.path(), bases[1], ".timeindex")).unwrap();
    let damaged = segment_path(dir.path(), bases[2], ".index");
    OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(5)
        .unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.indexes_rebuilt, 3);
    assert_eq!(report.truncated_bytes, 0);
    assert!(file_len(&segment_path(dir.path(), bases[0], ".index")) > 0);
    assert_eq!(file_len(&damaged) % 8, 0);
    assert_eq!(read_all(&log), written);
    assert_eq!(log.offset_for_timestamp(10_155).unwrap(), expected_lookup);
}

#[test]
fn recovery_logs_a_warning_with_context() {
    let dir = tempfile::tempdir().unwrap();
    let (_, active) = crashed_log(dir.path());
    let len = file_len(&active);
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let captured = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || CapturedWriter(sink.clone()))
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || open(dir.path(), small_config()));
    let text = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(text.contains("WARN"), "{text}");
    for key in ["partition_dir", "segment", "valid_bytes", "truncated_bytes"] {
        assert!(text.contains(key), "missing {key} in {text}");
    }
}

struct CapturedWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn retention_by_size_and_time_keeps_readers_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    let written = append_batches(&mut log, 40, 3, 30);
    let held = log
        .read(0, u32::MAX, i64::MAX, false)
        .unwrap()
        .file
        .unwrap();
    let total = log.size_bytes();
    log.set_config(LogConfig {
        retention_bytes: Some(total / 2),
        ..small_config()
    });
    let outcome = log.apply_retention(5_000).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.size_bytes() >= total / 2);
    assert_eq!(outcome.log_start_offset, log.log_start_offset());
    assert!(!segment_path(dir.path(), 0, ".log").exists());
    assert_eq!(
        held.read_to_vec().unwrap()[..written[0].1.len()],
        written[0].1[..],
        "unlinked segment still readable"
    );
    assert!(matches!(
        log.read(0, 10, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Time: every segment is old; the log rolls an empty segment and keeps its end.
    let end = log.log_end_offset();
    log.set_config(LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    });
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(
        (
            log.segment_count(),
            log.log_start_offset(),
            log.log_end_offset()
        ),
        (1, end, end)
    );
    let (log, _) = {
        drop(log);
        open(dir.path(), small_config())
    };
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
}

#[test]
fn truncate_to_drops_the_suffix_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    for epoch in [1, 2, 3] {
        for _ in 0..8 {
            log.append_as_leader(&encode_batch(3, 30, 1, Compression::None), epoch, 1)
                .unwrap();
        }
    }
    assert_eq!(log.leader_epoch_end_offset(1), Some((1, 24)));
    log.flush(2).unwrap();
    log.truncate_to(31).unwrap(); // inside batch 30-32: the whole batch goes
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.leader_epoch_end_offset(2), Some((2, 30)));
    assert_eq!(log.leader_epoch_end_offset(3), None);
    assert_eq!(log.recovery_point(), 30);
    drop(log); // crash
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.latest_leader_epoch(), Some(2));
    log.truncate_to(3).unwrap();
    assert_eq!((log.log_end_offset(), log.segment_count()), (3, 1));
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(log.leader_epoch_end_offset(1), None);
}

#[test]
fn the_high_watermark_is_checkpointed_and_never_read_past_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.checkpointed_high_watermark(), None);
    append_batches(&mut log, 10, 3, 30);
    log.note_high_watermark(21);
    log.flush(2).unwrap();
    drop(log); // crash: the checkpoint written with the sync stays
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.checkpointed_high_watermark(), Some(21));
    let text = fs::read_to_string(dir.path().join(HIGH_WATERMARK_CHECKPOINT_FILE)).unwrap();
    assert_eq!(text, "0\n1\n21\n");
    // A log that lost its tail (or truncated it) holds less than was committed.
    log.truncate_to(12).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Some(12));
    log.close(3).unwrap();
    let (log, _) = open(dir.path(), small_config());
    assert_eq!(log.checkpointed_high_watermark(), Some(12));
}

#[test]
fn truncate_below_log_start_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    append_batches(&mut log, 30, 3, 30);
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        ..small_config()
    });
    log.apply_retention(5).unwrap();
    let start = log.log_start_offset();
    assert!(start > 10);
    log.truncate_to(start - 5).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (start - 5, start - 5, 1)
    );
    drop(log);
    let (log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), start - 5);
}

#[test]
fn group_commit_advances_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::PageCache {
            interval_messages: Some(10),
            interval_ms: Some(500),
        },
        ..small_config()
    };
    let (mut log, _) = open(dir.path(), config);
    assert!(log.pending_sync().is_none());
    append_batches(&mut log, 2, 3, 10);
    assert!(!log.flush_due(1_100));
    assert!(log.flush_due(1_500), "interval_ms elapsed");
    append_batches(&mut log, 2, 3, 10);
    assert!(log.flush_due(1_100), "interval_messages reached");
    let pending = log.pending_sync().unwrap();
    append_batches(&mut log, 1, 3, 10); // lands while the sync runs
    let durable = pending.sync().unwrap();
    assert_eq!(durable, 12);
    log.complete_sync(durable, 1_200).unwrap();
    assert_eq!(log.recovery_point(), 12);
    assert!(!log.flush_due(1_200));
    log.set_config(LogConfig {
        flush: FlushPolicy::FsyncEveryAppend,
        ..small_config()
    });
    assert!(log.flush_due(1_200));
    log.flush(1_300).unwrap();
    assert_eq!(log.recovery_point(), 15);
    assert!(log.pending_sync().is_none() && !log.flush_due(1_300));
    let text = fs::read_to_string(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    assert_eq!(text, "0\n1\n15\n");
}

#[test]
fn follower_appends_must_continue_the_log() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path(), LogConfig::default());
    let (mut follower, _) = open(follower_dir.path(), LogConfig::default());
    leader
        .append_as_leader(&encode_batch(2, 10, 1, Compression::None), 3, 1)
        .unwrap();
    leader
        .append_as_leader(&encode_batch(2, 10, 1, Compression::None), 5, 1)
        .unwrap();
    let all = leader
        .read(0, u32::MAX, i64::MAX, true)
        .unwrap()
        .file
        .unwrap()
        .read_to_vec()
        .unwrap();
    let info = follower.append_as_follower(&all, 9).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 3, 4)
    );
    assert_eq!(
        follower.leader_epoch_entries(),
        leader.leader_epoch_entries()
    );
    assert!(matches!(
        follower.append_as_follower(&all, 9),
        Err(LogError::NonContiguousOffsets {
            expected: 4,
            found: 0
        })
    ));
    assert_eq!(
        follower
            .read(0, u32::MAX, i64::MAX, true)
            .unwrap()
            .file
            .unwrap()
            .read_to_vec()
            .unwrap(),
        all
    );
}

#[test]
fn an_epoch_begun_without_appends_goes_on_truncation_and_older_epochs_are_refused_until_then() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path(), LogConfig::default());
    let (mut follower, _) = open(follower_dir.path(), LogConfig::default());
    leader
        .append_as_leader(&encode_batch(2, 10, 1, Compression::None), 3, 1)
        .unwrap();
    let first = leader.read(0, u32::MAX, i64::MAX, true).unwrap();
    let first = first.file.unwrap().read_to_vec().unwrap();
    follower.append_as_follower(&first, 2).unwrap();
    // The follower led epoch 5 for a moment, appending nothing.
    follower.assign_leader_epoch(5).unwrap();
    leader.assign_leader_epoch(4).unwrap();
    leader
        .append_as_leader(&encode_batch(2, 10, 1, Compression::None), 4, 3)
        .unwrap();
    let second = leader.read(2, u32::MAX, i64::MAX, true).unwrap();
    let second = second.file.unwrap().read_to_vec().unwrap();
    assert!(matches!(
        follower.append_as_follower(&second, 4),
        Err(LogError::StaleLeaderEpoch {
            epoch: 4,
            latest_epoch: 5
        })
    ));
    follower.truncate_to(2).unwrap();
    assert_eq!(follower.latest_leader_epoch(), Some(3), "epoch 5 is gone");
    follower.append_as_follower(&second, 4).unwrap();
    assert_eq!(
        follower.leader_epoch_entries(),
        leader.leader_epoch_entries()
    );
    let reopened_entries = follower.leader_epoch_entries().to_vec();
    follower.close(5).unwrap();
    let (follower, _) = open(follower_dir.path(), LogConfig::default());
    assert_eq!(follower.leader_epoch_entries(), &reopened_entries[..]);
}

#[test]
fn leftover_files_are_cleaned_up_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    append_batches(&mut log, 3, 1, 10);
    log.close(2).unwrap();
    fs::write(dir.path().join("leader-epoch-checkpoint.tmp"), "half").unwrap();
    fs::write(segment_path(dir.path(), 999, ".index"), [0u8; 16]).unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
    assert!(!segment_path(dir.path(), 999, ".index").exists());
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn a_sync_captured_before_a_truncation_does_not_vouch_for_later_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    append_batches(&mut log, 4, 2, 10);
    let stale = log.pending_sync().unwrap();
    stale.sync().unwrap();
    log.truncate_to(2).unwrap();
    append_batches(&mut log, 4, 2, 10);
    log.complete_pending_sync(&stale, 5).unwrap();
    assert_eq!(log.recovery_point(), 0, "the stale capture is ignored");
    let fresh = log.pending_sync().unwrap();
    fresh.sync().unwrap();
    log.complete_pending_sync(&fresh, 6).unwrap();
    assert_eq!(log.recovery_point(), 10);
}

#[test]
fn the_log_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
    assert_send_sync::<PendingSync>();
    assert_send_sync::<FileSlice>();
}

#[test]
fn a_read_limited_by_max_bytes_ends_on_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let (mut log, _) = open(dir.path(), config);
    // Batches of varying sizes, several per index interval and some larger.
    let mut sizes = Vec::new();
    for i in 0..60u32 {
        let written = append_batches(&mut log, 1, 1 + i % 4, 10 + (i as usize * 37) % 400);
        sizes.push(written[0].1.len() as u64);
    }
    let len_of = |slice: ReadSlice| slice.file.map_or(0, |file| u64::from(file.len));
    for max_bytes in (100..=6000u64).step_by(97) {
        // Expected: the longest prefix of whole batches within max_bytes (at least one).
        let mut expected = 0u64;
        for size in &sizes {
            if expected + size > max_bytes {
                break;
            }
            expected += size;
        }
        let expected = if expected == 0 { sizes[0] } else { expected };
        let got = len_of(log.read(0, max_bytes as u32, i64::MAX, true).unwrap());
        assert_eq!(got, expected, "max_bytes {max_bytes}");
    }
}

#[test]
fn delete_records_moves_the_log_start_durably_and_retention_finishes_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small_config());
    append_batches(&mut log, 30, 4, 40);
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3, "the test needs several segments");
    // Inside the second segment: the first goes at once, the second stays.
    let start = bases[1] + 2;
    assert_eq!(log.advance_log_start_offset(start).unwrap(), start);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.segment_base_offsets()[0], bases[1]);
    assert!(matches!(
        log.read(start - 1, 1 << 20, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let slice = log
        .read(start, 1 << 20, i64::MAX, true)
        .unwrap()
        .file
        .unwrap();
    let first = parse_header(&slice.read_to_vec().unwrap(), 0).unwrap();
    assert!(first.base_offset <= start && start <= first.last_offset());
    assert_eq!(
        log.advance_log_start_offset(start - 1).unwrap(),
        start,
        "never moved back"
    );
    // A crash keeps it (checkpointed before answering).
    drop(log);
    let (mut log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), start);
    assert!(matches!(
        log.offset_for_timestamp(0).unwrap(),
        Some((offset, _)) if offset >= start
    ));
    // The segment holding the start goes once wholly below it.
    let later = bases[2] + 1;
    log.advance_log_start_offset(later).unwrap();
    assert_eq!(log.segment_base_offsets()[0], bases[2]);
    log.close(3_000).unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert_eq!(log.log_start_offset(), later);
}
