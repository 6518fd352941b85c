//! Property tests: random controller histories keep every invariant, any
//! batch survives its codec, and neither garbage bytes nor garbage records
//! make the core panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use uuid::Uuid;

use super::alter_partition::{AlterPartitionRequest, decide_alter_partition};
use super::tests::{declared, registration, with_crc};
use super::*;
use crate::config::HostPort;

const SESSION: Duration = Duration::from_millis(1500);
const BROKERS: i32 = 4;
const TOPIC_IDS: u128 = 6;

// ---------------------------------------------------------------- strategies

fn arb_state() -> impl Strategy<Value = PartitionState> {
    let ids = proptest::collection::vec(-1i32..6, 0..5);
    (ids.clone(), ids, -1i32..6, -1i32..4, -1i32..4).prop_map(
        |(replicas, isr, leader, leader_epoch, partition_epoch)| PartitionState {
            replicas,
            isr,
            leader,
            leader_epoch,
            partition_epoch,
            adding: Vec::new(),
            removing: Vec::new(),
        },
    )
}

fn arb_registration() -> impl Strategy<Value = BrokerRegistration> {
    (
        -1i32..BROKERS + 1,
        0u128..4,
        "[a-z0-9.-]{0,24}",
        any::<u16>(),
        any::<SocketAddr>(),
        proptest::option::of("\\PC{0,12}"),
    )
        .prop_map(
            |(broker_id, incarnation, host, port, quic, rack)| BrokerRegistration {
                broker_id,
                incarnation_id: Uuid::from_u128(incarnation),
                kafka: HostPort { host, port },
                quic,
                rack,
            },
        )
}

fn arb_settings() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        Just("retention.ms".to_string()),
        Just("cleanup.policy".to_string()),
        "[a-z.]{1,12}",
    ];
    proptest::collection::btree_map(key, "\\PC{0,8}", 0..3)
}

/// Records with small ids, so that many of them hit what the image holds.
pub(super) fn arb_record() -> impl Strategy<Value = Record> {
    let broker = -1i32..BROKERS + 1;
    let epoch = 0i64..12;
    let topic = (0u128..TOPIC_IDS).prop_map(Uuid::from_u128);
    let partition = -1i32..4;
    prop_oneof![
        arb_registration().prop_map(Record::RegisterBroker),
        (broker.clone(), epoch.clone(), 0u8..3).prop_map(|(broker_id, broker_epoch, reason)| {
            let reason = [
                FenceReason::SessionExpired,
                FenceReason::ControlledShutdown,
                FenceReason::Requested,
            ][reason as usize];
            Record::FenceBroker {
                broker_id,
                broker_epoch,
                reason,
            }
        }),
        (broker.clone(), epoch.clone()).prop_map(|(broker_id, broker_epoch)| {
            Record::UnfenceBroker {
                broker_id,
                broker_epoch,
            }
        }),
        (broker.clone(), epoch.clone()).prop_map(|(broker_id, broker_epoch)| {
            Record::UnregisterBroker {
                broker_id,
                broker_epoch,
            }
        }),
        (
            topic.clone(),
            "[a-z_.-]{0,6}",
            any::<bool>(),
            arb_settings()
        )
            .prop_map(|(topic_id, name, declared, settings)| {
                Record::CreateTopic {
                    topic_id,
                    name,
                    declared,
                    settings,
                }
            }),
        (topic.clone(), partition.clone(), arb_state()).prop_map(|(topic_id, partition, state)| {
            Record::CreatePartition {
                topic_id,
                partition,
                state,
            }
        }),
        (topic.clone(), partition, arb_state()).prop_map(|(topic_id, partition, state)| {
            Record::PartitionChange {
                topic_id,
                partition,
                state,
            }
        }),
        (
            topic.clone(),
            "[a-z.]{1,15}",
            proptest::option::of("[0-9]{1,4}")
        )
            .prop_map(|(topic_id, key, value)| Record::TopicConfig {
                topic_id,
                key,
                value
            }),
        topic.prop_map(|topic_id| Record::DeleteTopic { topic_id }),
        (broker, epoch, -5i64..5000, -2i32..2000).prop_map(
            |(broker_id, broker_epoch, first_id, size)| {
                Record::ProducerIdBlock {
                    broker_id,
                    broker_epoch,
                    first_id,
                    size,
                }
            }
        ),
        ("[0-9a-fA-F]{15,17}", "\\PC{0,40}")
            .prop_map(|(hash, text)| Record::AppliedSpec { hash, text }),
    ]
}

