//! Node-to-node transport: QUIC between the nodes of a cluster, with mutual
//! TLS against the cluster's own CA (DESIGN §3–4).
//!
//! The parts: the certificates (`certs`, behind `sluiced certs`), what a
//! node's certificate says about who it is (`identity`), the TLS
//! configurations both ends of a connection use (`tls`), frames (`frame`),
//! one QUIC endpoint per node that admits only nodes of its cluster
//! (`quic`), bounded per-peer message links (`link`), and per-peer path
//! statistics read from quinn's connection state (`path_stats`). The controller
//! quorum and the brokers' membership (cluster/runtime.rs) use it; the
//! single-node default needs none of it.

pub mod certs;
pub mod frame;
pub mod identity;
pub mod link;
pub mod path_stats;
pub mod quic;
pub mod tls;

#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod quic_tests;
#[cfg(test)]
mod tests;
