//! Topic changes a broker forwards from the Kafka API (CreateTopics,
//! CreatePartitions, DeleteTopics): decided by the active controller
//! against the image like any request, so an API topic lives in the
//! metadata log beside the declared ones (`declared = false`). Declared
//! and internal topics are refused: the spec, and the controller, own them.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::decide::{NewTopic, add_partitions, create_topic};
use super::error::{DecideError, code};
use super::image::MetadataImage;
use super::placement::PlacementBroker;
use super::records::{Record, RecordBatch};

/// One change, as a broker asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    /// `topic_id` is drawn by the asking broker (randomness stays out of
    /// the controller).
    Create {
        topic_id: Uuid,
        name: String,
        partitions: i32,
        replication_factor: i16,
        settings: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// Grows the topic to `total` partitions.
    AddPartitions {
        name: String,
        total: i32,
        validate_only: bool,
    },
    Delete {
        name: String,
    },
}

impl TopicChange {
    pub fn name(&self) -> &str {
        match self {
            TopicChange::Create { name, .. }
            | TopicChange::AddPartitions { name, .. }
            | TopicChange::Delete { name } => name,
        }
    }

    pub fn validate_only(&self) -> bool {
        match self {
            TopicChange::Create { validate_only, .. }
            | TopicChange::AddPartitions { validate_only, .. } => *validate_only,
            TopicChange::Delete { .. } => false,
        }
    }
}

