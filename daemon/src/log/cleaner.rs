//! Log compaction decisions, without I/O: when a partition is due for
//! cleaning, the bounded key → latest-offset map built from its dirty part,
//! which records a cleaned batch keeps, and how a batch is rewritten.
//! `partition_cleaner.rs` drives these over the files and swaps the result
//! in crash-safely.
//!
//! Offsets never change: a batch that keeps some records is rewritten with
//! the same base offset and last offset delta and only those records; a run
//! of batches that keeps nothing becomes one empty batch (no records) over
//! the same offsets, as Kafka leaves behind, so segments stay contiguous and
//! every reader and recovery rule of the log still holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use super::batch::{
    ATTRIBUTES_AT, BASE_SEQUENCE_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_AT, BatchHeader, CRC_AT,
    LAST_OFFSET_DELTA_AT, LOG_OVERHEAD_BYTES, MAGIC_V2, MAX_TIMESTAMP_AT, PRODUCER_EPOCH_AT,
    PRODUCER_ID_AT, RECORD_COUNT_AT,
};
use super::records::{self, RecordView};

/// Keys the offset map holds in one cleaning pass (about 48 bytes each):
/// when full, the pass cleans up to the offset it reached and the next pass
/// goes on from there (Kafka's `log.cleaner.dedupe.buffer.size`).
pub const OFFSET_MAP_ENTRIES_MAX: usize = 1_000_000;

/// Kafka's compaction settings of one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionConfig {
    /// `min.cleanable.dirty.ratio`, in ten-thousandths (0.5 = 5000).
    pub min_cleanable_dirty_ratio_bp: u32,
    /// `min.compaction.lag.ms`: records younger than this are never cleaned.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned
    /// whatever the ratio. None: never forced.
    pub max_compaction_lag_ms: Option<u64>,
    /// `delete.retention.ms`: how long a tombstone stays after it was written.
    pub delete_retention_ms: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_cleanable_dirty_ratio_bp: 5_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// What the due-check needs of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Largest record timestamp (or last modification) in the segment.
    pub largest_timestamp_ms: i64,
    /// Smallest batch timestamp, for `max.compaction.lag.ms`; -1 unknown.
    pub first_timestamp_ms: i64,
}

/// A cleaning pass to run: segments `[0, segments)` of the log (the clean
/// part and the dirty part), whose dirty part starts at `first_dirty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanPlan {
    pub segments: usize,
    pub first_dirty: i64,
    /// End of the cleanable range: base of the first segment not cleaned.
    pub cleanable_end: i64,
}

/// Whether a log is due for cleaning. `segments` excludes the active one;
/// only segments wholly below the high watermark and older than the
/// minimum lag are cleanable; due when the dirty share of their bytes
/// reaches the ratio, or a dirty segment is older than the maximum lag.
pub fn plan(
    segments: &[SegmentInfo],
    first_dirty: i64,
    high_watermark: i64,
    config: &CompactionConfig,
    now_ms: i64,
) -> Option<CleanPlan> {
    let min_lag = i64::try_from(config.min_compaction_lag_ms).unwrap_or(i64::MAX);
    let cleanable = segments
        .iter()
        .take_while(|s| {
            s.next_offset <= high_watermark
                && now_ms.saturating_sub(s.largest_timestamp_ms) >= min_lag
        })
        .count();
    let cleanable_segments = &segments[..cleanable];
    let dirty: Vec<&SegmentInfo> = cleanable_segments
        .iter()
        .filter(|s| s.next_offset > first_dirty)
        .collect();
    if dirty.is_empty() {
        return None;
    }
    let total_bytes: u64 = cleanable_segments.iter().map(|s| s.size_bytes).sum();
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
    let by_ratio = total_bytes > 0
        && u128::from(dirty_bytes) * 10_000
            >= u128::from(total_bytes) * u128::from(config.min_cleanable_dirty_ratio_bp);
    let by_lag = config.max_compaction_lag_ms.is_some_and(|max_lag| {
        let max_lag = i64::try_from(max_lag).unwrap_or(i64::MAX);
        dirty.iter().any(|s| {
            s.first_timestamp_ms >= 0 && now_ms.saturating_sub(s.first_timestamp_ms) > max_lag
        })
    });
    (by_ratio || by_lag).then(|| CleanPlan {
        segments: cleanable,
        first_dirty,
        cleanable_end: cleanable_segments
            .last()
            .map_or(first_dirty, |s| s.next_offset),
    })
}

