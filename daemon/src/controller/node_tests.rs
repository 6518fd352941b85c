//! Three controller nodes and their brokers on a virtual clock, every
//! message through the rpc codec, delivered at once (the seeded simulation
//! covers a hostile network; these pin the protocol's answers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::controller::NO_LEADER;
use crate::controller::alter_partition::AlterPartitionRequest;
use crate::controller::decide::NewTopic;
use crate::controller::plan::DesiredSpec;
use crate::controller::quorum::QuorumSpec;
use crate::controller::tests::{declared, registration};

const SESSION: Duration = Duration::from_millis(1500);
const VOTERS: [BrokerId; 3] = [1, 2, 3];
const HASH: &str = "00000000000000aa";

fn desired(hash: &str) -> DesiredSpec {
    DesiredSpec {
        hash: hash.to_string(),
        text: format!("# spec {hash}\n"),
        topics: vec![NewTopic {
            topic_id: Uuid::from_u128(7),
            name: "events".into(),
            declared: true,
            settings: Default::default(),
            partitions: 6,
            replication_factor: 1,
            replicas: None,
        }],
        brokers: declared(&[(1, None), (2, None), (3, None)]),
        deletable: Default::default(),
        internal: vec![NewTopic {
            topic_id: Uuid::from_u128(8),
            name: "__consumer_offsets".into(),
            declared: false,
            settings: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            partitions: 50,
            replication_factor: 2,
            replicas: None,
        }],
        adopt_broker: None,
    }
}

struct Net {
    now: Instant,
    nodes: BTreeMap<BrokerId, ControllerNode>,
    /// Replies that reached each broker.
    replies: BTreeMap<BrokerId, Vec<Reply>>,
    down: Vec<BrokerId>,
    next_request: u64,
}

impl Net {
    fn new(hashes: [&str; 3]) -> Net {
        let now = Instant::now();
        let nodes = VOTERS
            .iter()
            .zip(hashes)
            .map(|(id, hash)| (*id, start(*id, now, hash)))
            .collect();
        Net {
            now,
            nodes,
            replies: BTreeMap::new(),
            down: Vec::new(),
            next_request: 1,
        }
    }

    /// Moves every queued message, through the codec, until none is left.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut sent = Vec::new();
            for (id, node) in self.nodes.iter_mut() {
                if self.down.contains(id) {
                    continue;
                }
                node.step(self.now).expect("step");
                while let Some((to, message)) = node.poll_transmit() {
                    let bytes = message.encode().expect("encodes");
                    sent.push((*id, to, ClusterMessage::decode(&bytes).expect("decodes")));
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, to, message) in sent {
                if self.down.contains(&to) || self.down.contains(&from) {
                    continue;
                }
                match message {
                    ClusterMessage::Reply(reply) => self.replies.entry(to).or_default().push(reply),
                    message => {
                        let node = self.nodes.get_mut(&to).expect("a voter");
                        node.handle_message(self.now, from, message);
                    }
                }
            }
        }
        panic!("messages never settled");
    }

    /// Advances the clock in ticks, settling after each.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(10)).min(end);
            for (id, node) in self.nodes.iter_mut() {
                if !self.down.contains(id) {
                    node.handle_timeout(self.now);
                }
            }
            self.settle();
        }
    }

    fn active(&self) -> Option<BrokerId> {
        let active: Vec<BrokerId> = self
            .nodes
            .iter()
            .filter(|(id, node)| !self.down.contains(id) && node.is_active())
            .map(|(id, _)| *id)
            .collect();
        assert!(active.len() <= 1, "two active controllers: {active:?}");
        active.first().copied()
    }

    fn wait_active(&mut self) -> BrokerId {
        for _ in 0..400 {
            if let Some(id) = self.active() {
                return id;
            }
            self.advance(Duration::from_millis(10));
        }
        panic!("no active controller after 4 s");
    }

    /// Broker `broker` sends `message` to controller node `to`; returns its
    /// request id.
    fn send(
        &mut self,
        broker: BrokerId,
        to: BrokerId,
        message: impl FnOnce(u64) -> ClusterMessage,
    ) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        let message = message(request_id);
        let node = self.nodes.get_mut(&to).expect("a voter");
        node.handle_message(self.now, broker, message);
        self.settle();
        request_id
    }

    fn reply(&self, broker: BrokerId, request_id: u64) -> Option<Outcome> {
        self.replies
            .get(&broker)?
            .iter()
            .find(|reply| reply.request_id == request_id)
            .map(|reply| reply.outcome.clone())
    }

    fn register(
        &mut self,
        broker: BrokerId,
        to: BrokerId,
        incarnation: u128,
        hash: &str,
    ) -> Outcome {
        let request = RegisterRequest {
            request_id: 0,
            registration: registration(broker, incarnation),
            spec_hash: hash.to_string(),
            adoption: None,
        };
        let id = self.send(broker, to, |request_id| {
            ClusterMessage::Register(RegisterRequest {
                request_id,
                ..request
            })
        });
        self.reply(broker, id).expect("an answer once settled")
    }

    fn heartbeat(&mut self, broker: BrokerId, to: BrokerId, epoch: i64) -> Outcome {
        let offset = self.nodes[&to].image().applied_index() as i64;
        let id = self.send(broker, to, |request_id| {
            ClusterMessage::Heartbeat(HeartbeatRequest {
                request_id,
                broker_id: broker,
                broker_epoch: epoch,
                metadata_offset: offset,
                want_fence: false,
                spec_hash: HASH.to_string(),
            })
        });
        self.reply(broker, id).expect("an answer once settled")
    }

    /// Registers and unfences every voter as a broker; their epochs.
    fn join_all(&mut self, active: BrokerId) -> BTreeMap<BrokerId, i64> {
        let mut epochs = BTreeMap::new();
        for broker in VOTERS {
            let Outcome::Registered { broker_epoch } = self.register(broker, active, 1, HASH)
            else {
                panic!("broker {broker} not registered");
            };
            epochs.insert(broker, broker_epoch);
        }
        for broker in VOTERS {
            assert!(matches!(
                self.heartbeat(broker, active, epochs[&broker]),
                Outcome::HeartbeatAck { fenced: false, .. }
            ));
        }
        epochs
    }
}

