//! One controller voter as a state machine: the Raft quorum, the metadata
//! image it applies, and — while this node is the active controller — the
//! broker sessions and the requests waiting to be written. Events come in
//! with their time (`handle_message`, `handle_timeout`); `step` runs Raft's
//! Ready loop, applies what committed and writes the next round; what to
//! send comes out of `poll_transmit`. No sockets and no clock here: the
//! service shell (`service.rs`) and the simulation drive it alike.
//!
//! Writes go one round at a time: the active controller decides every
//! queued request against the committed image, proposes them as one entry,
//! and decides nothing more until that entry is applied. So no decision is
//! ever taken on state that might not commit, a committed entry always
//! applies (it was applied to a copy before it was proposed), and a storm
//! of requests costs one entry per round trip rather than one each.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::adoption::adopt;
use super::alter_partition::{AlterAttempts, AlterPartitionRequest, decide_alter_partition};
use super::decide::{
    Heartbeat, PRODUCER_ID_BLOCK_SIZE, UncleanElection, allocate_producer_ids, on_heartbeat,
    on_register, on_session_expired, unclean_elections,
};
use super::error::{ApplyError, DecideError, code};
use super::image::MetadataImage;
use super::plan::{DesiredSpec, plan_internal_topics, plan_spec};
use super::quorum::MetadataRead;
use super::quorum::{Committed, Quorum, QuorumError, Role};
use super::records::{BrokerId, RECORDS_PER_BATCH_MAX, Record, RecordBatch};
use super::rpc::{
    ClusterMessage, HeartbeatRequest, METADATA_CHUNK_BYTES_MAX, MetadataChunk, Outcome,
    RegisterRequest, Reply,
};
use super::sessions::SessionTable;
use super::topic_change::{TopicChange, decide_topic_change};

