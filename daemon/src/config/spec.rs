//! The cluster spec as typed Rust: one struct per TOML table.
//!
//! Every struct denies unknown keys. Sizes and durations are stored as plain
//! numbers whose field names end in their unit; the human strings of the file
//! ("1GiB", "7d") are converted by the helpers in `units.rs`. A `ClusterSpec` is
//! only ever produced by `parse_spec`, which validates it fully (see validate.rs).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::units::{self, Limit};

/// The whole cluster spec, identical on every host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub cluster: ClusterSection,
    pub controller: ControllerSection,
    /// In file order.
    pub brokers: Vec<BrokerSpec>,
    pub limits: Limits,
    pub replication: ReplicationSection,
    /// The `[topic_defaults]` table as written: unset keys fall back to Kafka's defaults.
    pub topic_defaults: TopicSettings,
    pub topics: BTreeMap<String, TopicSpec>,
    /// 16 hex digits of the FNV-1a 64-bit hash of the file's bytes.
    pub source_hash: String,
    /// The file as read: the controller records the spec it applies.
    pub source_text: std::sync::Arc<str>,
}

impl ClusterSpec {
    pub fn broker(&self, id: i32) -> Option<&BrokerSpec> {
        self.brokers.iter().find(|broker| broker.id == id)
    }

    /// Declared broker ids in file order.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.iter().map(|broker| broker.id).collect()
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// Kafka's `auto.create.topics.enable`: a Metadata or Produce request naming an
    /// unknown topic creates it with the topic defaults.
    #[serde(default = "yes")]
    pub auto_create_topics: bool,
    /// Whether admin clients may create topics with CreateTopics.
    #[serde(default = "yes")]
    pub allow_api_topic_creation: bool,
    /// Kafka's `producer.id.expiration.ms`: a partition forgets an
    /// idempotent producer this long after its last batch there.
    #[serde(
        default = "producer_id_expiration_ms",
        deserialize_with = "units::de_millis"
    )]
    pub producer_id_expiration_ms: u64,
}

fn yes() -> bool {
    true
}

/// Kafka's default: one day.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: u64 = units::DAY_MS;

fn producer_id_expiration_ms() -> u64 {
    DEFAULT_PRODUCER_ID_EXPIRATION_MS
}

/// `[controller]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// Broker ids of the controller quorum: 1, 3 or 5 declared brokers.
    pub voters: Vec<i32>,
    /// How often a broker heartbeats to the active controller.
    #[serde(
        default = "broker_heartbeat_interval_ms",
        deserialize_with = "units::de_millis"
    )]
    pub broker_heartbeat_interval_ms: u64,
    /// A broker not heard from for this long is fenced: its partitions
    /// move or go offline. The default fences a dead broker within 0.8 s,
    /// and within about 1.3 s when it was the active controller too (Raft
    /// election timeout 0.3–0.45 s, then a full session): short enough
    /// that a client which only looks for a new leader on its one-second
    /// scan (librdkafka) writes again within 2 s, and 3 s
    /// (docs/config-reference.md).
    #[serde(
        default = "broker_session_timeout_ms",
        deserialize_with = "units::de_millis"
    )]
    pub broker_session_timeout_ms: u64,
    /// Where `sluiced certs` wrote the cluster's certificates; relative to
    /// the spec file's directory. Read only when the spec has more than
    /// one broker. `None` means `tls` beside the spec.
    #[serde(default)]
    pub tls_dir: Option<PathBuf>,
    /// The broker whose data directory holds a single-node Sluice's data
    /// (docs/OPERATIONS.md "Growing a single node into a cluster"): the
    /// controller takes its topics as they are, with that broker as their
    /// only replica, before it applies the spec.
    #[serde(default)]
    pub adopt_broker: Option<i32>,
}

pub const DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS: u64 = 100;
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: u64 = 800;

fn broker_heartbeat_interval_ms() -> u64 {
    DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS
}

fn broker_session_timeout_ms() -> u64 {
    DEFAULT_BROKER_SESSION_TIMEOUT_MS
}