fn start(id: BrokerId, now: Instant, hash: &str) -> ControllerNode {
    let spec = QuorumSpec {
        self_id: id,
        voters: VOTERS.to_vec(),
        election_seed: Some(id as u64),
    };
    let dir = std::sync::Arc::new(crate::controller::log_store::MemDir::new());
    let store = Quorum::open_store(&spec, dir, Default::default()).expect("voters");
    let quorum = Quorum::new(&spec, store, now).expect("quorum");
    ControllerNode::new(
        id,
        VOTERS.to_vec(),
        quorum,
        MetadataImage::default(),
        SESSION,
        desired(hash),
    )
}

#[test]
fn brokers_register_get_their_epoch_and_lead_once_unfenced() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let image = net.nodes[&active].image().clone();
    for broker in VOTERS {
        let entry = image.broker(broker).expect("registered");
        assert_eq!(entry.broker_epoch, epochs[&broker]);
        assert!(!entry.fenced);
    }
    let topic = image.topic_by_name("events").expect("the spec's topic");
    assert_eq!(topic.partitions.len(), 6);
    for state in &topic.partitions {
        assert_eq!(state.leader, state.replicas[0], "{state:?}");
        assert!(state.leader_epoch >= 1, "led since unfencing: {state:?}");
    }
    // Every voter applied the same image.
    for node in net.nodes.values() {
        assert_eq!(node.image(), &image);
    }
}

#[test]
fn a_node_that_is_not_active_names_the_active_one() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let other = VOTERS.into_iter().find(|id| *id != active).unwrap();
    assert_eq!(
        net.register(other, other, 1, HASH),
        Outcome::NotController {
            leader: Some(active)
        }
    );
}

#[test]
fn a_node_may_speak_only_for_itself() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let other = VOTERS.into_iter().find(|id| *id != active).unwrap();
    let request_id = net.send(other, active, |request_id| {
        ClusterMessage::Register(RegisterRequest {
            request_id,
            registration: registration(active, 1),
            spec_hash: HASH.into(),
            adoption: None,
        })
    });
    assert!(matches!(
        net.reply(other, request_id),
        Some(Outcome::Refused { code: 42, .. })
    ));
    assert!(net.nodes[&active].image().broker(active).is_none());
}

