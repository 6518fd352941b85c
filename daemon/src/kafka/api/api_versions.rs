//! ApiVersions: the table in `versions.rs`, nothing more.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use crate::kafka::dispatch::{DispatchError, Reply, RequestContext, encode_response};
use crate::kafka::response::ResponseFrame;
use crate::kafka::versions::SUPPORTED_APIS;

fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.key as i16)
                .with_min_version(a.min_version)
                .with_max_version(a.max_version)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

pub fn handle(ctx: &RequestContext, _request: ApiVersionsRequest) -> Result<Reply, DispatchError> {
    ctx.encode(&response(0)).map(Reply::Ready)
}

/// A client asking with a newer ApiVersions than ours gets a v0 answer
/// carrying UNSUPPORTED_VERSION and our table, so it can retry with one we
/// know (KIP-511).
pub fn unsupported_version(correlation_id: i32) -> Result<ResponseFrame, DispatchError> {
    let body = response(ResponseError::UnsupportedVersion.code());
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
}
