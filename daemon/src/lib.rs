//! Sluice: a Kafka-compatible, replicated, durable commit log.
//!
//! One folder per subsystem; see docs/ARCHITECTURE.md for how data flows
//! between them.

pub mod bench;
pub mod broker;
pub mod config;
pub mod group;
pub mod kafka;
pub mod log;