#[test]
fn the_spec_applies_only_once_a_majority_of_voters_hold_it() {
    let mut net = Net::new([HASH, "00000000000000bb", "00000000000000cc"]);
    let active = net.wait_active();
    for broker in VOTERS {
        let hash = match broker {
            1 => HASH,
            2 => "00000000000000bb",
            _ => "00000000000000cc",
        };
        assert!(matches!(
            net.register(broker, active, 1, hash),
            Outcome::Registered { .. }
        ));
    }
    net.advance(Duration::from_millis(200));
    for node in net.nodes.values() {
        assert!(
            node.image().applied_spec().is_none(),
            "three different specs"
        );
        assert!(node.image().topic_by_name("events").is_none());
    }
}

#[test]
fn a_silent_broker_is_fenced_when_its_session_ends_and_leads_again_at_a_higher_epoch() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let silent = VOTERS.into_iter().find(|id| *id != active).unwrap();
    let led_before = led_by(net.nodes[&active].image(), silent);
    assert!(!led_before.is_empty());
    // Everyone else keeps heartbeating; the silent one stops.
    let start = net.now;
    while net.now < start + SESSION + Duration::from_millis(200) {
        for broker in VOTERS.into_iter().filter(|id| *id != silent) {
            net.heartbeat(broker, active, epochs[&broker]);
        }
        net.advance(Duration::from_millis(250));
    }
    let image = net.nodes[&active].image().clone();
    assert!(image.broker(silent).unwrap().fenced);
    let topic = image.topic_by_name("events").unwrap();
    for (partition, epoch) in &led_before {
        let state = &topic.partitions[*partition];
        assert_eq!(
            state.leader, NO_LEADER,
            "offline while its only replica is fenced"
        );
        assert_eq!(state.leader_epoch, epoch + 1);
    }
    // It restarts: a new incarnation, a new epoch, and its partitions back
    // at a higher leader epoch once it has caught up.
    let Outcome::Registered { broker_epoch } = net.register(silent, active, 2, HASH) else {
        panic!("re-registration refused");
    };
    assert!(broker_epoch > epochs[&silent]);
    assert!(matches!(
        net.heartbeat(silent, active, broker_epoch),
        Outcome::HeartbeatAck { fenced: false, .. }
    ));
    let topic_after = net.nodes[&active]
        .image()
        .topic_by_name("events")
        .unwrap()
        .clone();
    for (partition, epoch) in &led_before {
        let state = &topic_after.partitions[*partition];
        assert_eq!(state.leader, silent);
        assert_eq!(state.leader_epoch, epoch + 2);
    }
}

#[test]
fn another_incarnation_is_refused_while_the_session_lives_and_stale_epochs_are_refused() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let broker = VOTERS[0];
    assert!(matches!(
        net.register(broker, active, 99, HASH),
        Outcome::Refused { code: 101, .. }
    ));
    assert!(matches!(
        net.heartbeat(broker, active, epochs[&broker] - 1),
        Outcome::Refused { code: 77, .. }
    ));
}

#[test]
fn after_the_active_controller_dies_a_new_one_fences_it_within_election_plus_session() {
    let mut net = Net::new([HASH; 3]);
    let first = net.wait_active();
    let epochs = net.join_all(first);
    net.down.push(first);
    let died = net.now;
    let mut second = None;
    let mut fenced_at = None;
    while net.now < died + Duration::from_secs(5) {
        net.advance(Duration::from_millis(50));
        let Some(active) = net.active() else { continue };
        second.get_or_insert(active);
        for broker in VOTERS.into_iter().filter(|id| *id != first) {
            let outcome = net.heartbeat(broker, active, epochs[&broker]);
            assert!(
                matches!(outcome, Outcome::HeartbeatAck { fenced: false, .. }),
                "{outcome:?}"
            );
        }
        if net.nodes[&active].image().broker(first).unwrap().fenced {
            fenced_at = Some(net.now);
            break;
        }
    }
    let fenced_at = fenced_at.expect("the dead controller's broker is fenced");
    assert!(second.is_some_and(|id| id != first));
    assert!(
        fenced_at - died <= Duration::from_millis(1000 + 1500 + 300),
        "fenced {:?} after the death",
        fenced_at - died
    );
}

/// Partitions `broker` leads, with their leader epochs.
fn led_by(image: &MetadataImage, broker: BrokerId) -> Vec<(usize, i32)> {
    let topic = image.topic_by_name("events").expect("topic");
    topic
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, state)| state.leader == broker)
        .map(|(partition, state)| (partition, state.leader_epoch))
        .collect()
}

