//! Resolved per-topic configuration: Kafka's defaults, then `[topic_defaults]`,
//! then `[topics.NAME]`; and the mapping to and from Kafka's config names
//! (DescribeConfigs, CreateTopics).

use super::spec::{
    CleanupPolicyKind, ClusterSpec, CompressionSetting, DirtyRatio, FlushMode, Limits,
    TimestampKind, TopicSettings,
};
use super::units::{self, Limit};
use super::validate::{Bounds, Unit, range_message};

/// Fully resolved settings of one topic: plain numbers, units in the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit placement from the spec: one list of broker ids per partition.
    pub replicas: Option<Vec<Vec<i32>>>,
    pub min_insync_replicas: i16,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub segment_index_bytes: u32,
    pub index_interval_bytes: u32,
    /// `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// `None`: no size limit.
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    pub flush: FlushMode,
    /// `None`: never flush because of a message count.
    pub flush_interval_messages: Option<u64>,
    /// `None`: never flush because of elapsed time.
    pub flush_interval_ms: Option<u64>,
    pub message_timestamp_type: TimestampKind,
    pub compression: CompressionSetting,
    pub unclean_leader_election: bool,
    pub cleanup_policy: CleanupPolicyKind,
    pub min_cleanable_dirty_ratio: DirtyRatio,
    pub min_compaction_lag_ms: u64,
    /// `None`: compaction is never forced by age.
    pub max_compaction_lag_ms: Option<u64>,
    pub delete_retention_ms: u64,
    pub allow_delete: bool,
}

// Kafka's defaults (Kafka 4.x broker and topic configs), except flush_interval_ms.
pub const DEFAULT_PARTITIONS: i32 = 1;
pub const DEFAULT_REPLICATION_FACTOR: i16 = 1;
pub const DEFAULT_MIN_INSYNC_REPLICAS: i16 = 1;
pub const DEFAULT_SEGMENT_BYTES: u64 = units::GIB;
pub const DEFAULT_SEGMENT_MS: u64 = 7 * units::DAY_MS;
pub const DEFAULT_SEGMENT_INDEX_BYTES: u32 = 10 * units::MIB as u32;
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4 * units::KIB as u32;
pub const DEFAULT_RETENTION_MS: u64 = 7 * units::DAY_MS;
/// Kafka's `message.max.bytes`: 1 MiB plus 12 bytes of batch overhead.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_048_588;
/// Kafka's `min.cleanable.dirty.ratio`: 0.5.
pub const DEFAULT_MIN_CLEANABLE_DIRTY_RATIO: DirtyRatio = DirtyRatio(5_000);
/// Kafka's `delete.retention.ms`: one day.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = units::DAY_MS;
/// Kafka never flushes on a timer by default; Sluice bounds the data at risk to one second.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = units::SECOND_MS;

/// Why a topic compression other than `producer` is refused: batches are
/// stored exactly as produced, so any other value would change nothing.
pub const RECOMPRESSION_NOT_BUILT: &str = "recompression is not built yet; batches are stored \
     as the producer compressed them, so only \"producer\" is accepted";

pub const PARTITIONS_MAX: i32 = 100_000;
/// Small enough for tests that roll segments often, big enough for a record batch.
pub const SEGMENT_BYTES_MIN: u64 = 4 * units::KIB;
pub const SEGMENT_INDEX_BYTES_MIN: u64 = units::KIB;
pub const MAX_MESSAGE_BYTES_MIN: u64 = units::KIB;
/// Kafka carries these as `int`.
pub const KAFKA_INT_MAX: u64 = i32::MAX as u64;
/// Kafka carries these as `long`.
pub const KAFKA_LONG_MAX: u64 = i64::MAX as u64;

const _: () = assert!(DEFAULT_PARTITIONS >= 1 && DEFAULT_PARTITIONS <= PARTITIONS_MAX);
const _: () = assert!(DEFAULT_MIN_INSYNC_REPLICAS <= DEFAULT_REPLICATION_FACTOR);
const _: () = assert!(DEFAULT_MAX_MESSAGE_BYTES as u64 <= DEFAULT_SEGMENT_BYTES);
const _: () = assert!(DEFAULT_MAX_MESSAGE_BYTES as u64 >= MAX_MESSAGE_BYTES_MIN);
const _: () =
    assert!(DEFAULT_MAX_MESSAGE_BYTES as u64 <= super::spec::DEFAULT_SOCKET_REQUEST_MAX_BYTES);
