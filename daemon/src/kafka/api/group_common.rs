//! Helpers shared by the group API handlers.

use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;

use crate::group::GroupCoordinator;
use crate::kafka::dispatch::RequestContext;

/// The coordinator, or None before it started (answered COORDINATOR_NOT_AVAILABLE).
pub fn coordinator(ctx: &RequestContext) -> Option<Arc<GroupCoordinator>> {
    ctx.groups.clone()
}

pub fn string(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn optional(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub fn not_available() -> i16 {
    kafka_protocol::ResponseError::CoordinatorNotAvailable.code()
}

pub fn client_id(ctx: &RequestContext) -> String {
    optional(&ctx.header.client_id).unwrap_or_default()
}
