//! Semantic checks of a structurally valid spec. Pure: a spec in, every issue out,
//! each naming the dotted path of the key to change (document.rs turns the path
//! into file, line and column).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::document::join_key;
use super::spec::{ClusterSpec, CompressionSetting, TopicSettings, TopicSpec};
use super::topic_config::{
    self, CrossProblem, KAFKA_INT_MAX, KAFKA_LONG_MAX, RECOMPRESSION_NOT_BUILT, Setting,
    TopicConfig,
};
use super::units::{self, Limit};

/// One semantic problem: the key to change and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Issue {
    pub key: String,
    pub message: String,
}

fn issue(key: impl Into<String>, message: impl Into<String>) -> Issue {
    Issue {
        key: key.into(),
        message: message.into(),
    }
}

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
pub const CLUSTER_NAME_LENGTH_MAX: usize = 249;
/// Controller quorum sizes that make sense: odd, so a majority always exists.
pub const VOTER_COUNTS: [usize; 3] = [1, 3, 5];
pub const MAX_QUEUED_REQUESTS_PER_CONNECTION_MAX: u32 = 10_000;

/// Every issue of `spec`, each reported once.
pub(crate) fn validate(spec: &ClusterSpec) -> Vec<Issue> {
    let mut issues = Vec::new();
    validate_cluster(spec, &mut issues);
    validate_broker_ids(spec, &mut issues);
    validate_broker_addresses(spec, &mut issues);
    validate_broker_storage(spec, &mut issues);
    validate_controller(spec, &mut issues);
    validate_limits(spec, &mut issues);
    validate_settings_ranges("topic_defaults", &spec.topic_defaults, &mut issues);
    validate_compression("topic_defaults", &spec.topic_defaults, &mut issues);
    validate_resolved(spec, "", None, spec.default_topic_config(), &mut issues);
    for (name, topic) in &spec.topics {
        let path = join_key("topics", name);
        if let Err(message) = validate_topic_name(name) {
            issues.push(issue(path.clone(), message));
        }
        validate_settings_ranges(&path, &topic.settings, &mut issues);
        validate_compression(&path, &topic.settings, &mut issues);
        validate_replicas(spec, &path, topic, &mut issues);
        validate_resolved(
            spec,
            name,
            Some(topic),
            spec.topic_config(name),
            &mut issues,
        );
    }
    validate_topic_collisions(spec, &mut issues);
    let mut seen = BTreeSet::new();
    issues.retain(|issue| seen.insert(issue.clone()));
    issues
}

/// Checks a topic name the way Kafka does; `Err` says what is wrong.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name must not be empty".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a legal topic name"));
    }
    let length = name.chars().count();
    if length > TOPIC_NAME_LENGTH_MAX {
        return Err(format!(
            "topic name is {length} characters long; the limit is {TOPIC_NAME_LENGTH_MAX}"
        ));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if let Some(bad) = name.chars().find(|c| !legal(*c)) {
        return Err(format!(
            "topic name contains {bad:?}, which is not allowed: use only ASCII letters, \
             digits, '.', '_' and '-'"
        ));
    }
    if name.starts_with("__") {
        return Err(
            "topic names starting with \"__\" are reserved for internal topics such as \
             __consumer_offsets"
                .to_string(),
        );
    }
    Ok(())
}

fn validate_cluster(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    let name = &spec.cluster.name;
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if name.is_empty() || name.len() > CLUSTER_NAME_LENGTH_MAX || !name.chars().all(legal) {
        issues.push(issue(
            "cluster.name",
            format!(
                "must be 1 to {CLUSTER_NAME_LENGTH_MAX} ASCII letters, digits, '.', '_' or '-', got {name:?}"
            ),
        ));
    }
    check(
        issues,
        "cluster.producer_id_expiration_ms",
        i128::from(spec.cluster.producer_id_expiration_ms),
        1,
        i128::from(i32::MAX),
        Unit::Millis,
    );
}

fn declared_ids(spec: &ClusterSpec) -> String {
    let ids: Vec<String> = spec.brokers.iter().map(|b| b.id.to_string()).collect();
    ids.join(", ")
}

