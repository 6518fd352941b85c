//! The metadata core driven as the active controller would drive it, on a
//! virtual clock: decide, commit (through the codec), apply, assert. No
//! sockets, no sleeps, no Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::config::HostPort;

const SESSION: Duration = Duration::from_millis(1500);
const MS: Duration = Duration::from_millis(1);

pub(crate) fn registration(broker_id: BrokerId, incarnation: u128) -> BrokerRegistration {
    let ip = format!("127.0.0.{}", broker_id.rem_euclid(250) + 1);
    BrokerRegistration {
        broker_id,
        incarnation_id: Uuid::from_u128(incarnation),
        kafka: HostPort {
            host: ip.clone(),
            port: 9092,
        },
        quic: SocketAddr::new(ip.parse().expect("test address"), 9093),
        rack: None,
    }
}

/// The seeds a simulation test (`controller/sim.rs`, `replication/sim.rs`)
/// runs: `count` from `first`, or from `SIM_SEED_BASE + first` and
/// `SIM_SEEDS_SCALE` times as many when those are set (fresh seeds by the
/// thousand: `SIM_SEED_BASE=100000 SIM_SEEDS_SCALE=20`), or only `SIM_SEED`
/// (replaying the failing seed a test printed).
pub(crate) fn seeds(first: u64, count: u64) -> std::ops::Range<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} is a number"))
        })
    };
    if let Some(seed) = var("SIM_SEED") {
        return seed..seed + 1;
    }
    let start = var("SIM_SEED_BASE").unwrap_or(0) + first;
    start..start + count * var("SIM_SEEDS_SCALE").unwrap_or(1)
}

pub(crate) fn declared(brokers: &[(BrokerId, Option<&str>)]) -> Vec<PlacementBroker> {
    brokers
        .iter()
        .map(|(broker_id, rack)| PlacementBroker {
            broker_id: *broker_id,
            rack: rack.map(str::to_string),
        })
        .collect()
}

/// An active controller's view: the image, the session table, a clock.
struct Controller {
    image: MetadataImage,
    sessions: SessionTable,
    now: Instant,
    brokers: Vec<PlacementBroker>,
    next_topic_id: u128,
}

impl Controller {
    fn new(broker_ids: &[BrokerId]) -> Self {
        let brokers: Vec<(BrokerId, Option<&str>)> =
            broker_ids.iter().map(|id| (*id, None)).collect();
        Controller {
            image: MetadataImage::default(),
            sessions: SessionTable::new(SESSION),
            now: Instant::now(),
            brokers: declared(&brokers),
            next_topic_id: 1,
        }
    }

    /// Appends the batch as the log would (through bytes) and applies it.
    fn commit(&mut self, batch: RecordBatch) {
        let bytes = batch.encode().expect("decide writes encodable batches");
        let decoded = RecordBatch::decode(&bytes).expect("our own bytes decode");
        assert_eq!(decoded, batch);
        let index = self.image.applied_index() + 1;
        self.image
            .apply(index, &decoded)
            .expect("decide writes valid batches");
        self.image.check_invariants();
    }

    fn register(&mut self, broker_id: BrokerId, incarnation: u128) -> Result<i64, DecideError> {
        let batch = on_register(
            &self.image,
            &self.sessions,
            self.now,
            &registration(broker_id, incarnation),
        )?;
        self.commit(batch);
        self.sessions.touch(broker_id, self.now);
        let entry = self.image.broker(broker_id).expect("just registered");
        assert!(entry.fenced);
        assert_eq!(entry.broker_epoch, self.image.applied_index() as i64);
        Ok(entry.broker_epoch)
    }

    /// A heartbeat from a broker that has applied the whole log (or not).
    fn heartbeat(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
        caught_up: bool,
    ) -> Result<HeartbeatDecision, DecideError> {
        let applied = self.image.applied_index() as i64;
        let heartbeat = Heartbeat {
            broker_id,
            broker_epoch,
            current_metadata_offset: if caught_up { applied } else { broker_epoch - 1 },
            want_fence: false,
        };
        let decision = on_heartbeat(&self.image, &heartbeat)?;
        self.sessions.touch(broker_id, self.now);
        if let Some(batch) = decision.records.clone() {
            self.commit(batch);
        }
        assert_eq!(
            self.image.broker(broker_id).map(|b| b.fenced),
            Some(decision.fenced)
        );
        Ok(decision)
    }