/// Key → offset of its latest record in the range mapped so far. Keys are
/// held as 128-bit hashes (two independent keyed SipHashes), as Kafka holds
/// MD5s: bounded memory whatever the key sizes.
#[derive(Debug)]
pub struct OffsetMap {
    hashers: (RandomState, RandomState),
    latest: HashMap<u128, i64>,
    capacity: usize,
}

impl OffsetMap {
    pub fn new(capacity: usize) -> OffsetMap {
        OffsetMap {
            hashers: (RandomState::new(), RandomState::new()),
            latest: HashMap::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let mut first = self.hashers.0.build_hasher();
        first.write(key);
        let mut second = self.hashers.1.build_hasher();
        second.write(key);
        (u128::from(first.finish()) << 64) | u128::from(second.finish())
    }

    /// Whether a batch of `keys` more keys can be put without passing the
    /// capacity (a batch is mapped whole or not at all).
    pub fn has_room_for(&self, keys: usize) -> bool {
        self.latest.len() + keys <= self.capacity
    }

    pub fn put(&mut self, key: &[u8], offset: i64) {
        let hash = self.hash(key);
        self.latest.insert(hash, offset);
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&self.hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// What a cleaning pass knows when it decides about one record.
#[derive(Clone, Copy, Debug)]
pub struct RetainRules<'a> {
    pub map: &'a OffsetMap,
    /// Records at or past this offset were not mapped: all are kept.
    pub map_end: i64,
    pub delete_retention_ms: u64,
    pub now_ms: i64,
}

impl RetainRules<'_> {
    /// Kafka's rule: a record is kept unless a later record has its key, it
    /// is a tombstone past `delete.retention.ms`, or it has no key at all.
    pub fn keeps(&self, record: &RecordView<'_>, offset: i64, timestamp_ms: i64) -> bool {
        if offset >= self.map_end {
            return true;
        }
        let Some(key) = record.key else {
            return false;
        };
        if self.map.latest(key).is_some_and(|latest| latest > offset) {
            return false;
        }
        if record.value_is_null {
            let retention = i64::try_from(self.delete_retention_ms).unwrap_or(i64::MAX);
            return self.now_ms.saturating_sub(timestamp_ms) <= retention;
        }
        true
    }
}

/// What cleaning makes of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum CleanedBatch {
    /// Every record stays: copy the batch as it is.
    Unchanged,
    /// Some stay: these bytes replace the batch (same offsets).
    Rewritten(Vec<u8>),
    /// None stay: the batch's offsets join a run of removed offsets.
    Removed,
}

/// The timestamp of a record of `header`'s batch.
pub fn record_timestamp(header: &BatchHeader, record: &RecordView<'_>) -> i64 {
    if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp.saturating_add(record.timestamp_delta)
    }
}

