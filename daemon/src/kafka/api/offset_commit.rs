//! OffsetCommit: fencing by the coordinator, then an append to the group's
//! offsets partition; acknowledged once appended (and synced when the
//! offsets topic syncs before acknowledging).

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};

use super::group_common::{coordinator, not_available, optional};
use crate::broker::now_ms;
use crate::group::{CommittedOffset, Coordinator, OffsetKey};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::group_error_code;

/// Longest a commit waits for its fsync before REQUEST_TIMED_OUT.
const COMMIT_SYNC_WAIT_MAX: Duration = Duration::from_secs(30);

/// Per partition: its code, or None while it rides on the group's commit.
type Answers = Vec<(TopicName, Vec<(i32, Option<i16>)>)>;

pub fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> Result<Reply, DispatchError> {
    let coordinator = coordinator(ctx);
    let (answers, entries) = sort_partitions(ctx, request.topics, coordinator.is_some());
    let Some(coordinator) = coordinator.filter(|_| !entries.is_empty()) else {
        return ctx.encode(&response(answers, 0)).map(Reply::Ready);
    };
    let instance = optional(&request.group_instance_id);
    let member = (
        request.group_id.as_str(),
        request.member_id.as_str(),
        instance.as_deref(),
        request.generation_id_or_member_epoch,
    );
    let started = Instant::now();
    let (code, wait) = match coordinator.commit(&ctx.broker, member, entries) {
        Ok(wait) => (0, wait),
        Err(e) => {
            tracing::debug!(event = "commit_refused", group = %request.group_id.as_str(), error = %e);
            (group_error_code(&e), None)
        }
    };
    let Some((partition, offset)) = wait else {
        tracing::debug!(event = "commit", group = %request.group_id.as_str(), code, latency_us = started.elapsed().as_micros() as u64);
        return ctx.encode(&response(answers, code)).map(Reply::Ready);
    };
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        let synced = partition
            .wait_for_high_watermark(offset, Instant::now() + COMMIT_SYNC_WAIT_MAX)
            .await;
        let code = if synced {
            code
        } else {
            ResponseError::RequestTimedOut.code()
        };
        ctx.encode(&response(answers, code))
    })))
}

/// Answers what fails per partition (unknown partition, metadata too
/// large) and gathers the rest into one commit for the group.
fn sort_partitions(
    ctx: &RequestContext,
    topics: Vec<OffsetCommitRequestTopic>,
    available: bool,
) -> (Answers, Vec<(OffsetKey, CommittedOffset)>) {
    let mut answers: Answers = Vec::with_capacity(topics.len());
    let mut entries = Vec::new();
    let timestamp_ms = now_ms();
    for topic in topics {
        let found = ctx.broker.topic(topic.name.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let metadata = optional(&p.committed_metadata).unwrap_or_default();
            let code = if !available {
                Some(not_available())
            } else if !found
                .as_ref()
                .is_some_and(|t| t.has_partition(p.partition_index))
            {
                Some(ResponseError::UnknownTopicOrPartition.code())
            } else if let Err(e) = Coordinator::check_offset_metadata(&metadata) {
                Some(group_error_code(&e))
            } else {
                let leader_epoch = if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                };
                let value = CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms: timestamp_ms,
                };
                entries.push(((topic.name.to_string(), p.partition_index), value));
                None
            };
            partitions.push((p.partition_index, code));
        }
        answers.push((topic.name, partitions));
    }
    (answers, entries)
}

fn response(answers: Answers, group_code: i16) -> OffsetCommitResponse {
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, code)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code.unwrap_or(group_code))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
