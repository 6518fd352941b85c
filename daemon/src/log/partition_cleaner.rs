//! Compaction of one partition log, driven over its files: a pass is
//! prepared under the partition lock (`prepare_clean`), its offset map and
//! cleaned segments are built without the lock from sealed segments, which
//! never change (`CleanJob`), and each cleaned group is swapped in under the
//! lock (`swap_in`), crash-safely:
//!
//! 1. the cleaned segment is written and synced in `cleaner.tmp/`;
//! 2. its log is renamed to `<base>.log.swap` in the partition directory,
//!    and the directory synced: from here on the new set wins;
//! 3. the replaced segments' files are deleted;
//! 4. the new indexes and then the log take their final names.
//!
//! `recover_interrupted_swap` at open finishes a swap found past step 2 and
//! discards one found before it, so a crash at any point recovers to the old
//! or the new set of segments, never a mix. A child module of `partition_log`.

use std::collections::BTreeSet;
use std::fs;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CheckpointWrite, PartitionLog};
use crate::log::batch::{BATCH_HEADER_BYTES, BatchHeader, parse_header};
use crate::log::checkpoint;
use crate::log::cleaner::{
    self, CleanPlan, CleanedBatch, OFFSET_MAP_ENTRIES_MAX, OffsetMap, RetainRules, SegmentInfo,
};
use crate::log::config::LogConfig;
use crate::log::error::LogError;
use crate::log::records;
use crate::log::recovery;
use crate::log::segment::{self, HeaderScanner, RELATIVE_OFFSET_MAX, Scanned, Segment};
use crate::log::storage::Storage;

const TMP_DIR: &str = "cleaner.tmp";
const SWAP_SUFFIX: &str = ".log.swap";

/// The steps of a swap, for crash injection in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwapStep {
    /// The cleaned log is renamed to `.log.swap`: the commit point.
    Renamed,
    /// The replaced segments' files are deleted.
    OldDeleted,
    /// Indexes and log have their final names.
    Finished,
}

/// A sealed segment as the job saw it.
#[derive(Clone, Debug)]
struct Source {
    base_offset: i64,
    next_offset: i64,
    size_bytes: u64,
    path: PathBuf,
    file: Arc<fs::File>,
}

/// One cleaning pass, prepared under the lock; runs without it.
#[derive(Debug)]
pub struct CleanJob {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    sources: Vec<Source>,
    plan: CleanPlan,
    /// Last offsets of each producer's last batch: kept whole.
    keep_whole: BTreeSet<i64>,
    truncations: u64,
    config: LogConfig,
    now_ms: i64,
}

impl CleanedGroup {
    /// How many segments it replaces.
    pub fn replaces_count(&self) -> u32 {
        self.replaces.len() as u32
    }
}

/// A cleaned segment in `cleaner.tmp/`, ready to replace `replaces`.
#[derive(Debug)]
pub struct CleanedGroup {
    base_offset: i64,
    next_offset: i64,
    /// (base offset, size) of each replaced segment, to check nothing moved.
    replaces: Vec<(i64, u64)>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// What a whole pass did, for the log line and the caller's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_replaced: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub keys: usize,
    /// Where the next pass's dirty part starts.
    pub cleaned_up_to: i64,
}

