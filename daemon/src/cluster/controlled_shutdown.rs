//! Controlled shutdown (SIGTERM, `systemctl stop`/`restart`): before a
//! broker exits it asks the controller to fence it, which moves its
//! leaderships to other ISR members and takes it out of every ISR, so
//! clients move on without waiting for its session to run out. It first
//! waits, bounded, while leaving would take a replicated partition below
//! `min.insync.replicas` (a rolling restart that went too fast: the broker
//! restarted before it is back in sync). These are the decisions, from the
//! metadata image; `ClusterMember::shut_down_controlled` drives them.

use crate::controller::image::MetadataImage;
use crate::controller::records::BrokerId;

/// Replicated partitions (topic, index) whose ISR holds `self_id` and would
/// fall below `min_insync(topic)` without it.
pub fn held_at_min_isr(
    image: &MetadataImage,
    self_id: BrokerId,
    min_insync: impl Fn(&str) -> usize,
) -> Vec<(String, i32)> {
    let mut held = Vec::new();
    for topic in image.topics() {
        let min = min_insync(&topic.name);
        for (index, state) in (0..).zip(&topic.partitions) {
            let replicated = state.replicas.len() > 1;
            if replicated && state.isr.contains(&self_id) && state.isr.len() - 1 < min {
                held.push((topic.name.clone(), index));
            }
        }
    }
    held
}

/// Whether the image shows `self_id` fenced and leading nothing: its
/// partitions have moved (or gone offline, where it was the last replica).
pub fn handed_over(image: &MetadataImage, self_id: BrokerId) -> bool {
    let fenced = image.broker(self_id).is_none_or(|entry| entry.fenced);
    fenced
        && image
            .topics()
            .all(|topic| topic.partitions.iter().all(|p| p.leader != self_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::{FenceReason, NO_LEADER, PartitionState, Record, RecordBatch};
    use crate::controller::tests::registration;

    fn image(isr: Vec<BrokerId>, leader: BrokerId, fenced: bool) -> MetadataImage {
        let mut image = MetadataImage::default();
        let topic_id = uuid::Uuid::from_u128(5);
        let mut records = vec![
            Record::RegisterBroker(registration(1, 1)),
            Record::RegisterBroker(registration(2, 1)),
            Record::RegisterBroker(registration(3, 1)),
        ];
        for broker_id in [1, 2, 3] {
            records.push(Record::UnfenceBroker {
                broker_id,
                broker_epoch: 1,
            });
        }
        records.extend([
            Record::CreateTopic {
                topic_id,
                name: "orders".into(),
                declared: true,
                settings: Default::default(),
            },
            Record::CreatePartition {
                topic_id,
                partition: 0,
                state: PartitionState {
                    replicas: vec![1, 2, 3],
                    isr,
                    leader,
                    leader_epoch: 1,
                    partition_epoch: 1,
                    adding: Vec::new(),
                    removing: Vec::new(),
                },
            },
            Record::CreateTopic {
                topic_id: uuid::Uuid::from_u128(6),
                name: "solo".into(),
                declared: true,
                settings: Default::default(),
            },
            Record::CreatePartition {
                topic_id: uuid::Uuid::from_u128(6),
                partition: 0,
                state: PartitionState {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: NO_LEADER,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding: Vec::new(),
                    removing: Vec::new(),
                },
            },
        ]);
        image
            .apply(1, &RecordBatch::new(records))
            .expect("a valid image");
        if fenced {
            let fence = RecordBatch::new(vec![Record::FenceBroker {
                broker_id: 1,
                broker_epoch: 1,
                reason: FenceReason::Requested,
            }]);
            image.apply(2, &fence).expect("fenced");
        }
        image
    }

    #[test]
    fn a_broker_waits_while_leaving_would_drop_an_isr_below_its_minimum() {
        let min_two = |_: &str| 2;
        let full = image(vec![1, 2, 3], 1, false);
        assert!(held_at_min_isr(&full, 1, min_two).is_empty());
        let short = image(vec![1, 2], 1, false);
        assert_eq!(
            held_at_min_isr(&short, 1, min_two),
            vec![("orders".to_string(), 0)]
        );
        assert!(
            held_at_min_isr(&short, 3, min_two).is_empty(),
            "3 is not in the ISR"
        );
        assert!(
            held_at_min_isr(&short, 1, |_| 1).is_empty(),
            "one replica left is enough at min.insync.replicas = 1"
        );
    }

    #[test]
    fn handed_over_once_fenced_and_leading_nothing() {
        assert!(!handed_over(&image(vec![1, 2, 3], 1, false), 1));
        assert!(handed_over(&image(vec![2, 3], 2, true), 1));
        assert!(!handed_over(&image(vec![2, 3], 2, false), 1), "not fenced");
    }
}
