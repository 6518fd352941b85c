//! The coordinator driven by events on a virtual clock: no sockets, no
//! sleeps. Each test reads as a script: join, advance, assert.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
/// Steps `settle` takes at most: catches a livelock in the timer logic.
const STEPS_MAX: usize = 100;

/// A coordinator, a virtual clock and the parked answers seen so far.
struct Sim {
    core: Coordinator,
    now: Instant,
    joins: BTreeMap<ReplyToken, Result<JoinOutcome, GroupError>>,
    syncs: BTreeMap<ReplyToken, Result<Bytes, GroupError>>,
}

impl Sim {
    fn new() -> Self {
        Self {
            core: Coordinator::new(CoordinatorConfig {
                initial_rebalance_delay: Duration::from_millis(500),
                member_id_nonce: "n".into(),
            }),
            now: Instant::now(),
            joins: BTreeMap::new(),
            syncs: BTreeMap::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Join(t, r) => assert!(self.joins.insert(t, r).is_none(), "answered twice"),
                Effect::Sync(t, r) => assert!(self.syncs.insert(t, r).is_none(), "answered twice"),
            }
        }
    }

    /// Moves the clock by `by`, firing every timer due on the way in order.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..STEPS_MAX {
            match self.core.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.core.handle_timeout(self.now);
                    self.drain();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("timers did not settle within {STEPS_MAX} steps");
    }

    fn join_request(&self, member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: String::new(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn join(&mut self, request: JoinRequest) -> Parked<JoinOutcome> {
        let parked = self.core.join(self.now, request);
        self.drain();
        parked
    }

    fn join_parked(&mut self, member: &str) -> ReplyToken {
        match self.join(self.join_request(member, &["range"])) {
            Parked::Later(t) => t,
            Parked::Now(r) => panic!("expected to wait, got {r:?}"),
        }
    }

    fn joined(&self, token: ReplyToken) -> JoinOutcome {
        match self.joins.get(&token) {
            Some(Ok(outcome)) => outcome.clone(),
            other => panic!("join {token:?}: {other:?}"),
        }
    }

    fn sync(
        &mut self,
        member: &str,
        generation: i32,
        assignments: &[(&str, &str)],
    ) -> Parked<Bytes> {
        let request = SyncRequest {
            group_id: "g".into(),
            generation,
            member_id: member.into(),
            instance_id: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        };
        let parked = self.core.sync(self.now, request);
        self.drain();
        parked
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), GroupError> {
        self.core.heartbeat(self.now, "g", member, None, generation)
    }

    fn state(&self) -> &'static str {
        self.core.group("g").map_or("none", |g| g.state.name())
    }

    /// Two dynamic members in a Stable group: (a, b, generation).
    fn stable_pair(&mut self) -> (String, String, i32) {
        let ta = self.join_parked("");
        let tb = self.join_parked("");
        self.advance(Duration::from_millis(500));
        let (a, b) = (self.joined(ta), self.joined(tb));
        assert_eq!(a.generation, b.generation);
        let leader = a.leader.clone();
        let follower = if leader == a.member_id { &b } else { &a };
        let assignments = [(a.member_id.as_str(), "A"), (b.member_id.as_str(), "B")];
        assert!(matches!(
            self.sync(&follower.member_id, a.generation, &[]),
            Parked::Later(_)
        ));
        assert!(matches!(
            self.sync(&leader, a.generation, &assignments),
            Parked::Later(_)
        ));
        assert_eq!(self.state(), "Stable");
        (a.member_id, b.member_id, a.generation)
    }
}

