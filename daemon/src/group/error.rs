//! What can go wrong in the group coordinator. `kafka/errors.rs` maps each
//! variant to its Kafka error code; nothing else does.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("the coordinator holds its maximum of {0} groups")]
    TooManyGroups(usize),
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("generation {got} is not the group's generation {current}")]
    IllegalGeneration { got: i32, current: i32 },
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// JoinGroup v4+: the client must rejoin with the id it is given here.
    #[error("member id required; rejoin as {0}")]
    MemberIdRequired(String),
    #[error("no protocol common to the group: {0}")]
    InconsistentGroupProtocol(&'static str),
    #[error("the group has its maximum of {0} members")]
    GroupMaxSizeReached(usize),
    #[error("group.instance.id {0} is held by a newer member")]
    FencedInstanceId(String),
    #[error("session timeout {0} ms is outside the allowed range")]
    InvalidSessionTimeout(i32),
    #[error("{what} of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("offset metadata of {0} bytes is too large")]
    OffsetMetadataTooLarge(usize),
    #[error("the group still subscribes to the topic")]
    GroupSubscribedToTopic,
    #[error("the group holds its maximum of {0} committed offsets")]
    TooManyOffsets(usize),
    #[error("the offsets log failed: {0}")]
    Storage(String),
    #[error("the coordinator is not running")]
    CoordinatorNotAvailable,
    /// In a cluster: the group's offsets partition is led by another broker.
    #[error("this broker does not coordinate the group")]
    NotCoordinator,
    /// This broker just took the group's offsets partition and is replaying it.
    #[error("the group's committed offsets are being loaded")]
    LoadInProgress,
}
