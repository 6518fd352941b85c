//! From a whole request frame to a reply: decode the header, check the
//! version against what we advertise, decode the body, run the handler.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, decode_request_header_from_buffer};
use thiserror::Error;

use super::api;
use super::listener::ListenerLimits;
use super::response::ResponseFrame;
use super::versions::is_supported;
use crate::broker::{Broker, JobCost};
use crate::group::GroupCoordinator;

/// Largest frame accepted for any API but Produce: bounds what a decoder can
/// be asked to allocate for a lying array length.
pub const NON_PRODUCE_REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What goes back for one request, in request order.
pub enum Reply {
    /// acks=0 produce: Kafka sends nothing back.
    Nothing,
    Ready(ResponseFrame),
    /// Completes later (acks wait, fetch long poll); still written in order.
    Pending(BoxFuture<'static, Result<ResponseFrame, DispatchError>>),
}

/// Reasons to close the connection instead of answering.
#[derive(Debug, Error)]
pub enum DispatchError {
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("{key:?} request of {size_bytes} bytes exceeds {NON_PRODUCE_REQUEST_BYTES_MAX}")]
    TooLarge { key: ApiKey, size_bytes: usize },
    #[error("malformed {key:?} v{version} request: {message}")]
    Malformed {
        key: ApiKey,
        version: i16,
        message: String,
    },
    #[error("encoding {key:?} response: {message}")]
    Encode { key: ApiKey, message: String },
    #[error("{key:?} on the storage threads: {source}")]
    Storage {
        key: ApiKey,
        source: crate::broker::IoPoolError,
    },
}

/// Request facts every handler needs.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub broker: Arc<Broker>,
    /// The group coordinator, once started (COORDINATOR_NOT_AVAILABLE before).
    pub groups: Option<Arc<GroupCoordinator>>,
    pub header: RequestHeader,
    pub key: ApiKey,
    pub version: i16,
    pub limits: ListenerLimits,
}

impl RequestContext {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    /// Encodes `body` behind the response header this API and version use.
    pub fn encode<R: Encodable>(&self, body: &R) -> Result<ResponseFrame, DispatchError> {
        encode_response(self.key, self.version, self.correlation_id(), body)
    }
}

pub fn encode_response<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<ResponseFrame, DispatchError> {
    let mut buf = BytesMut::with_capacity(128);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode = |buf: &mut BytesMut| -> anyhow::Result<()> {
        header.encode(buf, key.response_header_version(version))?;
        body.encode(buf, version)
    };
    encode(&mut buf).map_err(|e| DispatchError::Encode {
        key,
        message: e.to_string(),
    })?;
    Ok(ResponseFrame::from_bytes(buf.freeze()))
}

/// Runs one request up to the point where its effects are applied (appends
/// above all); the connection awaits this before dispatching its next
/// request, so they apply in arrival order. Only waiting (acks, long polls)
/// is left to the returned reply.
pub async fn dispatch(
    broker: &Arc<Broker>,
    groups: Option<&Arc<GroupCoordinator>>,
    limits: &ListenerLimits,
    frame: Bytes,
) -> Result<Reply, DispatchError> {
    let mut results = dispatch_all(broker, groups, limits, vec![frame]).await;
    results
        .pop()
        .expect("dispatch_all answers the first request, or fails it")
}

/// Runs requests of one connection in order, as `dispatch` would one by one,
/// with consecutive storage work sharing one trip to the storage threads:
/// pipelined produces pay for leaving the async worker once, not once
/// each. Stops at the first error (which closes the connection), so the
/// results may be fewer than the frames; never empty for a non-empty input.
pub async fn dispatch_all(
    broker: &Arc<Broker>,
    groups: Option<&Arc<GroupCoordinator>>,
    limits: &ListenerLimits,
    frames: Vec<Bytes>,
) -> Vec<Result<Reply, DispatchError>> {
    let mut results = Vec::with_capacity(frames.len());
    let mut storage: Vec<Job> = Vec::new();
    for frame in frames {
        let job = match route(broker, groups, limits, frame) {
            Ok(job) if job.storage.is_some() => {
                storage.push(job);
                continue;
            }
            routed => routed,
        };
        // Whatever comes next waits for the storage work before it.
        if !run_on_storage_threads(broker, std::mem::take(&mut storage), &mut results).await {
            return results;
        }
        let result = job.and_then(|job| (job.run)());
        let failed = result.is_err();
        results.push(result);
        if failed {
            return results;
        }
    }
    run_on_storage_threads(broker, storage, &mut results).await;
    results
}

