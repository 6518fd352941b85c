//! A partition leader's view of its followers, as a plain state machine:
//! each follower's log end as its fetches report it, when it was last caught
//! up, the ISR (committed, and the change in flight to the controller), and
//! the high watermark they imply. Time is passed in; nothing here does I/O
//! (DESIGN §3, quinn-proto style).
//!
//! The rules are Kafka's:
//! - The high watermark is the least log end over the *maximal* ISR (the
//!   committed ISR with the members of a change in flight, KIP-497) and the
//!   leader's own acknowledgeable end; it never moves back.
//! - A follower is caught up when a fetch asks for the leader's log end, or
//!   for at least what the leader's log end was at its previous fetch (so a
//!   follower that keeps up with a busy leader is never counted out).
//! - An ISR member not caught up for longer than `replica.lag.time.max.ms`
//!   leaves; a follower whose log end reaches the high watermark and the
//!   start of this leader epoch joins.

use std::collections::BTreeMap;

/// A broker's id (as the controller's records name it).
pub type BrokerId = i32;

/// A follower's log end before its first fetch this leader epoch.
pub const UNKNOWN_OFFSET: i64 = -1;

/// What the controller last committed about the partition, as the leader
/// applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Replicas a reassignment removes once it completes: they still copy
    /// and count in the ISR, but not toward the replication factor.
    pub removing: Vec<BrokerId>,
}

impl ReplicaSet {
    /// The replication factor the partition is promised: its replicas but
    /// those a reassignment removes (Kafka's rule for under-replication).
    pub fn target_len(&self) -> usize {
        self.replicas
            .iter()
            .filter(|id| !self.removing.contains(id))
            .count()
    }
}

/// The leader's own log end (what followers copy) and the part of it that
/// counts towards the high watermark (all of it under the page-cache flush
/// policy, what is fsynced under fsync-before-ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderEnd {
    pub log_end: i64,
    pub durable_end: i64,
}

impl LeaderEnd {
    pub fn all_durable(log_end: i64) -> LeaderEnd {
        LeaderEnd {
            log_end,
            durable_end: log_end,
        }
    }
}

/// An ISR the leader asks the controller to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub isr: Vec<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Followers the proposal adds (an expansion) or removes (a shrink).
    pub kind: IsrChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChangeKind {
    Expand { joining: BrokerId },
    Shrink { leaving: Vec<BrokerId> },
}