/// Cleans one stored batch (`bytes`, whole) by `rules`. `keep_whole`: the
/// batch is its producer's last, which idempotence needs kept as it is.
pub fn clean_batch(
    header: &BatchHeader,
    bytes: &[u8],
    rules: &RetainRules<'_>,
    keep_whole: bool,
) -> Result<CleanedBatch, &'static str> {
    if keep_whole || header.record_count == 0 {
        return Ok(if header.record_count == 0 {
            CleanedBatch::Removed
        } else {
            CleanedBatch::Unchanged
        });
    }
    let codec = header.attributes & 0x7;
    let body = records::decompress(codec, &bytes[BATCH_HEADER_BYTES..])?;
    let views = records::walk(&body, header.record_count)?;
    let kept: Vec<&RecordView<'_>> = views
        .iter()
        .filter(|r| {
            let offset = header.base_offset + r.offset_delta;
            rules.keeps(r, offset, record_timestamp(header, r))
        })
        .collect();
    if kept.len() == views.len() {
        return Ok(CleanedBatch::Unchanged);
    }
    if kept.is_empty() {
        return Ok(CleanedBatch::Removed);
    }
    let mut records_bytes = Vec::with_capacity(kept.iter().map(|r| r.raw.len()).sum());
    for record in &kept {
        records_bytes.extend_from_slice(record.raw);
    }
    let payload = records::compress(codec, &records_bytes)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + payload.len());
    out.extend_from_slice(&bytes[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&payload);
    set_i32(&mut out, RECORD_COUNT_AT, kept.len() as i32);
    finish_header(&mut out);
    Ok(CleanedBatch::Rewritten(out))
}