/// A decoded request, ready to run where it belongs.
struct Job {
    key: ApiKey,
    /// Set when it writes files (appends, topic and registry changes, offset
    /// commits, producer-id blocks) or reads and decompresses records (a
    /// timestamp lookup): it must not hold up an async worker.
    storage: Option<JobCost>,
    run: Box<dyn FnOnce() -> Result<Reply, DispatchError> + Send>,
}

/// Runs `jobs` in order on one storage thread, pushing each result; false
/// (and no further job run) after the first error.
async fn run_on_storage_threads(
    broker: &Arc<Broker>,
    jobs: Vec<Job>,
    results: &mut Vec<Result<Reply, DispatchError>>,
) -> bool {
    let Some(key) = jobs.first().map(|job| job.key) else {
        return true;
    };
    let cost = if jobs.iter().all(|job| job.storage == Some(JobCost::Short)) {
        JobCost::Short
    } else {
        JobCost::Long
    };
    let ran = broker
        .io()
        .run("requests", cost, move || {
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                let result = (job.run)();
                let failed = result.is_err();
                results.push(result);
                if failed {
                    break;
                }
            }
            results
        })
        .await;
    match ran {
        Ok(ran) => {
            let failed = ran.last().is_some_and(Result::is_err);
            results.extend(ran);
            !failed
        }
        Err(source) => {
            results.push(Err(DispatchError::Storage { key, source }));
            false
        }
    }
}

