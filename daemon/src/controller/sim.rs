//! A seeded, deterministic simulation of the controller quorum, in the spirit
//! of TigerBeetle's VOPR: 3 or 5 voters on a virtual clock, a network that
//! delays, drops and duplicates messages (every one through `wire`), network
//! partitions, and crashes (with power loss) and restarts from what the
//! durable log store (over an in-memory directory) kept. Small store limits
//! make snapshots and compaction happen, so a lagging or restarted voter is
//! caught up by an installed snapshot. Checkers
//! run after every step; the scripted scenario also measures, in virtual
//! time, how long the cluster goes without an active controller. A failing
//! seed prints itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::MessageType;
use uuid::Uuid;

use super::image::MetadataImage;
use super::log_store::{LogStore, MemDir, StoreLimits};
use super::quorum::{Committed, InstalledSnapshot, Quorum, QuorumSpec, Role, TICK, raft_id};
use super::records::{Record, RecordBatch};
use super::tests::seeds;
use super::wire;

/// The longest step of virtual time: the clock jumps to the next delivery
/// or tick, but never further than this, so checks see every stretch.
const STEP_MAX: Duration = Duration::from_millis(10);
/// Proposals under load come this often.
const PROPOSAL_INTERVAL: Duration = Duration::from_millis(100);
/// Ready loops per node per step before we call it a livelock.
const READY_ROUNDS_MAX: usize = 16;
/// Messages in flight; more means something floods the network.
const IN_FLIGHT_MAX: usize = 100_000;
/// The failover budget: a new active controller within 2 s.
const FAILOVER_BUDGET: Duration = Duration::from_secs(2);
/// On a calm network a failover misses the budget only when the survivors
/// split their votes twice running (each costs an election timeout): at
/// most 1 in 1,000, so the CI seeds (400 and 200 failovers) allow none and
/// thousands of fresh seeds allow their rare tail (docs/PERFORMANCE.md).
const CALM_OVER_BUDGET_PER_MILLE: usize = 1;
/// Liveness: without an active controller this long, a seed fails outright.
const FAILOVER_LIMIT: Duration = Duration::from_secs(4);

/// Small enough that a run of a few hundred entries snapshots often, cuts
/// segments away, and sends snapshots to voters that fell behind.
const SIM_LIMITS: StoreLimits = StoreLimits {
    segment_bytes: 1024,
    snapshot_entries: 16,
    snapshot_log_bytes: 1024 * 1024,
    tail_entries: 8,
};

/// SplitMix64: the one source of randomness of a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Real nodes start at unrelated moments, so their tick grids are offset;
/// nodes ticking in lockstep would split votes far more often than real ones.
fn tick_phase(rng: &mut Rng) -> Duration {
    Duration::from_millis(rng.below(TICK.as_millis() as u64))
}

/// The network's behaviour for a stretch of the run.
#[derive(Debug, Clone, Copy)]
struct Faults {
    drop_percent: u64,
    duplicate_percent: u64,
    delay_ms_max: u64,
}

const CALM: Faults = Faults {
    drop_percent: 0,
    duplicate_percent: 0,
    delay_ms_max: 2,
};

/// A bad LAN: 5 % lost, 5 % duplicated, up to 20 ms late (and reordered).
const LOSSY: Faults = Faults {
    drop_percent: 5,
    duplicate_percent: 5,
    delay_ms_max: 20,
};

