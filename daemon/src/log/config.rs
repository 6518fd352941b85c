//! Per-partition log settings, with Kafka's defaults.

/// Kafka's `log.segment.bytes` default: 1 GiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Positions in `.index` entries are u32 and Kafka's are i32: a segment never
/// grows past this many bytes, whatever the configuration says.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Kafka's `log.roll.ms` default: 7 days.
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `log.index.size.max.bytes` default: 10 MiB.
pub const SEGMENT_INDEX_BYTES_DEFAULT: u32 = 10 * 1024 * 1024;
/// Kafka's `log.index.interval.bytes` default: 4 KiB.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Kafka's `log.retention.ms` default: 7 days.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `message.max.bytes` default (1 MiB + record batch overhead).
pub const MAX_MESSAGE_BYTES_DEFAULT: u32 = 1_048_588;

const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!((MAX_MESSAGE_BYTES_DEFAULT as u64) < SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_INDEX_BYTES_DEFAULT.is_multiple_of(8));

/// When appended bytes are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Kafka's default: append to the page cache and `fdatasync` when either
    /// threshold is crossed (None = never by that measure; rolled segments
    /// and `close` are always synced). Durability comes from replication.
    PageCache {
        interval_messages: Option<u64>,
        interval_ms: Option<u64>,
    },
    /// Redpanda's default: the caller syncs (`pending_sync`) before it
    /// acknowledges an append; `flush_due` is true whenever data is unsynced.
    FsyncEveryAppend,
}

/// Which clock a topic's record timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamps are kept.
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

/// Kafka's `cleanup.policy`: old data goes by retention, by compaction, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
}

/// Settings of one partition's log; see docs/log-format.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this (capped at [`SEGMENT_BYTES_MAX`]).
    pub segment_bytes: u64,
    /// Roll when the active segment is older than this.
    pub segment_ms: u64,
    /// Preallocated size of each index file.
    pub segment_index_bytes: u32,
    /// One index entry per this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Delete whole old segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete whole segments whose newest timestamp is older than this.
    pub retention_ms: Option<u64>,
    /// Largest record batch accepted, including its 12-byte log overhead.
    pub max_message_bytes: u32,
    pub flush: FlushPolicy,
    pub timestamp_type: TimestampType,
    pub cleanup: CleanupPolicy,
    pub compaction: super::cleaner::CompactionConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            segment_index_bytes: SEGMENT_INDEX_BYTES_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            retention_bytes: None,
            retention_ms: Some(RETENTION_MS_DEFAULT),
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            flush: FlushPolicy::PageCache {
                interval_messages: None,
                interval_ms: None,
            },
            timestamp_type: TimestampType::CreateTime,
            cleanup: CleanupPolicy::DELETE,
            compaction: super::cleaner::CompactionConfig::default(),
        }
    }
}

impl LogConfig {
    /// The segment size actually enforced.
    pub(crate) fn segment_bytes_effective(&self) -> u64 {
        self.segment_bytes.clamp(1, SEGMENT_BYTES_MAX)
    }
}
