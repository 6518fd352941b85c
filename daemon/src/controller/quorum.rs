//! The controller quorum's consensus core: tikv raft's `RawNode` behind a
//! sans-IO wrapper. Time comes in as `now` and becomes ticks, messages come in
//! already decoded, and `ready()` hands back what to send and which committed
//! entries to apply; the caller owns sockets, clocks and the metadata image
//! (plan §1.3–1.4). Voters are static and come from the spec; raft
//! id = broker id + 1 because broker ids may be 0 and raft ids may not.
//!
//! The store is the concrete durable `LogStore`, not a type parameter: the
//! simulation runs the same store over an in-memory `MetaDir`, so one code
//! path is both simulated and shipped, and the seam for faults is the
//! directory, not the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{EntryType, Message, Snapshot};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use thiserror::Error;

use super::error::{CodecError, SnapshotError};
use super::image::MetadataImage;
use super::log_store::{LogStore, LogStoreError, MetaDir, StoreLimits};
use super::records::BrokerId;
use super::snapshot::{decode_image, encode_image};
use super::wire::ENTRY_DATA_BYTES_MAX;

/// One Raft tick (plan §4.2).
pub const TICK: Duration = Duration::from_millis(25);
/// Leader heartbeats every 2 ticks = 50 ms.
pub const HEARTBEAT_TICKS: usize = 2;
/// Election timeout drawn in [12, 18) ticks = [300, 450) ms. A new
/// controller is then active, and reached by every broker, before the
/// brokers' leases (the 800 ms session after their last acknowledged
/// heartbeat) run out, so a controller's death stops no partition leader
/// (cluster/lifecycle_tests.rs); and a split vote costs at most 450 ms more.
pub const ELECTION_TICKS_MIN: usize = 12;
pub const ELECTION_TICKS_MAX: usize = 18;
/// A stalled caller catches up at most this many ticks at once, so one late
/// wake-up cannot spin; more than an election timeout is never needed.
pub const TICKS_PER_CALL_MAX: u32 = 2 * ELECTION_TICKS_MAX as u32;
/// Raft's limits per message and in flight (plan §1.3).
const MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
const INFLIGHT_MESSAGES_MAX: usize = 256;
const UNCOMMITTED_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// 1, 3 or 5 voters in the spec; more is refused here too.
pub const VOTERS_MAX: usize = 7;

const _: () = assert!(ELECTION_TICKS_MIN >= 5 * HEARTBEAT_TICKS);
const _: () = assert!(ELECTION_TICKS_MIN < ELECTION_TICKS_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX as usize >= ENTRY_DATA_BYTES_MAX);

/// Who this node is and who votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSpec {
    pub self_id: BrokerId,
    /// The spec's voters, broker ids.
    pub voters: Vec<BrokerId>,
    /// Draw election timeouts from this seed instead of raft's unseeded
    /// `thread_rng`, so simulations replay exactly. `None` in production.
    pub election_seed: Option<u64>,
}

/// Raft's role, named by us so callers do not depend on raft's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A committed normal entry. Empty `data` is a new leader's no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}

/// A snapshot from the leader, installed in place of the log: the caller
/// replaces its image and has applied everything up to `index`.
#[derive(Debug)]
pub struct InstalledSnapshot {
    pub index: u64,
    pub term: u64,
    pub image: MetadataImage,
}

/// What one `ready()` asks of the caller, in this order: send `messages`,
/// replace the image with `snapshot`'s, then apply `committed`. Entries,
/// snapshot and hard state are already durable.
#[derive(Debug, Default)]
pub struct Effects {
    pub messages: Vec<Message>,
    pub snapshot: Option<InstalledSnapshot>,
    pub committed: Vec<Committed>,
    /// `read_index` contexts a quorum has confirmed this leader for.
    pub confirmed: Vec<u64>,
}

