//! One segment: `<base>.log` plus its `.index` and `.timeindex`. Owns the
//! per-segment state (size, next offset, largest timestamp) and the scans
//! over batch headers that reads, lookups and reopening need.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use super::error::LogError;
use super::index::{IndexDefect, OffsetIndex};
use super::storage::Storage;
use super::time_index::TimeIndex;

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Segment files are named by their base offset, zero-padded to this width.
pub(crate) const FILE_NAME_DIGITS: usize = 20;
/// Header scans read the log in windows of this size.
const SCAN_WINDOW_BYTES: usize = 64 * 1024;
/// Window for finding one batch from its index entry: the batch sits within
/// about one index interval (4 KiB by default) of the entry, so a fetch
/// reads a few KiB of headers rather than a recovery-sized window.
const LOOKUP_WINDOW_BYTES: usize = 4 * 1024;
const _: () =
    assert!(LOOKUP_WINDOW_BYTES >= BATCH_HEADER_BYTES && LOOKUP_WINDOW_BYTES <= SCAN_WINDOW_BYTES);
/// Relative offsets are u32 on disk; like Kafka we stay within i32.
pub(crate) const RELATIVE_OFFSET_MAX: i64 = i32::MAX as i64;

const _: () = assert!(SCAN_WINDOW_BYTES >= BATCH_HEADER_BYTES);

/// A byte range of a segment file, for `sendfile` or `pread`. Holds the
/// file open, so it stays readable after retention unlinks the segment.
#[derive(Clone, Debug)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: u32,
    /// Offsets the slice's whole batches span: the first batch's base offset
    /// to the offset after its last batch (what "records out" counts).
    pub offsets: std::ops::Range<i64>,
}

impl FileSlice {
    /// Copies the slice into memory (the TLS path; tests).
    pub fn read_to_vec(&self) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buffer, self.position)?;
        Ok(buffer)
    }
}

pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:0width$}{suffix}", width = FILE_NAME_DIGITS)
}

/// What a header scan found at a position.
pub(crate) enum Scanned {
    Batch(BatchHeader),
    End,
    /// Not a plausible batch (bad magic, length past the end, …).
    Invalid(LogError),
}

/// Reads batch headers sequentially through a window buffer, so scanning
/// many small batches costs one pread per window, not one per batch.
pub(crate) struct HeaderScanner<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    window: Vec<u8>,
    window_start: u64,
    window_bytes_max: usize,
}

impl<'a> HeaderScanner<'a> {
    pub(crate) fn new(file: &'a File, path: &'a Path, end: u64) -> HeaderScanner<'a> {
        Self::with_window(file, path, end, SCAN_WINDOW_BYTES)
    }

    pub(crate) fn with_window(
        file: &'a File,
        path: &'a Path,
        end: u64,
        window_bytes_max: usize,
    ) -> HeaderScanner<'a> {
        assert!(window_bytes_max >= BATCH_HEADER_BYTES);
        HeaderScanner {
            file,
            path,
            end,
            window: Vec::new(),
            window_start: 0,
            window_bytes_max,
        }
    }

    pub(crate) fn at(&mut self, position: u64) -> Result<Scanned, LogError> {
        if position >= self.end {
            return Ok(Scanned::End);
        }
        let header_end = position + BATCH_HEADER_BYTES as u64;
        let window_end = self.window_start + self.window.len() as u64;
        if position < self.window_start || header_end > window_end {
            let len = (self.end - position).min(self.window_bytes_max as u64) as usize;
            self.window.resize(len, 0);
            self.file
                .read_exact_at(&mut self.window, position)
                .map_err(LogError::io("read", self.path))?;
            self.window_start = position;
        }
        let start = (position - self.window_start) as usize;
        let header = match batch::parse_header(&self.window[start..], position) {
            Ok(header) => header,
            Err(error) => return Ok(Scanned::Invalid(error)),
        };
        if position + u64::from(header.batch_bytes) > self.end {
            let reason = "batch length runs past the end of the segment";
            return Ok(Scanned::Invalid(LogError::CorruptBatch {
                position,
                reason,
            }));
        }
        Ok(Scanned::Batch(header))
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) log_path: PathBuf,
    pub(crate) log: Arc<File>,
    pub(crate) size_bytes: u64,
    pub(crate) next_offset: i64,
    pub(crate) index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// Largest batch maxTimestamp and the last offset of that batch.
    pub(crate) max_timestamp: Option<(i64, i64)>,
    pub(crate) bytes_since_index_entry: u64,
    /// When the segment began, for age-based rolls.
    pub(crate) created_ms: i64,
    /// Last append (or file mtime), for time retention without timestamps.
    pub(crate) last_modified_ms: i64,
    /// Whether the directory entry of the new files is known durable.
    pub(crate) dir_entry_synced: bool,
    /// Where writes, truncations and syncs of the log file go.
    pub(crate) storage: Arc<dyn Storage>,
}

