//! TLS for QUIC between nodes: TLS 1.3 only, one crypto provider (ring),
//! both ends present a certificate from the cluster CA, every CA in
//! `ca-bundle.pem` is trusted (two during a rotation), and sessions are
//! never resumed, so every connection is checked against the bundle as it
//! is now.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};

use super::certs::{CA_BUNDLE_FILE, node_cert_file, node_key_file};

/// The ALPN protocol of node-to-node connections.
pub const ALPN_CLUSTER: &[u8] = b"sluice-cluster/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {reason} (make it with `sluiced certs --spec FILE --out DIR`)")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: no certificate authority in it")]
    NoRoots { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// What one node needs for TLS: the trusted CAs, its certificate chain and
/// its private key.
#[derive(Debug)]
pub struct TlsMaterial {
    pub node_id: i32,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// Loads node `node_id`'s files from a directory `sluiced certs` wrote.
    pub fn load(dir: &Path, node_id: i32) -> Result<TlsMaterial, TlsError> {
        let read = |path: PathBuf| {
            move |e: rustls::pki_types::pem::Error| TlsError::Read {
                reason: e.to_string(),
                path,
            }
        };
        let bundle = dir.join(CA_BUNDLE_FILE);
        let cas = CertificateDer::pem_file_iter(&bundle)
            .map_err(read(bundle.clone()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read(bundle.clone()))?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca)?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots { path: bundle });
        }
        let cert = dir.join(node_cert_file(node_id));
        let chain = CertificateDer::pem_file_iter(&cert)
            .map_err(read(cert.clone()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read(cert.clone()))?;
        let key_path = dir.join(node_key_file(node_id));
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(read(key_path))?;
        Ok(TlsMaterial {
            node_id,
            roots: Arc::new(roots),
            chain,
            key,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The accepting side: a client certificate from a trusted CA is required.
pub fn server_config(material: &TlsMaterial) -> Result<rustls::ServerConfig, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(material.roots.clone(), provider()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_CLUSTER.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The dialling side: the server must prove the node name it is dialled as
/// (`identity::node_server_name`) with a certificate from a trusted CA.
pub fn client_config(material: &TlsMaterial) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(material.roots.clone())
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_CLUSTER.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}