impl PartitionLog {
    /// A pass to run now, if the log is compacted and due (`cleaner::plan`),
    /// never touching the active segment nor anything at or past `high_watermark`.
    pub fn prepare_clean(&self, now_ms: i64, high_watermark: i64) -> Option<CleanJob> {
        if !self.config.cleanup.compact || self.closed {
            return None;
        }
        let sealed = &self.segments[..self.segments.len() - 1];
        let infos: Vec<SegmentInfo> = sealed
            .iter()
            .map(|s| SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size_bytes,
                largest_timestamp_ms: s.largest_timestamp_ms(),
                first_timestamp_ms: s.created_ms.min(s.largest_timestamp_ms()),
            })
            .collect();
        let first_dirty = self.cleaner_checkpoint.max(self.first_segment_base());
        let plan = cleaner::plan(
            &infos,
            first_dirty,
            high_watermark,
            &self.config.compaction,
            now_ms,
        )?;
        let sources = sealed[..plan.segments]
            .iter()
            .map(|s| Source {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size_bytes,
                path: s.log_path.clone(),
                file: Arc::clone(&s.log),
            })
            .collect();
        let keep_whole = self
            .producers
            .entries()
            .values()
            .filter_map(|entry| entry.batches.back().map(|b| b.last_offset))
            .collect();
        Some(CleanJob {
            dir: self.dir.clone(),
            storage: Arc::clone(&self.storage),
            sources,
            plan,
            keep_whole,
            truncations: self.truncations,
            config: self.config.clone(),
            now_ms,
        })
    }

    /// Replaces the segments a cleaned group was built from, unless the log
    /// changed under it (truncated, or segments deleted by retention);
    /// returns whether it did. `stop_after` leaves the disk as a crash
    /// after that step would (tests).
    pub fn swap_in(
        &mut self,
        job: &CleanJob,
        group: CleanedGroup,
        stop_after: Option<SwapStep>,
    ) -> Result<bool, LogError> {
        let tmp = self.dir.join(TMP_DIR);
        let Some(first) = self
            .segments
            .iter()
            .position(|s| s.base_offset == group.base_offset)
            .filter(|_| !self.closed)
        else {
            return discard(&tmp).map(|()| false);
        };
        let count = group.replaces.len();
        let unchanged = job.truncations == self.truncations
            && first + count < self.segments.len()
            && self.segments[first..first + count]
                .iter()
                .zip(&group.replaces)
                .all(|(s, (base, size))| s.base_offset == *base && s.size_bytes == *size);
        if !unchanged {
            return discard(&tmp).map(|()| false);
        }
        let base = group.base_offset;
        let name = |suffix: &str| segment::file_name(base, suffix);
        let swap = self.dir.join(format!("{}{SWAP_SUFFIX}", name("")));
        rename(&tmp.join(name(segment::LOG_SUFFIX)), &swap)?;
        checkpoint::sync_dir(&self.dir)?;
        if stop_after == Some(SwapStep::Renamed) {
            return Ok(true);
        }
        for replaced in &self.segments[first..first + count] {
            replaced.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        if stop_after == Some(SwapStep::OldDeleted) {
            return Ok(true);
        }
        for suffix in [segment::INDEX_SUFFIX, segment::TIME_INDEX_SUFFIX] {
            rename(&tmp.join(name(suffix)), &self.dir.join(name(suffix)))?;
        }
        rename(&swap, &self.dir.join(name(segment::LOG_SUFFIX)))?;
        checkpoint::sync_dir(&self.dir)?;
        discard(&tmp)?;
        if stop_after == Some(SwapStep::Finished) {
            return Ok(true);
        }
        let cleaned = open_cleaned(&self.storage, &self.dir, &self.config, base, job.now_ms)?;
        assert_eq!(cleaned.base_offset, base);
        assert_eq!(
            cleaned.next_offset, group.next_offset,
            "cleaning keeps offsets"
        );
        assert_eq!(
            self.segments[first + count].base_offset,
            cleaned.next_offset
        );
        self.segments.splice(first..first + count, [cleaned]);
        Ok(true)
    }

    /// Records that everything below `cleaned_up_to` is clean.
    pub fn finish_clean(&mut self, cleaned_up_to: i64) -> Result<(), LogError> {
        if cleaned_up_to > self.cleaner_checkpoint {
            self.cleaner_checkpoint = cleaned_up_to;
            self.checkpoint(self.last_flush_ms, CheckpointWrite::Soon)?;
        }
        Ok(())
    }

    /// One whole pass with the log held throughout (tests and tools; the
    /// broker runs the parts with its lock released in between).
    pub fn clean_now(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
    ) -> Result<Option<CleanStats>, LogError> {
        let Some(job) = self.prepare_clean(now_ms, high_watermark) else {
            return Ok(None);
        };
        let (map, map_end, mut stats) = job.build_map()?;
        for group in job.groups(map_end) {
            let cleaned = job.clean_group(group, &map, map_end)?;
            stats.bytes_written += cleaned.bytes_written;
            stats.bytes_read += cleaned.bytes_read;
            stats.segments_replaced += cleaned.replaces.len() as u32;
            self.swap_in(&job, cleaned, None)?;
        }
        self.finish_clean(map_end)?;
        stats.cleaned_up_to = map_end;
        Ok(Some(stats))
    }
}

