//! Heartbeat and LeaveGroup: keep a session alive, or end it early.

use std::time::Instant;

use super::coordinator::Coordinator;
use super::error::GroupError;
use super::state::GroupState;

impl Coordinator {
    /// Refreshes the member's session; tells it to rejoin while rebalancing.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.check_member(group_id, member_id, instance_id, None)?;
        self.touch(now, group_id, member_id);
        let state = &self.groups[group_id].state;
        if let GroupState::PreparingRebalance(_) = state {
            return Err(GroupError::RebalanceInProgress);
        }
        self.check_member(group_id, member_id, instance_id, Some(generation))
    }

    /// Removes a member at once (no session wait); the rest rebalance.
    pub fn leave(
        &mut self,
        now: Instant,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let target = match instance_id {
            // A static member may leave by instance id alone (v3+).
            Some(instance) if member_id.is_empty() => self
                .groups
                .get(group_id)
                .and_then(|g| g.state.membership())
                .and_then(|m| m.static_members.get(instance))
                .cloned()
                .ok_or(GroupError::UnknownMemberId)?,
            _ => {
                self.check_member(group_id, member_id, instance_id, None)?;
                member_id.to_string()
            }
        };
        tracing::info!(event = "member_left", group = %group_id, member = %target);
        self.remove_member(now, group_id, &target, "member left");
        Ok(())
    }
}
