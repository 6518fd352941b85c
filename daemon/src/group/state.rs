//! One type per group state (rustls-style): each holds only what is valid
//! while the group is in it. Transitions consume the state and return the
//! next; the coordinator owns the effects (replies, timers).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Identifies a parked JoinGroup or SyncGroup answer; the async shell maps
/// it to the channel its request waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyToken(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned this member in the current generation.
    pub assignment: Bytes,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.metadata_for(protocol).is_some()
    }

    fn same_protocols(&self, other: &[(String, Bytes)]) -> bool {
        self.protocols == other
    }

    pub fn protocols_changed(&self, other: &[(String, Bytes)]) -> bool {
        !self.same_protocols(other)
    }
}

/// The members of a group that has any, shared by the non-empty states.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// The generation members were last given (bumped when a barrier completes).
    pub generation: i32,
    pub protocol_type: String,
    /// The protocol chosen at the last completed barrier.
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → the member id that holds it now.
    pub static_members: HashMap<String, String>,
}

impl Membership {
    pub fn add(&mut self, member: Member) {
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.member_id.clone());
        }
        self.members.insert(member.member_id.clone(), member);
    }

    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        assert!(!self.members.contains_key(member_id));
        Some(member)
    }

    /// Protocols every member supports, in the first member's order.
    pub fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let rest: Vec<&Member> = members.collect();
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| rest.iter().all(|m| m.supports(name)))
            .collect()
    }

    /// Whether a member with `protocols` could join without breaking the
    /// common-protocol rule (Kafka's `supportsProtocols`).
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        protocol_type == self.protocol_type
            && protocols
                .iter()
                .any(|(name, _)| self.members.values().all(|m| m.supports(name)))
    }

    /// Kafka's vote: each member votes for its most preferred candidate;
    /// the most votes wins, ties to the earlier candidate.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, c)).collect();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name));
            if let Some((name, _)) = choice
                && let Some(slot) = votes.iter_mut().find(|(_, c)| *c == name)
            {
                slot.0 += 1;
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.clone())
    }

    pub fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }
}

/// No members; committed offsets may remain.
#[derive(Debug, Clone, Default)]
pub struct Empty {
    pub generation: i32,
    /// What its last members spoke ("consumer"); empty for a group that
    /// only ever had standalone commits. Kafka keeps reporting it, so admin
    /// tools see an emptied consumer group as one, not as a "simple" group.
    pub protocol_type: String,
}

/// Waiting for every member to (re)join before a new generation starts.
#[derive(Debug)]
pub struct PreparingRebalance {
    pub membership: Membership,
    /// Members whose JoinGroup is parked, with where its answer goes.
    pub joined: BTreeMap<String, ReplyToken>,
    /// The barrier does not complete before this (initial rebalance delay).
    pub not_before: Instant,
    /// Members that have not rejoined by then are dropped (rebalance timeout).
    pub deadline: Instant,
}

/// The new generation is out; waiting for the leader's assignment.
#[derive(Debug)]
pub struct CompletingRebalance {
    pub membership: Membership,
    /// Members whose SyncGroup is parked until the leader's arrives.
    pub synced: BTreeMap<String, ReplyToken>,
}

/// Every member has its assignment.
#[derive(Debug)]
pub struct Stable {
    pub membership: Membership,
}

/// Deleted; never seen by a request (the group leaves the table at once).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dead;

#[derive(Debug)]
pub enum GroupState {
    Empty(Empty),
    PreparingRebalance(PreparingRebalance),
    CompletingRebalance(CompletingRebalance),
    Stable(Stable),
    Dead(Dead),
}

impl GroupState {
    /// The name DescribeGroups and ListGroups report (Kafka's spelling).
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty(_) => "Empty",
            GroupState::PreparingRebalance(_) => "PreparingRebalance",
            GroupState::CompletingRebalance(_) => "CompletingRebalance",
            GroupState::Stable(_) => "Stable",
            GroupState::Dead(_) => "Dead",
        }
    }

    pub fn membership(&self) -> Option<&Membership> {
        match self {
            GroupState::PreparingRebalance(s) => Some(&s.membership),
            GroupState::CompletingRebalance(s) => Some(&s.membership),
            GroupState::Stable(s) => Some(&s.membership),
            GroupState::Empty(_) | GroupState::Dead(_) => None,
        }
    }

    pub fn membership_mut(&mut self) -> Option<&mut Membership> {
        match self {
            GroupState::PreparingRebalance(s) => Some(&mut s.membership),
            GroupState::CompletingRebalance(s) => Some(&mut s.membership),
            GroupState::Stable(s) => Some(&mut s.membership),
            GroupState::Empty(_) | GroupState::Dead(_) => None,
        }
    }

    /// The group's protocol type, also once its members are gone.
    pub fn protocol_type(&self) -> &str {
        match self {
            GroupState::Empty(e) => &e.protocol_type,
            GroupState::Dead(_) => "",
            other => other.membership().map_or("", |m| m.protocol_type.as_str()),
        }
    }

    pub fn generation(&self) -> i32 {
        match self {
            GroupState::Empty(e) => e.generation,
            GroupState::Dead(_) => -1,
            other => other.membership().map_or(0, |m| m.generation),
        }
    }

    /// Whether `member_id` has a parked JoinGroup or SyncGroup: such a
    /// member waits on us, so its session does not expire meanwhile.
    pub fn is_waiting(&self, member_id: &str) -> bool {
        match self {
            GroupState::PreparingRebalance(s) => s.joined.contains_key(member_id),
            GroupState::CompletingRebalance(s) => s.synced.contains_key(member_id),
            _ => false,
        }
    }
}