    /// Moves the clock, fencing every broker whose session ends on the way.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        for broker_id in self.sessions.expired(self.now) {
            if let Some(batch) = on_session_expired(&self.image, broker_id) {
                self.commit(batch);
            }
        }
    }

    fn create(&mut self, name: &str, partitions: i32, replication_factor: i16) -> Uuid {
        let topic_id = Uuid::from_u128(self.next_topic_id);
        self.next_topic_id += 1;
        let topic = NewTopic {
            topic_id,
            name: name.to_string(),
            declared: true,
            settings: BTreeMap::new(),
            partitions,
            replication_factor,
            replicas: None,
        };
        let batch = create_topic(&self.image, &topic, &self.brokers).expect("valid topic");
        self.commit(batch);
        topic_id
    }

    fn partition(&self, topic_id: Uuid, partition: i32) -> PartitionState {
        self.image
            .partition(&topic_id, partition)
            .expect("partition exists")
            .clone()
    }
}

/// (leader, leader_epoch, partition_epoch)
fn leadership(state: &PartitionState) -> (BrokerId, i32, i32) {
    (state.leader, state.leader_epoch, state.partition_epoch)
}

#[test]
fn registered_broker_is_fenced_until_caught_up_then_unfenced_and_elected() {
    let mut controller = Controller::new(&[1]);
    let topic = controller.create("orders", 1, 1);
    assert_eq!(
        leadership(&controller.partition(topic, 0)),
        (NO_LEADER, 0, 0)
    );

    let epoch = controller.register(1, 7).expect("first registration");
    assert_eq!(
        leadership(&controller.partition(topic, 0)),
        (NO_LEADER, 0, 0)
    );

    let behind = controller
        .heartbeat(1, epoch, false)
        .expect("current epoch");
    assert_eq!(
        (behind.records, behind.caught_up, behind.fenced),
        (None, false, true)
    );

    let caught_up = controller.heartbeat(1, epoch, true).expect("current epoch");
    assert!(caught_up.caught_up && !caught_up.fenced);
    assert_eq!(leadership(&controller.partition(topic, 0)), (1, 1, 1));

    let quiet = controller.heartbeat(1, epoch, true).expect("current epoch");
    assert_eq!(
        quiet.records, None,
        "a heartbeat that changes nothing writes nothing"
    );
}

#[test]
fn session_expiry_fences_and_leaves_the_partition_leaderless_at_the_next_epoch() {
    let mut controller = Controller::new(&[1]);
    let topic = controller.create("orders", 1, 1);
    let epoch = controller.register(1, 7).expect("registers");
    controller.heartbeat(1, epoch, true).expect("unfenced");
    assert_eq!(leadership(&controller.partition(topic, 0)), (1, 1, 1));

    // A heartbeat just before the deadline keeps the session (a stalled disk is no death).
    controller.advance(SESSION - MS);
    controller.heartbeat(1, epoch, true).expect("alive");
    controller.advance(SESSION - MS);
    assert!(controller.image.is_unfenced(1));

    controller.advance(MS);
    assert!(!controller.image.is_unfenced(1));
    let state = controller.partition(topic, 0);
    assert_eq!(leadership(&state), (NO_LEADER, 2, 2));
    assert_eq!(
        state.isr,
        vec![1],
        "the last in-sync replica stays in the ISR"
    );
}

#[test]
fn restarted_broker_registers_at_a_new_epoch_and_leads_again_two_epochs_later() {
    let mut controller = Controller::new(&[1]);
    let topic = controller.create("orders", 1, 1);
    let first_epoch = controller.register(1, 7).expect("registers");
    controller
        .heartbeat(1, first_epoch, true)
        .expect("unfenced");
    assert_eq!(controller.partition(topic, 0).leader_epoch, 1);

    controller.advance(SESSION);
    let second_epoch = controller.register(1, 8).expect("the old session is gone");
    assert!(second_epoch > first_epoch);
    controller
        .heartbeat(1, second_epoch, true)
        .expect("unfenced");
    assert_eq!(leadership(&controller.partition(topic, 0)), (1, 3, 3));
}

