//! SyncGroup: the leader's assignment ends CompletingRebalance; followers
//! wait for it. In Stable everyone gets their stored assignment at once.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::coordinator::{ASSIGNMENT_BYTES_MAX, Coordinator, Parked};
use super::error::GroupError;
use super::state::GroupState;

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// The leader's (member id, assignment) list; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

impl Coordinator {
    pub fn sync(&mut self, now: Instant, request: SyncRequest) -> Parked<Bytes> {
        if let Some((_, big)) = request
            .assignments
            .iter()
            .find(|(_, a)| a.len() > ASSIGNMENT_BYTES_MAX)
        {
            return Parked::Now(Err(GroupError::TooLarge {
                what: "assignment",
                bytes: big.len(),
                max: ASSIGNMENT_BYTES_MAX,
            }));
        }
        if let Err(e) = self.check_member(
            &request.group_id,
            &request.member_id,
            request.instance_id.as_deref(),
            Some(request.generation),
        ) {
            return Parked::Now(Err(e));
        }
        self.touch(now, &request.group_id, &request.member_id);
        let group = self.groups.get_mut(&request.group_id).expect("checked");
        match &mut group.state {
            GroupState::PreparingRebalance(_) => Parked::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable(s) => Parked::Now(Ok(s
                .membership
                .members
                .get(&request.member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default())),
            GroupState::CompletingRebalance(c) => {
                let is_leader = c.membership.leader.as_deref() == Some(request.member_id.as_str());
                let token = self.token();
                let group = self.groups.get_mut(&request.group_id).expect("checked");
                if let GroupState::CompletingRebalance(c) = &mut group.state {
                    c.synced.insert(request.member_id.clone(), token);
                }
                if is_leader {
                    let assignments: BTreeMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    self.complete_sync(&request.group_id, assignments);
                }
                Parked::Later(token)
            }
            GroupState::Empty(_) | GroupState::Dead(_) => {
                Parked::Now(Err(GroupError::UnknownMemberId))
            }
        }
    }

    /// Kafka's member checks, in its order: unknown member, fenced static
    /// instance, wrong generation.
    pub(super) fn check_member(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: Option<i32>,
    ) -> Result<(), GroupError> {
        let membership = self
            .groups
            .get(group_id)
            .and_then(|g| g.state.membership())
            .ok_or(GroupError::UnknownMemberId)?;
        if let Some(instance) = instance_id
            && let Some(holder) = membership.static_members.get(instance)
            && holder != member_id
        {
            return Err(GroupError::FencedInstanceId(instance.to_string()));
        }
        if !membership.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if let Some(got) = generation
            && got != membership.generation
        {
            return Err(GroupError::IllegalGeneration {
                got,
                current: membership.generation,
            });
        }
        Ok(())
    }
}