/// Committed metadata for a reader that is not a voter (`entries_after`):
/// the entries it lacks, or, when they are compacted away, the snapshot
/// to start from (`image` is `encode_image` bytes).
#[derive(Debug)]
pub enum MetadataRead {
    Entries(Vec<Committed>),
    Snapshot { index: u64, term: u64, image: Bytes },
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QuorumError {
    #[error(
        "voter set {voters:?} is not 1 to {max} distinct non-negative broker ids including {self_id}"
    )]
    BadVoters {
        self_id: BrokerId,
        voters: Vec<BrokerId>,
        max: usize,
    },
    #[error("voters changed from {stored:?} to {spec:?}: the quorum is static")]
    VotersChanged { stored: Vec<u64>, spec: Vec<u64> },
    #[error("raft message for node {to} from {from} reached raft node {own}")]
    Misrouted { own: u64, to: u64, from: u64 },
    #[error("raft message from {0}, which is not a voter")]
    NotAVoter(u64),
    #[error("proposal of {len} bytes: must be 1 to {max}")]
    ProposalSize { len: usize, max: usize },
    #[error("committed entry {index} is a configuration change; the quorum is static")]
    ConfChange { index: u64 },
    /// Fail-stop: the disk may hold less than memory (see `LogStoreError`).
    #[error("metadata log store: {0}")]
    Store(#[from] LogStoreError),
    #[error("snapshot at index {index} from the leader: {source}")]
    BadSnapshot { index: u64, source: SnapshotError },
    #[error("snapshot at index {index} holds an image applied to {image_index}")]
    SnapshotAhead { index: u64, image_index: u64 },
    #[error("encoding the image for a snapshot: {0}")]
    Encode(#[from] CodecError),
    #[error(transparent)]
    Raft(#[from] raft::Error),
}

pub fn raft_id(broker_id: BrokerId) -> u64 {
    assert!(broker_id >= 0, "broker ids are validated non-negative");
    broker_id as u64 + 1
}

pub fn broker_id(raft_id: u64) -> Option<BrokerId> {
    BrokerId::try_from(raft_id.checked_sub(1)?).ok()
}

/// SplitMix64: tiny, seeded, good enough to spread election timeouts.
#[derive(Debug, Clone)]
struct ElectionRng(u64);

impl ElectionRng {
    fn next_ticks(&mut self) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ELECTION_TICKS_MIN + (z % (ELECTION_TICKS_MAX - ELECTION_TICKS_MIN) as u64) as usize
    }
}

pub struct Quorum {
    raw: RawNode<LogStore>,
    voters: Vec<u64>,
    next_tick_at: Instant,
    election_rng: Option<ElectionRng>,
}

impl Quorum {
    /// Opens the node's store in `dir`; the first start writes the static
    /// voter set, as every node does ("use the same input to initialize all
    /// nodes"). The caller starts its image from `store.image()`.
    pub fn open_store(
        spec: &QuorumSpec,
        dir: Arc<dyn MetaDir>,
        limits: StoreLimits,
    ) -> Result<LogStore, QuorumError> {
        let voters = check_voters(spec)?;
        Ok(LogStore::open(dir, &voters, limits)?)
    }

    /// Starts (or restarts) a node over `store`. Raft counts the snapshot
    /// as applied, so the first `ready()` hands back the committed entries
    /// after it. A single voter campaigns at once: it is leader after one
    /// `ready()`.
    pub fn new(spec: &QuorumSpec, store: LogStore, now: Instant) -> Result<Self, QuorumError> {
        let voters = check_voters(spec)?;
        let stored = store.initial_state()?.conf_state.voters;
        let mut stored_sorted = stored.clone();
        stored_sorted.sort_unstable();
        if stored_sorted != voters {
            return Err(QuorumError::VotersChanged {
                stored,
                spec: voters,
            });
        }
        let mut config = raft_config(raft_id(spec.self_id));
        config.applied = store.snapshot_index();
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, store, &logger)?;
        let mut quorum = Quorum {
            raw,
            voters,
            next_tick_at: now + TICK,
            election_rng: spec.election_seed.map(ElectionRng),
        };
        quorum.reseed_election_timeout();
        if quorum.voters == [quorum.raw.raft.id] {
            quorum.raw.campaign()?;
        }
        Ok(quorum)
    }

    /// Turns the time passed since the last tick into ticks.
    pub fn handle_tick(&mut self, now: Instant) -> u32 {
        if now < self.next_tick_at {
            return 0;
        }
        let behind = now.duration_since(self.next_tick_at);
        let due = 1 + (behind.as_nanos() / TICK.as_nanos()).min(u128::from(u32::MAX)) as u32;
        let ticks = due.min(TICKS_PER_CALL_MAX);
        for _ in 0..ticks {
            self.raw.tick();
            self.reseed_election_timeout();
        }
        self.next_tick_at = if ticks == due {
            self.next_tick_at + TICK * ticks
        } else {
            now + TICK
        };
        assert!(self.next_tick_at > now);
        ticks
    }

    /// When `handle_tick` next has work.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick_at
    }

    /// Steps a message from a peer; a refused one changes nothing.
    pub fn handle_message(&mut self, message: Message) -> Result<(), QuorumError> {
        let own = self.raw.raft.id;
        if message.to != own {
            return Err(QuorumError::Misrouted {
                own,
                to: message.to,
                from: message.from,
            });
        }
        if !self.voters.contains(&message.from) || message.from == own {
            return Err(QuorumError::NotAVoter(message.from));
        }
        self.raw.step(message)?;
        self.reseed_election_timeout();
        Ok(())
    }

    /// Proposes one encoded `RecordBatch`. `ProposalDropped` while no leader
    /// is known: the caller retries or answers NOT_CONTROLLER.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), QuorumError> {
        if data.is_empty() || data.len() > ENTRY_DATA_BYTES_MAX {
            return Err(QuorumError::ProposalSize {
                len: data.len(),
                max: ENTRY_DATA_BYTES_MAX,
            });
        }
        self.raw.propose(Vec::new(), data)?;
        Ok(())
    }

    /// Runs the Ready loop once in raft-rs's order (plan §1.4): send,
    /// install snapshot, apply, persist entries and hard state, send what
    /// needed persistence, advance, then what the advance released.
    pub fn ready(&mut self) -> Result<Effects, QuorumError> {
        let mut effects = Effects::default();
        if !self.raw.has_ready() {
            return Ok(effects);
        }
        let mut ready = self.raw.ready();
        for read in ready.take_read_states() {
            if let Ok(ctx) = <[u8; 8]>::try_from(read.request_ctx.as_slice()) {
                effects.confirmed.push(u64::from_be_bytes(ctx));
            }
        }
        effects.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            effects.snapshot = Some(self.install_snapshot(ready.snapshot())?);
        }
        collect_committed(&mut effects.committed, ready.take_committed_entries())?;
        let store = self.raw.mut_store();
        store.append(ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            store.set_hard_state(hard_state);
        }
        // Entries and hard state durable before the messages that vouch
        // for them (plan §1.4 step 4).
        store.persist()?;
        effects.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let store = self.raw.mut_store();
            store.set_commit(commit);
            store.persist()?;
        }
        effects.messages.extend(light.take_messages());
        collect_committed(&mut effects.committed, light.take_committed_entries())?;
        self.raw.advance_apply();
        self.reseed_election_timeout();
        Ok(effects)
    }

    pub fn role(&self) -> Role {
        match self.raw.raft.state {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this node knows of, as a broker id.
    pub fn leader(&self) -> Option<BrokerId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => broker_id(id),
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Asks a quorum to confirm this node still leads (Raft's ReadIndex,
    /// one heartbeat round): `ctx` comes back in `Effects::confirmed` once
    /// it does, never if another leader was elected meanwhile.
    pub fn confirm_leadership(&mut self, ctx: u64) {
        self.raw.read_index(ctx.to_be_bytes().to_vec());
    }

    /// The index of the last entry in this node's log; right after a
    /// leader's `propose`, the proposal's index.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    pub fn raft_id(&self) -> u64 {
        self.raw.raft.id
    }

    /// The store, as persisted by the last `ready()`.
    pub fn store(&self) -> &LogStore {
        self.raw.store()
    }

    /// Tells raft whether a `MsgSnapshot` to raft node `to` went out
    /// (the transport's `report_snapshot(to, Finish|Failure)`, plan §1.4).
    pub fn report_snapshot(&mut self, to: u64, sent: bool) {
        let status = match sent {
            true => SnapshotStatus::Finish,
            false => SnapshotStatus::Failure,
        };
        self.raw.report_snapshot(to, status);
    }

    /// Snapshots `image`, the caller's image with everything up to raft
    /// index `applied` applied, if the store's limits say one is due; then
    /// the log below it is cut (keeping a tail). Returns whether it did.
    pub fn maybe_snapshot(
        &mut self,
        applied: u64,
        image: &MetadataImage,
    ) -> Result<bool, QuorumError> {
        assert!(
            applied <= self.raw.raft.raft_log.applied,
            "snapshot at {applied} beyond raft's applied {}",
            self.raw.raft.raft_log.applied
        );
        assert!(
            image.applied_index() <= applied,
            "the image is at `applied`"
        );
        if !self.raw.store().snapshot_due(applied) {
            return Ok(false);
        }
        let bytes = encode_image(image)?;
        self.raw
            .mut_store()
            .create_snapshot(applied, Bytes::from(bytes))?;
        Ok(true)
    }

    /// Committed entries after raft index `index` (at most `max_bytes`,
    /// at least one if any), or the snapshot when they were compacted away:
    /// what a broker that is not a voter fetches to follow the metadata.
    pub fn entries_after(&self, index: u64, max_bytes: u64) -> Result<MetadataRead, QuorumError> {
        let store = self.raw.store();
        match store.committed_after(index, max_bytes) {
            Some(entries) => {
                let mut committed = Vec::with_capacity(entries.len());
                collect_committed(&mut committed, entries)?;
                Ok(MetadataRead::Entries(committed))
            }
            None => {
                let snapshot = store.newest_snapshot();
                Ok(MetadataRead::Snapshot {
                    index: snapshot.get_metadata().index,
                    term: snapshot.get_metadata().term,
                    image: snapshot.data.clone(),
                })
            }
        }
    }

    /// Installs a leader's snapshot once its image decodes: a bad one
    /// changes nothing on disk.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<InstalledSnapshot, QuorumError> {
        let metadata = snapshot.get_metadata();
        let index = metadata.index;
        let image = decode_image(&snapshot.data)
            .map_err(|source| QuorumError::BadSnapshot { index, source })?;
        if image.applied_index() > index {
            return Err(QuorumError::SnapshotAhead {
                index,
                image_index: image.applied_index(),
            });
        }
        let mut voters = metadata.get_conf_state().voters.clone();
        voters.sort_unstable();
        if voters != self.voters {
            return Err(QuorumError::VotersChanged {
                stored: voters,
                spec: self.voters.clone(),
            });
        }
        self.raw.mut_store().install_snapshot(snapshot)?;
        Ok(InstalledSnapshot {
            index,
            term: metadata.term,
            image,
        })
    }

    /// Replaces raft's unseeded draw whenever a new election period starts
    /// (plan §1.1); production, without a seed, keeps raft's own draw.
    fn reseed_election_timeout(&mut self) {
        if let Some(rng) = self.election_rng.as_mut()
            && self.raw.raft.election_elapsed == 0
        {
            self.raw
                .raft
                .set_randomized_election_timeout(rng.next_ticks());
        }
    }
}

