use proptest::prelude::*;

use super::*;

const LAG_MS: i64 = 10_000;

fn set(isr: &[BrokerId], partition_epoch: i32) -> ReplicaSet {
    ReplicaSet {
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        leader_epoch: 4,
        partition_epoch,
        removing: Vec::new(),
    }
}

fn leader(end: i64) -> LeaderState {
    LeaderState::new(1, set(&[1, 2, 3], 7), LeaderEnd::all_durable(end), 0, 0)
}

#[test]
fn the_high_watermark_waits_for_every_isr_member_and_the_leaders_durable_end() {
    let mut state = leader(10);
    assert_eq!(state.high_watermark(), 0, "followers' ends are unknown");
    assert_eq!(state.on_follower_fetch(2, 10, 1), Ok(None));
    assert_eq!(state.on_follower_fetch(3, 6, 1), Ok(Some(6)));
    assert_eq!(state.on_follower_fetch(3, 10, 2), Ok(Some(10)));
    let unsynced = LeaderEnd {
        log_end: 15,
        durable_end: 12,
    };
    assert_eq!(state.on_leader_end(unsynced), None);
    assert_eq!(state.on_follower_fetch(2, 15, 3), Ok(None));
    assert_eq!(state.on_follower_fetch(3, 15, 3), Ok(Some(12)));
    assert_eq!(state.on_leader_end(LeaderEnd::all_durable(15)), Some(15));
}

#[test]
fn the_high_watermark_never_moves_back() {
    let mut state = LeaderState::new(1, set(&[1, 2], 7), LeaderEnd::all_durable(20), 15, 0);
    assert_eq!(state.high_watermark(), 15, "what it knew as a follower");
    assert_eq!(state.on_follower_fetch(2, 12, 1), Ok(None));
    assert_eq!(state.high_watermark(), 15);
    assert_eq!(state.on_follower_fetch(2, 20, 2), Ok(Some(20)));
}

#[test]
fn a_member_leaving_counts_until_the_shrink_is_committed() {
    let mut state = leader(10);
    state.on_follower_fetch(2, 10, 1).unwrap();
    state.on_follower_fetch(3, 4, 1).unwrap();
    assert_eq!(state.high_watermark(), 4);
    assert_eq!(
        state.propose_shrink(LAG_MS, LAG_MS),
        None,
        "not lagging long enough"
    );
    let proposal = state.propose_shrink(LAG_MS + 1, LAG_MS).expect("3 lags");
    assert_eq!(proposal.isr, vec![1, 2]);
    assert_eq!(proposal.kind, IsrChangeKind::Shrink { leaving: vec![3] });
    assert_eq!((proposal.leader_epoch, proposal.partition_epoch), (4, 7));
    assert_eq!(state.maximal_isr(), vec![1, 2, 3]);
    assert_eq!(state.high_watermark(), 4, "3 still counts while in flight");
    assert_eq!(
        state.propose_shrink(LAG_MS + 2, LAG_MS),
        None,
        "one change at a time"
    );
    assert_eq!(state.on_committed(set(&[1, 2], 8)), Some(10));
    assert_eq!(state.isr(), &[1, 2]);
    assert!(state.pending().is_none());
}

#[test]
fn a_joining_member_counts_as_soon_as_it_is_proposed() {
    let mut state = LeaderState::new(1, set(&[1, 2], 7), LeaderEnd::all_durable(10), 0, 0);
    state.on_follower_fetch(2, 10, 1).unwrap();
    assert_eq!(state.high_watermark(), 10);
    state.on_follower_fetch(3, 8, 1).unwrap();
    assert_eq!(state.propose_expand(3), None, "below the high watermark");
    state.on_follower_fetch(3, 10, 2).unwrap();
    let proposal = state.propose_expand(3).expect("3 caught up");
    assert_eq!(proposal.isr, vec![1, 2, 3]);
    state.on_leader_end(LeaderEnd::all_durable(12));
    state.on_follower_fetch(2, 12, 3).unwrap();
    assert_eq!(state.high_watermark(), 10, "3 is in the maximal ISR");
    let newer = IsrProposal {
        partition_epoch: 8,
        ..proposal.clone()
    };
    assert_eq!(state.on_refused(&newer), None, "not the change in flight");
    assert_eq!(state.high_watermark(), 10, "3 still counts");
    assert_eq!(
        state.on_refused(&proposal),
        Some(12),
        "refused: 3 no longer counts"
    );
}

#[test]
fn a_follower_joins_only_from_the_start_of_this_leader_epoch() {
    // Led from offset 10 on; the high watermark it inherited is 5.
    let mut state = LeaderState::new(1, set(&[1], 7), LeaderEnd::all_durable(10), 5, 0);
    assert_eq!(state.high_watermark(), 10, "the leader alone");
    let mut state2 = LeaderState::new(1, set(&[1, 2], 7), LeaderEnd::all_durable(10), 5, 0);
    state2.on_follower_fetch(3, 8, 1).unwrap();
    assert!(state2.high_watermark() < 8);
    assert_eq!(state2.high_watermark(), 5);
    assert_eq!(state2.propose_expand(3), None, "below the epoch start");
    assert!(!state2.high_watermark_reached_epoch_start());
    state2.on_follower_fetch(2, 10, 2).unwrap();
    assert!(state2.high_watermark_reached_epoch_start());
    state.on_follower_fetch(2, 10, 1).unwrap();
    assert!(state.propose_expand(2).is_some());
}