struct InFlight {
    deliver_at: Duration,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

struct Node {
    spec: QuorumSpec,
    /// What survives a crash: what `Quorum::ready` made durable before it
    /// returned.
    disk: Arc<MemDir>,
    /// `None` while crashed.
    quorum: Option<Quorum>,
    image: MetadataImage,
    /// Raft index applied by this incarnation (no-ops included).
    applied: u64,
}

/// When a leader first applied an entry of its own term: it is active.
#[derive(Debug, Clone, Copy)]
struct Activation {
    node: usize,
    term: u64,
}

struct Cluster {
    seed: u64,
    rng: Rng,
    epoch: Instant,
    now: Duration,
    nodes: Vec<Node>,
    isolated: Vec<bool>,
    network: Vec<InFlight>,
    faults: Faults,
    /// Checker state: who led each term, the committed log as first applied
    /// (term, data), the image after each applied index.
    leaders: HashMap<u64, u64>,
    committed: Vec<(u64, bytes::Bytes)>,
    images: HashMap<u64, MetadataImage>,
    activations: Vec<Activation>,
    proposals: u64,
    /// Snapshots taken and installed, to show the run exercised them.
    snapshots_taken: u64,
    snapshots_installed: u64,
}

impl Cluster {
    fn new(seed: u64, size: usize) -> Cluster {
        let epoch = Instant::now();
        let voters: Vec<i32> = (0..size as i32).collect();
        let mut rng = Rng(seed);
        let nodes = voters
            .iter()
            .map(|id| {
                let spec = QuorumSpec {
                    self_id: *id,
                    voters: voters.clone(),
                    election_seed: Some(rng.next()),
                };
                let disk = Arc::new(MemDir::new());
                let store = open_store(&spec, &disk);
                let quorum =
                    Quorum::new(&spec, store, epoch + tick_phase(&mut rng)).expect("starts");
                Node {
                    spec,
                    disk,
                    quorum: Some(quorum),
                    image: MetadataImage::default(),
                    applied: 0,
                }
            })
            .collect();
        Cluster {
            seed,
            rng,
            epoch,
            now: Duration::ZERO,
            nodes,
            isolated: vec![false; size],
            network: Vec::new(),
            faults: CALM,
            leaders: HashMap::new(),
            committed: Vec::new(),
            images: HashMap::new(),
            activations: Vec::new(),
            proposals: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
        }
    }

    /// One step: deliver what is due, tick everyone, run Ready loops, check.
    fn step(&mut self) {
        self.now = self.next_event();
        let now = self.epoch + self.now;
        let due = self.take_due();
        for message in due {
            self.deliver(message);
        }
        for node in self.nodes.iter_mut() {
            if let Some(quorum) = node.quorum.as_mut() {
                quorum.handle_tick(now);
            }
        }
        for index in 0..self.nodes.len() {
            self.run_ready(index);
        }
        self.check();
    }

