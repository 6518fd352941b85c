//! The sans-IO coordinator: every group, its state and committed offsets,
//! and the timer table. Requests and `handle_timeout(now)` go in; parked
//! answers come out of `poll_effect()`. It never reads the clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::GroupError;
use super::state::{
    CompletingRebalance, Empty, GroupState, Member, Membership, PreparingRebalance, ReplyToken,
    Stable,
};
use super::timer::{TimerKey, TimerTable};

/// Kafka's group.max.size default is unbounded; ours is stated.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// Groups (with members or offsets) one coordinator holds.
pub const GROUPS_MAX: usize = 100_000;
/// Protocol metadata one member may send in a JoinGroup, all protocols together.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;
/// One member's assignment in a SyncGroup.
pub const ASSIGNMENT_BYTES_MAX: usize = 1024 * 1024;
/// Committed offsets (topic-partitions) one group may hold.
pub const OFFSETS_PER_GROUP_MAX: usize = 100_000;
/// Kafka's offset.metadata.max.bytes.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Kafka's group.min.session.timeout.ms is 6 s; lower so tests and fast
/// failover can use short sessions.
pub const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
/// Kafka's group.max.session.timeout.ms.
pub const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;
/// Timers handled per `handle_timeout` call; the driver calls again at once
/// if more are due.
pub const TIMERS_PER_CALL_MAX: usize = 1_024;
/// Parked answers waiting to be drained (two per member at most).
const EFFECTS_MAX: usize = 2 * MEMBERS_PER_GROUP_MAX * 16;

const _: () = assert!(SESSION_TIMEOUT_MS_MIN < SESSION_TIMEOUT_MS_MAX);
const _: () = assert!(ASSIGNMENT_BYTES_MAX <= 16 * 1024 * 1024);

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Kafka's group.initial.rebalance.delay.ms: an empty group's first
    /// barrier waits this long so that members starting together share it.
    pub initial_rebalance_delay: Duration,
    /// Makes member ids unique across restarts (random, from the shell).
    pub member_id_nonce: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(500),
            member_id_nonce: "0".into(),
        }
    }
}

/// A committed position, as stored in the offsets log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// What JoinGroup answers (for the joiner, or for each parked joiner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// The leader alone gets (member id, instance id, metadata) of all.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A parked answer that is now ready.
#[derive(Debug)]
pub enum Effect {
    Join(ReplyToken, Result<JoinOutcome, GroupError>),
    Sync(ReplyToken, Result<Bytes, GroupError>),
}

/// An answer now, or later through `Effect` with this token.
#[derive(Debug)]
pub enum Parked<T> {
    Now(Result<T, GroupError>),
    Later(ReplyToken),
}

#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pub pending_members: BTreeMap<String, ()>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty(Empty::default()),
            offsets: BTreeMap::new(),
            pending_members: BTreeMap::new(),
        }
    }

    pub fn member_count(&self) -> usize {
        self.state.membership().map_or(0, |m| m.members.len()) + self.pending_members.len()
    }
}