const _: () =
    assert!(DEFAULT_SEGMENT_BYTES >= SEGMENT_BYTES_MIN && DEFAULT_SEGMENT_BYTES <= KAFKA_INT_MAX);
const _: () = assert!(DEFAULT_SEGMENT_INDEX_BYTES as u64 >= SEGMENT_INDEX_BYTES_MIN);
const _: () = assert!(SEGMENT_BYTES_MIN >= MAX_MESSAGE_BYTES_MIN);

impl TopicConfig {
    /// Kafka's defaults for every per-topic setting.
    pub fn kafka_defaults() -> TopicConfig {
        TopicConfig {
            partitions: DEFAULT_PARTITIONS,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            replicas: None,
            min_insync_replicas: DEFAULT_MIN_INSYNC_REPLICAS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            segment_index_bytes: DEFAULT_SEGMENT_INDEX_BYTES,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            flush: FlushMode::PageCache,
            flush_interval_messages: None,
            flush_interval_ms: Some(DEFAULT_FLUSH_INTERVAL_MS),
            message_timestamp_type: TimestampKind::CreateTime,
            compression: CompressionSetting::Producer,
            unclean_leader_election: false,
            cleanup_policy: CleanupPolicyKind::Delete,
            min_cleanable_dirty_ratio: DEFAULT_MIN_CLEANABLE_DIRTY_RATIO,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
            allow_delete: false,
        }
    }

    /// Overlays the keys set in `settings`. Out-of-range values saturate; validation
    /// has rejected them before any caller sees a config built from a spec.
    pub(crate) fn apply(&mut self, settings: &TopicSettings) {
        let narrow = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        let s = settings;
        self.partitions = s.partitions.unwrap_or(self.partitions);
        self.replication_factor = s.replication_factor.unwrap_or(self.replication_factor);
        self.min_insync_replicas = s.min_insync_replicas.unwrap_or(self.min_insync_replicas);
        self.segment_bytes = s.segment_bytes.unwrap_or(self.segment_bytes);
        self.segment_ms = s.segment_ms.unwrap_or(self.segment_ms);
        self.segment_index_bytes = s
            .segment_index_bytes
            .map_or(self.segment_index_bytes, narrow);
        self.index_interval_bytes = s
            .index_interval_bytes
            .map_or(self.index_interval_bytes, narrow);
        self.retention_ms = s.retention_ms.map_or(self.retention_ms, Limit::as_option);
        self.retention_bytes = s
            .retention_bytes
            .map_or(self.retention_bytes, Limit::as_option);
        self.max_message_bytes = s.max_message_bytes.map_or(self.max_message_bytes, narrow);
        self.flush = s.flush.unwrap_or(self.flush);
        self.flush_interval_messages = s
            .flush_interval_messages
            .map_or(self.flush_interval_messages, Limit::as_option);
        self.flush_interval_ms = s
            .flush_interval_ms
            .map_or(self.flush_interval_ms, Limit::as_option);
        self.message_timestamp_type = s
            .message_timestamp_type
            .unwrap_or(self.message_timestamp_type);
        self.compression = s.compression.unwrap_or(self.compression);
        self.unclean_leader_election = s
            .unclean_leader_election
            .unwrap_or(self.unclean_leader_election);
        self.cleanup_policy = s.cleanup_policy.unwrap_or(self.cleanup_policy);
        self.min_cleanable_dirty_ratio = s
            .min_cleanable_dirty_ratio
            .unwrap_or(self.min_cleanable_dirty_ratio);
        self.min_compaction_lag_ms = s
            .min_compaction_lag_ms
            .unwrap_or(self.min_compaction_lag_ms);
        self.max_compaction_lag_ms = s
            .max_compaction_lag_ms
            .map_or(self.max_compaction_lag_ms, Limit::as_option);
        self.delete_retention_ms = s.delete_retention_ms.unwrap_or(self.delete_retention_ms);
    }

