//! Any bytes as a produced record set: `validate_batches` must not panic,
//! and whatever a leader append accepts must read back byte for byte as it
//! was appended (after offset, epoch and timestamp patching), through the
//! real segment files and indexes of a log on a scratch directory.
//!
//! The same bytes go to two logs, one per timestamp type, so the
//! LogAppendTime re-stamping (and CRC recomputation) path is covered too.
//! The logs persist across inputs (so reads also walk indexes built by
//! earlier appends) and are re-created when they grow.
//!
//! A fuzzer cannot guess a CRC-32C, so each input is also tried with every
//! batch's CRC recomputed (when that changes anything): that lets mutations
//! of the CRC-covered fields (attributes, counts, timestamps, records) reach
//! the append, the indexes and the reads. After each accepted append,
//! ListOffsets-by-timestamp (`offset_for_timestamp`, which decodes a batch)
//! and `max_timestamp` run over the log too.

#![no_main]

/// The daemon's allocator: a lying array count must not abort (see alloc_guard).
#[global_allocator]
static ALLOCATOR: sluice::alloc_guard::GuardedAllocator = sluice::alloc_guard::GuardedAllocator;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sluice::log::{LogConfig, PartitionLog, TimestampType, validate_batches};

/// Header fields this target touches (docs/log-format.md §2).
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
/// Bit 3 of the attributes, in their low byte: LogAppendTime.
const TIMESTAMP_TYPE_BIT: u8 = 0x08;

/// A fixed clock: keeps runs reproducible and age-based rolls out of play.
const NOW_MS: i64 = 1_700_000_000_000;
/// Re-create a log past this size or segment count, or far along in offsets.
const LOG_BYTES_MAX: u64 = 4 << 20;
const SEGMENTS_MAX: usize = 32;
const OFFSET_MAX: i64 = 1 << 48;

struct Scratch {
    dir: tempfile::TempDir,
    timestamp_type: TimestampType,
    log: Option<PartitionLog>,
}

impl Scratch {
    fn new(timestamp_type: TimestampType) -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("scratch dir"),
            timestamp_type,
            log: None,
        }
    }

    fn config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: 64 << 10,
            segment_index_bytes: 4096,
            index_interval_bytes: 256,
            retention_ms: None,
            timestamp_type: self.timestamp_type,
            ..LogConfig::default()
        }
    }

    fn log(&mut self) -> &mut PartitionLog {
        let too_big = self.log.as_ref().is_some_and(|log| {
            log.size_bytes() > LOG_BYTES_MAX
                || log.segment_count() > SEGMENTS_MAX
                || log.log_end_offset() > OFFSET_MAX
        });
        if too_big {
            self.log = None;
            self.dir = tempfile::tempdir().expect("scratch dir");
        }
        if self.log.is_none() {
            let path = self.dir.path().join("fuzz-0");
            let (log, _) = PartitionLog::open(&path, self.config(), NOW_MS).expect("open log");
            self.log = Some(log);
        }
        self.log.as_mut().expect("just opened")
    }
}

thread_local! {
    static LOGS: RefCell<[Scratch; 2]> = RefCell::new([
        Scratch::new(TimestampType::CreateTime),
        Scratch::new(TimestampType::LogAppendTime),
    ]);
}

/// `data` with the CRC of every whole batch it frames recomputed; stops at
/// the first thing that does not frame as a batch.
fn with_fixed_crcs(data: &[u8]) -> Vec<u8> {
    let mut fixed = data.to_vec();
    let mut position = 0usize;
    while fixed.len() - position >= sluice::log::BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(fixed[position + 8..position + 12].try_into().unwrap());
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let end = position + sluice::log::LOG_OVERHEAD_BYTES + length;
        if length < sluice::log::BATCH_HEADER_BYTES - sluice::log::LOG_OVERHEAD_BYTES
            || end > fixed.len()
        {
            break;
        }
        let crc = crc32c::crc32c(&fixed[position + ATTRIBUTES_AT..end]);
        fixed[position + CRC_AT..position + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        position = end;
    }
    fixed
}

/// `records` (whole valid batches) with what a leader may set zeroed:
/// baseOffset, partitionLeaderEpoch, crc, maxTimestamp, and the timestamp
/// type bit of the attributes (codec and other bits must survive).
fn without_patchable_fields(records: &[u8]) -> Vec<u8> {
    let mut masked = records.to_vec();
    for header in validate_batches(records, u32::MAX).expect("whole batches") {
        let at = header.position as usize;
        for field in [
            0..8,
            12..16,
            CRC_AT..CRC_AT + 4,
            MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8,
        ] {
            masked[at + field.start..at + field.end].fill(0);
        }
        masked[at + ATTRIBUTES_AT + 1] &= !TIMESTAMP_TYPE_BIT;
    }
    masked
}

fn append_and_read_back(scratch: &mut Scratch, data: &[u8], validated: bool) {
    let log = scratch.log();
    let end_before = log.log_end_offset();
    let info = match log.append_as_leader(data, 0, NOW_MS) {
        Ok(info) => info,
        Err(_) => {
            assert_eq!(
                log.log_end_offset(),
                end_before,
                "failed append moved the log end"
            );
            return;
        }
    };
    assert!(validated, "append accepted bytes validate_batches refused");
    assert_eq!(info.base_offset, end_before);
    assert_eq!(log.log_end_offset(), info.last_offset + 1);

    let slice = log
        .read(info.base_offset, u32::MAX, log.log_end_offset(), true)
        .expect("read back what was just appended");
    let file = slice.file.expect("an append leaves something to read");
    let read = file.read_to_vec().expect("read slice");
    assert_eq!(read.len(), data.len(), "read back a different length");
    // Only offsets, epochs, and (LogAppendTime) timestamps + CRC may change.
    assert!(
        without_patchable_fields(&read) == without_patchable_fields(data),
        "read back different bytes"
    );
    // What was stored must itself be a valid record set at the right offsets.
    let headers = validate_batches(&read, u32::MAX).expect("stored batches validate");
    assert_eq!(headers[0].base_offset, info.base_offset);
    assert_eq!(
        headers.last().expect("non-empty").last_offset(),
        info.last_offset
    );
    for pair in headers.windows(2) {
        assert_eq!(pair[0].next_offset(), pair[1].base_offset);
    }

    // A read from the last offset finds the batch holding it.
    let tail = log
        .read(info.last_offset, u32::MAX, log.log_end_offset(), true)
        .expect("read the last offset")
        .file
        .expect("the last batch");
    let tail_bytes = tail.read_to_vec().expect("read tail slice");
    assert!(
        read.ends_with(&tail_bytes),
        "tail read is not a suffix of the append"
    );

    // The paths that decode stored batches (ListOffsets by timestamp).
    for header in &headers {
        for target in [header.base_timestamp, header.max_timestamp] {
            let _ = log.offset_for_timestamp(target);
        }
    }
    let _ = log.max_timestamp();
}

fn run(data: &[u8]) {
    let validated = validate_batches(data, u32::MAX).is_ok();
    LOGS.with(|logs| {
        for scratch in logs.borrow_mut().iter_mut() {
            append_and_read_back(scratch, data, validated);
        }
    });
}

fuzz_target!(|data: &[u8]| {
    run(data);
    let fixed = with_fixed_crcs(data);
    if fixed != data {
        run(&fixed);
    }
});
