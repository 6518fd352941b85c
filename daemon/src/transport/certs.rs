//! `sluiced certs`: the cluster's own certificate authority and one
//! certificate per node, made with rcgen into one directory:
//!
//! ```text
//! ca/ca.pem, ca/ca.key        the CA (its key stays with the operator, never on nodes)
//! ca/generation               the CA's generation, so old and new CAs differ by name
//! ca-bundle.pem               every CA nodes trust: one, or two during a rotation
//! node-<id>.pem, node-<id>.key  one node's certificate (DNS name node-<id>.sluice) and key
//! ```
//!
//! A second run keeps what exists and issues only what is missing (a node
//! added to the spec gets a certificate from the existing CA); `--renew`
//! re-issues. A rotation goes in three runs, each changing one side only,
//! so that any two nodes trust each other at every point
//! (docs/OPERATIONS.md): `start` makes the next CA and trusts both,
//! `reissue` signs every node with the next CA, `finish` retires the old.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::identity::node_dns_name;

pub const CA_BUNDLE_FILE: &str = "ca-bundle.pem";
const CA_CERT: &str = "ca/ca.pem";
const CA_KEY: &str = "ca/ca.key";
const NEXT_CA_CERT: &str = "ca/ca-next.pem";
const NEXT_CA_KEY: &str = "ca/ca-next.key";
const GENERATION: &str = "ca/generation";
/// How long a node certificate is valid unless `--days` says otherwise.
pub const NODE_CERT_DAYS_DEFAULT: u32 = 825;
/// Most days a node certificate may be made valid for.
pub const NODE_CERT_DAYS_MAX: u32 = 3650;
const CA_VALID_DAYS: i64 = 3650;

pub fn node_cert_file(id: i32) -> String {
    format!("node-{id}.pem")
}

pub fn node_key_file(id: i32) -> String {
    format!("node-{id}.key")
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    State(String),
}

/// Which node certificates a run makes again although they exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    Missing,
    Node(i32),
    All,
}

/// One step of a CA rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateStep {
    Start,
    Reissue,
    Finish,
}

/// What one run works on.
#[derive(Clone, Copy, Debug)]
pub struct CertsRun<'a> {
    pub out: &'a Path,
    pub cluster: &'a str,
    pub node_ids: &'a [i32],
    pub days: u32,
}

/// Makes the CA if there is none, then every node certificate that is
/// missing (or asked to be renewed). Returns one line per file made or kept.
pub fn make(
    run: CertsRun<'_>,
    renew: Renew,
    now: OffsetDateTime,
) -> Result<Vec<String>, CertsError> {
    check_days(run.days)?;
    if let Renew::Node(id) = renew
        && !run.node_ids.contains(&id)
    {
        return Err(CertsError::State(format!(
            "--renew {id}: broker {id} is not declared in the spec (declared: {:?})",
            run.node_ids
        )));
    }
    create_dir(run.out)?;
    create_dir(&run.out.join("ca"))?;
    let mut lines = Vec::new();
    let ca_cert = run.out.join(CA_CERT);
    if !ca_cert.exists() {
        let generation = 1;
        let (cert, key) = new_ca(run.cluster, generation, now)?;
        write_file(&run.out.join(CA_KEY), &key, true)?;
        write_file(&ca_cert, &cert, false)?;
        write_file(&run.out.join(GENERATION), &format!("{generation}\n"), false)?;
        write_file(&run.out.join(CA_BUNDLE_FILE), &cert, false)?;
        lines.push(format!(
            "created {CA_CERT} (keep {CA_KEY} off the nodes) and {CA_BUNDLE_FILE}"
        ));
    } else {
        lines.push(format!("using the existing CA {CA_CERT}"));
    }
    let issuer = load_issuer(run.out, CA_CERT, CA_KEY)?;
    for &id in run.node_ids {
        let path = run.out.join(node_cert_file(id));
        let renewing = matches!(renew, Renew::All) || renew == Renew::Node(id);
        if path.exists() && !renewing {
            lines.push(format!("kept {}", node_cert_file(id)));
            continue;
        }
        lines.push(issue_node(run, &issuer, id, now)?);
    }
    Ok(lines)
}