#[test]
fn producer_id_blocks_are_committed_and_never_overlap_across_brokers_or_controllers() {
    let mut net = Net::new([HASH; 3]);
    let first = net.wait_active();
    let epochs = net.join_all(first);
    let ask = |net: &mut Net, broker: BrokerId, to: BrokerId| {
        let id = net.send(broker, to, |request_id| {
            ClusterMessage::AllocateProducerIds {
                request_id,
                broker_id: broker,
                broker_epoch: epochs[&broker],
            }
        });
        match net.reply(broker, id) {
            Some(Outcome::ProducerIds { first, size }) => first..first + i64::from(size),
            other => panic!("{other:?}"),
        }
    };
    let mut blocks = vec![
        ask(&mut net, 1, first),
        ask(&mut net, 2, first),
        ask(&mut net, 1, first),
    ];
    // The active controller dies; its successor continues above every block.
    net.down.push(first);
    let second = net.wait_active();
    let survivor = VOTERS.into_iter().find(|id| *id != first).unwrap();
    blocks.push(ask(&mut net, survivor, second));
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[i + 1..] {
            assert!(a.end <= b.start, "blocks overlap or go back: {blocks:?}");
        }
    }
    // A stale epoch gets nothing.
    let stale = net.send(survivor, second, |request_id| {
        ClusterMessage::AllocateProducerIds {
            request_id,
            broker_id: survivor,
            broker_epoch: 0,
        }
    });
    assert!(matches!(
        net.reply(survivor, stale),
        Some(Outcome::Refused { code: 77, .. })
    ));
}

#[test]
fn a_controller_cut_off_from_the_quorum_renews_no_lease() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    // The other voters vanish: `active` still believes it leads for a while.
    net.down = VOTERS.into_iter().filter(|id| *id != active).collect();
    let offset = net.nodes[&active].image().applied_index() as i64;
    let request = net.send(active, active, |request_id| {
        ClusterMessage::Heartbeat(HeartbeatRequest {
            request_id,
            broker_id: active,
            broker_epoch: epochs[&active],
            metadata_offset: offset,
            want_fence: false,
            spec_hash: HASH.to_string(),
        })
    });
    assert!(net.nodes[&active].is_active(), "not stepped down yet");
    assert_eq!(
        net.reply(active, request),
        None,
        "acknowledged without a quorum"
    );
    net.advance(Duration::from_secs(3));
    assert!(
        !net.nodes[&active].is_active(),
        "check-quorum steps it down"
    );
    assert!(matches!(
        net.reply(active, request),
        Some(Outcome::NotController { .. })
    ));
}

