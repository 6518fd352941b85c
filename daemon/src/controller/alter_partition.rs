//! A partition leader asks to change its ISR (Kafka's AlterPartition): a
//! follower fell behind (shrink) or caught up (expand). Decided against the
//! committed image like any broker request, so a leader that lost its
//! leadership, or read the partition before it last changed, is refused
//! rather than undoing someone else's change. The partition epoch moves
//! (`decide::change_partition`); the leader stays, unless the change brings
//! the preferred replica back into the ISR, which then leads again at the
//! next leader epoch (`decide::preferred_leader`).
//!
//! The checks come in Kafka's order (`ReplicationControlManager
//! .validateAlterPartitionData`): the broker at its epoch, the partition,
//! the leader epoch, the leader, the partition epoch, the ISR's shape, then
//! the brokers it adds.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use super::decide::{change_partition, preferred_leader};
use super::error::DecideError;
use super::image::MetadataImage;
use super::records::{BrokerId, PartitionState, Record, RecordBatch};

/// One leader's ISR change for one partition, at the epochs it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The leader asking: it speaks only for itself.
    pub broker_id: BrokerId,
    /// Its epoch: a request from a previous life of the process is refused.
    pub broker_epoch: i64,
    pub topic_id: Uuid,
    pub partition: i32,
    /// The epochs of the partition state the leader acts on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The whole ISR the leader wants.
    pub isr: Vec<BrokerId>,
}

/// An accepted ISR change: the state the partition has once `records` (if
/// any) are committed, which the leader adopts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionDecision {
    pub state: PartitionState,
    /// `None` when the ISR is the one the partition has already.
    pub records: Option<RecordBatch>,
}

/// Whether a refusal with Kafka error `code` leaves the outcome unknown
/// (no answer in time, a busy controller, an attempt decided already), so
/// the leader asks again while the change is still its own in flight.
pub fn refusal_is_retriable(code: i16) -> bool {
    code == super::code::REQUEST_TIMED_OUT || code == super::code::THROTTLING_QUOTA_EXCEEDED
}

/// Whether a refusal with Kafka error `code` shows that the partition is
/// as the leader read it: the epoch checks passed, so neither this request
/// nor an earlier attempt of it (whose answer was lost) changed anything,
/// and the leader may drop its proposal. Any other refusal means the broker
/// or the partition moved on, possibly by this very change: the leader
/// keeps its maximal ISR until the metadata image shows the new state, as
/// Kafka's `Partition.handleAlterPartitionError` does. Dropping it then
/// could count a member the controller added (or made leader) out of the
/// high watermark.
pub fn refusal_leaves_partition_unchanged(code: i16) -> bool {
    code == super::code::INVALID_REQUEST || code == super::code::INELIGIBLE_REPLICA
}

/// The latest attempt decided per leader and partition, so that an older
/// attempt of the same leader, still on its way (reordered, or sent before
/// a timeout made the leader ask again), is never decided after a newer
/// one. Without it, a refusal the leader rightly takes as final (an
/// ineligible replica) could be followed by the older attempt's commit,
/// adding a member the leader no longer counts toward its high watermark.
/// Request ids rise within one broker epoch (one process); held in memory
/// by the active controller, which answers whatever it has queued when it
/// stops being active, so no queued attempt outlives it.
#[derive(Debug, Default)]
pub struct AlterAttempts {
    latest: HashMap<(BrokerId, Uuid, i32), (i64, u64)>,
}

impl AlterAttempts {
    /// Refuses `request_id` if the same leader (at the same broker epoch)
    /// had this or a later attempt for the partition decided already.
    pub fn check(
        &self,
        request_id: u64,
        request: &AlterPartitionRequest,
    ) -> Result<(), DecideError> {
        let key = (request.broker_id, request.topic_id, request.partition);
        match self.latest.get(&key) {
            Some(&(broker_epoch, latest))
                if broker_epoch == request.broker_epoch && latest >= request_id =>
            {
                Err(DecideError::SupersededAttempt {
                    topic_id: request.topic_id,
                    partition: request.partition,
                    request_id,
                    latest,
                })
            }
            _ => Ok(()),
        }
    }

