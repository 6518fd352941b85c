//! The metadata image: the cluster's state after the committed log up to
//! `applied_index`. Every voter and broker builds the same image from the
//! same log, so `apply` is deterministic and checks each record against the
//! rules of plan §5.2 before it takes effect. A record that breaks a rule
//! (a bug in the writer, or a diverged log) is refused with an error naming
//! it; the image stays as it was. Assertions guard only the image's own
//! consistency.
//!
//! Topics sit behind `Arc` so applying a batch (which works on a copy, to be
//! all-or-nothing) copies only the topics it touches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::error::{ApplyError, ApplyReason, InvariantError};
use super::records::{
    BrokerId, BrokerRegistration, NO_LEADER, PartitionState, REPLICAS_MAX, Record, RecordBatch,
    SETTINGS_PER_TOPIC_MAX, check_topic_name, is_spec_hash,
};
use crate::config::is_topic_config_name;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEntry {
    pub registration: BrokerRegistration,
    /// The index of the entry that registered it: requests carrying an
    /// older epoch come from a previous life of the process.
    pub broker_epoch: i64,
    pub fenced: bool,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicEntry {
    pub topic_id: Uuid,
    pub name: String,
    pub declared: bool,
    pub settings: BTreeMap<String, String>,
    /// Partition `p` at index `p`: partitions are created in order.
    pub partitions: Vec<PartitionState>,
}

/// The spec the controller last acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSpec {
    pub hash: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataImage {
    applied_index: u64,
    brokers: BTreeMap<BrokerId, BrokerEntry>,
    topics: BTreeMap<Uuid, Arc<TopicEntry>>,
    topic_ids: BTreeMap<String, Uuid>,
    next_producer_id: i64,
    applied_spec: Option<Arc<AppliedSpec>>,
}

/// What a batch touched, checked once the whole batch is in.
#[derive(Debug, Default)]
struct Touched {
    /// Partitions created or changed, with the record's position.
    partitions: Vec<(usize, Uuid, i32)>,
    /// Brokers fenced, re-registered or removed: they must lead nothing.
    stepped_down: BTreeMap<BrokerId, usize>,
}

impl Touched {
    fn note(&mut self, position: usize, record: &Record) {
        match record {
            Record::RegisterBroker(BrokerRegistration { broker_id, .. })
            | Record::FenceBroker { broker_id, .. }
            | Record::UnregisterBroker { broker_id, .. } => {
                self.stepped_down.insert(*broker_id, position);
            }
            Record::CreatePartition {
                topic_id,
                partition,
                ..
            }
            | Record::PartitionChange {
                topic_id,
                partition,
                ..
            } => self.partitions.push((position, *topic_id, *partition)),
            _ => {}
        }
    }
}

impl MetadataImage {
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerEntry> {
        self.brokers.get(&broker_id)
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerEntry> {
        self.brokers.values()
    }

    /// Registered and not fenced: may lead partitions.
    pub fn is_unfenced(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    pub fn topic(&self, topic_id: &Uuid) -> Option<&TopicEntry> {
        self.topics.get(topic_id).map(Arc::as_ref)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicEntry> {
        self.topic_ids.get(name).and_then(|id| self.topic(id))
    }

    /// Topics in topic id order.
    pub fn topics(&self) -> impl Iterator<Item = &TopicEntry> {
        self.topics.values().map(Arc::as_ref)
    }

    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topic(topic_id)?.partitions.get(index)
    }

    /// Every partition in the cluster.
    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }

    /// The first producer id no block has handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    pub fn applied_spec(&self) -> Option<&AppliedSpec> {
        self.applied_spec.as_deref()
    }

    /// Applies the batch of log entry `index`, all of it or nothing.
    pub fn apply(&mut self, index: u64, batch: &RecordBatch) -> Result<(), ApplyError> {
        let refuse = |position, reason| ApplyError {
            index,
            position,
            reason,
        };
        if index <= self.applied_index {
            let applied = self.applied_index;
            return Err(refuse(
                0,
                ApplyReason::IndexNotIncreasing { index, applied },
            ));
        }
        let epoch =
            i64::try_from(index).map_err(|_| refuse(0, ApplyReason::IndexTooLarge(index)))?;
        if batch.is_empty() {
            return Err(refuse(0, ApplyReason::EmptyBatch));
        }
        let mut next = self.clone();
        let mut touched = Touched::default();
        for (position, record) in batch.records.iter().enumerate() {
            next.apply_record(epoch, record)
                .map_err(|reason| refuse(position, reason))?;
            touched.note(position, record);
        }
        next.check_batch(&touched)
            .map_err(|(position, reason)| refuse(position, reason))?;
        next.applied_index = index;
        assert!(next.applied_index > self.applied_index);
        assert_eq!(next.topics.len(), next.topic_ids.len());
        *self = next;
        Ok(())
    }

    fn apply_record(&mut self, epoch: i64, record: &Record) -> Result<(), ApplyReason> {
        match record {
            Record::RegisterBroker(registration) => self.register(epoch, registration),
            Record::FenceBroker {
                broker_id,
                broker_epoch,
                ..
            } => self.set_fenced(*broker_id, *broker_epoch, true),
            Record::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.set_fenced(*broker_id, *broker_epoch, false),
            Record::UnregisterBroker {
                broker_id,
                broker_epoch,
            } => self.unregister(*broker_id, *broker_epoch),
            Record::CreateTopic {
                topic_id,
                name,
                declared,
                settings,
            } => self.create_topic(*topic_id, name, *declared, settings),
            Record::CreatePartition {
                topic_id,
                partition,
                state,
            } => self.create_partition(topic_id, *partition, state),
            Record::PartitionChange {
                topic_id,
                partition,
                state,
            } => self.change_partition(topic_id, *partition, state),
            Record::TopicConfig {
                topic_id,
                key,
                value,
            } => self.set_config(topic_id, key, value.as_deref()),
            Record::DeleteTopic { topic_id } => self.delete_topic(topic_id),
            Record::ProducerIdBlock {
                broker_id,
                broker_epoch,
                first_id,
                size,
            } => self.producer_ids(*broker_id, *broker_epoch, *first_id, *size),
            Record::AppliedSpec { hash, text } => self.set_spec(hash, text),
        }
    }

    /// A new registration is fenced until the broker has caught up.
    fn register(
        &mut self,
        epoch: i64,
        registration: &BrokerRegistration,
    ) -> Result<(), ApplyReason> {
        let broker_id = registration.broker_id;
        if broker_id < 0 {
            return Err(ApplyReason::InvalidBrokerId(broker_id));
        }
        if self.is_unfenced(broker_id) {
            return Err(ApplyReason::RegisterUnfenced(broker_id));
        }
        let entry = BrokerEntry {
            registration: registration.clone(),
            broker_epoch: epoch,
            fenced: true,
        };
        self.brokers.insert(broker_id, entry);
        assert!(!self.is_unfenced(broker_id));
        Ok(())
    }

    /// The broker at exactly `broker_epoch`.
    fn broker_at(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> Result<&mut BrokerEntry, ApplyReason> {
        let entry = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(ApplyReason::BrokerNotRegistered(broker_id))?;
        if entry.broker_epoch != broker_epoch {
            return Err(ApplyReason::BrokerEpochMismatch {
                broker_id,
                record: broker_epoch,
                image: entry.broker_epoch,
            });
        }
        Ok(entry)
    }

    fn set_fenced(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
        fenced: bool,
    ) -> Result<(), ApplyReason> {
        let entry = self.broker_at(broker_id, broker_epoch)?;
        match (entry.fenced, fenced) {
            (true, true) => Err(ApplyReason::AlreadyFenced(broker_id)),
            (false, false) => Err(ApplyReason::NotFenced(broker_id)),
            _ => {
                entry.fenced = fenced;
                Ok(())
            }
        }
    }

    /// Only a fenced broker leaves; the batch check makes sure it leads nothing.
    fn unregister(&mut self, broker_id: BrokerId, broker_epoch: i64) -> Result<(), ApplyReason> {
        if !self.broker_at(broker_id, broker_epoch)?.fenced {
            return Err(ApplyReason::NotFenced(broker_id));
        }
        self.brokers.remove(&broker_id);
        assert!(!self.brokers.contains_key(&broker_id));
        Ok(())
    }

    fn create_topic(
        &mut self,
        topic_id: Uuid,
        name: &str,
        declared: bool,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), ApplyReason> {
        check_topic_name(name).map_err(|why| ApplyReason::InvalidTopicName {
            name: name.to_string(),
            why,
        })?;
        if self.topic_ids.contains_key(name) {
            return Err(ApplyReason::DuplicateTopicName(name.to_string()));
        }
        if self.topics.contains_key(&topic_id) || topic_id.is_nil() {
            return Err(ApplyReason::DuplicateTopicId(topic_id));
        }
        if let Some(key) = settings.keys().find(|key| !is_topic_config_name(key)) {
            return Err(ApplyReason::UnknownConfigKey(key.clone()));
        }
        let topic = TopicEntry {
            topic_id,
            name: name.to_string(),
            declared,
            settings: settings.clone(),
            partitions: Vec::new(),
        };
        self.topics.insert(topic_id, Arc::new(topic));
        self.topic_ids.insert(name.to_string(), topic_id);
        assert_eq!(self.topics.len(), self.topic_ids.len());
        Ok(())
    }

    fn topic_mut(&mut self, topic_id: &Uuid) -> Result<&mut TopicEntry, ApplyReason> {
        self.topics
            .get_mut(topic_id)
            .map(Arc::make_mut)
            .ok_or(ApplyReason::UnknownTopic(*topic_id))
    }

    /// Partitions come in order; their epochs start wherever the writer says
    /// (0 for a new topic, the old epoch for an adopted one).
    fn create_partition(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        state: &PartitionState,
    ) -> Result<(), ApplyReason> {
        let topic = self.topic_mut(topic_id)?;
        let expected = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if partition != expected {
            return Err(ApplyReason::PartitionOutOfOrder {
                topic: topic.name.clone(),
                partition,
                expected,
            });
        }
        let invalid = |why| ApplyReason::InvalidPartition {
            topic: topic.name.clone(),
            partition,
            why,
        };
        check_partition_state(state).map_err(invalid)?;
        topic.partitions.push(state.clone());
        assert_eq!(topic.partitions.len(), partition as usize + 1);
        Ok(())
    }

    /// partition_epoch + 1 on every change; leader_epoch + 1 iff the leader
    /// changed (to or from none included) or a replica was removed.
    fn change_partition(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        state: &PartitionState,
    ) -> Result<(), ApplyReason> {
        let topic = self.topic_mut(topic_id)?;
        let name = topic.name.clone();
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|at| topic.partitions.get_mut(at))
            .ok_or_else(|| ApplyReason::UnknownPartition {
                topic: name.clone(),
                partition,
            })?;
        check_partition_state(state).map_err(|why| ApplyReason::InvalidPartition {
            topic: name.clone(),
            partition,
            why,
        })?;
        let same_but_epochs = slot.replicas == state.replicas
            && slot.isr == state.isr
            && slot.leader == state.leader
            && slot.adding == state.adding
            && slot.removing == state.removing;
        if same_but_epochs {
            return Err(ApplyReason::NoChange {
                topic: name,
                partition,
            });
        }
        // A replica removed (a reassignment completing) bumps the leader
        // epoch too, as in Kafka: its fetches at the old epoch are fenced,
        // so nothing it sends before it learns of its removal can count.
        let replica_removed = slot.replicas.iter().any(|id| !state.replicas.contains(id));
        let leader_moved = slot.leader != state.leader || replica_removed;
        let rules = [
            (
                "partition epoch",
                state.partition_epoch,
                slot.partition_epoch.checked_add(1),
            ),
            (
                "leader epoch",
                state.leader_epoch,
                if leader_moved {
                    slot.leader_epoch.checked_add(1)
                } else {
                    Some(slot.leader_epoch)
                },
            ),
        ];
        for (what, got, expected) in rules {
            if Some(got) != expected {
                return Err(ApplyReason::EpochRule {
                    topic: name,
                    partition,
                    what,
                    got,
                    expected: expected.unwrap_or(i32::MAX),
                });
            }
        }
        *slot = state.clone();
        assert!(slot.partition_epoch > 0);
        Ok(())
    }

    fn set_config(
        &mut self,
        topic_id: &Uuid,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ApplyReason> {
        if !is_topic_config_name(key) {
            return Err(ApplyReason::UnknownConfigKey(key.to_string()));
        }
        let topic = self.topic_mut(topic_id)?;
        match value {
            Some(value) => topic.settings.insert(key.to_string(), value.to_string()),
            None => topic.settings.remove(key),
        };
        // Known keys are fewer than the limit, so this follows from the check above.
        assert!(topic.settings.len() <= SETTINGS_PER_TOPIC_MAX);
        Ok(())
    }

    fn delete_topic(&mut self, topic_id: &Uuid) -> Result<(), ApplyReason> {
        let topic = self
            .topics
            .remove(topic_id)
            .ok_or(ApplyReason::UnknownTopic(*topic_id))?;
        let removed = self.topic_ids.remove(&topic.name);
        assert_eq!(removed, Some(*topic_id));
        Ok(())
    }

    /// Blocks only go up: a producer id is never handed out twice.
    fn producer_ids(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
        first_id: i64,
        size: i32,
    ) -> Result<(), ApplyReason> {
        self.broker_at(broker_id, broker_epoch)?;
        let invalid = |why| ApplyReason::InvalidProducerIdBlock {
            first_id,
            size,
            why,
        };
        if size <= 0 {
            return Err(invalid("its size must be positive"));
        }
        if first_id < self.next_producer_id {
            return Err(invalid("it starts below the next free producer id"));
        }
        let next = first_id
            .checked_add(i64::from(size))
            .ok_or_else(|| invalid("it runs past the largest producer id"))?;
        assert!(next > self.next_producer_id);
        self.next_producer_id = next;
        Ok(())
    }

    fn set_spec(&mut self, hash: &str, text: &str) -> Result<(), ApplyReason> {
        if !is_spec_hash(hash) {
            return Err(ApplyReason::InvalidSpecHash(hash.to_string()));
        }
        let spec = AppliedSpec {
            hash: hash.to_string(),
            text: text.to_string(),
        };
        self.applied_spec = Some(Arc::new(spec));
        Ok(())
    }

    /// Rules that hold between records of one batch: a partition's leader is
    /// a registered unfenced broker once the batch is in, and a broker
    /// fenced, re-registered or removed leads nothing.
    fn check_batch(&self, touched: &Touched) -> Result<(), (usize, ApplyReason)> {
        for &(position, topic_id, partition) in &touched.partitions {
            let (Some(topic), Some(state)) =
                (self.topic(&topic_id), self.partition(&topic_id, partition))
            else {
                continue; // deleted later in the batch
            };
            if state.leader != NO_LEADER && !self.is_unfenced(state.leader) {
                let reason = ApplyReason::LeaderNotEligible {
                    topic: topic.name.clone(),
                    partition,
                    leader: state.leader,
                };
                return Err((position, reason));
            }
        }
        if touched.stepped_down.is_empty() {
            return Ok(());
        }
        for topic in self.topics() {
            for (partition, state) in topic.partitions.iter().enumerate() {
                let Some(&position) = touched.stepped_down.get(&state.leader) else {
                    continue;
                };
                if !self.is_unfenced(state.leader) {
                    let reason = ApplyReason::FencedLeader {
                        broker_id: state.leader,
                        topic: topic.name.clone(),
                        partition: partition as i32,
                    };
                    return Err((position, reason));
                }
            }
        }
        Ok(())
    }

    /// The image a snapshot holds, from its parts, refused unless every
    /// rule of `validate` holds: a snapshot comes from disk or the network,
    /// so nothing in it is trusted.
    pub(super) fn from_parts(
        applied_index: u64,
        next_producer_id: i64,
        brokers: Vec<BrokerEntry>,
        topics: Vec<TopicEntry>,
        applied_spec: Option<AppliedSpec>,
    ) -> Result<Self, InvariantError> {
        let mut image = MetadataImage {
            applied_index,
            next_producer_id,
            applied_spec: applied_spec.map(Arc::new),
            ..MetadataImage::default()
        };
        for entry in brokers {
            let broker_id = entry.registration.broker_id;
            if image.brokers.insert(broker_id, entry).is_some() {
                return Err(InvariantError::DuplicateBroker(broker_id));
            }
        }
        for topic in topics {
            if image.topic_ids.contains_key(&topic.name) {
                return Err(InvariantError::DuplicateTopicName(topic.name));
            }
            if image.topics.contains_key(&topic.topic_id) {
                return Err(InvariantError::DuplicateTopicId(topic.topic_id));
            }
            image.topic_ids.insert(topic.name.clone(), topic.topic_id);
            image.topics.insert(topic.topic_id, Arc::new(topic));
        }
        image.validate()?;
        Ok(image)
    }

    /// Every rule of the whole image, the broken one named: the image's
    /// name and id indexes agree, topic names, ids and settings are ones
    /// `apply` accepts, partitions are well-shaped and led by a registered
    /// unfenced broker or none, and broker epochs are past entries. O(partitions).
    pub fn validate(&self) -> Result<(), InvariantError> {
        if i64::try_from(self.applied_index).is_err() {
            return Err(InvariantError::AppliedIndexTooLarge(self.applied_index));
        }
        if self.topics.len() != self.topic_ids.len() {
            return Err(InvariantError::TopicCount {
                topics: self.topics.len(),
                names: self.topic_ids.len(),
            });
        }
        for (name, topic_id) in &self.topic_ids {
            let topic = self
                .topics
                .get(topic_id)
                .filter(|topic| &topic.name == name && &topic.topic_id == topic_id)
                .ok_or_else(|| InvariantError::TopicNameIndex {
                    name: name.clone(),
                    topic_id: *topic_id,
                })?;
            self.validate_topic(topic)?;
        }
        for (broker_id, entry) in &self.brokers {
            let registered = entry.registration.broker_id;
            if *broker_id != registered {
                return Err(InvariantError::BrokerIdMismatch {
                    key: *broker_id,
                    registered,
                });
            }
            if registered < 0 {
                return Err(InvariantError::InvalidBrokerId(registered));
            }
            if entry.broker_epoch < 1 || entry.broker_epoch as u64 > self.applied_index {
                return Err(InvariantError::BrokerEpochOutOfRange {
                    broker_id: registered,
                    broker_epoch: entry.broker_epoch,
                    applied_index: self.applied_index,
                });
            }
        }
        if self.next_producer_id < 0 {
            return Err(InvariantError::NegativeProducerId(self.next_producer_id));
        }
        if let Some(spec) = &self.applied_spec
            && !is_spec_hash(&spec.hash)
        {
            return Err(InvariantError::InvalidSpecHash(spec.hash.clone()));
        }
        Ok(())
    }

    fn validate_topic(&self, topic: &TopicEntry) -> Result<(), InvariantError> {
        let name = &topic.name;
        check_topic_name(name).map_err(|why| InvariantError::InvalidTopicName {
            name: name.clone(),
            why,
        })?;
        if topic.topic_id.is_nil() {
            return Err(InvariantError::NilTopicId(name.clone()));
        }
        if let Some(key) = topic.settings.keys().find(|key| !is_topic_config_name(key)) {
            return Err(InvariantError::UnknownConfigKey {
                topic: name.clone(),
                key: key.clone(),
            });
        }
        for (partition, state) in topic.partitions.iter().enumerate() {
            check_partition_state(state).map_err(|why| InvariantError::InvalidPartition {
                topic: name.clone(),
                partition,
                why,
            })?;
            if state.leader != NO_LEADER && !self.is_unfenced(state.leader) {
                return Err(InvariantError::LeaderNotEligible {
                    topic: name.clone(),
                    partition,
                    leader: state.leader,
                });
            }
        }
        Ok(())
    }

    /// Asserts every rule of `validate` (tests): `apply` keeps them all, so
    /// a broken one is a bug here.
    pub fn check_invariants(&self) {
        self.validate()
            .expect("apply keeps every rule of the metadata image");
    }
}

/// Shape rules of any partition state: replicas non-empty and distinct,
/// the ISR a non-empty subset of them, the leader in the ISR or none; a
/// reassignment's adding and removing replicas distinct replicas, apart,
/// and not every replica removed.
pub fn check_partition_state(state: &PartitionState) -> Result<(), &'static str> {
    let replicas: BTreeSet<BrokerId> = state.replicas.iter().copied().collect();
    if state.replicas.is_empty() || state.replicas.len() > REPLICAS_MAX {
        return Err("replicas must list 1 to 32 brokers");
    }
    if replicas.len() != state.replicas.len() || replicas.iter().any(|id| *id < 0) {
        return Err("replicas must be distinct broker ids");
    }
    let isr: BTreeSet<BrokerId> = state.isr.iter().copied().collect();
    if isr.is_empty() || isr.len() != state.isr.len() {
        return Err("the ISR must list distinct brokers, at least one");
    }
    if !isr.is_subset(&replicas) {
        return Err("the ISR must be a subset of the replicas");
    }
    if state.leader != NO_LEADER && !isr.contains(&state.leader) {
        return Err("the leader must be in the ISR");
    }
    if state.leader_epoch < 0 || state.partition_epoch < 0 {
        return Err("epochs must not be negative");
    }
    let adding: BTreeSet<BrokerId> = state.adding.iter().copied().collect();
    let removing: BTreeSet<BrokerId> = state.removing.iter().copied().collect();
    if adding.len() != state.adding.len() || removing.len() != state.removing.len() {
        return Err("adding and removing replicas must be distinct");
    }
    if !adding.is_subset(&replicas) || !removing.is_subset(&replicas) {
        return Err("adding and removing replicas must be replicas");
    }
    if !adding.is_disjoint(&removing) || removing.len() >= replicas.len() {
        return Err(
            "a reassignment must keep at least one replica and not both add and remove one",
        );
    }
    Ok(())
}
