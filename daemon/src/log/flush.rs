//! When the page cache must be flushed. Pure.

use super::config::FlushPolicy;

/// What the flush decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlushState {
    /// Records appended since the last completed sync.
    pub(crate) unflushed_messages: u64,
    /// When the last sync completed (or the log opened).
    pub(crate) last_flush_ms: i64,
    /// A segment that is no longer active still has unsynced data.
    pub(crate) sealed_segment_unsynced: bool,
}

/// Whether a sync should run now. Rolled segments are always flushed
/// (as Kafka does on roll) so the recovery point keeps up with the log.
pub(crate) fn flush_due(policy: FlushPolicy, state: FlushState, now_ms: i64) -> bool {
    if state.unflushed_messages == 0 && !state.sealed_segment_unsynced {
        return false;
    }
    if state.sealed_segment_unsynced {
        return true;
    }
    match policy {
        FlushPolicy::FsyncEveryAppend => true,
        FlushPolicy::PageCache {
            interval_messages,
            interval_ms,
        } => {
            let by_count = interval_messages.is_some_and(|limit| state.unflushed_messages >= limit);
            let elapsed_ms = u64::try_from(now_ms.saturating_sub(state.last_flush_ms)).unwrap_or(0);
            let by_time = interval_ms.is_some_and(|limit| elapsed_ms >= limit);
            by_count || by_time
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(unflushed_messages: u64, last_flush_ms: i64) -> FlushState {
        FlushState {
            unflushed_messages,
            last_flush_ms,
            sealed_segment_unsynced: false,
        }
    }

    #[test]
    fn page_cache_thresholds() {
        let policy = FlushPolicy::PageCache {
            interval_messages: Some(10),
            interval_ms: Some(1_000),
        };
        assert!(!flush_due(policy, state(0, 0), 99_999));
        assert!(!flush_due(policy, state(9, 0), 999));
        assert!(flush_due(policy, state(10, 0), 0));
        assert!(flush_due(policy, state(1, 0), 1_000));
        let never = FlushPolicy::PageCache {
            interval_messages: None,
            interval_ms: None,
        };
        assert!(!flush_due(never, state(1_000_000, 0), i64::MAX));
        let sealed = FlushState {
            sealed_segment_unsynced: true,
            ..state(0, 0)
        };
        assert!(flush_due(never, sealed, 0));
    }

    #[test]
    fn fsync_every_append_is_due_whenever_data_is_unsynced() {
        assert!(flush_due(FlushPolicy::FsyncEveryAppend, state(1, 0), 0));
        assert!(!flush_due(FlushPolicy::FsyncEveryAppend, state(0, 0), 0));
    }
}
