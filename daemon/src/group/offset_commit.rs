//! OffsetCommit checks and the committed-offset table: which commits are
//! allowed (generation fencing), applying a commit once it is in the
//! offsets log, reading offsets back, and deleting them.

use std::time::Instant;

use super::coordinator::{
    CommittedOffset, Coordinator, GROUPS_MAX, OFFSET_METADATA_BYTES_MAX, OFFSETS_PER_GROUP_MAX,
};
use super::error::GroupError;
use super::state::GroupState;

/// A topic-partition of a committed offset.
pub type OffsetKey = (String, i32);

/// One entry of the offsets log: a commit, or a tombstone (`None`).
pub type OffsetChange = (String, OffsetKey, Option<CommittedOffset>);

impl Coordinator {
    /// Whether `member_id` of `generation` may commit to these partitions.
    /// Generation -1 with no member id is a standalone commit (`assign()`
    /// consumers, tools), allowed only while the group has no members.
    pub fn check_commit(
        &mut self,
        now: Instant,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        keys: &[OffsetKey],
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let Some(group) = self.groups.get(group_id) else {
            // Kafka's order: an unknown member first, then the generation.
            if !member_id.is_empty() {
                return Err(GroupError::UnknownMemberId);
            }
            if generation >= 0 {
                return Err(GroupError::IllegalGeneration {
                    got: generation,
                    current: -1,
                });
            }
            if self.groups.len() >= GROUPS_MAX {
                return Err(GroupError::TooManyGroups(GROUPS_MAX));
            }
            return Ok(());
        };
        let new_keys = keys
            .iter()
            .filter(|k| !group.offsets.contains_key(*k))
            .count();
        if group.offsets.len() + new_keys > OFFSETS_PER_GROUP_MAX {
            return Err(GroupError::TooManyOffsets(OFFSETS_PER_GROUP_MAX));
        }
        let standalone = generation < 0 && member_id.is_empty() && instance_id.is_none();
        match (&group.state, standalone) {
            (GroupState::Empty(_), true) => return Ok(()),
            (_, true) => return Err(GroupError::UnknownMemberId),
            (GroupState::Empty(_), false) if !member_id.is_empty() => {
                return Err(GroupError::UnknownMemberId);
            }
            (GroupState::Empty(_), false) => {
                return Err(GroupError::IllegalGeneration {
                    got: generation,
                    current: group.state.generation(),
                });
            }
            _ => {}
        }
        self.check_member(group_id, member_id, instance_id, Some(generation))?;
        self.touch(now, group_id, member_id);
        // As Kafka: a member of the current generation may commit while the
        // group prepares a rebalance (cooperative consumers commit in their
        // revoke callback); only between the join barrier and SyncGroup is
        // the generation in flux.
        match self.groups[group_id].state {
            GroupState::CompletingRebalance(_) => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Checks one partition's commit metadata against the limit.
    pub fn check_offset_metadata(metadata: &str) -> Result<(), GroupError> {
        if metadata.len() > OFFSET_METADATA_BYTES_MAX {
            return Err(GroupError::OffsetMetadataTooLarge(metadata.len()));
        }
        Ok(())
    }

    /// Applies changes that are in the offsets log (commits and tombstones),
    /// in log order; also used to replay the log at startup.
    pub fn apply_offsets(&mut self, changes: impl IntoIterator<Item = OffsetChange>) {
        for (group_id, key, value) in changes {
            match value {
                Some(committed) => {
                    if let Ok(group) = self.group_or_create(&group_id) {
                        group.offsets.insert(key, committed);
                    }
                }
                None => {
                    if let Some(group) = self.groups.get_mut(&group_id) {
                        group.offsets.remove(&key);
                    }
                    self.forget_if_unused(&group_id);
                }
            }
        }
    }

    pub fn committed(&self, group_id: &str, key: &OffsetKey) -> Option<&CommittedOffset> {
        self.groups.get(group_id).and_then(|g| g.offsets.get(key))
    }

    /// Every committed offset of a group, in topic-partition order.
    pub fn committed_all(&self, group_id: &str) -> Vec<(OffsetKey, CommittedOffset)> {
        self.groups.get(group_id).map_or_else(Vec::new, |g| {
            g.offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// DeleteGroups: only an Empty group goes; returns its offsets, which
    /// the caller tombstones in the log before calling `remove_group`.
    pub fn check_delete_group(&self, group_id: &str) -> Result<Vec<OffsetKey>, GroupError> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if !matches!(group.state, GroupState::Empty(_)) || !group.pending_members.is_empty() {
            return Err(GroupError::NonEmptyGroup);
        }
        Ok(group.offsets.keys().cloned().collect())
    }

    /// Empty → Dead: the group leaves the table.
    pub fn remove_group(&mut self, group_id: &str) {
        if let Some(group) = self.groups.get(group_id) {
            assert!(matches!(group.state, GroupState::Empty(_)));
        }
        self.groups.remove(group_id);
        tracing::info!(event = "group_deleted", group = %group_id);
    }

    /// OffsetDelete: the group must exist; a topic a live member still
    /// subscribes to is refused per partition.
    pub fn check_offset_delete(&self, group_id: &str) -> Result<Vec<String>, GroupError> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        let Some(membership) = group.state.membership() else {
            return Ok(Vec::new());
        };
        if membership.protocol_type != "consumer" {
            return Err(GroupError::NonEmptyGroup);
        }
        let mut topics = Vec::new();
        for member in membership.members.values() {
            for (_, metadata) in &member.protocols {
                topics.extend(super::describe::subscribed_topics(metadata));
            }
        }
        topics.sort();
        topics.dedup();
        Ok(topics)
    }
}