/// An empty batch (no records) standing for offsets `[first, last]` whose
/// records were all cleaned away, in leader epoch `leader_epoch`.
pub fn empty_batch(
    first: i64,
    last: i64,
    leader_epoch: i32,
    timestamp_ms: i64,
    attributes: i16,
) -> Vec<u8> {
    assert!(first <= last && last - first <= i64::from(i32::MAX));
    let mut out = vec![0u8; BATCH_HEADER_BYTES];
    out[..8].copy_from_slice(&first.to_be_bytes());
    set_i32(&mut out, 12, leader_epoch);
    out[16] = MAGIC_V2 as u8;
    // Keep only the timestamp type: no codec, not transactional, no control.
    let attributes = attributes & super::batch::ATTRIBUTE_LOG_APPEND_TIME;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    set_i32(&mut out, LAST_OFFSET_DELTA_AT, (last - first) as i32);
    out[super::batch::BASE_TIMESTAMP_AT..super::batch::BASE_TIMESTAMP_AT + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    out[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
    out[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
    set_i32(&mut out, BASE_SEQUENCE_AT, -1);
    set_i32(&mut out, RECORD_COUNT_AT, 0);
    finish_header(&mut out);
    out
}

fn set_i32(buf: &mut [u8], at: usize, value: i32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Sets batchLength and the CRC for the bytes as they now are.
fn finish_header(batch: &mut [u8]) {
    let length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    set_i32(batch, BATCH_LENGTH_AT, length);
    let crc = super::batch::compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{parse_header, validate_batches};
    use crate::log::records::encode_record;

    fn info(base_offset: i64, next_offset: i64, size_bytes: u64, ts: i64) -> SegmentInfo {
        SegmentInfo {
            base_offset,
            next_offset,
            size_bytes,
            largest_timestamp_ms: ts,
            first_timestamp_ms: ts,
        }
    }

    #[test]
    fn due_by_dirty_ratio_below_the_high_watermark_and_the_minimum_lag() {
        let config = CompactionConfig::default();
        let segments = [
            info(0, 10, 100, 0),
            info(10, 20, 100, 0),
            info(20, 30, 100, 5_000),
        ];
        // Two of three dirty: due, up to the high watermark's segment.
        let plan = plan(&segments, 10, 30, &config, 10_000).unwrap();
        assert_eq!((plan.segments, plan.cleanable_end), (3, 30));
        assert_eq!(
            super::plan(&segments, 10, 25, &config, 10_000)
                .unwrap()
                .segments,
            2
        );
        // One of three dirty: below 0.5.
        assert_eq!(super::plan(&segments, 20, 30, &config, 10_000), None);
        // Nothing dirty.
        assert_eq!(super::plan(&segments, 30, 30, &config, 10_000), None);
        // The minimum lag keeps the young segment out.
        let lagged = CompactionConfig {
            min_compaction_lag_ms: 6_000,
            ..config
        };
        assert_eq!(
            super::plan(&segments, 10, 30, &lagged, 10_000)
                .unwrap()
                .cleanable_end,
            20
        );
        // The maximum lag forces an old dirty segment whatever the ratio.
        let forced = CompactionConfig {
            max_compaction_lag_ms: Some(1_000),
            ..config
        };
        assert!(super::plan(&segments, 20, 30, &forced, 10_000).is_some());
    }

    /// (key, value) of one test record; `None` is null.
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn batch_of(base_offset: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (key, value)) in records.iter().enumerate() {
            body.extend(encode_record(i as i64, *key, *value));
        }
        let mut out = empty_batch(
            base_offset,
            base_offset + records.len() as i64 - 1,
            0,
            1_000,
            0,
        );
        out.extend_from_slice(&body);
        set_i32(&mut out, RECORD_COUNT_AT, records.len() as i32);
        finish_header(&mut out);
        out
    }

    #[test]
    fn keeps_the_latest_per_key_young_tombstones_and_unmapped_records() {
        let bytes = batch_of(
            100,
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), Some(b"1")),
                (Some(b"a"), Some(b"2")),
                (Some(b"c"), None),
                (None, Some(b"keyless")),
                (Some(b"b"), Some(b"late")),
            ],
        );
        let header = parse_header(&bytes, 0).unwrap();
        let mut map = OffsetMap::new(10);
        map.put(b"a", 102);
        map.put(b"b", 105);
        map.put(b"c", 103);
        let rules = RetainRules {
            map: &map,
            map_end: 105,
            delete_retention_ms: 10_000,
            now_ms: 5_000,
        };
        let CleanedBatch::Rewritten(cleaned) = clean_batch(&header, &bytes, &rules, false).unwrap()
        else {
            panic!("some records go");
        };
        let cleaned_header = validate_batches(&cleaned, u32::MAX).unwrap()[0];
        assert_eq!(
            (cleaned_header.base_offset, cleaned_header.last_offset()),
            (100, 105)
        );
        let kept: Vec<i64> =
            records::walk(&cleaned[BATCH_HEADER_BYTES..], cleaned_header.record_count)
                .unwrap()
                .iter()
                .map(|r| 100 + r.offset_delta)
                .collect();
        // a@100 superseded; b@101 superseded by the unmapped b@105; c's
        // tombstone is young; the keyless record goes.
        assert_eq!(kept, vec![102, 103, 105]);
        // An old tombstone goes too.
        let later = RetainRules {
            now_ms: 20_000,
            ..rules
        };
        let CleanedBatch::Rewritten(older) = clean_batch(&header, &bytes, &later, false).unwrap()
        else {
            panic!()
        };
        assert_eq!(parse_header(&older, 0).unwrap().record_count, 2);
        // A producer's last batch stays whole.
        assert_eq!(
            clean_batch(&header, &bytes, &rules, true).unwrap(),
            CleanedBatch::Unchanged
        );
    }

    #[test]
    fn a_batch_with_nothing_left_is_removed_and_empty_batches_are_valid() {
        let bytes = batch_of(7, &[(Some(b"a"), Some(b"1"))]);
        let header = parse_header(&bytes, 0).unwrap();
        let mut map = OffsetMap::new(10);
        map.put(b"a", 9);
        let rules = RetainRules {
            map: &map,
            map_end: 10,
            delete_retention_ms: 0,
            now_ms: 0,
        };
        assert_eq!(
            clean_batch(&header, &bytes, &rules, false).unwrap(),
            CleanedBatch::Removed
        );
        let empty = empty_batch(7, 9, 3, 1_000, 0);
        let header = validate_batches(&empty, u32::MAX).unwrap()[0];
        assert_eq!(
            (
                header.base_offset,
                header.next_offset(),
                header.record_count
            ),
            (7, 10, 0)
        );
        assert_eq!(header.partition_leader_epoch, 3);
        assert_eq!(header.producer_batch(), None);
    }

    #[test]
    fn the_map_is_bounded() {
        let mut map = OffsetMap::new(2);
        map.put(b"a", 1);
        assert!(map.has_room_for(1) && !map.has_room_for(2));
        map.put(b"a", 5);
        assert_eq!(
            (map.len(), map.latest(b"a"), map.latest(b"z")),
            (1, Some(5), None)
        );
    }
}