    /// Steps until `done` holds, at most `limit` of virtual time; returns
    /// the time it took.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Cluster) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now - start <= limit,
                "seed {}: condition not met within {:?}",
                self.seed,
                limit
            );
            self.step();
        }
        self.now - start
    }

    /// The next moment anything happens: a delivery or a node's tick.
    fn next_event(&self) -> Duration {
        let ticks = self
            .nodes
            .iter()
            .filter_map(|n| n.quorum.as_ref())
            .map(|q| q.poll_timeout().duration_since(self.epoch));
        let deliveries = self.network.iter().map(|m| m.deliver_at);
        let next = ticks.chain(deliveries).min().unwrap_or(self.now + STEP_MAX);
        next.clamp(self.now + Duration::from_micros(1), self.now + STEP_MAX)
    }

    fn take_due(&mut self) -> Vec<InFlight> {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) =
            self.network.drain(..).partition(|m| m.deliver_at <= now);
        self.network = later;
        due
    }

    fn deliver(&mut self, message: InFlight) {
        if self.isolated[message.from] || self.isolated[message.to] {
            return;
        }
        let Some(quorum) = self.nodes[message.to].quorum.as_mut() else {
            return;
        };
        let decoded = wire::decode(&message.bytes).expect("our own bytes decode");
        assert_eq!(decoded.to, raft_id(message.to as i32));
        quorum
            .handle_message(decoded)
            .expect("voters' messages are accepted");
    }

    fn send(&mut self, from: usize, messages: Vec<raft::eraftpb::Message>) {
        for message in messages {
            let to = (message.to - 1) as usize;
            assert!(to < self.nodes.len() && to != from, "seed {}", self.seed);
            if self.isolated[from] || self.isolated[to] || self.rng.chance(self.faults.drop_percent)
            {
                if message.get_msg_type() == MessageType::MsgSnapshot
                    && let Some(quorum) = self.nodes[from].quorum.as_mut()
                {
                    quorum.report_snapshot(message.to, false);
                }
                continue;
            }
            if message.get_msg_type() == MessageType::MsgSnapshot
                && let Some(quorum) = self.nodes[from].quorum.as_mut()
            {
                // Handed to the network: as far as the sender knows, sent.
                quorum.report_snapshot(message.to, true);
            }
            let bytes = wire::encode(&message).expect("encodes");
            let copies = if self.rng.chance(self.faults.duplicate_percent) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay_ms = 1 + self.rng.below(self.faults.delay_ms_max);
                self.network.push(InFlight {
                    deliver_at: self.now + Duration::from_millis(delay_ms),
                    from,
                    to,
                    bytes: bytes.clone(),
                });
            }
        }
        assert!(self.network.len() <= IN_FLIGHT_MAX, "seed {}", self.seed);
    }

    fn run_ready(&mut self, index: usize) {
        for _ in 0..READY_ROUNDS_MAX {
            let Some(quorum) = self.nodes[index].quorum.as_mut() else {
                return;
            };
            let effects = quorum.ready().expect("ready");
            if effects.messages.is_empty()
                && effects.committed.is_empty()
                && effects.snapshot.is_none()
            {
                return;
            }
            self.send(index, effects.messages);
            if let Some(snapshot) = effects.snapshot {
                self.install(index, snapshot);
            }
            for committed in effects.committed {
                self.apply(index, committed);
            }
            self.maybe_snapshot(index);
        }
        panic!("seed {}: node {} never settled", self.seed, index);
    }

    /// Replaces a node's image with a leader's snapshot and checks it is
    /// the image every node had at that index.
    fn install(&mut self, index: usize, snapshot: InstalledSnapshot) {
        let seed = self.seed;
        let node = &mut self.nodes[index];
        assert!(
            snapshot.index > node.applied,
            "seed {seed}: node {index} installs snapshot {} over applied {}",
            snapshot.index,
            node.applied
        );
        node.image = snapshot.image;
        node.applied = snapshot.index;
        self.snapshots_installed += 1;
        self.check_image(index);
    }

    /// The node's image must equal every other node's at the same index.
    fn check_image(&mut self, index: usize) {
        let node = &self.nodes[index];
        let image = self
            .images
            .entry(node.applied)
            .or_insert_with(|| node.image.clone());
        assert!(
            *image == node.image,
            "seed {}: node {index} image differs at index {}",
            self.seed,
            node.applied
        );
    }

    /// Snapshots a node's image when its store says one is due.
    fn maybe_snapshot(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(quorum) = node.quorum.as_mut()
            && quorum
                .maybe_snapshot(node.applied, &node.image)
                .expect("snapshot")
        {
            self.snapshots_taken += 1;
        }
    }

    /// Applies one committed entry on one node and checks it against the
    /// log as every other node applied it.
    fn apply(&mut self, index: usize, committed: Committed) {
        let seed = self.seed;
        let node = &mut self.nodes[index];
        assert_eq!(
            committed.index,
            node.applied + 1,
            "seed {seed}: node {index} applies in order, once"
        );
        let position = (committed.index - 1) as usize;
        match self.committed.get(position) {
            Some((term, data)) => assert!(
                *term == committed.term && *data == committed.data,
                "seed {seed}: node {index} committed a different entry {}",
                committed.index
            ),
            None => {
                assert_eq!(position, self.committed.len(), "seed {seed}");
                self.committed
                    .push((committed.term, committed.data.clone()));
            }
        }
        if !committed.data.is_empty() {
            let batch = RecordBatch::decode(&committed.data).expect("our batches decode");
            node.image
                .apply(committed.index, &batch)
                .unwrap_or_else(|e| panic!("seed {seed}: apply failed: {e}"));
        }
        node.applied = committed.index;
        self.check_image(index);
        let node = &self.nodes[index];
        if let Some(quorum) = node.quorum.as_ref() {
            let already = self.activations.iter().any(|a| a.term == committed.term);
            if quorum.role() == Role::Leader && quorum.term() == committed.term && !already {
                self.activations.push(Activation {
                    node: index,
                    term: committed.term,
                });
            }
        }
    }

    /// Safety after every step.
    fn check(&mut self) {
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(quorum) = node.quorum.as_ref() else {
                continue;
            };
            if quorum.role() == Role::Leader {
                let leader = *self
                    .leaders
                    .entry(quorum.term())
                    .or_insert(quorum.raft_id());
                assert_eq!(
                    leader,
                    quorum.raft_id(),
                    "seed {}: two leaders in term {}",
                    self.seed,
                    quorum.term()
                );
            }
            assert_eq!(
                node.applied,
                quorum.commit_index(),
                "seed {}: node {index} applied all it committed",
                self.seed
            );
        }
    }

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (index, node) in self.nodes.iter().enumerate() {
            if self.isolated[index] {
                continue;
            }
            if let Some(quorum) = node.quorum.as_ref()
                && quorum.role() == Role::Leader
                && best.is_none_or(|(t, _)| quorum.term() > t)
            {
                best = Some((quorum.term(), index));
            }
        }
        best.map(|(_, index)| index)
    }

    /// The active controller (leader that applied an entry of its term),
    /// reachable and alive, if any.
    fn active(&self) -> Option<Activation> {
        let leader = self.leader()?;
        let term = self.nodes[leader].quorum.as_ref()?.term();
        self.activations
            .iter()
            .find(|a| a.term == term && a.node == leader)
            .copied()
    }

    /// Proposes one new topic on the current leader, if there is one.
    fn propose(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        self.proposals += 1;
        let batch = RecordBatch::new(vec![Record::CreateTopic {
            topic_id: Uuid::from_u128(
                u128::from(self.rng.next()) << 64 | u128::from(self.proposals),
            ),
            name: format!("topic-{}-{}", self.seed, self.proposals),
            declared: true,
            settings: Default::default(),
        }]);
        let bytes = batch.encode().expect("encodes");
        if let Some(quorum) = self.nodes[leader].quorum.as_mut() {
            // Dropped while leadership moves: lost, as a client's would be.
            let _ = quorum.propose(bytes);
        }
        self.run_ready(leader);
    }

    /// Runs `span` with a proposal every `PROPOSAL_INTERVAL`.
    fn run_with_load(&mut self, span: Duration) {
        let until = self.now + span;
        let mut next_proposal = self.now;
        while self.now < until {
            if self.now >= next_proposal {
                self.propose();
                next_proposal = self.now + PROPOSAL_INTERVAL;
            }
            self.step();
        }
    }

    /// The process dies and the machine loses power: only what the store
    /// made durable is left.
    fn crash(&mut self, index: usize) {
        self.nodes[index].quorum = None;
        self.nodes[index].disk.power_loss();
    }

    /// Restarts from the disk: the newest snapshot's image, then raft hands
    /// back the committed entries after it.
    fn restart(&mut self, index: usize) {
        let now = self.epoch + self.now + tick_phase(&mut self.rng);
        let node = &mut self.nodes[index];
        assert!(node.quorum.is_none());
        let store = open_store(&node.spec, &node.disk);
        node.image = store.image().expect("the snapshot decodes");
        node.applied = store.snapshot_index();
        node.quorum = Some(Quorum::new(&node.spec, store, now).expect("restarts"));
        self.check_image(index);
    }

    fn term_of(&self, index: usize) -> u64 {
        self.nodes[index].quorum.as_ref().map_or(0, |q| q.term())
    }

    /// Waits for a new active controller after `gone` left at `self.now`;
    /// returns how long it took. The budget is judged over all seeds.
    fn failover_from(&mut self, gone: usize, old_term: u64) -> Duration {
        self.run_until(FAILOVER_LIMIT, |cluster| {
            cluster
                .active()
                .is_some_and(|a| a.node != gone && a.term > old_term)
        })
    }

    /// Everyone back, calm network: all nodes converge on one log and image.
    fn converge(&mut self) {
        self.faults = CALM;
        self.isolated.iter_mut().for_each(|i| *i = false);
        for index in 0..self.nodes.len() {
            if self.nodes[index].quorum.is_none() {
                self.restart(index);
            }
        }
        self.propose_until_committed();
        let target = self.committed.len() as u64;
        self.run_until(Duration::from_secs(5), |cluster| {
            let first = cluster.nodes[0].applied;
            first >= target && cluster.nodes.iter().all(|n| n.applied == first)
        });
        let first = &self.nodes[0].image;
        for node in &self.nodes {
            assert!(node.image == *first, "seed {}: images differ", self.seed);
        }
    }

    fn propose_until_committed(&mut self) {
        self.run_until(Duration::from_secs(5), |cluster| cluster.active().is_some());
        let before = self.committed.len();
        self.propose();
        self.run_until(Duration::from_secs(2), |cluster| {
            cluster.committed.len() > before
        });
    }
}

