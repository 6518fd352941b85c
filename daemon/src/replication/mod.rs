//! Replication's decisions, without I/O (DESIGN §3): the leader's view of
//! its followers and the high watermark they imply (`leader_state`), where
//! a follower's log stops agreeing with its leader's (`divergence`), and
//! the fetch a follower sends on its replication stream (`wire`). The
//! broker holds one `LeaderState` per partition it leads; the cluster
//! layer's fetcher and server move the bytes.

pub mod divergence;
pub mod leader_state;
#[cfg(test)]
mod sim;
pub mod wire;

pub use divergence::{EpochEnd, FetchPosition, Truncation};
pub use leader_state::{IsrChangeKind, IsrProposal, LeaderEnd, LeaderState, ReplicaSet};
pub use wire::{ReplicaFetch, ReplicaFetchAnswer};
