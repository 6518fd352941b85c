//! Translates a topic's resolved settings into what the log engine takes.

use crate::config::{FlushMode, TimestampKind, TopicConfig};
use crate::log::{CleanupPolicy, CompactionConfig, FlushPolicy, LogConfig, TimestampType};

pub fn log_config_for(topic: &TopicConfig) -> LogConfig {
    LogConfig {
        segment_bytes: topic.segment_bytes,
        segment_ms: topic.segment_ms,
        segment_index_bytes: topic.segment_index_bytes,
        index_interval_bytes: topic.index_interval_bytes,
        retention_bytes: topic.retention_bytes,
        retention_ms: topic.retention_ms,
        max_message_bytes: topic.max_message_bytes,
        flush: match topic.flush {
            FlushMode::Fsync => FlushPolicy::FsyncEveryAppend,
            FlushMode::PageCache => FlushPolicy::PageCache {
                interval_messages: topic.flush_interval_messages,
                interval_ms: topic.flush_interval_ms,
            },
        },
        timestamp_type: match topic.message_timestamp_type {
            TimestampKind::CreateTime => TimestampType::CreateTime,
            TimestampKind::LogAppendTime => TimestampType::LogAppendTime,
        },
        cleanup: CleanupPolicy {
            delete: topic.cleanup_policy.deletes(),
            compact: topic.cleanup_policy.compacts(),
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio_bp: topic.min_cleanable_dirty_ratio.0,
            min_compaction_lag_ms: topic.min_compaction_lag_ms,
            max_compaction_lag_ms: topic.max_compaction_lag_ms,
            delete_retention_ms: topic.delete_retention_ms,
        },
    }
}