#[test]
fn the_offsets_topic_is_created_once_its_replication_factor_of_brokers_is_live() {
    // `desired` asks for __consumer_offsets with two replicas.
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let mut epochs = BTreeMap::new();
    for broker in VOTERS {
        let Outcome::Registered { broker_epoch } = net.register(broker, active, 1, HASH) else {
            panic!("broker {broker} not registered");
        };
        epochs.insert(broker, broker_epoch);
    }
    let offsets = |net: &Net| {
        net.nodes[&active]
            .image()
            .topic_by_name("__consumer_offsets")
            .cloned()
    };
    assert!(
        offsets(&net).is_none(),
        "registered, but fenced until a heartbeat"
    );
    net.heartbeat(1, active, epochs[&1]);
    assert!(
        offsets(&net).is_none(),
        "one live broker is fewer than two replicas"
    );
    net.heartbeat(2, active, epochs[&2]);
    let topic = offsets(&net).expect("created with two live brokers");
    assert!(!topic.declared);
    assert_eq!(topic.partitions.len(), 50);
    assert_eq!(topic.settings["cleanup.policy"], "compact");
    // Placed over every declared broker, broker 3 included (it is not live
    // yet), two replicas each, led by a live first replica.
    let mut first_replicas = std::collections::BTreeSet::new();
    for state in &topic.partitions {
        assert_eq!(state.replicas.len(), 2, "{state:?}");
        first_replicas.insert(state.replicas[0]);
        let expected = if state.replicas[0] == 3 {
            state.replicas[1]
        } else {
            state.replicas[0]
        };
        assert_eq!(state.leader, expected, "{state:?}");
    }
    assert_eq!(
        first_replicas.into_iter().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // Created once: later rounds leave it alone.
    net.heartbeat(3, active, epochs[&3]);
    assert_eq!(offsets(&net).unwrap().topic_id, topic.topic_id);
}

impl Net {
    /// Broker `request.broker_id` asks node `to` for an ISR change.
    fn alter(&mut self, to: BrokerId, request: &AlterPartitionRequest) -> Outcome {
        let broker = request.broker_id;
        let id = self.send(broker, to, |request_id| ClusterMessage::AlterPartition {
            request_id,
            request: request.clone(),
        });
        self.reply(broker, id).expect("an answer once settled")
    }

    /// Broker `broker` creates an API topic through node `to`.
    fn create_topic(
        &mut self,
        broker: BrokerId,
        to: BrokerId,
        epoch: i64,
        name: &str,
        settings: &[(&str, &str)],
    ) -> Uuid {
        let topic_id = Uuid::from_u128(0x1000 + self.next_request as u128);
        let change = crate::controller::topic_change::TopicChange::Create {
            topic_id,
            name: name.into(),
            partitions: 3,
            replication_factor: 2,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            validate_only: false,
        };
        let id = self.send(broker, to, |request_id| ClusterMessage::ChangeTopic {
            request_id,
            broker_id: broker,
            broker_epoch: epoch,
            change,
        });
        assert!(matches!(self.reply(broker, id), Some(Outcome::Done { .. })));
        topic_id
    }
}

/// The request that sets the ISR of `topic_id`-`partition` as `image` has
/// it, by its leader.
fn isr_request(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    isr: &[BrokerId],
) -> AlterPartitionRequest {
    let state = image.partition(&topic_id, partition).expect("partition");
    AlterPartitionRequest {
        broker_id: state.leader,
        broker_epoch: image.broker(state.leader).expect("leader").broker_epoch,
        topic_id,
        partition,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        isr: isr.to_vec(),
    }
}

/// An attempt that arrives after a later attempt of the same leader was
/// decided is not decided: a retry's refusal is final for the leader only
/// if no earlier attempt can still be made behind it.
#[test]
fn an_isr_change_attempt_older_than_one_decided_is_refused_unmade() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let topic_id = net.create_topic(1, active, epochs[&1], "late", &[]);
    let image = net.nodes[&active].image().clone();
    let before = image.partition(&topic_id, 0).unwrap().clone();
    let leader = before.leader;
    let shrink = isr_request(&image, topic_id, 0, &[leader]);
    // The first attempt is held back; a later one is decided first.
    let first = net.next_request;
    net.next_request += 1;
    let unchanged = isr_request(&image, topic_id, 0, &before.isr);
    assert_eq!(
        net.alter(active, &unchanged),
        Outcome::PartitionAltered(before.clone())
    );
    let applied = net.nodes[&active].image().applied_index();
    net.send(leader, active, |_| ClusterMessage::AlterPartition {
        request_id: first,
        request: shrink.clone(),
    });
    assert!(
        matches!(
            net.reply(leader, first),
            Some(Outcome::Refused { code: 7, .. })
        ),
        "{:?}",
        net.reply(leader, first)
    );
    assert_eq!(net.nodes[&active].image().applied_index(), applied);
    assert_eq!(
        net.nodes[&active].image().partition(&topic_id, 0),
        Some(&before)
    );
    // A new attempt is decided.
    let Outcome::PartitionAltered(after) = net.alter(active, &shrink) else {
        panic!("not altered");
    };
    assert_eq!(after.isr, vec![leader]);
}

