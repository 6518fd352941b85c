//! What the active controller writes: pure functions from the image (and a
//! broker's request) to the record batch to append, or a refusal. Nothing
//! here changes the image: the batch takes effect when it is committed and
//! applied, on every node alike.
//!
//! Leadership (plan §4.3): an election picks the first replica that is in
//! the ISR and unfenced, else none (-1); a leader that stays eligible keeps
//! its place when another member leaves. Where the topic allows unclean
//! elections (`unclean.leader.election.enable`), a partition whose ISR has
//! no eligible member is led by its first unfenced replica, alone in the
//! ISR: it may have lost acknowledged writes, so `unclean_elections` names
//! every such election in a batch for the counter. Every leader change, to
//! or from none included, bumps the leader epoch, and every partition
//! change bumps the partition epoch, so a restarted broker taking a
//! partition back always leads at a higher epoch than in its previous life.

use std::collections::BTreeMap;
use std::time::Instant;

use uuid::Uuid;

use super::error::DecideError;
use super::image::{BrokerEntry, MetadataImage, TopicEntry};
use super::placement::{PlacementBroker, explicit_placement, place_partitions};
use super::records::{
    BrokerId, BrokerRegistration, CONFIG_VALUE_BYTES_MAX, FenceReason, HOST_BYTES_MAX, NO_LEADER,
    PartitionState, RACK_BYTES_MAX, RECORDS_PER_BATCH_MAX, Record, RecordBatch,
    SETTINGS_PER_TOPIC_MAX, check_topic_name,
};
use super::sessions::SessionTable;
use crate::config::is_topic_config_name;

/// Producer ids handed to a broker at a time (as broker/producer_ids.rs and Kafka).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1000;

/// The topic setting that allows electing a replica outside the ISR.
pub const UNCLEAN_ELECTION_KEY: &str = "unclean.leader.election.enable";

/// A broker's heartbeat, as the service shell decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker_id: BrokerId,
    pub broker_epoch: i64,
    /// The last metadata entry index the broker has applied.
    pub current_metadata_offset: i64,
    pub want_fence: bool,
}

/// The answer to a heartbeat, once `records` (if any) are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatDecision {
    pub records: Option<RecordBatch>,
    pub caught_up: bool,
    pub fenced: bool,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Drawn by the caller (randomness is injected, like time).
    pub topic_id: Uuid,
    pub name: String,
    pub declared: bool,
    pub settings: BTreeMap<String, String>,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit placement from the spec; overrides the computed one.
    pub replicas: Option<Vec<Vec<BrokerId>>>,
}

/// The leader a partition should have: the first replica in the ISR that
/// is `eligible` (registered and unfenced), else `NO_LEADER`.
pub fn elect_leader(
    replicas: &[BrokerId],
    isr: &[BrokerId],
    eligible: impl Fn(BrokerId) -> bool,
) -> BrokerId {
    replicas
        .iter()
        .copied()
        .find(|id| isr.contains(id) && eligible(*id))
        .unwrap_or(NO_LEADER)
}

