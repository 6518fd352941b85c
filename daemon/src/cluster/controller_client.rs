//! What this broker asks of the active controller besides its heartbeats:
//! producer-id blocks, topic changes from the Kafka API, and ISR changes
//! of the partitions it leads. Each call waits on the calling (storage or
//! blocking-pool) thread for the committed answer, following NotController
//! hints (or the next voter, when nobody answers) to the active
//! controller, within a bounded time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use super::lifecycle::Membership;
use super::runtime::{MemberStatus, Router};
use crate::broker::{ControllerRefusal, ProducerIdSource, TopicChanges};
use crate::controller::alter_partition::AlterPartitionRequest;
use crate::controller::image::MetadataImage;
use crate::controller::records::{BrokerId, PartitionState};
use crate::controller::rpc::{ClusterMessage, Outcome};
use crate::controller::topic_change::TopicChange;

/// How long one InitProducerId may wait for a block.
const PRODUCER_IDS_WAIT: Duration = Duration::from_secs(5);
/// How long one CreateTopics or CreatePartitions may wait for the
/// controller, and then for this broker to apply the change.
const TOPIC_CHANGE_WAIT: Duration = Duration::from_secs(5);
/// How long one ISR change may wait for the controller's committed answer.
const ISR_CHANGE_WAIT: Duration = Duration::from_secs(5);
/// An attempt without an answer moves on to the next voter after this.
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);

/// Kafka's codes an ISR change is refused with (`DecideError::code` in the
/// controller decides them), for the partition leader to tell them apart.
pub mod isr_refusal {
    use crate::controller::code;

    /// The topic or partition is gone.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = code::UNKNOWN_TOPIC_OR_PARTITION;
    /// The broker does not lead the partition (or is fenced).
    pub const NOT_LEADER_OR_FOLLOWER: i16 = code::NOT_LEADER_OR_FOLLOWER;
    /// No answer in time (`AlterPartitionRefusal::Unavailable`).
    pub const REQUEST_TIMED_OUT: i16 = code::REQUEST_TIMED_OUT;
    /// The ISR asked for is malformed, or names another broker: a bug in
    /// the asking leader.
    pub const INVALID_REQUEST: i16 = code::INVALID_REQUEST;
    /// The leader epoch moved (older or newer than the controller's).
    pub const FENCED_LEADER_EPOCH: i16 = code::FENCED_LEADER_EPOCH;
    /// The broker registered again since it read the partition.
    pub const STALE_BROKER_EPOCH: i16 = code::STALE_BROKER_EPOCH;
    /// Too many ISR changes wait at the controller already.
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = code::THROTTLING_QUOTA_EXCEEDED;
    /// The partition changed since the leader read it.
    pub const INVALID_UPDATE_VERSION: i16 = code::INVALID_UPDATE_VERSION;
    /// The broker is not registered (any more).
    pub const BROKER_ID_NOT_REGISTERED: i16 = code::BROKER_ID_NOT_REGISTERED;
    /// A broker the leader adds is fenced or not registered.
    pub const INELIGIBLE_REPLICA: i16 = code::INELIGIBLE_REPLICA;
}

/// Why an ISR change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionRefusal {
    /// The active controller decided against it: `code` is Kafka's error
    /// code (`isr_refusal`), `message` says why.
    #[error("ISR change refused ({code}): {message}")]
    Refused { code: i16, message: String },
    /// No active controller answered in time, or this broker is not
    /// registered yet: the same request may succeed later.
    #[error("ISR change unanswered: {0}")]
    Unavailable(String),
}

impl AlterPartitionRefusal {
    /// Kafka's code; REQUEST_TIMED_OUT when unanswered.
    pub fn code(&self) -> i16 {
        match self {
            AlterPartitionRefusal::Refused { code, .. } => *code,
            AlterPartitionRefusal::Unavailable(_) => isr_refusal::REQUEST_TIMED_OUT,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            AlterPartitionRefusal::Refused { message, .. }
            | AlterPartitionRefusal::Unavailable(message) => message,
        }
    }

