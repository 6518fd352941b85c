//! What applying a spec writes: a pure function from the image and the
//! spec the controller holds to the records that make the image match it
//! (plan §5.2). Declared topics missing from the image are created;
//! declared topics with fewer partitions get the rest (partitions are never
//! removed); settings are set or removed to match the file; a declared
//! topic gone from the file is deleted only if the file it was declared in
//! opted in (`allow_delete`). Topics created through the API are left as
//! they are. Existing partitions move only when the spec changes their
//! replicas (an explicit list, or the replication factor): that starts a
//! reassignment (reassign.rs).

use std::collections::{BTreeMap, BTreeSet};

use super::decide::{NewTopic, add_partitions, create_topic};
use super::error::DecideError;
use super::image::MetadataImage;
use super::placement::PlacementBroker;
use super::reassign::plan_reassignments;
use super::records::{BrokerId, Record, RecordBatch};

/// The spec as the controller wants it in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSpec {
    /// `ClusterSpec::source_hash`.
    pub hash: String,
    pub text: String,
    /// Declared topics, with ids drawn by the caller.
    pub topics: Vec<NewTopic>,
    /// The declared brokers, for placement.
    pub brokers: Vec<PlacementBroker>,
    /// Declared topics the previous spec let go (`allow_delete = true`):
    /// deleted if the image holds them and `topics` does not.
    pub deletable: BTreeSet<String>,
    /// Internal topics (`__consumer_offsets`), created by the active
    /// controller whatever spec is applied (`plan_internal_topics`).
    pub internal: Vec<NewTopic>,
    /// `controller.adopt_broker`: nothing is planned until it registered.
    pub adopt_broker: Option<BrokerId>,
}

/// A change the plan could not make, reported and skipped: the rest of the
/// spec still applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub topic: String,
    pub error: DecideError,
}

/// The records that bring `image` to `desired`, the `AppliedSpec` record
/// first; `None` when the image already holds this spec.
pub fn plan_spec(
    image: &MetadataImage,
    desired: &DesiredSpec,
) -> (Option<RecordBatch>, Vec<Skipped>) {
    if image
        .applied_spec()
        .is_some_and(|spec| spec.hash == desired.hash)
    {
        return (None, Vec::new());
    }
    let mut records = vec![Record::AppliedSpec {
        hash: desired.hash.clone(),
        text: desired.text.clone(),
    }];
    let mut skipped = Vec::new();
    let mut skip = |topic: &str, error| {
        skipped.push(Skipped {
            topic: topic.to_string(),
            error,
        })
    };
    for topic in &desired.topics {
        let Some(existing) = image.topic_by_name(&topic.name) else {
            match create_topic(image, topic, &desired.brokers) {
                Ok(batch) => records.extend(batch.records),
                Err(error) => skip(&topic.name, error),
            }
            continue;
        };
        if !existing.declared {
            continue;
        }
        let have = existing.partitions.len() as i32;
        if topic.partitions > have {
            let explicit = topic.replicas.as_deref();
            match add_partitions(
                image,
                existing.topic_id,
                topic.partitions,
                &desired.brokers,
                explicit,
            ) {
                Ok(batch) => records.extend(batch.records),
                Err(error) => skip(&topic.name, error),
            }
        }
        match plan_reassignments(image, existing, topic, &desired.brokers) {
            Ok(changes) => records.extend(changes),
            Err(error) => skip(&topic.name, error),
        }
        records.extend(setting_changes(
            existing.topic_id,
            &existing.settings,
            &topic.settings,
        ));
    }
    let wanted: BTreeSet<&str> = desired.topics.iter().map(|t| t.name.as_str()).collect();
    for topic in image.topics() {
        if topic.declared
            && !wanted.contains(topic.name.as_str())
            && desired.deletable.contains(&topic.name)
        {
            records.push(Record::DeleteTopic {
                topic_id: topic.topic_id,
            });
        }
    }
    (Some(RecordBatch::new(records)), skipped)
}

/// Creates each internal topic the image lacks once at least its
/// replication factor of brokers are registered and unfenced, so it never
/// gets fewer replicas than the spec asks (placed over the declared
/// brokers, like any topic). `None` while there is nothing to do.
pub fn plan_internal_topics(
    image: &MetadataImage,
    desired: &DesiredSpec,
) -> (Option<RecordBatch>, Vec<Skipped>) {
    let live = image.brokers().filter(|entry| !entry.fenced).count();
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for topic in &desired.internal {
        let enough = usize::try_from(topic.replication_factor).is_ok_and(|rf| live >= rf);
        if image.topic_by_name(&topic.name).is_some() || !enough {
            continue;
        }
        match create_topic(image, topic, &desired.brokers) {
            Ok(batch) => records.extend(batch.records),
            Err(error) => skipped.push(Skipped {
                topic: topic.name.clone(),
                error,
            }),
        }
    }
    let batch = (!records.is_empty()).then(|| RecordBatch::new(records));
    (batch, skipped)
}

