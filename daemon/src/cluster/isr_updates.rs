//! A leader's ISR changes on their way to the active controller: the
//! expansions follower fetches make due, and the shrinks a periodic check
//! finds. Each goes as an AlterPartition request at the leader's epochs and
//! this broker's epoch; the committed state (or the refusal) goes back to
//! the partition, whose high watermark may move. At most one change per
//! partition is in flight (the partition's `LeaderState` holds it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use super::controller_client::IsrChanges;
use super::lifecycle::Membership;
use super::runtime::MemberStatus;
use crate::broker::{Broker, Partition, now_ms};
use crate::controller::alter_partition::{
    AlterPartitionRequest, refusal_leaves_partition_unchanged,
};
use crate::controller::records::BrokerId;
use crate::replication::{IsrChangeKind, IsrProposal, ReplicaSet};

/// Requests to the controller in flight at once.
const IN_FLIGHT_MAX: usize = 64;
/// Wait before asking again after an unknown outcome.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Sends ISR changes; cheap to clone.
#[derive(Clone)]
pub(super) struct IsrUpdates {
    self_id: BrokerId,
    changes: Arc<dyn IsrChanges>,
    status: watch::Receiver<MemberStatus>,
    slots: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
}

impl IsrUpdates {
    pub(super) fn new(
        self_id: BrokerId,
        changes: Arc<dyn IsrChanges>,
        status: watch::Receiver<MemberStatus>,
        runtime: tokio::runtime::Handle,
    ) -> IsrUpdates {
        IsrUpdates {
            self_id,
            changes,
            status,
            slots: Arc::new(Semaphore::new(IN_FLIGHT_MAX)),
            runtime,
        }
    }

    /// Asks the controller for `proposal` and applies the answer.
    pub(super) fn send(&self, partition: Arc<Partition>, topic_id: Uuid, proposal: IsrProposal) {
        let Membership::Registered { broker_epoch, .. } = self.status.borrow().membership else {
            partition.isr_change_refused(&proposal);
            return;
        };
        let request = AlterPartitionRequest {
            broker_id: self.self_id,
            broker_epoch,
            topic_id,
            partition: partition.index,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            isr: proposal.isr.clone(),
        };
        let (changes, slots) = (self.changes.clone(), self.slots.clone());
        self.runtime.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            // An unknown outcome (no answer in time, a busy controller) is
            // asked again while the change is still the one in flight: it
            // may have been committed, and dropping it would take a member
            // the controller added out of the maximal ISR.
            let answered = loop {
                let (changes, request) = (changes.clone(), request.clone());
                let answered =
                    tokio::task::spawn_blocking(move || changes.alter_partition(request)).await;
                match &answered {
                    Ok(Err(refusal))
                        if refusal.is_retriable() && partition.isr_change_in_flight(&proposal) =>
                    {
                        tracing::debug!(event = "isr_change_retried", partition = ?partition, code = refusal.code());
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    _ => break answered,
                }
            };
            let metrics = crate::metrics::metrics();
            match answered {
                Ok(Ok(state)) => {
                    match &proposal.kind {
                        IsrChangeKind::Expand { .. } => metrics.replication().isr_expands.inc(),
                        IsrChangeKind::Shrink { .. } => metrics.replication().isr_shrinks.inc(),
                    }
                    tracing::info!(event = "isr_changed", partition = ?partition, change = ?proposal.kind, isr = ?state.isr, partition_epoch = state.partition_epoch);
                    partition.isr_change_committed(ReplicaSet {
                        replicas: state.replicas,
                        isr: state.isr,
                        leader_epoch: state.leader_epoch,
                        partition_epoch: state.partition_epoch,
                        removing: Vec::new(),
                    });
                }
                Ok(Err(refusal)) if refusal_leaves_partition_unchanged(refusal.code()) => {
                    tracing::info!(event = "isr_change_refused", partition = ?partition, change = ?proposal.kind, code = refusal.code(), reason = %refusal.message());
                    partition.isr_change_refused(&proposal);
                }
                // The partition moved on, maybe by this change: the maximal
                // ISR holds until the metadata image shows what it is now.
                Ok(Err(refusal)) => {
                    tracing::info!(event = "isr_change_awaits_metadata", partition = ?partition, change = ?proposal.kind, code = refusal.code(), reason = %refusal.message());
                }
                Err(error) => {
                    tracing::error!(event = "isr_change_failed", partition = ?partition, %error);
                }
            }
        });
    }
}

/// Every `interval`, the ISR members of partitions led here that fell
/// behind for longer than `lag_time_max_ms` are proposed out.
pub(super) async fn check_lagging_followers(
    broker: Arc<Broker>,
    updates: IsrUpdates,
    lag_time_max_ms: i64,
) {
    let interval = Duration::from_millis(u64::try_from(lag_time_max_ms / 4).unwrap_or(1_000))
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = now_ms();
        for topic in broker.topics() {
            for partition in topic.hosted_partitions() {
                if let Some(proposal) = partition.propose_isr_shrink(now, lag_time_max_ms) {
                    updates.send(partition.clone(), topic.id, proposal);
                }
            }
        }
    }
}
