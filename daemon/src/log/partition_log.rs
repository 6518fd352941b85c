//! `PartitionLog`: one partition directory's segments, indexes, epoch cache
//! and checkpoints, tied together. The broker holds it behind a lock; slow
//! work that needs no exclusive access (fsync, sendfile) happens outside.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BATCH_HEADER_BYTES, BatchHead, BatchHeader};
use super::checkpoint;
use super::config::{LogConfig, TimestampType};
use super::dir_checkpoints::{DirCheckpoints, PartitionOffsets};
use super::error::LogError;
use super::flush::{self, FlushState};
use super::leader_epoch::{EpochEntry, LeaderEpochCache};
use super::producer_state::{ProducerCheck, ProducerStateMap};
use super::recovery::{self, SegmentRecovery};
use super::retention::{self, SegmentSummary};
use super::segment::{self, RELATIVE_OFFSET_MAX, Segment};
use super::storage::{Storage, os_storage};

pub use super::segment::FileSlice;

#[path = "partition_cleaner.rs"]
mod cleaning;
#[path = "partition_producers.rs"]
mod producers;

pub use cleaning::{CleanJob, CleanStats, CleanedGroup, SwapStep};

/// Written last by `close`; its presence at open means nothing to recover.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// What validating a leader's append depends on: the topic's settings when
/// it was validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceRules {
    max_message_bytes: u32,
    compact: bool,
}

/// A produce's batches checked against `rules` without the partition lock
/// (`validate_produce`): what the append then writes needs no decompression.
#[derive(Debug)]
pub struct ValidatedProduce {
    rules: ProduceRules,
    records_len: usize,
    headers: Vec<BatchHeader>,
}

/// Everything about a produce that needs no log state: framing and CRCs,
/// record counts (decompressing compressed batches, bounded), no control or
/// transactional batch, and on a compacted topic a key on every record.
/// Runs before the partition lock is taken, so a large compressed batch
/// holds up no other request on the partition.
pub fn validate_produce(records: &[u8], rules: ProduceRules) -> Result<ValidatedProduce, LogError> {
    let headers = batch::validate_batches(records, rules.max_message_bytes)?;
    for header in &headers {
        let start = header.position as usize;
        let bytes = &records[start..start + header.batch_bytes as usize];
        batch::check_producer_counts(header, bytes)?;
        let refused = if header.is_control() {
            Some("control batches are written by the broker, not by producers")
        } else if header.is_transactional() {
            Some("transactions are not supported by this build of Sluice yet")
        } else {
            None
        };
        if let Some(reason) = refused {
            return Err(LogError::InvalidBatch {
                position: header.position,
                reason,
            });
        }
        if rules.compact {
            check_keys(header, bytes)?;
        }
    }
    Ok(ValidatedProduce {
        rules,
        records_len: records.len(),
        headers,
    })
}

/// How soon `checkpoint` writes the directory's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckpointWrite {
    /// With the periodic write (a log on its own: when due).
    Periodic,
    /// With the next write (a log on its own: now).
    Soon,
    /// Now and synced, before anything else happens to the log: a lower
    /// recovery point or a higher log start must not be forgotten.
    Durable,
}

/// Where an append landed; what Produce answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    /// The broker's append time for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    pub max_timestamp_ms: i64,
    /// A producer's retry of a batch already in the log: nothing was
    /// appended and the offsets are the original's.
    pub duplicate: bool,
    /// The leader epoch the append was made (or the retry checked) at, so
    /// an acks=all wait knows which leadership it waits under; -1 for a
    /// follower's copy.
    pub leader_epoch: i32,
}

/// Result of a read: nothing, or one contiguous range of one segment file.
#[derive(Clone, Debug, Default)]
pub struct ReadSlice {
    pub file: Option<FileSlice>,
}

/// What `open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The clean-shutdown marker was present and matched the log.
    pub clean_shutdown: bool,
    /// The checkpointed recovery point read at open.
    pub recovery_point: i64,
    /// Segments re-validated batch by batch (CRC).
    pub segments_recovered: u32,
    /// Segments whose index files were missing or unusable and rebuilt.
    pub indexes_rebuilt: u32,
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Whole segments removed because they followed a corrupt one.
    pub segments_deleted: u32,
    /// Bytes past the recovery point written back in place before the
    /// first sync (see `recovery::rewrite_range`).
    pub rewritten_bytes: u64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What `apply_retention` deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: u32,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

/// Files to fdatasync so that everything below `durable_offset` survives a
/// power loss. Built under the partition lock, run without it.
#[derive(Clone, Debug)]
pub struct PendingSync {
    storage: Arc<dyn Storage>,
    targets: Vec<(PathBuf, Arc<File>)>,
    dir: Option<PathBuf>,
    durable_offset: i64,
    /// `PartitionLog::truncations` at capture time.
    truncations: u64,
}

impl PendingSync {
    /// fdatasyncs the captured files (and the directory when segments were
    /// created); returns the offset below which data is now durable.
    pub fn sync(&self) -> io::Result<i64> {
        for (path, file) in &self.targets {
            self.storage.sync_data(file, path).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("fdatasync {}: {error}", path.display()),
                )
            })?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.durable_offset)
    }

    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }
}

/// One partition's log. Invariant: `segments` is never empty, sorted by
/// base offset, contiguous (each base = previous next offset); the last is
/// the active segment.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Where segment writes and syncs go (the OS, or a test's faults).
    storage: Arc<dyn Storage>,
    /// The data directory's checkpoints, where this log reports its offsets.
    checkpoints: Arc<DirCheckpoints>,
    segments: Vec<Segment>,
    epochs: LeaderEpochCache,
    /// Everything below is on disk (fsynced) and verified.
    recovery_point: i64,
    last_flush_ms: i64,
    /// Bumped by every `truncate_to`: a sync captured before a truncation
    /// says nothing about bytes appended after it.
    truncations: u64,
    /// Offsets below this are gone for readers: ≥ the first segment's base;
    /// above it after DeleteRecords (checkpointed), until retention catches up.
    log_start_offset: i64,
    /// Compaction: offsets below this were cleaned by a finished pass.
    cleaner_checkpoint: i64,
    /// The high watermark the broker last reported (a replica's), or the
    /// checkpoint's at open; `None` when never known. Kept for the
    /// directory's checkpoint only: the broker owns the live one.
    high_watermark: Option<i64>,
    /// Idempotent producers' state, derived from the batches in the log.
    producers: ProducerStateMap,
    /// Offsets of the producer snapshots on disk.
    snapshots: BTreeSet<i64>,
    /// `close_in_place` ran: nothing changes the log any more.
    closed: bool,
}