impl CleanJob {
    /// Maps each key of the dirty part to its latest offset, batch by batch
    /// until the map is full; returns the map and the offset it reached.
    pub fn build_map(&self) -> Result<(OffsetMap, i64, CleanStats), LogError> {
        let mut map = OffsetMap::new(OFFSET_MAP_ENTRIES_MAX);
        let mut stats = CleanStats::default();
        let mut buffer = Vec::new();
        for source in self
            .sources
            .iter()
            .filter(|s| s.next_offset > self.plan.first_dirty)
        {
            let mut stop = None;
            for_each_batch(source, &mut buffer, |header, bytes| {
                stats.bytes_read += bytes.len() as u64;
                if header.last_offset() < self.plan.first_dirty || header.record_count == 0 {
                    return Ok(true);
                }
                let codec = header.attributes & 0x7;
                let body = records::decompress(codec, &bytes[BATCH_HEADER_BYTES..])
                    .map_err(|reason| corrupt(header, reason))?;
                let views = records::walk(&body, header.record_count)
                    .map_err(|reason| corrupt(header, reason))?;
                if !map.has_room_for(views.len()) {
                    stop = Some(header.base_offset);
                    return Ok(false);
                }
                for view in &views {
                    if let Some(key) = view.key {
                        map.put(key, header.base_offset + view.offset_delta);
                    }
                }
                Ok(true)
            })?;
            if let Some(map_end) = stop {
                stats.keys = map.len();
                return Ok((map, map_end, stats));
            }
        }
        stats.keys = map.len();
        Ok((map, self.plan.cleanable_end, stats))
    }