/// Whether `topic` allows a leader from outside the ISR (Kafka's default: no).
fn unclean_allowed(topic: &TopicEntry) -> bool {
    topic
        .settings
        .get(UNCLEAN_ELECTION_KEY)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// An election from `isr`; when it finds nobody and `unclean` allows, the
/// first eligible replica alone: (ISR, leader). A replica a reassignment is
/// adding is never elected uncleanly: it may hold nothing at all.
pub(super) fn elect(
    replicas: &[BrokerId],
    adding: &[BrokerId],
    isr: Vec<BrokerId>,
    eligible: impl Fn(BrokerId) -> bool,
    unclean: bool,
) -> (Vec<BrokerId>, BrokerId) {
    let leader = elect_leader(replicas, &isr, &eligible);
    if leader != NO_LEADER || !unclean {
        return (isr, leader);
    }
    match replicas
        .iter()
        .copied()
        .find(|id| eligible(*id) && !adding.contains(id))
    {
        Some(leader) => (vec![leader], leader),
        None => (isr, NO_LEADER),
    }
}

/// The preferred replica (the first listed) when it is `eligible`, in
/// `isr` and not leading already, else `leader`: leadership goes back to it
/// (Kafka's preferred leader election), so leadership spreads as placement
/// intended after a broker restarts or the cluster forms one broker at a
/// time. Being in the ISR, it holds everything committed.
pub fn preferred_leader(
    replicas: &[BrokerId],
    isr: &[BrokerId],
    leader: BrokerId,
    eligible: impl Fn(BrokerId) -> bool,
) -> BrokerId {
    match replicas.first() {
        Some(&preferred)
            if preferred != leader && isr.contains(&preferred) && eligible(preferred) =>
        {
            preferred
        }
        _ => leader,
    }
}

/// The partition with a new ISR and leader and its epochs moved by the
/// rules, or `None` when nothing changes (no record is written then).
pub fn change_partition(
    old: &PartitionState,
    isr: Vec<BrokerId>,
    leader: BrokerId,
) -> Option<PartitionState> {
    if old.isr == isr && old.leader == leader {
        return None;
    }
    let leader_moved = i32::from(old.leader != leader);
    let new = PartitionState {
        replicas: old.replicas.clone(),
        isr,
        leader,
        leader_epoch: old.leader_epoch.saturating_add(leader_moved),
        partition_epoch: old.partition_epoch.saturating_add(1),
        adding: old.adding.clone(),
        removing: old.removing.clone(),
    };
    assert!(new.partition_epoch > old.partition_epoch || old.partition_epoch == i32::MAX);
    Some(new)
}

/// A (re)registration: a fenced broker at a new epoch. If the image still
/// shows the broker unfenced (its session ended, or it restarted faster
/// than that), its fence and the partition changes it forces come first
/// in the same batch. Another incarnation whose session is alive is refused.
pub fn on_register(
    image: &MetadataImage,
    sessions: &SessionTable,
    now: Instant,
    registration: &BrokerRegistration,
) -> Result<RecordBatch, DecideError> {
    let broker_id = registration.broker_id;
    check_registration(registration)?;
    let mut records = Vec::new();
    if let Some(existing) = image.broker(broker_id) {
        let alive = sessions.is_alive(broker_id, now);
        let incarnation = existing.registration.incarnation_id;
        if alive && incarnation != registration.incarnation_id {
            return Err(DecideError::DuplicateBrokerRegistration {
                broker_id,
                existing: incarnation,
                requested: registration.incarnation_id,
            });
        }
        if !existing.fenced {
            let reason = match alive {
                true => FenceReason::Requested,
                false => FenceReason::SessionExpired,
            };
            records = fence_records(image, existing, reason);
        }
    }
    records.push(Record::RegisterBroker(registration.clone()));
    Ok(RecordBatch::new(records))
}

/// Refuses what the log would refuse or could not hold.
fn check_registration(registration: &BrokerRegistration) -> Result<(), DecideError> {
    let invalid = |why| DecideError::InvalidRegistration {
        broker_id: registration.broker_id,
        why,
    };
    if registration.broker_id < 0 {
        return Err(invalid("the broker id is negative"));
    }
    if registration.kafka.host.is_empty() || registration.kafka.host.len() > HOST_BYTES_MAX {
        return Err(invalid("the Kafka host must be 1 to 255 bytes"));
    }
    if registration
        .rack
        .as_ref()
        .is_some_and(|rack| rack.len() > RACK_BYTES_MAX)
    {
        return Err(invalid("the rack is longer than 255 bytes"));
    }
    Ok(())
}

/// A heartbeat from the current epoch: unfences a fenced broker once it has
/// applied the log up to its own registration (and elects it where its
/// partitions have no leader), or fences one that asks to be.
pub fn on_heartbeat(
    image: &MetadataImage,
    heartbeat: &Heartbeat,
) -> Result<HeartbeatDecision, DecideError> {
    let broker_id = heartbeat.broker_id;
    let entry = image
        .broker(broker_id)
        .ok_or(DecideError::BrokerNotRegistered(broker_id))?;
    if heartbeat.broker_epoch != entry.broker_epoch {
        return Err(DecideError::StaleBrokerEpoch {
            broker_id,
            got: heartbeat.broker_epoch,
            current: entry.broker_epoch,
        });
    }
    let caught_up = heartbeat.current_metadata_offset >= entry.broker_epoch;
    let (records, fenced) = match (entry.fenced, heartbeat.want_fence) {
        (true, false) if caught_up => (Some(unfence_records(image, entry)), false),
        (false, true) => (
            Some(fence_records(image, entry, FenceReason::Requested)),
            true,
        ),
        (fenced, _) => (None, fenced),
    };
    Ok(HeartbeatDecision {
        records: records.map(RecordBatch::new),
        caught_up,
        fenced,
    })
}

/// The broker's session ended: fence it and move its leaderships. `None`
/// when it is gone or fenced already.
pub fn on_session_expired(image: &MetadataImage, broker_id: BrokerId) -> Option<RecordBatch> {
    let entry = image.broker(broker_id).filter(|entry| !entry.fenced)?;
    Some(RecordBatch::new(fence_records(
        image,
        entry,
        FenceReason::SessionExpired,
    )))
}

/// One unclean election: a partition led by a replica that was not in its
/// ISR just before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncleanElection {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: BrokerId,
    pub leader_epoch: i32,
}

