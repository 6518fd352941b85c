//! Reassignment, KIP-455's shape: a partition moves to a new replica list
//! without a moment where fewer replicas hold what it committed.
//!
//! Starting writes `replicas` = the target, then the replicas leaving;
//! `adding` = target replicas that held nothing before, `removing` = the
//! replicas leaving. The leader and ISR stay. The added replicas fetch like
//! any follower and the leader's ISR expansion brings each in once it has
//! caught up. Once every adding replica is in the ISR, and min.insync of
//! the target are, the controller completes at a new leader epoch:
//! `replicas` = the target, the removed leave the ISR, and a removed leader
//! hands over to the first in-sync target replica. Pure functions over
//! partition states; the controller node runs them (`complete` says why
//! each rule is there).

use std::collections::{BTreeMap, BTreeSet};

use super::decide::{NewTopic, elect_leader};
use super::error::{DecideError, PlacementError};
use super::image::{MetadataImage, TopicEntry};
use super::placement::{PlacementBroker, explicit_placement};
use super::records::{BrokerId, NO_LEADER, PartitionState, Record};

/// The topic setting a completion keeps the ISR at (Kafka's default: 1).
const MIN_INSYNC_KEY: &str = "min.insync.replicas";

/// The replicas a partition has, or will have once its reassignment is done.
pub fn target(state: &PartitionState) -> Vec<BrokerId> {
    state
        .replicas
        .iter()
        .copied()
        .filter(|id| !state.removing.contains(id))
        .collect()
}

pub fn is_reassigning(state: &PartitionState) -> bool {
    !state.adding.is_empty() || !state.removing.is_empty()
}

/// The state that starts moving `state` to `wanted` (or redirects the
/// reassignment under way), or `None` when it has that target already.
/// Replicas that held data before keep it until completion, so redirecting
/// never drops an in-sync replica early; a change of order alone is a
/// plain change of the preferred leader.
pub fn start(state: &PartitionState, wanted: &[BrokerId]) -> Option<PartitionState> {
    assert!(!wanted.is_empty(), "a target lists at least one replica");
    if target(state) == wanted {
        return None;
    }
    let settled: BTreeSet<BrokerId> = state
        .replicas
        .iter()
        .copied()
        .filter(|id| !state.adding.contains(id))
        .collect();
    let mut replicas = wanted.to_vec();
    replicas.extend(state.replicas.iter().filter(|id| !wanted.contains(id)));
    let adding = wanted
        .iter()
        .copied()
        .filter(|id| !settled.contains(id))
        .collect();
    let removing = replicas
        .iter()
        .copied()
        .filter(|id| !wanted.contains(id))
        .collect();
    Some(PartitionState {
        replicas,
        isr: state.isr.clone(),
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch.saturating_add(1),
        adding,
        removing,
    })
}