/// What the active controller may be asked to do.
#[derive(Debug, Clone)]
pub(super) enum Action {
    Register {
        broker: BrokerId,
        incarnation: u128,
    },
    Heartbeat {
        broker: BrokerId,
        stale: bool,
        caught_up: bool,
        want_fence: bool,
    },
    Advance {
        ms: u64,
    },
    Create {
        partitions: i32,
        replication_factor: i16,
        /// Sets `unclean.leader.election.enable`.
        unclean: bool,
    },
    /// The leader asks for itself plus the replicas `keep` picks (a bit
    /// per replica), at the current epochs or a stale partition epoch.
    AlterIsr {
        topic: u128,
        partition: i32,
        keep: u8,
        stale: bool,
    },
    AddPartitions {
        topic: u128,
        extra: i32,
    },
    Allocate {
        broker: BrokerId,
    },
}

pub(super) fn arb_action() -> impl Strategy<Value = Action> {
    let broker = 0..BROKERS;
    prop_oneof![
        3 => (broker.clone(), 0u128..3).prop_map(|(broker, incarnation)| Action::Register { broker, incarnation }),
        6 => (broker.clone(), prop::bool::weighted(0.1), prop::bool::weighted(0.8), prop::bool::weighted(0.1))
            .prop_map(|(broker, stale, caught_up, want_fence)| Action::Heartbeat { broker, stale, caught_up, want_fence }),
        2 => (0u64..2000).prop_map(|ms| Action::Advance { ms }),
        2 => (1i32..5, 1i16..4, prop::bool::weighted(0.4)).prop_map(|(partitions, replication_factor, unclean)| Action::Create { partitions, replication_factor, unclean }),
        3 => (1u128..5, 0i32..4, any::<u8>(), prop::bool::weighted(0.1))
            .prop_map(|(topic, partition, keep, stale)| Action::AlterIsr { topic, partition, keep, stale }),
        1 => (1u128..5, 1i32..3).prop_map(|(topic, extra)| Action::AddPartitions { topic, extra }),
        1 => broker.prop_map(|broker| Action::Allocate { broker }),
    ]
}

// ------------------------------------------------------------------- model

pub(super) struct Run {
    pub(super) image: MetadataImage,
    /// Every batch committed, in order: the log the image was built from.
    pub(super) log: Vec<RecordBatch>,
    sessions: SessionTable,
    now: Instant,
    brokers: Vec<PlacementBroker>,
    topics_created: u128,
}

impl Run {
    pub(super) fn new() -> Self {
        Run {
            image: MetadataImage::default(),
            log: Vec::new(),
            sessions: SessionTable::new(SESSION),
            now: Instant::now(),
            brokers: declared(&[(0, Some("a")), (1, Some("a")), (2, Some("b")), (3, None)]),
            topics_created: 0,
        }
    }

    /// The batch the action leads to, if any (expiries are committed here).
    pub(super) fn decide(&mut self, action: &Action) -> Vec<RecordBatch> {
        match *action {
            Action::Register {
                broker,
                incarnation,
            } => {
                let result = on_register(
                    &self.image,
                    &self.sessions,
                    self.now,
                    &registration(broker, incarnation),
                );
                if let Err(error) = &result {
                    assert!(
                        matches!(error, DecideError::DuplicateBrokerRegistration { .. }),
                        "{error}"
                    );
                    assert!(self.sessions.is_alive(broker, self.now));
                }
                result.ok().into_iter().collect()
            }
            Action::Heartbeat {
                broker,
                stale,
                caught_up,
                want_fence,
            } => self.heartbeat(broker, stale, caught_up, want_fence),
            Action::Advance { ms } => {
                // Each expiry is decided on the image the previous one left.
                self.now += Duration::from_millis(ms);
                for broker in self.sessions.expired(self.now) {
                    if let Some(batch) = on_session_expired(&self.image, broker) {
                        self.commit(batch);
                    }
                }
                Vec::new()
            }
            Action::Create {
                partitions,
                replication_factor,
                unclean,
            } => {
                self.topics_created += 1;
                let settings = match unclean {
                    true => [(UNCLEAN_ELECTION_KEY.to_string(), "true".to_string())].into(),
                    false => BTreeMap::new(),
                };
                let topic = NewTopic {
                    topic_id: Uuid::from_u128(self.topics_created),
                    name: format!("t{}", self.topics_created),
                    declared: true,
                    settings,
                    partitions,
                    replication_factor,
                    replicas: None,
                };
                let result = create_topic(&self.image, &topic, &self.brokers);
                result.ok().into_iter().collect()
            }
            Action::AlterIsr {
                topic,
                partition,
                keep,
                stale,
            } => self.alter_isr(Uuid::from_u128(topic), partition, keep, stale),
            Action::AddPartitions { topic, extra } => {
                let topic_id = Uuid::from_u128(topic);
                let Some(entry) = self.image.topic(&topic_id) else {
                    return Vec::new();
                };
                let total = entry.partitions.len() as i32 + extra;
                vec![
                    add_partitions(&self.image, topic_id, total, &self.brokers, None)
                        .expect("adds"),
                ]
            }
            Action::Allocate { broker } => {
                let Some(epoch) = self.image.broker(broker).map(|b| b.broker_epoch) else {
                    return Vec::new();
                };
                vec![allocate_producer_ids(&self.image, broker, epoch).expect("allocates")]
            }
        }
    }