#[derive(Debug)]
pub struct Coordinator {
    pub(super) config: CoordinatorConfig,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) timers: TimerTable,
    next_token: u64,
    next_member: u64,
    effects: VecDeque<Effect>,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            timers: TimerTable::default(),
            next_token: 1,
            next_member: 1,
            effects: VecDeque::new(),
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    /// The earliest deadline; the driver sleeps until then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next ready parked answer.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    pub(super) fn emit(&mut self, effect: Effect) {
        assert!(self.effects.len() < EFFECTS_MAX, "effects not drained");
        self.effects.push_back(effect);
    }

    pub(super) fn token(&mut self) -> ReplyToken {
        self.next_token += 1;
        ReplyToken(self.next_token)
    }

    pub(super) fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let prefix: String = client_id.chars().take(64).collect();
        format!(
            "{prefix}-{}-{}",
            self.config.member_id_nonce, self.next_member
        )
    }

    /// The group, created Empty if absent and the table has room.
    pub(super) fn group_or_create(&mut self, group_id: &str) -> Result<&mut Group, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !self.groups.contains_key(group_id) {
            if self.groups.len() >= GROUPS_MAX {
                return Err(GroupError::TooManyGroups(GROUPS_MAX));
            }
            self.groups.insert(group_id.to_string(), Group::new());
        }
        self.groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)
    }

    /// Drops a group that has neither members nor offsets.
    pub(super) fn forget_if_unused(&mut self, group_id: &str) {
        let unused = self.groups.get(group_id).is_some_and(|g| {
            matches!(g.state, GroupState::Empty(_))
                && g.offsets.is_empty()
                && g.pending_members.is_empty()
        });
        if unused {
            self.groups.remove(group_id);
            self.timers.cancel(&TimerKey::Rebalance {
                group: group_id.to_string(),
            });
        }
    }

    pub(super) fn arm_session(&mut self, now: Instant, group_id: &str, member: &Member) {
        self.timers.set(
            TimerKey::Session {
                group: group_id.to_string(),
                member: member.member_id.clone(),
            },
            now + member.session_timeout,
        );
    }

    pub(super) fn disarm_session(&mut self, group_id: &str, member_id: &str) {
        self.timers.cancel(&TimerKey::Session {
            group: group_id.to_string(),
            member: member_id.to_string(),
        });
    }

    /// Forgets every group `unload` picks (their offsets partition is led
    /// elsewhere now): parked joins and syncs are answered NOT_COORDINATOR
    /// so the members look for the new coordinator, and their deadlines
    /// go. Returns how many groups went.
    pub fn unload_groups(&mut self, unload: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|id| unload(id))
            .cloned()
            .collect();
        for group_id in &gone {
            let Some(group) = self.groups.remove(group_id) else {
                continue;
            };
            let mut parked = Vec::new();
            match &group.state {
                GroupState::PreparingRebalance(p) => parked.extend(
                    p.joined
                        .values()
                        .map(|t| Effect::Join(*t, Err(GroupError::NotCoordinator))),
                ),
                GroupState::CompletingRebalance(c) => parked.extend(
                    c.synced
                        .values()
                        .map(|t| Effect::Sync(*t, Err(GroupError::NotCoordinator))),
                ),
                _ => {}
            }
            for effect in parked {
                self.emit(effect);
            }
            let members = group.state.membership().map(|m| m.members.keys());
            for member in members.into_iter().flatten() {
                self.disarm_session(group_id, member);
            }
            for member in group.pending_members.keys() {
                self.timers.cancel(&TimerKey::PendingMember {
                    group: group_id.clone(),
                    member: member.clone(),
                });
            }
            self.timers.cancel(&TimerKey::Rebalance {
                group: group_id.clone(),
            });
        }
        gone.len()
    }

    /// Refreshes a member's session (heartbeat, commit, sync).
    pub(super) fn touch(&mut self, now: Instant, group_id: &str, member_id: &str) {
        let member = self
            .groups
            .get(group_id)
            .and_then(|g| g.state.membership())
            .and_then(|m| m.members.get(member_id))
            .cloned();
        if let Some(member) = member {
            self.arm_session(now, group_id, &member);
        }
    }
}

/// Transitions between states. Each takes the state by value.
impl Coordinator {
    /// Moves a group with members into PreparingRebalance (again), failing
    /// parked syncs with REBALANCE_IN_PROGRESS.
    pub(super) fn start_rebalance(&mut self, now: Instant, group_id: &str, reason: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let state = std::mem::replace(&mut group.state, GroupState::Empty(Empty::default()));
        let (membership, parked_syncs, joined, not_before, deadline) = match state {
            GroupState::PreparingRebalance(p) => (
                p.membership,
                BTreeMap::new(),
                p.joined,
                p.not_before,
                p.deadline,
            ),
            GroupState::CompletingRebalance(c) => {
                let deadline = now + c.membership.rebalance_timeout();
                (c.membership, c.synced, BTreeMap::new(), now, deadline)
            }
            GroupState::Stable(s) => {
                let deadline = now + s.membership.rebalance_timeout();
                (
                    s.membership,
                    BTreeMap::new(),
                    BTreeMap::new(),
                    now,
                    deadline,
                )
            }
            other @ (GroupState::Empty(_) | GroupState::Dead(_)) => {
                group.state = other;
                return;
            }
        };
        tracing::info!(event = "rebalance_started", group = %group_id, generation = membership.generation, members = membership.members.len(), reason);
        group.state = GroupState::PreparingRebalance(PreparingRebalance {
            membership,
            joined,
            not_before,
            deadline,
        });
        for (_, token) in parked_syncs {
            self.emit(Effect::Sync(token, Err(GroupError::RebalanceInProgress)));
        }
        self.arm_rebalance(now, group_id);
        self.try_complete_join(now, group_id);
    }