    /// Kafka config names and values, sorted by name, for DescribeConfigs.
    /// Unlimited is -1 for retention and Long.MAX for flushing, as in Kafka.
    /// `sluice.flush.mode` has no Kafka equivalent.
    pub fn to_kafka_configs(&self) -> Vec<(&'static str, String)> {
        let or_minus_one = |value: Option<u64>| value.map_or("-1".to_string(), |v| v.to_string());
        let or_long_max = |value: Option<u64>| value.unwrap_or(KAFKA_LONG_MAX).to_string();
        let timestamp_type = self.message_timestamp_type.as_str();
        let configs = vec![
            (
                "cleanup.policy",
                self.cleanup_policy.kafka_name().to_string(),
            ),
            (
                "compression.type",
                self.compression.kafka_name().to_string(),
            ),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("flush.messages", or_long_max(self.flush_interval_messages)),
            ("flush.ms", or_long_max(self.flush_interval_ms)),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            (
                "max.compaction.lag.ms",
                or_long_max(self.max_compaction_lag_ms),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("message.timestamp.type", timestamp_type.to_string()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.kafka_value(),
            ),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.bytes", or_minus_one(self.retention_bytes)),
            ("retention.ms", or_minus_one(self.retention_ms)),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.index.bytes", self.segment_index_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("sluice.flush.mode", self.flush.as_str().to_string()),
            (
                "unclean.leader.election.enable",
                self.unclean_leader_election.to_string(),
            ),
        ];
        assert!(configs.is_sorted_by_key(|(name, _)| *name));
        configs
    }
}

/// One per-topic setting; names it in TOML and in Kafka and knows its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    Partitions,
    ReplicationFactor,
    MinInsyncReplicas,
    SegmentBytes,
    SegmentMs,
    SegmentIndexBytes,
    IndexIntervalBytes,
    RetentionMs,
    RetentionBytes,
    MaxMessageBytes,
    FlushIntervalMessages,
    FlushIntervalMs,
    MinCompactionLagMs,
    MaxCompactionLagMs,
    DeleteRetentionMs,
}

impl Setting {
    /// The settings with numeric bounds, in `TopicSettings` order.
    pub(crate) const NUMERIC: [Setting; 15] = [
        Setting::Partitions,
        Setting::ReplicationFactor,
        Setting::MinInsyncReplicas,
        Setting::SegmentBytes,
        Setting::SegmentMs,
        Setting::SegmentIndexBytes,
        Setting::IndexIntervalBytes,
        Setting::RetentionMs,
        Setting::RetentionBytes,
        Setting::MaxMessageBytes,
        Setting::FlushIntervalMessages,
        Setting::FlushIntervalMs,
        Setting::MinCompactionLagMs,
        Setting::MaxCompactionLagMs,
        Setting::DeleteRetentionMs,
    ];