fn open_store(spec: &QuorumSpec, disk: &Arc<MemDir>) -> LogStore {
    Quorum::open_store(spec, disk.clone(), SIM_LIMITS).expect("the store opens")
}

/// What one seed measured.
#[derive(Debug, Default)]
struct Figures {
    seed: u64,
    first_election: Duration,
    after_crash: Duration,
    after_isolation: Duration,
}

/// The scripted run: elect, load under faults, kill the leader, restart it,
/// isolate the leader, isolate a follower and heal, lose a minority, heal.
fn scenario(seed: u64, size: usize, faults: Faults) -> Figures {
    let mut cluster = Cluster::new(seed, size);
    let mut figures = Figures {
        seed,
        first_election: cluster.run_until(Duration::from_secs(5), |c| c.active().is_some()),
        ..Figures::default()
    };
    cluster.faults = faults;
    cluster.run_with_load(Duration::from_secs(2));

    // The active controller dies.
    let gone = cluster.leader().expect("a leader");
    let old_term = cluster.term_of(gone);
    cluster.crash(gone);
    figures.after_crash = cluster.failover_from(gone, old_term);
    cluster.run_with_load(Duration::from_secs(1));
    cluster.restart(gone);
    cluster.run_with_load(Duration::from_secs(2));

    // The active controller is cut off: nothing tells the others.
    let cut = cluster.leader().expect("a leader");
    let old_term = cluster.term_of(cut);
    cluster.isolated[cut] = true;
    figures.after_isolation = cluster.failover_from(cut, old_term);
    cluster.run_until(FAILOVER_BUDGET, |c| {
        c.nodes[cut]
            .quorum
            .as_ref()
            .is_some_and(|q| q.role() != Role::Leader)
    });
    returns_without_disturbing(&mut cluster, cut);

    // A follower is cut off for 3 s, then returns.
    let leader = cluster.leader().expect("a leader");
    let follower = (leader + 1) % size;
    cluster.isolated[follower] = true;
    let its_term = cluster.term_of(follower);
    cluster.run_with_load(Duration::from_secs(3));
    assert_eq!(
        cluster.term_of(follower),
        its_term,
        "seed {seed}: pre-vote keeps an isolated voter's term"
    );
    let installed = cluster.snapshots_installed;
    returns_without_disturbing(&mut cluster, follower);
    assert!(
        cluster.snapshots_installed > installed,
        "seed {seed}: the follower cut off for 3 s was caught up by a snapshot"
    );

    // A minority dies: the majority still commits.
    let leader = cluster.leader().expect("a leader");
    for k in 1..=(size - 1) / 2 {
        cluster.crash((leader + k) % size);
    }
    cluster.propose_until_committed();
    cluster.converge();
    figures
}