#[test]
fn a_busy_follower_that_keeps_up_with_each_previous_fetch_stays_in() {
    let mut state = leader(0);
    let mut leader_end = 0;
    for second in 1..=30 {
        let now = second * 1_000;
        // The follower asks for what the leader had at its previous fetch;
        // the leader has moved on by then.
        state.on_follower_fetch(2, leader_end, now).unwrap();
        state.on_follower_fetch(3, leader_end, now).unwrap();
        leader_end += 100;
        state.on_leader_end(LeaderEnd::all_durable(leader_end));
        assert_eq!(state.propose_shrink(now, LAG_MS), None, "at {now} ms");
    }
}

#[test]
fn a_follower_stuck_behind_leaves_after_the_lag_time() {
    let mut state = leader(0);
    let mut leader_end = 0;
    for second in 1..=30 {
        let now = second * 1_000;
        state.on_follower_fetch(2, leader_end, now).unwrap();
        // 3 fetches but never gets past offset 50.
        state.on_follower_fetch(3, leader_end.min(50), now).unwrap();
        leader_end += 100;
        state.on_leader_end(LeaderEnd::all_durable(leader_end));
        if let Some(proposal) = state.propose_shrink(now, LAG_MS) {
            assert_eq!(proposal.kind, IsrChangeKind::Shrink { leaving: vec![3] });
            assert!(now > LAG_MS, "at {now} ms");
            return;
        }
    }
    panic!("3 never left the ISR");
}

#[test]
fn a_follower_that_stops_fetching_while_caught_up_with_an_idle_leader_stays() {
    let mut state = leader(10);
    state.on_follower_fetch(2, 10, 1).unwrap();
    state.on_follower_fetch(3, 10, 1).unwrap();
    assert_eq!(
        state.propose_shrink(60_000, LAG_MS),
        None,
        "nothing to catch up with"
    );
}

#[test]
fn fetches_from_strangers_and_stale_states_are_refused() {
    let mut state = leader(10);
    assert_eq!(
        state.on_follower_fetch(9, 10, 1),
        Err(FollowerError::NotAReplica(9))
    );
    assert_eq!(state.on_committed(set(&[1, 2], 6)), None);
    assert_eq!(
        state.isr(),
        &[1, 2, 3],
        "an older partition epoch is ignored"
    );
}

/// One step a leader takes.
#[derive(Debug, Clone)]
enum Step {
    Append(i64),
    Sync,
    Fetch(BrokerId, i64),
    Shrink,
    Expand(BrokerId),
    Commit,
    Refuse,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1..50i64).prop_map(Step::Append),
        Just(Step::Sync),
        (2..=3, 0..1_000i64).prop_map(|(id, back)| Step::Fetch(id, back)),
        Just(Step::Shrink),
        (2..=3).prop_map(Step::Expand),
        Just(Step::Commit),
        Just(Step::Refuse),
    ]
}

proptest! {
    /// Whatever happens, the high watermark never moves back, never passes
    /// the leader's durable end, and never passes what a member of the
    /// maximal ISR holds.
    #[test]
    fn the_high_watermark_is_safe(steps in proptest::collection::vec(step(), 1..200)) {
        let mut state = leader(0);
        let mut end = LeaderEnd::all_durable(0);
        let mut follower_end: BTreeMap<BrokerId, i64> = BTreeMap::new();
        let mut partition_epoch = 7;
        let mut now = 0;
        for step in steps {
            now += 500;
            let before = state.high_watermark();
            match step {
                Step::Append(n) => {
                    end.log_end += n;
                    state.on_leader_end(end);
                }
                Step::Sync => {
                    end.durable_end = end.log_end;
                    state.on_leader_end(end);
                }
                Step::Fetch(id, back) => {
                    let offset = (end.log_end - back).max(*follower_end.get(&id).unwrap_or(&0));
                    follower_end.insert(id, offset);
                    state.on_follower_fetch(id, offset, now).unwrap();
                }
                Step::Shrink => {
                    state.propose_shrink(now, LAG_MS);
                }
                Step::Expand(id) => {
                    state.propose_expand(id);
                }
                Step::Commit => {
                    if let Some(pending) = state.pending().cloned() {
                        partition_epoch += 1;
                        state.on_committed(set(&pending.isr, partition_epoch));
                    }
                }
                Step::Refuse => {
                    if let Some(pending) = state.pending().cloned() {
                        state.on_refused(&pending);
                    }
                }
            }
            let hw = state.high_watermark();
            prop_assert!(hw >= before);
            prop_assert!(hw <= end.durable_end);
            for id in state.maximal_isr() {
                if id != 1 {
                    prop_assert!(hw <= *follower_end.get(&id).unwrap_or(&0));
                }
            }
        }
    }
}
