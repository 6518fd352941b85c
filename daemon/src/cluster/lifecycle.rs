//! A broker's membership as a state machine: register with the active
//! controller, then heartbeat; find the controller again when it moves; and
//! know how long this broker may act on its last acknowledged heartbeat
//! (its lease). Time is passed in; `cluster/runtime.rs` moves the bytes.
//!
//! The lease ends `session timeout` after the *sending* time of the last
//! heartbeat the controller acknowledged unfenced. The controller fences at
//! `arrival + session timeout`, which is later, so a broker always stops
//! acting as a member before the controller hands its partitions on.

use std::time::{Duration, Instant};

use crate::controller::adoption::Adoption;
use crate::controller::records::{BrokerId, BrokerRegistration};
use crate::controller::rpc::{ClusterMessage, HeartbeatRequest, Outcome, RegisterRequest, Reply};

/// Kafka's codes that change what the broker does next.
const STALE_BROKER_EPOCH: i16 = 77;
const BROKER_ID_NOT_REGISTERED: i16 = 102;

/// Timings, from the spec's `[controller]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
    /// An unanswered request is given up after this; the next voter is tried.
    pub request_timeout: Duration,
}

impl Timings {
    /// From the spec's heartbeat interval and session timeout. A request
    /// is given up after two intervals: an answer waits for a quorum round
    /// trip (and an fsync when the heartbeat changes something); well
    /// inside the session, which spec validation keeps at four intervals
    /// or more, so a broker finds a new controller before its session there
    /// could end.
    pub fn from_spec(heartbeat_interval_ms: u64, session_timeout_ms: u64) -> Self {
        let millis = Duration::from_millis;
        Timings {
            heartbeat_interval: millis(heartbeat_interval_ms),
            session_timeout: millis(session_timeout_ms),
            request_timeout: millis(heartbeat_interval_ms.saturating_mul(2)),
        }
    }
}

/// Where the broker stands with the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Unregistered,
    Registered { broker_epoch: i64, fenced: bool },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    request_id: u64,
    to: BrokerId,
    sent_at: Instant,
}

pub struct Lifecycle {
    registration: BrokerRegistration,
    spec_hash: String,
    voters: Vec<BrokerId>,
    timings: Timings,
    membership: Membership,
    /// The voter requests go to: the last one named as active, or the
    /// next in turn after a timeout.
    target: usize,
    pending: Option<Pending>,
    next_send_at: Instant,
    next_request_id: u64,
    lease_until: Option<Instant>,
    /// The highest commit index the controller has told us of.
    metadata_commit: u64,
    /// The voter that last answered as the active controller.
    controller: Option<BrokerId>,
    /// A single node's data directory, reported with the first
    /// registration (controller/adoption.rs).
    adoption: Option<Adoption>,
    /// A controlled shutdown asks to be fenced: the controller moves this
    /// broker's leaderships and ISR memberships to the others.
    want_fence: bool,
}

impl Lifecycle {
    /// Reports `adoption` with the registration.
    pub fn with_adoption(mut self, adoption: Option<Adoption>) -> Self {
        self.adoption = adoption;
        self
    }

    pub fn new(
        registration: BrokerRegistration,
        spec_hash: String,
        voters: Vec<BrokerId>,
        timings: Timings,
        now: Instant,
    ) -> Self {
        assert!(!voters.is_empty(), "a cluster has voters");
        // Start with ourselves if we vote: no network needed to find out.
        let target = voters
            .iter()
            .position(|id| *id == registration.broker_id)
            .unwrap_or(0);
        Lifecycle {
            registration,
            spec_hash,
            voters,
            timings,
            membership: Membership::Unregistered,
            target,
            pending: None,
            next_send_at: now,
            next_request_id: 1,
            lease_until: None,
            metadata_commit: 0,
            controller: None,
            adoption: None,
            want_fence: false,
        }
    }

    /// From now on every heartbeat asks to be fenced (or no longer does).
    pub fn set_want_fence(&mut self, want_fence: bool, now: Instant) {
        if want_fence != self.want_fence {
            self.want_fence = want_fence;
            // Said at once, not at the next interval.
            self.next_send_at = self.next_send_at.min(now);
        }
    }

    /// The voter requests go to now: the active controller, as far as known.
    pub fn target_voter(&self) -> BrokerId {
        self.voters[self.target]
    }

    pub fn membership(&self) -> Membership {
        self.membership
    }

    /// The controller's commit index as of the last heartbeat answer: a
    /// broker that follows the log by fetching is behind while below it.
    pub fn metadata_commit(&self) -> u64 {
        self.metadata_commit
    }

    /// The voter that last answered as the active controller.
    pub fn controller(&self) -> Option<BrokerId> {
        self.controller
    }