fn not_declared(spec: &ClusterSpec, id: i32) -> String {
    format!(
        "broker {id} is not declared in [[brokers]] (declared: {})",
        declared_ids(spec)
    )
}

fn validate_broker_ids(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    if spec.brokers.is_empty() {
        issues.push(issue("brokers", "declare at least one broker"));
    }
    let mut first_use: BTreeMap<i32, usize> = BTreeMap::new();
    for (position, broker) in spec.brokers.iter().enumerate() {
        let path = format!("brokers[{position}].id");
        if broker.id < 0 {
            issues.push(issue(
                &path,
                format!("must be 0 or greater, got {}", broker.id),
            ));
        }
        if let Some(first) = first_use.get(&broker.id) {
            let message = format!(
                "duplicate broker id {} (also used by brokers[{first}])",
                broker.id
            );
            issues.push(issue(&path, message));
        } else {
            first_use.insert(broker.id, position);
        }
    }
}

/// Two TCP listeners clash if they are the same address, or, on one host, the
/// same port with a wildcard. Equal wildcard binds of different brokers are
/// normal: the brokers run on different hosts.
fn addresses_clash(first: SocketAddr, second: SocketAddr, same_broker: bool) -> bool {
    let wildcard = first.ip().is_unspecified() || second.ip().is_unspecified();
    if first == second {
        return same_broker || !wildcard;
    }
    same_broker && wildcard && first.port() == second.port()
}

fn validate_broker_addresses(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    let mut tcp: Vec<(usize, String, SocketAddr)> = Vec::new();
    let mut udp: Vec<(usize, String, SocketAddr)> = Vec::new();
    let mut advertised: BTreeMap<String, String> = BTreeMap::new();
    for (position, broker) in spec.brokers.iter().enumerate() {
        let prefix = format!("brokers[{position}]");
        let listeners = [
            ("kafka", broker.kafka, false),
            ("metrics", broker.metrics, false),
            ("quic", broker.quic, true),
        ];
        for (key, address, is_udp) in listeners {
            let seen = if is_udp { &mut udp } else { &mut tcp };
            let path = format!("{prefix}.{key}");
            if address.port() == 0 {
                issues.push(issue(
                    &path,
                    "port 0 is not allowed: peers and clients need a fixed port",
                ));
            }
            let clash = seen
                .iter()
                .find(|(owner, _, other)| addresses_clash(*other, address, *owner == position));
            if let Some((_, other_path, _)) = clash {
                issues.push(issue(
                    &path,
                    format!("address {address} is already used by {other_path}"),
                ));
            }
            seen.push((position, path, address));
        }
        if broker.quic.ip().is_unspecified() {
            let message = "must be an address the other brokers can dial, not a wildcard";
            issues.push(issue(format!("{prefix}.quic"), message));
        }
        if broker.kafka.ip().is_unspecified() && broker.advertised_kafka.is_none() {
            let message = "binds to a wildcard address; set advertised_kafka to the host:port clients should use";
            issues.push(issue(format!("{prefix}.kafka"), message));
        }
        let kafka_path = format!("{prefix}.kafka");
        let kafka_clashed = issues.iter().any(|issue| issue.key == kafka_path);
        if broker.advertised_kafka.is_none() && kafka_clashed {
            continue;
        }
        let shown = broker.advertised_kafka().to_string();
        let key = if broker.advertised_kafka.is_some() {
            "advertised_kafka"
        } else {
            "kafka"
        };
        let path = format!("{prefix}.{key}");
        match advertised.get(&shown) {
            Some(other) => {
                let message =
                    format!("clients would be sent to {shown} for two brokers (also {other})");
                issues.push(issue(&path, message));
            }
            None => {
                advertised.insert(shown, path);
            }
        }
    }
}

