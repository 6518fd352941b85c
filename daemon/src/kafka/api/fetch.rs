//! Fetch: read whole batches below the high watermark; if fewer than
//! `min_bytes` are there, wait (long poll) for any requested partition's high
//! watermark to move, until `max_wait_ms`. Records go out with `sendfile`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::broker::LogError;
use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};
use crate::kafka::errors::{log_error_code, partition_error_code};
use crate::kafka::fetch_encode::{
    FetchAnswer, PartitionAnswer, TopicAnswer, encode_fetch_response,
};

/// Longest a fetch may be held open, whatever the client asks.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);
/// Isolation level value for read_committed.
const READ_COMMITTED: i8 = 1;

/// One requested partition.
#[derive(Debug, Clone)]
struct Wanted {
    index: i32,
    fetch_offset: i64,
    max_bytes: u32,
    current_leader_epoch: i32,
}

/// The request reduced to what reading needs; re-read on every wake-up.
#[derive(Debug, Clone)]
struct FetchPlan {
    topics: Vec<(String, Vec<Wanted>)>,
    max_bytes: u32,
    min_bytes: u32,
    read_committed: bool,
    version: i16,
}

pub fn handle(ctx: &RequestContext, request: FetchRequest) -> Result<Reply, DispatchError> {
    // We keep no incremental fetch sessions (KIP-227): every fetch is full,
    // answered with session id 0, which tells clients none was created.
    if ctx.version >= 7 && request.session_epoch > 0 {
        let answer = FetchAnswer {
            throttle_time_ms: 0,
            error_code: ResponseError::FetchSessionIdNotFound.code(),
            session_id: 0,
            topics: Vec::new(),
        };
        return encode(ctx, &answer).map(Reply::Ready);
    }
    let plan = FetchPlan::from_request(&request, ctx.version, ctx.limits.fetch_response_bytes_max);
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let mut watchers = subscribe(&ctx.broker, &plan);
    let (answer, ready) = plan.read(&ctx.broker);
    if ready || wait.is_zero() || watchers.is_empty() {
        return encode(ctx, &answer).map(Reply::Ready);
    }
    let ctx = ctx.clone();
    Ok(Reply::Pending(Box::pin(async move {
        loop {
            let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                break;
            }
            let (answer, ready) = plan.read(&ctx.broker);
            if ready {
                return encode(&ctx, &answer);
            }
        }
        encode(&ctx, &plan.read(&ctx.broker).0)
    })))
}

fn encode(
    ctx: &RequestContext,
    answer: &FetchAnswer,
) -> Result<crate::kafka::response::ResponseFrame, DispatchError> {
    // Counted here, for the answer that is really sent (not long-poll re-reads).
    let metrics = crate::metrics::metrics();
    crate::kafka::errors::count_error(ctx.key, answer.error_code);
    for topic in &answer.topics {
        for partition in &topic.partitions {
            crate::kafka::errors::count_error(ctx.key, partition.data.error_code);
            let Some(slice) = partition.records.as_ref().filter(|f| f.len > 0) else {
                continue;
            };
            let labels = [
                topic.name.as_str(),
                &partition.data.partition_index.to_string(),
            ];
            let spanned = (slice.offsets.end - slice.offsets.start).max(0) as u64;
            metrics
                .bytes_out
                .with_label_values(&labels)
                .inc_by(u64::from(slice.len));
            metrics
                .records_out
                .with_label_values(&labels)
                .inc_by(spanned);
        }
    }
    encode_fetch_response(ctx.correlation_id(), ctx.version, answer).map_err(|e| {
        DispatchError::Encode {
            key: ctx.key,
            message: e.to_string(),
        }
    })
}

fn subscribe(broker: &Broker, plan: &FetchPlan) -> Vec<watch::Receiver<i64>> {
    let mut watchers = Vec::new();
    for (name, wanted) in &plan.topics {
        let Some(topic) = broker.topic(name) else {
            continue;
        };
        watchers.extend(
            wanted
                .iter()
                .filter_map(|w| topic.partition(w.index).map(|p| p.subscribe())),
        );
    }
    watchers
}

impl FetchPlan {
    fn from_request(request: &FetchRequest, version: i16, response_bytes_max: u32) -> Self {
        let topics = request
            .topics
            .iter()
            .map(|t| {
                let wanted = t
                    .partitions
                    .iter()
                    .map(|p| Wanted {
                        index: p.partition,
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as u32,
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect();
                (t.topic.as_str().to_string(), wanted)
            })
            .collect();
        Self {
            topics,
            max_bytes: (request.max_bytes.max(0) as u32).min(response_bytes_max),
            min_bytes: request.min_bytes.max(0) as u32,
            read_committed: request.isolation_level == READ_COMMITTED,
            version,
        }
    }

    /// Reads every partition; `ready` when the answer should go out now
    /// (enough bytes, or an error the client must see).
    fn read(&self, broker: &Arc<Broker>) -> (FetchAnswer, bool) {
        let mut total_bytes: u32 = 0;
        let mut has_error = false;
        let topics = self
            .topics
            .iter()
            .map(|(name, wanted)| {
                let partitions = wanted
                    .iter()
                    .map(|w| {
                        let answer = self.read_partition(broker, name, w, &mut total_bytes);
                        has_error |= answer.data.error_code != 0;
                        answer
                    })
                    .collect();
                TopicAnswer {
                    name: name.clone(),
                    partitions,
                }
            })
            .collect();
        let answer = FetchAnswer {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics,
        };
        (answer, has_error || total_bytes >= self.min_bytes)
    }

    fn read_partition(
        &self,
        broker: &Arc<Broker>,
        topic: &str,
        wanted: &Wanted,
        total_bytes: &mut u32,
    ) -> PartitionAnswer {
        let mut data = PartitionData::default()
            .with_partition_index(wanted.index)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1))
            .with_aborted_transactions(self.read_committed.then(Vec::new))
            .with_records(None);
        if self.version < 5 {
            data.log_start_offset = -1;
        }
        let fail = |data: PartitionData, code: i16| PartitionAnswer {
            data: data.with_error_code(code),
            records: None,
        };
        let partition =
            match broker.leader_partition(topic, wanted.index, wanted.current_leader_epoch) {
                Ok(partition) => partition,
                Err(e) => return fail(data, partition_error_code(&e)),
            };
        let remaining = self.max_bytes.saturating_sub(*total_bytes);
        let max_bytes = wanted.max_bytes.min(remaining);
        match partition.read(wanted.fetch_offset, max_bytes, *total_bytes == 0) {
            Ok(read) => {
                data = with_offsets(
                    data,
                    self.version,
                    read.high_watermark,
                    read.log_start_offset,
                );
                let records = read.slice.file;
                *total_bytes = total_bytes.saturating_add(records.as_ref().map_or(0, |f| f.len));
                PartitionAnswer { data, records }
            }
            Err(e) => {
                if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                    tracing::warn!(event = "fetch_read_failed", partition = ?partition, error = %e);
                }
                let offsets = partition.offsets();
                let data = with_offsets(
                    data,
                    self.version,
                    offsets.high_watermark,
                    offsets.log_start_offset,
                );
                fail(data, log_error_code(&e))
            }
        }
    }
}

/// The last stable offset equals the high watermark (no transactions yet);
/// the log start offset exists from v5 on.
fn with_offsets(
    data: PartitionData,
    version: i16,
    high_watermark: i64,
    log_start_offset: i64,
) -> PartitionData {
    let data = data
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(high_watermark);
    if version >= 5 {
        data.with_log_start_offset(log_start_offset)
    } else {
        data
    }
}