impl Segment {
    /// A new, empty segment with preallocated indexes.
    pub(crate) fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        index_bytes: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        assert!(base_offset >= 0);
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(LogError::io("create", &log_path))?;
        let index = OffsetIndex::create(
            &dir.join(file_name(base_offset, INDEX_SUFFIX)),
            base_offset,
            index_bytes,
        )?;
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let time_index = TimeIndex::create(&time_path, base_offset, index_bytes)?;
        Ok(Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size_bytes: 0,
            next_offset: base_offset,
            index,
            time_index,
            max_timestamp: None,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            last_modified_ms: now_ms,
            dir_entry_synced: false,
            storage: Arc::clone(storage),
        })
    }

    /// Opens an existing segment. Returns it and whether its indexes are
    /// usable as found; if not they are empty and must be rebuilt
    /// (`recovery::recover_segment`). `next_offset` etc. are not yet known:
    /// the caller runs `load_tail` or recovery.
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        index_bytes: u32,
        now_ms: i64,
    ) -> Result<(Segment, bool), LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(LogError::io("open", &log_path))?;
        let metadata = log.metadata().map_err(LogError::io("stat", &log_path))?;
        let size_bytes = metadata.len();
        let last_modified_ms = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |age| age.as_millis() as i64);
        let index_path = dir.join(file_name(base_offset, INDEX_SUFFIX));
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_SUFFIX));
        let opened_index = OffsetIndex::open(&index_path, base_offset, size_bytes)?;
        let opened_time = TimeIndex::open(&time_path, base_offset, i64::MAX)?;
        let usable = opened_index.is_ok() && opened_time.is_ok();
        let index = reuse_or_create(opened_index, || {
            OffsetIndex::create(&index_path, base_offset, index_bytes)
        })?;
        let time_index = reuse_or_create(opened_time, || {
            TimeIndex::create(&time_path, base_offset, index_bytes)
        })?;
        let segment = Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size_bytes,
            next_offset: base_offset,
            index,
            time_index,
            max_timestamp: None,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
            last_modified_ms,
            dir_entry_synced: true,
            storage: Arc::clone(storage),
        };
        Ok((segment, usable))
    }

    /// Derives next offset, largest timestamp and the index interval counter
    /// from trusted indexes plus a header scan after the last index entry
    /// (the time index covers everything up to that entry). Returns false if
    /// the headers or indexes are inconsistent: the caller then recovers.
    pub(crate) fn load_tail(&mut self) -> Result<bool, LogError> {
        let (start_offset, start_position) =
            self.index.last_entry().unwrap_or((self.base_offset, 0));
        self.max_timestamp = self.time_index.last_entry();
        self.next_offset = self.base_offset;
        self.bytes_since_index_entry = 0;
        let (log, log_path) = (Arc::clone(&self.log), self.log_path.clone());
        let mut scanner = HeaderScanner::new(&log, &log_path, self.size_bytes);
        let mut position = u64::from(start_position);
        let mut expected_offset = start_offset;
        // Bounded: every pass moves forward by ≥ one header.
        loop {
            let header = match scanner.at(position)? {
                Scanned::End => break,
                Scanned::Invalid(_) => return Ok(false),
                Scanned::Batch(header) => header,
            };
            if header.base_offset != expected_offset {
                return Ok(false);
            }
            self.note_batch(&header);
            expected_offset = header.next_offset();
            position += u64::from(header.batch_bytes);
        }
        if position != self.size_bytes || expected_offset < self.base_offset {
            return Ok(false);
        }
        self.next_offset = if position == 0 {
            self.base_offset
        } else {
            expected_offset
        };
        let time_ok = self
            .time_index
            .last_entry()
            .is_none_or(|(_, offset)| offset < self.next_offset);
        Ok(time_ok)
    }

    /// Updates the in-memory state for a batch now in the file.
    fn note_batch(&mut self, header: &BatchHeader) {
        self.bytes_since_index_entry += u64::from(header.batch_bytes);
        if self
            .max_timestamp
            .is_none_or(|(timestamp, _)| header.max_timestamp > timestamp)
        {
            self.max_timestamp = Some((header.max_timestamp, header.last_offset()));
        }
    }

    /// Indexes one batch at `position` (already in the file) exactly as
    /// Kafka does: an entry when more than `interval` bytes passed since
    /// the last one. Shared by append and recovery so both build the same index.
    pub(crate) fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        index_interval_bytes: u32,
    ) {
        assert_eq!(
            header.base_offset, self.next_offset,
            "offsets are contiguous within a segment"
        );
        assert!(position + u64::from(header.batch_bytes) <= self.size_bytes);
        let due = self.bytes_since_index_entry > u64::from(index_interval_bytes) && position > 0;
        // A full index (only after segment_index_bytes shrank) just stays sparser.
        if due && self.index_room() > 0 {
            self.index.append(header.base_offset, position as u32);
            self.bytes_since_index_entry = 0;
            self.note_batch(header);
            if let Some((timestamp, offset)) = self.max_timestamp {
                self.time_index.maybe_append(timestamp, offset);
            }
        } else {
            self.note_batch(header);
        }
        self.next_offset = header.next_offset();
    }

    /// Entries each index can still take.
    pub(crate) fn index_room(&self) -> u32 {
        let offset_room = self.index.capacity_entries() - self.index.entries();
        let time_room = self.time_index.capacity_entries() - self.time_index.entries();
        offset_room.min(time_room)
    }

    /// Appends validated, offset-patched batches, given as `pieces` of
    /// `records_bytes` in all. On a write error the file is cut back so
    /// nothing of this append remains.
    pub(crate) fn append(
        &mut self,
        pieces: &[IoSlice<'_>],
        records_bytes: usize,
        headers: &[BatchHeader],
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let start = self.size_bytes;
        assert!(start + records_bytes as u64 <= u64::from(u32::MAX));
        assert_eq!(pieces.iter().map(|p| p.len()).sum::<usize>(), records_bytes);
        if let Err(error) = self
            .storage
            .write_at(&self.log, &self.log_path, pieces, start)
        {
            // Best effort: the error we return is the write's.
            let _ = self.storage.set_len(&self.log, &self.log_path, start);
            return Err(LogError::io("write", &self.log_path)(error));
        }
        self.size_bytes = start + records_bytes as u64;
        for header in headers {
            self.index_batch(header, start + header.position, index_interval_bytes);
        }
        self.last_modified_ms = now_ms;
        Ok(())
    }

    /// Position of the batch containing `offset` (or the first batch after
    /// it), scanning from the index's floor entry. None past the end.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<BatchHeader>, LogError> {
        let (_, position) = self.index.lookup(offset);
        let mut scanner = HeaderScanner::with_window(
            &self.log,
            &self.log_path,
            self.size_bytes,
            LOOKUP_WINDOW_BYTES,
        );
        let mut position = u64::from(position);
        loop {
            match scanner.at(position)? {
                Scanned::End => return Ok(None),
                Scanned::Invalid(error) => return Err(error),
                Scanned::Batch(header) if header.last_offset() >= offset => {
                    return Ok(Some(header));
                }
                Scanned::Batch(header) => position += u64::from(header.batch_bytes),
            }
        }
    }

    /// Whole batches from the one containing `start_offset`; see
    /// `PartitionLog::read`. The end is found through the index, not by
    /// scanning the range: the high watermark's batch position (or the
    /// segment's end), and when `max_bytes` is smaller, the last batch
    /// boundary within it (`batch_boundary_within`).
    pub(crate) fn read(
        &self,
        start_offset: i64,
        max_bytes: u32,
        max_offset_exclusive: i64,
        min_one_batch: bool,
    ) -> Result<Option<FileSlice>, LogError> {
        let Some(first) = self.find_batch(start_offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= max_offset_exclusive {
            return Ok(None);
        }
        let (end, end_offset) = if max_offset_exclusive >= self.next_offset {
            (self.size_bytes, self.next_offset)
        } else {
            self.find_batch(max_offset_exclusive)?
                .map_or((self.size_bytes, self.next_offset), |h| {
                    (h.position, h.base_offset)
                })
        };
        let first_bytes = u64::from(first.batch_bytes);
        let available = end - first.position;
        assert!(
            available >= first_bytes,
            "the first batch lies wholly below the limit"
        );
        let (len, end_offset) = if available <= u64::from(max_bytes) {
            (available, end_offset)
        } else if u64::from(max_bytes) >= first_bytes {
            let (boundary, boundary_offset) =
                self.batch_boundary_within(first.position, first.position + u64::from(max_bytes))?;
            (boundary - first.position, boundary_offset)
        } else if min_one_batch {
            (first_bytes, first.last_offset() + 1)
        } else {
            return Ok(None);
        };
        assert!(len <= u64::from(u32::MAX) && first.position + len <= self.size_bytes);
        assert!(end_offset > first.base_offset);
        Ok(Some(FileSlice {
            file: Arc::clone(&self.log),
            position: first.position,
            len: len as u32,
            offsets: first.base_offset..end_offset,
        }))
    }

    /// The last batch boundary at or before `limit`, at least one batch past
    /// `start` (the caller checked the first batch fits), with the offset
    /// that starts there. Starts from the index entry at or before `limit`,
    /// so it reads at most about one index interval of headers.
    fn batch_boundary_within(&self, start: u64, limit: u64) -> Result<(u64, i64), LogError> {
        assert!(limit <= self.size_bytes);
        let (_, floor) = self
            .index
            .lookup_position(u32::try_from(limit).unwrap_or(u32::MAX));
        let mut position = start.max(u64::from(floor));
        let mut scanner = HeaderScanner::with_window(
            &self.log,
            &self.log_path,
            self.size_bytes,
            LOOKUP_WINDOW_BYTES,
        );
        let next_offset = loop {
            match scanner.at(position)? {
                Scanned::Batch(header) if position + u64::from(header.batch_bytes) <= limit => {
                    position += u64::from(header.batch_bytes);
                }
                Scanned::Invalid(error) => return Err(error),
                Scanned::Batch(header) => break header.base_offset,
                Scanned::End => break self.next_offset,
            }
        };
        assert!(position > start, "the first batch fits within the limit");
        Ok((position, next_offset))
    }

    /// First record with timestamp ≥ `target` in this segment, as (offset, timestamp).
    pub(crate) fn find_by_timestamp(
        &self,
        target: i64,
        from_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self
            .max_timestamp
            .is_none_or(|(timestamp, _)| timestamp < target)
        {
            return Ok(None);
        }
        let after = self
            .time_index
            .lookup_before(target)
            .map_or(self.base_offset, |(_, offset)| offset + 1);
        let start_offset = after.max(from_offset);
        let (_, position) = self.index.lookup(start_offset);
        let mut scanner = HeaderScanner::new(&self.log, &self.log_path, self.size_bytes);
        let mut position = u64::from(position);
        loop {
            let header = match scanner.at(position)? {
                Scanned::End => return Ok(None),
                Scanned::Invalid(error) => return Err(error),
                Scanned::Batch(header) => header,
            };
            position += u64::from(header.batch_bytes);
            if header.last_offset() < start_offset || header.max_timestamp < target {
                continue;
            }
            if let Some(found) = self.first_record_at_or_after(&header, target, start_offset)? {
                return Ok(Some(found));
            }
        }
    }

    /// Decodes one batch (decompressing) to find its first record with
    /// timestamp ≥ `target` at an offset ≥ `from_offset`.
    pub(crate) fn first_record_at_or_after(
        &self,
        header: &BatchHeader,
        target: i64,
        from_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if header.is_log_append_time() {
            // Every record of such a batch carries the batch's append time.
            return Ok(Some((
                header.base_offset.max(from_offset),
                header.max_timestamp,
            )));
        }
        let mut bytes = vec![0u8; header.batch_bytes as usize];
        self.log
            .read_exact_at(&mut bytes, header.position)
            .map_err(LogError::io("read", &self.log_path))?;
        let mut buffer = Bytes::from(bytes);
        let decoded =
            RecordBatchDecoder::decode(&mut buffer).map_err(|_| LogError::CorruptBatch {
                position: header.position,
                reason: "records do not decode",
            })?;
        let found = decoded
            .records
            .iter()
            .find(|record| record.offset >= from_offset && record.timestamp >= target)
            .map(|record| (record.offset, record.timestamp));
        Ok(found)
    }

    /// Drops batches from the one containing `offset` on. Returns bytes cut.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<u64, LogError> {
        let Some(header) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let cut_bytes = self.size_bytes - header.position;
        self.set_size(header.position)?;
        self.index.truncate_to(header.base_offset);
        self.time_index.truncate_to(header.base_offset);
        if !self.load_tail()? {
            return Err(LogError::CorruptBatch {
                position: header.position,
                reason: "segment inconsistent after truncation",
            });
        }
        assert_eq!(self.next_offset, header.base_offset);
        Ok(cut_bytes)
    }

    /// Cuts the log file to `size_bytes`.
    pub(crate) fn set_size(&mut self, size_bytes: u64) -> Result<(), LogError> {
        assert!(size_bytes <= self.size_bytes);
        self.storage
            .set_len(&self.log, &self.log_path, size_bytes)
            .map_err(LogError::io("truncate", &self.log_path))?;
        self.size_bytes = size_bytes;
        Ok(())
    }

    /// The segment stops being active: record the final largest timestamp
    /// and shrink the indexes to their used size.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        if let Some((timestamp, offset)) = self.max_timestamp
            && !self.time_index.is_full()
        {
            self.time_index.maybe_append(timestamp, offset);
        }
        self.index.trim()?;
        self.time_index.trim()
    }

    /// Grows the indexes back to the preallocated size (segment active again).
    pub(crate) fn unseal(&mut self, index_bytes: u32) -> Result<(), LogError> {
        self.index.resize(index_bytes)?;
        self.time_index.resize(index_bytes)
    }

    /// fdatasyncs the log file through the storage.
    pub(crate) fn sync_log(&self) -> Result<(), LogError> {
        self.storage
            .sync_data(&self.log, &self.log_path)
            .map_err(LogError::io("fdatasync", &self.log_path))
    }

    /// The files a sync must fsync for this segment's data to be durable.
    pub(crate) fn sync_targets(&self) -> [(PathBuf, Arc<File>); 3] {
        [
            (self.log_path.clone(), Arc::clone(&self.log)),
            (
                self.index.path().to_path_buf(),
                Arc::clone(self.index.file()),
            ),
            (
                self.time_index.path().to_path_buf(),
                Arc::clone(self.time_index.file()),
            ),
        ]
    }

    /// Unlinks the three files. Open `FileSlice`s keep reading the log.
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for path in [
            self.log_path.as_path(),
            self.index.path(),
            self.time_index.path(),
        ] {
            super::checkpoint::remove_if_exists(path)?;
        }
        Ok(())
    }

    /// Largest timestamp for retention: batch timestamps, else the mtime.
    pub(crate) fn largest_timestamp_ms(&self) -> i64 {
        match self.max_timestamp {
            Some((timestamp, _)) if timestamp >= 0 => timestamp,
            _ => self.last_modified_ms,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
}

fn reuse_or_create<T>(
    opened: Result<T, IndexDefect>,
    create: impl FnOnce() -> Result<T, LogError>,
) -> Result<T, LogError> {
    match opened {
        Ok(index) => Ok(index),
        Err(_) => create(),
    }
}