fn validate_broker_storage(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    // Brokers bound to loopback addresses run on one machine: they need their own data_dir.
    let mut loopback_dirs: BTreeMap<&std::path::Path, usize> = BTreeMap::new();
    for (position, broker) in spec.brokers.iter().enumerate() {
        let prefix = format!("brokers[{position}]");
        if broker.data_dir.as_os_str().is_empty() {
            issues.push(issue(format!("{prefix}.data_dir"), "must not be empty"));
        }
        if broker.rack.as_deref() == Some("") {
            issues.push(issue(
                format!("{prefix}.rack"),
                "must not be empty; leave it out instead",
            ));
        }
        if !broker.kafka.ip().is_loopback() {
            continue;
        }
        match loopback_dirs.get(broker.data_dir.as_path()) {
            Some(first) => issues.push(issue(
                format!("{prefix}.data_dir"),
                format!(
                    "{} is also the data_dir of brokers[{first}], and both run on this machine \
                     (loopback addresses)",
                    broker.data_dir.display()
                ),
            )),
            None => {
                loopback_dirs.insert(&broker.data_dir, position);
            }
        }
    }
}

fn validate_controller(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    let voters = &spec.controller.voters;
    if !VOTER_COUNTS.contains(&voters.len()) {
        issues.push(issue(
            "controller.voters",
            format!(
                "must name 1, 3 or 5 brokers (an odd number, so that a majority exists), got {}",
                voters.len()
            ),
        ));
    }
    let controller = &spec.controller;
    let heartbeat = controller.broker_heartbeat_interval_ms;
    if !(50..=5_000).contains(&heartbeat) {
        issues.push(issue(
            "controller.broker_heartbeat_interval_ms",
            format!("must be 50ms to 5s, got {heartbeat}ms"),
        ));
    }
    let session = controller.broker_session_timeout_ms;
    if session < 4 * heartbeat || session > 60_000 {
        issues.push(issue(
            "controller.broker_session_timeout_ms",
            format!(
                "must be at least 4 heartbeat intervals ({}ms) and at most 60s, got {session}ms",
                4 * heartbeat
            ),
        ));
    }
    if controller.tls_dir.is_some() && spec.brokers.len() == 1 {
        issues.push(issue(
            "controller.tls_dir",
            "a single broker talks to no other node; remove the key",
        ));
    }
    if let Some(id) = controller.adopt_broker {
        if spec.brokers.len() == 1 {
            issues.push(issue(
                "controller.adopt_broker",
                "a single broker keeps its data directory as it is; remove the key",
            ));
        } else if spec.broker(id).is_none() {
            issues.push(issue("controller.adopt_broker", not_declared(spec, id)));
        }
    }
    let mut seen = BTreeSet::new();
    for (position, id) in voters.iter().enumerate() {
        let path = format!("controller.voters[{position}]");
        if !seen.insert(*id) {
            issues.push(issue(&path, format!("broker {id} is listed twice")));
        } else if spec.broker(*id).is_none() {
            issues.push(issue(&path, not_declared(spec, *id)));
        }
    }
}

/// The unit a bounded number is in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Count,
    Bytes,
    Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub min: i128,
    pub max: i128,
    pub unit: Unit,
}

fn describe(value: i128, unit: Unit) -> String {
    let human = u64::try_from(value).ok().map(|v| match unit {
        Unit::Bytes if v >= units::KIB && v.is_multiple_of(units::KIB) => units::format_size(v),
        Unit::Millis if v >= units::SECOND_MS && v.is_multiple_of(units::SECOND_MS) => {
            units::format_duration_ms(v)
        }
        _ => String::new(),
    });
    let human = human.filter(|h| !h.is_empty());
    let plain = match unit {
        Unit::Count => value.to_string(),
        Unit::Bytes => format!("{value} bytes"),
        Unit::Millis => format!("{value} ms"),
    };
    match human {
        Some(human) => format!("{plain} ({human})"),
        None => plain,
    }
}

