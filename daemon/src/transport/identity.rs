//! A node's identity is the one DNS name in its certificate,
//! `node-<id>.sluice`, signed by the cluster CA. The dialling side asks for
//! that name (TLS checks it); the accepting side reads it from the peer's
//! certificate, since client certificates carry no name TLS would check.

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;

/// The DNS name in node `id`'s certificate.
pub fn node_dns_name(id: i32) -> String {
    format!("node-{id}.sluice")
}

/// `node_dns_name` as the name a dialling node verifies.
pub fn node_server_name(id: i32) -> ServerName<'static> {
    ServerName::try_from(node_dns_name(id)).expect("node names are valid DNS names")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("the peer's certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the peer's certificate names no declared node (declared: {declared:?})")]
    NotADeclaredNode { declared: Vec<i32> },
    #[error("the peer's certificate names several nodes: {ids:?}")]
    SeveralNodes { ids: Vec<i32> },
}

/// Which declared node a peer's verified certificate chain (leaf first)
/// belongs to: exactly one of `declared` must match its name.
pub fn peer_node_id(chain: &[CertificateDer<'_>], declared: &[i32]) -> Result<i32, IdentityError> {
    let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
    let parsed =
        ParsedCertificate::try_from(leaf).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let ids: Vec<i32> = declared
        .iter()
        .copied()
        .filter(|id| rustls::client::verify_server_name(&parsed, &node_server_name(*id)).is_ok())
        .collect();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => Err(IdentityError::NotADeclaredNode {
            declared: declared.to_vec(),
        }),
        _ => Err(IdentityError::SeveralNodes { ids }),
    }
}