/// How long the random phase of `chaos` runs, and how often it acts.
const CHAOS_SPAN: Duration = Duration::from_secs(10);
const CHAOS_ACTION_INTERVAL: Duration = Duration::from_millis(250);

/// VOPR-style: under a lossy network, crash, restart, cut off and heal
/// random nodes at random moments (a majority may be lost for a while);
/// safety is checked after every step, then everything heals and the
/// cluster must converge on one log and one image.
fn chaos(seed: u64, size: usize) -> (usize, u64, usize, u64) {
    let mut cluster = Cluster::new(seed, size);
    cluster.faults = LOSSY;
    let until = cluster.now + CHAOS_SPAN;
    let mut crashes = 0;
    while cluster.now < until {
        let node = cluster.rng.below(size as u64) as usize;
        match cluster.rng.below(4) {
            0 if cluster.nodes[node].quorum.is_some() => {
                crashes += 1;
                cluster.crash(node)
            }
            1 if cluster.nodes[node].quorum.is_none() => cluster.restart(node),
            2 => cluster.isolated[node] = true,
            _ => cluster.isolated[node] = false,
        }
        cluster.run_with_load(CHAOS_ACTION_INTERVAL);
    }
    cluster.converge();
    let batches = cluster
        .committed
        .iter()
        .filter(|(_, data)| !data.is_empty())
        .count();
    assert!(batches >= 1, "seed {seed}: a batch committed");
    (
        batches,
        cluster.term_of(0),
        crashes,
        cluster.snapshots_installed,
    )
}

/// Heals `node` and checks the leader keeps its place and term.
fn returns_without_disturbing(cluster: &mut Cluster, node: usize) {
    let leader = cluster.leader().expect("a leader");
    let term = cluster.term_of(leader);
    cluster.isolated[node] = false;
    cluster.run_with_load(Duration::from_secs(2));
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "seed {}: node {node} returning moved the leader",
        cluster.seed
    );
    assert_eq!(
        cluster.term_of(leader),
        term,
        "seed {}: node {node} returning raised the term",
        cluster.seed
    );
    assert_eq!(
        cluster.term_of(node),
        term,
        "seed {}: node {node} caught up",
        cluster.seed
    );
}

