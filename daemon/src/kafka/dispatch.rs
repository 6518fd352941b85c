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
use crate::broker::Broker;

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
}

/// Request facts every handler needs.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub broker: Arc<Broker>,
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

/// Runs one request. The synchronous part (appends above all) happens here,
/// in arrival order; only waiting is left to the returned future.
pub fn dispatch(
    broker: &Arc<Broker>,
    limits: &ListenerLimits,
    mut frame: Bytes,
) -> Result<Reply, DispatchError> {
    assert!(frame.len() >= super::frame::REQUEST_HEADER_BYTES_MIN);
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| DispatchError::UnknownApiKey(raw_key))?;
    if !is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return api::api_versions::unsupported_version(correlation_id).map(Reply::Ready);
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
        header,
        key,
        version,
        limits: *limits,
    };
    match key {
        ApiKey::ApiVersions => api::api_versions::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::Metadata => api::metadata::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::Produce => api::produce::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::Fetch => api::fetch::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::ListOffsets => api::list_offsets::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::CreateTopics => api::create_topics::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::FindCoordinator => api::find_coordinator::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::JoinGroup => api::join_group::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::SyncGroup => api::sync_group::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::Heartbeat => api::heartbeat::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::LeaveGroup => api::leave_group::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::OffsetCommit => api::offset_commit::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::OffsetFetch => api::offset_fetch::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::ListGroups => api::list_groups::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DescribeGroups => api::describe_groups::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DeleteGroups => api::delete_groups::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::OffsetDelete => api::offset_delete::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::InitProducerId => api::init_producer_id::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DescribeConfigs => api::describe_configs::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::AlterConfigs => api::alter_configs::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::IncrementalAlterConfigs => {
            api::alter_configs::handle_incremental(&ctx, decode(&mut frame, &ctx)?)
        }
        ApiKey::CreatePartitions => api::create_partitions::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DeleteTopics => api::delete_topics::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DeleteRecords => api::delete_records::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::DescribeCluster => api::describe_cluster::handle(&ctx, decode(&mut frame, &ctx)?),
        ApiKey::OffsetForLeaderEpoch => {
            api::offset_for_leader_epoch::handle(&ctx, decode(&mut frame, &ctx)?)
        }
        other => Err(DispatchError::UnsupportedVersion {
            key: other,
            version,
        }),
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