/// One `[[brokers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    pub id: i32,
    /// Where the Kafka listener binds.
    #[serde(deserialize_with = "de_socket_addr")]
    pub kafka: SocketAddr,
    /// The host:port given to clients in Metadata; `None` means `kafka`.
    #[serde(default, deserialize_with = "de_opt_host_port")]
    pub advertised_kafka: Option<HostPort>,
    /// The QUIC endpoint for replication and the controller: bound here, dialled by peers.
    #[serde(deserialize_with = "de_socket_addr")]
    pub quic: SocketAddr,
    /// Where the Prometheus endpoint binds.
    #[serde(deserialize_with = "de_socket_addr")]
    pub metrics: SocketAddr,
    #[serde(default)]
    pub rack: Option<String>,
    /// Relative paths are resolved against the spec file's directory by `load_spec`.
    pub data_dir: PathBuf,
}

impl BrokerSpec {
    /// The address clients are told to connect to.
    pub fn advertised_kafka(&self) -> HostPort {
        match &self.advertised_kafka {
            Some(address) => address.clone(),
            None => HostPort::from(self.kafka),
        }
    }
}

/// A `host:port` pair where the host may be a name (`broker-1.example.com:9092`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// A DNS name or an IP address; IPv6 addresses are kept without brackets.
    pub host: String,
    pub port: u16,
}

impl From<SocketAddr> for HostPort {
    fn from(address: SocketAddr) -> Self {
        HostPort {
            host: address.ip().to_string(),
            port: address.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Parses `host:port`, `[ipv6]:port`; the host is a DNS name or an IP address.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let invalid = |why: &str| format!("invalid address {text:?}: {why}");
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(invalid(
                "expected host:port, like \"broker-1.example.com:9092\"",
            ));
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(invalid(
                "IPv6 addresses must be written in brackets, like \"[::1]:9092\"",
            ));
        }
        let host = match host.strip_prefix('[') {
            Some(bracketed) => {
                let inner = bracketed
                    .strip_suffix(']')
                    .ok_or_else(|| invalid("unbalanced '[' around an IPv6 address"))?;
                inner
                    .parse::<std::net::Ipv6Addr>()
                    .map_err(|_| invalid("not an IPv6 address inside [ ]"))?;
                inner
            }
            None => host,
        };
        let legal = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':';
        if host.is_empty() || !host.chars().all(legal) || host.len() > 253 {
            return Err(invalid("the host must be a DNS name or an IP address"));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

fn de_socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    struct AddressVisitor;
    impl Visitor<'_> for AddressVisitor {
        type Value = SocketAddr;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a bind address string like \"127.0.0.1:9092\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
            text.parse().map_err(|_| {
                E::custom(format!(
                    "invalid bind address {text:?}: expected IP:port, like \"127.0.0.1:9092\", \
                     \"0.0.0.0:9092\" or \"[::1]:9092\" (host names are allowed only in advertised_kafka)"
                ))
            })
        }
    }
    deserializer.deserialize_str(AddressVisitor)
}

fn de_opt_host_port<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<HostPort>, D::Error> {
    struct HostPortVisitor;
    impl Visitor<'_> for HostPortVisitor {
        type Value = HostPort;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an address string like \"broker-1.example.com:9092\"")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<HostPort, E> {
            HostPort::parse(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(HostPortVisitor).map(Some)
}

/// `[limits]`: broker-wide bounds for the Kafka listener. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Kafka's `socket.request.max.bytes`: the largest request a client may send.
    #[serde(deserialize_with = "units::de_bytes")]
    pub socket_request_max_bytes: u64,
    /// Kafka's `max.connections`: client connections accepted per broker.
    pub max_connections: u32,
    /// Kafka's `max.connections.per.ip`.
    #[serde(deserialize_with = "units::de_count_limit")]
    pub max_connections_per_ip: Limit,
    /// Requests read from one connection and not yet answered (pipelining depth);
    /// the connection stops reading while this many are queued.
    pub max_queued_requests_per_connection: u32,
    /// Kafka's `connections.max.idle.ms`: idle client connections are closed after this.
    #[serde(deserialize_with = "units::de_millis")]
    pub connections_max_idle_ms: u64,
    /// Kafka's broker-side `fetch.max.bytes`: the most data one Fetch response carries.
    #[serde(deserialize_with = "units::de_bytes")]
    pub fetch_max_bytes: u64,
}