/// `None` if `value` is within `bounds`, else the message to show.
pub(crate) fn range_message(value: i128, bounds: &Bounds) -> Option<String> {
    if (bounds.min..=bounds.max).contains(&value) {
        return None;
    }
    let got = describe(value, bounds.unit);
    let (min, max) = (
        describe(bounds.min, bounds.unit),
        describe(bounds.max, bounds.unit),
    );
    let type_limit = bounds.max >= i128::from(KAFKA_INT_MAX);
    Some(match (type_limit, value < bounds.min) {
        (false, _) => format!("must be between {min} and {max}, got {got}"),
        (true, true) => format!("must be at least {min}, got {got}"),
        (true, false) => format!("must be at most {max}, got {got}"),
    })
}

fn check(issues: &mut Vec<Issue>, path: &str, value: i128, min: i128, max: i128, unit: Unit) {
    if let Some(message) = range_message(value, &Bounds { min, max, unit }) {
        issues.push(issue(path, message));
    }
}

fn validate_limits(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    let limits = &spec.limits;
    let (int, long) = (i128::from(KAFKA_INT_MAX), i128::from(KAFKA_LONG_MAX));
    let kib = i128::from(units::KIB);
    let request = i128::from(limits.socket_request_max_bytes);
    check(
        issues,
        "limits.socket_request_max_bytes",
        request,
        kib,
        int,
        Unit::Bytes,
    );
    let connections = i128::from(limits.max_connections);
    check(
        issues,
        "limits.max_connections",
        connections,
        1,
        int,
        Unit::Count,
    );
    if let Limit::At(per_ip) = limits.max_connections_per_ip {
        check(
            issues,
            "limits.max_connections_per_ip",
            i128::from(per_ip),
            1,
            int,
            Unit::Count,
        );
    }
    let queued = i128::from(limits.max_queued_requests_per_connection);
    let queued_max = i128::from(MAX_QUEUED_REQUESTS_PER_CONNECTION_MAX);
    check(
        issues,
        "limits.max_queued_requests_per_connection",
        queued,
        1,
        queued_max,
        Unit::Count,
    );
    let idle = i128::from(limits.connections_max_idle_ms);
    check(
        issues,
        "limits.connections_max_idle_ms",
        idle,
        1,
        long,
        Unit::Millis,
    );
    let fetch = i128::from(limits.fetch_max_bytes);
    check(
        issues,
        "limits.fetch_max_bytes",
        fetch,
        kib,
        int,
        Unit::Bytes,
    );
    let lag = i128::from(spec.replication.replica_lag_time_max_ms);
    check(
        issues,
        "replication.replica_lag_time_max_ms",
        lag,
        1,
        long,
        Unit::Millis,
    );
}

/// Range checks of every numeric key written in one settings table.
fn validate_settings_ranges(prefix: &str, settings: &TopicSettings, issues: &mut Vec<Issue>) {
    for setting in Setting::NUMERIC {
        let Some(value) = setting.raw_value(settings) else {
            continue;
        };
        if let Some(message) = setting.check(value) {
            issues.push(issue(format!("{prefix}.{}", setting.toml_key()), message));
        }
    }
}

/// Only `producer`: the log stores batches as produced (see
/// `RECOMPRESSION_NOT_BUILT`), so another codec would be a setting that does nothing.
fn validate_compression(prefix: &str, settings: &TopicSettings, issues: &mut Vec<Issue>) {
    match settings.compression {
        None | Some(CompressionSetting::Producer) => {}
        Some(other) => issues.push(issue(
            format!("{prefix}.compression"),
            format!("{:?}: {RECOMPRESSION_NOT_BUILT}", other.toml_name()),
        )),
    }
}

/// Where a topic's own table sets `setting`: its key, or its replica list.
fn topic_origin(topic_path: &str, topic: &TopicSpec, setting: Setting) -> Option<String> {
    if setting.is_set(&topic.settings) {
        return Some(format!("{topic_path}.{}", setting.toml_key()));
    }
    let from_replicas = matches!(setting, Setting::Partitions | Setting::ReplicationFactor);
    (from_replicas && topic.replicas.is_some()).then(|| format!("{topic_path}.replicas"))
}

