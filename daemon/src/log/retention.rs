//! Retention decisions: which leading whole segments to delete. Pure.

/// What retention needs to know about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) size_bytes: u64,
    pub(crate) largest_timestamp_ms: i64,
    pub(crate) next_offset: i64,
    pub(crate) is_empty: bool,
}

/// The decision: delete the first `delete_count` segments; if that is all
/// of them, roll a new empty active segment first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetentionPlan {
    pub(crate) delete_count: usize,
    pub(crate) roll_first: bool,
}

/// Kafka's rules: by time, a prefix of segments whose largest timestamp is
/// more than `retention_ms` old; by size, a prefix whose removal keeps the
/// log at or above `retention_bytes`. The union of both prefixes is
/// deleted. Never a segment holding offsets ≥ `max_offset_exclusive`
/// (the caller's high watermark) and never an empty active segment.
pub(crate) fn plan(
    segments: &[SegmentSummary],
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    max_offset_exclusive: i64,
    now_ms: i64,
) -> RetentionPlan {
    let eligible = segments
        .iter()
        .take_while(|segment| !segment.is_empty && segment.next_offset <= max_offset_exclusive)
        .count();
    let by_time = retention_ms.map_or(0, |retention_ms| {
        let retention_ms = i64::try_from(retention_ms).unwrap_or(i64::MAX);
        segments[..eligible]
            .iter()
            .take_while(|segment| {
                now_ms.saturating_sub(segment.largest_timestamp_ms) > retention_ms
            })
            .count()
    });
    let by_size = retention_bytes.map_or(0, |retention_bytes| {
        let total: u64 = segments.iter().map(|segment| segment.size_bytes).sum();
        let mut excess = total.saturating_sub(retention_bytes);
        segments[..eligible]
            .iter()
            .take_while(|segment| {
                let deletable = excess >= segment.size_bytes;
                excess = excess.saturating_sub(segment.size_bytes);
                deletable
            })
            .count()
    });
    let delete_count = by_time.max(by_size);
    assert!(delete_count <= eligible && eligible <= segments.len());
    RetentionPlan {
        delete_count,
        roll_first: delete_count == segments.len() && delete_count > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(size_bytes: u64, largest_timestamp_ms: i64, next_offset: i64) -> SegmentSummary {
        SegmentSummary {
            size_bytes,
            largest_timestamp_ms,
            next_offset,
            is_empty: size_bytes == 0,
        }
    }

    #[test]
    fn time_retention_deletes_old_prefix() {
        let segments = [
            segment(100, 1_000, 10),
            segment(100, 5_000, 20),
            segment(100, 2_000, 30),
        ];
        let plan = plan(&segments, Some(2_000), None, i64::MAX, 6_000);
        // The third is old too, but the second stops the prefix (Kafka's rule).
        assert_eq!(
            plan,
            RetentionPlan {
                delete_count: 1,
                roll_first: false
            }
        );
        let all = super::plan(&segments, Some(10), None, i64::MAX, 60_000);
        assert_eq!(
            all,
            RetentionPlan {
                delete_count: 3,
                roll_first: true
            }
        );
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let segments = [segment(100, 0, 10), segment(100, 0, 20), segment(50, 0, 30)];
        assert_eq!(
            plan(&segments, None, Some(150), i64::MAX, 0).delete_count,
            1
        );
        assert_eq!(
            plan(&segments, None, Some(149), i64::MAX, 0).delete_count,
            1
        );
        assert_eq!(plan(&segments, None, Some(50), i64::MAX, 0).delete_count, 2);
        assert_eq!(plan(&segments, None, Some(0), i64::MAX, 0).delete_count, 3);
        assert_eq!(
            plan(&segments, None, Some(1_000), i64::MAX, 0).delete_count,
            0
        );
    }

    #[test]
    fn never_past_the_bound_or_an_empty_active_segment() {
        let segments = [segment(100, 0, 10), segment(100, 0, 20), segment(0, 0, 20)];
        assert_eq!(plan(&segments, Some(1), None, 15, 1_000).delete_count, 1);
        let plan = plan(&segments, Some(1), None, i64::MAX, 1_000);
        assert_eq!(
            plan,
            RetentionPlan {
                delete_count: 2,
                roll_first: false
            }
        );
    }
}