/// The state that completes `state`'s reassignment, or `None` while it
/// must wait: an adding replica is not in the ISR yet, or fewer target
/// replicas are in it than `min_insync` (or than the target has, if fewer):
/// completing then would leave a write acknowledged by the removed members
/// on fewer copies than acks=all promised (the simulation found it, seed
/// 11003894: a target member crashed unsynced and not yet fenced, left
/// alone in the ISR); or the leader leaves and no in-sync target replica
/// is `eligible` (registered and unfenced) to take over. A new leader, or a replica
/// removed, means a new leader epoch (Kafka's rule): a removed replica's
/// fetches at the old epoch are fenced, so a fetch it sent while it still
/// held its copy can never bring it into the ISR after it deleted that copy
/// (the simulation found this, seed 11003588: removed, re-added, and
/// counted in sync from a fetch sent before it learned of the removal).
pub fn complete(
    state: &PartitionState,
    min_insync: usize,
    eligible: impl Fn(BrokerId) -> bool,
) -> Option<PartitionState> {
    if !is_reassigning(state) || !state.adding.iter().all(|id| state.isr.contains(id)) {
        return None;
    }
    let replicas = target(state);
    let isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|id| replicas.contains(id))
        .collect();
    if isr.is_empty() || isr.len() < min_insync.min(replicas.len()) {
        return None;
    }
    let leader = match isr.contains(&state.leader) {
        true => state.leader,
        false => elect_leader(&replicas, &isr, eligible),
    };
    if leader == NO_LEADER && state.leader != NO_LEADER {
        return None;
    }
    Some(PartitionState {
        replicas,
        isr,
        leader,
        leader_epoch: state.leader_epoch.saturating_add(i32::from(
            leader != state.leader || !state.removing.is_empty(),
        )),
        partition_epoch: state.partition_epoch.saturating_add(1),
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

/// Completions for every partition whose reassignment can complete now.
pub fn completions(image: &MetadataImage) -> Vec<Record> {
    let eligible = |id: BrokerId| image.is_unfenced(id);
    let mut records = Vec::new();
    for topic in image.topics() {
        let min_insync = topic
            .settings
            .get(MIN_INSYNC_KEY)
            .and_then(|value| value.parse().ok())
            .unwrap_or(1);
        for (index, state) in (0..).zip(&topic.partitions) {
            if let Some(state) = complete(state, min_insync, eligible) {
                records.push(Record::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: index,
                    state,
                });
            }
        }
    }
    records
}

/// Partitions with a reassignment under way.
pub fn reassigning_count(image: &MetadataImage) -> usize {
    image
        .topics()
        .flat_map(|topic| &topic.partitions)
        .filter(|state| is_reassigning(state))
        .count()
}

/// The reassignments the spec asks of `existing`'s partitions: each one's
/// explicit list (`replicas = [[…], …]`), or without one its replicas grown
/// or cut to `replication_factor` (grown by the declared brokers holding
/// the fewest replicas, other racks first; cut from the end, so the
/// preferred leader stays). Partitions the spec adds are placed by
/// `add_partitions`, not here.
pub fn plan_reassignments(
    image: &MetadataImage,
    existing: &TopicEntry,
    desired: &NewTopic,
    brokers: &[PlacementBroker],
) -> Result<Vec<Record>, DecideError> {
    let have = existing.partitions.len();
    let targets: Vec<Vec<BrokerId>> = match &desired.replicas {
        Some(lists) => {
            let count = i32::try_from(have).unwrap_or(i32::MAX);
            let lists = lists.get(..have).ok_or(PlacementError::ReplicaListCount {
                lists: lists.len(),
                partitions: have,
            })?;
            explicit_placement(brokers, lists, 0, count)?
        }
        None => resized(image, existing, desired.replication_factor, brokers)?,
    };
    Ok((0..)
        .zip(existing.partitions.iter().zip(&targets))
        .filter_map(|(partition, (state, wanted))| {
            start(state, wanted).map(|state| Record::PartitionChange {
                topic_id: existing.topic_id,
                partition,
                state,
            })
        })
        .collect())
}

fn resized(
    image: &MetadataImage,
    existing: &TopicEntry,
    replication_factor: i16,
    brokers: &[PlacementBroker],
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let factor = usize::try_from(replication_factor)
        .ok()
        .filter(|f| (1..=brokers.len()).contains(f))
        .ok_or(PlacementError::InvalidReplicationFactor {
            replication_factor,
            brokers: brokers.len(),
        })?;
    let mut load: BTreeMap<BrokerId, usize> = brokers.iter().map(|b| (b.broker_id, 0)).collect();
    for state in image.topics().flat_map(|topic| &topic.partitions) {
        for id in target(state) {
            *load.entry(id).or_default() += 1;
        }
    }
    let rack = |id: BrokerId| {
        brokers
            .iter()
            .find(|b| b.broker_id == id)
            .and_then(|b| b.rack.as_deref())
    };
    let mut targets = Vec::with_capacity(existing.partitions.len());
    for state in &existing.partitions {
        let mut wanted = target(state);
        wanted.truncate(factor);
        while wanted.len() < factor {
            let racks: BTreeSet<Option<&str>> = wanted.iter().map(|id| rack(*id)).collect();
            let pick = brokers
                .iter()
                .map(|b| b.broker_id)
                .filter(|id| !wanted.contains(id))
                .min_by_key(|id| (racks.contains(&rack(*id)), load[id], *id))
                .expect("the factor is at most the declared brokers");
            *load.entry(pick).or_default() += 1;
            wanted.push(pick);
        }
        targets.push(wanted);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 7,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    #[test]
    fn starting_keeps_every_replica_and_the_leader_until_completion() {
        let before = state(&[1, 2, 3], &[1, 2, 3], 1);
        let started = start(&before, &[2, 3, 4]).unwrap();
        assert_eq!(started.replicas, vec![2, 3, 4, 1]);
        assert_eq!(started.adding, vec![4]);
        assert_eq!(started.removing, vec![1]);
        assert_eq!((started.leader, started.isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!(started.leader_epoch, 3, "the leader stays");
        assert_eq!(started.partition_epoch, 8);
        assert_eq!(target(&started), vec![2, 3, 4]);
        assert_eq!(start(&started, &[2, 3, 4]), None, "already heading there");
        assert_eq!(start(&before, &[1, 2, 3]), None, "already there");

        // Not complete while 4 is out of the ISR.
        assert_eq!(complete(&started, 1, |_| true), None);
        let caught_up = PartitionState {
            isr: vec![1, 2, 3, 4],
            partition_epoch: 9,
            ..started
        };
        let done = complete(&caught_up, 1, |_| true).unwrap();
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!(done.leader, 2, "the removed leader hands over");
        assert_eq!(done.leader_epoch, 4);
        assert_eq!(done.partition_epoch, 10);
        assert!(!is_reassigning(&done));
        assert_eq!(complete(&done, 1, |_| true), None);
    }

    #[test]
    fn a_removal_alone_completes_at_once_at_a_new_leader_epoch() {
        let before = state(&[1, 2, 3], &[1, 3], 1);
        let started = start(&before, &[1, 2]).unwrap();
        assert!(started.adding.is_empty());
        assert_eq!(started.removing, vec![3]);
        let done = complete(&started, 1, |_| true).unwrap();
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 2], vec![1])
        );
        assert_eq!(
            (done.leader, done.leader_epoch),
            (1, 4),
            "a removed replica fences the old epoch"
        );
    }

    #[test]
    fn completion_waits_for_an_eligible_in_sync_target_replica() {
        // Target [3] whose only member is out of the ISR: wait.
        let started = start(&state(&[1, 2, 3], &[1, 2], 1), &[3]).unwrap();
        assert!(started.adding.is_empty(), "3 was a replica already");
        assert_eq!(complete(&started, 1, |_| true), None);
        // Only 1 of the target [2, 3] in sync, with min.insync 2: wait.
        let started = start(&state(&[1, 2, 3], &[1, 2], 1), &[2, 3]).unwrap();
        assert_eq!(complete(&started, 2, |_| true), None);
        assert_eq!(complete(&started, 1, |_| true).unwrap().isr, vec![2]);
        // 2 is in sync but fenced, and the leader leaves: wait.
        let started = start(&state(&[1, 2], &[1, 2], 1), &[2]).unwrap();
        assert_eq!(complete(&started, 1, |id| id != 2), None);
        assert_eq!(complete(&started, 1, |_| true).unwrap().leader, 2);
    }

    #[test]
    fn redirecting_keeps_replicas_with_data_and_drops_added_ones_that_are_not_wanted() {
        let started = start(&state(&[1, 2, 3], &[1, 2, 3], 1), &[1, 2, 4]).unwrap();
        assert_eq!(
            (started.adding.clone(), started.removing.clone()),
            (vec![4], vec![3])
        );
        // Back to the original: 4 leaves, nothing is added.
        let back = start(&started, &[1, 2, 3]).unwrap();
        assert_eq!(back.replicas, vec![1, 2, 3, 4]);
        assert!(back.adding.is_empty());
        assert_eq!(back.removing, vec![4]);
        // On to 5 instead: 5 is added, 3 and 4 leave.
        let elsewhere = start(&started, &[1, 2, 5]).unwrap();
        assert_eq!(elsewhere.replicas, vec![1, 2, 5, 4, 3]);
        assert_eq!(elsewhere.adding, vec![5]);
        assert_eq!(elsewhere.removing, vec![4, 3]);
        // Reordering alone is no reassignment.
        let reordered = start(&state(&[1, 2, 3], &[1, 2, 3], 1), &[2, 1, 3]).unwrap();
        assert!(!is_reassigning(&reordered));
        assert_eq!(reordered.replicas, vec![2, 1, 3]);
    }
}