pub const DEFAULT_SOCKET_REQUEST_MAX_BYTES: u64 = 100 * units::MIB;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
pub const DEFAULT_MAX_QUEUED_REQUESTS_PER_CONNECTION: u32 = 100;
pub const DEFAULT_CONNECTIONS_MAX_IDLE_MS: u64 = 10 * units::MINUTE_MS;
pub const DEFAULT_FETCH_MAX_BYTES: u64 = 55 * units::MIB;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            socket_request_max_bytes: DEFAULT_SOCKET_REQUEST_MAX_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: Limit::Unlimited,
            max_queued_requests_per_connection: DEFAULT_MAX_QUEUED_REQUESTS_PER_CONNECTION,
            connections_max_idle_ms: DEFAULT_CONNECTIONS_MAX_IDLE_MS,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
        }
    }
}

/// `[replication]`: broker-wide replication settings. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up with the
    /// leader's log end for this long leaves the ISR.
    #[serde(deserialize_with = "units::de_millis")]
    pub replica_lag_time_max_ms: u64,
}

pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 10 * units::SECOND_MS;

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            replica_lag_time_max_ms: DEFAULT_REPLICA_LAG_TIME_MAX_MS,
        }
    }
}

/// Per-topic settings as written in `[topic_defaults]` or `[topics.NAME]`:
/// `None` means "not set here". `TopicConfig` is the resolved form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSettings {
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub min_insync_replicas: Option<i16>,
    #[serde(deserialize_with = "units::de_opt_bytes")]
    pub segment_bytes: Option<u64>,
    #[serde(deserialize_with = "units::de_opt_millis")]
    pub segment_ms: Option<u64>,
    #[serde(deserialize_with = "units::de_opt_bytes")]
    pub segment_index_bytes: Option<u64>,
    #[serde(deserialize_with = "units::de_opt_bytes")]
    pub index_interval_bytes: Option<u64>,
    #[serde(deserialize_with = "units::de_opt_millis_limit")]
    pub retention_ms: Option<Limit>,
    #[serde(deserialize_with = "units::de_opt_bytes_limit")]
    pub retention_bytes: Option<Limit>,
    #[serde(deserialize_with = "units::de_opt_bytes")]
    pub max_message_bytes: Option<u64>,
    pub flush: Option<FlushMode>,
    #[serde(deserialize_with = "units::de_opt_count_limit")]
    pub flush_interval_messages: Option<Limit>,
    #[serde(deserialize_with = "units::de_opt_millis_limit")]
    pub flush_interval_ms: Option<Limit>,
    pub message_timestamp_type: Option<TimestampKind>,
    pub compression: Option<CompressionSetting>,
    pub unclean_leader_election: Option<bool>,
    /// Kafka's `cleanup.policy`.
    pub cleanup_policy: Option<CleanupPolicyKind>,
    /// Kafka's `min.cleanable.dirty.ratio`, a number in [0, 1].
    pub min_cleanable_dirty_ratio: Option<DirtyRatio>,
    #[serde(deserialize_with = "units::de_opt_millis")]
    pub min_compaction_lag_ms: Option<u64>,
    #[serde(deserialize_with = "units::de_opt_millis_limit")]
    pub max_compaction_lag_ms: Option<Limit>,
    #[serde(deserialize_with = "units::de_opt_millis")]
    pub delete_retention_ms: Option<u64>,
}

/// Kafka's `cleanup.policy`: retention deletes old segments, compaction
/// keeps the latest record per key, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum CleanupPolicyKind {
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "compact")]
    Compact,
    #[serde(rename = "compact,delete", alias = "delete,compact")]
    CompactDelete,
}