    /// Completes the join barrier if every member has rejoined.
    pub(super) fn try_complete_join(&mut self, now: Instant, group_id: &str) {
        let ready = match self.groups.get(group_id).map(|g| &g.state) {
            Some(GroupState::PreparingRebalance(p)) => {
                now >= p.not_before
                    && p.joined.len() == p.membership.members.len()
                    && !p.joined.is_empty()
            }
            _ => false,
        };
        if ready {
            self.complete_join(now, group_id);
        }
    }

    /// Ends the barrier: members that did not rejoin are dropped, the
    /// generation is bumped and every parked join is answered.
    pub(super) fn complete_join(&mut self, now: Instant, group_id: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let state = std::mem::replace(&mut group.state, GroupState::Empty(Empty::default()));
        let GroupState::PreparingRebalance(mut preparing) = state else {
            group.state = state;
            return;
        };
        let absent: Vec<String> = preparing
            .membership
            .members
            .keys()
            .filter(|id| !preparing.joined.contains_key(*id))
            .cloned()
            .collect();
        for id in &absent {
            preparing.membership.remove(id);
        }
        let mut membership = preparing.membership;
        membership.generation += 1;
        self.timers.cancel(&TimerKey::Rebalance {
            group: group_id.to_string(),
        });
        for id in &absent {
            self.disarm_session(group_id, id);
        }
        if membership.members.is_empty() {
            let group = self.groups.get_mut(group_id).expect("group present above");
            group.state = GroupState::Empty(Empty {
                generation: membership.generation,
                protocol_type: membership.protocol_type.clone(),
            });
            tracing::info!(event = "group_empty", group = %group_id, generation = membership.generation);
            return;
        }
        membership.protocol_name = membership.select_protocol();
        assert!(
            membership.protocol_name.is_some(),
            "members share a protocol by construction"
        );
        self.answer_joins(now, group_id, membership, preparing.joined, absent.len());
    }

    fn answer_joins(
        &mut self,
        now: Instant,
        group_id: &str,
        membership: Membership,
        joined: BTreeMap<String, ReplyToken>,
        dropped: usize,
    ) {
        let protocol = membership.protocol_name.clone().unwrap_or_default();
        let leader = membership.leader.clone().unwrap_or_default();
        let roster: Vec<(String, Option<String>, Bytes)> = membership
            .members
            .values()
            .map(|m| {
                let metadata = m.metadata_for(&protocol).cloned().unwrap_or_default();
                (m.member_id.clone(), m.instance_id.clone(), metadata)
            })
            .collect();
        tracing::info!(event = "rebalance_completed", group = %group_id, generation = membership.generation, protocol = %protocol, leader = %leader, members = membership.members.len(), dropped);
        let members: Vec<Member> = membership.members.values().cloned().collect();
        for (member_id, token) in joined {
            let outcome = JoinOutcome {
                generation: membership.generation,
                protocol_type: membership.protocol_type.clone(),
                protocol_name: membership.protocol_name.clone(),
                leader: leader.clone(),
                members: if member_id == leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
                member_id,
            };
            self.emit(Effect::Join(token, Ok(outcome)));
        }
        for member in &members {
            self.arm_session(now, group_id, member);
        }
        let group = self.groups.get_mut(group_id).expect("group present");
        group.state = GroupState::CompletingRebalance(CompletingRebalance {
            membership,
            synced: BTreeMap::new(),
        });
    }

    /// CompletingRebalance → Stable with the leader's assignment.
    pub(super) fn complete_sync(
        &mut self,
        group_id: &str,
        assignments: BTreeMap<String, Bytes>,
    ) -> Option<Bytes> {
        let group = self.groups.get_mut(group_id)?;
        let state = std::mem::replace(&mut group.state, GroupState::Empty(Empty::default()));
        let GroupState::CompletingRebalance(completing) = state else {
            group.state = state;
            return None;
        };
        let mut membership = completing.membership;
        for member in membership.members.values_mut() {
            member.assignment = assignments
                .get(&member.member_id)
                .cloned()
                .unwrap_or_default();
        }
        let answers: Vec<(ReplyToken, Bytes)> = completing
            .synced
            .iter()
            .filter_map(|(id, token)| {
                membership
                    .members
                    .get(id)
                    .map(|m| (*token, m.assignment.clone()))
            })
            .collect();
        tracing::info!(event = "group_stable", group = %group_id, generation = membership.generation, members = membership.members.len());
        group.state = GroupState::Stable(Stable { membership });
        for (token, assignment) in answers {
            self.emit(Effect::Sync(token, Ok(assignment)));
        }
        None
    }