#[test]
fn restart_before_the_fence_is_written_fences_in_the_same_batch() {
    let mut controller = Controller::new(&[1]);
    let topic = controller.create("orders", 1, 1);
    let first_epoch = controller.register(1, 7).expect("registers");
    controller
        .heartbeat(1, first_epoch, true)
        .expect("unfenced");

    // The session ended but no expiry ran yet: the image still shows broker 1 leading.
    controller.now += SESSION;
    let batch = on_register(
        &controller.image,
        &controller.sessions,
        controller.now,
        &registration(1, 8),
    )
    .expect("the old session is over");
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert!(matches!(
        batch.records[0],
        Record::FenceBroker {
            reason: FenceReason::SessionExpired,
            ..
        }
    ));
    assert!(matches!(batch.records[1], Record::PartitionChange { .. }));
    assert!(matches!(batch.records[2], Record::RegisterBroker(_)));
    controller.commit(batch);
    controller.sessions.touch(1, controller.now);
    assert_eq!(
        leadership(&controller.partition(topic, 0)),
        (NO_LEADER, 2, 2)
    );

    let second_epoch = controller.image.broker(1).expect("registered").broker_epoch;
    controller
        .heartbeat(1, second_epoch, true)
        .expect("unfenced");
    assert_eq!(leadership(&controller.partition(topic, 0)), (1, 3, 3));
}

#[test]
fn another_incarnation_is_refused_while_the_session_lives() {
    let mut controller = Controller::new(&[1]);
    let epoch = controller.register(1, 7).expect("registers");
    controller.heartbeat(1, epoch, true).expect("unfenced");
    let before = controller.image.clone();

    controller.advance(SESSION - MS);
    let refused = controller.register(1, 8);
    assert_eq!(
        refused,
        Err(DecideError::DuplicateBrokerRegistration {
            broker_id: 1,
            existing: Uuid::from_u128(7),
            requested: Uuid::from_u128(8),
        })
    );
    assert_eq!(controller.image, before, "a refusal writes nothing");

    // The same incarnation may register again (a retried request).
    let again = controller.register(1, 7).expect("same incarnation");
    assert!(again > epoch);

    controller.advance(SESSION);
    assert!(
        controller.register(1, 8).is_ok(),
        "once the session ended the new one registers"
    );
}

#[test]
fn requests_from_an_older_broker_epoch_are_refused() {
    let mut controller = Controller::new(&[1]);
    let old_epoch = controller.register(1, 7).expect("registers");
    controller.advance(SESSION);
    let new_epoch = controller.register(1, 8).expect("re-registers");
    assert_eq!(
        controller.heartbeat(1, old_epoch, true),
        Err(DecideError::StaleBrokerEpoch {
            broker_id: 1,
            got: old_epoch,
            current: new_epoch,
        })
    );
    assert!(matches!(
        allocate_producer_ids(&controller.image, 1, old_epoch),
        Err(DecideError::StaleBrokerEpoch { .. })
    ));
    assert_eq!(
        controller.heartbeat(2, 1, true),
        Err(DecideError::BrokerNotRegistered(2))
    );
    assert!(controller.image.broker(1).expect("registered").fenced);
}

#[test]
fn a_broker_asking_to_be_fenced_gives_up_its_leaderships() {
    let mut controller = Controller::new(&[1, 2]);
    let topic = controller.create("orders", 2, 2);
    let one = controller.register(1, 1).expect("registers");
    let two = controller.register(2, 2).expect("registers");
    controller.heartbeat(1, one, true).expect("unfenced");
    controller.heartbeat(2, two, true).expect("unfenced");
    let led_by_one: Vec<i32> = (0..2)
        .filter(|p| controller.partition(topic, *p).leader == 1)
        .collect();
    assert!(!led_by_one.is_empty());

    let heartbeat = Heartbeat {
        broker_id: 1,
        broker_epoch: one,
        current_metadata_offset: controller.image.applied_index() as i64,
        want_fence: true,
    };
    let decision = on_heartbeat(&controller.image, &heartbeat).expect("current epoch");
    assert!(decision.fenced);
    controller.commit(decision.records.expect("fence"));
    for partition in led_by_one {
        let state = controller.partition(topic, partition);
        assert_eq!(state.leader, 2, "the other in-sync replica leads");
        assert_eq!(state.isr, vec![2]);
    }
}

