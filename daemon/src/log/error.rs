//! Errors of the log. Each variant maps to one Kafka error code in
//! `kafka::errors`, the single mapping point.

use std::io;
use std::path::PathBuf;

/// Everything the log can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Malformed bytes: bad CRC, lengths that lie, truncated header or batch.
    #[error("corrupt record batch at byte {position}: {reason}")]
    CorruptBatch { position: u64, reason: &'static str },
    /// A v0/v1 message set (or any magic other than 2).
    #[error("unsupported record batch magic {magic} at byte {position}")]
    UnsupportedMagic { position: u64, magic: i8 },
    /// Well-formed bytes that break a rule of the v2 format (counts, deltas).
    #[error("invalid record batch at byte {position}: {reason}")]
    InvalidBatch { position: u64, reason: &'static str },
    /// One batch is larger than `max_message_bytes`.
    #[error("record batch of {batch_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    BatchTooLarge { batch_bytes: u64, max_bytes: u32 },
    /// The whole append cannot fit in one segment.
    #[error("record set of {records_bytes} bytes exceeds the segment size {segment_bytes}")]
    RecordSetTooLarge {
        records_bytes: u64,
        segment_bytes: u64,
    },
    /// A fetch or lookup outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// A follower append whose offsets do not continue the log.
    #[error("follower batch starts at offset {found}, expected {expected}")]
    NonContiguousOffsets { expected: i64, found: i64 },
    /// A leader append with an epoch older than one already in the log.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest_epoch}")]
    StaleLeaderEpoch { epoch: i32, latest_epoch: i32 },
    /// An idempotent producer's batch out of sequence or of a fenced epoch.
    #[error(transparent)]
    Producer(#[from] super::producer_state::ProducerError),
    /// A change to a log closed for shutdown.
    #[error("the log in {dir} is closed")]
    Closed { dir: PathBuf },
    /// A checkpoint file that cannot be parsed.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: String },
    /// The operating system refused an operation on `path`.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// Builds the `Io` variant; used as `.map_err(LogError::io("open", &path))`.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io {
            operation,
            path,
            source,
        }
    }
}