    /// The source segments in groups cleaned into one segment each: at most
    /// `segment.bytes` and an index's offset range together, and only up to
    /// the segment holding `map_end` (later records all stay).
    pub fn groups(&self, map_end: i64) -> Vec<std::ops::Range<usize>> {
        let limit = self.config.segment_bytes_effective();
        let mut groups = Vec::new();
        let mut start = 0;
        while start < self.sources.len() && self.sources[start].base_offset < map_end {
            if self.sources[start].size_bytes == 0 {
                start += 1;
                continue;
            }
            let base = self.sources[start].base_offset;
            let mut end = start + 1;
            let mut bytes = self.sources[start].size_bytes;
            while end < self.sources.len()
                && self.sources[end].base_offset < map_end
                && bytes + self.sources[end].size_bytes <= limit
                && self.sources[end].next_offset - 1 - base <= RELATIVE_OFFSET_MAX
            {
                bytes += self.sources[end].size_bytes;
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        groups
    }

    /// Writes the cleaned form of sources `group` into `cleaner.tmp/`.
    pub fn clean_group(
        &self,
        group: std::ops::Range<usize>,
        map: &OffsetMap,
        map_end: i64,
    ) -> Result<CleanedGroup, LogError> {
        let sources = &self.sources[group];
        let tmp = self.dir.join(TMP_DIR);
        discard(&tmp)?;
        fs::create_dir_all(&tmp).map_err(LogError::io("create dir", &tmp))?;
        let base = sources[0].base_offset;
        let config = &self.config;
        let mut out = Segment::create(
            &self.storage,
            &tmp,
            base,
            config.segment_index_bytes,
            self.now_ms,
        )?;
        let rules = RetainRules {
            map,
            map_end,
            delete_retention_ms: config.compaction.delete_retention_ms,
            now_ms: self.now_ms,
        };
        let mut removed: Option<RemovedRun> = None;
        let mut buffer = Vec::new();
        let mut bytes_read = 0;
        for source in sources {
            for_each_batch(source, &mut buffer, |header, bytes| {
                bytes_read += bytes.len() as u64;
                let keep_whole = self.keep_whole.contains(&header.last_offset());
                let cleaned = cleaner::clean_batch(header, bytes, &rules, keep_whole)
                    .map_err(|reason| corrupt(header, reason))?;
                if let CleanedBatch::Removed = cleaned {
                    if let Some(run) = removed.as_mut().filter(|run| run.continues_with(header)) {
                        run.last = header.last_offset();
                    } else {
                        if let Some(run) = removed.take() {
                            run.write(&mut out, config)?;
                        }
                        removed = Some(RemovedRun::starting_at(header));
                    }
                    return Ok(true);
                }
                if let Some(run) = removed.take() {
                    run.write(&mut out, config)?;
                }
                match cleaned {
                    CleanedBatch::Unchanged => append(&mut out, bytes, config)?,
                    CleanedBatch::Rewritten(new) => append(&mut out, &new, config)?,
                    CleanedBatch::Removed => unreachable!("handled above"),
                }
                Ok(true)
            })?;
        }
        if let Some(run) = removed.take() {
            run.write(&mut out, config)?;
        }
        let last = &sources[sources.len() - 1];
        assert_eq!(out.next_offset, last.next_offset, "cleaning keeps offsets");
        out.seal()?;
        for (path, file) in out.sync_targets() {
            self.storage
                .sync_data(&file, &path)
                .map_err(LogError::io("fdatasync", &path))?;
        }
        checkpoint::sync_dir(&tmp)?;
        Ok(CleanedGroup {
            base_offset: base,
            next_offset: out.next_offset,
            replaces: sources
                .iter()
                .map(|s| (s.base_offset, s.size_bytes))
                .collect(),
            bytes_read,
            bytes_written: out.size_bytes,
        })
    }
}

/// A run of batches whose records were all cleaned away: written as one
/// empty batch, split where the leader epoch changes.
struct RemovedRun {
    first: i64,
    last: i64,
    leader_epoch: i32,
    timestamp_ms: i64,
    attributes: i16,
}

impl RemovedRun {
    fn starting_at(header: &BatchHeader) -> RemovedRun {
        RemovedRun {
            first: header.base_offset,
            last: header.last_offset(),
            leader_epoch: header.partition_leader_epoch,
            timestamp_ms: header.max_timestamp,
            attributes: header.attributes,
        }
    }

    fn continues_with(&self, header: &BatchHeader) -> bool {
        header.partition_leader_epoch == self.leader_epoch
            && header.base_offset == self.last + 1
            && header.last_offset() - self.first <= i64::from(i32::MAX)
    }

    fn write(self, out: &mut Segment, config: &LogConfig) -> Result<(), LogError> {
        let bytes = cleaner::empty_batch(
            self.first,
            self.last,
            self.leader_epoch,
            self.timestamp_ms,
            self.attributes,
        );
        append(out, &bytes, config)
    }
}

fn append(out: &mut Segment, bytes: &[u8], config: &LogConfig) -> Result<(), LogError> {
    let header = parse_header(bytes, 0)?;
    out.append(
        &[IoSlice::new(bytes)],
        bytes.len(),
        &[header],
        config.index_interval_bytes,
        0,
    )
}

/// Calls `f` with each whole batch of `source` in order, until it returns false.
fn for_each_batch(
    source: &Source,
    buffer: &mut Vec<u8>,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut scanner = HeaderScanner::new(&source.file, &source.path, source.size_bytes);
    let mut position = 0;
    // Bounded: each pass moves forward by at least one header.
    loop {
        let header = match scanner.at(position)? {
            Scanned::End => return Ok(()),
            Scanned::Invalid(error) => return Err(error),
            Scanned::Batch(header) => header,
        };
        buffer.resize(header.batch_bytes as usize, 0);
        source
            .file
            .read_exact_at(buffer, position)
            .map_err(LogError::io("read", &source.path))?;
        if !f(&header, buffer)? {
            return Ok(());
        }
        position += u64::from(header.batch_bytes);
    }
}

fn corrupt(header: &BatchHeader, reason: &'static str) -> LogError {
    LogError::CorruptBatch {
        position: header.position,
        reason,
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    fs::rename(from, to).map_err(LogError::io("rename", from))
}

/// Removes `cleaner.tmp/` and what it holds.
fn discard(tmp: &Path) -> Result<(), LogError> {
    match fs::remove_dir_all(tmp) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LogError::io("remove", tmp)(error)),
    }
}

/// Opens a segment just swapped in; its indexes were built as it was written.
fn open_cleaned(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    config: &LogConfig,
    base: i64,
    now_ms: i64,
) -> Result<Segment, LogError> {
    let (mut segment, usable) =
        Segment::open(storage, dir, base, config.segment_index_bytes, now_ms)?;
    if !(usable && segment.load_tail()?) {
        recovery::recover_segment(
            &mut segment,
            dir,
            config.segment_index_bytes,
            config.index_interval_bytes,
        )?;
    }
    segment.seal()?;
    Ok(segment)
}

/// At open, before the directory is listed: finishes a swap that passed its
/// commit point (a `.log.swap` exists: the replaced segments and stale
/// indexes go, the swap takes its name; indexes are rebuilt by the open)
/// and forgets one that did not (`cleaner.tmp/` is removed). Returns
/// whether a swap was finished.
pub(super) fn recover_interrupted_swap(dir: &Path) -> Result<bool, LogError> {
    let mut finished = false;
    let entries = fs::read_dir(dir).map_err(LogError::io("list", dir))?;
    let mut swaps = Vec::new();
    let mut logs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(LogError::io("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((stem, suffix)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        match suffix {
            "log.swap" => swaps.push(base),
            "log" => logs.push(base),
            _ => {}
        }
    }
    for base in swaps {
        let swap = dir.join(format!("{}{SWAP_SUFFIX}", segment::file_name(base, "")));
        let next_offset = next_offset_of(&swap)?;
        for &old in logs.iter().filter(|&&old| old >= base && old < next_offset) {
            for suffix in [
                segment::LOG_SUFFIX,
                segment::INDEX_SUFFIX,
                segment::TIME_INDEX_SUFFIX,
            ] {
                checkpoint::remove_if_exists(&dir.join(segment::file_name(old, suffix)))?;
            }
        }
        // Whichever indexes are there may be the replaced segment's: rebuild.
        for suffix in [segment::INDEX_SUFFIX, segment::TIME_INDEX_SUFFIX] {
            checkpoint::remove_if_exists(&dir.join(segment::file_name(base, suffix)))?;
        }
        rename(
            &swap,
            &dir.join(segment::file_name(base, segment::LOG_SUFFIX)),
        )?;
        tracing::warn!(partition_dir = %dir.display(), base_offset = base, next_offset, "finished a cleaner swap interrupted by a crash");
        finished = true;
    }
    discard(&dir.join(TMP_DIR))?;
    if finished {
        checkpoint::sync_dir(dir)?;
    }
    Ok(finished)
}

/// The offset after the last batch of a (whole, synced) segment file.
fn next_offset_of(path: &Path) -> Result<i64, LogError> {
    let file = fs::File::open(path).map_err(LogError::io("open", path))?;
    let size = file.metadata().map_err(LogError::io("stat", path))?.len();
    let mut scanner = HeaderScanner::new(&file, path, size);
    let mut position = 0;
    let mut next = None;
    loop {
        match scanner.at(position)? {
            Scanned::End => break,
            Scanned::Invalid(error) => return Err(error),
            Scanned::Batch(header) => {
                next = Some(header.next_offset());
                position += u64::from(header.batch_bytes);
            }
        }
    }
    next.ok_or_else(|| LogError::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: "a cleaner swap file with no batch".into(),
    })
}