    /// `request_id` was decided (made or refused).
    pub fn decided(&mut self, request_id: u64, request: &AlterPartitionRequest) {
        let key = (request.broker_id, request.topic_id, request.partition);
        let entry = self
            .latest
            .entry(key)
            .or_insert((request.broker_epoch, request_id));
        if *entry < (request.broker_epoch, request_id) {
            *entry = (request.broker_epoch, request_id);
        }
    }

    /// Forgets partitions and brokers the image no longer has.
    pub fn retain_known(&mut self, image: &MetadataImage) {
        self.latest
            .retain(|(broker_id, topic_id, partition), (epoch, _)| {
                image.partition(topic_id, *partition).is_some()
                    && image
                        .broker(*broker_id)
                        .is_some_and(|entry| entry.broker_epoch == *epoch)
            });
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Decides `request` against `image`; see the module doc for the rules.
pub fn decide_alter_partition(
    image: &MetadataImage,
    request: &AlterPartitionRequest,
) -> Result<AlterPartitionDecision, DecideError> {
    let broker_id = request.broker_id;
    let entry = image
        .broker(broker_id)
        .ok_or(DecideError::BrokerNotRegistered(broker_id))?;
    if entry.broker_epoch != request.broker_epoch {
        return Err(DecideError::StaleBrokerEpoch {
            broker_id,
            got: request.broker_epoch,
            current: entry.broker_epoch,
        });
    }
    if entry.fenced {
        return Err(DecideError::BrokerFenced(broker_id));
    }
    let unknown = || DecideError::UnknownPartition {
        topic_id: request.topic_id,
        partition: request.partition,
    };
    let topic = image.topic(&request.topic_id).ok_or_else(unknown)?;
    let state = image
        .partition(&request.topic_id, request.partition)
        .ok_or_else(unknown)?;
    let (name, partition) = (topic.name.clone(), request.partition);
    if request.leader_epoch != state.leader_epoch {
        return Err(DecideError::FencedLeaderEpoch {
            topic: name,
            partition,
            got: request.leader_epoch,
            current: state.leader_epoch,
        });
    }
    if state.leader != broker_id {
        return Err(DecideError::NotLeader {
            topic: name,
            partition,
            broker_id,
            leader: state.leader,
        });
    }
    if request.partition_epoch != state.partition_epoch {
        return Err(DecideError::StalePartitionEpoch {
            topic: name,
            partition,
            got: request.partition_epoch,
            current: state.partition_epoch,
        });
    }
    let invalid = |why| DecideError::InvalidIsr {
        topic: name.clone(),
        partition,
        isr: request.isr.clone(),
        why,
    };
    let isr: BTreeSet<BrokerId> = request.isr.iter().copied().collect();
    if isr.is_empty() {
        return Err(invalid("it is empty"));
    }
    if isr.len() != request.isr.len() {
        return Err(invalid("it lists a broker twice"));
    }
    if !isr.iter().all(|id| state.replicas.contains(id)) {
        return Err(invalid("it lists a broker that is not a replica"));
    }
    if !isr.contains(&broker_id) {
        return Err(invalid("it leaves out the leader"));
    }
    for &added in request.isr.iter().filter(|id| !state.isr.contains(id)) {
        let why = match image.broker(added) {
            None => "not registered",
            Some(entry) if entry.fenced => "fenced",
            Some(_) => continue,
        };
        return Err(DecideError::IneligibleReplica {
            topic: name,
            partition,
            broker_id: added,
            why,
        });
    }
    // A preferred replica that rejoins takes its leadership back (its log
    // holds everything committed: it is in the ISR now).
    let leader = preferred_leader(&state.replicas, &request.isr, broker_id, |id| {
        image.is_unfenced(id)
    });
    let Some(changed) = change_partition(state, request.isr.clone(), leader) else {
        return Ok(AlterPartitionDecision {
            state: state.clone(),
            records: None,
        });
    };
    let record = Record::PartitionChange {
        topic_id: request.topic_id,
        partition,
        state: changed.clone(),
    };
    Ok(AlterPartitionDecision {
        state: changed,
        records: Some(RecordBatch::new(vec![record])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::error::code;
    use crate::controller::records::NO_LEADER;
    use crate::controller::tests::registration;

    const TOPIC: Uuid = Uuid::from_u128(7);

    #[test]
    fn attempts_are_decided_once_and_never_behind_a_later_one() {
        let mut attempts = AlterAttempts::default();
        let request = |broker_epoch| AlterPartitionRequest {
            broker_id: 1,
            broker_epoch,
            topic_id: TOPIC,
            partition: 0,
            leader_epoch: 4,
            partition_epoch: 9,
            isr: vec![1],
        };
        assert!(attempts.check(10, &request(1)).is_ok());
        attempts.decided(10, &request(1));
        // The same attempt again (a duplicate), or an older one: refused,
        // with an outcome the leader must ask again to learn.
        for id in [10, 9] {
            let refused = attempts.check(id, &request(1)).unwrap_err();
            assert_eq!(refused.code(), code::REQUEST_TIMED_OUT);
            assert!(refusal_is_retriable(refused.code()));
        }
        assert!(attempts.check(11, &request(1)).is_ok());
        // A new incarnation starts its request ids again.
        assert!(attempts.check(1, &request(2)).is_ok());
        attempts.decided(1, &request(2));
        assert!(attempts.check(2, &request(2)).is_ok());
        // Another partition is its own.
        let other = AlterPartitionRequest {
            partition: 1,
            ..request(2)
        };
        assert!(attempts.check(1, &other).is_ok());
        // Forgotten once the broker's epoch or the partition is gone.
        assert_eq!(attempts.len(), 1);
        attempts.retain_known(&MetadataImage::default());
        assert!(attempts.is_empty());
    }

    #[test]
    fn only_refusals_after_the_epoch_checks_leave_the_partition_unchanged() {
        assert!(refusal_leaves_partition_unchanged(code::INELIGIBLE_REPLICA));
        assert!(refusal_leaves_partition_unchanged(code::INVALID_REQUEST));
        for stale in [
            code::INVALID_UPDATE_VERSION,
            code::FENCED_LEADER_EPOCH,
            code::STALE_BROKER_EPOCH,
            code::NOT_LEADER_OR_FOLLOWER,
            code::UNKNOWN_TOPIC_OR_PARTITION,
            code::REQUEST_TIMED_OUT,
        ] {
            assert!(!refusal_leaves_partition_unchanged(stale), "{stale}");
        }
    }

    /// Brokers 1, 2, 3 registered at epochs 1, 1, 1; 1 and 2 unfenced, 3
    /// fenced; topic `t` (TOPIC) partition 0 with replicas [1, 2, 3], ISR
    /// [1, 2], led by 1 at leader epoch 4 and partition epoch 9.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut records: Vec<Record> = (1..=3)
            .map(|id| Record::RegisterBroker(registration(id, 1)))
            .collect();
        records.extend((1..=2).map(|broker_id| Record::UnfenceBroker {
            broker_id,
            broker_epoch: 1,
        }));
        records.push(Record::CreateTopic {
            topic_id: TOPIC,
            name: "t".into(),
            declared: true,
            settings: Default::default(),
        });
        records.push(Record::CreatePartition {
            topic_id: TOPIC,
            partition: 0,
            state: PartitionState {
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 9,
                adding: Vec::new(),
                removing: Vec::new(),
            },
        });
        image.apply(1, &RecordBatch::new(records)).unwrap();
        image.check_invariants();
        image
    }

    fn request(isr: &[BrokerId]) -> AlterPartitionRequest {
        AlterPartitionRequest {
            broker_id: 1,
            broker_epoch: 1,
            topic_id: TOPIC,
            partition: 0,
            leader_epoch: 4,
            partition_epoch: 9,
            isr: isr.to_vec(),
        }
    }

    fn refused(image: &MetadataImage, request: &AlterPartitionRequest) -> DecideError {
        decide_alter_partition(image, request).expect_err("refused")
    }

    /// Commits the decision's records and checks the image took them.
    fn commit(image: &mut MetadataImage, decision: &AlterPartitionDecision) {
        let batch = decision.records.clone().expect("records");
        let bytes = batch.encode().unwrap();
        let index = image.applied_index() + 1;
        image
            .apply(index, &RecordBatch::decode(&bytes).unwrap())
            .unwrap();
        image.check_invariants();
        assert_eq!(image.partition(&TOPIC, 0), Some(&decision.state));
    }

    #[test]
    fn a_shrink_keeps_the_leader_and_its_epoch_and_moves_the_partition_epoch() {
        let mut image = image();
        let decision = decide_alter_partition(&image, &request(&[1])).unwrap();
        assert_eq!(
            (
                decision.state.leader,
                decision.state.leader_epoch,
                decision.state.partition_epoch,
                decision.state.isr.clone()
            ),
            (1, 4, 10, vec![1])
        );
        assert_eq!(decision.state.replicas, vec![1, 2, 3]);
        commit(&mut image, &decision);
    }

    #[test]
    fn an_expand_takes_a_registered_unfenced_broker() {
        let mut image = image();
        // Broker 3 unfences; the leader adds it.
        let unfence = RecordBatch::new(vec![Record::UnfenceBroker {
            broker_id: 3,
            broker_epoch: 1,
        }]);
        image.apply(2, &unfence).unwrap();
        let decision = decide_alter_partition(&image, &request(&[1, 2, 3])).unwrap();
        assert_eq!(decision.state.isr, vec![1, 2, 3]);
        assert_eq!(decision.state.partition_epoch, 10);
        commit(&mut image, &decision);
        // The leader's next change must carry the new partition epoch.
        let stale = refused(&image, &request(&[1, 3]));
        assert_eq!(stale.code(), code::INVALID_UPDATE_VERSION, "{stale}");
        let next = AlterPartitionRequest {
            partition_epoch: 10,
            ..request(&[1, 3])
        };
        let decision = decide_alter_partition(&image, &next).unwrap();
        assert_eq!(
            (decision.state.isr.clone(), decision.state.partition_epoch),
            (vec![1, 3], 11)
        );
    }

    #[test]
    fn the_same_isr_answers_the_current_state_without_a_record() {
        let image = image();
        let decision = decide_alter_partition(&image, &request(&[1, 2])).unwrap();
        assert_eq!(decision.records, None);
        assert_eq!(Some(&decision.state), image.partition(&TOPIC, 0));
        // Order matters: [2, 1] is another ISR (the record keeps the order asked).
        let reordered = decide_alter_partition(&image, &request(&[2, 1])).unwrap();
        assert!(reordered.records.is_some());
    }

    #[test]
    fn the_broker_must_be_registered_at_its_epoch_and_unfenced() {
        let image = image();
        let unknown = AlterPartitionRequest {
            broker_id: 9,
            ..request(&[1])
        };
        assert_eq!(
            refused(&image, &unknown).code(),
            code::BROKER_ID_NOT_REGISTERED
        );
        let stale = AlterPartitionRequest {
            broker_epoch: 0,
            ..request(&[1])
        };
        assert_eq!(refused(&image, &stale).code(), code::STALE_BROKER_EPOCH);
        let newer = AlterPartitionRequest {
            broker_epoch: 2,
            ..request(&[1])
        };
        assert_eq!(refused(&image, &newer).code(), code::STALE_BROKER_EPOCH);
        let fenced = AlterPartitionRequest {
            broker_id: 3,
            ..request(&[3])
        };
        let error = refused(&image, &fenced);
        assert_eq!(error, DecideError::BrokerFenced(3));
        assert_eq!(error.code(), code::NOT_LEADER_OR_FOLLOWER);
    }

    #[test]
    fn the_topic_and_partition_must_exist() {
        let image = image();
        for (topic_id, partition) in [(Uuid::from_u128(8), 0), (TOPIC, 1), (TOPIC, -1)] {
            let request = AlterPartitionRequest {
                topic_id,
                partition,
                ..request(&[1])
            };
            let error = refused(&image, &request);
            assert_eq!(error.code(), code::UNKNOWN_TOPIC_OR_PARTITION, "{error}");
        }
    }

    #[test]
    fn only_the_leader_at_its_leader_epoch_may_ask() {
        let image = image();
        let follower = AlterPartitionRequest {
            broker_id: 2,
            ..request(&[2])
        };
        let error = refused(&image, &follower);
        assert_eq!(error.code(), code::NOT_LEADER_OR_FOLLOWER);
        assert!(error.to_string().contains("the leader is 1"), "{error}");
        for leader_epoch in [3, 5] {
            let request = AlterPartitionRequest {
                leader_epoch,
                ..request(&[1])
            };
            let error = refused(&image, &request);
            assert_eq!(error.code(), code::FENCED_LEADER_EPOCH, "{error}");
        }
        // A deposed leader reads an older leader epoch first (Kafka's order).
        let deposed = AlterPartitionRequest {
            broker_id: 2,
            leader_epoch: 3,
            ..request(&[2])
        };
        assert_eq!(refused(&image, &deposed).code(), code::FENCED_LEADER_EPOCH);
    }

    #[test]
    fn a_fenced_former_leader_is_refused() {
        let mut image = image();
        let fence = RecordBatch::new(vec![
            Record::FenceBroker {
                broker_id: 2,
                broker_epoch: 1,
                reason: crate::controller::FenceReason::SessionExpired,
            },
            Record::PartitionChange {
                topic_id: TOPIC,
                partition: 0,
                state: PartitionState {
                    replicas: vec![1, 2, 3],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 4,
                    partition_epoch: 10,
                    adding: Vec::new(),
                    removing: Vec::new(),
                },
            },
        ]);
        image.apply(2, &fence).unwrap();
        let fence_leader = RecordBatch::new(vec![
            Record::FenceBroker {
                broker_id: 1,
                broker_epoch: 1,
                reason: crate::controller::FenceReason::SessionExpired,
            },
            Record::PartitionChange {
                topic_id: TOPIC,
                partition: 0,
                state: PartitionState {
                    replicas: vec![1, 2, 3],
                    isr: vec![1],
                    leader: NO_LEADER,
                    leader_epoch: 5,
                    partition_epoch: 11,
                    adding: Vec::new(),
                    removing: Vec::new(),
                },
            },
        ]);
        image.apply(3, &fence_leader).unwrap();
        let request = AlterPartitionRequest {
            leader_epoch: 5,
            partition_epoch: 11,
            ..request(&[1])
        };
        assert_eq!(refused(&image, &request), DecideError::BrokerFenced(1));
    }

    #[test]
    fn the_partition_epoch_must_be_the_current_one() {
        let image = image();
        for partition_epoch in [8, 10] {
            let request = AlterPartitionRequest {
                partition_epoch,
                ..request(&[1])
            };
            let error = refused(&image, &request);
            assert_eq!(error.code(), code::INVALID_UPDATE_VERSION, "{error}");
        }
    }

    #[test]
    fn the_isr_must_be_distinct_replicas_with_the_leader() {
        let image = image();
        for (isr, why) in [
            (&[][..], "empty"),
            (&[1, 1][..], "twice"),
            (&[1, 4][..], "not a replica"),
            (&[1, -1][..], "not a replica"),
            (&[2][..], "leaves out the leader"),
        ] {
            let error = refused(&image, &request(isr));
            assert_eq!(error.code(), code::INVALID_REQUEST, "{error}");
            assert!(error.to_string().contains(why), "{isr:?}: {error}");
        }
    }

    #[test]
    fn a_broker_added_must_be_registered_and_unfenced() {
        let mut image = image();
        let error = refused(&image, &request(&[1, 2, 3]));
        assert_eq!(error.code(), code::INELIGIBLE_REPLICA);
        assert!(error.to_string().contains("broker 3") && error.to_string().contains("fenced"));
        // Broker 3 leaves the cluster (unregistered): still ineligible.
        let gone = RecordBatch::new(vec![Record::UnregisterBroker {
            broker_id: 3,
            broker_epoch: 1,
        }]);
        image.apply(2, &gone).unwrap();
        let error = refused(&image, &request(&[1, 3]));
        assert_eq!(error.code(), code::INELIGIBLE_REPLICA);
        assert!(error.to_string().contains("not registered"), "{error}");
        // Members kept are not checked again; a shrink goes through.
        assert!(decide_alter_partition(&image, &request(&[1])).is_ok());
    }
}