    /// Whether sending the same request again may succeed (no answer, or
    /// the controller was busy). Otherwise the partition or this broker
    /// moved on: wait for newer metadata and decide again from it.
    pub fn is_retriable(&self) -> bool {
        crate::controller::alter_partition::refusal_is_retriable(self.code())
    }
}

/// Where a partition leader sends its ISR changes: the active controller,
/// which commits them to the metadata log (cluster/runtime.rs). A call
/// blocks the calling thread for a few seconds at most (run it with
/// `spawn_blocking`).
pub trait IsrChanges: Send + Sync {
    /// The partition as committed with `request.isr`, at its new partition
    /// epoch (the same state when the ISR is unchanged).
    fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionState, AlterPartitionRefusal>;
}

pub(super) struct ControllerClient {
    self_id: BrokerId,
    voters: Vec<BrokerId>,
    router: Router,
    status: watch::Receiver<MemberStatus>,
    image: watch::Receiver<Arc<MetadataImage>>,
    runtime: tokio::runtime::Handle,
    next_request_id: AtomicU64,
}

impl ControllerClient {
    pub(super) fn new(
        self_id: BrokerId,
        voters: Vec<BrokerId>,
        router: Router,
        status: watch::Receiver<MemberStatus>,
        image: watch::Receiver<Arc<MetadataImage>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ControllerClient {
            self_id,
            voters,
            router,
            status,
            image,
            runtime,
            // Apart from the lifecycle's request ids.
            next_request_id: AtomicU64::new(1 << 61),
        }
    }

    /// Sends `make(request_id, broker_epoch)` to the active controller until
    /// it answers (anything but NotController) or `wait` passes.
    fn ask(
        &self,
        wait: Duration,
        make: impl Fn(u64, i64) -> ClusterMessage,
    ) -> Result<Outcome, String> {
        let deadline = Instant::now() + wait;
        let mut target = self.status.borrow().controller.unwrap_or(self.voters[0]);
        let next_voter = |after: BrokerId| {
            let at = self.voters.iter().position(|v| *v == after).unwrap_or(0);
            self.voters[(at + 1) % self.voters.len()]
        };
        loop {
            let status = *self.status.borrow();
            let Membership::Registered { broker_epoch, .. } = status.membership else {
                return Err("this broker is not registered yet".into());
            };
            let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
            let (answer, answered) = std::sync::mpsc::sync_channel(1);
            let waiters = || {
                self.router
                    .waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            };
            waiters().insert(request_id, answer);
            self.router.send(target, make(request_id, broker_epoch));
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = answered.recv_timeout(left.min(ATTEMPT_WAIT));
            waiters().remove(&request_id);
            match outcome {
                Ok(Outcome::NotController { leader }) => {
                    target = leader
                        .filter(|l| *l != target)
                        .unwrap_or_else(|| next_voter(target));
                }
                Ok(outcome) => return Ok(outcome),
                Err(_) => target = next_voter(target),
            }
            if Instant::now() >= deadline {
                return Err("the controller did not answer in time".into());
            }
        }
    }