/// What the directory listing found.
struct DirListing {
    bases: Vec<i64>,
    snapshots: BTreeSet<i64>,
}

/// Lists segment base offsets; removes leftovers that have no meaning on
/// their own (indexes without a log, half-written checkpoint temp files).
fn list_dir(dir: &Path) -> Result<DirListing, LogError> {
    let mut bases = Vec::new();
    let mut snapshots = BTreeSet::new();
    let mut index_only = Vec::new();
    let entries = fs::read_dir(dir).map_err(LogError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(LogError::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(checkpoint::TMP_SUFFIX) {
            checkpoint::remove_if_exists(&entry.path())?;
            continue;
        }
        let Some((stem, suffix)) = name.split_once('.') else {
            continue;
        };
        if stem.len() != segment::FILE_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        match suffix {
            "log" => bases.push(base),
            "index" | "timeindex" => index_only.push((base, entry.path())),
            "snapshot" => {
                snapshots.insert(base);
            }
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in index_only {
        if bases.binary_search(&base).is_err() {
            checkpoint::remove_if_exists(&path)?;
        }
    }
    Ok(DirListing { bases, snapshots })
}

/// Parses a one-offset checkpoint (`0`, `1`, `<offset>`).
fn read_offset_file(path: &Path) -> Result<Option<i64>, LogError> {
    let Some(text) = checkpoint::read(path)? else {
        return Ok(None);
    };
    let offsets = checkpoint::parse_lines(path, &text, |line| line.trim().parse::<i64>().ok())?;
    match offsets.as_slice() {
        [offset] if *offset >= 0 => Ok(Some(*offset)),
        _ => Err(LogError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason: "expected exactly one non-negative offset".into(),
        }),
    }
}

/// A file that may be lost in a crash without harm: replaced atomically,
/// not synced.
fn write_offset_hint(path: &Path, offset: i64) -> Result<(), LogError> {
    assert!(offset >= 0);
    checkpoint::write_atomic_unsynced(
        path,
        checkpoint::format_lines(&[offset.to_string()]).as_bytes(),
    )
}

/// A checkpoint that cannot be parsed is treated as absent (full recovery),
/// which is always safe.
fn read_offset_file_or_none(path: &Path) -> Result<Option<i64>, LogError> {
    match read_offset_file(path) {
        Err(LogError::CorruptCheckpoint { path, reason }) => {
            tracing::warn!(path = %path.display(), reason, "ignoring corrupt checkpoint");
            Ok(None)
        }
        other => other,
    }
}

fn delete_segment_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for suffix in [
        segment::LOG_SUFFIX,
        segment::INDEX_SUFFIX,
        segment::TIME_INDEX_SUFFIX,
    ] {
        checkpoint::remove_if_exists(&dir.join(segment::file_name(base_offset, suffix)))?;
    }
    Ok(())
}

/// How one segment was brought up during open.
struct OpenedSegment {
    segment: Segment,
    recovery: Option<SegmentRecovery>,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering after an unclean
    /// shutdown: segments from the one holding the recovery point on are
    /// re-validated; earlier ones are trusted unless their indexes are unusable.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        Self::open_with(os_storage(), dir, config, now_ms)
    }

    /// `open` writing and syncing through `storage`.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        let checkpoints = Arc::new(DirCheckpoints::standalone(dir)?);
        let opened = Self::open_unsettled(storage, checkpoints, dir, config, now_ms)?;
        opened.sync_recovered()?;
        opened.settle()
    }

    /// `open` up to recovery, without making recovered bytes durable: the
    /// caller syncs many partitions at once (one `sync_filesystem`) and
    /// then settles each. Recovery work so far is idempotent: a crash
    /// before `settle` recovers the same way again.
    pub fn open_unsettled(
        storage: Arc<dyn Storage>,
        checkpoints: Arc<DirCheckpoints>,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<UnsettledLog, LogError> {
        fs::create_dir_all(dir).map_err(LogError::io("create dir", dir))?;
        cleaning::recover_interrupted_swap(dir)?;
        let listing = list_dir(dir)?;
        let fresh = listing.bases.is_empty();
        let clean_offset = read_offset_file_or_none(&dir.join(CLEAN_SHUTDOWN_FILE))?;
        let starting = checkpoints.starting_offsets(dir)?;
        let recovery_point = starting.recovery_point.unwrap_or(0);
        let mut report = RecoveryReport {
            recovery_point,
            ..RecoveryReport::default()
        };
        // Recover from the segment holding the recovery point; all if unclean and unknown.
        let recover_from = match clean_offset {
            Some(_) => None,
            None => Some(
                listing
                    .bases
                    .partition_point(|&base| base <= recovery_point)
                    .saturating_sub(1),
            ),
        };
        let mut segments = open_segments(
            &storage,
            dir,
            &config,
            &listing.bases,
            recover_from,
            now_ms,
            &mut report,
        )?;
        let log_end_offset = segments.last().map_or(0, |segment| segment.next_offset);
        report.clean_shutdown =
            clean_offset == Some(log_end_offset) && report.segments_recovered == 0;
        if clean_offset.is_some() && !report.clean_shutdown {
            // The marker is not written durably, nor removed durably at
            // open: a stale one is recovered from like no marker at all.
            tracing::warn!(partition_dir = %dir.display(), "clean-shutdown marker does not match the log; recovering from the recovery point");
            drop(segments);
            let listing = list_dir(dir)?;
            let from = listing
                .bases
                .partition_point(|&base| base <= recovery_point)
                .saturating_sub(1);
            segments = open_segments(
                &storage,
                dir,
                &config,
                &listing.bases,
                Some(from),
                now_ms,
                &mut report,
            )?;
        }
        finish_segments(&mut segments, &config, now_ms)?;
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            epochs: LeaderEpochCache::load(dir)?,
            config,
            storage,
            checkpoints,
            segments,
            recovery_point: 0,
            last_flush_ms: now_ms,
            truncations: 0,
            log_start_offset: 0,
            cleaner_checkpoint: starting.cleaner_offset.unwrap_or(0),
            high_watermark: starting.high_watermark,
            producers: ProducerStateMap::new(),
            snapshots: listing.snapshots,
            closed: false,
        };
        // Never past the log: a checkpoint of an older log of this name
        // must not mark new records as cleaned.
        log.cleaner_checkpoint = log.cleaner_checkpoint.min(log.log_end_offset());
        log.log_start_offset = starting
            .log_start_offset
            .unwrap_or(0)
            .max(log.first_segment_base())
            .min(log.log_end_offset());
        // A checkpoint vouches for committed offsets; what the log no longer
        // holds (lost with the page cache) is not among them here.
        log.high_watermark = log
            .high_watermark
            .map(|hw| hw.clamp(log.log_start_offset, log.log_end_offset()));
        if !report.clean_shutdown {
            // Verified bytes may still live only in the page cache of a
            // crashed process, or in pages a failed fsync left marked clean:
            // rewrite what lies past the last checkpointed sync, so that the
            // sync before `settle` really writes them.
            report.rewritten_bytes = log.rewrite_unsynced(report.recovery_point)?;
        }
        log.rebuild_producer_state()?;
        report.log_start_offset = log.log_start_offset();
        report.log_end_offset = log.log_end_offset();
        Ok(UnsettledLog { log, report, fresh })
    }

    /// After recovery and the sync that made it durable: set the recovery
    /// point to the end, align the epoch cache, and drop the clean marker
    /// (from now on a crash must be recovered from).
    fn settle_after_open(&mut self) -> Result<(), LogError> {
        let log_end_offset = self.log_end_offset();
        self.epochs.truncate_from_end(log_end_offset)?;
        self.epochs.truncate_from_start(self.log_start_offset())?;
        self.recovery_point = log_end_offset;
        self.checkpoint(self.last_flush_ms, CheckpointWrite::Soon)?;
        // Not made durable: a marker that survives a crash no longer matches
        // the log (or matches exactly the data it vouched for).
        checkpoint::remove_if_exists(&self.dir.join(CLEAN_SHUTDOWN_FILE))?;
        for segment in &mut self.segments {
            segment.dir_entry_synced = true;
        }
        Ok(())
    }
}