    pub(crate) fn toml_key(self) -> &'static str {
        match self {
            Setting::Partitions => "partitions",
            Setting::ReplicationFactor => "replication_factor",
            Setting::MinInsyncReplicas => "min_insync_replicas",
            Setting::SegmentBytes => "segment_bytes",
            Setting::SegmentMs => "segment_ms",
            Setting::SegmentIndexBytes => "segment_index_bytes",
            Setting::IndexIntervalBytes => "index_interval_bytes",
            Setting::RetentionMs => "retention_ms",
            Setting::RetentionBytes => "retention_bytes",
            Setting::MaxMessageBytes => "max_message_bytes",
            Setting::FlushIntervalMessages => "flush_interval_messages",
            Setting::FlushIntervalMs => "flush_interval_ms",
            Setting::MinCompactionLagMs => "min_compaction_lag_ms",
            Setting::MaxCompactionLagMs => "max_compaction_lag_ms",
            Setting::DeleteRetentionMs => "delete_retention_ms",
        }
    }

    /// The name in Kafka's protocol (CreateTopics fields for the first two).
    pub(crate) fn kafka_name(self) -> &'static str {
        match self {
            Setting::Partitions => "num_partitions",
            Setting::ReplicationFactor => "replication_factor",
            Setting::MinInsyncReplicas => "min.insync.replicas",
            Setting::SegmentBytes => "segment.bytes",
            Setting::SegmentMs => "segment.ms",
            Setting::SegmentIndexBytes => "segment.index.bytes",
            Setting::IndexIntervalBytes => "index.interval.bytes",
            Setting::RetentionMs => "retention.ms",
            Setting::RetentionBytes => "retention.bytes",
            Setting::MaxMessageBytes => "max.message.bytes",
            Setting::FlushIntervalMessages => "flush.messages",
            Setting::FlushIntervalMs => "flush.ms",
            Setting::MinCompactionLagMs => "min.compaction.lag.ms",
            Setting::MaxCompactionLagMs => "max.compaction.lag.ms",
            Setting::DeleteRetentionMs => "delete.retention.ms",
        }
    }

    pub(crate) fn bounds(self) -> Bounds {
        let long = KAFKA_LONG_MAX as i128;
        let int = KAFKA_INT_MAX as i128;
        let (min, max, unit) = match self {
            Setting::Partitions => (1, i128::from(PARTITIONS_MAX), Unit::Count),
            Setting::ReplicationFactor => (1, i128::from(i16::MAX), Unit::Count),
            Setting::MinInsyncReplicas => (1, i128::from(i16::MAX), Unit::Count),
            Setting::SegmentBytes => (i128::from(SEGMENT_BYTES_MIN), int, Unit::Bytes),
            Setting::SegmentMs => (1, long, Unit::Millis),
            Setting::SegmentIndexBytes => (i128::from(SEGMENT_INDEX_BYTES_MIN), int, Unit::Bytes),
            Setting::IndexIntervalBytes => (0, int, Unit::Bytes),
            Setting::RetentionMs => (1, long, Unit::Millis),
            Setting::RetentionBytes => (0, long, Unit::Bytes),
            Setting::MaxMessageBytes => (i128::from(MAX_MESSAGE_BYTES_MIN), int, Unit::Bytes),
            Setting::FlushIntervalMessages => (1, long, Unit::Count),
            Setting::FlushIntervalMs => (1, long, Unit::Millis),
            Setting::MinCompactionLagMs => (0, long, Unit::Millis),
            Setting::MaxCompactionLagMs => (1, long, Unit::Millis),
            Setting::DeleteRetentionMs => (0, long, Unit::Millis),
        };
        Bounds { min, max, unit }
    }

    /// The value written in `settings`, if it is set and a number ("unlimited" is not).
    pub(crate) fn raw_value(self, settings: &TopicSettings) -> Option<i128> {
        let s = settings;
        let limit = |value: Option<Limit>| value.and_then(Limit::as_option).map(i128::from);
        match self {
            Setting::Partitions => s.partitions.map(i128::from),
            Setting::ReplicationFactor => s.replication_factor.map(i128::from),
            Setting::MinInsyncReplicas => s.min_insync_replicas.map(i128::from),
            Setting::SegmentBytes => s.segment_bytes.map(i128::from),
            Setting::SegmentMs => s.segment_ms.map(i128::from),
            Setting::SegmentIndexBytes => s.segment_index_bytes.map(i128::from),
            Setting::IndexIntervalBytes => s.index_interval_bytes.map(i128::from),
            Setting::RetentionMs => limit(s.retention_ms),
            Setting::RetentionBytes => limit(s.retention_bytes),
            Setting::MaxMessageBytes => s.max_message_bytes.map(i128::from),
            Setting::FlushIntervalMessages => limit(s.flush_interval_messages),
            Setting::FlushIntervalMs => limit(s.flush_interval_ms),
            Setting::MinCompactionLagMs => s.min_compaction_lag_ms.map(i128::from),
            Setting::MaxCompactionLagMs => limit(s.max_compaction_lag_ms),
            Setting::DeleteRetentionMs => s.delete_retention_ms.map(i128::from),
        }
    }

    /// Whether `settings` sets this key at all (including to "unlimited").
    pub(crate) fn is_set(self, settings: &TopicSettings) -> bool {
        let s = settings;
        match self {
            Setting::RetentionMs => s.retention_ms.is_some(),
            Setting::RetentionBytes => s.retention_bytes.is_some(),
            Setting::FlushIntervalMessages => s.flush_interval_messages.is_some(),
            Setting::FlushIntervalMs => s.flush_interval_ms.is_some(),
            Setting::MaxCompactionLagMs => s.max_compaction_lag_ms.is_some(),
            numeric => numeric.raw_value(settings).is_some(),
        }
    }

    pub(crate) fn check(self, value: i128) -> Option<String> {
        range_message(value, &self.bounds())
    }
}

