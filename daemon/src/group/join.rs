//! JoinGroup: admission checks, then the member is parked behind the join
//! barrier (or answered at once when nothing needs to change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::coordinator::{
    Coordinator, Effect, JoinOutcome, MEMBER_METADATA_BYTES_MAX, MEMBERS_PER_GROUP_MAX, Parked,
    SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN,
};
use super::error::GroupError;
use super::state::{GroupState, Member, Membership, PreparingRebalance};
use super::timer::TimerKey;

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

impl JoinRequest {
    fn validate(&self) -> Result<(), GroupError> {
        if self.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&self.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout(self.session_timeout_ms));
        }
        let bytes: usize = self.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if bytes > MEMBER_METADATA_BYTES_MAX {
            return Err(GroupError::TooLarge {
                what: "member metadata",
                bytes,
                max: MEMBER_METADATA_BYTES_MAX,
            });
        }
        if self.protocol_type.is_empty() || self.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol("no protocol offered"));
        }
        Ok(())
    }

    fn member(&self, member_id: String) -> Member {
        let session_ms = self.session_timeout_ms.max(0) as u64;
        // JoinGroup v0 has no rebalance timeout: it equals the session's.
        let rebalance_ms = if self.rebalance_timeout_ms > 0 {
            self.rebalance_timeout_ms as u64
        } else {
            session_ms
        };
        Member {
            member_id,
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            session_timeout: Duration::from_millis(session_ms),
            rebalance_timeout: Duration::from_millis(rebalance_ms),
            protocols: self.protocols.clone(),
            assignment: Bytes::new(),
        }
    }
}

impl Coordinator {
    pub fn join(&mut self, now: Instant, request: JoinRequest) -> Parked<JoinOutcome> {
        if let Err(e) = request.validate() {
            return Parked::Now(Err(e));
        }
        let group = match self.group_or_create(&request.group_id) {
            Ok(group) => group,
            Err(e) => return Parked::Now(Err(e)),
        };
        let accepts = match group.state.membership() {
            Some(m) => m.accepts(&request.protocol_type, &request.protocols),
            None => true,
        };
        let outcome = if !accepts {
            Parked::Now(Err(GroupError::InconsistentGroupProtocol(
                "no protocol in common with the group's members",
            )))
        } else if request.member_id.is_empty() {
            self.join_new_member(now, &request)
        } else {
            self.join_known_member(now, &request)
        };
        if let Parked::Now(Err(e)) = &outcome {
            tracing::info!(event = "join_refused", group = %request.group_id, member = %request.member_id, error = %e);
            self.forget_if_unused(&request.group_id);
        }
        outcome
    }

    fn join_new_member(&mut self, now: Instant, request: &JoinRequest) -> Parked<JoinOutcome> {
        let group_id = request.group_id.as_str();
        let group = self.groups.get(group_id).expect("created by join");
        if let Some(instance) = &request.instance_id
            && let Some(old) = group
                .state
                .membership()
                .and_then(|m| m.static_members.get(instance))
                .cloned()
        {
            return self.replace_static_member(now, request, &old);
        }
        if group.member_count() >= MEMBERS_PER_GROUP_MAX {
            return Parked::Now(Err(GroupError::GroupMaxSizeReached(MEMBERS_PER_GROUP_MAX)));
        }
        let member_id = self.new_member_id(&request.client_id);
        if request.require_known_member_id && request.instance_id.is_none() {
            let group = self.groups.get_mut(group_id).expect("created by join");
            group.pending_members.insert(member_id.clone(), ());
            let session = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
            self.timers.set(
                TimerKey::PendingMember {
                    group: group_id.to_string(),
                    member: member_id.clone(),
                },
                now + session,
            );
            return Parked::Now(Err(GroupError::MemberIdRequired(member_id)));
        }
        self.add_member_and_park(now, request.member(member_id), request)
    }

    fn join_known_member(&mut self, now: Instant, request: &JoinRequest) -> Parked<JoinOutcome> {
        let group_id = request.group_id.as_str();
        let member_id = request.member_id.as_str();
        let group = self.groups.get_mut(group_id).expect("created by join");
        let membership = group.state.membership();
        if let (Some(instance), Some(m)) = (&request.instance_id, membership)
            && m.static_members
                .get(instance)
                .is_some_and(|holder| holder != member_id)
        {
            return Parked::Now(Err(GroupError::FencedInstanceId(instance.clone())));
        }
        let Some(existing) = membership.and_then(|m| m.members.get(member_id)).cloned() else {
            if group.pending_members.remove(member_id).is_some() {
                self.timers.cancel(&TimerKey::PendingMember {
                    group: group_id.to_string(),
                    member: member_id.to_string(),
                });
                return self.add_member_and_park(
                    now,
                    request.member(member_id.to_string()),
                    request,
                );
            }
            return Parked::Now(Err(GroupError::UnknownMemberId));
        };
        let changed = existing.protocols_changed(&request.protocols);
        let mut updated = request.member(member_id.to_string());
        updated.assignment = existing.assignment.clone();
        if let Some(m) = group.state.membership_mut() {
            m.members.insert(member_id.to_string(), updated.clone());
        }
        self.arm_session(now, group_id, &updated);
        let is_leader = membership_leader(&self.groups[group_id].state) == Some(member_id);
        match &self.groups[group_id].state {
            GroupState::PreparingRebalance(_) => self.park_join(now, group_id, member_id),
            GroupState::CompletingRebalance(_) if !changed => {
                Parked::Now(Ok(self.current_outcome(group_id, member_id)))
            }
            GroupState::Stable(_) if !changed && !is_leader => {
                Parked::Now(Ok(self.current_outcome(group_id, member_id)))
            }
            _ => {
                self.start_rebalance(now, group_id, "member rejoined with new metadata");
                self.park_join(now, group_id, member_id)
            }
        }
    }