/// A log recovered by `open_unsettled`, not yet serving.
#[derive(Debug)]
pub struct UnsettledLog {
    log: PartitionLog,
    report: RecoveryReport,
    /// The directory held no segment: nothing was recovered.
    fresh: bool,
}

impl UnsettledLog {
    /// Whether recovered bytes must be synced before `settle` (after a
    /// crash); a clean shutdown left everything durable.
    pub fn needs_sync(&self) -> bool {
        !self.report.clean_shutdown && !self.fresh
    }

    /// Syncs this partition's recovered bytes on its own: the log files
    /// past the recovery point and the directory.
    pub fn sync_recovered(&self) -> Result<(), LogError> {
        if !self.needs_sync() {
            return Ok(());
        }
        // Segments wholly below the recovery point were synced before it
        // was checkpointed.
        let recovery_point = self.report.recovery_point;
        for segment in self
            .log
            .segments
            .iter()
            .filter(|s| s.next_offset > recovery_point || s.is_empty())
        {
            for (path, file) in segment.sync_targets() {
                self.log
                    .storage
                    .sync_data(&file, &path)
                    .map_err(LogError::io("fdatasync", &path))?;
            }
        }
        checkpoint::sync_dir(&self.log.dir)
    }

    /// Serves: the caller made the recovered bytes durable
    /// (`sync_recovered`, or one `sync_filesystem` for many partitions).
    pub fn settle(mut self) -> Result<(PartitionLog, RecoveryReport), LogError> {
        self.log.settle_after_open()?;
        Ok((self.log, self.report))
    }
}

/// Opens every listed segment in order, recovering those at index ≥
/// `recover_from` and any whose indexes are unusable. Stops at the first
/// segment that is cut short or does not continue its predecessor, and
/// deletes everything after it: the log is the longest valid prefix. With
/// no segment at all, creates an empty one at offset 0.
fn open_segments(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: &LogConfig,
    bases: &[i64],
    recover_from: Option<usize>,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<Vec<Segment>, LogError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (position, &base) in bases.iter().enumerate() {
        let continues = segments
            .last()
            .is_none_or(|previous| previous.next_offset == base);
        let must_recover = recover_from.is_some_and(|from| position >= from);
        let opened = if continues {
            Some(open_one(
                storage,
                dir,
                config,
                base,
                must_recover,
                now_ms,
                report,
            )?)
        } else {
            None
        };
        let cut_short = opened
            .as_ref()
            .is_some_and(|o| o.recovery.is_some_and(|r| r.truncated_bytes > 0));
        if let Some(opened) = opened {
            segments.push(opened.segment);
        }
        let stop_after = if continues { cut_short } else { true };
        let rest = if continues {
            &bases[position + 1..]
        } else {
            &bases[position..]
        };
        if stop_after && !rest.is_empty() {
            tracing::warn!(
                partition_dir = %dir.display(),
                first_deleted_base_offset = rest[0],
                segments_deleted = rest.len(),
                "deleting segments after a corrupt or discontinuous one"
            );
            for &later in rest {
                delete_segment_files(dir, later)?;
            }
            report.segments_deleted += rest.len() as u32;
            break;
        }
    }
    if segments.is_empty() {
        segments.push(Segment::create(
            storage,
            dir,
            0,
            config.segment_index_bytes,
            now_ms,
        )?);
    }
    Ok(segments)
}