/// At most this share (in percent) of failovers on a lossy network may go
/// over the budget (measured: 7 of 400 with 3 voters).
const LOSSY_OVER_BUDGET_PERCENT: usize = 5;

fn run_seeds(size: usize, seeds: std::ops::Range<u64>, faults: Faults) -> Vec<Figures> {
    seeds
        .map(|seed| {
            std::panic::catch_unwind(|| scenario(seed, size, faults)).unwrap_or_else(|cause| {
                eprintln!("failing seed: {seed} ({size} voters, {faults:?})");
                std::panic::resume_unwind(cause)
            })
        })
        .collect()
}

/// Prints the failover figures over all seeds; returns how many failovers
/// went over the budget.
fn report(size: usize, network: &str, figures: &[Figures]) -> usize {
    let show = |name: &str, pick: fn(&Figures) -> Duration| {
        for f in figures.iter().filter(|f| pick(f) > FAILOVER_BUDGET) {
            eprintln!(
                "over budget: seed {} ({size} voters, {network}, {name}): {:?}",
                f.seed,
                pick(f)
            );
        }
        let mut values: Vec<Duration> = figures.iter().map(pick).collect();
        values.sort_unstable();
        let over = values.iter().filter(|v| **v > FAILOVER_BUDGET).count();
        eprintln!(
            "{size} voters, {network}, {} seeds, {name}: median {:?}, p90 {:?}, p99 {:?}, worst {:?}, over {:?}: {over}",
            values.len(),
            values[values.len() / 2],
            values[values.len() * 9 / 10],
            values[values.len() * 99 / 100],
            values[values.len() - 1],
            FAILOVER_BUDGET,
        );
        over
    };
    show("first election", |f| f.first_election);
    show("after the leader crashed", |f| f.after_crash)
        + show("after the leader was cut off", |f| f.after_isolation)
}

/// Runs `seeds` of `size` voters on a calm and on a lossy network and
/// holds each to its share of failovers over the budget. Losing a vote
/// costs a whole election timeout, so with 5 % loss a few go over 2 s:
/// the lossy share catches that getting worse.
fn assert_fail_over_within_budget(size: usize, seeds: std::ops::Range<u64>) {
    for (network, faults, per_mille) in [
        ("calm", CALM, CALM_OVER_BUDGET_PER_MILLE),
        ("lossy", LOSSY, LOSSY_OVER_BUDGET_PERCENT * 10),
    ] {
        let figures = run_seeds(size, seeds.clone(), faults);
        let over = report(size, network, &figures);
        let failovers = figures.len() * 2;
        assert!(
            over * 1000 <= failovers * per_mille,
            "{size} voters, {network} network: {over} of {failovers} failovers over budget"
        );
    }
}

#[test]
fn three_voters_stay_safe_and_fail_over_within_budget() {
    assert_fail_over_within_budget(3, seeds(0, 200));
}

#[test]
fn five_voters_stay_safe_and_fail_over_within_budget() {
    assert_fail_over_within_budget(5, seeds(1000, 100));
}

#[test]
fn random_crashes_and_partitions_keep_the_logs_and_images_equal() {
    for (size, seeds) in [(3, seeds(0, 100)), (5, seeds(500, 50))] {
        let runs = seeds.end - seeds.start;
        let (mut batches, mut terms, mut crashes, mut installed) = (0, 0, 0, 0);
        for seed in seeds {
            let (b, t, c, i) =
                std::panic::catch_unwind(|| chaos(seed, size)).unwrap_or_else(|cause| {
                    eprintln!("failing chaos seed: {seed} ({size} voters)");
                    std::panic::resume_unwind(cause)
                });
            (batches, terms, crashes, installed) =
                (batches + b, terms + t, crashes + c, installed + i);
        }
        eprintln!(
            "chaos, {size} voters, {runs} seeds: {batches} batches committed, {crashes} crashes, {installed} snapshots installed, final terms summing to {terms}"
        );
        // Crashed and cut-off voters fall behind the leader's compacted log.
        assert!(installed > 0, "{size} voters: no snapshot installed");
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = scenario(42, 3, LOSSY);
    let second = scenario(42, 3, LOSSY);
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
}
