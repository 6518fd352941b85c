//! Node-to-node transport: QUIC between the nodes of a cluster, with mutual
//! TLS against the cluster's own CA (DESIGN §3–4).
//!
//! Built so far: the certificates (`certs`, behind `sluiced certs`), what a
//! node's certificate says about who it is (`identity`), the TLS
//! configurations both ends of a connection use (`tls`), frames (`frame`)
//! and one QUIC endpoint per node that admits only nodes of its cluster
//! (`quic`). The controller quorum will be its first user; the single-node
//! default needs none of it.

pub mod certs;
pub mod frame;
pub mod identity;
pub mod link;
pub mod quic;
pub mod tls;

#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod quic_tests;
#[cfg(test)]
mod tests;
