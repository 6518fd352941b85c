//! Consumer lag: how far a group's committed position trails the high
//! watermark. Pure, so the CLI and the future metrics gauge
//! (`sluice_consumer_group_lag{group,topic,partition}`) share it.

/// Lag of one partition: HW − committed, never negative; `None` when
/// nothing is committed (Kafka tools print "-").
pub fn partition_lag(high_watermark: i64, committed: Option<i64>) -> Option<i64> {
    let committed = committed.filter(|c| *c >= 0)?;
    Some((high_watermark - committed).max(0))
}

/// One row of a lag report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub high_watermark: i64,
    pub lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    pub owner: Option<String>,
}

/// Lag of every committed partition of every group this broker coordinates,
/// read in-process (for the metrics endpoint).
pub fn broker_lag(
    broker: &crate::broker::Broker,
    coordinator: &super::GroupCoordinator,
) -> Vec<LagRow> {
    let committed: Vec<(String, String, i32, i64)> = coordinator.read(|core| {
        core.groups()
            .flat_map(|(id, g)| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| (id.clone(), t.clone(), *p, c.offset))
            })
            .collect()
    });
    committed
        .into_iter()
        .filter_map(|(group, topic, partition, offset)| {
            let hw = broker.topic(&topic)?.partition(partition)?.high_watermark();
            Some(LagRow {
                lag: partition_lag(hw, Some(offset)),
                group,
                topic,
                partition,
                committed: Some(offset),
                high_watermark: hw,
                owner: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_hw_minus_committed_and_absent_without_a_commit() {
        assert_eq!(partition_lag(100, Some(40)), Some(60));
        assert_eq!(partition_lag(100, Some(100)), Some(0));
        assert_eq!(
            partition_lag(10, Some(40)),
            Some(0),
            "truncated log: never negative"
        );
        assert_eq!(partition_lag(100, None), None);
        assert_eq!(partition_lag(100, Some(-1)), None, "-1 means no commit");
    }
}
