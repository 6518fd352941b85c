use proptest::prelude::*;

use super::*;

/// A log as the epoch of each offset (same offset, same epoch: same data,
/// since an epoch has one leader), plus epochs begun with nothing appended.
#[derive(Debug, Clone, Default)]
struct Log {
    epochs: Vec<i32>,
    /// (epoch, start) of an epoch begun at the log end with no data.
    empty_tail: Option<i32>,
}

impl Log {
    fn of(epochs: &[i32]) -> Log {
        Log {
            epochs: epochs.to_vec(),
            empty_tail: None,
        }
    }

    fn end(&self) -> i64 {
        self.epochs.len() as i64
    }

    /// The epoch cache: (epoch, start offset) at each change.
    fn entries(&self) -> Vec<(i32, i64)> {
        let mut entries: Vec<(i32, i64)> = Vec::new();
        for (offset, epoch) in self.epochs.iter().enumerate() {
            if entries.last().is_none_or(|(e, _)| e != epoch) {
                entries.push((*epoch, offset as i64));
            }
        }
        if let Some(epoch) = self.empty_tail {
            entries.push((epoch, self.end()));
        }
        entries
    }

    fn latest_epoch(&self) -> i32 {
        self.entries().last().map_or(UNDEFINED_EPOCH, |(e, _)| *e)
    }

    /// OffsetForLeaderEpoch, as log/leader_epoch.rs answers it.
    fn end_for(&self, requested: i32) -> Option<(i32, i64)> {
        let entries = self.entries();
        let latest = entries.last()?;
        if requested < 0 || requested > latest.0 {
            return None;
        }
        if requested == latest.0 {
            return Some((latest.0, self.end()));
        }
        let higher = entries.partition_point(|(e, _)| *e <= requested);
        let end = entries[higher].1;
        match higher.checked_sub(1) {
            Some(floor) => Some((entries[floor].0, end)),
            None => Some((requested, end)),
        }
    }

    fn truncate(&mut self, offset: i64) {
        self.epochs.truncate(offset as usize);
        // Epochs that begin at or after the new end go (even at the end:
        // an epoch this broker began as leader with nothing appended).
        self.empty_tail = None;
    }
}

/// The follower fetches until the leader lets it read; returns how many
/// diverging answers it took.
fn reconcile(follower: &mut Log, leader: &Log) -> usize {
    for round in 0..64 {
        let position = check_fetch_position(
            follower.end(),
            follower.latest_epoch(),
            0,
            leader.end(),
            |e| leader.end_for(e),
        );
        match position {
            FetchPosition::Read => return round,
            FetchPosition::Diverging(diverging) => {
                match truncation_for_diverging(diverging, follower.end(), |e| follower.end_for(e)) {
                    Truncation::To(offset) => follower.truncate(offset),
                    other => panic!("unexpected {other:?} for {diverging:?}"),
                }
            }
            FetchPosition::OutOfRange => panic!("out of range at {}", follower.end()),
        }
    }
    panic!("no agreement after 64 rounds");
}

#[test]
fn kip_101_story_a_a_restarted_follower_keeps_what_the_leader_has() {
    // The follower had offset 1 (epoch 1) but its high watermark was 1; it
    // restarts. Truncating to the high watermark would lose offset 1, which
    // the leader acknowledged. By epochs, nothing goes.
    let leader = Log {
        epochs: vec![1, 1],
        empty_tail: Some(2),
    };
    let mut follower = Log::of(&[1, 1]);
    assert_eq!(reconcile(&mut follower, &leader), 0);
    assert_eq!(follower.epochs, vec![1, 1]);
}

#[test]
fn kip_101_story_b_a_divergent_suffix_goes_and_the_logs_end_identical() {
    // Both crashed with unflushed data; the other replica came back first,
    // led at epoch 2 and took a new write at offset 1. The restarted one
    // still has its own offset 1 from epoch 1.
    let leader = Log::of(&[1, 2]);
    let mut follower = Log::of(&[1, 1]);
    assert_eq!(reconcile(&mut follower, &leader), 1);
    assert_eq!(follower.epochs, vec![1]);
}