#[test]
fn members_starting_together_share_one_generation_and_the_leader_assigns() {
    let mut sim = Sim::new();
    let ta = sim.join_parked("");
    let tb = sim.join_parked("");
    assert_eq!(sim.state(), "PreparingRebalance");
    sim.advance(Duration::from_millis(499));
    assert!(sim.joins.is_empty(), "the initial delay holds the barrier");
    sim.advance(Duration::from_millis(1));
    let (a, b) = (sim.joined(ta), sim.joined(tb));
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(a.protocol_name.as_deref(), Some("range"));
    assert_eq!(a.leader, a.member_id, "the first member leads");
    assert_eq!(
        a.members.len(),
        2,
        "the leader sees every member's metadata"
    );
    assert!(b.members.is_empty());
    assert_eq!(sim.state(), "CompletingRebalance");
    let Parked::Later(follower) = sim.sync(&b.member_id, 1, &[]) else {
        panic!("the follower waits for the leader");
    };
    let Parked::Later(leader) =
        sim.sync(&a.member_id, 1, &[(&a.member_id, "A"), (&b.member_id, "B")])
    else {
        panic!("the leader's sync is answered through the same path");
    };
    assert_eq!(sim.syncs[&follower].as_deref().ok(), Some(&b"B"[..]));
    assert_eq!(sim.syncs[&leader].as_deref().ok(), Some(&b"A"[..]));
    assert_eq!(sim.state(), "Stable");
    let Parked::Now(Ok(again)) = sim.sync(&b.member_id, 1, &[]) else {
        panic!("a Stable group answers a sync at once");
    };
    assert_eq!(again.as_ref(), b"B");
}

#[test]
fn join_v4_requires_a_member_id_first() {
    let mut sim = Sim::new();
    let mut request = sim.join_request("", &["range"]);
    request.require_known_member_id = true;
    let Parked::Now(Err(GroupError::MemberIdRequired(id))) = sim.join(request.clone()) else {
        panic!("MEMBER_ID_REQUIRED expected");
    };
    request.member_id = id.clone();
    let Parked::Later(token) = sim.join(request) else {
        panic!("the known id is admitted");
    };
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.joined(token).member_id, id);
    // An id handed out but never used expires with its session.
    let mut ghost = sim.join_request("", &["range"]);
    ghost.require_known_member_id = true;
    assert!(matches!(
        sim.join(ghost),
        Parked::Now(Err(GroupError::MemberIdRequired(_)))
    ));
    assert_eq!(sim.core.group("g").unwrap().pending_members.len(), 1);
    sim.advance(Duration::from_millis(SESSION_MS as u64));
    assert!(
        sim.core
            .group("g")
            .is_none_or(|g| g.pending_members.is_empty())
    );
}