/// A rule between settings was broken: `setting` is too large (or small) for
/// `partner`, when there is one.
pub(crate) struct CrossProblem {
    pub setting: Setting,
    pub partner: Option<Setting>,
    /// A broker-wide key the rule also involves.
    pub limit_key: Option<&'static str>,
    pub message: String,
}

/// Rules between settings of one resolved topic. `name` spells settings (TOML or
/// Kafka names).
pub(crate) fn cross_check(
    config: &TopicConfig,
    broker_count: usize,
    limits: &Limits,
    name: fn(Setting) -> &'static str,
) -> Vec<CrossProblem> {
    let problem = |setting, partner, message| CrossProblem {
        setting,
        partner,
        limit_key: None,
        message,
    };
    let mut problems = Vec::new();
    let replication_factor = usize::try_from(config.replication_factor).unwrap_or(0);
    if replication_factor > broker_count {
        let message = format!(
            "{} {} exceeds the number of declared brokers ({broker_count})",
            name(Setting::ReplicationFactor),
            config.replication_factor
        );
        problems.push(problem(Setting::ReplicationFactor, None, message));
    }
    if config.min_insync_replicas > config.replication_factor {
        let message = format!(
            "{} {} exceeds {} {}: acks=all writes could never succeed",
            name(Setting::MinInsyncReplicas),
            config.min_insync_replicas,
            name(Setting::ReplicationFactor),
            config.replication_factor
        );
        problems.push(problem(
            Setting::MinInsyncReplicas,
            Some(Setting::ReplicationFactor),
            message,
        ));
    }
    if let Some(max_lag) = config.max_compaction_lag_ms
        && config.min_compaction_lag_ms > max_lag
    {
        let message = format!(
            "{} ({}) exceeds {} ({max_lag}): no record could be compacted in time",
            name(Setting::MinCompactionLagMs),
            config.min_compaction_lag_ms,
            name(Setting::MaxCompactionLagMs),
        );
        problems.push(problem(
            Setting::MinCompactionLagMs,
            Some(Setting::MaxCompactionLagMs),
            message,
        ));
    }
    let max_message_bytes = u64::from(config.max_message_bytes);
    if max_message_bytes > config.segment_bytes {
        let message = format!(
            "{} ({max_message_bytes}) exceeds {} ({}): a message must fit in one segment",
            name(Setting::MaxMessageBytes),
            name(Setting::SegmentBytes),
            config.segment_bytes
        );
        problems.push(problem(
            Setting::MaxMessageBytes,
            Some(Setting::SegmentBytes),
            message,
        ));
    }
    if max_message_bytes > limits.socket_request_max_bytes {
        let message = format!(
            "{} ({max_message_bytes}) exceeds limits.socket_request_max_bytes ({}): \
             no producer could send such a message",
            name(Setting::MaxMessageBytes),
            limits.socket_request_max_bytes
        );
        problems.push(CrossProblem {
            limit_key: Some("limits.socket_request_max_bytes"),
            ..problem(Setting::MaxMessageBytes, None, message)
        });
    }
    problems
}

impl ClusterSpec {
    /// The settings of `topic`: Kafka's defaults, then `[topic_defaults]`, then the
    /// topic's own table. An undeclared topic gets the defaults.
    pub fn topic_config(&self, topic: &str) -> TopicConfig {
        let mut config = self.default_topic_config();
        let Some(spec) = self.topics.get(topic) else {
            return config;
        };
        config.apply(&spec.settings);
        config.allow_delete = spec.allow_delete;
        if let Some(replicas) = &spec.replicas {
            config.partitions = i32::try_from(replicas.len()).unwrap_or(i32::MAX);
            let first = replicas.first().map_or(0, Vec::len);
            config.replication_factor = i16::try_from(first).unwrap_or(i16::MAX);
            config.replicas = Some(replicas.clone());
        }
        config
    }

