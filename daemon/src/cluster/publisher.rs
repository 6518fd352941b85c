//! From the applied metadata image to what the broker serves: the cluster
//! view its Metadata answers come from, and the partitions placed on this
//! broker with their leadership. Pure functions; `serve_image` applies them
//! whenever the image or this broker's lease changes.
//!
//! This broker leads a partition only while the image names it leader *and*
//! its lease holds (cluster/lifecycle.rs): a broker cut off from the
//! controller stops answering as leader before the controller gives the
//! partition to anyone else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::runtime::MemberStatus;
use crate::broker::{
    Broker, ClusterView, HostedPartition, Leadership, TopicAssignment, ViewBroker, ViewPartition,
    ViewTopic,
};
use crate::controller::image::MetadataImage;
use crate::controller::reassign::target;
use crate::controller::records::{BrokerId, NO_LEADER};

/// What Metadata shows: the unfenced brokers, then the fenced ones (see
/// `ClusterView::fenced`: a client keeps its handle on a dead leader, so
/// the answer naming the new leader moves the partition at once); as
/// controller, the active controller if it is unfenced, else the lowest
/// live broker (as KRaft answers when the controller is not a broker).
/// While this broker's lease is out (cut off from the controller) it
/// leaves itself out of both lists and names no leader where the image
/// names it: it refuses writes then, and naming itself would keep clients
/// asking it in a loop, while a broker missing from a Metadata answer is
/// dropped by clients (librdkafka decommissions it), which then ask the
/// others.
pub fn cluster_view(
    image: &MetadataImage,
    controller: Option<BrokerId>,
    self_id: BrokerId,
    lease_valid: bool,
) -> ClusterView {
    let (fenced, brokers): (Vec<_>, Vec<_>) = image
        .brokers()
        .filter(|entry| lease_valid || entry.registration.broker_id != self_id)
        .map(|entry| {
            let broker = ViewBroker {
                id: entry.registration.broker_id,
                host: entry.registration.kafka.host.clone(),
                port: i32::from(entry.registration.kafka.port),
                rack: entry.registration.rack.clone(),
            };
            (entry.fenced, broker)
        })
        .partition(|(fenced, _)| *fenced);
    let brokers: Vec<ViewBroker> = brokers.into_iter().map(|(_, b)| b).collect();
    let fenced: Vec<ViewBroker> = fenced.into_iter().map(|(_, b)| b).collect();
    let controller_id = controller
        .filter(|id| brokers.iter().any(|b| b.id == *id))
        .or_else(|| brokers.iter().map(|b| b.id).min())
        .unwrap_or(-1);
    let topics = image
        .topics()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|state| ViewPartition {
                    leader: match state.leader {
                        leader if leader == self_id && !lease_valid => NO_LEADER,
                        leader => leader,
                    },
                    leader_epoch: state.leader_epoch,
                    replicas: state.replicas.clone(),
                    isr: state.isr.clone(),
                    offline: state
                        .replicas
                        .iter()
                        .copied()
                        .filter(|id| !image.is_unfenced(*id))
                        .collect(),
                })
                .collect();
            let view = ViewTopic {
                id: topic.topic_id,
                partitions,
            };
            (topic.name.clone(), view)
        })
        .collect::<BTreeMap<_, _>>();
    ClusterView {
        brokers,
        fenced,
        controller_id,
        topics,
    }
}

/// The topics with a partition placed on `self_id`, and how each is led.
pub fn assignments(
    image: &MetadataImage,
    self_id: BrokerId,
    lease_valid: bool,
) -> Vec<TopicAssignment> {
    image
        .topics()
        .filter_map(|topic| {
            let hosted: Vec<HostedPartition> = (0..)
                .zip(&topic.partitions)
                .filter(|(_, state)| state.replicas.contains(&self_id))
                .map(|(index, state)| {
                    let leadership = match state.leader {
                        leader if leader == self_id && lease_valid => Leadership::Leader {
                            epoch: state.leader_epoch,
                        },
                        NO_LEADER => Leadership::NotLeader {
                            leader: None,
                            epoch: state.leader_epoch,
                        },
                        leader => Leadership::NotLeader {
                            leader: Some(leader),
                            epoch: state.leader_epoch,
                        },
                    };
                    HostedPartition {
                        index,
                        leadership,
                        replicas: state.replicas.clone(),
                        isr: state.isr.clone(),
                        partition_epoch: state.partition_epoch,
                        removing: state.removing.clone(),
                    }
                })
                .collect();
            (!hosted.is_empty()).then(|| TopicAssignment {
                name: topic.name.clone(),
                id: topic.topic_id,
                configs: topic
                    .settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                partition_count: topic.partitions.len() as i32,
                replication_factor: topic
                    .partitions
                    .first()
                    .map_or(1, |p| i16::try_from(target(p).len()).unwrap_or(i16::MAX)),
                hosted,
            })
        })
        .collect()
}