fn raft_config(id: u64) -> Config {
    Config {
        id,
        election_tick: ELECTION_TICKS_MIN,
        heartbeat_tick: HEARTBEAT_TICKS,
        min_election_tick: ELECTION_TICKS_MIN,
        max_election_tick: ELECTION_TICKS_MAX,
        applied: 0,
        max_size_per_msg: MESSAGE_BYTES_MAX,
        max_inflight_msgs: INFLIGHT_MESSAGES_MAX,
        max_uncommitted_size: UNCOMMITTED_BYTES_MAX,
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    }
}

/// The spec's voters as sorted raft ids, or why they cannot form a quorum.
fn check_voters(spec: &QuorumSpec) -> Result<Vec<u64>, QuorumError> {
    let bad = || QuorumError::BadVoters {
        self_id: spec.self_id,
        voters: spec.voters.clone(),
        max: VOTERS_MAX,
    };
    if spec.voters.is_empty()
        || spec.voters.len() > VOTERS_MAX
        || spec.voters.iter().any(|id| *id < 0)
        || !spec.voters.contains(&spec.self_id)
    {
        return Err(bad());
    }
    let mut ids: Vec<u64> = spec.voters.iter().map(|id| raft_id(*id)).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != spec.voters.len() {
        return Err(bad());
    }
    Ok(ids)
}

fn collect_committed(
    out: &mut Vec<Committed>,
    entries: Vec<raft::eraftpb::Entry>,
) -> Result<(), QuorumError> {
    for entry in entries {
        if entry.get_entry_type() != EntryType::EntryNormal {
            return Err(QuorumError::ConfChange { index: entry.index });
        }
        if let Some(last) = out.last() {
            assert_eq!(entry.index, last.index + 1, "committed entries in order");
        }
        out.push(Committed {
            index: entry.index,
            term: entry.term,
            data: entry.data,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "quorum_tests.rs"]
mod tests;
