//! The controller: the cluster's metadata and the Raft quorum that keeps
//! it, sans-IO except the thread in `service`. The records of the metadata
//! log and their codec, the image they build, the pure decisions the active
//! controller writes (`decide`, `plan`), broker session deadlines, the image
//! as a snapshot; `quorum` wraps raft-rs's `RawNode` (static voters,
//! pre-vote, check-quorum) over the durable `log_store`, `wire` is our codec
//! for its messages and `rpc` for everything nodes say to each other; `node`
//! is one voter as a state machine and `service` the thread that drives it;
//! `sim` runs 3 or 5 voters on a seeded virtual clock. `alter_partition`
//! decides a partition leader's ISR change. Time comes in as
//! `Instant`s and ids as arguments. "plan §N" in this folder is
//! docs/plans/issue-13-cluster.md.

pub mod adoption;
pub mod alter_partition;
mod codec;
pub mod decide;
mod error;
pub mod image;
pub mod log_store;
pub mod node;
pub mod placement;
pub mod plan;
pub mod quorum;
pub mod reassign;
pub mod records;
pub mod rpc;
pub mod service;
pub mod sessions;
#[cfg(test)]
mod sim;
pub mod snapshot;
pub mod topic_change;
pub mod wire;

#[cfg(test)]
mod election_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_props;

pub use decide::{
    Heartbeat, HeartbeatDecision, NewTopic, PRODUCER_ID_BLOCK_SIZE, UNCLEAN_ELECTION_KEY,
    UncleanElection, add_partitions, allocate_producer_ids, change_partition, create_topic,
    elect_leader, on_heartbeat, on_register, on_session_expired, unclean_elections,
};
pub use error::{
    ApplyError, ApplyReason, CodecError, DecideError, InvariantError, PlacementError,
    SnapshotError, code,
};
pub use image::{AppliedSpec, BrokerEntry, MetadataImage, TopicEntry};
pub use log_store::{LogStore, LogStoreError, MetaDir, OsDir, StoreLimits};
pub use placement::{PlacementBroker, explicit_placement, place_partitions};
pub use quorum::{
    Committed, Effects, InstalledSnapshot, MetadataRead, Quorum, QuorumError, QuorumSpec, Role,
};
pub use records::{
    BrokerId, BrokerRegistration, FenceReason, NO_LEADER, PartitionState, Record, RecordBatch,
};
pub use sessions::SessionTable;
pub use snapshot::{decode_image, encode_image};
pub use wire::WireError;