/// The unclean elections `batch` holds, as applied to `image` (records
/// earlier in the batch count): what the active controller counts in
/// `sluice_unclean_elections_total` once the batch is committed.
pub fn unclean_elections(image: &MetadataImage, batch: &RecordBatch) -> Vec<UncleanElection> {
    let mut states: BTreeMap<(Uuid, i32), &PartitionState> = BTreeMap::new();
    let mut elections = Vec::new();
    for record in &batch.records {
        match record {
            Record::CreatePartition {
                topic_id,
                partition,
                state,
            } => {
                states.insert((*topic_id, *partition), state);
            }
            Record::PartitionChange {
                topic_id,
                partition,
                state,
            } => {
                let key = (*topic_id, *partition);
                let before = states
                    .get(&key)
                    .copied()
                    .or_else(|| image.partition(topic_id, *partition));
                let outside = before.is_some_and(|old| !old.isr.contains(&state.leader));
                // A preferred replica the old leader brought back into the
                // ISR (AlterPartition) is vouched for: not unclean.
                let vouched = before
                    .is_some_and(|old| old.leader != NO_LEADER && state.isr.contains(&old.leader));
                states.insert(key, state);
                if state.leader != NO_LEADER && outside && !vouched {
                    elections.push(UncleanElection {
                        topic_id: *topic_id,
                        partition: *partition,
                        leader: state.leader,
                        leader_epoch: state.leader_epoch,
                    });
                }
            }
            _ => {}
        }
    }
    elections
}

/// The fence, then a change for every partition the broker leads or is in
/// the ISR of: it leaves the ISR unless it is the last one there (a
/// partition keeps its last in-sync replica and waits for it, leaderless,
/// unless its topic allows an unclean election). A leader that stays
/// eligible keeps its place.
fn fence_records(image: &MetadataImage, entry: &BrokerEntry, reason: FenceReason) -> Vec<Record> {
    let broker_id = entry.registration.broker_id;
    assert!(!entry.fenced, "broker {broker_id} is fenced already");
    let mut records = vec![Record::FenceBroker {
        broker_id,
        broker_epoch: entry.broker_epoch,
        reason,
    }];
    let eligible = |id: BrokerId| id != broker_id && image.is_unfenced(id);
    for topic in image.topics() {
        let unclean = unclean_allowed(topic);
        for (partition, state) in topic.partitions.iter().enumerate() {
            if state.leader != broker_id && !state.isr.contains(&broker_id) {
                continue;
            }
            let isr: Vec<BrokerId> = match state.isr.len() {
                1 => state.isr.clone(),
                _ => state
                    .isr
                    .iter()
                    .copied()
                    .filter(|id| *id != broker_id)
                    .collect(),
            };
            let stays =
                state.leader != broker_id && isr.contains(&state.leader) && eligible(state.leader);
            let (isr, leader) = match stays {
                true => (isr, state.leader),
                false => elect(&state.replicas, &state.adding, isr, eligible, unclean),
            };
            assert_ne!(leader, broker_id);
            if let Some(state) = change_partition(state, isr, leader) {
                records.push(Record::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: partition as i32,
                    state,
                });
            }
        }
    }
    records
}

/// The unfence, then a leader for every leaderless partition whose ISR
/// holds the broker, or (where the topic allows an unclean election) whose
/// replicas do.
fn unfence_records(image: &MetadataImage, entry: &BrokerEntry) -> Vec<Record> {
    let broker_id = entry.registration.broker_id;
    assert!(entry.fenced, "broker {broker_id} is not fenced");
    let mut records = vec![Record::UnfenceBroker {
        broker_id,
        broker_epoch: entry.broker_epoch,
    }];
    let eligible = |id: BrokerId| id == broker_id || image.is_unfenced(id);
    for topic in image.topics() {
        let unclean = unclean_allowed(topic);
        for (partition, state) in topic.partitions.iter().enumerate() {
            let concerned = match unclean {
                true => state.replicas.contains(&broker_id),
                false => state.isr.contains(&broker_id),
            };
            let preferred = state.replicas.first() == Some(&broker_id)
                && state.isr.contains(&broker_id)
                && state.leader != broker_id;
            if preferred && state.leader != NO_LEADER {
                let leader = preferred_leader(&state.replicas, &state.isr, state.leader, eligible);
                if let Some(state) = change_partition(state, state.isr.clone(), leader) {
                    records.push(Record::PartitionChange {
                        topic_id: topic.topic_id,
                        partition: partition as i32,
                        state,
                    });
                }
                continue;
            }
            if state.leader != NO_LEADER || !concerned {
                continue;
            }
            let (isr, leader) = elect(
                &state.replicas,
                &state.adding,
                state.isr.clone(),
                eligible,
                unclean,
            );
            if let Some(state) = change_partition(state, isr, leader) {
                records.push(Record::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: partition as i32,
                    state,
                });
            }
        }
    }
    records
}

