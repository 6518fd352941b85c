//! A broker as a member of a cluster: registration and heartbeats with the
//! active controller (`lifecycle`, sans-IO), the spec as the controller
//! should record it (`spec_plan`), and the runtime that wires the QUIC
//! transport, the controller thread and the membership task together
//! (`runtime`). The single-node default uses none of it.

pub mod adoption;
pub mod controlled_shutdown;
mod controller_client;
pub mod follower;
mod isr_updates;
pub mod lifecycle;
pub mod publisher;
pub mod replica_fetcher;
mod replica_server;
pub mod runtime;
pub mod spec_plan;
pub mod status;

pub use crate::controller::alter_partition::AlterPartitionRequest;
pub use crate::controller::records::{BrokerId, PartitionState};
pub use controller_client::{AlterPartitionRefusal, IsrChanges, isr_refusal};
pub use lifecycle::{Membership, Timings};
pub use runtime::{ClusterMember, MemberStatus};