/// Opens one segment; recovers it when asked or when its indexes or tail
/// do not check out.
fn open_one(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: &LogConfig,
    base: i64,
    must_recover: bool,
    now_ms: i64,
    report: &mut RecoveryReport,
) -> Result<OpenedSegment, LogError> {
    let (mut segment, indexes_usable) =
        Segment::open(storage, dir, base, config.segment_index_bytes, now_ms)?;
    let trusted = !must_recover && indexes_usable && segment.load_tail()?;
    if trusted {
        return Ok(OpenedSegment {
            segment,
            recovery: None,
        });
    }
    if !must_recover {
        tracing::warn!(
            partition_dir = %dir.display(),
            segment = %segment.log_path.display(),
            "index files missing or inconsistent; rebuilding them from the log"
        );
        report.indexes_rebuilt += 1;
    }
    let recovery = recovery::recover_segment(
        &mut segment,
        dir,
        config.segment_index_bytes,
        config.index_interval_bytes,
    )?;
    report.segments_recovered += 1;
    report.truncated_bytes += recovery.truncated_bytes;
    Ok(OpenedSegment {
        segment,
        recovery: Some(recovery),
    })
}

/// Seals (trims) every segment but the last and gives the last its full
/// preallocated indexes and a roll clock from its first batch's timestamp.
fn finish_segments(
    segments: &mut [Segment],
    config: &LogConfig,
    now_ms: i64,
) -> Result<(), LogError> {
    let Some((active, sealed)) = segments.split_last_mut() else {
        return Ok(());
    };
    for segment in sealed {
        segment.seal()?;
    }
    active.unseal(config.segment_index_bytes)?;
    if let Some(first) = active.find_batch(active.base_offset)?
        && first.max_timestamp >= 0
    {
        active.created_ms = first.max_timestamp.min(now_ms);
    }
    Ok(())
}

/// A compacted topic keeps the latest record per key, so every record
/// needs one: the one place produce decodes every record, as Kafka does.
fn check_keys(header: &BatchHeader, batch: &[u8]) -> Result<(), LogError> {
    let invalid = |reason| LogError::InvalidBatch {
        position: header.position,
        reason,
    };
    let body = super::records::decompress(header.attributes & 0x7, &batch[BATCH_HEADER_BYTES..])
        .map_err(invalid)?;
    let records = super::records::walk(&body, header.record_count).map_err(invalid)?;
    if records.iter().any(|record| record.key.is_none()) {
        return Err(invalid("a compacted topic refuses records without a key"));
    }
    Ok(())
}

/// Re-reads a header we just patched; a failure is a bug in the patching
/// (the pair of the validation done before it).
fn reparse_patched(
    head: &BatchHead,
    body: &[u8],
    position: u64,
    expected_base_offset: i64,
) -> BatchHeader {
    let header = match batch::parse_header(head, position) {
        Ok(header) => header,
        Err(error) => panic!("patched batch header must parse: {error}"),
    };
    assert_eq!(header.base_offset, expected_base_offset);
    assert_eq!(header.batch_bytes as usize, head.len() + body.len());
    // A second pass over every produced byte: debug builds (and the tests)
    // only. Validation checked the CRC; patching changes it only for
    // LogAppendTime, where `set_timestamp_type` computes it afresh.
    debug_assert_eq!(
        batch::compute_crc_parts(head, body),
        header.crc,
        "patched batch keeps a valid CRC"
    );
    header
}

impl PartitionLog {
    /// Rewrites every byte at offsets ≥ `from_offset` in place (unclean
    /// open, before the first sync); returns how many.
    fn rewrite_unsynced(&self, from_offset: i64) -> Result<u64, LogError> {
        let mut rewritten = 0;
        for segment in self.segments.iter().filter(|s| s.next_offset > from_offset) {
            let start = if segment.base_offset >= from_offset {
                0
            } else {
                segment
                    .find_batch(from_offset)?
                    .map_or(segment.size_bytes, |header| header.position)
            };
            rewritten += recovery::rewrite_range(segment, start, segment.size_bytes)?;
        }
        Ok(rewritten)
    }

    /// Validates every batch, assigns offsets by patching baseOffset and
    /// partitionLeaderEpoch (and the timestamp for LogAppendTime topics) in
    /// a copy of each batch's header, then appends each patched header and
    /// the producer's untouched bytes after it to the page cache with
    /// vectored writes. All or nothing: if any batch is invalid, nothing is
    /// written. Does not fsync (see `pending_sync`).
    pub fn append_as_leader(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let validated = validate_produce(records, self.produce_rules())?;
        self.append_validated_as_leader(records, validated, leader_epoch, now_ms)
    }

    /// The settings `validate_produce` checks against, now.
    pub fn produce_rules(&self) -> ProduceRules {
        ProduceRules {
            max_message_bytes: self.config.max_message_bytes,
            compact: self.config.cleanup.compact,
        }
    }

    /// `append_as_leader` of records `validate_produce` checked (the same
    /// bytes); validated again here if the topic's settings changed since.
    pub fn append_validated_as_leader(
        &mut self,
        records: &[u8],
        validated: ValidatedProduce,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_open()?;
        assert_eq!(
            validated.records_len,
            records.len(),
            "validated these records"
        );
        let validated = if validated.rules == self.produce_rules() {
            validated
        } else {
            validate_produce(records, self.produce_rules())?
        };
        let mut headers = validated.headers;
        self.check_record_set_size(records.len())?;
        if let Some(latest_epoch) = self.epochs.latest_epoch()
            && leader_epoch < latest_epoch
        {
            return Err(LogError::StaleLeaderEpoch {
                epoch: leader_epoch,
                latest_epoch,
            });
        }
        if let Some(original) = self.check_producers(&headers)? {
            return Ok(AppendInfo {
                leader_epoch,
                ..original
            });
        }
        let log_append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let mut next_offset = self.log_end_offset();
        let mut heads: Vec<BatchHead> = Vec::with_capacity(headers.len());
        for header in &mut headers {
            let start = header.position as usize;
            let batch_bytes = &records[start..start + header.batch_bytes as usize];
            let mut head = batch::copy_head(batch_bytes);
            let body = &batch_bytes[BATCH_HEADER_BYTES..];
            batch::patch_offset_and_epoch(&mut head, next_offset, leader_epoch);
            if log_append_time.is_some() || header.is_log_append_time() {
                batch::set_timestamp_type(&mut head, body, log_append_time);
            }
            *header = reparse_patched(&head, body, header.position, next_offset);
            next_offset = header.next_offset();
            heads.push(head);
        }
        if leader_epoch >= 0 {
            self.epochs.assign(leader_epoch, self.log_end_offset())?;
        }
        let pieces: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(&heads)
            .flat_map(|(header, head)| {
                let start = header.position as usize;
                let end = start + header.batch_bytes as usize;
                [
                    IoSlice::new(head),
                    IoSlice::new(&records[start + BATCH_HEADER_BYTES..end]),
                ]
            })
            .collect();
        let mut info = self.append_validated(&pieces, records.len(), &headers, now_ms)?;
        info.log_append_time_ms = log_append_time.unwrap_or(-1);
        info.leader_epoch = leader_epoch;
        Ok(info)
    }