/// A new topic and its partitions, placed over the declared `brokers`
/// (or as the spec lists them), each led by its first unfenced replica.
pub fn create_topic(
    image: &MetadataImage,
    topic: &NewTopic,
    brokers: &[PlacementBroker],
) -> Result<RecordBatch, DecideError> {
    check_topic_name(&topic.name).map_err(|why| DecideError::InvalidTopicName {
        name: topic.name.clone(),
        why,
    })?;
    if image.topic_by_name(&topic.name).is_some() {
        return Err(DecideError::TopicExists(topic.name.clone()));
    }
    if topic.topic_id.is_nil() || image.topic(&topic.topic_id).is_some() {
        return Err(DecideError::TopicIdInUse(topic.topic_id));
    }
    check_settings(&topic.settings)?;
    let placement = match &topic.replicas {
        Some(lists) => explicit_placement(brokers, lists, 0, topic.partitions)?,
        None => place_partitions(
            brokers,
            0,
            topic.partitions,
            topic.replication_factor,
            image.partition_count(),
        )?,
    };
    check_record_count(1 + placement.len())?;
    let mut records = vec![Record::CreateTopic {
        topic_id: topic.topic_id,
        name: topic.name.clone(),
        declared: topic.declared,
        settings: topic.settings.clone(),
    }];
    records.extend(partition_records(image, topic.topic_id, 0, placement));
    Ok(RecordBatch::new(records))
}

/// Partitions added to an existing topic up to `total`; existing ones keep
/// their replicas. The replication factor is partition 0's.
pub fn add_partitions(
    image: &MetadataImage,
    topic_id: Uuid,
    total: i32,
    brokers: &[PlacementBroker],
    explicit: Option<&[Vec<BrokerId>]>,
) -> Result<RecordBatch, DecideError> {
    let topic = image
        .topic(&topic_id)
        .ok_or(DecideError::UnknownTopic(topic_id))?;
    let existing = topic.partitions.len() as i32;
    let count = total.saturating_sub(existing);
    let factor = topic
        .partitions
        .first()
        .map_or(1, |p| p.replicas.len() as i16);
    let placement = match explicit {
        Some(lists) => explicit_placement(brokers, lists, existing, count)?,
        None => place_partitions(brokers, existing, count, factor, image.partition_count())?,
    };
    check_record_count(placement.len())?;
    let records = partition_records(image, topic_id, existing, placement);
    Ok(RecordBatch::new(records))
}

pub(super) fn partition_records(
    image: &MetadataImage,
    topic_id: Uuid,
    first_partition: i32,
    placement: Vec<Vec<BrokerId>>,
) -> Vec<Record> {
    let eligible = |id: BrokerId| image.is_unfenced(id);
    (first_partition..)
        .zip(placement)
        .map(|(partition, replicas)| Record::CreatePartition {
            topic_id,
            partition,
            state: PartitionState {
                leader: elect_leader(&replicas, &replicas, eligible),
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
                adding: Vec::new(),
                removing: Vec::new(),
            },
        })
        .collect()
}

fn check_settings(settings: &BTreeMap<String, String>) -> Result<(), DecideError> {
    let invalid = |key: &String, why| DecideError::InvalidConfig {
        key: key.clone(),
        why,
    };
    for (key, value) in settings {
        if !is_topic_config_name(key) {
            return Err(invalid(key, "not a topic config key"));
        }
        if value.len() > CONFIG_VALUE_BYTES_MAX {
            return Err(invalid(key, "the value is longer than 4096 bytes"));
        }
    }
    // Known keys are fewer than the limit.
    assert!(settings.len() <= SETTINGS_PER_TOPIC_MAX);
    Ok(())
}

fn check_record_count(records: usize) -> Result<(), DecideError> {
    match records <= RECORDS_PER_BATCH_MAX {
        true => Ok(()),
        false => Err(DecideError::TooManyRecords {
            records,
            max: RECORDS_PER_BATCH_MAX,
        }),
    }
}

/// The next block of producer ids for a broker at its current epoch.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: BrokerId,
    broker_epoch: i64,
) -> Result<RecordBatch, DecideError> {
    let entry = image
        .broker(broker_id)
        .ok_or(DecideError::BrokerNotRegistered(broker_id))?;
    if entry.broker_epoch != broker_epoch {
        return Err(DecideError::StaleBrokerEpoch {
            broker_id,
            got: broker_epoch,
            current: entry.broker_epoch,
        });
    }
    let first_id = image.next_producer_id();
    first_id
        .checked_add(i64::from(PRODUCER_ID_BLOCK_SIZE))
        .ok_or(DecideError::ProducerIdsExhausted)?;
    Ok(RecordBatch::new(vec![Record::ProducerIdBlock {
        broker_id,
        broker_epoch,
        first_id,
        size: PRODUCER_ID_BLOCK_SIZE,
    }]))
}