fn counts(placement: &[Vec<BrokerId>], leaders_only: bool) -> BTreeMap<BrokerId, usize> {
    let mut counts = BTreeMap::new();
    for replicas in placement {
        let taken = if leaders_only {
            &replicas[..1]
        } else {
            &replicas[..]
        };
        for id in taken {
            *counts.entry(*id).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn placement_is_balanced_and_spreads_racks() {
    let brokers = declared(&[
        (1, Some("a")),
        (2, Some("a")),
        (3, Some("b")),
        (4, Some("b")),
        (5, Some("c")),
        (6, Some("c")),
    ]);
    let rack_of: BTreeMap<BrokerId, &str> =
        [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")].into();
    let placement = place_partitions(&brokers, 0, 12, 3, 0).expect("places");
    assert_eq!(placement.len(), 12);
    assert!(
        counts(&placement, true).values().all(|n| *n == 2),
        "{placement:?}"
    );
    assert!(
        counts(&placement, false).values().all(|n| *n == 6),
        "{placement:?}"
    );
    for replicas in &placement {
        let racks: BTreeSet<&str> = replicas.iter().map(|id| rack_of[id]).collect();
        assert_eq!(racks.len(), 3, "one replica per rack: {replicas:?}");
    }

    // Uneven racks: every partition still holds both racks.
    let uneven = declared(&[
        (1, Some("a")),
        (2, Some("a")),
        (3, Some("a")),
        (4, Some("b")),
    ]);
    for replicas in place_partitions(&uneven, 0, 8, 2, 0).expect("places") {
        assert!(replicas.contains(&4), "{replicas:?}");
    }
}

#[test]
fn placement_ignores_declaration_and_registration_order() {
    let forward = declared(&[
        (1, Some("a")),
        (2, Some("b")),
        (3, Some("a")),
        (4, Some("b")),
    ]);
    let mut backward = forward.clone();
    backward.reverse();
    assert_eq!(
        place_partitions(&forward, 0, 8, 2, 3),
        place_partitions(&backward, 0, 8, 2, 3)
    );

    // Which brokers are registered changes who leads now, not where replicas go.
    let mut registered_first = Controller::new(&[1, 2, 3]);
    let mut registered_none = Controller::new(&[1, 2, 3]);
    for id in [3, 1] {
        let epoch = registered_first
            .register(id, id as u128)
            .expect("registers");
        registered_first
            .heartbeat(id, epoch, true)
            .expect("unfenced");
    }
    let a = registered_first.create("t", 6, 2);
    let b = registered_none.create("t", 6, 2);
    for partition in 0..6 {
        assert_eq!(
            registered_first.partition(a, partition).replicas,
            registered_none.partition(b, partition).replicas
        );
    }
}

#[test]
fn adding_a_broker_moves_no_partition() {
    let mut controller = Controller::new(&[1, 2, 3]);
    for id in [1, 2, 3] {
        let epoch = controller.register(id, id as u128).expect("registers");
        controller.heartbeat(id, epoch, true).expect("unfenced");
    }
    let topic = controller.create("orders", 6, 2);
    let before: Vec<PartitionState> = (0..6).map(|p| controller.partition(topic, p)).collect();

    controller.brokers = declared(&[(1, None), (2, None), (3, None), (4, None)]);
    let epoch = controller.register(4, 4).expect("registers");
    controller.heartbeat(4, epoch, true).expect("unfenced");
    let batch =
        add_partitions(&controller.image, topic, 10, &controller.brokers, None).expect("adds");
    assert!(
        batch
            .records
            .iter()
            .all(|r| matches!(r, Record::CreatePartition { .. }))
    );
    controller.commit(batch);

    let after: Vec<PartitionState> = (0..6).map(|p| controller.partition(topic, p)).collect();
    assert_eq!(before, after);
    let new_replicas: BTreeSet<BrokerId> = (6..10)
        .flat_map(|p| controller.partition(topic, p).replicas)
        .collect();
    assert!(
        new_replicas.contains(&4),
        "new partitions use the new broker"
    );
}

#[test]
fn explicit_replicas_are_honoured_and_checked() {
    let mut controller = Controller::new(&[1, 2, 3]);
    let mut topic = NewTopic {
        topic_id: Uuid::from_u128(99),
        name: "placed".into(),
        declared: true,
        settings: BTreeMap::new(),
        partitions: 2,
        replication_factor: 2,
        replicas: Some(vec![vec![3, 1], vec![2, 3]]),
    };
    let batch = create_topic(&controller.image, &topic, &controller.brokers).expect("valid");
    controller.commit(batch);
    assert_eq!(controller.partition(topic.topic_id, 0).replicas, vec![3, 1]);
    assert_eq!(controller.partition(topic.topic_id, 1).replicas, vec![2, 3]);

    topic.name = "undeclared".into();
    topic.topic_id = Uuid::from_u128(100);
    topic.replicas = Some(vec![vec![1, 9], vec![2]]);
    assert!(matches!(
        create_topic(&controller.image, &topic, &controller.brokers),
        Err(DecideError::Placement(PlacementError::InvalidReplicaList {
            partition: 0,
            ..
        }))
    ));
    topic.replicas = Some(vec![vec![1]]);
    assert!(matches!(
        create_topic(&controller.image, &topic, &controller.brokers),
        Err(DecideError::Placement(
            PlacementError::ReplicaListCount { .. }
        ))
    ));
}

#[test]
fn topics_created_one_after_another_do_not_all_lead_on_one_broker() {
    let mut controller = Controller::new(&[1, 2, 3]);
    let leaders: BTreeSet<BrokerId> = (0..3)
        .map(|n| {
            let topic = controller.create(&format!("t{n}"), 1, 1);
            controller.partition(topic, 0).replicas[0]
        })
        .collect();
    assert_eq!(leaders.len(), 3);
}

#[test]
fn producer_id_blocks_only_go_up() {
    let mut controller = Controller::new(&[1, 2]);
    let one = controller.register(1, 1).expect("registers");
    let two = controller.register(2, 2).expect("registers");
    let mut firsts = Vec::new();
    for (broker_id, epoch) in [(1, one), (2, two), (1, one)] {
        let batch = allocate_producer_ids(&controller.image, broker_id, epoch).expect("allocates");
        let Record::ProducerIdBlock { first_id, .. } = batch.records[0] else {
            panic!("not a block: {batch:?}");
        };
        firsts.push(first_id);
        controller.commit(batch);
    }
    assert_eq!(firsts, vec![0, 1000, 2000]);
    assert_eq!(controller.image.next_producer_id(), 3000);

    let backwards = RecordBatch::new(vec![Record::ProducerIdBlock {
        broker_id: 1,
        broker_epoch: one,
        first_id: 2999,
        size: 10,
    }]);
    let index = controller.image.applied_index() + 1;
    let refused = controller
        .image
        .apply(index, &backwards)
        .expect_err("goes back");
    assert!(
        matches!(refused.reason, ApplyReason::InvalidProducerIdBlock { .. }),
        "{refused}"
    );
}

#[test]
fn sessions_expire_in_deadline_order_and_restart_at_activation() {
    let t0 = Instant::now();
    let mut sessions = SessionTable::new(SESSION);
    sessions.touch(1, t0);
    sessions.touch(2, t0 + MS);
    sessions.touch(1, t0 + 2 * MS);
    sessions.touch(1, t0); // an older arrival never moves the deadline back
    assert_eq!(sessions.poll_timeout(), Some(t0 + MS + SESSION));
    assert!(sessions.is_alive(2, t0 + SESSION));
    assert!(!sessions.is_alive(2, t0 + MS + SESSION));
    assert!(sessions.expired(t0 + SESSION).is_empty());
    assert_eq!(sessions.expired(t0 + 2 * MS + SESSION), vec![2, 1]);
    assert!(sessions.is_empty() && sessions.poll_timeout().is_none());

    sessions.touch(3, t0);
    let later = t0 + 10 * SESSION;
    sessions.activate(later, [1, 2]);
    assert_eq!(sessions.len(), 2);
    assert!(!sessions.is_alive(3, later));
    assert_eq!(sessions.poll_timeout(), Some(later + SESSION));
    sessions.remove(1);
    assert_eq!(sessions.expired(later + SESSION), vec![2]);
}

/// An image with broker 1 unfenced, leading `t-0` at leader epoch 1.
fn led_image() -> (Controller, Uuid, i64) {
    let mut controller = Controller::new(&[1, 2]);
    let topic = controller.create("t", 1, 1);
    let epoch = controller.register(1, 1).expect("registers");
    controller.heartbeat(1, epoch, true).expect("unfenced");
    assert_eq!(controller.partition(topic, 0).leader, 1);
    (controller, topic, epoch)
}

fn refusal(image: &MetadataImage, records: Vec<Record>) -> ApplyReason {
    let before = image.clone();
    let mut image = image.clone();
    let index = image.applied_index() + 1;
    let error = image
        .apply(index, &RecordBatch::new(records))
        .expect_err("refused");
    assert_eq!(image, before, "a refused batch changes nothing");
    error.reason
}

#[test]
fn apply_refuses_records_that_break_the_rules() {
    let (controller, topic, epoch) = led_image();
    let image = &controller.image;
    let state = controller.partition(topic, 0);
    let change = |state: PartitionState| Record::PartitionChange {
        topic_id: topic,
        partition: 0,
        state,
    };
    let fence = Record::FenceBroker {
        broker_id: 1,
        broker_epoch: epoch,
        reason: FenceReason::SessionExpired,
    };

    let reason = refusal(image, vec![Record::RegisterBroker(registration(1, 5))]);
    assert_eq!(reason, ApplyReason::RegisterUnfenced(1));
    let reason = refusal(
        image,
        vec![Record::UnfenceBroker {
            broker_id: 1,
            broker_epoch: epoch,
        }],
    );
    assert_eq!(reason, ApplyReason::NotFenced(1));
    let reason = refusal(
        image,
        vec![Record::FenceBroker {
            broker_id: 1,
            broker_epoch: epoch - 1,
            reason: FenceReason::Requested,
        }],
    );
    assert!(
        matches!(reason, ApplyReason::BrokerEpochMismatch { .. }),
        "{reason}"
    );
    // A fence that leaves the broker leading.
    let reason = refusal(image, vec![fence.clone()]);
    assert!(
        matches!(reason, ApplyReason::FencedLeader { broker_id: 1, .. }),
        "{reason}"
    );

    let leaderless = |leader_epoch, partition_epoch| PartitionState {
        leader: NO_LEADER,
        leader_epoch,
        partition_epoch,
        ..state.clone()
    };
    // The leader changed, so both epochs go up by one, no more and no less.
    for (leader_epoch, partition_epoch) in [(1, 2), (3, 2), (2, 1), (2, 3)] {
        let reason = refusal(
            image,
            vec![
                fence.clone(),
                change(leaderless(leader_epoch, partition_epoch)),
            ],
        );
        assert!(matches!(reason, ApplyReason::EpochRule { .. }), "{reason}");
    }
    let mut ok = image.clone();
    ok.apply(
        image.applied_index() + 1,
        &RecordBatch::new(vec![fence.clone(), change(leaderless(2, 2))]),
    )
    .expect("fence and move leadership together");

    let same = PartitionState {
        partition_epoch: state.partition_epoch + 1,
        ..state.clone()
    };
    assert!(matches!(
        refusal(image, vec![change(same)]),
        ApplyReason::NoChange { .. }
    ));
    let outside = PartitionState {
        isr: vec![1, 2],
        partition_epoch: 2,
        ..state.clone()
    };
    assert!(matches!(
        refusal(image, vec![change(outside)]),
        ApplyReason::InvalidPartition { .. }
    ));
    let not_in_isr = PartitionState {
        replicas: vec![1, 2],
        leader: 2,
        leader_epoch: 2,
        partition_epoch: 2,
        ..state.clone()
    };
    assert!(matches!(
        refusal(image, vec![change(not_in_isr)]),
        ApplyReason::InvalidPartition { .. }
    ));
    // Broker 2 is declared but not registered: it cannot lead.
    let unregistered = PartitionState {
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader: 2,
        leader_epoch: 2,
        partition_epoch: 2,
        adding: Vec::new(),
        removing: Vec::new(),
    };
    assert!(matches!(
        refusal(image, vec![change(unregistered)]),
        ApplyReason::LeaderNotEligible { leader: 2, .. }
    ));
}

#[test]
fn apply_refuses_bad_topics_and_indexes_and_applies_nothing_of_a_bad_batch() {
    let (controller, topic, _) = led_image();
    let image = &controller.image;
    let create = |name: &str, id: u128, key: &str| Record::CreateTopic {
        topic_id: Uuid::from_u128(id),
        name: name.to_string(),
        declared: false,
        settings: [(key.to_string(), "1".to_string())].into(),
    };
    assert_eq!(
        refusal(image, vec![create("t", 50, "retention.ms")]),
        ApplyReason::DuplicateTopicName("t".into())
    );
    assert!(matches!(
        refusal(image, vec![create("u", 50, "no.such.key")]),
        ApplyReason::UnknownConfigKey(_)
    ));
    assert!(matches!(
        refusal(image, vec![create("bad/name", 50, "retention.ms")]),
        ApplyReason::InvalidTopicName { .. }
    ));
    assert_eq!(
        refusal(image, vec![create("u", 1, "retention.ms")]),
        ApplyReason::DuplicateTopicId(Uuid::from_u128(1))
    );
    // A good record followed by a bad one: neither applies.
    let reason = refusal(
        image,
        vec![
            create("u", 50, "retention.ms"),
            Record::DeleteTopic {
                topic_id: Uuid::from_u128(77),
            },
        ],
    );
    assert_eq!(reason, ApplyReason::UnknownTopic(Uuid::from_u128(77)));
    let gap = Record::CreatePartition {
        topic_id: topic,
        partition: 2,
        state: controller.partition(topic, 0),
    };
    assert!(matches!(
        refusal(image, vec![gap]),
        ApplyReason::PartitionOutOfOrder { expected: 1, .. }
    ));
    let spec = Record::AppliedSpec {
        hash: "XYZ".into(),
        text: String::new(),
    };
    assert!(matches!(
        refusal(image, vec![spec]),
        ApplyReason::InvalidSpecHash(_)
    ));

    let mut copy = image.clone();
    let delete = RecordBatch::new(vec![Record::DeleteTopic { topic_id: topic }]);
    let stale = copy
        .apply(image.applied_index(), &delete)
        .expect_err("same index");
    assert!(matches!(
        stale.reason,
        ApplyReason::IndexNotIncreasing { .. }
    ));
    assert!(
        copy.apply(image.applied_index() + 5, &RecordBatch::default())
            .is_err()
    );
    copy.apply(image.applied_index() + 5, &delete)
        .expect("indexes may skip (Raft no-ops)");
    assert!(copy.topic_by_name("t").is_none());
    copy.check_invariants();
}

fn every_kind() -> RecordBatch {
    let topic_id = Uuid::from_u128(0xfeed);
    let state = PartitionState {
        replicas: vec![1, 2, 3],
        isr: vec![1, 3],
        leader: 3,
        leader_epoch: 4,
        partition_epoch: 9,
        adding: Vec::new(),
        removing: Vec::new(),
    };
    let mut registration = registration(2, 0xabc);
    registration.rack = Some("rack-ä".into());
    registration.quic = "[fe80::1%3]:9093".parse().expect("v6 address");
    RecordBatch::new(vec![
        Record::RegisterBroker(registration),
        Record::FenceBroker {
            broker_id: 2,
            broker_epoch: 77,
            reason: FenceReason::ControlledShutdown,
        },
        Record::UnfenceBroker {
            broker_id: 2,
            broker_epoch: 77,
        },
        Record::UnregisterBroker {
            broker_id: 2,
            broker_epoch: 77,
        },
        Record::CreateTopic {
            topic_id,
            name: "orders".into(),
            declared: true,
            settings: [("retention.ms".to_string(), "1000".to_string())].into(),
        },
        Record::CreatePartition {
            topic_id,
            partition: 0,
            state: state.clone(),
        },
        Record::PartitionChange {
            topic_id,
            partition: 0,
            state: PartitionState {
                replicas: vec![1, 2, 3, 4],
                adding: vec![4],
                removing: vec![1],
                ..state
            },
        },
        Record::TopicConfig {
            topic_id,
            key: "retention.ms".into(),
            value: None,
        },
        Record::DeleteTopic { topic_id },
        Record::ProducerIdBlock {
            broker_id: 2,
            broker_epoch: 77,
            first_id: 5000,
            size: 1000,
        },
        Record::AppliedSpec {
            hash: "0123456789abcdef".into(),
            text: "[cluster]\nname = \"x\"\n".into(),
        },
    ])
}

#[test]
fn every_record_kind_round_trips() {
    let batch = every_kind();
    let bytes = batch.encode().expect("encodes");
    assert_eq!(RecordBatch::decode(&bytes), Ok(batch));
}

/// Partition records of version 1 had no reassignment lists: they still
/// read, as no reassignment under way.
#[test]
fn a_version_1_partition_record_reads_as_no_reassignment() {
    let change = Record::PartitionChange {
        topic_id: Uuid::from_u128(7),
        partition: 2,
        state: PartitionState {
            replicas: vec![1, 2],
            isr: vec![1],
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 5,
            adding: Vec::new(),
            removing: Vec::new(),
        },
    };
    let batch = RecordBatch::new(vec![change]);
    let bytes = batch.encode().expect("encodes");
    assert_eq!(bytes[12], 2, "written at version 2");
    // One record: kind at 11, version at 12, body length at 13..17; the
    // two empty lists (2 bytes each) end the body.
    let mut old = bytes[..bytes.len() - 4].to_vec();
    old[12] = 1;
    let body = u32::from_be_bytes(old[13..17].try_into().unwrap()) - 4;
    old[13..17].copy_from_slice(&body.to_be_bytes());
    assert_eq!(RecordBatch::decode(&with_crc(old)), Ok(batch));
}

#[test]
fn any_flipped_or_cut_byte_is_refused() {
    let bytes = every_kind().encode().expect("encodes");
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        assert!(RecordBatch::decode(&flipped).is_err(), "flip at {at}");
        assert!(RecordBatch::decode(&bytes[..at]).is_err(), "cut at {at}");
    }
}

/// Re-stamps the CRC so a test reaches the checks behind it.
pub(super) fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 11 {
        let crc = crc32c::crc32c(&bytes[9..]);
        bytes[5..9].copy_from_slice(&crc.to_be_bytes());
    }
    bytes
}

#[test]
fn malformed_batches_name_what_is_wrong() {
    let bytes = every_kind().encode().expect("encodes");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        RecordBatch::decode(&with_crc(longer)),
        Err(CodecError::TrailingBytes { .. })
    ));
    let mut unknown = bytes.clone();
    unknown[11] = 200; // the first record's kind
    assert_eq!(
        RecordBatch::decode(&with_crc(unknown)),
        Err(CodecError::UnknownKind(200))
    );
    let mut version = bytes.clone();
    version[12] = 9;
    assert!(matches!(
        RecordBatch::decode(&with_crc(version)),
        Err(CodecError::UnsupportedRecordVersion { found: 9, .. })
    ));
    let mut count = bytes.clone();
    count[9..11].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(matches!(
        RecordBatch::decode(&with_crc(count)),
        Err(CodecError::RecordCount { .. })
    ));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        RecordBatch::decode(&magic),
        Err(CodecError::BadMagic { .. })
    ));
    let mut crc = bytes;
    crc[20] ^= 1;
    assert!(matches!(
        RecordBatch::decode(&crc),
        Err(CodecError::CrcMismatch { .. })
    ));
    let huge = vec![0u8; records::BATCH_BYTES_MAX + 1];
    assert!(matches!(
        RecordBatch::decode(&huge),
        Err(CodecError::BatchTooLarge { .. })
    ));
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    assert!(matches!(
        RecordBatch::default().encode(),
        Err(CodecError::RecordCount { count: 0, .. })
    ));
    let long_name = Record::CreateTopic {
        topic_id: Uuid::from_u128(1),
        name: "x".repeat(records::TOPIC_NAME_BYTES_MAX + 1),
        declared: false,
        settings: BTreeMap::new(),
    };
    let error = RecordBatch::new(vec![long_name])
        .encode()
        .expect_err("too long");
    assert_eq!(
        error.to_string(),
        "topic name is 250 long; the limit is 249"
    );
    let big_spec = Record::AppliedSpec {
        hash: "0123456789abcdef".into(),
        text: "#".repeat(records::SPEC_TEXT_BYTES_MAX),
    };
    let two_specs = RecordBatch::new(vec![big_spec.clone(), big_spec]);
    assert!(matches!(
        two_specs.encode(),
        Err(CodecError::BatchTooLarge { .. })
    ));
}