/// A fatal condition: the process must stop (fail-stop). A committed entry
/// that does not apply means this node's log diverged or a bug wrote it.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("quorum: {0}")]
    Quorum(#[from] QuorumError),
    #[error("committed metadata entry {index} does not decode: {error}")]
    Decode {
        index: u64,
        error: super::error::CodecError,
    },
    #[error("committed metadata entry does not apply: {0}")]
    Apply(#[from] ApplyError),
}

/// Topic changes waiting for a round at most; more are refused (retriable).
const TOPIC_CHANGES_QUEUED_MAX: usize = 1_024;
/// ISR changes waiting for a round at most (a follower falling behind
/// shrinks every partition it follows at once); more are refused (retriable).
const ALTER_PARTITIONS_QUEUED_MAX: usize = 10_000;

/// A topic change from the Kafka API, waiting for a round.
#[derive(Debug)]
struct TopicChangeRequest {
    /// Who asks: (broker id, broker epoch).
    broker: (BrokerId, i64),
    request_id: u64,
    change: TopicChange,
}

/// A request answered once the round holding it is applied.
#[derive(Debug)]
struct Waiter {
    node: BrokerId,
    request_id: u64,
    /// The answer if the round commits.
    outcome: Outcome,
}

/// The round in Raft: its entry's index and term and who waits for it.
#[derive(Debug)]
struct InFlight {
    index: u64,
    term: u64,
    waiters: Vec<Waiter>,
    /// Counted once the entry commits.
    unclean: Vec<UncleanElection>,
}

pub struct ControllerNode {
    self_id: BrokerId,
    voters: Vec<BrokerId>,
    quorum: Quorum,
    image: MetadataImage,
    sessions: SessionTable,
    /// Leader that has applied an entry of its own term.
    active: bool,
    in_flight: Option<InFlight>,
    /// Answers waiting for a quorum to confirm this leader, by context.
    confirming: BTreeMap<u64, Vec<Waiter>>,
    next_confirmation: u64,
    /// The last raft index applied (no-ops included; the image counts
    /// only entries with records).
    raft_applied: u64,
    registers: BTreeMap<BrokerId, RegisterRequest>,
    heartbeats: BTreeMap<BrokerId, HeartbeatRequest>,
    /// Producer-id block requests: (request id, broker epoch) per broker.
    id_requests: BTreeMap<BrokerId, (u64, i64)>,
    /// Topic changes from the Kafka API, in arrival order (bounded).
    topic_changes: VecDeque<TopicChangeRequest>,
    /// Partition leaders' ISR changes with their request ids, in arrival
    /// order (bounded).
    alter_partitions: VecDeque<(u64, AlterPartitionRequest)>,
    /// Each leader's latest ISR change decided, per partition.
    alter_attempts: AlterAttempts,
    /// Unclean leader elections in entries this node committed as active
    /// controller, since it started.
    unclean_elections: u64,
    /// Brokers whose session ended, to fence in the next round.
    expired: BTreeSet<BrokerId>,
    /// The spec hash each voter last reported (itself included).
    spec_hashes: BTreeMap<BrokerId, String>,
    desired: DesiredSpec,
    outbox: VecDeque<(BrokerId, ClusterMessage)>,
}

impl ControllerNode {
    /// `image` is what the store's snapshot holds (empty on a first start);
    /// the quorum replays committed entries after it through `step`.
    pub fn new(
        self_id: BrokerId,
        voters: Vec<BrokerId>,
        quorum: Quorum,
        image: MetadataImage,
        session_timeout: Duration,
        desired: DesiredSpec,
    ) -> Self {
        let mut spec_hashes = BTreeMap::new();
        spec_hashes.insert(self_id, desired.hash.clone());
        let raft_applied = quorum.store().snapshot_index();
        ControllerNode {
            self_id,
            voters,
            quorum,
            image,
            sessions: SessionTable::new(session_timeout),
            active: false,
            in_flight: None,
            confirming: BTreeMap::new(),
            next_confirmation: 1,
            raft_applied,
            registers: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            id_requests: BTreeMap::new(),
            topic_changes: VecDeque::new(),
            alter_partitions: VecDeque::new(),
            alter_attempts: AlterAttempts::default(),
            unclean_elections: 0,
            expired: BTreeSet::new(),
            spec_hashes,
            desired,
            outbox: VecDeque::new(),
        }
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn term(&self) -> u64 {
        self.quorum.term()
    }

    pub fn role(&self) -> Role {
        self.quorum.role()
    }

    /// The active controller as far as this node knows.
    pub fn leader(&self) -> Option<BrokerId> {
        self.quorum.leader()
    }

    /// Unclean leader elections in entries this node committed as the
    /// active controller, since it started (`sluice_unclean_elections_total`).
    pub fn unclean_elections(&self) -> u64 {
        self.unclean_elections
    }

    /// A message from node `from` (verified by the transport, or this node
    /// itself), arrived at `arrival`.
    pub fn handle_message(&mut self, arrival: Instant, from: BrokerId, message: ClusterMessage) {
        match message {
            ClusterMessage::Raft(message) => {
                if let Err(error) = self.quorum.handle_message(message) {
                    tracing::debug!(event = "raft_message_refused", from, %error);
                }
            }
            ClusterMessage::Register(request) => {
                let broker_id = request.registration.broker_id;
                if !self.accepts(from, broker_id, request.request_id, "register") {
                    return;
                }
                self.note_spec_hash(broker_id, &request.spec_hash);
                self.registers.insert(broker_id, request);
            }
            ClusterMessage::Heartbeat(request) => {
                let broker_id = request.broker_id;
                if !self.accepts(from, broker_id, request.request_id, "heartbeat for") {
                    return;
                }
                self.note_spec_hash(broker_id, &request.spec_hash);
                let current = self.image.broker(broker_id).map(|entry| entry.broker_epoch);
                if current == Some(request.broker_epoch) {
                    self.sessions.touch(broker_id, arrival);
                }
                self.heartbeats.insert(broker_id, request);
            }
            ClusterMessage::Reply(_) => {
                tracing::debug!(event = "controller_unexpected_reply", from);
            }
            ClusterMessage::MetadataFetch {
                request_id,
                after_index,
            } => self.serve_fetch(from, request_id, after_index),
            ClusterMessage::AllocateProducerIds {
                request_id,
                broker_id,
                broker_epoch,
            } => {
                if !self.accepts(from, broker_id, request_id, "ask producer ids for") {
                    return;
                }
                self.id_requests
                    .insert(broker_id, (request_id, broker_epoch));
            }
            ClusterMessage::ChangeTopic {
                request_id,
                broker_id,
                broker_epoch,
                change,
            } => {
                if !self.accepts(from, broker_id, request_id, "change topics for") {
                    return;
                }
                if self.topic_changes.len() >= TOPIC_CHANGES_QUEUED_MAX {
                    return self.refuse(from, request_id, code::THROTTLING_QUOTA_EXCEEDED, || {
                        format!("{TOPIC_CHANGES_QUEUED_MAX} topic changes are waiting already")
                    });
                }
                self.topic_changes.push_back(TopicChangeRequest {
                    broker: (broker_id, broker_epoch),
                    request_id,
                    change,
                });
            }
            ClusterMessage::AlterPartition {
                request_id,
                request,
            } => {
                if !self.accepts(from, request.broker_id, request_id, "alter partitions for") {
                    return;
                }
                if self.alter_partitions.len() >= ALTER_PARTITIONS_QUEUED_MAX {
                    return self.refuse(from, request_id, code::THROTTLING_QUOTA_EXCEEDED, || {
                        format!("{ALTER_PARTITIONS_QUEUED_MAX} ISR changes are waiting already")
                    });
                }
                self.alter_partitions.push_back((request_id, request));
            }
        }
    }

    /// Time passed: Raft ticks, and broker sessions may end.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.quorum.handle_tick(now);
        if self.active {
            self.expired.extend(self.sessions.expired(now));
        }
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Instant {
        let raft = self.quorum.poll_timeout();
        match self.sessions.poll_timeout() {
            Some(session) if self.active => raft.min(session),
            _ => raft,
        }
    }

    /// The next message to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(BrokerId, ClusterMessage)> {
        self.outbox.pop_front()
    }

    /// Runs Raft until it has nothing more to do: persists, queues messages,
    /// applies what committed, and proposes the next round. Returns whether
    /// the image changed.
    pub fn step(&mut self, now: Instant) -> Result<bool, NodeError> {
        let mut changed = false;
        loop {
            let effects = self.quorum.ready()?;
            let idle = effects.messages.is_empty()
                && effects.committed.is_empty()
                && effects.confirmed.is_empty();
            for message in effects.messages {
                match super::quorum::broker_id(message.to) {
                    Some(to) => self.outbox.push_back((to, ClusterMessage::Raft(message))),
                    None => tracing::warn!(event = "raft_message_unroutable", to = message.to),
                }
            }
            if let Some(installed) = effects.snapshot {
                tracing::info!(
                    event = "metadata_snapshot_installed",
                    index = installed.index,
                    term = installed.term
                );
                self.image = installed.image;
                self.raft_applied = installed.index;
                changed = true;
            }
            for ctx in effects.confirmed {
                for waiter in self.confirming.remove(&ctx).unwrap_or_default() {
                    self.reply(waiter.node, waiter.request_id, waiter.outcome);
                }
            }
            let applied_any = !effects.committed.is_empty();
            for entry in effects.committed {
                self.raft_applied = entry.index;
                changed |= self.apply(now, entry)?;
            }
            if applied_any {
                self.quorum.maybe_snapshot(self.raft_applied, &self.image)?;
            }
            self.follow_role(now);
            let proposed = self.propose_round(now)?;
            if idle && !proposed {
                return Ok(changed);
            }
        }
    }

    fn apply(&mut self, now: Instant, entry: Committed) -> Result<bool, NodeError> {
        let mut changed = false;
        if !entry.data.is_empty() {
            let batch = RecordBatch::decode(&entry.data).map_err(|error| NodeError::Decode {
                index: entry.index,
                error,
            })?;
            self.image.apply(entry.index, &batch)?;
            changed = true;
        }
        if entry.term == self.quorum.term() && self.quorum.role() == Role::Leader && !self.active {
            self.activate(now);
        }
        if let Some(in_flight) = self.in_flight.take_if(|round| round.index <= entry.index) {
            let committed = in_flight.index == entry.index && in_flight.term == entry.term;
            if committed {
                self.count_unclean(entry.index, &in_flight.unclean);
            }
            for waiter in in_flight.waiters {
                let outcome = match committed {
                    true => waiter.outcome,
                    false => self.not_controller(),
                };
                self.reply(waiter.node, waiter.request_id, outcome);
            }
        }
        Ok(changed)
    }

    /// Unclean elections in the committed entry `index`: counted and logged.
    fn count_unclean(&mut self, index: u64, elections: &[UncleanElection]) {
        for election in elections {
            let topic = self
                .image
                .topic(&election.topic_id)
                .map(|t| t.name.as_str());
            tracing::warn!(
                event = "unclean_leader_election",
                index,
                topic = topic.unwrap_or("?"),
                topic_id = %election.topic_id,
                partition = election.partition,
                leader = election.leader,
                leader_epoch = election.leader_epoch
            );
        }
        self.unclean_elections += elections.len() as u64;
    }

    /// The leader applied its first entry of its term: the image is
    /// complete, so it starts every broker's session afresh and serves.
    fn activate(&mut self, now: Instant) {
        self.active = true;
        let registered: Vec<BrokerId> = self
            .image
            .brokers()
            .filter(|entry| !entry.fenced)
            .map(|entry| entry.registration.broker_id)
            .collect();
        self.sessions.activate(now, registered);
        tracing::info!(
            event = "controller_active",
            node = self.self_id,
            term = self.term()
        );
    }

    /// Leaving the leadership drops every request: the brokers ask the new
    /// active controller.
    fn follow_role(&mut self, _now: Instant) {
        if !self.active || self.quorum.role() == Role::Leader {
            return;
        }
        self.active = false;
        tracing::info!(
            event = "controller_inactive",
            node = self.self_id,
            term = self.term()
        );
        self.expired.clear();
        let mut waiting: Vec<(BrokerId, u64)> = Vec::new();
        if let Some(round) = self.in_flight.take() {
            waiting.extend(round.waiters.iter().map(|w| (w.node, w.request_id)));
        }
        for waiters in std::mem::take(&mut self.confirming).into_values() {
            waiting.extend(waiters.iter().map(|w| (w.node, w.request_id)));
        }
        waiting.extend(
            self.registers
                .values()
                .map(|r| (r.registration.broker_id, r.request_id)),
        );
        waiting.extend(
            self.heartbeats
                .values()
                .map(|h| (h.broker_id, h.request_id)),
        );
        waiting.extend(
            self.topic_changes
                .drain(..)
                .map(|r| (r.broker.0, r.request_id)),
        );
        waiting.extend(
            self.alter_partitions
                .drain(..)
                .map(|(request_id, r)| (r.broker_id, request_id)),
        );
        self.registers.clear();
        self.heartbeats.clear();
        for (node, request_id) in waiting {
            let outcome = self.not_controller();
            self.reply(node, request_id, outcome);
        }
    }

    /// Decides every queued request against the applied image and proposes
    /// the records as one entry. False when nothing was proposed.
    fn propose_round(&mut self, now: Instant) -> Result<bool, NodeError> {
        if !self.active || self.in_flight.is_some() {
            return Ok(false);
        }
        let mut round = Round::new(&self.image, self.quorum.last_index() + 1);
        let mut waiters = Vec::new();
        for broker_id in std::mem::take(&mut self.expired) {
            if self.sessions.is_alive(broker_id, now) {
                continue;
            }
            if let Some(batch) = on_session_expired(round.image(), broker_id) {
                if !round.add(batch) {
                    self.expired.insert(broker_id);
                    continue;
                }
                tracing::info!(event = "broker_session_expired", broker = broker_id);
            }
        }
        if self.adoption_pending(round.image()) {
            tracing::debug!(event = "spec_waits_for_adoption", broker = ?self.desired.adopt_broker);
        } else {
            self.plan_spec(&mut round);
            self.plan_internal_topics(&mut round);
        }
        let registers = std::mem::take(&mut self.registers);
        for (broker_id, request) in registers {
            let decided = on_register(round.image(), &self.sessions, now, &request.registration)
                .and_then(|batch| self.with_adoption(&round, batch, &request));
            match decided.map(|batch| round.add(batch)) {
                Ok(true) => waiters.push(Waiter {
                    node: broker_id,
                    request_id: request.request_id,
                    outcome: Outcome::Registered {
                        broker_epoch: round.index as i64,
                    },
                }),
                Ok(false) => {
                    self.registers.insert(broker_id, request);
                }
                Err(error) => self.refuse_decision(broker_id, request.request_id, &error),
            }
        }
        let heartbeats = std::mem::take(&mut self.heartbeats);
        for (broker_id, request) in heartbeats {
            let heartbeat = Heartbeat {
                broker_id,
                broker_epoch: request.broker_epoch,
                current_metadata_offset: request.metadata_offset,
                want_fence: request.want_fence,
            };
            match on_heartbeat(round.image(), &heartbeat) {
                Ok(decision) => {
                    let added = decision.records.is_none_or(|batch| round.add(batch));
                    if !added {
                        self.heartbeats.insert(broker_id, request);
                        continue;
                    }
                    waiters.push(Waiter {
                        node: broker_id,
                        request_id: request.request_id,
                        outcome: Outcome::HeartbeatAck {
                            fenced: decision.fenced,
                            metadata_commit: 0,
                        },
                    });
                }
                Err(error) => self.refuse_decision(broker_id, request.request_id, &error),
            }
        }
        let id_requests = std::mem::take(&mut self.id_requests);
        for (broker_id, (request_id, broker_epoch)) in id_requests {
            let first = round.image().next_producer_id();
            match allocate_producer_ids(round.image(), broker_id, broker_epoch)
                .map(|batch| round.add(batch))
            {
                Ok(true) => waiters.push(Waiter {
                    node: broker_id,
                    request_id,
                    outcome: Outcome::ProducerIds {
                        first,
                        size: PRODUCER_ID_BLOCK_SIZE,
                    },
                }),
                Ok(false) => {
                    self.id_requests
                        .insert(broker_id, (request_id, broker_epoch));
                }
                Err(error) => self.refuse_decision(broker_id, request_id, &error),
            }
        }
        self.decide_alter_partitions(&mut round, &mut waiters);
        complete_reassignments(&mut round);
        self.decide_topic_changes(&mut round, &mut waiters);
        let round_index = round.index;
        let Some((batch, unclean)) = round.finish() else {
            // Nothing to write, but an answer extends a broker's lease: only
            // once a quorum confirms this node still leads, so a controller
            // cut off from the others (not yet stepped down) renews no lease.
            if !waiters.is_empty() {
                let ctx = self.next_confirmation;
                self.next_confirmation += 1;
                self.confirming.insert(ctx, waiters);
                self.quorum.confirm_leadership(ctx);
                return Ok(true);
            }
            return Ok(false);
        };
        let data = batch
            .encode()
            .map_err(|error| NodeError::Decode { index: 0, error })?;
        match self.quorum.propose(data) {
            Ok(()) => {}
            Err(QuorumError::Raft(raft::Error::ProposalDropped)) => {
                for waiter in waiters {
                    let outcome = self.not_controller();
                    self.reply(waiter.node, waiter.request_id, outcome);
                }
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        }
        let index = self.quorum.last_index();
        assert_eq!(
            index, round_index,
            "the leader appends its proposal at once"
        );
        self.in_flight = Some(InFlight {
            index,
            term: self.quorum.term(),
            waiters,
            unclean,
        });
        Ok(true)
    }

    /// The spec this node holds is applied once a majority of voters hold
    /// it too (docs/OPERATIONS.md "Spec changes"): `plan::plan_spec` says
    /// what that writes.
    fn plan_spec(&self, round: &mut Round) {
        let hash = &self.desired.hash;
        let holders = self
            .voters
            .iter()
            .filter(|voter| self.spec_hashes.get(voter) == Some(hash))
            .count();
        if holders * 2 <= self.voters.len() {
            return;
        }
        let (batch, skipped) = plan_spec(round.image(), &self.desired);
        for skip in &skipped {
            tracing::error!(event = "spec_topic_refused", topic = %skip.topic, error = %skip.error);
        }
        if let Some(batch) = batch
            && round.add(batch)
        {
            tracing::info!(event = "spec_applying", hash = %hash);
        }
    }

    /// Topic changes from the API, in order, while the round has room; a
    /// validate-only one is answered at once.
    fn decide_topic_changes(&mut self, round: &mut Round, waiters: &mut Vec<Waiter>) {
        while let Some(request) = self.topic_changes.pop_front() {
            let decided = decide_topic_change(
                round.image(),
                &self.desired.brokers,
                request.broker,
                &request.change,
            );
            let node = request.broker.0;
            match decided {
                Ok(None) => self.reply(node, request.request_id, Outcome::Done { index: 0 }),
                Ok(Some(batch)) => {
                    if !round.add(batch) {
                        self.topic_changes.push_front(request);
                        return;
                    }
                    tracing::info!(event = "topic_change", broker = node, change = ?request.change);
                    waiters.push(Waiter {
                        node,
                        request_id: request.request_id,
                        outcome: Outcome::Done { index: round.index },
                    });
                }
                Err(error) => {
                    let code = error.code();
                    self.refuse(node, request.request_id, code, || error.to_string());
                }
            }
        }
    }

    /// Partition leaders' ISR changes, in order, while the round has room.
    /// A refusal is answered at once, and so is an ISR the partition has
    /// already (as committed); a change once its round is committed.
    fn decide_alter_partitions(&mut self, round: &mut Round, waiters: &mut Vec<Waiter>) {
        while let Some((request_id, request)) = self.alter_partitions.pop_front() {
            let node = request.broker_id;
            if let Err(error) = self.alter_attempts.check(request_id, &request) {
                self.refuse_decision(node, request_id, &error);
                continue;
            }
            if self.alter_attempts.len() > 4 * self.image.partition_count() + 64 {
                self.alter_attempts.retain_known(&self.image);
            }
            let decision = match decide_alter_partition(round.image(), &request) {
                Ok(decision) => decision,
                Err(error) => {
                    self.alter_attempts.decided(request_id, &request);
                    self.refuse_decision(node, request_id, &error);
                    continue;
                }
            };
            let outcome = Outcome::PartitionAltered(decision.state.clone());
            let Some(batch) = decision.records else {
                self.alter_attempts.decided(request_id, &request);
                let committed = self.image.partition(&request.topic_id, request.partition);
                match committed == Some(&decision.state) {
                    true => self.reply(node, request_id, outcome),
                    // Only as this round leaves it: answered once it commits.
                    false => waiters.push(Waiter {
                        node,
                        request_id,
                        outcome,
                    }),
                }
                continue;
            };
            if !round.add(batch) {
                self.alter_partitions.push_front((request_id, request));
                return;
            }
            self.alter_attempts.decided(request_id, &request);
            tracing::info!(
                event = "isr_change",
                broker = node,
                topic_id = %request.topic_id,
                partition = request.partition,
                isr = ?decision.state.isr,
                partition_epoch = decision.state.partition_epoch
            );
            waiters.push(Waiter {
                node,
                request_id,
                outcome,
            });
        }
    }

    /// Whether `controller.adopt_broker` has yet to register (and bring
    /// its topics).
    fn adoption_pending(&self, image: &MetadataImage) -> bool {
        self.desired
            .adopt_broker
            .is_some_and(|broker| image.broker(broker).is_none())
    }

    /// A registration that brings a single node's data directory adopts it
    /// in the same entry; only the broker the spec names may.
    fn with_adoption(
        &self,
        round: &Round,
        mut batch: RecordBatch,
        request: &RegisterRequest,
    ) -> Result<RecordBatch, DecideError> {
        let Some(adoption) = &request.adoption else {
            return Ok(batch);
        };
        let broker_id = request.registration.broker_id;
        if self.desired.adopt_broker != Some(broker_id) {
            return Err(DecideError::InvalidRegistration {
                broker_id,
                why: "its data directory holds a single node's topics, and controller.adopt_broker does not name it",
            });
        }
        let declared = self.desired.topics.iter().map(|t| t.name.clone()).collect();
        let epoch = round.index as i64;
        let records = adopt(round.image(), (broker_id, epoch), adoption, &declared)?;
        tracing::info!(
            event = "adopting",
            broker = broker_id,
            topics = adoption.topics.len(),
            producer_id_end = adoption.producer_id_end
        );
        batch.records.extend(records);
        Ok(batch)
    }

    /// Internal topics, once enough brokers are live for them.
    fn plan_internal_topics(&self, round: &mut Round) {
        let (batch, skipped) = plan_internal_topics(round.image(), &self.desired);
        for skip in &skipped {
            tracing::error!(event = "internal_topic_refused", topic = %skip.topic, error = %skip.error);
        }
        if let Some(batch) = batch
            && round.add(batch)
        {
            tracing::info!(event = "internal_topics_creating");
        }
    }

    /// A new spec from a reload: planned at the next round once a majority
    /// of voters report its hash.
    pub fn set_desired(&mut self, desired: DesiredSpec) {
        self.spec_hashes.insert(self.self_id, desired.hash.clone());
        self.desired = desired;
    }

    /// Any voter serves its committed log to a broker that does not vote.
    fn serve_fetch(&mut self, from: BrokerId, request_id: u64, after_index: u64) {
        let read = self
            .quorum
            .entries_after(after_index, METADATA_CHUNK_BYTES_MAX as u64 / 2);
        let outcome = match read {
            Ok(MetadataRead::Entries(entries)) => Outcome::Metadata(MetadataChunk::Entries(
                entries.into_iter().map(|e| (e.index, e.data)).collect(),
            )),
            Ok(MetadataRead::Snapshot { index, image, .. })
                if image.len() <= METADATA_CHUNK_BYTES_MAX =>
            {
                Outcome::Metadata(MetadataChunk::Snapshot { index, image })
            }
            Ok(MetadataRead::Snapshot { image, .. }) => Outcome::Refused {
                code: code::UNKNOWN_SERVER_ERROR,
                message: format!(
                    "the metadata snapshot is {} bytes; one message carries at most {METADATA_CHUNK_BYTES_MAX}",
                    image.len()
                ),
            },
            Err(error) => Outcome::Refused {
                code: code::UNKNOWN_SERVER_ERROR,
                message: error.to_string(),
            },
        };
        self.reply(from, request_id, outcome);
    }

    /// Whether to take a broker's request: a node speaks only for itself
    /// (refused otherwise), and only the active controller answers (the
    /// others name it). `what` completes "node N cannot … broker M".
    fn accepts(
        &mut self,
        from: BrokerId,
        broker_id: BrokerId,
        request_id: u64,
        what: &str,
    ) -> bool {
        if from != broker_id {
            self.refuse(from, request_id, code::INVALID_REQUEST, || {
                format!("node {from} cannot {what} broker {broker_id}")
            });
            return false;
        }
        self.answers_brokers(from, request_id)
    }

    fn answers_brokers(&mut self, from: BrokerId, request_id: u64) -> bool {
        if self.active {
            return true;
        }
        let outcome = self.not_controller();
        self.reply(from, request_id, outcome);
        false
    }

    fn note_spec_hash(&mut self, broker_id: BrokerId, hash: &str) {
        if self.voters.contains(&broker_id) {
            self.spec_hashes.insert(broker_id, hash.to_string());
        }
    }

    fn not_controller(&self) -> Outcome {
        Outcome::NotController {
            leader: self.quorum.leader(),
        }
    }

    fn refuse(&mut self, to: BrokerId, request_id: u64, code: i16, why: impl FnOnce() -> String) {
        let message = why();
        tracing::info!(event = "broker_request_refused", broker = to, code, %message);
        self.reply(to, request_id, Outcome::Refused { code, message });
    }

    fn refuse_decision(&mut self, to: BrokerId, request_id: u64, error: &DecideError) {
        self.refuse(to, request_id, error.code(), || error.to_string());
    }

    fn reply(&mut self, to: BrokerId, request_id: u64, mut outcome: Outcome) {
        if let Outcome::HeartbeatAck {
            metadata_commit, ..
        } = &mut outcome
        {
            *metadata_commit = self.quorum.commit_index();
        }
        self.outbox.push_back((
            to,
            ClusterMessage::Reply(Reply {
                request_id,
                outcome,
            }),
        ));
    }
}

/// Every reassignment whose adding replicas are all in the ISR now
/// completes (reassign.rs), in this round.
fn complete_reassignments(round: &mut Round) {
    let records = super::reassign::completions(round.image());
    let done: Vec<(uuid::Uuid, i32, Vec<BrokerId>)> = records
        .iter()
        .filter_map(|record| match record {
            Record::PartitionChange {
                topic_id,
                partition,
                state,
            } => Some((*topic_id, *partition, state.replicas.clone())),
            _ => None,
        })
        .collect();
    if done.is_empty() || !round.add(RecordBatch::new(records)) {
        return;
    }
    for (topic_id, partition, replicas) in done {
        let topic = round.image().topic(&topic_id).map(|t| t.name.clone());
        tracing::info!(
            event = "reassignment_completing",
            topic = topic.as_deref().unwrap_or("?"),
            partition,
            ?replicas
        );
    }
}

/// The records of one round, checked by applying them to a copy of the
/// image as they are added, so the committed entry is known to apply.
struct Round {
    index: u64,
    base: MetadataImage,
    next: MetadataImage,
    records: Vec<Record>,
}

impl Round {
    fn new(image: &MetadataImage, index: u64) -> Self {
        Round {
            index,
            base: image.clone(),
            next: image.clone(),
            records: Vec::new(),
        }
    }

    /// The image as the round so far leaves it.
    fn image(&self) -> &MetadataImage {
        &self.next
    }

    /// Adds `batch` if the round has room and it applies; false otherwise
    /// (the request waits for the next round).
    fn add(&mut self, batch: RecordBatch) -> bool {
        if self.records.len() + batch.len() > RECORDS_PER_BATCH_MAX {
            return false;
        }
        let mut records = self.records.clone();
        records.extend(batch.records);
        let candidate = RecordBatch::new(records);
        if candidate.encode().is_err() {
            return false;
        }
        let mut next = self.base.clone();
        match next.apply(self.index, &candidate) {
            Ok(()) => {
                self.records = candidate.records;
                self.next = next;
                true
            }
            Err(error) => {
                tracing::error!(event = "controller_round_refused", %error);
                false
            }
        }
    }

    /// The round's batch and the unclean elections it holds; `None` when
    /// it holds nothing.
    fn finish(self) -> Option<(RecordBatch, Vec<UncleanElection>)> {
        if self.records.is_empty() {
            return None;
        }
        let batch = RecordBatch::new(self.records);
        let unclean = unclean_elections(&self.base, &batch);
        Some((batch, unclean))
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