/// Why a follower's fetch is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerError {
    #[error("broker {0} is not a replica of this partition")]
    NotAReplica(BrokerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerProgress {
    log_end: i64,
    last_caught_up_ms: i64,
    /// The leader's log end and the time at this follower's previous fetch.
    previous_fetch_leader_end: i64,
    previous_fetch_ms: i64,
}

/// One led partition's replication bookkeeping.
#[derive(Debug, Clone)]
pub struct LeaderState {
    self_id: BrokerId,
    set: ReplicaSet,
    /// The ISR sent to the controller and not answered yet.
    pending: Option<IsrProposal>,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// The log end when this leader epoch began (KIP-207, ISR joins).
    epoch_start_offset: i64,
    end: LeaderEnd,
    high_watermark: i64,
}

impl LeaderState {
    /// Taking the lead at `set.leader_epoch`, with the log ending at `end`
    /// and the high watermark this broker knew as a follower. Followers'
    /// log ends are unknown until they fetch, so the high watermark waits
    /// for every ISR member's first fetch; ISR members count as caught up
    /// now, so none is dropped for the time before this broker led.
    pub fn new(
        self_id: BrokerId,
        set: ReplicaSet,
        end: LeaderEnd,
        high_watermark: i64,
        now_ms: i64,
    ) -> LeaderState {
        assert!(set.isr.contains(&self_id), "a leader is in its own ISR");
        let followers = set
            .replicas
            .iter()
            .copied()
            .filter(|id| *id != self_id)
            .map(|id| {
                let in_isr = set.isr.contains(&id);
                let progress = FollowerProgress {
                    log_end: UNKNOWN_OFFSET,
                    last_caught_up_ms: if in_isr { now_ms } else { i64::MIN },
                    previous_fetch_leader_end: UNKNOWN_OFFSET,
                    previous_fetch_ms: i64::MIN,
                };
                (id, progress)
            })
            .collect();
        let mut state = LeaderState {
            self_id,
            set,
            pending: None,
            followers,
            epoch_start_offset: end.log_end,
            end,
            high_watermark: high_watermark.min(end.log_end),
        };
        state.recompute_high_watermark();
        state
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn leader_epoch(&self) -> i32 {
        self.set.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.set.partition_epoch
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.set.replicas
    }

    /// The committed replica set.
    pub fn set(&self) -> &ReplicaSet {
        &self.set
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[BrokerId] {
        &self.set.isr
    }

    /// The committed ISR with the members of a change in flight: what the
    /// high watermark and acks=all wait for (KIP-497).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut maximal = self.set.isr.clone();
        if let Some(pending) = &self.pending {
            for id in &pending.isr {
                if !maximal.contains(id) {
                    maximal.push(*id);
                }
            }
        }
        maximal
    }

    pub fn pending(&self) -> Option<&IsrProposal> {
        self.pending.as_ref()
    }

    /// The offset this leader epoch began at.
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    /// KIP-207: until the high watermark reaches the start of this epoch,
    /// it may be below what the previous leader exposed, and offset queries
    /// are answered OFFSET_NOT_AVAILABLE.
    pub fn high_watermark_reached_epoch_start(&self) -> bool {
        self.high_watermark >= self.epoch_start_offset
    }

    /// A follower's log end as its last fetch said (`UNKNOWN_OFFSET` before it).
    pub fn follower_log_end(&self, follower: BrokerId) -> Option<i64> {
        self.followers.get(&follower).map(|p| p.log_end)
    }

    /// Followers with their log ends, for lag metrics.
    pub fn followers(&self) -> impl Iterator<Item = (BrokerId, i64)> + '_ {
        self.followers.iter().map(|(id, p)| (*id, p.log_end))
    }

    /// The leader's log moved (an append, a sync). Returns the new high
    /// watermark if it moved.
    pub fn on_leader_end(&mut self, end: LeaderEnd) -> Option<i64> {
        assert!(end.durable_end <= end.log_end);
        self.end = end;
        self.recompute_high_watermark()
    }

    /// A follower fetched from `fetch_offset`: everything below it is on
    /// the follower. Returns the high watermark if it moved.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, FollowerError> {
        let leader_end = self.end.log_end;
        let progress = self
            .followers
            .get_mut(&follower)
            .ok_or(FollowerError::NotAReplica(follower))?;
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.previous_fetch_leader_end
            && progress.previous_fetch_leader_end != UNKNOWN_OFFSET
        {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.previous_fetch_ms);
        }
        progress.log_end = fetch_offset;
        progress.previous_fetch_leader_end = leader_end;
        progress.previous_fetch_ms = now_ms;
        Ok(self.recompute_high_watermark())
    }

    /// The expansion to ask for after a fetch, if the follower qualifies and
    /// no other change is in flight. The caller sends it and later reports
    /// the answer (`on_committed`, `on_refused`).
    pub fn propose_expand(&mut self, follower: BrokerId) -> Option<IsrProposal> {
        if self.pending.is_some() || self.set.isr.contains(&follower) {
            return None;
        }
        let log_end = self.followers.get(&follower)?.log_end;
        let in_sync = log_end != UNKNOWN_OFFSET
            && log_end >= self.high_watermark
            && log_end >= self.epoch_start_offset;
        if !in_sync {
            return None;
        }
        let mut isr = self.set.isr.clone();
        isr.push(follower);
        self.propose(isr, IsrChangeKind::Expand { joining: follower })
    }

    /// The shrink to ask for: ISR members not caught up for longer than
    /// `lag_time_max_ms`. None while another change is in flight.
    pub fn propose_shrink(&mut self, now_ms: i64, lag_time_max_ms: i64) -> Option<IsrProposal> {
        if self.pending.is_some() {
            return None;
        }
        let leader_end = self.end.log_end;
        let leaving: Vec<BrokerId> = self
            .set
            .isr
            .iter()
            .copied()
            .filter(|id| *id != self.self_id)
            .filter(|id| {
                self.followers.get(id).is_some_and(|p| {
                    p.log_end != leader_end
                        && now_ms.saturating_sub(p.last_caught_up_ms) > lag_time_max_ms
                })
            })
            .collect();
        if leaving.is_empty() {
            return None;
        }
        let isr = self
            .set
            .isr
            .iter()
            .copied()
            .filter(|id| !leaving.contains(id))
            .collect();
        self.propose(isr, IsrChangeKind::Shrink { leaving })
    }

    fn propose(&mut self, isr: Vec<BrokerId>, kind: IsrChangeKind) -> Option<IsrProposal> {
        let proposal = IsrProposal {
            isr,
            leader_epoch: self.set.leader_epoch,
            partition_epoch: self.set.partition_epoch,
            kind,
        };
        self.pending = Some(proposal.clone());
        Some(proposal)
    }

    /// The controller refused `proposal` (stale epochs, an ineligible
    /// replica) or could not be reached: it is dropped if it is still the
    /// change in flight; the metadata image brings whatever changed
    /// meanwhile. A late answer to an older proposal leaves a newer one in
    /// flight alone: dropping it would take a joining member out of the
    /// maximal ISR while its expansion may yet commit.
    pub fn on_refused(&mut self, proposal: &IsrProposal) -> Option<i64> {
        if self.pending.as_ref() != Some(proposal) {
            return None;
        }
        self.pending = None;
        self.recompute_high_watermark()
    }

    /// A committed partition state at this leader epoch, from the
    /// controller's answer or the metadata image (whichever comes first; a
    /// state older than the one held is ignored). Returns the high
    /// watermark if it moved (a shrink can let it advance).
    pub fn on_committed(&mut self, set: ReplicaSet) -> Option<i64> {
        assert_eq!(
            set.leader_epoch, self.set.leader_epoch,
            "a new leader epoch makes a new LeaderState"
        );
        if set.partition_epoch <= self.set.partition_epoch {
            return None;
        }
        for id in &set.replicas {
            if *id != self.self_id && !self.followers.contains_key(id) {
                self.followers.insert(
                    *id,
                    FollowerProgress {
                        log_end: UNKNOWN_OFFSET,
                        last_caught_up_ms: i64::MIN,
                        previous_fetch_leader_end: UNKNOWN_OFFSET,
                        previous_fetch_ms: i64::MIN,
                    },
                );
            }
        }
        self.followers.retain(|id, _| set.replicas.contains(id));
        self.set = set;
        self.pending = None;
        self.recompute_high_watermark()
    }

    fn recompute_high_watermark(&mut self) -> Option<i64> {
        let mut candidate = self.end.durable_end;
        for id in self.maximal_isr() {
            if id == self.self_id {
                continue;
            }
            match self.followers.get(&id) {
                Some(progress) => candidate = candidate.min(progress.log_end),
                // A member that is not a replica any more (a reassignment
                // committed while a change was in flight) holds nothing.
                None => continue,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
#[path = "leader_state_tests.rs"]
mod tests;
