//! Crash recovery of one segment: re-validate every batch (header, CRC,
//! contiguous offsets), cut a torn or garbage tail to the longest valid
//! prefix, and rebuild both indexes from what survived. `PartitionLog::open`
//! decides which segments go through here (docs/log-format.md "Recovery").

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::batch::{self, BATCH_HEADER_BYTES};
use super::error::LogError;
use super::segment::Segment;

/// What recovering one segment found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentRecovery {
    pub(crate) valid_bytes: u64,
    pub(crate) truncated_bytes: u64,
    pub(crate) batches: u64,
}

/// Validates `segment` from its first byte, truncates it after the last
/// valid batch and rebuilds its indexes (`index_bytes` preallocated; the
/// caller trims sealed segments). Never serves a byte that failed its CRC.
pub(crate) fn recover_segment(
    segment: &mut Segment,
    partition_dir: &Path,
    index_bytes: u32,
    index_interval_bytes: u32,
) -> Result<SegmentRecovery, LogError> {
    let file_bytes = segment.size_bytes;
    reset_state(segment, index_bytes)?;
    let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
    let mut batch_bytes: Vec<u8> = Vec::new();
    let mut position = 0u64;
    let mut batches = 0u64;
    let mut first_error: Option<LogError> = None;
    // Bounded: each pass advances by a whole batch (≥ 61 bytes) or stops.
    while position + BATCH_HEADER_BYTES as u64 <= file_bytes {
        segment
            .log
            .read_exact_at(&mut header_bytes, position)
            .map_err(LogError::io("read", &segment.log_path))?;
        let header = match batch::parse_header(&header_bytes, position) {
            Ok(header) => header,
            Err(error) => {
                first_error = Some(error);
                break;
            }
        };
        let end = position + u64::from(header.batch_bytes);
        if end > file_bytes || header.base_offset != segment.next_offset {
            let reason = "torn batch or offset gap";
            first_error = Some(LogError::CorruptBatch { position, reason });
            break;
        }
        batch_bytes.resize(header.batch_bytes as usize, 0);
        segment
            .log
            .read_exact_at(&mut batch_bytes, position)
            .map_err(LogError::io("read", &segment.log_path))?;
        if let Err(error) = batch::verify_crc(&batch_bytes, &header) {
            first_error = Some(error);
            break;
        }
        // The pair of the append-side assertion: what we index passed its CRC.
        segment.size_bytes = end;
        segment.index_batch(&header, position, index_interval_bytes);
        position = end;
        batches += 1;
    }
    let truncated_bytes = file_bytes - position;
    segment.size_bytes = file_bytes;
    if truncated_bytes > 0 {
        segment.set_size(position)?;
        warn_truncated(
            segment,
            partition_dir,
            position,
            truncated_bytes,
            first_error.as_ref(),
        );
    }
    assert_eq!(segment.size_bytes, position);
    Ok(SegmentRecovery {
        valid_bytes: position,
        truncated_bytes,
        batches,
    })
}

/// Empties the indexes and per-segment state before the rebuild.
fn reset_state(segment: &mut Segment, index_bytes: u32) -> Result<(), LogError> {
    segment.index.truncate_to(segment.base_offset);
    segment.time_index.truncate_to(segment.base_offset);
    segment.unseal(index_bytes)?;
    segment.next_offset = segment.base_offset;
    segment.max_timestamp = None;
    segment.bytes_since_index_entry = 0;
    assert_eq!(segment.index.entries(), 0);
    assert_eq!(segment.time_index.entries(), 0);
    Ok(())
}

fn warn_truncated(
    segment: &Segment,
    partition_dir: &Path,
    valid_bytes: u64,
    truncated_bytes: u64,
    cause: Option<&LogError>,
) {
    let cause = cause.map_or_else(|| "partial batch header".to_string(), ToString::to_string);
    tracing::warn!(
        partition_dir = %partition_dir.display(),
        segment = %segment.log_path.display(),
        valid_bytes,
        truncated_bytes,
        cause = %cause,
        "truncated torn or corrupt tail of log segment"
    );
}

/// Chunk in which `rewrite_range` copies bytes onto themselves.
const REWRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Reads `[start, end)` of `segment`'s log and writes the same bytes back
/// in place, so the next fdatasync really writes them. After an fsync whose
/// writeback failed, Linux keeps those pages readable but marks them clean:
/// without this, a crash-restart would sync "successfully" over data that
/// never reached the disk, and a power loss later would punch a hole under
/// acknowledged records. Returns the bytes rewritten.
pub(crate) fn rewrite_range(segment: &Segment, start: u64, end: u64) -> Result<u64, LogError> {
    assert!(start <= end && end <= segment.size_bytes);
    let mut buffer = vec![0u8; REWRITE_CHUNK_BYTES.min((end - start) as usize)];
    let mut position = start;
    // Bounded: each pass advances by a non-empty chunk.
    while position < end {
        let len = buffer.len().min((end - position) as usize);
        let chunk = &mut buffer[..len];
        segment
            .log
            .read_exact_at(chunk, position)
            .map_err(LogError::io("read", &segment.log_path))?;
        segment
            .storage
            .write_at(
                &segment.log,
                &segment.log_path,
                &[std::io::IoSlice::new(chunk)],
                position,
            )
            .map_err(LogError::io("rewrite", &segment.log_path))?;
        position += len as u64;
    }
    Ok(end - start)
}