#[test]
fn an_epoch_begun_with_nothing_appended_is_dropped_even_at_the_log_end() {
    // The follower led epoch 3 without appending; the new leader led 4
    // after 2. Its cached epoch 3 must go, or every fetch would diverge.
    let leader = Log {
        epochs: vec![1, 2, 4],
        empty_tail: None,
    };
    let mut follower = Log {
        epochs: vec![1, 2],
        empty_tail: Some(3),
    };
    assert_eq!(reconcile(&mut follower, &leader), 1);
    assert_eq!(follower.epochs, vec![1, 2]);
}

#[test]
fn answers_without_a_common_point_change_nothing() {
    let unresolved = EpochEnd {
        epoch: UNDEFINED_EPOCH,
        end_offset: UNDEFINED_OFFSET,
    };
    assert_eq!(
        truncation_for_diverging(unresolved, 10, |_| Some((1, 10))),
        Truncation::Unresolved
    );
    assert_eq!(truncation_for_out_of_range(5, 8), Truncation::StartAt(8));
    assert_eq!(truncation_for_out_of_range(12, 8), Truncation::Unresolved);
    assert_eq!(
        check_fetch_position(12, UNDEFINED_EPOCH, 0, 10, |_| None),
        FetchPosition::OutOfRange
    );
    assert_eq!(
        check_fetch_position(3, UNDEFINED_EPOCH, 4, 10, |_| None),
        FetchPosition::OutOfRange
    );
}

/// Two histories that share `prefix` and then differ, as leader changes
/// make them: every epoch after the fork belongs to one side only (an
/// epoch has one leader, and a follower's records of it are the leader's),
/// and the leader has begun a newer epoch than any the follower saw.
fn histories() -> impl Strategy<Value = (Vec<i32>, Log, Log)> {
    (
        proptest::collection::vec(1..4i32, 0..6),
        proptest::collection::vec((0..3u8, 1..4usize), 0..6),
        0..3usize,
        any::<bool>(),
    )
        .prop_map(|(mut prefix, terms, leader_tail, follower_empty_tail)| {
            prefix.sort_unstable();
            let mut follower = prefix.clone();
            let mut leader = prefix.clone();
            let mut epoch = prefix.last().copied().unwrap_or(0);
            let mut continued = false;
            for (side, count) in terms {
                // The prefix's last epoch may continue on one side only.
                if continued || side == 2 || prefix.is_empty() {
                    epoch += 1;
                }
                continued = true;
                let log = if side % 2 == 0 {
                    &mut follower
                } else {
                    &mut leader
                };
                log.extend(std::iter::repeat_n(epoch, count));
            }
            let follower_tail = (follower_empty_tail).then_some(epoch + 1);
            let leader_epoch = epoch + 2;
            leader.extend(std::iter::repeat_n(leader_epoch, leader_tail));
            let leader = Log {
                empty_tail: (leader_tail == 0).then_some(leader_epoch),
                epochs: leader,
            };
            let follower = Log {
                epochs: follower,
                empty_tail: follower_tail,
            };
            (prefix, follower, leader)
        })
}

proptest! {
    /// Whatever the histories, the follower ends holding a prefix of the
    /// leader's log, and keeps every offset the two logs agreed on.
    #[test]
    fn followers_truncate_exactly_the_divergent_suffix((prefix, mut follower, leader) in histories()) {
        let agreed = follower
            .epochs
            .iter()
            .zip(&leader.epochs)
            .take_while(|(f, l)| f == l)
            .count();
        prop_assert!(agreed >= prefix.len());
        reconcile(&mut follower, &leader);
        prop_assert_eq!(&follower.epochs[..], &leader.epochs[..follower.epochs.len()]);
        prop_assert!(follower.epochs.len() >= agreed, "kept {} of {} agreed", follower.epochs.len(), agreed);
    }
}