/// Checks the header and decodes the body; the handler itself runs later,
/// after the requests before it.
fn route(
    broker: &Arc<Broker>,
    groups: Option<&Arc<GroupCoordinator>>,
    limits: &ListenerLimits,
    mut frame: Bytes,
) -> Result<Job, DispatchError> {
    assert!(frame.len() >= super::frame::REQUEST_HEADER_BYTES_MIN);
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| DispatchError::UnknownApiKey(raw_key))?;
    if !is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok(Job {
                key,
                storage: None,
                run: Box::new(move || {
                    api::api_versions::unsupported_version(correlation_id).map(Reply::Ready)
                }),
            });
        }
        return Err(DispatchError::UnsupportedVersion { key, version });
    }
    if key != ApiKey::Produce && frame.len() > NON_PRODUCE_REQUEST_BYTES_MAX {
        return Err(DispatchError::TooLarge {
            key,
            size_bytes: frame.len(),
        });
    }
    let malformed = |e: anyhow::Error| DispatchError::Malformed {
        key,
        version,
        message: e.to_string(),
    };
    let header = decode_request_header_from_buffer(&mut frame).map_err(malformed)?;
    let ctx = RequestContext {
        broker: broker.clone(),
        groups: groups.cloned(),
        header,
        key,
        version,
        limits: *limits,
    };
    let frame = &mut frame;
    match key {
        ApiKey::ApiVersions => memory(ctx, frame, api::api_versions::handle),
        ApiKey::Metadata => {
            let request = decode(frame, &ctx)?;
            let storage = api::metadata::may_create_topics(&ctx, &request).then_some(JobCost::Long);
            Ok(job(ctx, request, api::metadata::handle, storage))
        }
        ApiKey::Produce => {
            let request = decode(frame, &ctx)?;
            let cost = api::produce::cost(&request);
            Ok(job(ctx, request, api::produce::handle, Some(cost)))
        }
        ApiKey::Fetch => memory(ctx, frame, api::fetch::handle),
        ApiKey::ListOffsets => {
            let request = decode(frame, &ctx)?;
            let storage = api::list_offsets::reads_records(&request).then_some(JobCost::Long);
            Ok(job(ctx, request, api::list_offsets::handle, storage))
        }
        ApiKey::CreateTopics => storage(ctx, frame, api::create_topics::handle),
        ApiKey::FindCoordinator => memory(ctx, frame, api::find_coordinator::handle),
        ApiKey::JoinGroup => memory(ctx, frame, api::join_group::handle),
        ApiKey::SyncGroup => memory(ctx, frame, api::sync_group::handle),
        ApiKey::Heartbeat => memory(ctx, frame, api::heartbeat::handle),
        ApiKey::LeaveGroup => memory(ctx, frame, api::leave_group::handle),
        ApiKey::OffsetCommit => storage(ctx, frame, api::offset_commit::handle),
        ApiKey::OffsetFetch => memory(ctx, frame, api::offset_fetch::handle),
        ApiKey::ListGroups => memory(ctx, frame, api::list_groups::handle),
        ApiKey::DescribeGroups => memory(ctx, frame, api::describe_groups::handle),
        ApiKey::DeleteGroups => storage(ctx, frame, api::delete_groups::handle),
        ApiKey::OffsetDelete => storage(ctx, frame, api::offset_delete::handle),
        ApiKey::InitProducerId => storage(ctx, frame, api::init_producer_id::handle),
        ApiKey::DescribeConfigs => memory(ctx, frame, api::describe_configs::handle),
        ApiKey::AlterConfigs => storage(ctx, frame, api::alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => {
            storage(ctx, frame, api::alter_configs::handle_incremental)
        }
        ApiKey::CreatePartitions => storage(ctx, frame, api::create_partitions::handle),
        ApiKey::DeleteTopics => storage(ctx, frame, api::delete_topics::handle),
        ApiKey::DeleteRecords => storage(ctx, frame, api::delete_records::handle),
        ApiKey::DescribeCluster => memory(ctx, frame, api::describe_cluster::handle),
        ApiKey::OffsetForLeaderEpoch => memory(ctx, frame, api::offset_for_leader_epoch::handle),
        other => Err(DispatchError::UnsupportedVersion {
            key: other,
            version,
        }),
    }
}

type Handler<T> = fn(&RequestContext, T) -> Result<Reply, DispatchError>;

/// A handler that only reads and changes memory: it runs on the async worker.
fn memory<T: Decodable + Send + 'static>(
    ctx: RequestContext,
    frame: &mut Bytes,
    handler: Handler<T>,
) -> Result<Job, DispatchError> {
    let request = decode(frame, &ctx)?;
    Ok(job(ctx, request, handler, None))
}

/// A handler that touches files: it runs on the storage threads.
fn storage<T: Decodable + Send + 'static>(
    ctx: RequestContext,
    frame: &mut Bytes,
    handler: Handler<T>,
) -> Result<Job, DispatchError> {
    let request = decode(frame, &ctx)?;
    Ok(job(ctx, request, handler, Some(JobCost::Long)))
}

fn job<T: Send + 'static>(
    ctx: RequestContext,
    request: T,
    handler: Handler<T>,
    storage: Option<JobCost>,
) -> Job {
    Job {
        key: ctx.key,
        storage,
        run: Box::new(move || handler(&ctx, request)),
    }
}

/// Decodes the body. Bytes left over are tolerated, as Kafka brokers do:
/// librdkafka 2.12 sends Metadata v12 with three extra bytes.
fn decode<T: Decodable>(frame: &mut Bytes, ctx: &RequestContext) -> Result<T, DispatchError> {
    let body = T::decode(frame, ctx.version).map_err(|e| DispatchError::Malformed {
        key: ctx.key,
        version: ctx.version,
        message: e.to_string(),
    })?;
    if frame.has_remaining() {
        tracing::debug!(event = "request_trailing_bytes", api = ?ctx.key, version = ctx.version, bytes = frame.remaining());
    }
    Ok(body)
}
