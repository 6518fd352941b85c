//! The declarative cluster spec: parse, validate, resolve.
//!
//! One TOML file, identical on every host, declares the cluster: its brokers,
//! controller voters, broker-wide limits, topic defaults and topics. This module
//! turns it into typed Rust (`ClusterSpec`) or into a list of errors that each
//! name file, line, column and key (`SpecErrors`). Everything here is a pure
//! function of the text, except `load_spec` (reads one file) and
//! `resolve_node_id` (may read the node file).
//!
//! Files: `spec.rs` types, `units.rs` sizes and durations, `document.rs` TOML to
//! types with positions, `validate.rs` semantic rules, `topic_config.rs` resolved
//! topic settings and Kafka config names, `node.rs` which broker am I,
//! `error.rs` errors, `diff.rs` the reload diff (old spec, new spec) → actions,
//! `servable.rs` what a valid spec needs that this build cannot serve yet,
//! `default.toml` the embedded default spec.
//! Every key is documented in docs/config-reference.md.

mod config_view;
mod diff;
mod document;
mod error;
mod node;
mod servable;
mod spec;
mod topic_config;
pub mod units;
mod validate;

use std::path::Path;

pub use config_view::{
    ConfigEntry, ConfigSource, ConfigSynonym, ConfigType, TopicSettingsSource, describe_broker,
    describe_topic, toml_key_for,
};
pub use diff::{ReloadAction, SettingChange, diff_specs};
pub use error::{LoadError, SpecError, SpecErrors};
pub use node::{DEFAULT_NODE_FILE, NODE_ID_ENV, resolve_node_id};
pub use servable::{SINGLE_NODE_ONE_REPLICA, Unservable, unservable};
pub use spec::{
    BrokerSpec, CleanupPolicyKind, ClusterSection, ClusterSpec, CompressionSetting,
    ControllerSection, DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS, DEFAULT_BROKER_SESSION_TIMEOUT_MS,
    DirtyRatio, FlushMode, HostPort, Limits, ReplicationSection, TimestampKind, TopicSettings,
    TopicSpec,
};
pub use topic_config::{
    PARTITIONS_MAX, RECOMPRESSION_NOT_BUILT, SEGMENT_BYTES_MIN, TopicConfig, is_topic_config_name,
};
pub use units::Limit;
pub use validate::validate_topic_name;

/// The built-in spec: one broker on 127.0.0.1, data in ./data, no declared topics.
pub const DEFAULT_SPEC_TOML: &str = include_str!("default.toml");

/// The origin shown in errors about the embedded default.
pub const DEFAULT_SPEC_ORIGIN: &str = "<embedded default>";

/// Parses and validates a spec. `origin` is the file name shown in errors.
/// Relative `data_dir`s are left as written (relative to the current directory).
pub fn parse_spec(text: &str, origin: &str) -> Result<ClusterSpec, SpecErrors> {
    document::parse(text, origin)
}

/// The embedded default spec, parsed.
pub fn default_spec() -> ClusterSpec {
    match parse_spec(DEFAULT_SPEC_TOML, DEFAULT_SPEC_ORIGIN) {
        Ok(spec) => spec,
        Err(errors) => panic!("the embedded default spec is invalid:\n{errors}"),
    }
}

/// Reads `path`, parses and validates it, and resolves relative `data_dir`s
/// against the directory holding the file.
pub fn load_spec(path: &Path) -> Result<ClusterSpec, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut spec = parse_spec(&text, &path.display().to_string()).map_err(LoadError::Invalid)?;
    let directory = path.parent().unwrap_or(Path::new(""));
    for broker in &mut spec.brokers {
        if broker.data_dir.is_relative() {
            broker.data_dir = directory.join(&broker.data_dir);
        }
    }
    if spec.brokers.len() > 1 {
        let tls = spec
            .controller
            .tls_dir
            .take()
            .unwrap_or_else(|| "tls".into());
        spec.controller.tls_dir = Some(match tls.is_relative() {
            true => directory.join(tls),
            false => tls,
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests;