/// The key to blame for a broken rule, most specific first: the topic's own key
/// for the setting or its partner, then `[topic_defaults]`'s, then the broker-wide
/// limit involved, else `topic_defaults.KEY` even if unwritten (Kafka's defaults).
/// Inherited problems thus land on the same key for every topic and are reported once.
fn origin(
    topic_path: &str,
    topic: Option<&TopicSpec>,
    defaults: &TopicSettings,
    problem: &CrossProblem,
) -> String {
    let candidates = || std::iter::once(problem.setting).chain(problem.partner);
    let own = topic.and_then(|topic| {
        candidates().find_map(|setting| topic_origin(topic_path, topic, setting))
    });
    if let Some(path) = own {
        return path;
    }
    if let Some(setting) = candidates().find(|s| s.is_set(defaults)) {
        return format!("topic_defaults.{}", setting.toml_key());
    }
    match problem.limit_key {
        Some(limit_key) => limit_key.to_string(),
        None => format!("topic_defaults.{}", problem.setting.toml_key()),
    }
}

/// Rules between the resolved settings of one topic (or of the defaults, `topic`
/// `None`, which apply to auto-created topics).
fn validate_resolved(
    spec: &ClusterSpec,
    name: &str,
    topic: Option<&TopicSpec>,
    config: TopicConfig,
    issues: &mut Vec<Issue>,
) {
    let topic_path = join_key("topics", name);
    let problems =
        topic_config::cross_check(&config, spec.brokers.len(), &spec.limits, Setting::toml_key);
    for problem in problems {
        let key = origin(&topic_path, topic, &spec.topic_defaults, &problem);
        issues.push(issue(key, problem.message));
    }
}

fn validate_replicas(spec: &ClusterSpec, path: &str, topic: &TopicSpec, issues: &mut Vec<Issue>) {
    let Some(replicas) = &topic.replicas else {
        return;
    };
    let replicas_path = format!("{path}.replicas");
    let Some(first) = replicas.first() else {
        issues.push(issue(&replicas_path, "must list at least one partition"));
        return;
    };
    for (partition, brokers) in replicas.iter().enumerate() {
        let partition_path = format!("{replicas_path}[{partition}]");
        if brokers.len() != first.len() {
            let message = format!(
                "partition {partition} has {} replicas but partition 0 has {}; every partition needs the same number",
                brokers.len(),
                first.len()
            );
            issues.push(issue(&partition_path, message));
        }
        if brokers.is_empty() {
            issues.push(issue(&partition_path, "must list at least one broker"));
        }
        let mut seen = BTreeSet::new();
        for (position, id) in brokers.iter().enumerate() {
            let id_path = format!("{partition_path}[{position}]");
            if !seen.insert(*id) {
                let message =
                    format!("broker {id} appears twice in the replicas of partition {partition}");
                issues.push(issue(&id_path, message));
            } else if spec.broker(*id).is_none() {
                issues.push(issue(&id_path, not_declared(spec, *id)));
            }
        }
    }
    let explicit = [
        (
            Setting::Partitions,
            topic.settings.partitions.map(i64::from),
            replicas.len(),
        ),
        (
            Setting::ReplicationFactor,
            topic.settings.replication_factor.map(i64::from),
            first.len(),
        ),
    ];
    for (setting, written, listed) in explicit {
        let Some(written) = written else {
            continue;
        };
        if usize::try_from(written).ok() != Some(listed) {
            let what = match setting {
                Setting::Partitions => "partitions",
                _ => "replicas per partition",
            };
            let message = format!("is {written} but replicas lists {listed} {what}");
            issues.push(issue(format!("{path}.{}", setting.toml_key()), message));
        }
    }
}

/// Kafka refuses topics whose names differ only in '.' versus '_'.
fn validate_topic_collisions(spec: &ClusterSpec, issues: &mut Vec<Issue>) {
    let mut normalized: BTreeMap<String, &str> = BTreeMap::new();
    for name in spec.topics.keys() {
        let key = name.replace('.', "_");
        match normalized.get(&key) {
            Some(other) => issues.push(issue(
                join_key("topics", name),
                format!(
                    "collides with topic {other:?}: names that differ only in '.' and '_' clash in metric names"
                ),
            )),
            None => {
                normalized.insert(key, name);
            }
        }
    }
}