    fn alter_isr(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        keep: u8,
        stale: bool,
    ) -> Vec<RecordBatch> {
        let Some(state) = self.image.partition(&topic_id, partition) else {
            return Vec::new();
        };
        let Some(leader) = self.image.broker(state.leader) else {
            return Vec::new(); // leaderless
        };
        let mut isr = vec![state.leader];
        isr.extend(
            state
                .replicas
                .iter()
                .enumerate()
                .filter(|(at, id)| keep & (1 << at) != 0 && **id != state.leader)
                .map(|(_, id)| *id),
        );
        let request = AlterPartitionRequest {
            broker_id: state.leader,
            broker_epoch: leader.broker_epoch,
            topic_id,
            partition,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch - i32::from(stale),
            isr,
        };
        match decide_alter_partition(&self.image, &request) {
            Ok(decision) => {
                assert!(!stale);
                decision.records.into_iter().collect()
            }
            Err(DecideError::StalePartitionEpoch { .. }) if stale => Vec::new(),
            Err(DecideError::IneligibleReplica { broker_id, .. }) => {
                assert!(!self.image.is_unfenced(broker_id));
                Vec::new()
            }
            Err(error) => panic!("{error}"),
        }
    }

    fn heartbeat(
        &mut self,
        broker: BrokerId,
        stale: bool,
        caught_up: bool,
        want_fence: bool,
    ) -> Vec<RecordBatch> {
        let Some(entry) = self.image.broker(broker) else {
            return Vec::new();
        };
        let broker_epoch = entry.broker_epoch - i64::from(stale);
        let applied = self.image.applied_index() as i64;
        let heartbeat = Heartbeat {
            broker_id: broker,
            broker_epoch,
            current_metadata_offset: if caught_up {
                applied
            } else {
                entry.broker_epoch - 1
            },
            want_fence,
        };
        match on_heartbeat(&self.image, &heartbeat) {
            Ok(decision) => {
                assert!(!stale);
                self.sessions.touch(broker, self.now);
                decision.records.into_iter().collect()
            }
            Err(error) => {
                assert!(stale, "{error}");
                Vec::new()
            }
        }
    }

    /// Commits through the codec and checks the rules across the change.
    pub(super) fn commit(&mut self, batch: RecordBatch) {
        let bytes = batch.encode().expect("decide writes encodable batches");
        assert_eq!(RecordBatch::decode(&bytes).as_ref(), Ok(&batch));
        let before = self.image.clone();
        let index = self.image.applied_index() + 1;
        if let Err(error) = self.image.apply(index, &batch) {
            panic!("decide wrote a batch the image refuses: {error}\n{batch:#?}");
        }
        self.image.check_invariants();
        let unclean = check_transition(&before, &self.image);
        assert_eq!(unclean_elections(&before, &batch).len(), unclean);
        self.log.push(batch.clone());
        for record in &batch.records {
            if let Record::RegisterBroker(registration) = record {
                self.sessions.touch(registration.broker_id, self.now);
            }
        }
    }
}