/// One step of a CA rotation (see the module docs).
pub fn rotate(
    run: CertsRun<'_>,
    step: RotateStep,
    now: OffsetDateTime,
) -> Result<Vec<String>, CertsError> {
    check_days(run.days)?;
    let out = run.out;
    if !out.join(CA_CERT).exists() {
        return Err(CertsError::State(format!(
            "no CA in {}: run `sluiced certs` without --rotate-ca first",
            out.display()
        )));
    }
    let next_exists = out.join(NEXT_CA_CERT).exists();
    let mut lines = Vec::new();
    match step {
        RotateStep::Start => {
            if next_exists {
                return Err(CertsError::State(format!(
                    "a rotation is already under way ({NEXT_CA_CERT} exists): run --rotate-ca reissue or finish"
                )));
            }
            let generation = read_generation(out)? + 1;
            let (cert, key) = new_ca(run.cluster, generation, now)?;
            write_file(&out.join(NEXT_CA_KEY), &key, true)?;
            write_file(&out.join(NEXT_CA_CERT), &cert, false)?;
            let old = read_text(&out.join(CA_CERT))?;
            write_file(&out.join(CA_BUNDLE_FILE), &format!("{old}{cert}"), false)?;
            lines.push(format!("created {NEXT_CA_CERT} (generation {generation}); {CA_BUNDLE_FILE} now trusts both CAs"));
            lines.push(format!("next: copy {CA_BUNDLE_FILE} to every node and reload each, then run --rotate-ca reissue"));
        }
        RotateStep::Reissue => {
            if !next_exists {
                return Err(CertsError::State(
                    "no rotation under way: run --rotate-ca start first".into(),
                ));
            }
            let issuer = load_issuer(out, NEXT_CA_CERT, NEXT_CA_KEY)?;
            for &id in run.node_ids {
                lines.push(issue_node(run, &issuer, id, now)?);
            }
            lines.push("next: copy every node's certificate and key to it and reload it, then run --rotate-ca finish".into());
        }
        RotateStep::Finish => {
            if !next_exists {
                return Err(CertsError::State(
                    "no rotation under way: run --rotate-ca start first".into(),
                ));
            }
            let generation = read_generation(out)? + 1;
            rename(&out.join(NEXT_CA_KEY), &out.join(CA_KEY))?;
            rename(&out.join(NEXT_CA_CERT), &out.join(CA_CERT))?;
            write_file(&out.join(GENERATION), &format!("{generation}\n"), false)?;
            let cert = read_text(&out.join(CA_CERT))?;
            write_file(&out.join(CA_BUNDLE_FILE), &cert, false)?;
            lines.push(format!(
                "{CA_CERT} is now generation {generation}; {CA_BUNDLE_FILE} trusts only it"
            ));
            lines.push(format!(
                "next: copy {CA_BUNDLE_FILE} to every node and reload each"
            ));
        }
    }
    Ok(lines)
}

fn check_days(days: u32) -> Result<(), CertsError> {
    if !(1..=NODE_CERT_DAYS_MAX).contains(&days) {
        return Err(CertsError::State(format!(
            "--days must be between 1 and {NODE_CERT_DAYS_MAX}, got {days}"
        )));
    }
    Ok(())
}

/// A self-signed CA of `generation`: (certificate PEM, key PEM).
fn new_ca(
    cluster: &str,
    generation: u32,
    now: OffsetDateTime,
) -> Result<(String, String), CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Sluice {cluster} CA g{generation}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_VALID_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn load_issuer(out: &Path, cert: &str, key: &str) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let key_path = out.join(key);
    let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| CertsError::Invalid {
        path: key_path,
        reason: format!("not a private key: {e}"),
    })?;
    let cert_path = out.join(cert);
    Issuer::from_ca_cert_pem(&read_text(&cert_path)?, key).map_err(|e| CertsError::Invalid {
        path: cert_path,
        reason: format!("not a CA certificate: {e}"),
    })
}

/// Signs a fresh key for node `id`; returns the line to print.
fn issue_node(
    run: CertsRun<'_>,
    issuer: &Issuer<'static, KeyPair>,
    id: i32,
    now: OffsetDateTime,
) -> Result<String, CertsError> {
    let mut params = CertificateParams::new(vec![node_dns_name(id)])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("sluice {} node {id}", run.cluster),
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(run.days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_file(&run.out.join(node_key_file(id)), &key.serialize_pem(), true)?;
    write_file(&run.out.join(node_cert_file(id)), &cert.pem(), false)?;
    Ok(format!(
        "issued {} for {} (valid {} days)",
        node_cert_file(id),
        node_dns_name(id),
        run.days
    ))
}

fn read_generation(out: &Path) -> Result<u32, CertsError> {
    let path = out.join(GENERATION);
    read_text(&path)?
        .trim()
        .parse()
        .map_err(|_| CertsError::Invalid {
            path,
            reason: "expected the CA generation, a number".into(),
        })
}

fn read_text(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Io {
        operation: "reading",
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), CertsError> {
    fs::create_dir_all(path).map_err(|source| CertsError::Io {
        operation: "creating",
        path: path.to_path_buf(),
        source,
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), CertsError> {
    fs::rename(from, to).map_err(|source| CertsError::Io {
        operation: "renaming",
        path: from.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `text` (tmp + rename, synced); keys readable by
/// their owner only.
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let io = |operation, path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io {
            operation,
            path,
            source,
        }
    };
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(text.as_bytes())
        .map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming", &tmp))
}