    /// A static member restarted (new member id, same instance id): the old
    /// id is fenced; in a Stable group it keeps its assignment, no rebalance.
    fn replace_static_member(
        &mut self,
        now: Instant,
        request: &JoinRequest,
        old_id: &str,
    ) -> Parked<JoinOutcome> {
        let group_id = request.group_id.as_str();
        let new_id = self.new_member_id(&request.client_id);
        self.disarm_session(group_id, old_id);
        let group = self.groups.get_mut(group_id).expect("created by join");
        let mut fenced = Vec::new();
        match &mut group.state {
            GroupState::PreparingRebalance(p) => fenced.extend(
                p.joined
                    .remove(old_id)
                    .map(|t| Effect::Join(t, Err(GroupError::FencedInstanceId(old_id.into())))),
            ),
            GroupState::CompletingRebalance(c) => fenced.extend(
                c.synced
                    .remove(old_id)
                    .map(|t| Effect::Sync(t, Err(GroupError::FencedInstanceId(old_id.into())))),
            ),
            _ => {}
        }
        let membership = group
            .state
            .membership_mut()
            .expect("static member implies members");
        let old = membership
            .members
            .remove(old_id)
            .expect("static map points at a member");
        let was_leader = membership.leader.as_deref() == Some(old_id);
        let mut member = request.member(new_id.clone());
        member.assignment = old.assignment.clone();
        let changed = old.protocols_changed(&request.protocols);
        membership.members.insert(new_id.clone(), member.clone());
        if let Some(instance) = &member.instance_id {
            membership
                .static_members
                .insert(instance.clone(), new_id.clone());
        }
        if was_leader {
            membership.leader = Some(new_id.clone());
        }
        let stable = matches!(group.state, GroupState::Stable(_));
        for effect in fenced {
            self.emit(effect);
        }
        self.arm_session(now, group_id, &member);
        tracing::info!(event = "static_member_replaced", group = %group_id, old = %old_id, new = %new_id, rebalance = !stable || changed);
        if stable && !changed {
            return Parked::Now(Ok(self.current_outcome(group_id, &new_id)));
        }
        if !matches!(
            self.groups[group_id].state,
            GroupState::PreparingRebalance(_)
        ) {
            self.start_rebalance(now, group_id, "static member rejoined with new metadata");
        }
        self.park_join(now, group_id, &new_id)
    }

    fn add_member_and_park(
        &mut self,
        now: Instant,
        member: Member,
        request: &JoinRequest,
    ) -> Parked<JoinOutcome> {
        let group_id = request.group_id.as_str();
        let member_id = member.member_id.clone();
        let initial_delay = self.config.initial_rebalance_delay;
        let group = self.groups.get_mut(group_id).expect("created by join");
        if let GroupState::Empty(empty) = &group.state {
            let generation = empty.generation;
            let membership = Membership {
                generation,
                protocol_type: request.protocol_type.clone(),
                ..Membership::default()
            };
            let not_before = now + initial_delay;
            group.state = GroupState::PreparingRebalance(PreparingRebalance {
                membership,
                joined: BTreeMap::new(),
                not_before,
                deadline: not_before + member.rebalance_timeout,
            });
            tracing::info!(event = "rebalance_started", group = %group_id, generation, members = 0, reason = "first member joined");
        }
        let group = self.groups.get_mut(group_id).expect("created by join");
        let membership = group.state.membership_mut().expect("not empty any more");
        membership.add(member.clone());
        self.arm_session(now, group_id, &member);
        tracing::info!(event = "member_added", group = %group_id, member = %member_id, instance = ?member.instance_id);
        if !matches!(
            self.groups[group_id].state,
            GroupState::PreparingRebalance(_)
        ) {
            self.start_rebalance(now, group_id, "new member joined");
        }
        self.park_join(now, group_id, &member_id)
    }

    /// Parks `member_id`'s join in a PreparingRebalance group and completes
    /// the barrier if it was the last one awaited.
    fn park_join(&mut self, now: Instant, group_id: &str, member_id: &str) -> Parked<JoinOutcome> {
        let token = self.token();
        let Some(GroupState::PreparingRebalance(p)) =
            self.groups.get_mut(group_id).map(|g| &mut g.state)
        else {
            return Parked::Now(Err(GroupError::RebalanceInProgress));
        };
        assert!(p.membership.members.contains_key(member_id));
        let replaced = p.joined.insert(member_id.to_string(), token);
        if let Some(old) = replaced {
            self.emit(Effect::Join(old, Err(GroupError::RebalanceInProgress)));
        }
        self.arm_rebalance(now, group_id);
        self.try_complete_join(now, group_id);
        Parked::Later(token)
    }

    /// The answer for a member of the current generation (no barrier).
    fn current_outcome(&self, group_id: &str, member_id: &str) -> JoinOutcome {
        let membership = self.groups[group_id]
            .state
            .membership()
            .expect("called for groups with members");
        let leader = membership.leader.clone().unwrap_or_default();
        let protocol = membership.protocol_name.clone().unwrap_or_default();
        let members = if leader == member_id {
            membership
                .members
                .values()
                .map(|m| {
                    let metadata = m.metadata_for(&protocol).cloned().unwrap_or_default();
                    (m.member_id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            generation: membership.generation,
            protocol_type: membership.protocol_type.clone(),
            protocol_name: membership.protocol_name.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }
}

fn membership_leader(state: &GroupState) -> Option<&str> {
    state.membership().and_then(|m| m.leader.as_deref())
}