#[test]
fn a_leader_changes_its_isr_once_committed_and_a_stale_request_changes_nothing() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let topic_id = net.create_topic(1, active, epochs[&1], "api", &[]);
    let image = net.nodes[&active].image().clone();
    let before = image.partition(&topic_id, 0).unwrap().clone();
    let (leader, follower) = (before.leader, before.replicas[1]);
    assert_eq!(before.isr, vec![leader, follower]);

    // Shrink: answered with the committed state, which every voter applied.
    let shrink = isr_request(&image, topic_id, 0, &[leader]);
    let Outcome::PartitionAltered(after) = net.alter(active, &shrink) else {
        panic!("not altered");
    };
    assert_eq!(after.isr, vec![leader]);
    assert_eq!(
        (after.leader, after.leader_epoch, after.partition_epoch),
        (leader, before.leader_epoch, before.partition_epoch + 1)
    );
    for node in net.nodes.values() {
        assert_eq!(node.image().partition(&topic_id, 0), Some(&after));
    }

    // The same request again is stale: refused, nothing written.
    let applied = net.nodes[&active].image().applied_index();
    assert!(matches!(
        net.alter(active, &shrink),
        Outcome::Refused { code: 95, .. }
    ));
    assert_eq!(net.nodes[&active].image().applied_index(), applied);

    // The ISR it has already: answered at once, nothing written.
    let image = net.nodes[&active].image().clone();
    let same = isr_request(&image, topic_id, 0, &[leader]);
    assert_eq!(
        net.alter(active, &same),
        Outcome::PartitionAltered(after.clone())
    );
    assert_eq!(net.nodes[&active].image().applied_index(), applied);

    // Expand at the new epoch.
    let expand = isr_request(&image, topic_id, 0, &[leader, follower]);
    let Outcome::PartitionAltered(expanded) = net.alter(active, &expand) else {
        panic!("not altered");
    };
    assert_eq!(expanded.isr, vec![leader, follower]);
    assert_eq!(expanded.partition_epoch, before.partition_epoch + 2);

    // The follower may not change the leader's ISR; nobody speaks for another.
    let image = net.nodes[&active].image().clone();
    let by_follower = AlterPartitionRequest {
        broker_id: follower,
        broker_epoch: epochs[&follower],
        ..isr_request(&image, topic_id, 0, &[follower])
    };
    assert!(matches!(
        net.alter(active, &by_follower),
        Outcome::Refused { code: 6, .. }
    ));
    let request = isr_request(&image, topic_id, 0, &[leader]);
    let id = net.send(follower, active, |request_id| {
        ClusterMessage::AlterPartition {
            request_id,
            request: request.clone(),
        }
    });
    assert!(matches!(
        net.reply(follower, id),
        Some(Outcome::Refused { code: 42, .. })
    ));
    // Only the active controller answers.
    let other = VOTERS.into_iter().find(|id| *id != active).unwrap();
    let request = AlterPartitionRequest {
        broker_id: other,
        ..request
    };
    assert_eq!(
        net.alter(other, &request),
        Outcome::NotController {
            leader: Some(active)
        }
    );
    assert_eq!(net.nodes[&active].unclean_elections(), 0);
}

#[test]
fn an_unclean_election_is_counted_once_committed_and_only_where_the_topic_allows_it() {
    let mut net = Net::new([HASH; 3]);
    let active = net.wait_active();
    let epochs = net.join_all(active);
    let risky = net.create_topic(
        active,
        active,
        epochs[&active],
        "risky",
        &[("unclean.leader.election.enable", "true")],
    );
    let safe = net.create_topic(active, active, epochs[&active], "safe", &[]);
    let silent = VOTERS.into_iter().find(|id| *id != active).unwrap();
    // Every partition `silent` leads drops its follower from the ISR.
    let mut led = BTreeMap::new();
    for topic_id in [risky, safe] {
        for partition in 0..3 {
            let image = net.nodes[&active].image().clone();
            if image.partition(&topic_id, partition).unwrap().leader != silent {
                continue;
            }
            let request = isr_request(&image, topic_id, partition, &[silent]);
            let Outcome::PartitionAltered(state) = net.alter(active, &request) else {
                panic!("not altered");
            };
            led.insert((topic_id, partition), state);
        }
    }
    let risky_led = led.keys().filter(|(topic, _)| *topic == risky).count();
    assert!(risky_led >= 1 && led.len() > risky_led, "{led:?}");
    assert_eq!(net.nodes[&active].unclean_elections(), 0);

    // `silent` stops heartbeating and is fenced.
    let start = net.now;
    while net.now < start + SESSION + Duration::from_millis(200) {
        for broker in VOTERS.into_iter().filter(|id| *id != silent) {
            net.heartbeat(broker, active, epochs[&broker]);
        }
        net.advance(Duration::from_millis(250));
    }
    let image = net.nodes[&active].image().clone();
    assert!(image.broker(silent).unwrap().fenced);
    for ((topic_id, partition), old) in &led {
        let state = image.partition(topic_id, *partition).unwrap();
        let other = *old.replicas.iter().find(|id| **id != silent).unwrap();
        let expected = match *topic_id == risky {
            true => (other, vec![other]),
            false => (NO_LEADER, vec![silent]),
        };
        assert_eq!((state.leader, state.isr.clone()), expected);
        assert_eq!(state.leader_epoch, old.leader_epoch + 1);
    }
    assert_eq!(net.nodes[&active].unclean_elections(), risky_led as u64);
    for (id, node) in &net.nodes {
        if *id != active {
            assert_eq!(
                node.unclean_elections(),
                0,
                "only the active controller counts"
            );
        }
    }
}
