//! Node-to-node transport: QUIC between the nodes of a cluster, with mutual
//! TLS against the cluster's own CA (DESIGN §3–4).
//!
//! Built so far: the certificates (`certs`, behind `sluiced certs`), what a
//! node's certificate says about who it is (`identity`), and the TLS
//! configurations both ends of a connection use (`tls`). The QUIC endpoint
//! comes with the controller quorum; the single-node default needs none of it.

pub mod certs;
pub mod identity;
pub mod tls;

#[cfg(test)]
mod tests;