    /// Checks idempotent producers' epochs and sequences. A retry of a
    /// batch already in the log returns that batch's offsets.
    fn check_producers(&self, headers: &[BatchHeader]) -> Result<Option<AppendInfo>, LogError> {
        let batches: Vec<_> = headers
            .iter()
            .filter_map(BatchHeader::producer_batch)
            .collect();
        if batches.is_empty() {
            return Ok(None);
        }
        match self.producers.check(&batches)? {
            ProducerCheck::Append => Ok(None),
            ProducerCheck::Duplicate(original) => Ok(Some(AppendInfo {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                record_count: 0,
                log_append_time_ms: -1,
                max_timestamp_ms: original.max_timestamp,
                duplicate: true,
                leader_epoch: -1,
            })),
        }
    }

    /// Appends batches that already carry their offsets (a follower copying
    /// its leader). CRCs are checked; offsets must continue the log exactly.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_open()?;
        let headers = batch::validate_batches(records, batch::BATCH_BYTES_MAX as u32)?;
        self.check_record_set_size(records.len())?;
        let mut expected = self.log_end_offset();
        for header in &headers {
            if header.base_offset != expected {
                return Err(LogError::NonContiguousOffsets {
                    expected,
                    found: header.base_offset,
                });
            }
            expected = header.next_offset();
        }
        let mut latest = self.epochs.latest_epoch();
        for header in &headers {
            let epoch = header.partition_leader_epoch;
            if let Some(latest_epoch) = latest
                && epoch < latest_epoch
            {
                // The follower must truncate by epoch first (replication/divergence.rs).
                return Err(LogError::StaleLeaderEpoch {
                    epoch,
                    latest_epoch,
                });
            }
            latest = latest.max(Some(epoch));
        }
        for header in &headers {
            if header.partition_leader_epoch >= 0 {
                self.epochs
                    .assign(header.partition_leader_epoch, header.base_offset)?;
            }
        }
        self.append_validated(&[IoSlice::new(records)], records.len(), &headers, now_ms)
    }

    fn check_record_set_size(&self, records_bytes: usize) -> Result<(), LogError> {
        let segment_bytes = self.config.segment_bytes_effective();
        if records_bytes as u64 > segment_bytes {
            return Err(LogError::RecordSetTooLarge {
                records_bytes: records_bytes as u64,
                segment_bytes,
            });
        }
        Ok(())
    }

    /// Rolls if needed, writes, indexes. `pieces` are the batches' bytes in
    /// order (`records_bytes` in all); `headers` describe them with offsets
    /// continuing the log.
    fn append_validated(
        &mut self,
        pieces: &[IoSlice<'_>],
        records_bytes: usize,
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            unreachable!("validate_batches never returns an empty list");
        };
        assert_eq!(
            first.base_offset,
            self.log_end_offset(),
            "offsets continue the log"
        );
        if self.roll_needed(
            records_bytes as u64,
            headers.len() as u32,
            last.last_offset(),
            now_ms,
        ) {
            self.roll(now_ms)?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(pieces, records_bytes, headers, interval, now_ms)?;
        assert_eq!(self.log_end_offset(), last.next_offset());
        for batch in headers.iter().filter_map(BatchHeader::producer_batch) {
            self.producers.apply(&batch);
        }
        let record_count: i64 = headers
            .iter()
            .map(|header| i64::from(header.record_count))
            .sum();
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            record_count: u32::try_from(record_count).unwrap_or(u32::MAX),
            log_append_time_ms: -1,
            max_timestamp_ms: headers
                .iter()
                .map(|header| header.max_timestamp)
                .max()
                .unwrap_or(-1),
            duplicate: false,
            leader_epoch: -1,
        })
    }

    /// Kafka's roll rules, checked before an append of `bytes` in
    /// `batches` batches ending at `last_offset`.
    fn roll_needed(&self, bytes: u64, batches: u32, last_offset: i64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size_bytes + bytes > self.config.segment_bytes_effective();
        let too_old = now_ms.saturating_sub(active.created_ms)
            > i64::try_from(self.config.segment_ms).unwrap_or(i64::MAX);
        let index_full = active.index_room() < batches;
        let offsets_overflow = last_offset - active.base_offset > RELATIVE_OFFSET_MAX;
        too_big || too_old || index_full || offsets_overflow
    }

    /// Starts a new active segment at the log end; seals the old one.
    fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        let base_offset = self.log_end_offset();
        let new_segment = Segment::create(
            &self.storage,
            &self.dir,
            base_offset,
            self.config.segment_index_bytes,
            now_ms,
        )?;
        self.segments.push(new_segment);
        let sealed_position = self.segments.len() - 2;
        self.segments[sealed_position].seal()?;
        self.write_producer_snapshot()?;
        tracing::debug!(partition_dir = %self.dir.display(), base_offset, "rolled a new segment");
        Ok(())
    }

    /// Age-based roll, for the broker's periodic tick.
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.closed {
            return Ok(false);
        }
        let active = self.active();
        let segment_ms = i64::try_from(self.config.segment_ms).unwrap_or(i64::MAX);
        if active.is_empty() || now_ms.saturating_sub(active.created_ms) <= segment_ms {
            return Ok(false);
        }
        self.roll(now_ms)?;
        Ok(true)
    }

    fn active(&self) -> &Segment {
        let Some(active) = self.segments.last() else {
            unreachable!("a log always has an active segment")
        };
        active
    }

    fn active_mut(&mut self) -> &mut Segment {
        let Some(active) = self.segments.last_mut() else {
            unreachable!("a log always has an active segment")
        };
        active
    }

    /// The first offset readers may fetch.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Where the oldest segment on disk begins (≤ the log start offset).
    fn first_segment_base(&self) -> i64 {
        self.segments[0].base_offset
    }

    /// LEO: the offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// Offsets below this are fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments
            .iter()
            .map(|segment| segment.base_offset)
            .collect()
    }

    /// Live reload; new segment and index sizes apply from the next roll.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
}

