//! Where a new partition's replicas go: balanced and rack-aware over the
//! spec's declared brokers, so the answer does not depend on which brokers
//! happen to be registered, or in which order. The result is recorded in
//! `CreatePartition`; nothing ever recomputes it, so adding a broker to the
//! spec never moves an existing partition.
//!
//! Kafka's assignment without its random start: brokers in rack-alternated
//! order, the leader of partition `p` at position `start + p`, followers at
//! a shift that grows each time the leaders wrap around, and a follower
//! skipped while its rack holds a replica and another rack holds none.

use std::collections::{BTreeMap, BTreeSet};

use super::error::PlacementError;
use super::records::{BrokerId, REPLICAS_MAX};
use crate::config::{ClusterSpec, PARTITIONS_MAX};

/// A declared broker, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub broker_id: BrokerId,
    pub rack: Option<String>,
}

impl PlacementBroker {
    /// The spec's declared brokers (not the registered ones).
    pub fn declared(spec: &ClusterSpec) -> Vec<PlacementBroker> {
        spec.brokers
            .iter()
            .map(|broker| PlacementBroker {
                broker_id: broker.id,
                rack: broker.rack.clone(),
            })
            .collect()
    }
}

/// Brokers by id within each rack (no rack is a rack of its own), taking
/// one from each rack in turn; a broker listed twice counts once.
fn rack_alternated(brokers: &[PlacementBroker]) -> Vec<(BrokerId, Option<&str>)> {
    let mut by_rack: BTreeMap<Option<&str>, BTreeSet<BrokerId>> = BTreeMap::new();
    for broker in brokers {
        by_rack
            .entry(broker.rack.as_deref())
            .or_default()
            .insert(broker.broker_id);
    }
    let racks: Vec<(Option<&str>, Vec<BrokerId>)> = by_rack
        .into_iter()
        .map(|(rack, ids)| (rack, ids.into_iter().collect()))
        .collect();
    let deepest = racks.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0);
    let mut order = Vec::new();
    for round in 0..deepest {
        for (rack, ids) in &racks {
            if let Some(id) = ids.get(round) {
                order.push((*id, *rack));
            }
        }
    }
    order
}

/// Replica lists for partitions `first_partition .. first_partition + count`,
/// preferred leader first. `start` rotates where the first leader lands, so
/// that topics created one after the other do not all lead on one broker.
pub fn place_partitions(
    brokers: &[PlacementBroker],
    first_partition: i32,
    count: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let end = i64::from(first_partition) + i64::from(count);
    if first_partition < 0 || count < 1 || end > i64::from(PARTITIONS_MAX) {
        return Err(PlacementError::InvalidPartitions(end));
    }
    let order = rack_alternated(brokers);
    let brokers_count = order.len();
    let factor = usize::try_from(replication_factor).unwrap_or(0);
    if factor < 1 || factor > brokers_count || factor > REPLICAS_MAX {
        return Err(PlacementError::InvalidReplicationFactor {
            replication_factor,
            brokers: brokers_count,
        });
    }
    let racks_count = order
        .iter()
        .map(|(_, rack)| rack)
        .collect::<BTreeSet<_>>()
        .len();
    let placed: Vec<Vec<BrokerId>> = (first_partition..first_partition + count)
        .map(|partition| {
            place_one(
                &order,
                racks_count,
                (partition as usize).wrapping_add(start),
                factor,
            )
        })
        .collect();
    assert_eq!(placed.len(), count as usize);
    Ok(placed)
}

/// One partition's replicas; `position` picks the leader.
fn place_one(
    order: &[(BrokerId, Option<&str>)],
    racks_count: usize,
    position: usize,
    factor: usize,
) -> Vec<BrokerId> {
    let brokers_count = order.len();
    let leader_at = position % brokers_count;
    let (leader, leader_rack) = order[leader_at];
    let mut replicas = vec![leader];
    let mut racks_used = BTreeSet::from([leader_rack]);
    if brokers_count > 1 {
        let shift = (position / brokers_count) % (brokers_count - 1);
        for rack_aware in [true, false] {
            for step in 0..brokers_count - 1 {
                if replicas.len() == factor {
                    break;
                }
                let at = (leader_at + 1 + (shift + step) % (brokers_count - 1)) % brokers_count;
                let (candidate, rack) = order[at];
                let rack_taken = racks_used.contains(&rack) && racks_used.len() < racks_count;
                if replicas.contains(&candidate) || (rack_aware && rack_taken) {
                    continue;
                }
                replicas.push(candidate);
                racks_used.insert(rack);
            }
        }
    }
    assert_eq!(replicas.len(), factor);
    replicas
}

/// Explicit lists from the spec (`replicas = [[1, 2], [2, 3]]`), for
/// partitions `first_partition .. first_partition + count`: each non-empty,
/// distinct, of declared brokers.
pub fn explicit_placement(
    brokers: &[PlacementBroker],
    lists: &[Vec<BrokerId>],
    first_partition: i32,
    count: i32,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let first = usize::try_from(first_partition)
        .map_err(|_| PlacementError::InvalidPartitions(first_partition.into()))?;
    let wanted = usize::try_from(count).ok().filter(|count| *count >= 1);
    let wanted = wanted.ok_or(PlacementError::InvalidPartitions(count.into()))?;
    if lists.len() != first + wanted {
        return Err(PlacementError::ReplicaListCount {
            lists: lists.len(),
            partitions: first + wanted,
        });
    }
    let declared: BTreeSet<BrokerId> = brokers.iter().map(|b| b.broker_id).collect();
    for (offset, list) in lists[first..].iter().enumerate() {
        let partition = (first + offset) as i32;
        let invalid = |why: String| PlacementError::InvalidReplicaList { partition, why };
        if list.is_empty() || list.len() > REPLICAS_MAX {
            return Err(invalid(format!("must list 1 to {REPLICAS_MAX} brokers")));
        }
        if list.iter().collect::<BTreeSet<_>>().len() != list.len() {
            return Err(invalid("lists a broker twice".to_string()));
        }
        if let Some(unknown) = list.iter().find(|id| !declared.contains(id)) {
            return Err(invalid(format!("broker {unknown} is not declared")));
        }
    }
    Ok(lists[first..].to_vec())
}