    /// Kafka's defaults overlaid with `[topic_defaults]`: the config of any topic
    /// the file does not declare.
    pub fn default_topic_config(&self) -> TopicConfig {
        let mut config = TopicConfig::kafka_defaults();
        config.apply(&self.topic_defaults);
        config
    }

    /// The config of a topic created through CreateTopics (or auto-created):
    /// the spec's defaults overridden by Kafka-style `overrides` such as
    /// `("retention.ms", "86400000")`. `partitions` `None` or `-1` means the default.
    pub fn new_topic_config(
        &self,
        partitions: Option<i32>,
        overrides: &[(String, String)],
    ) -> Result<TopicConfig, String> {
        self.new_topic_config_with_replication(partitions, None, overrides)
    }

    /// `new_topic_config` with CreateTopics' replication factor (`None` or `-1`:
    /// the default). Every problem is reported, joined by "; ".
    pub fn new_topic_config_with_replication(
        &self,
        partitions: Option<i32>,
        replication_factor: Option<i16>,
        overrides: &[(String, String)],
    ) -> Result<TopicConfig, String> {
        let mut config = self.default_topic_config();
        let mut problems = Vec::new();
        let requested = [
            (Setting::Partitions, partitions.map(i128::from)),
            (
                Setting::ReplicationFactor,
                replication_factor.map(i128::from),
            ),
        ];
        for (setting, value) in requested {
            match value {
                None | Some(-1) => {}
                Some(value) => match setting.check(value) {
                    Some(message) => problems.push(format!("{}: {message}", setting.kafka_name())),
                    None if setting == Setting::Partitions => config.partitions = value as i32,
                    None => config.replication_factor = value as i16,
                },
            }
        }
        for (name, value) in overrides {
            if let Err(message) = apply_kafka_config(&mut config, name, value) {
                problems.push(message);
            }
        }
        if problems.is_empty() {
            let crossed = cross_check(
                &config,
                self.brokers.len(),
                &self.limits,
                Setting::kafka_name,
            );
            problems.extend(crossed.into_iter().map(|problem| problem.message));
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Kafka config names that `apply_kafka_config` understands, for error messages.
const KAFKA_CONFIG_NAMES: &str = "cleanup.policy, compression.type, delete.retention.ms, \
    flush.messages, flush.ms, index.interval.bytes, max.compaction.lag.ms, max.message.bytes, \
    message.timestamp.type, min.cleanable.dirty.ratio, min.compaction.lag.ms, \
    min.insync.replicas, retention.bytes, retention.ms, segment.bytes, segment.index.bytes, \
    segment.ms, sluice.flush.mode, unclean.leader.election.enable";

/// Whether `name` is a Kafka topic config key that topics here may set
/// (the metadata log refuses any other).
pub fn is_topic_config_name(name: &str) -> bool {
    KAFKA_CONFIG_NAMES.split(", ").any(|known| known == name)
}

fn apply_kafka_config(config: &mut TopicConfig, name: &str, value: &str) -> Result<(), String> {
    let is_config = |s: &Setting| !matches!(s, Setting::Partitions | Setting::ReplicationFactor);
    let numeric = Setting::NUMERIC
        .into_iter()
        .filter(is_config)
        .find(|s| s.kafka_name() == name);
    if let Some(setting) = numeric {
        return apply_kafka_number(config, setting, value);
    }
    let one_of = |choices: &str| format!("{name}: {value:?} is not one of {choices}");
    match name {
        "cleanup.policy" => {
            config.cleanup_policy = CleanupPolicyKind::from_kafka(value)
                .ok_or_else(|| one_of("delete, compact, compact,delete"))?;
        }
        "min.cleanable.dirty.ratio" => {
            config.min_cleanable_dirty_ratio = value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(DirtyRatio::from_f64)
                .ok_or_else(|| format!("{name}: {value:?} is not a number between 0 and 1"))?;
        }
        "compression.type" => match kafka_compression(value)? {
            CompressionSetting::Producer => config.compression = CompressionSetting::Producer,
            _ => return Err(format!("{name}: {value:?}: {RECOMPRESSION_NOT_BUILT}")),
        },
        "message.timestamp.type" => {
            config.message_timestamp_type = match value {
                "CreateTime" => TimestampKind::CreateTime,
                "LogAppendTime" => TimestampKind::LogAppendTime,
                _ => return Err(one_of("CreateTime, LogAppendTime")),
            }
        }
        "sluice.flush.mode" => {
            config.flush = match value {
                "page-cache" => FlushMode::PageCache,
                "fsync" => FlushMode::Fsync,
                _ => return Err(one_of("page-cache, fsync")),
            }
        }
        "unclean.leader.election.enable" => {
            config.unclean_leader_election = match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("{name}: {value:?} is not true or false")),
            }
        }
        _ => {
            return Err(format!(
                "unknown topic config {name:?}; Sluice supports {KAFKA_CONFIG_NAMES}"
            ));
        }
    }
    Ok(())
}

/// A numeric Kafka config: a plain integer, with Kafka's spelling of "unlimited"
/// (-1 for retention, Long.MAX for flushing).
fn apply_kafka_number(
    config: &mut TopicConfig,
    setting: Setting,
    value: &str,
) -> Result<(), String> {
    let name = setting.kafka_name();
    let parsed = value.trim().parse::<i64>().map_err(|_| {
        format!("{name}: {value:?} is not an integer (Kafka configs are plain numbers)")
    })?;
    let unlimited = match setting {
        Setting::RetentionMs | Setting::RetentionBytes => parsed == -1,
        Setting::FlushIntervalMessages | Setting::FlushIntervalMs | Setting::MaxCompactionLagMs => {
            parsed == i64::MAX
        }
        _ => false,
    };
    if !unlimited && let Some(message) = setting.check(i128::from(parsed)) {
        return Err(format!("{name}: {message}"));
    }
    let bounded = (!unlimited).then_some(parsed.unsigned_abs());
    let number = parsed.unsigned_abs();
    let narrow = u32::try_from(number).unwrap_or(u32::MAX);
    match setting {
        Setting::MinInsyncReplicas => {
            config.min_insync_replicas = i16::try_from(number).unwrap_or(i16::MAX);
        }
        Setting::SegmentBytes => config.segment_bytes = number,
        Setting::SegmentMs => config.segment_ms = number,
        Setting::SegmentIndexBytes => config.segment_index_bytes = narrow,
        Setting::IndexIntervalBytes => config.index_interval_bytes = narrow,
        Setting::RetentionMs => config.retention_ms = bounded,
        Setting::RetentionBytes => config.retention_bytes = bounded,
        Setting::MaxMessageBytes => config.max_message_bytes = narrow,
        Setting::FlushIntervalMessages => config.flush_interval_messages = bounded,
        Setting::FlushIntervalMs => config.flush_interval_ms = bounded,
        Setting::MinCompactionLagMs => config.min_compaction_lag_ms = number,
        Setting::MaxCompactionLagMs => config.max_compaction_lag_ms = bounded,
        Setting::DeleteRetentionMs => config.delete_retention_ms = number,
        Setting::Partitions | Setting::ReplicationFactor => {
            unreachable!("not topic configs in Kafka")
        }
    }
    Ok(())
}

fn kafka_compression(value: &str) -> Result<CompressionSetting, String> {
    let all = [
        CompressionSetting::Producer,
        CompressionSetting::Uncompressed,
        CompressionSetting::Gzip,
        CompressionSetting::Snappy,
        CompressionSetting::Lz4,
        CompressionSetting::Zstd,
    ];
    all.into_iter()
        .find(|setting| setting.kafka_name() == value)
        .ok_or_else(|| {
            format!(
                "compression.type: {value:?} is not one of producer, uncompressed, gzip, snappy, lz4, zstd"
            )
        })
}