impl PartitionLog {
    /// Whole batches from the one containing `start_offset`: at most
    /// `max_bytes` in total, except that the first batch is returned whole
    /// when `min_one_batch` (KIP-74); never a batch whose last offset is ≥
    /// `max_offset_exclusive` (the high watermark). Reads stay within one
    /// segment. `start_offset == LEO` gives an empty slice.
    pub fn read(
        &self,
        start_offset: i64,
        max_bytes: u32,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<ReadSlice, LogError> {
        self.check_in_range(start_offset)?;
        if start_offset == self.log_end_offset() || start_offset >= max_offset_exclusive {
            return Ok(ReadSlice::default());
        }
        let segment = &self.segments[self.segment_holding(start_offset)];
        let file = segment.read(start_offset, max_bytes, max_offset_exclusive, min_one_batch)?;
        if let Some(slice) = &file {
            assert!(slice.position + u64::from(slice.len) <= segment.size_bytes);
        }
        Ok(ReadSlice { file })
    }

    fn check_in_range(&self, offset: i64) -> Result<(), LogError> {
        let (log_start_offset, log_end_offset) = (self.log_start_offset(), self.log_end_offset());
        if offset < log_start_offset || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            });
        }
        Ok(())
    }

    /// Position in `segments` of the segment whose range holds `offset`.
    fn segment_holding(&self, offset: i64) -> usize {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        assert!(after > 0, "offset {offset} is below the log start");
        after - 1
    }

    /// ListOffsets by timestamp: the first record whose timestamp is ≥
    /// `timestamp_ms`, as (offset, timestamp). Decodes one batch.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in &self.segments {
            if segment.next_offset <= self.log_start_offset {
                continue;
            }
            let from = segment.base_offset.max(self.log_start_offset);
            if let Some(found) = segment.find_by_timestamp(timestamp_ms, from)? {
                assert!(found.0 >= from && found.0 < segment.next_offset);
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the largest timestamp in the log and the
    /// first record carrying it, as (timestamp, offset).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(&Segment, i64, i64)> = None;
        for segment in &self.segments {
            if let Some((timestamp, offset)) = segment.max_timestamp
                && best.is_none_or(|(_, best_timestamp, _)| timestamp > best_timestamp)
            {
                best = Some((segment, timestamp, offset));
            }
        }
        let (segment, timestamp, batch_last_offset) = best?;
        let record = segment
            .find_batch(batch_last_offset)
            .ok()
            .flatten()
            .and_then(|header| {
                segment
                    .first_record_at_or_after(&header, timestamp, header.base_offset)
                    .ok()
                    .flatten()
            });
        Some(match record {
            Some((offset, _)) => (timestamp, offset),
            None => (timestamp, batch_last_offset),
        })
    }

    /// OffsetForLeaderEpoch: (epoch, end offset), None for UNDEFINED.
    pub fn leader_epoch_end_offset(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Records that `epoch` begins at the current log end (a new leader
    /// does this on election, before its first append).
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.epochs.assign(epoch, self.log_end_offset())?;
        Ok(())
    }

    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    pub fn leader_epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }
}

impl PartitionLog {
    /// What to fdatasync so that the whole log is durable; None if it is.
    pub fn pending_sync(&self) -> Option<PendingSync> {
        let log_end_offset = self.log_end_offset();
        let unsynced = |segment: &&Segment| {
            segment.next_offset > self.recovery_point || !segment.dir_entry_synced
        };
        let mut targets = Vec::new();
        for segment in self.segments.iter().filter(unsynced) {
            targets.extend(segment.sync_targets());
        }
        if targets.is_empty() {
            return None;
        }
        let dir_dirty = self
            .segments
            .iter()
            .any(|segment| !segment.dir_entry_synced);
        Some(PendingSync {
            storage: Arc::clone(&self.storage),
            targets,
            dir: dir_dirty.then(|| self.dir.clone()),
            durable_offset: log_end_offset,
            truncations: self.truncations,
        })
    }

    /// Records a finished `PendingSync::sync`: advances the recovery point
    /// (never past the current log end) and checkpoints it, at most once per
    /// RECOVERY_POINT_CHECKPOINT_INTERVAL_MS. If `truncate_to` may have run
    /// between capture and completion (followers), use
    /// `complete_pending_sync`, which can tell.
    pub fn complete_sync(&mut self, durable_offset: i64, now_ms: i64) -> Result<(), LogError> {
        self.record_sync(durable_offset, now_ms)
    }

    /// `complete_sync` for a specific capture: ignored if the log was
    /// truncated after `pending` was captured (its offsets may now name
    /// different, unsynced bytes).
    pub fn complete_pending_sync(
        &mut self,
        pending: &PendingSync,
        now_ms: i64,
    ) -> Result<(), LogError> {
        if pending.truncations != self.truncations {
            return Ok(());
        }
        self.record_sync(pending.durable_offset, now_ms)
    }

    fn record_sync(&mut self, durable_offset: i64, now_ms: i64) -> Result<(), LogError> {
        let durable_offset = durable_offset.min(self.log_end_offset());
        assert!(durable_offset >= 0);
        self.recovery_point = self.recovery_point.max(durable_offset);
        for segment in &mut self.segments {
            if segment.base_offset < durable_offset {
                segment.dir_entry_synced = true;
            }
        }
        self.last_flush_ms = now_ms;
        // After the sync it vouches for; a lost or stale checkpoint only
        // means more to recover.
        self.checkpoint(now_ms, CheckpointWrite::Periodic)
    }