#[test]
fn a_silent_member_is_removed_at_its_session_deadline_and_the_rest_rebalance() {
    let mut sim = Sim::new();
    let (a, b, generation) = sim.stable_pair();
    // a heartbeats every second; b is silent.
    for _ in 0..9 {
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.heartbeat(&a, generation), Ok(()));
    }
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.state(), "PreparingRebalance", "b's session expired");
    assert_eq!(
        sim.heartbeat(&a, generation),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        sim.heartbeat(&b, generation),
        Err(GroupError::UnknownMemberId)
    );
    let mut rejoin = sim.join_request(&a, &["range"]);
    rejoin.member_id = a.clone();
    let Parked::Later(token) = sim.join(rejoin) else {
        panic!("rejoin waits for the barrier");
    };
    let outcome = sim.joined(token);
    assert_eq!(
        outcome.generation,
        generation + 1,
        "the only member completes it at once"
    );
    assert_eq!(outcome.members.len(), 1);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline() {
    let mut sim = Sim::new();
    let (a, b, generation) = sim.stable_pair();
    let tc = sim.join_parked("");
    assert_eq!(sim.state(), "PreparingRebalance");
    let mut rejoin = sim.join_request(&a, &["range"]);
    rejoin.member_id = a.clone();
    let Parked::Later(ta) = sim.join(rejoin) else {
        panic!("a waits");
    };
    // b keeps heartbeating but never rejoins.
    let answered = sim.joins.len();
    for _ in 0..29 {
        sim.advance(Duration::from_secs(1));
        assert_eq!(
            sim.heartbeat(&b, generation),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(sim.joins.len(), answered, "the barrier still waits for b");
    }
    sim.advance(Duration::from_secs(1));
    let (oa, oc) = (sim.joined(ta), sim.joined(tc));
    assert_eq!(
        (oa.generation, oc.generation),
        (generation + 1, generation + 1)
    );
    assert_eq!(oa.members.len() + oc.members.len(), 2, "b is gone");
    assert_eq!(
        sim.heartbeat(&b, generation + 1),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn commits_are_fenced_by_member_generation_and_state() {
    let mut sim = Sim::new();
    let (a, _b, generation) = sim.stable_pair();
    let key = vec![("t".to_string(), 0)];
    let now = sim.now;
    let check = |sim: &mut Sim, member: &str, generation: i32| {
        sim.core
            .check_commit(now, "g", member, None, generation, &key)
    };
    assert_eq!(check(&mut sim, &a, generation), Ok(()));
    assert_eq!(
        check(&mut sim, &a, generation - 1),
        Err(GroupError::IllegalGeneration {
            got: generation - 1,
            current: generation
        })
    );
    assert_eq!(
        check(&mut sim, "stranger", generation),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        check(&mut sim, "", -1),
        Err(GroupError::UnknownMemberId),
        "standalone commit to a live group"
    );
    assert_eq!(
        sim.heartbeat(&a, generation - 1),
        Err(GroupError::IllegalGeneration {
            got: generation - 1,
            current: generation
        })
    );
    sim.join_parked("");
    assert_eq!(sim.state(), "PreparingRebalance");
    assert_eq!(
        check(&mut sim, &a, generation),
        Ok(()),
        "a member of the current generation commits while a rebalance is prepared"
    );
    // A group nobody joined takes standalone commits, not member commits
    // (a member of a group lost in a broker restart is told to rejoin).
    let other = sim.core.check_commit(now, "solo", "", None, -1, &key);
    assert_eq!(other, Ok(()));
    let lost = sim
        .core
        .check_commit(now, "solo", "old-member", None, 3, &key);
    assert_eq!(lost, Err(GroupError::UnknownMemberId));
}

#[test]
fn a_static_member_that_restarts_keeps_its_assignment_without_a_rebalance() {
    let mut sim = Sim::new();
    let mut tokens = Vec::new();
    for instance in ["ia", "ib"] {
        let mut request = sim.join_request("", &["range"]);
        request.instance_id = Some(instance.into());
        let Parked::Later(t) = sim.join(request) else {
            panic!()
        };
        tokens.push(t);
    }
    sim.advance(Duration::from_millis(500));
    let (a, b) = (sim.joined(tokens[0]), sim.joined(tokens[1]));
    sim.sync(&b.member_id, 1, &[]);
    sim.sync(&a.member_id, 1, &[(&a.member_id, "A"), (&b.member_id, "B")]);
    assert_eq!(sim.state(), "Stable");
    // b restarts: a new process, no member id, the same instance id.
    let mut request = sim.join_request("", &["range"]);
    request.instance_id = Some("ib".into());
    let Parked::Now(Ok(back)) = sim.join(request) else {
        panic!("answered at once");
    };
    assert_eq!(back.generation, 1, "no new generation");
    assert_ne!(back.member_id, b.member_id);
    assert_eq!(sim.state(), "Stable");
    let Parked::Now(Ok(assignment)) = sim.sync(&back.member_id, 1, &[]) else {
        panic!("stable sync");
    };
    assert_eq!(assignment.as_ref(), b"B");
    let fenced = sim
        .core
        .heartbeat(sim.now, "g", &b.member_id, Some("ib"), 1);
    assert_eq!(fenced, Err(GroupError::FencedInstanceId("ib".into())));
    assert_eq!(sim.heartbeat(&a.member_id, 1), Ok(()));
}

#[test]
fn no_common_protocol_is_refused_and_the_group_is_untouched() {
    let mut sim = Sim::new();
    let (a, _b, generation) = sim.stable_pair();
    let refused = sim.join(sim.join_request("", &["roundrobin"]));
    assert!(matches!(
        refused,
        Parked::Now(Err(GroupError::InconsistentGroupProtocol(_)))
    ));
    let mut other_type = sim.join_request("", &["range"]);
    other_type.protocol_type = "connect".into();
    assert!(matches!(
        sim.join(other_type),
        Parked::Now(Err(GroupError::InconsistentGroupProtocol(_)))
    ));
    assert!(matches!(
        sim.join(sim.join_request("", &[])),
        Parked::Now(Err(_))
    ));
    assert_eq!(sim.state(), "Stable");
    assert_eq!(sim.heartbeat(&a, generation), Ok(()));
}

#[test]
fn the_protocol_most_members_prefer_wins() {
    let mut sim = Sim::new();
    let mut tokens = Vec::new();
    for protocols in [
        &["roundrobin", "range"][..],
        &["range", "roundrobin"],
        &["range", "roundrobin", "sticky"],
    ] {
        let Parked::Later(t) = sim.join(sim.join_request("", protocols)) else {
            panic!()
        };
        tokens.push(t);
    }
    sim.advance(Duration::from_millis(500));
    assert_eq!(
        sim.joined(tokens[0]).protocol_name.as_deref(),
        Some("range")
    );
    let leader = sim.joined(tokens[0]);
    assert!(
        leader
            .members
            .iter()
            .all(|(_, _, m)| m.as_ref() == b"meta-range")
    );
}

#[test]
fn bounds_are_enforced() {
    let mut sim = Sim::new();
    let mut big = sim.join_request("", &["range"]);
    big.protocols[0].1 = Bytes::from(vec![0; MEMBER_METADATA_BYTES_MAX + 1]);
    assert!(matches!(
        sim.join(big),
        Parked::Now(Err(GroupError::TooLarge { .. }))
    ));
    let mut short = sim.join_request("", &["range"]);
    short.session_timeout_ms = SESSION_TIMEOUT_MS_MIN - 1;
    assert!(matches!(
        sim.join(short),
        Parked::Now(Err(GroupError::InvalidSessionTimeout(_)))
    ));
    assert!(
        sim.core.group("g").is_none(),
        "refused joins leave no group behind"
    );
    for _ in 0..MEMBERS_PER_GROUP_MAX {
        sim.join_parked("");
    }
    let full = sim.join(sim.join_request("", &["range"]));
    assert!(matches!(
        full,
        Parked::Now(Err(GroupError::GroupMaxSizeReached(_)))
    ));
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.joins.len(), MEMBERS_PER_GROUP_MAX);
    assert!(
        Coordinator::check_offset_metadata(&"m".repeat(OFFSET_METADATA_BYTES_MAX + 1)).is_err()
    );
}

#[test]
fn leaving_rebalances_the_rest_and_the_last_leave_empties_the_group() {
    let mut sim = Sim::new();
    let (a, b, generation) = sim.stable_pair();
    assert_eq!(sim.core.leave(sim.now, "g", &b, None), Ok(()));
    assert_eq!(sim.state(), "PreparingRebalance");
    assert_eq!(
        sim.core.check_delete_group("g"),
        Err(GroupError::NonEmptyGroup)
    );
    assert_eq!(
        sim.heartbeat(&a, generation),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(sim.core.leave(sim.now, "g", &a, None), Ok(()));
    assert_eq!(sim.state(), "Empty");
    // Still a consumer group to admin tools, not a "simple" one.
    let listed = sim.core.list_groups();
    assert_eq!(listed[0].protocol_type, "consumer");
    assert_eq!(
        sim.core.describe_group("g").unwrap().protocol_type,
        "consumer"
    );
    assert!(
        sim.core.poll_timeout().is_none(),
        "no timers left for an empty group"
    );
    assert_eq!(sim.core.check_delete_group("g"), Ok(vec![]));
    sim.core.remove_group("g");
    assert_eq!(
        sim.core.check_delete_group("g"),
        Err(GroupError::GroupIdNotFound)
    );
}

#[test]
fn a_rejoin_with_new_metadata_rebalances_everyone() {
    // Cooperative rebalancing: after revoking, a member rejoins with new
    // owned partitions in its metadata; the coordinator runs the barrier again.
    let mut sim = Sim::new();
    let (a, b, generation) = sim.stable_pair();
    let mut rejoin = sim.join_request(&a, &["range"]);
    rejoin.member_id = a.clone();
    rejoin.protocols[0].1 = Bytes::from_static(b"owned-changed");
    let Parked::Later(ta) = sim.join(rejoin) else {
        panic!()
    };
    assert_eq!(
        sim.heartbeat(&b, generation),
        Err(GroupError::RebalanceInProgress)
    );
    let mut rejoin_b = sim.join_request(&b, &["range"]);
    rejoin_b.member_id = b.clone();
    let Parked::Later(tb) = sim.join(rejoin_b) else {
        panic!()
    };
    assert_eq!(sim.joined(ta).generation, generation + 1);
    assert_eq!(sim.joined(tb).generation, generation + 1);
    assert_eq!(sim.state(), "CompletingRebalance");
    let key = vec![("t".to_string(), 0)];
    assert_eq!(
        sim.core
            .check_commit(sim.now, "g", &a, None, generation + 1, &key),
        Err(GroupError::RebalanceInProgress),
        "between the barrier and SyncGroup"
    );
}

#[test]
fn offsets_apply_in_log_order_and_tombstones_remove_them() {
    let mut sim = Sim::new();
    let value = |offset| CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    let key = ("t".to_string(), 1);
    sim.core.apply_offsets(vec![
        ("g".to_string(), key.clone(), Some(value(5))),
        ("g".to_string(), key.clone(), Some(value(9))),
        ("h".to_string(), key.clone(), Some(value(1))),
        ("h".to_string(), key.clone(), None),
    ]);
    assert_eq!(sim.core.committed("g", &key).map(|c| c.offset), Some(9));
    assert!(
        sim.core.group("h").is_none(),
        "a group with nothing left is forgotten"
    );
    assert_eq!(sim.state(), "Empty");
}

#[test]
fn unloading_a_group_answers_its_parked_requests_and_drops_its_deadlines() {
    // Stable, then a rebalance parks a rejoin: the group is unloaded
    // (its offsets partition moved to another broker) while it waits.
    let mut sim = Sim::new();
    let (a, _b, generation) = sim.stable_pair();
    let rejoin = sim.join_request(&a, &["range", "other"]);
    let Parked::Later(parked) = sim.join(rejoin) else {
        panic!("a rejoin with new metadata waits for the barrier");
    };
    let offset = CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    sim.core
        .apply_offsets(vec![("g".into(), ("t".into(), 0), Some(offset))]);
    assert!(sim.core.poll_timeout().is_some());

    let gone = sim.core.unload_groups(|group| group == "g");
    sim.drain();
    assert_eq!(gone, 1);
    assert_eq!(
        sim.joins.get(&parked),
        Some(&Err(GroupError::NotCoordinator))
    );
    assert_eq!(sim.state(), "none");
    assert!(sim.core.committed("g", &("t".into(), 0)).is_none());
    assert_eq!(
        sim.core.poll_timeout(),
        None,
        "no session or barrier deadline is left"
    );
    // Nothing fires later, and the heartbeat of a member of the old
    // generation finds no group.
    sim.advance(Duration::from_secs(60));
    assert!(sim.heartbeat(&a, generation).is_err());
}