impl CleanupPolicyKind {
    /// The value of Kafka's `cleanup.policy`.
    pub fn kafka_name(self) -> &'static str {
        match self {
            CleanupPolicyKind::Delete => "delete",
            CleanupPolicyKind::Compact => "compact",
            CleanupPolicyKind::CompactDelete => "compact,delete",
        }
    }

    pub fn from_kafka(value: &str) -> Option<CleanupPolicyKind> {
        let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["delete"] => Some(CleanupPolicyKind::Delete),
            ["compact"] => Some(CleanupPolicyKind::Compact),
            ["compact", "delete"] => Some(CleanupPolicyKind::CompactDelete),
            _ => None,
        }
    }

    pub fn deletes(self) -> bool {
        self != CleanupPolicyKind::Compact
    }

    pub fn compacts(self) -> bool {
        self != CleanupPolicyKind::Delete
    }
}

/// A ratio in [0, 1], held in ten-thousandths so that settings compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirtyRatio(pub u32);

impl DirtyRatio {
    pub fn from_f64(value: f64) -> Option<DirtyRatio> {
        (value.is_finite() && (0.0..=1.0).contains(&value))
            .then(|| DirtyRatio((value * 10_000.0).round() as u32))
    }

    /// As Kafka prints a double: "0.5", "1.0".
    pub fn kafka_value(self) -> String {
        let value = f64::from(self.0) / 10_000.0;
        if value.fract() == 0.0 {
            format!("{value:.1}")
        } else {
            format!("{value}")
        }
    }
}

impl<'de> Deserialize<'de> for DirtyRatio {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        DirtyRatio::from_f64(value).ok_or_else(|| {
            serde::de::Error::custom(format!("{value} is not a ratio between 0 and 1"))
        })
    }
}

/// One `[topics.NAME]` table: settings plus what only a declared topic can have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSpec {
    pub settings: TopicSettings,
    /// Explicit placement: one list of broker ids per partition, preferred leader first.
    pub replicas: Option<Vec<Vec<i32>>>,
    /// Removing the topic from the file deletes it only if this was true.
    pub allow_delete: bool,
}

/// The keys of a topic table that are not `TopicSettings`; parsed on their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TopicOnlyKeys {
    pub replicas: Option<Vec<Vec<i32>>>,
    pub allow_delete: bool,
}

/// When data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    /// Acknowledge once in the page cache; fsync by `flush_interval_*` (Kafka's way).
    PageCache,
    /// fsync before acknowledging.
    Fsync,
}

/// Kafka's `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum TimestampKind {
    CreateTime,
    LogAppendTime,
}

/// Kafka's `compression.type` for a topic. Only `Producer` passes validation
/// until the broker can recompress; the others are parsed so that the error
/// can say why they are refused rather than call them unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    /// Keep whatever codec the producer used.
    Producer,
    /// Store uncompressed (Kafka: "uncompressed").
    #[serde(rename = "none")]
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl FlushMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushMode::PageCache => "page-cache",
            FlushMode::Fsync => "fsync",
        }
    }
}

impl TimestampKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampKind::CreateTime => "CreateTime",
            TimestampKind::LogAppendTime => "LogAppendTime",
        }
    }
}

impl CompressionSetting {
    /// The value as written in the spec (`none` where Kafka says `uncompressed`).
    pub fn toml_name(self) -> &'static str {
        match self {
            CompressionSetting::Uncompressed => "none",
            other => other.kafka_name(),
        }
    }

    /// The value of Kafka's `compression.type`.
    pub fn kafka_name(self) -> &'static str {
        match self {
            CompressionSetting::Producer => "producer",
            CompressionSetting::Uncompressed => "uncompressed",
            CompressionSetting::Gzip => "gzip",
            CompressionSetting::Snappy => "snappy",
            CompressionSetting::Lz4 => "lz4",
            CompressionSetting::Zstd => "zstd",
        }
    }
}

/// The contents of `/etc/sluice/node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeFile {
    pub node_id: i32,
}
