//! The Kafka protocol server: TCP listener, per-connection framing and
//! ordering, dispatch by API key, and one handler file per API under `api/`.

pub mod api;
mod connection;
pub mod dispatch;
pub mod errors;
pub mod fetch_encode;
pub mod frame;
pub mod listener;
pub mod response;
pub mod versions;

#[cfg(test)]
mod dispatch_cluster_tests;
#[cfg(test)]
mod dispatch_group_tests;
#[cfg(test)]
mod dispatch_tests;

pub use listener::{ListenerLimits, serve};
