//! Consumer groups: the group coordinator and durable committed offsets.
//!
//! The core (`Coordinator`) is a state machine without I/O: requests and
//! `handle_timeout(now)` go in, parked answers come out of `poll_effect()`;
//! each group is in one of the typed states of `state`. `service` is the
//! async shell: a lock, answer channels, the timer driver, and commits
//! written to the `__consumer_offsets` partition the group hashes to
//! (`offsets_log`), replayed at startup and compacted by the log cleaner.

mod coordinator;
pub mod describe;
mod error;
mod heartbeat;
mod join;
pub mod lag;
mod offset_commit;
pub mod offsets_log;
pub mod report;
mod service;
mod state;
mod sync;
mod timer;

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;

pub use coordinator::{
    ASSIGNMENT_BYTES_MAX, CommittedOffset, Coordinator, CoordinatorConfig, Effect, GROUPS_MAX,
    JoinOutcome, MEMBER_METADATA_BYTES_MAX, MEMBERS_PER_GROUP_MAX, OFFSET_METADATA_BYTES_MAX,
    OFFSETS_PER_GROUP_MAX, Parked, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN,
};
pub use error::GroupError;
pub use join::JoinRequest;
pub use offset_commit::{OffsetChange, OffsetKey};
pub use offsets_log::{OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS};
pub use service::{CommitWait, GroupCoordinator, Pending};
pub use state::{GroupState, ReplyToken};
pub use sync::SyncRequest;