/// Why a topic change is refused, with the Kafka error code the broker
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicChangeError {
    #[error("topic {0} is declared in the spec: change it there")]
    Declared(String),
    #[error("{0} is an internal topic")]
    Internal(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("topic {name} has {have} partitions; it can only grow")]
    CannotShrink { name: String, have: i32 },
    #[error("{0}")]
    Decide(#[from] DecideError),
}

impl TopicChangeError {
    /// Kafka's code for the refusal (the broker answers it as it is).
    pub fn code(&self) -> i16 {
        match self {
            TopicChangeError::Declared(_) | TopicChangeError::Internal(_) => code::POLICY_VIOLATION,
            TopicChangeError::UnknownTopic(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
            TopicChangeError::CannotShrink { .. } => code::INVALID_PARTITIONS,
            TopicChangeError::Decide(error) => error.code(),
        }
    }
}

/// The records `change` writes, `None` for a valid `validate_only` one.
/// `broker_id` at `broker_epoch` asks: a request from a previous life of
/// the broker is refused.
pub fn decide_topic_change(
    image: &MetadataImage,
    brokers: &[PlacementBroker],
    (broker_id, broker_epoch): (i32, i64),
    change: &TopicChange,
) -> Result<Option<RecordBatch>, TopicChangeError> {
    let current = image
        .broker(broker_id)
        .ok_or(DecideError::BrokerNotRegistered(broker_id))?
        .broker_epoch;
    if current != broker_epoch {
        return Err(DecideError::StaleBrokerEpoch {
            broker_id,
            got: broker_epoch,
            current,
        }
        .into());
    }
    let name = change.name();
    if name.starts_with("__") {
        return Err(TopicChangeError::Internal(name.to_string()));
    }
    let existing = image.topic_by_name(name);
    // A create retried after its answer was lost finds its own topic.
    if let (TopicChange::Create { topic_id, .. }, Some(topic)) = (change, existing)
        && topic.topic_id == *topic_id
    {
        return Ok(None);
    }
    let batch = match change {
        TopicChange::Create {
            topic_id,
            name,
            partitions,
            replication_factor,
            settings,
            ..
        } => {
            let topic = NewTopic {
                topic_id: *topic_id,
                name: name.clone(),
                declared: false,
                settings: settings.clone(),
                partitions: *partitions,
                replication_factor: *replication_factor,
                replicas: None,
            };
            create_topic(image, &topic, brokers)?
        }
        TopicChange::AddPartitions { total, .. } => {
            let topic = existing.ok_or_else(|| TopicChangeError::UnknownTopic(name.into()))?;
            if topic.declared {
                return Err(TopicChangeError::Declared(name.to_string()));
            }
            let have = topic.partitions.len() as i32;
            if *total <= have {
                return Err(TopicChangeError::CannotShrink {
                    name: name.into(),
                    have,
                });
            }
            add_partitions(image, topic.topic_id, *total, brokers, None)?
        }
        TopicChange::Delete { .. } => {
            let topic = existing.ok_or_else(|| TopicChangeError::UnknownTopic(name.into()))?;
            if topic.declared {
                return Err(TopicChangeError::Declared(name.to_string()));
            }
            RecordBatch::new(vec![Record::DeleteTopic {
                topic_id: topic.topic_id,
            }])
        }
    };
    Ok((!change.validate_only()).then_some(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::Record;
    use crate::controller::tests::{declared, registration};

    /// Brokers 1 and 2 registered (epochs 1 and 1), and declared topic `d`.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let batch = RecordBatch::new(vec![
            Record::RegisterBroker(registration(1, 1)),
            Record::RegisterBroker(registration(2, 1)),
        ]);
        image.apply(1, &batch).unwrap();
        let topic = NewTopic {
            topic_id: Uuid::from_u128(1),
            name: "d".into(),
            declared: true,
            settings: BTreeMap::new(),
            partitions: 2,
            replication_factor: 1,
            replicas: None,
        };
        let batch = create_topic(&image, &topic, &brokers()).unwrap();
        image.apply(2, &batch).unwrap();
        image
    }

    fn brokers() -> Vec<PlacementBroker> {
        declared(&[(1, None), (2, None), (3, None)])
    }

    fn create(
        name: &str,
        partitions: i32,
        settings: &[(&str, &str)],
        validate: bool,
    ) -> TopicChange {
        TopicChange::Create {
            topic_id: Uuid::from_u128(9),
            name: name.into(),
            partitions,
            replication_factor: 1,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            validate_only: validate,
        }
    }

    fn grow(name: &str, total: i32) -> TopicChange {
        TopicChange::AddPartitions {
            name: name.into(),
            total,
            validate_only: false,
        }
    }

    fn code(image: &MetadataImage, asker: (i32, i64), change: &TopicChange) -> i16 {
        decide_topic_change(image, &brokers(), asker, change)
            .expect_err("refused")
            .code()
    }

    #[test]
    fn an_api_topic_is_created_not_declared_and_grows_over_the_declared_brokers() {
        let mut image = image();
        let asker = (2, 1);
        let change = create("api", 3, &[("retention.ms", "60000")], false);
        let batch = decide_topic_change(&image, &brokers(), asker, &change)
            .unwrap()
            .expect("records");
        image.apply(3, &batch).unwrap();
        let topic = image.topic_by_name("api").unwrap();
        assert!(!topic.declared);
        assert_eq!(topic.topic_id, Uuid::from_u128(9));
        assert_eq!(topic.settings["retention.ms"], "60000");
        let replicas: Vec<i32> = topic.partitions.iter().map(|p| p.replicas[0]).collect();
        assert_eq!(replicas.len(), 3);
        assert!(
            replicas.contains(&3),
            "placed over declared brokers: {replicas:?}"
        );

        let batch = decide_topic_change(&image, &brokers(), asker, &grow("api", 5))
            .unwrap()
            .expect("records");
        image.apply(4, &batch).unwrap();
        assert_eq!(image.topic_by_name("api").unwrap().partitions.len(), 5);
        let delete = TopicChange::Delete { name: "api".into() };
        let batch = decide_topic_change(&image, &brokers(), asker, &delete)
            .unwrap()
            .expect("records");
        let mut deleted = image.clone();
        deleted.apply(5, &batch).unwrap();
        assert!(deleted.topic_by_name("api").is_none());

        // A retried create (same id) is done already.
        assert_eq!(
            decide_topic_change(&image, &brokers(), asker, &change),
            Ok(None)
        );
        // Validate-only writes nothing.
        let mut probe = create("other", 1, &[], true);
        if let TopicChange::Create { topic_id, .. } = &mut probe {
            *topic_id = Uuid::from_u128(10);
        }
        assert_eq!(
            decide_topic_change(&image, &brokers(), asker, &probe),
            Ok(None)
        );
    }

    #[test]
    fn refusals_carry_kafka_codes() {
        let image = image();
        let asker = (1, 1);
        assert_eq!(
            code(&image, asker, &create("d", 1, &[], false)),
            36,
            "exists"
        );
        assert_eq!(code(&image, asker, &grow("d", 4)), 44, "declared");
        assert_eq!(
            code(&image, asker, &create("__x", 1, &[], false)),
            44,
            "internal"
        );
        assert_eq!(code(&image, asker, &grow("nope", 4)), 3, "unknown");
        assert_eq!(
            code(&image, asker, &grow("d", 2)),
            44,
            "declared before size"
        );
        assert_eq!(code(&image, asker, &create("bad name!", 1, &[], false)), 17);
        assert_eq!(code(&image, asker, &create("x", 0, &[], false)), 37);
        assert_eq!(
            code(&image, asker, &create("x", 1, &[("no.such", "1")], false)),
            40
        );
        assert_eq!(
            code(&image, (1, 7), &create("x", 1, &[], false)),
            77,
            "stale epoch"
        );
        assert_eq!(code(&image, (5, 1), &create("x", 1, &[], false)), 102);
        let delete = |name: &str| TopicChange::Delete { name: name.into() };
        assert_eq!(code(&image, asker, &delete("d")), 44, "declared");
        assert_eq!(code(&image, asker, &delete("nope")), 3);
        assert_eq!(code(&image, asker, &delete("__consumer_offsets")), 44);
    }

    #[test]
    fn an_api_topic_only_grows() {
        let mut image = image();
        let change = create("api", 3, &[], false);
        let batch = decide_topic_change(&image, &brokers(), (1, 1), &change)
            .unwrap()
            .unwrap();
        image.apply(3, &batch).unwrap();
        assert_eq!(code(&image, (1, 1), &grow("api", 3)), 37);
        assert_eq!(code(&image, (1, 1), &grow("api", 1)), 37);
    }
}
