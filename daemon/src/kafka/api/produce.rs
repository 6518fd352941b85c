//! Produce: validate and append each partition's batches now, in request
//! order; wait for durability (fsync policy) before answering if asked to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Partition, now_ms};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::log_error_code;

/// Longest a producer's `timeout_ms` may hold a reply back.
const ACK_WAIT_MAX: Duration = Duration::from_secs(300);

/// A partition's answer, possibly still waiting for its data to be durable.
struct PartitionOutcome {
    response: PartitionProduceResponse,
    wait_for: Option<(Arc<Partition>, i64)>,
}

pub fn handle(ctx: &RequestContext, request: ProduceRequest) -> Result<Reply, DispatchError> {
    let acks = request.acks;
    let fixed_error = if !matches!(acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else if request.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        None
    };
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let mut outcomes = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let outcome = match fixed_error {
                Some(code) => rejected(data.index, code, None),
                None => append(
                    ctx,
                    topic_data.name.as_str(),
                    data.index,
                    data.records,
                    acks,
                ),
            }
            .for_version(ctx.version);
            crate::kafka::errors::count_error(ctx.key, outcome.response.error_code);
            outcomes.push(outcome);
        }
        topics.push((topic_data.name, outcomes));
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    let waits_for_sync = topics
        .iter()
        .flat_map(|(_, o)| o)
        .any(|o| o.wait_for.is_some());
    if !waits_for_sync {
        return ctx.encode(&response(topics)).map(Reply::Ready);
    }
    let deadline =
        Instant::now() + Duration::from_millis(request.timeout_ms.max(0) as u64).min(ACK_WAIT_MAX);
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        for (_, outcomes) in &mut topics {
            for outcome in outcomes.iter_mut() {
                if let Some((partition, offset)) = outcome.wait_for.take()
                    && !partition.wait_for_high_watermark(offset, deadline).await
                {
                    outcome.response.error_code = ResponseError::RequestTimedOut.code();
                }
            }
        }
        ctx.encode(&response(topics))
    })))
}

impl PartitionOutcome {
    /// Clears fields the codec cannot encode at `version`: log_start_offset
    /// exists from v5, error messages from v8.
    fn for_version(mut self, version: i16) -> Self {
        if version < 5 {
            self.response.log_start_offset = -1;
        }
        if version < 8 {
            self.response.error_message = None;
        }
        self
    }
}

fn rejected(index: i32, code: i16, message: Option<String>) -> PartitionOutcome {
    PartitionOutcome {
        response: PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(code)
            .with_base_offset(-1)
            .with_error_message(message.map(StrBytes::from_string)),
        wait_for: None,
    }
}

fn append(
    ctx: &RequestContext,
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
) -> PartitionOutcome {
    if topic == crate::group::OFFSETS_TOPIC {
        // Only the group coordinator writes its offsets log.
        return rejected(index, ResponseError::InvalidTopicException.code(), None);
    }
    let Some(partition) = ctx
        .broker
        .topic(topic)
        .and_then(|t| t.partition(index).cloned())
    else {
        return rejected(index, ResponseError::UnknownTopicOrPartition.code(), None);
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return rejected(
            index,
            ResponseError::CorruptMessage.code(),
            Some("no records".into()),
        );
    };
    let info = match partition.append(&records, now_ms()) {
        Ok(info) if info.duplicate => info,
        Ok(info) => {
            let metrics = crate::metrics::metrics();
            let labels = [topic, &index.to_string()];
            metrics
                .bytes_in
                .with_label_values(&labels)
                .inc_by(records.len() as u64);
            metrics
                .records_in
                .with_label_values(&labels)
                .inc_by(u64::from(info.record_count));
            info
        }
        Err(e) => {
            tracing::debug!(event = "produce_refused", partition = ?partition, error = %e);
            return rejected(index, log_error_code(&e), Some(e.to_string()));
        }
    };
    let wait_for = if acks != 0 && partition.fsync_before_ack() {
        ctx.broker.request_sync(&partition);
        Some((partition.clone(), info.last_offset + 1))
    } else {
        None
    };
    PartitionOutcome {
        response: PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(info.log_append_time_ms)
            .with_log_start_offset(partition.offsets().log_start_offset),
        wait_for,
    }
}

fn response(
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<PartitionOutcome>)>,
) -> ProduceResponse {
    let responses = topics
        .into_iter()
        .map(|(name, outcomes)| {
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(outcomes.into_iter().map(|o| o.response).collect())
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