/// Epoch rules between two consecutive images; an election takes the
/// first eligible ISR member (an unclean one makes its leader the ISR);
/// no partition is left without a leader while an unfenced broker is in
/// its ISR, or (where the topic allows unclean elections) its replicas.
/// Returns how many leaders came from outside the ISR.
fn check_transition(before: &MetadataImage, after: &MetadataImage) -> usize {
    let mut unclean = 0;
    for old_topic in before.topics() {
        let Some(new_topic) = after.topic(&old_topic.topic_id) else {
            continue;
        };
        for (old, new) in old_topic.partitions.iter().zip(&new_topic.partitions) {
            if old == new {
                continue;
            }
            assert_eq!(new.replicas, old.replicas, "decide never reassigns");
            assert_eq!(new.partition_epoch, old.partition_epoch + 1);
            assert_eq!(
                new.leader_epoch,
                old.leader_epoch + i32::from(new.leader != old.leader)
            );
            if new.leader != old.leader {
                assert_eq!(
                    new.leader,
                    elect_leader(&new.replicas, &new.isr, |id| after.is_unfenced(id))
                );
            }
            // A preferred replica its leader brought back into the ISR
            // takes over at once: vouched for by the old leader, not unclean.
            let vouched = old.leader != NO_LEADER && new.isr.contains(&old.leader);
            if new.leader != NO_LEADER && !old.isr.contains(&new.leader) && !vouched {
                assert_eq!(
                    new.isr,
                    vec![new.leader],
                    "an unclean leader is alone in the ISR"
                );
                assert_eq!(
                    new_topic
                        .settings
                        .get(UNCLEAN_ELECTION_KEY)
                        .map(String::as_str),
                    Some("true"),
                    "an unclean election where the topic does not allow it"
                );
                unclean += 1;
            }
        }
    }
    for topic in after.topics() {
        let allows_unclean = topic.settings.contains_key(UNCLEAN_ELECTION_KEY);
        for state in &topic.partitions {
            if state.leader == NO_LEADER {
                let candidates = match allows_unclean {
                    true => &state.replicas,
                    false => &state.isr,
                };
                assert!(
                    candidates.iter().all(|id| !after.is_unfenced(*id)),
                    "{state:?} could have a leader"
                );
            }
        }
    }
    for broker in before.brokers() {
        if let Some(now) = after.broker(broker.registration.broker_id) {
            assert!(now.broker_epoch >= broker.broker_epoch);
        }
    }
    assert!(after.next_producer_id() >= before.next_producer_id());
    unclean
}

// ------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every batch decide writes applies, keeps every invariant and the
    /// epoch rules, and round-trips through its bytes.
    #[test]
    fn controller_histories_keep_every_invariant(actions in proptest::collection::vec(arb_action(), 1..60)) {
        let mut run = Run::new();
        for action in &actions {
            for batch in run.decide(action) {
                run.commit(batch);
            }
        }
        run.image.check_invariants();
    }

    #[test]
    fn any_batch_round_trips(records in proptest::collection::vec(arb_record(), 1..24)) {
        let batch = RecordBatch::new(records);
        let bytes = batch.encode().expect("within limits");
        prop_assert_eq!(RecordBatch::decode(&bytes), Ok(batch));
    }

    /// Random bytes, random bytes behind a valid header and CRC, and cut or
    /// mutated encodings: decode answers, never panics.
    #[test]
    fn decoding_garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        records in proptest::collection::vec(arb_record(), 1..6),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let _ = RecordBatch::decode(&bytes);
        let mut framed = b"SLMB\x01\0\0\0\0".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = RecordBatch::decode(&with_crc(framed));

        let valid = RecordBatch::new(records).encode().expect("within limits");
        let at = cut.index(valid.len());
        prop_assert!(RecordBatch::decode(&valid[..at]).is_err());
        let mut mutated = valid.clone();
        for (index, byte) in flips {
            let at = index.index(mutated.len());
            mutated[at] = byte;
        }
        if let Ok(batch) = RecordBatch::decode(&with_crc(mutated)) {
            // Whatever decodes must encode back to a batch that decodes the same.
            let again = batch.encode().expect("decoded batches are within limits");
            prop_assert_eq!(RecordBatch::decode(&again), Ok(batch));
        }
    }

    /// Records from a corrupt or hostile log are refused, never panic, and
    /// leave an image whose invariants hold.
    #[test]
    fn applying_arbitrary_records_never_breaks_the_image(
        setup in proptest::collection::vec(arb_action(), 0..20),
        batches in proptest::collection::vec(proptest::collection::vec(arb_record(), 1..4), 1..30),
    ) {
        let mut run = Run::new();
        for action in &setup {
            for batch in run.decide(action) {
                run.commit(batch);
            }
        }
        for records in batches {
            let before = run.image.clone();
            let index = run.image.applied_index() + 1;
            if run.image.apply(index, &RecordBatch::new(records)).is_err() {
                prop_assert_eq!(&run.image, &before);
            }
            run.image.check_invariants();
        }
    }
}
