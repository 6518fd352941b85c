//! The one place internal errors become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::broker::{AdminError, ControllerRefusal, CreateTopicError, PartitionError};
use crate::broker::{LogError, ProducerError};

pub const NONE: i16 = 0;

/// The code a produce, fetch or list-offsets answer carries for a log error.
pub fn log_error_code(error: &LogError) -> i16 {
    let kind = match error {
        LogError::CorruptBatch { .. } | LogError::NonContiguousOffsets { .. } => {
            ResponseError::CorruptMessage
        }
        LogError::UnsupportedMagic { .. } => ResponseError::UnsupportedForMessageFormat,
        LogError::InvalidBatch { .. } => ResponseError::InvalidRecord,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::RecordSetTooLarge { .. } => ResponseError::RecordListTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        LogError::Producer(ProducerError::OutOfOrderSequence { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Producer(ProducerError::FencedEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        LogError::CorruptCheckpoint { .. } | LogError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
        // Shutting down: the client retries elsewhere (or here, later).
        LogError::Closed { .. } => ResponseError::NotLeaderOrFollower,
    };
    kind.code()
}

/// The code a partition's answer carries when this broker cannot serve it
/// (KIP-320 epochs; librdkafka refreshes its metadata on 6, 74 and 75).
pub fn partition_error_code(error: &PartitionError) -> i16 {
    let kind = match error {
        PartitionError::UnknownTopic { .. } | PartitionError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        PartitionError::NotHosted { .. }
        | PartitionError::NotLeader { .. }
        | PartitionError::NotAReplica { .. }
        | PartitionError::NotFollower { .. } => ResponseError::NotLeaderOrFollower,
        PartitionError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        PartitionError::Log(error) => return log_error_code(error),
    };
    kind.code()
}

/// The code a CreateTopics (or auto-creation) answer carries.
pub fn create_topic_error_code(error: &CreateTopicError) -> i16 {
    let kind = match error {
        CreateTopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        CreateTopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CreateTopicError::InvalidReplicationFactor(..) => ResponseError::InvalidReplicationFactor,
        CreateTopicError::Controller(refusal) => return controller_refusal_code(refusal),
        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::CreationDisabled | CreateTopicError::ManagedByController(_) => {
            ResponseError::PolicyViolation
        }
        CreateTopicError::Dir { .. } | CreateTopicError::Log(_) | CreateTopicError::Registry(_) => {
            ResponseError::KafkaStorageError
        }
    };
    kind.code()
}

/// The controller chose a refusal's code; no answer in time is retriable.
fn controller_refusal_code(refusal: &ControllerRefusal) -> i16 {
    match refusal {
        ControllerRefusal::Refused { code, .. } => *code,
        ControllerRefusal::Unavailable(_) => ResponseError::RequestTimedOut.code(),
    }
}

/// The code an admin API answer carries.
pub fn admin_error_code(error: &AdminError) -> i16 {
    let kind = match error {
        AdminError::Controller(refusal) => return controller_refusal_code(refusal),
        AdminError::PolicyViolation(_) => ResponseError::PolicyViolation,
        AdminError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        AdminError::InvalidConfig(_) => ResponseError::InvalidConfig,
        AdminError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        AdminError::InvalidRequest(_) => ResponseError::InvalidRequest,
        AdminError::Storage(_) => ResponseError::KafkaStorageError,
    };
    kind.code()
}

/// The code a group API answer carries for a coordinator error.
pub fn group_error_code(error: &crate::group::GroupError) -> i16 {
    use crate::group::GroupError;
    let kind = match error {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::TooManyGroups(_) | GroupError::CoordinatorNotAvailable => {
            ResponseError::CoordinatorNotAvailable
        }
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
        GroupError::GroupMaxSizeReached(_) => ResponseError::GroupMaxSizeReached,
        GroupError::FencedInstanceId(_) => ResponseError::FencedInstanceId,
        GroupError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
        // Kafka has no code for an oversized blob; the request breaks a bound.
        GroupError::TooLarge { .. } => ResponseError::InvalidRequest,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::OffsetMetadataTooLarge(_) => ResponseError::OffsetMetadataTooLarge,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::TooManyOffsets(_) => ResponseError::InvalidRequest,
        GroupError::Storage(_) => ResponseError::KafkaStorageError,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
    };
    kind.code()
}

/// Counts a non-zero error code answered for `api`.
pub fn count_error(api: kafka_protocol::messages::ApiKey, code: i16) {
    if code == NONE {
        return;
    }
    let name = match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => format!("CODE_{code}"),
        Some(error) => format!("{error:?}"),
    };
    crate::metrics::metrics()
        .request_errors
        .with_label_values(&[&format!("{api:?}"), &name])
        .inc();
}