    /// This log's offsets as the directory's checkpoints keep them.
    fn checkpoint_offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            recovery_point: self.recovery_point,
            log_start_offset: self.log_start_offset,
            cleaner_offset: self.cleaner_checkpoint,
            high_watermark: self
                .high_watermark
                .map(|hw| hw.clamp(self.log_start_offset, self.log_end_offset())),
        }
    }

    /// The high watermark checkpointed for this replica (or reported since),
    /// within the log; `None` if none was ever known.
    pub fn checkpointed_high_watermark(&self) -> Option<i64> {
        self.high_watermark
            .map(|hw| hw.clamp(self.log_start_offset, self.log_end_offset()))
    }

    /// The broker's current high watermark for this replica, for the next
    /// write of the directory's checkpoints (memory only here).
    pub fn note_high_watermark(&mut self, high_watermark: i64) {
        if self.closed || self.high_watermark == Some(high_watermark) {
            return;
        }
        self.high_watermark = Some(high_watermark);
        self.checkpoints
            .report(&self.dir, self.checkpoint_offsets());
    }

    /// Reports this log's offsets to the directory's checkpoints, and
    /// writes them as `write` asks.
    fn checkpoint(&self, now_ms: i64, write: CheckpointWrite) -> Result<(), LogError> {
        if self.closed {
            // Closed for shutdown or deletion: a late sync must not put a
            // deleted partition back into the directory's files.
            return Ok(());
        }
        let checkpoints = &self.checkpoints;
        checkpoints.report(&self.dir, self.checkpoint_offsets());
        let standalone = checkpoints.is_standalone();
        match write {
            CheckpointWrite::Durable => checkpoints.write(now_ms, true),
            CheckpointWrite::Soon if standalone => checkpoints.write(now_ms, false),
            CheckpointWrite::Periodic if standalone && checkpoints.write_due(now_ms) => {
                checkpoints.write(now_ms, false)
            }
            _ => Ok(()),
        }
    }

    /// Whether the flush policy wants a sync now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let state = FlushState {
            unflushed_messages: u64::try_from(self.log_end_offset() - self.recovery_point)
                .unwrap_or(0),
            last_flush_ms: self.last_flush_ms,
            sealed_segment_unsynced: self.recovery_point < self.active().base_offset,
        };
        flush::flush_due(self.config.flush, state, now_ms)
    }

    /// Syncs everything now, under `&mut self` (pending_sync + complete_sync).
    pub fn flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(pending) = self.pending_sync() {
            let durable_offset = pending
                .sync()
                .map_err(LogError::io("fdatasync", &self.dir))?;
            self.record_sync(durable_offset, now_ms)?;
            self.checkpoint(now_ms, CheckpointWrite::Soon)?;
        }
        Ok(())
    }

    /// Deletes whole old segments by time and size retention; see `apply_retention_below`.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let log_end_offset = self.log_end_offset();
        self.apply_retention_below(now_ms, log_end_offset)
    }

    /// Retention that never deletes a segment holding offsets ≥
    /// `max_offset_exclusive` (pass the high watermark on a leader). If every
    /// segment is due, a new empty active segment is rolled first.
    pub fn apply_retention_below(
        &mut self,
        now_ms: i64,
        max_offset_exclusive: i64,
    ) -> Result<RetentionOutcome, LogError> {
        self.check_open()?;
        let summaries: Vec<SegmentSummary> = self
            .segments
            .iter()
            .map(|segment| SegmentSummary {
                size_bytes: segment.size_bytes,
                largest_timestamp_ms: segment.largest_timestamp_ms(),
                next_offset: segment.next_offset,
                is_empty: segment.is_empty(),
            })
            .collect();
        // A compact-only topic keeps every segment; the cleaner shrinks them.
        let (retention_ms, retention_bytes) = if self.config.cleanup.delete {
            (self.config.retention_ms, self.config.retention_bytes)
        } else {
            (None, None)
        };
        let plan = retention::plan(
            &summaries,
            retention_ms,
            retention_bytes,
            max_offset_exclusive,
            now_ms,
        );
        if plan.delete_count == 0 {
            // Segments wholly below a log start moved by DeleteRecords.
            let segments_deleted = self.delete_segments_below(self.log_start_offset)?;
            return Ok(RetentionOutcome {
                segments_deleted,
                log_start_offset: self.log_start_offset(),
                ..RetentionOutcome::default()
            });
        }
        if plan.roll_first {
            self.roll(now_ms)?;
        }
        assert!(plan.delete_count < self.segments.len());
        let deleted: Vec<Segment> = self.segments.drain(..plan.delete_count).collect();
        let bytes_deleted = deleted.iter().map(|segment| segment.size_bytes).sum();
        for segment in &deleted {
            segment.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        let first_base = self.first_segment_base();
        self.log_start_offset = self.log_start_offset.max(first_base);
        let log_start_offset = self.log_start_offset();
        self.epochs.truncate_from_start(log_start_offset)?;
        self.delete_snapshots_where(|offset| offset < first_base)?;
        self.recovery_point = self.recovery_point.max(first_base);
        tracing::info!(partition_dir = %self.dir.display(), segments_deleted = deleted.len(), bytes_deleted, log_start_offset, "retention deleted segments");
        Ok(RetentionOutcome {
            segments_deleted: deleted.len() as u32,
            bytes_deleted,
            log_start_offset,
        })
    }
}