    /// A topic change, committed and (within the wait) applied here, so a
    /// client's next Metadata to this broker sees it.
    fn change(&self, change: TopicChange) -> Result<(), ControllerRefusal> {
        let outcome = self
            .ask(TOPIC_CHANGE_WAIT, |request_id, broker_epoch| {
                ClusterMessage::ChangeTopic {
                    request_id,
                    broker_id: self.self_id,
                    broker_epoch,
                    change: change.clone(),
                }
            })
            .map_err(ControllerRefusal::Unavailable)?;
        match outcome {
            Outcome::Done { index } => {
                self.wait_applied(index, TOPIC_CHANGE_WAIT);
                Ok(())
            }
            Outcome::Refused { code, message } => Err(ControllerRefusal::Refused { code, message }),
            other => Err(ControllerRefusal::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Waits at most `wait` for this node's image to apply `index`.
    fn wait_applied(&self, index: u64, wait: Duration) {
        if self.image.borrow().applied_index() >= index {
            return;
        }
        let mut image = self.image.clone();
        let (done, applied) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let waited = tokio::time::timeout(wait, image.wait_for(|i| i.applied_index() >= index));
            let _ = done.send(matches!(waited.await, Ok(Ok(_))));
        });
        if !applied.recv_timeout(wait).unwrap_or(false) {
            tracing::debug!(event = "topic_change_not_applied_yet", index);
        }
    }
}

impl IsrChanges for ControllerClient {
    fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<PartitionState, AlterPartitionRefusal> {
        if request.broker_id != self.self_id {
            return Err(AlterPartitionRefusal::Refused {
                code: isr_refusal::INVALID_REQUEST,
                message: format!(
                    "broker {} cannot change ISRs for broker {}",
                    self.self_id, request.broker_id
                ),
            });
        }
        // The request keeps its own broker epoch: one read before this
        // broker restarted its membership must be refused, not renewed.
        let outcome = self
            .ask(ISR_CHANGE_WAIT, |request_id, _| {
                ClusterMessage::AlterPartition {
                    request_id,
                    request: request.clone(),
                }
            })
            .map_err(AlterPartitionRefusal::Unavailable)?;
        match outcome {
            Outcome::PartitionAltered(state) => Ok(state),
            Outcome::Refused { code, message } => match self.committed_already(&request, code) {
                Some(state) => Ok(state),
                None => Err(AlterPartitionRefusal::Refused { code, message }),
            },
            other => Err(AlterPartitionRefusal::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }
}

impl ControllerClient {
    /// A retry whose first attempt was committed (its answer lost or late)
    /// finds the partition epoch moved: the change is made if this node's
    /// image shows it, by this leader at the same leader epoch.
    fn committed_already(
        &self,
        request: &AlterPartitionRequest,
        code: i16,
    ) -> Option<PartitionState> {
        if code != isr_refusal::INVALID_UPDATE_VERSION {
            return None;
        }
        let image = self.image.borrow();
        let state = image.partition(&request.topic_id, request.partition)?;
        let made = state.leader == request.broker_id
            && state.leader_epoch == request.leader_epoch
            && state.partition_epoch > request.partition_epoch
            && state.isr == request.isr;
        made.then(|| state.clone())
    }
}

impl ProducerIdSource for ControllerClient {
    fn next_block(&self) -> Result<(i64, i64), String> {
        let outcome = self.ask(PRODUCER_IDS_WAIT, |request_id, broker_epoch| {
            ClusterMessage::AllocateProducerIds {
                request_id,
                broker_id: self.self_id,
                broker_epoch,
            }
        })?;
        match outcome {
            Outcome::ProducerIds { first, size } if size > 0 => {
                tracing::info!(event = "producer_ids_allocated", first, size);
                Ok((first, first.saturating_add(i64::from(size))))
            }
            Outcome::Refused { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

impl TopicChanges for ControllerClient {
    fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        settings: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Uuid, ControllerRefusal> {
        let topic_id = Uuid::new_v4();
        // A retry after a lost answer carries the same id: the controller
        // answers it done (controller/topic_change.rs).
        self.change(TopicChange::Create {
            topic_id,
            name: name.to_string(),
            partitions,
            replication_factor,
            settings,
            validate_only,
        })?;
        Ok(topic_id)
    }

    fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), ControllerRefusal> {
        self.change(TopicChange::AddPartitions {
            name: name.to_string(),
            total,
            validate_only,
        })
    }

    fn delete(&self, name: &str) -> Result<(), ControllerRefusal> {
        self.change(TopicChange::Delete {
            name: name.to_string(),
        })
    }
}
