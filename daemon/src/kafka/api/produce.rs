//! Produce: validate and append each partition's batches on a storage
//! thread, in request order; wait for durability (fsync policy) before
//! answering if asked to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{JobCost, NO_EPOCH_CHECK, Partition, Replicated, now_ms};
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::partition_error_code;

/// Record bytes up to which an uncompressed produce is a short job (see
/// `JobCost`): its CRCs and page-cache write take well under a millisecond.
const SHORT_RECORDS_BYTES_MAX: usize = 256 * 1024;
/// The codec bits of a batch's attributes.
const CODEC_MASK: i16 = 0x7;

/// Longest a producer's `timeout_ms` may hold a reply back.
const ACK_WAIT_MAX: Duration = Duration::from_secs(300);

/// A partition's answer, possibly still waiting for its data to be durable.
struct PartitionOutcome {
    response: PartitionProduceResponse,
    wait_for: Option<AckWait>,
}

/// What an acknowledgement waits for: offsets below `offset` durable on
/// this broker (acks=1 under fsync-before-ack), or below the high watermark,
/// that is on every ISR member (acks=all).
struct AckWait {
    partition: Arc<Partition>,
    offset: i64,
    /// The leader epoch the records were appended at.
    epoch: i32,
    /// acks=all: `min.insync.replicas`, checked again once replicated.
    min_insync: Option<usize>,
}

impl AckWait {
    /// The error code once the wait is over (0: acknowledged).
    async fn wait(&self, deadline: Instant) -> i16 {
        let Some(min_insync) = self.min_insync else {
            return match self.partition.wait_for_durable(self.offset, deadline).await {
                true => 0,
                false => ResponseError::RequestTimedOut.code(),
            };
        };
        match self
            .partition
            .wait_for_replication(self.offset, self.epoch, deadline)
            .await
        {
            Replicated::Yes => {}
            Replicated::LeaderMoved => return ResponseError::NotLeaderOrFollower.code(),
            Replicated::TimedOut => return ResponseError::RequestTimedOut.code(),
        }
        // Replicated to every member of an ISR that shrank below the minimum
        // meanwhile: written, but not as safely as asked (Kafka's answer).
        match self.partition.isr_sizes() {
            Some(sizes) if sizes.maximal < min_insync => {
                ResponseError::NotEnoughReplicasAfterAppend.code()
            }
            _ => 0,
        }
    }
}

/// Short when the records are few and none is compressed, read from the
/// batch headers alone; anything unreadable is left to validation, as long.
pub fn cost(request: &ProduceRequest) -> JobCost {
    let mut total = 0;
    for topic in &request.topic_data {
        for partition in &topic.partition_data {
            let Some(records) = &partition.records else {
                continue;
            };
            total += records.len();
            if total > SHORT_RECORDS_BYTES_MAX || !all_uncompressed(records) {
                return JobCost::Long;
            }
        }
    }
    JobCost::Short
}

fn all_uncompressed(mut records: &[u8]) -> bool {
    while !records.is_empty() {
        let Ok(header) = crate::broker::parse_header(records, 0) else {
            return false;
        };
        if header.attributes & CODEC_MASK != 0 {
            return false;
        }
        let Some(rest) = records.get(header.batch_bytes as usize..) else {
            return false;
        };
        records = rest;
    }
    true
}

/// Runs on a storage thread (see `dispatch`): CRCs, decompression and the
/// writes happen here, and the connection waits for them before its next
/// request, so its appends keep their order.
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
                if let Some(wait) = outcome.wait_for.take() {
                    outcome.response.error_code = wait.wait(deadline).await;
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
    // Produce carries no leader epoch: only leadership is checked here, and
    // again under the log lock by the append itself.
    let partition = match ctx.broker.leader_partition(topic, index, NO_EPOCH_CHECK) {
        Ok(partition) => partition,
        Err(e) => return rejected(index, partition_error_code(&e), Some(e.to_string())),
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return rejected(
            index,
            ResponseError::CorruptMessage.code(),
            Some("no records".into()),
        );
    };
    let min_insync = match acks {
        -1 => ctx.broker.topic(topic).map_or(1, |t| {
            usize::try_from(t.config.min_insync_replicas).unwrap_or(1)
        }),
        _ => 1,
    };
    if acks == -1
        && let Some(sizes) = partition.isr_sizes()
        && sizes.committed < min_insync
    {
        let message = format!(
            "{partition:?} has {} in-sync replica(s); min.insync.replicas is {min_insync}",
            sizes.committed
        );
        return rejected(
            index,
            ResponseError::NotEnoughReplicas.code(),
            Some(message),
        );
    }
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
            return rejected(index, partition_error_code(&e), Some(e.to_string()));
        }
    };
    if acks != 0 && partition.fsync_before_ack() {
        ctx.broker.request_sync(&partition);
    }
    // Led alone, the high watermark moved with the append already.
    let replicated = partition.high_watermark() > info.last_offset
        && partition
            .isr_sizes()
            .is_some_and(|sizes| sizes.maximal >= min_insync);
    // A wait under a leadership that moved meanwhile answers
    // NOT_LEADER_OR_FOLLOWER at once: the producer retries at the new leader.
    let epoch = info.leader_epoch;
    let wait_for = match acks {
        -1 if replicated => None,
        -1 => Some(AckWait {
            partition: partition.clone(),
            offset: info.last_offset + 1,
            epoch,
            min_insync: Some(min_insync),
        }),
        1 if partition.fsync_before_ack() => Some(AckWait {
            partition: partition.clone(),
            offset: info.last_offset + 1,
            epoch,
            min_insync: None,
        }),
        _ => None,
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

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

    use super::*;

    fn batch(compression: Compression, value_bytes: usize) -> Bytes {
        let record = crate::log::producer_record(0, 1, None, Some(vec![7u8; value_bytes].into()));
        let mut out = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut out, [record].iter(), &options).unwrap();
        out.freeze()
    }

    fn request(records: &[Bytes]) -> ProduceRequest {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionProduceData::default()
                    .with_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default().with_partition_data(partitions),
        ])
    }

    #[test]
    fn only_small_uncompressed_produces_are_short() {
        let small = batch(Compression::None, 100);
        let two_batches = Bytes::from([small.clone(), small.clone()].concat());
        assert_eq!(
            cost(&request(&[small.clone(), two_batches])),
            JobCost::Short
        );
        let gzip = batch(Compression::Gzip, 100);
        assert_eq!(cost(&request(&[small.clone(), gzip])), JobCost::Long);
        let large = batch(Compression::None, SHORT_RECORDS_BYTES_MAX);
        assert_eq!(cost(&request(&[large])), JobCost::Long);
        // Many small partitions add up.
        let many = vec![batch(Compression::None, 64 * 1024); 5];
        assert_eq!(cost(&request(&many)), JobCost::Long);
        let cut = small.slice(..small.len() - 1);
        let trailing = Bytes::from([small.as_ref(), &[0u8; 3]].concat());
        assert_eq!(
            cost(&request(&[Bytes::from_static(&[1, 2, 3])])),
            JobCost::Long
        );
        assert_eq!(cost(&request(&[trailing])), JobCost::Long);
        assert_eq!(cost(&request(&[cut])), JobCost::Long);
    }
}