fn setting_changes(
    topic_id: uuid::Uuid,
    have: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Vec<Record> {
    let set = want
        .iter()
        .filter(|(key, value)| have.get(*key) != Some(value))
        .map(|(key, value)| Record::TopicConfig {
            topic_id,
            key: key.clone(),
            value: Some(value.clone()),
        });
    let removed = have
        .keys()
        .filter(|key| !want.contains_key(*key))
        .map(|key| Record::TopicConfig {
            topic_id,
            key: key.clone(),
            value: None,
        });
    set.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::controller::tests::declared;

    fn topic(name: &str, id: u128, partitions: i32, settings: &[(&str, &str)]) -> NewTopic {
        NewTopic {
            topic_id: Uuid::from_u128(id),
            name: name.into(),
            declared: true,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            partitions,
            replication_factor: 1,
            replicas: None,
        }
    }

    fn spec(hash: &str, topics: Vec<NewTopic>, deletable: &[&str]) -> DesiredSpec {
        DesiredSpec {
            hash: hash.into(),
            text: format!("# {hash}"),
            topics,
            brokers: declared(&[(1, None), (2, None), (3, None)]),
            deletable: deletable.iter().map(|s| s.to_string()).collect(),
            internal: Vec::new(),
            adopt_broker: None,
        }
    }

    fn applied(image: &mut MetadataImage, desired: &DesiredSpec) {
        let (batch, skipped) = plan_spec(image, desired);
        assert!(skipped.is_empty(), "{skipped:?}");
        let index = image.applied_index() + 1;
        image.apply(index, &batch.expect("a change")).unwrap();
    }

    #[test]
    fn a_spec_creates_grows_reconfigures_and_deletes_only_with_opt_in() {
        let mut image = MetadataImage::default();
        let first = spec(
            "0000000000000001",
            vec![
                topic("a", 1, 2, &[("retention.ms", "1000")]),
                topic("b", 2, 1, &[]),
                topic("c", 3, 1, &[]),
            ],
            &[],
        );
        applied(&mut image, &first);
        assert_eq!(
            plan_spec(&image, &first),
            (None, Vec::new()),
            "applied once"
        );
        let placed: Vec<_> = image.topic_by_name("a").unwrap().partitions.clone();

        // a grows and changes a setting, b loses its table (not allowed to
        // be deleted), c goes with its opt-in, d is new. Ids drawn anew are
        // ignored for topics that exist.
        let second = spec(
            "0000000000000002",
            vec![
                topic("a", 11, 4, &[("cleanup.policy", "compact")]),
                topic("d", 4, 3, &[]),
            ],
            &["c"],
        );
        applied(&mut image, &second);
        let a = image.topic_by_name("a").unwrap();
        assert_eq!(a.topic_id, Uuid::from_u128(1));
        assert_eq!(a.partitions.len(), 4);
        assert_eq!(
            &a.partitions[..2],
            &placed[..],
            "existing partitions stay put"
        );
        assert_eq!(
            a.settings,
            [("cleanup.policy".to_string(), "compact".to_string())].into()
        );
        assert!(image.topic_by_name("b").is_some(), "no opt-in, kept");
        assert!(
            image.topic_by_name("c").is_none(),
            "deleted with its opt-in"
        );
        assert_eq!(image.topic_by_name("d").unwrap().partitions.len(), 3);
        assert_eq!(image.applied_spec().unwrap().hash, "0000000000000002");
    }

    /// Brokers 1 to 4 registered and unfenced.
    fn four_brokers() -> MetadataImage {
        use crate::controller::tests::registration;
        let mut records: Vec<Record> = (1..=4)
            .map(|id| Record::RegisterBroker(registration(id, 1)))
            .collect();
        records.extend((1..=4).map(|broker_id| Record::UnfenceBroker {
            broker_id,
            broker_epoch: 1,
        }));
        let mut image = MetadataImage::default();
        image.apply(1, &RecordBatch::new(records)).unwrap();
        image
    }

    fn moved(
        mut desired: DesiredSpec,
        hash: &str,
        lists: Option<Vec<Vec<BrokerId>>>,
        rf: i16,
    ) -> DesiredSpec {
        desired.hash = hash.into();
        desired.brokers = declared(&[(1, None), (2, None), (3, None), (4, None)]);
        desired.topics[0].replicas = lists;
        desired.topics[0].replication_factor = rf;
        desired
    }

    /// Topic `a`, one partition on brokers 1 and 2.
    fn on_1_and_2() -> DesiredSpec {
        let one = spec("0000000000000001", vec![topic("a", 1, 1, &[])], &[]);
        moved(one, "0000000000000001", Some(vec![vec![1, 2]]), 2)
    }

    /// A changed replica list starts a reassignment that keeps the old
    /// replicas; it completes once the added one is in the ISR, and the
    /// removed leader hands over.
    #[test]
    fn a_changed_replica_list_adds_waits_for_the_isr_then_removes() {
        use crate::controller::decide::change_partition;
        use crate::controller::reassign::{completions, is_reassigning};
        let mut image = four_brokers();
        let first = on_1_and_2();
        applied(&mut image, &first);
        let a = image.topic_by_name("a").unwrap().topic_id;
        let before = image.partition(&a, 0).unwrap().clone();
        assert_eq!((before.replicas.clone(), before.leader), (vec![1, 2], 1));
        assert!(completions(&image).is_empty());

        applied(
            &mut image,
            &moved(first.clone(), "0000000000000002", Some(vec![vec![2, 3]]), 2),
        );
        let started = image.partition(&a, 0).unwrap().clone();
        assert_eq!(started.replicas, vec![2, 3, 1]);
        assert_eq!(
            (started.adding.clone(), started.removing.clone()),
            (vec![3], vec![1])
        );
        assert_eq!(started.leader, 1, "the leader stays while 3 catches up");
        assert!(completions(&image).is_empty(), "3 is not in the ISR yet");

        // The leader's AlterPartition brings 3 in.
        let expanded = change_partition(&started, vec![1, 2, 3], 1).unwrap();
        let next = image.applied_index() + 1;
        image
            .apply(
                next,
                &RecordBatch::new(vec![Record::PartitionChange {
                    topic_id: a,
                    partition: 0,
                    state: expanded,
                }]),
            )
            .unwrap();
        let done = completions(&image);
        assert_eq!(done.len(), 1);
        let next = image.applied_index() + 1;
        image.apply(next, &RecordBatch::new(done)).unwrap();
        image.check_invariants();
        let after = image.partition(&a, 0).unwrap();
        assert_eq!(
            (after.replicas.clone(), after.isr.clone()),
            (vec![2, 3], vec![2, 3])
        );
        assert_eq!(after.leader, 2);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        assert!(!is_reassigning(after));
    }

    /// Without explicit lists, a bigger replication factor adds the least
    /// loaded declared broker and a smaller one drops the last replica.
    #[test]
    fn a_changed_replication_factor_grows_or_cuts_the_replicas() {
        let mut image = four_brokers();
        let first = on_1_and_2();
        applied(&mut image, &first);
        let a = image.topic_by_name("a").unwrap().topic_id;
        applied(
            &mut image,
            &moved(first.clone(), "0000000000000002", None, 3),
        );
        let grown = image.partition(&a, 0).unwrap().clone();
        assert_eq!(grown.replicas, vec![1, 2, 3]);
        assert_eq!(grown.adding, vec![3]);

        let mut image = four_brokers();
        applied(&mut image, &first);
        applied(&mut image, &moved(first, "0000000000000003", None, 1));
        let cut = image.partition(&a, 0).unwrap();
        assert_eq!(
            (cut.replicas.clone(), cut.removing.clone()),
            (vec![1, 2], vec![2])
        );
        let (batch, skipped) = plan_spec(
            &image,
            &moved(
                spec("0000000000000004", vec![topic("a", 1, 1, &[])], &[]),
                "0000000000000004",
                None,
                5,
            ),
        );
        assert_eq!(skipped.len(), 1, "5 replicas of 4 brokers: {batch:?}");
    }

    #[test]
    fn a_topic_the_spec_cannot_hold_is_skipped_and_the_rest_applies() {
        let mut image = MetadataImage::default();
        let desired = spec(
            "0000000000000003",
            vec![
                topic("ok", 1, 1, &[]),
                topic("bad", 2, 1, &[("no.such.key", "1")]),
            ],
            &[],
        );
        let (batch, skipped) = plan_spec(&image, &desired);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].topic, "bad");
        image.apply(1, &batch.unwrap()).unwrap();
        assert!(image.topic_by_name("ok").is_some());
        assert!(image.topic_by_name("bad").is_none());
    }
}