impl PartitionLog {
    /// Drops everything at offsets ≥ `offset` (follower truncation). Batches
    /// are never split: if `offset` falls inside a batch, that whole batch
    /// goes and the log end lands on its base offset. Below the log start,
    /// the log is emptied and restarts at `offset`. Made durable before
    /// returning, so a crash cannot resurrect the dropped suffix.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        assert!(offset >= 0);
        self.check_open()?;
        if offset >= self.log_end_offset() {
            // Nothing to drop but, as Kafka does, an epoch this broker began
            // as leader at the log end without appending: kept, it would
            // make every fetch from the next leader diverge again.
            self.epochs.truncate_from_end(self.log_end_offset())?;
            return Ok(());
        }
        if offset <= self.log_start_offset() {
            self.truncate_fully_and_start_at(offset)?;
        } else {
            self.truncate_within(offset)?;
        }
        self.after_truncation(offset)
    }

    /// Drops the whole log and starts it again, empty, at `offset`, which
    /// may lie beyond the log end: a follower whose fetch position fell
    /// below its leader's log start. Durable before returning.
    pub fn restart_at(&mut self, offset: i64) -> Result<(), LogError> {
        assert!(offset >= 0);
        self.check_open()?;
        self.truncate_fully_and_start_at(offset)?;
        self.after_truncation(offset)
    }

    fn after_truncation(&mut self, offset: i64) -> Result<(), LogError> {
        self.truncations += 1;
        let log_end_offset = self.log_end_offset();
        assert!(log_end_offset <= offset);
        self.epochs.truncate_from_end(log_end_offset)?;
        // A batch truncated away must never be taken for a duplicate.
        self.rebuild_producer_state()?;
        // Batches appended from here on are dirty for the cleaner.
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(log_end_offset);
        // The recovery point must never stay above data that is no longer
        // the data it vouched for, not even in a checkpoint a crash brings back.
        // Nor below a log start a restart moved up (nothing is there to recover).
        self.recovery_point = self
            .recovery_point
            .min(log_end_offset)
            .max(self.log_start_offset);
        self.checkpoint(self.last_flush_ms, CheckpointWrite::Durable)?;
        tracing::info!(partition_dir = %self.dir.display(), offset, log_end_offset, "truncated log");
        Ok(())
    }

    fn truncate_within(&mut self, offset: i64) -> Result<(), LogError> {
        while self.segments.len() > 1 && self.active().base_offset >= offset {
            if let Some(segment) = self.segments.pop() {
                segment.delete_files()?;
            }
        }
        let index_bytes = self.config.segment_index_bytes;
        let active = self.active_mut();
        active.truncate_to(offset)?;
        active.unseal(index_bytes)?;
        active.sync_log()?;
        checkpoint::sync_dir(&self.dir)
    }

    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        // The new empty segment is created before the old ones are deleted:
        // a crash in between leaves a discontinuity, and open deletes every
        // segment after the (empty) first one.
        let base_offset = offset.max(0);
        let created_ms = self.active().created_ms;
        self.delete_snapshots_where(|_| true)?;
        let old: Vec<Segment> = std::mem::take(&mut self.segments);
        // A segment with the same base is recreated in place; drop its maps first.
        let (_same_base, others): (Vec<Segment>, Vec<Segment>) = old
            .into_iter()
            .partition(|segment| segment.base_offset == base_offset);
        let new_segment = Segment::create(
            &self.storage,
            &self.dir,
            base_offset,
            self.config.segment_index_bytes,
            created_ms,
        )?;
        self.segments.push(new_segment);
        for segment in &others {
            segment.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        // Checkpointed (durably) by `truncate_to`.
        self.log_start_offset = base_offset;
        self.epochs.truncate_from_start(base_offset)?;
        Ok(())
    }

    /// Flushes, trims the active segment's indexes and writes the
    /// clean-shutdown marker (last, so its presence vouches for the rest).
    pub fn close(mut self, now_ms: i64) -> Result<(), LogError> {
        self.close_in_place(now_ms)
    }

    /// `close` for a log others still hold (the broker's partitions): from
    /// here on every change is refused with `LogError::Closed`; reads go on.
    pub fn close_in_place(&mut self, now_ms: i64) -> Result<(), LogError> {
        if self.closed {
            return Ok(());
        }
        self.flush(now_ms)?;
        let log_end_offset = self.log_end_offset();
        assert_eq!(
            self.recovery_point, log_end_offset,
            "flush made everything durable"
        );
        let active = self.active_mut();
        active.seal()?;
        active.index.sync()?;
        active.time_index.sync()?;
        // Everything the marker vouches for is synced above; the marker and
        // the checkpoints themselves need not be: without them the next
        // open only recovers more. The broker writes the directory's files
        // once every log is closed.
        self.checkpoint(now_ms, CheckpointWrite::Soon)?;
        self.write_producer_snapshot()?;
        write_offset_hint(&self.dir.join(CLEAN_SHUTDOWN_FILE), log_end_offset)?;
        self.closed = true;
        Ok(())
    }

    /// `close_in_place` ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }
}

/// Copy-forward compaction support (the group coordinator's offsets log):
/// seal the active segment, re-append the live state, then drop whole
/// segments below it.
impl PartitionLog {
    /// Seals the active segment if it holds anything, so the next append
    /// starts a new one; returns the offset that segment starts at.
    pub fn roll_now(&mut self, now_ms: i64) -> Result<i64, LogError> {
        if !self.active().is_empty() {
            self.roll(now_ms)?;
        }
        assert!(self.active().is_empty());
        Ok(self.log_end_offset())
    }

    /// DeleteRecords: nothing below `offset` is served any more (durable
    /// before returning); whole segments below it are deleted now, the rest
    /// of the segment holding it when retention deletes that one. The
    /// caller keeps `offset` at or below the high watermark. Returns the
    /// new log start offset (never moved back).
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<i64, LogError> {
        assert!(offset <= self.log_end_offset());
        self.check_open()?;
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        self.checkpoint(self.last_flush_ms, CheckpointWrite::Durable)?;
        self.epochs.truncate_from_start(offset)?;
        self.delete_segments_below(offset)?;
        tracing::info!(partition_dir = %self.dir.display(), log_start_offset = offset, "log start offset advanced");
        Ok(offset)
    }

    /// Deletes every whole segment whose records all lie below `offset`,
    /// never the active one; durable (directory synced) before returning.
    /// Returns how many segments went.
    pub fn delete_segments_below(&mut self, offset: i64) -> Result<u32, LogError> {
        let keep_from = self
            .segments
            .iter()
            .take(self.segments.len() - 1)
            .take_while(|segment| segment.next_offset <= offset)
            .count();
        if keep_from == 0 {
            return Ok(0);
        }
        let deleted: Vec<Segment> = self.segments.drain(..keep_from).collect();
        for segment in &deleted {
            segment.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        let first_base = self.first_segment_base();
        self.log_start_offset = self.log_start_offset.max(first_base);
        let log_start_offset = self.log_start_offset();
        self.epochs.truncate_from_start(log_start_offset)?;
        self.delete_snapshots_where(|offset| offset < first_base)?;
        self.recovery_point = self.recovery_point.max(first_base);
        tracing::info!(partition_dir = %self.dir.display(), segments_deleted = deleted.len(), log_start_offset, "segments below a compacted snapshot deleted");
        Ok(deleted.len() as u32)
    }
}