    pub fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    /// Whether this broker may act as a member (lead, answer as leader).
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    /// A reloaded spec: reported from the next request on.
    pub fn set_spec_hash(&mut self, hash: String) {
        self.spec_hash = hash;
    }

    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// When `poll_transmit` next has something to do, or the lease ends.
    pub fn poll_timeout(&self) -> Instant {
        let next = match self.pending {
            Some(pending) => pending.sent_at + self.timings.request_timeout,
            None => self.next_send_at,
        };
        match self.lease_until {
            Some(until) => next.min(until),
            None => next,
        }
    }

    /// The request to send now, if any, and to which voter.
    /// `metadata_offset` is the last metadata index this broker applied.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        metadata_offset: u64,
    ) -> Option<(BrokerId, ClusterMessage)> {
        if let Some(pending) = self.pending {
            if now < pending.sent_at + self.timings.request_timeout {
                return None;
            }
            tracing::debug!(event = "controller_request_timeout", to = pending.to);
            self.pending = None;
            self.rotate_target(pending.to);
            self.next_send_at = now;
        }
        if now < self.next_send_at {
            return None;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let message = match self.membership {
            Membership::Unregistered => ClusterMessage::Register(RegisterRequest {
                request_id,
                registration: self.registration.clone(),
                spec_hash: self.spec_hash.clone(),
                adoption: self.adoption.clone(),
            }),
            Membership::Registered { broker_epoch, .. } => {
                ClusterMessage::Heartbeat(HeartbeatRequest {
                    request_id,
                    broker_id: self.registration.broker_id,
                    broker_epoch,
                    metadata_offset: i64::try_from(metadata_offset).unwrap_or(i64::MAX),
                    want_fence: self.want_fence,
                    spec_hash: self.spec_hash.clone(),
                })
            }
        };
        let to = self.voters[self.target];
        self.pending = Some(Pending {
            request_id,
            to,
            sent_at: now,
        });
        self.next_send_at = now + self.timings.heartbeat_interval;
        Some((to, message))
    }

    /// An answer from voter `from`. Answers to anything but the request in
    /// flight are stale and ignored.
    pub fn handle_reply(&mut self, now: Instant, from: BrokerId, reply: Reply) {
        let Some(pending) = self.pending.filter(|p| p.request_id == reply.request_id) else {
            return;
        };
        self.pending = None;
        match reply.outcome {
            Outcome::Registered { broker_epoch } => {
                self.controller = Some(from);
                tracing::info!(event = "broker_registered", broker_epoch, controller = from);
                // Recorded with this registration: once is enough.
                self.adoption = None;
                self.membership = Membership::Registered {
                    broker_epoch,
                    fenced: true,
                };
                self.lease_until = None;
                self.next_send_at = now;
            }
            Outcome::HeartbeatAck {
                fenced,
                metadata_commit,
            } => {
                self.metadata_commit = self.metadata_commit.max(metadata_commit);
                self.controller = Some(from);
                if let Membership::Registered {
                    broker_epoch,
                    fenced: was,
                } = self.membership
                {
                    if was != fenced {
                        tracing::info!(event = "broker_fence_changed", broker_epoch, fenced);
                    }
                    self.membership = Membership::Registered {
                        broker_epoch,
                        fenced,
                    };
                }
                self.lease_until = match fenced {
                    true => None,
                    false => Some(pending.sent_at + self.timings.session_timeout),
                };
            }
            Outcome::NotController { leader } => {
                match leader.and_then(|id| self.voters.iter().position(|v| *v == id)) {
                    // The named leader may not be active yet: ask it again
                    // soon rather than at once.
                    Some(index) if self.voters[index] == from => {
                        self.next_send_at = now + self.timings.request_timeout / 4;
                    }
                    Some(index) => {
                        self.target = index;
                        self.next_send_at = now;
                    }
                    None => {
                        self.rotate_target(from);
                        self.next_send_at = now + self.timings.request_timeout / 4;
                    }
                }
            }
            Outcome::Metadata(_)
            | Outcome::ProducerIds { .. }
            | Outcome::Done { .. }
            | Outcome::PartitionAltered(_) => {
                tracing::debug!(event = "controller_unexpected_answer", from);
            }
            Outcome::Refused { code, message } => {
                tracing::warn!(event = "controller_refused", code, %message);
                if code == STALE_BROKER_EPOCH || code == BROKER_ID_NOT_REGISTERED {
                    self.membership = Membership::Unregistered;
                    self.lease_until = None;
                    self.next_send_at = now;
                }
            }
        }
    }

    fn rotate_target(&mut self, after: BrokerId) {
        let position = self.voters.iter().position(|v| *v == after).unwrap_or(0);
        self.target = (position + 1) % self.voters.len();
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