/// Every topic of the image (name, id) with the partitions it places on
/// `self_id`: a partition open here and not among them was moved away.
pub fn placed_here(
    image: &MetadataImage,
    self_id: BrokerId,
) -> Vec<(String, uuid::Uuid, BTreeSet<i32>)> {
    image
        .topics()
        .map(|topic| {
            let placed = (0..)
                .zip(&topic.partitions)
                .filter(|(_, state)| state.replicas.contains(&self_id))
                .map(|(index, _)| index)
                .collect();
            (topic.name.clone(), topic.topic_id, placed)
        })
        .collect()
}

/// Topics (name, id) in `before` whose id `after` no longer holds: the
/// metadata log deleted them. Only what a broker saw alive is ever retired
/// this way, so a broker catching up after a restart (its image passing
/// through states before a topic's creation) deletes nothing it should keep.
pub fn deleted_topics(before: &MetadataImage, after: &MetadataImage) -> Vec<(String, uuid::Uuid)> {
    before
        .topics()
        .filter(|topic| after.topic(&topic.topic_id).is_none())
        .map(|topic| (topic.name.clone(), topic.topic_id))
        .collect()
}

/// Keeps `broker` serving what the image assigns it, until the image
/// channel closes. File I/O (opening logs) runs off the async workers.
pub async fn serve_image(
    broker: Arc<Broker>,
    groups: Arc<crate::group::GroupCoordinator>,
    fetcher: Arc<super::replica_fetcher::ReplicaFetcher>,
    self_id: BrokerId,
    mut image: watch::Receiver<Arc<MetadataImage>>,
    mut member: watch::Receiver<MemberStatus>,
) {
    let mut served: Option<(u64, bool, Option<BrokerId>)> = None;
    // The image last served: a topic in it and not in the next was deleted.
    let mut previous: Option<Arc<MetadataImage>> = None;
    loop {
        let current = image.borrow_and_update().clone();
        let status = *member.borrow_and_update();
        let lease_valid = status
            .lease_until
            .is_some_and(|until| Instant::now() < until);
        let key = (current.applied_index(), lease_valid, status.controller);
        if served != Some(key) {
            let target = broker.clone();
            let groups = groups.clone();
            let fetcher = fetcher.clone();
            let before = previous.replace(current.clone());
            let applied = tokio::task::spawn_blocking(move || {
                for (name, id) in before.iter().flat_map(|b| deleted_topics(b, &current)) {
                    if let Err(error) = target.retire_topic(&name, id) {
                        // Left on disk, unserved; logged for the operator.
                        tracing::error!(event = "topic_retire_failed", topic = %name, %error);
                    }
                }
                for assignment in assignments(&current, self_id, lease_valid) {
                    if let Err(error) = target.apply_assignment(&assignment) {
                        tracing::error!(event = "assignment_failed", topic = %assignment.name, %error);
                    }
                }
                target.set_cluster_view(cluster_view(
                    &current,
                    status.controller,
                    self_id,
                    lease_valid,
                ));
                fetcher.follow(&target, &current);
                // After the fetcher let go of them.
                for (name, id, placed) in placed_here(&current, self_id) {
                    let moved_to = |index: i32| {
                        let state = current.partition(&id, index);
                        Leadership::NotLeader {
                            leader: state.map(|s| s.leader).filter(|l| *l != NO_LEADER),
                            epoch: state.map_or(0, |s| s.leader_epoch),
                        }
                    };
                    if let Err(error) = target.retire_partitions(&name, id, &placed, &moved_to) {
                        tracing::error!(event = "partition_retire_failed", topic = %name, %error);
                    }
                }
                groups.follow_leadership(&target);
            })
            .await;
            if let Err(error) = applied {
                tracing::error!(event = "assignment_task_failed", %error);
            }
            served = Some(key);
        }
        // The lease may end without any message: wake for it.
        let lease_end = status
            .lease_until
            .filter(|until| *until > Instant::now())
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            changed = image.changed() => if changed.is_err() { return },
            changed = member.changed() => if changed.is_err() { return },
            _ = async { match lease_end {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            } } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::records::{PartitionState, Record, RecordBatch};
    use crate::controller::tests::registration;

    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let topic_id = uuid::Uuid::from_u128(9);
        let state = |replica: BrokerId, leader: BrokerId| PartitionState {
            replicas: vec![replica],
            isr: vec![replica],
            leader,
            leader_epoch: 3,
            partition_epoch: 4,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        let mut records = vec![
            Record::RegisterBroker(registration(1, 1)),
            Record::RegisterBroker(registration(2, 1)),
        ];
        records.push(Record::CreateTopic {
            topic_id,
            name: "t".into(),
            declared: true,
            settings: [("retention.ms".to_string(), "1000".to_string())].into(),
        });
        for (partition, replica) in [1, 2, 1].into_iter().enumerate() {
            records.push(Record::CreatePartition {
                topic_id,
                partition: partition as i32,
                state: state(replica, NO_LEADER),
            });
        }
        image
            .apply(1, &RecordBatch::new(records))
            .expect("registrations and a topic");
        let unfence = RecordBatch::new(vec![
            Record::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 1,
            },
            Record::PartitionChange {
                topic_id,
                partition: 0,
                state: PartitionState {
                    leader: 1,
                    leader_epoch: 4,
                    partition_epoch: 5,
                    ..state(1, 1)
                },
            },
        ]);
        image
            .apply(2, &unfence)
            .expect("broker 1 leads partition 0");
        image
    }

    #[test]
    fn the_view_lists_live_brokers_and_every_partition() {
        let image = image();
        let view = cluster_view(&image, Some(2), 3, true);
        assert_eq!(
            view.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(
            view.fenced.iter().map(|b| b.id).collect::<Vec<_>>(),
            vec![2],
            "the fenced broker is listed apart"
        );
        assert_eq!(
            view.controller_id, 1,
            "the active controller is fenced: a live broker"
        );
        let topic = &view.topics["t"];
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(
            (topic.partitions[0].leader, topic.partitions[0].leader_epoch),
            (1, 4)
        );
        assert_eq!(topic.partitions[1].leader, NO_LEADER);
        assert_eq!(topic.partitions[1].offline, vec![2]);
        assert_eq!(cluster_view(&image, Some(1), 3, true).controller_id, 1);
        // Broker 1 without its lease refuses writes: it names no leader,
        // nor itself as a broker to ask.
        let view = cluster_view(&image, Some(1), 1, false);
        assert_eq!(view.topics["t"].partitions[0].leader, NO_LEADER);
        assert!(view.brokers.is_empty());
        assert_eq!(
            view.fenced.iter().map(|b| b.id).collect::<Vec<_>>(),
            vec![2]
        );
        // Fenced itself (its lease is gone then too): in neither list.
        let view = cluster_view(&image, Some(1), 2, false);
        assert_eq!(
            view.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(view.fenced.is_empty());
        let view = cluster_view(&image, Some(1), 1, true);
        assert_eq!(view.topics["t"].partitions[0].leader, 1);
    }

    #[test]
    fn a_broker_is_assigned_its_own_partitions_and_leads_only_with_a_lease() {
        let image = image();
        let mine = assignments(&image, 1, true);
        assert_eq!(mine.len(), 1);
        let t = &mine[0];
        assert_eq!((t.partition_count, t.configs.len()), (3, 1));
        let hosted: Vec<(i32, Leadership)> =
            t.hosted.iter().map(|h| (h.index, h.leadership)).collect();
        assert_eq!(
            hosted,
            vec![
                (0, Leadership::Leader { epoch: 4 }),
                (
                    2,
                    Leadership::NotLeader {
                        leader: None,
                        epoch: 3
                    }
                ),
            ]
        );
        let no_lease = assignments(&image, 1, false);
        assert_eq!(
            no_lease[0].hosted[0].leadership,
            Leadership::NotLeader {
                leader: Some(1),
                epoch: 4
            }
        );
        assert!(assignments(&image, 3, true).is_empty());
    }
}
