//! A single node's data directory joining a cluster (`controller.adopt_broker`):
//! the broker reports the topics it held with its registration, and the
//! controller records them as they are (same ids, same partition counts,
//! the broker as every partition's only replica) and moves the producer-id
//! allocator past the ids the single node handed out. Until the named
//! broker has registered, the controller applies neither the spec nor its
//! internal topics, so nothing can be created under those names first.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::decide::partition_records;
use super::error::DecideError;
use super::image::MetadataImage;
use super::records::{BrokerId, Record, check_topic_name};
use crate::config::PARTITIONS_MAX;

/// What a single node's data directory holds, as its broker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adoption {
    pub topics: Vec<AdoptedTopic>,
    /// The end of the last producer-id block the single node reserved.
    pub producer_id_end: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedTopic {
    pub topic_id: Uuid,
    pub name: String,
    pub partitions: i32,
    /// Kafka-named overrides, as its topic registry holds them.
    pub settings: BTreeMap<String, String>,
}

/// The records that adopt `adoption` from `broker_id` at `broker_epoch`
/// (the index of the registration entry they go in with). A topic the image
/// already holds under the same id is skipped (a registration retried after
/// a crash); under another id it is refused, naming both. Topics the spec
/// `declared` are recorded as declared.
pub fn adopt(
    image: &MetadataImage,
    (broker_id, broker_epoch): (BrokerId, i64),
    adoption: &Adoption,
    declared: &BTreeSet<String>,
) -> Result<Vec<Record>, DecideError> {
    let mut records = Vec::new();
    for topic in &adoption.topics {
        if let Some(existing) = image.topic_by_name(&topic.name) {
            if existing.topic_id == topic.topic_id {
                continue;
            }
            return Err(DecideError::AdoptionConflict {
                name: topic.name.clone(),
                adopted: topic.topic_id,
                existing: existing.topic_id,
            });
        }
        check_topic_name(&topic.name).map_err(|why| DecideError::InvalidTopicName {
            name: topic.name.clone(),
            why,
        })?;
        if !(1..=PARTITIONS_MAX).contains(&topic.partitions) {
            return Err(DecideError::InvalidTopicName {
                name: topic.name.clone(),
                why: "an adopted topic has 1 to PARTITIONS_MAX partitions",
            });
        }
        records.push(Record::CreateTopic {
            topic_id: topic.topic_id,
            name: topic.name.clone(),
            declared: declared.contains(&topic.name),
            settings: topic.settings.clone(),
        });
        let placement = vec![vec![broker_id]; topic.partitions as usize];
        records.extend(partition_records(image, topic.topic_id, 0, placement));
    }
    let next = image.next_producer_id();
    if adoption.producer_id_end > next {
        let size = i32::try_from(adoption.producer_id_end - next).unwrap_or(i32::MAX);
        records.push(Record::ProducerIdBlock {
            broker_id,
            broker_epoch,
            first_id: next,
            size,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::NO_LEADER;
    use crate::controller::records::RecordBatch;
    use crate::controller::tests::registration;

    fn adoption() -> Adoption {
        Adoption {
            topics: vec![
                AdoptedTopic {
                    topic_id: Uuid::from_u128(1),
                    name: "declared".into(),
                    partitions: 2,
                    settings: BTreeMap::new(),
                },
                AdoptedTopic {
                    topic_id: Uuid::from_u128(2),
                    name: "auto".into(),
                    partitions: 1,
                    settings: [("retention.ms".to_string(), "60000".to_string())].into(),
                },
            ],
            producer_id_end: 1000,
        }
    }

    /// Broker 1's registration at index 1 with its adoption.
    fn adopted(image: &mut MetadataImage, adoption: &Adoption) -> Result<(), DecideError> {
        let declared = BTreeSet::from(["declared".to_string()]);
        let mut records = vec![Record::RegisterBroker(registration(1, 1))];
        records.extend(adopt(image, (1, 1), adoption, &declared)?);
        image.apply(1, &RecordBatch::new(records)).unwrap();
        Ok(())
    }

    #[test]
    fn topics_keep_their_ids_on_the_adopting_broker_and_producer_ids_move_past_its_block() {
        let mut image = MetadataImage::default();
        adopted(&mut image, &adoption()).unwrap();
        let declared = image.topic_by_name("declared").unwrap();
        assert_eq!(declared.topic_id, Uuid::from_u128(1));
        assert!(declared.declared);
        assert_eq!(declared.partitions.len(), 2);
        for state in &declared.partitions {
            assert_eq!(state.replicas, vec![1]);
            assert_eq!(state.leader, NO_LEADER, "fenced until it heartbeats");
        }
        let auto = image.topic_by_name("auto").unwrap();
        assert!(!auto.declared);
        assert_eq!(auto.settings["retention.ms"], "60000");
        assert_eq!(image.next_producer_id(), 1000);
        // Retried (the broker crashed before it recorded the adoption):
        // nothing is written twice.
        assert_eq!(
            adopt(&image, (1, 1), &adoption(), &BTreeSet::new()),
            Ok(Vec::new())
        );
    }

    #[test]
    fn a_name_taken_by_another_topic_is_refused() {
        let mut image = MetadataImage::default();
        adopted(&mut image, &adoption()).unwrap();
        let mut other = adoption();
        other.topics[1].topic_id = Uuid::from_u128(9);
        let error = adopt(&image, (1, 1), &other, &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(error, DecideError::AdoptionConflict { .. }),
            "{error}"
        );
        // What a damaged registry could say is refused, not recorded.
        let mut bad = adoption();
        bad.topics[0].partitions = 0;
        bad.topics[1].name = "no/slashes".into();
        for topic in bad.topics {
            let one = Adoption {
                topics: vec![topic],
                producer_id_end: 0,
            };
            let error = adopt(&MetadataImage::default(), (1, 1), &one, &BTreeSet::new());
            assert!(
                matches!(error, Err(DecideError::InvalidTopicName { .. })),
                "{error:?}"
            );
        }
    }
}