    /// Removes a member from whatever state the group is in; the group
    /// rebalances (or empties) as Kafka's does.
    pub(super) fn remove_member(
        &mut self,
        now: Instant,
        group_id: &str,
        member_id: &str,
        reason: &str,
    ) {
        self.disarm_session(group_id, member_id);
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let mut fenced = Vec::new();
        match &mut group.state {
            GroupState::PreparingRebalance(p) => {
                if let Some(token) = p.joined.remove(member_id) {
                    fenced.push(Effect::Join(token, Err(GroupError::UnknownMemberId)));
                }
            }
            GroupState::CompletingRebalance(c) => {
                if let Some(token) = c.synced.remove(member_id) {
                    fenced.push(Effect::Sync(token, Err(GroupError::UnknownMemberId)));
                }
            }
            _ => {}
        }
        let removed = group
            .state
            .membership_mut()
            .and_then(|m| m.remove(member_id))
            .is_some();
        for effect in fenced {
            self.emit(effect);
        }
        if !removed {
            return;
        }
        tracing::info!(event = "member_removed", group = %group_id, member = %member_id, reason);
        self.after_membership_shrank(now, group_id, reason);
    }

    fn after_membership_shrank(&mut self, now: Instant, group_id: &str, reason: &str) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let empty = group
            .state
            .membership()
            .is_some_and(|m| m.members.is_empty());
        if empty {
            let generation = group.state.generation() + 1;
            let protocol_type = group.state.protocol_type().to_string();
            group.state = GroupState::Empty(Empty {
                generation,
                protocol_type,
            });
            self.timers.cancel(&TimerKey::Rebalance {
                group: group_id.to_string(),
            });
            tracing::info!(event = "group_empty", group = %group_id, generation);
            return;
        }
        match group.state {
            GroupState::PreparingRebalance(_) => self.try_complete_join(now, group_id),
            _ => self.start_rebalance(now, group_id, reason),
        }
    }

    /// Expires due sessions and barriers; call at or after `poll_timeout()`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for key in self.timers.pop_expired(now, TIMERS_PER_CALL_MAX) {
            match key {
                TimerKey::Session { group, member } => self.session_expired(now, &group, &member),
                TimerKey::PendingMember { group, member } => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.pending_members.remove(&member);
                    }
                    self.forget_if_unused(&group);
                }
                TimerKey::Rebalance { group } => self.rebalance_expired(now, &group),
            }
        }
    }

    fn session_expired(&mut self, now: Instant, group_id: &str, member_id: &str) {
        let Some(group) = self.groups.get(group_id) else {
            return;
        };
        if group.state.is_waiting(member_id) {
            // It waits on us; the barrier's own deadline bounds that.
            if let Some(member) = group
                .state
                .membership()
                .and_then(|m| m.members.get(member_id))
                .cloned()
            {
                self.arm_session(now, group_id, &member);
            }
            return;
        }
        tracing::info!(event = "session_expired", group = %group_id, member = %member_id);
        self.remove_member(now, group_id, member_id, "session timeout");
    }

    fn rebalance_expired(&mut self, now: Instant, group_id: &str) {
        let (all_joined, past_deadline) = match self.groups.get(group_id).map(|g| &g.state) {
            Some(GroupState::PreparingRebalance(p)) => (
                now >= p.not_before && p.joined.len() == p.membership.members.len(),
                now >= p.deadline,
            ),
            _ => return,
        };
        if all_joined || past_deadline {
            self.complete_join(now, group_id);
        } else {
            self.arm_rebalance(now, group_id);
        }
    }

    /// The barrier's next wakeup: the end of the initial delay, then the
    /// rebalance deadline.
    pub(super) fn arm_rebalance(&mut self, now: Instant, group_id: &str) {
        let Some(GroupState::PreparingRebalance(p)) = self.groups.get(group_id).map(|g| &g.state)
        else {
            return;
        };
        let at = if now < p.not_before {
            p.not_before
        } else {
            p.deadline
        };
        self.timers.set(
            TimerKey::Rebalance {
                group: group_id.to_string(),
            },
            at,
        );
    }
}
