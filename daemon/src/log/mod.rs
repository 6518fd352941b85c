//! The partition log: Kafka's on-disk format (DESIGN §2, docs/log-format.md).
//!
//! One [`PartitionLog`] owns one partition directory. Segments hold record
//! batches v2 exactly as produced (offsets patched), with sparse
//! memory-mapped offset and time indexes. Recovery after a crash is one
//! function ([`recovery`]); retention and flush decisions are pure
//! functions of the clock value passed in.

mod batch;
mod checkpoint;
mod cleaner;
mod compressed;
mod config;
mod dir_checkpoints;
mod error;
mod flush;
mod index;
mod leader_epoch;
mod partition_log;
mod producer_snapshot;
mod producer_state;
mod records;
mod recovery;
mod retention;
mod segment;
mod storage;
mod time_index;

#[cfg(test)]
pub(crate) use batch::test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cleaner;
#[cfg(test)]
mod tests_compaction;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_producers;

pub use batch::{
    BATCH_HEADER_BYTES, BatchHeader, LOG_OVERHEAD_BYTES, MAGIC_V2, parse_header, producer_record,
    validate_batches,
};
pub use checkpoint::write_atomic as write_file_atomic;
pub use cleaner::{CompactionConfig, OFFSET_MAP_ENTRIES_MAX};
pub use config::{
    CleanupPolicy, FlushPolicy, INDEX_INTERVAL_BYTES_DEFAULT, LogConfig, MAX_MESSAGE_BYTES_DEFAULT,
    RETENTION_MS_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_INDEX_BYTES_DEFAULT,
    SEGMENT_MS_DEFAULT, TimestampType,
};
pub use dir_checkpoints::{
    CLEANER_CHECKPOINT_FILE, DirCheckpoints, HIGH_WATERMARK_CHECKPOINT_FILE,
    LOG_START_OFFSET_CHECKPOINT_FILE, PartitionOffsets, RECOVERY_POINT_CHECKPOINT_FILE,
    RECOVERY_POINT_CHECKPOINT_INTERVAL_MS, StartingOffsets,
};
pub use error::LogError;
pub use leader_epoch::{EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE, LeaderEpochCache};
pub use partition_log::{
    AppendInfo, CLEAN_SHUTDOWN_FILE, CleanJob, CleanStats, CleanedGroup, FileSlice, PartitionLog,
    PendingSync, ProduceRules, ReadSlice, RecoveryReport, RetentionOutcome, SwapStep, UnsettledLog,
    ValidatedProduce, validate_produce,
};
pub use producer_state::{
    BATCHES_KEPT, BatchMeta, ProducerBatch, ProducerCheck, ProducerEntry, ProducerError,
    ProducerStateMap,
};
pub use storage::{OsStorage, Storage, os_storage, write_all_vectored_at};
