//! Sluice: a Kafka-compatible, replicated, durable commit log.
//!
//! One folder per subsystem; see docs/ARCHITECTURE.md for how data flows
//! between them.

pub mod alloc_guard;
pub mod bench;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod failstop;
pub mod group;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod replication;
pub mod service;
pub mod transport;

/// Unit tests run under the same allocator as the daemon (see alloc_guard).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_guard::GuardedAllocator = alloc_guard::GuardedAllocator;
