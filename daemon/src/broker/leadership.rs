//! Who leads a partition this broker hosts, and why a request cannot be
//! served here: the broker's side of the controller's leader epochs
//! (docs/plans/issue-13-cluster.md §4.3). `kafka::errors` maps each
//! refusal to its Kafka code.

use thiserror::Error;

use crate::log::LogError;

/// The partition's leader epoch while Sluice runs on a single node: there is
/// never another leader, so the epoch never moves.
pub const SINGLE_NODE_LEADER_EPOCH: i32 = 0;

/// A request's `current_leader_epoch` that asks for no check (KIP-320).
pub const NO_EPOCH_CHECK: i32 = -1;

/// A hosted partition's leadership, as the controller last assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This broker leads at `epoch`: its appends carry it.
    Leader { epoch: i32 },
    /// Another broker leads at `epoch`, or none does (`leader` None: the
    /// partition is offline).
    NotLeader { leader: Option<i32>, epoch: i32 },
}

impl Leadership {
    /// A single node leads every partition, always at the same epoch.
    pub const SINGLE_NODE: Leadership = Leadership::Leader {
        epoch: SINGLE_NODE_LEADER_EPOCH,
    };

    /// A partition just opened for an assignment, before its leadership is
    /// set (never visible to requests: it is set before the partition is).
    pub(crate) const UNASSIGNED: Leadership = Leadership::NotLeader {
        leader: None,
        epoch: -1,
    };

    pub fn epoch(&self) -> i32 {
        match *self {
            Leadership::Leader { epoch } | Leadership::NotLeader { epoch, .. } => epoch,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }

    /// Kafka's `Partition.checkCurrentLeaderEpoch` then the leader check:
    /// a client naming an older epoch is fenced, a newer one is ahead of us,
    /// -1 skips the check; then only the leader serves.
    pub fn check(&self, partition: &str, current_leader_epoch: i32) -> Result<i32, PartitionError> {
        let current = self.epoch();
        if current_leader_epoch != NO_EPOCH_CHECK {
            if current_leader_epoch < current {
                return Err(PartitionError::FencedLeaderEpoch {
                    partition: partition.to_string(),
                    requested: current_leader_epoch,
                    current,
                });
            }
            if current_leader_epoch > current {
                return Err(PartitionError::UnknownLeaderEpoch {
                    partition: partition.to_string(),
                    requested: current_leader_epoch,
                    current,
                });
            }
        }
        match *self {
            Leadership::Leader { epoch } => Ok(epoch),
            Leadership::NotLeader { leader, epoch } => Err(PartitionError::NotLeader {
                partition: partition.to_string(),
                leader,
                epoch,
            }),
        }
    }
}

/// Why this broker cannot serve a request for a partition.
#[derive(Debug, Error)]
pub enum PartitionError {
    #[error("unknown topic {topic}")]
    UnknownTopic { topic: String },
    #[error("topic {topic} has {count} partition(s): {index} is not one of them")]
    UnknownPartition {
        topic: String,
        index: i32,
        count: i32,
    },
    #[error("{topic}-{index} is not hosted on broker {broker}")]
    NotHosted {
        topic: String,
        index: i32,
        broker: i32,
    },
    #[error("{partition} is not led by this broker (leader: {}, epoch {epoch})", leader_name(.leader))]
    NotLeader {
        partition: String,
        leader: Option<i32>,
        epoch: i32,
    },
    #[error("{partition}: leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch {
        partition: String,
        requested: i32,
        current: i32,
    },
    #[error(
        "{partition}: leader epoch {requested} is newer than {current}, the latest this broker knows"
    )]
    UnknownLeaderEpoch {
        partition: String,
        requested: i32,
        current: i32,
    },
    #[error("{partition}: broker {broker} is not one of its replicas")]
    NotAReplica { partition: String, broker: i32 },
    #[error("{partition} is led by this broker: it takes no leader's records")]
    NotFollower { partition: String },
    #[error(transparent)]
    Log(#[from] LogError),
}

fn leader_name(leader: &Option<i32>) -> String {
    leader.map_or_else(|| "none".to_string(), |id| format!("broker {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_checked_before_leadership_and_minus_one_skips_them() {
        let led = Leadership::Leader { epoch: 5 };
        assert_eq!(led.check("t-0", NO_EPOCH_CHECK).unwrap(), 5);
        assert_eq!(led.check("t-0", 5).unwrap(), 5);
        assert!(matches!(
            led.check("t-0", 4),
            Err(PartitionError::FencedLeaderEpoch {
                requested: 4,
                current: 5,
                ..
            })
        ));
        assert!(matches!(
            led.check("t-0", 6),
            Err(PartitionError::UnknownLeaderEpoch {
                requested: 6,
                current: 5,
                ..
            })
        ));
        let other = Leadership::NotLeader {
            leader: Some(2),
            epoch: 5,
        };
        assert!(matches!(
            other.check("t-0", 4),
            Err(PartitionError::FencedLeaderEpoch { .. })
        ));
        let refused = other.check("t-0", 5).unwrap_err();
        assert!(matches!(refused, PartitionError::NotLeader { .. }));
        assert_eq!(
            refused.to_string(),
            "t-0 is not led by this broker (leader: broker 2, epoch 5)"
        );
    }
}
