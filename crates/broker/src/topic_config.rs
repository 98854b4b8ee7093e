//! Topic names and topic configs, with Kafka's names and rules.

use std::collections::BTreeMap;

pub use brook_metadata::topic_keys as keys;
use brook_storage::{ConfigField, FlushPolicy, LogConfig};

use crate::error::BrokerError;

/// Checks a topic name the way Kafka does: 1-249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..` (they would be directories).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    brook_record::check_topic_name(name)
        .map_err(|reason| BrokerError::InvalidTopicName { name: name.to_string(), reason })
}

/// A topic's settings. Parsed from Kafka's config names; stored in the
/// metadata group as the same name/value map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub min_insync_replicas: u32,
    pub max_message_bytes: usize,
    pub flush_policy: FlushPolicy,
    /// Whether a replica outside the ISR may become leader when no ISR
    /// member is alive (losing what it lacks). Default false.
    pub unclean_leader_election: bool,
    /// Kafka's `compression.type`: `None` (`producer`, the default) stores
    /// batches as the producer compressed them; a codec (`none`, `gzip`,
    /// `snappy`, `lz4`, `zstd`) has the leader recompress batches that
    /// arrive in another one before the append.
    pub compression: Option<brook_record::Compression>,
    /// Forget an idempotent producer idle this long (Kafka's broker-wide
    /// `producer.id.expiration.ms`, here per topic). Default 24 h.
    pub producer_id_expiration_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicConfig {
            retention_ms: log.retention_ms,
            retention_bytes: log.retention_bytes,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            min_insync_replicas: 1,
            max_message_bytes: log.max_batch_bytes,
            flush_policy: log.flush_policy,
            unclean_leader_election: false,
            compression: None,
            producer_id_expiration_ms: log.producer_id_expiration_ms,
        }
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::InvalidConfig { key: key.to_string(), value: value.to_string(), reason: reason.into() }
}

fn parse_u64(key: &str, value: &str) -> Result<u64, BrokerError> {
    value.parse().map_err(|_| invalid(key, value, "expected a non-negative integer"))
}

/// `-1` means "no limit", as in Kafka.
fn parse_limit(key: &str, value: &str) -> Result<Option<u64>, BrokerError> {
    if value == "-1" {
        Ok(None)
    } else {
        parse_u64(key, value).map(Some).map_err(|_| invalid(key, value, "expected a non-negative integer or -1"))
    }
}

fn parse_flush_policy(value: &str) -> Result<FlushPolicy, BrokerError> {
    let key = keys::FLUSH_POLICY;
    let bad = || invalid(key, value, "expected none, always, every_n_records:N or every_ms:N");
    match value.split_once(':') {
        None if value == "none" => Ok(FlushPolicy::None),
        None if value == "always" => Ok(FlushPolicy::Always),
        Some(("every_n_records", count)) => Ok(FlushPolicy::EveryNRecords(count.parse().map_err(|_| bad())?)),
        Some(("every_ms", interval)) => Ok(FlushPolicy::EveryMs(interval.parse().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}

fn format_flush_policy(policy: FlushPolicy) -> String {
    match policy {
        FlushPolicy::None => "none".to_string(),
        FlushPolicy::Always => "always".to_string(),
        FlushPolicy::EveryNRecords(count) => format!("every_n_records:{count}"),
        FlushPolicy::EveryMs(interval) => format!("every_ms:{interval}"),
    }
}

fn format_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "-1".to_string(), |value| value.to_string())
}

impl TopicConfig {
    /// The defaults overridden by `configs`. Unknown names and bad values
    /// are refused with the name and the reason.
    pub fn from_map(configs: &BTreeMap<String, String>) -> Result<TopicConfig, BrokerError> {
        let mut config = TopicConfig::default();
        for (key, value) in configs {
            let value = value.trim();
            match key.as_str() {
                keys::RETENTION_MS => config.retention_ms = parse_limit(key, value)?,
                keys::RETENTION_BYTES => config.retention_bytes = parse_limit(key, value)?,
                keys::SEGMENT_BYTES => config.segment_bytes = parse_u64(key, value)?,
                keys::SEGMENT_MS => config.segment_ms = parse_u64(key, value)?,
                keys::MIN_INSYNC_REPLICAS => {
                    config.min_insync_replicas = parse_u64(key, value)?
                        .try_into()
                        .ok()
                        .filter(|&replicas| replicas >= 1)
                        .ok_or_else(|| invalid(key, value, "must be at least 1"))?
                }
                keys::MAX_MESSAGE_BYTES => {
                    config.max_message_bytes =
                        parse_u64(key, value)?.try_into().map_err(|_| invalid(key, value, "too large"))?
                }
                keys::FLUSH_POLICY => config.flush_policy = parse_flush_policy(value)?,
                keys::UNCLEAN_LEADER_ELECTION_ENABLE => {
                    config.unclean_leader_election =
                        keys::parse_bool(value).ok_or_else(|| invalid(key, value, "expected true or false"))?
                }
                keys::PRODUCER_ID_EXPIRATION_MS => config.producer_id_expiration_ms = parse_u64(key, value)?,
                keys::COMPRESSION_TYPE => {
                    config.compression =
                        match value {
                            "producer" => None,
                            codec => Some(codec.parse().map_err(|_| {
                                invalid(key, value, "expected producer, none, gzip, snappy, lz4 or zstd")
                            })?),
                        }
                }
                _ => return Err(invalid(key, value, format!("unknown config; known: {}", keys::ALL.join(", ")))),
            }
        }
        // The log checks its own limits; report them under the topic names.
        config.log_config().validate().map_err(|error| {
            let field = match &error {
                brook_storage::StorageError::InvalidConfig { field, .. } => Some(*field),
                _ => None,
            };
            let (key, value) = match field {
                Some(ConfigField::SegmentBytes) => (keys::SEGMENT_BYTES, config.segment_bytes.to_string()),
                Some(ConfigField::MaxBatchBytes) => (keys::MAX_MESSAGE_BYTES, config.max_message_bytes.to_string()),
                Some(ConfigField::SegmentMs) => (keys::SEGMENT_MS, config.segment_ms.to_string()),
                Some(ConfigField::RetentionMs) => (keys::RETENTION_MS, format_limit(config.retention_ms)),
                Some(ConfigField::ProducerIdExpirationMs) => {
                    (keys::PRODUCER_ID_EXPIRATION_MS, config.producer_id_expiration_ms.to_string())
                }
                Some(ConfigField::FlushPolicy | ConfigField::IndexIntervalBytes) | None => {
                    (keys::FLUSH_POLICY, format_flush_policy(config.flush_policy))
                }
            };
            invalid(key, &value, error.to_string())
        })?;
        Ok(config)
    }

    /// Every config with its effective value.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let compression = self.compression.map_or("producer", |codec| codec.name()).to_string();
        [
            (keys::RETENTION_MS, format_limit(self.retention_ms)),
            (keys::RETENTION_BYTES, format_limit(self.retention_bytes)),
            (keys::SEGMENT_BYTES, self.segment_bytes.to_string()),
            (keys::SEGMENT_MS, self.segment_ms.to_string()),
            (keys::MIN_INSYNC_REPLICAS, self.min_insync_replicas.to_string()),
            (keys::MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (keys::FLUSH_POLICY, format_flush_policy(self.flush_policy)),
            (keys::UNCLEAN_LEADER_ELECTION_ENABLE, self.unclean_leader_election.to_string()),
            (keys::COMPRESSION_TYPE, compression),
            (keys::PRODUCER_ID_EXPIRATION_MS, self.producer_id_expiration_ms.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            max_batch_bytes: self.max_message_bytes,
            flush_policy: self.flush_policy,
            producer_id_expiration_ms: self.producer_id_expiration_ms,
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_a_century_are_refused_by_name() {
        for (key, value) in [("segment.ms", "9223372036854775807"), ("retention.ms", "18446744073709551615")] {
            let configs = BTreeMap::from([(key.to_string(), value.to_string())]);
            let error = TopicConfig::from_map(&configs).expect_err("refused");
            assert!(error.to_string().contains(key), "{error}");
        }
        let configs = BTreeMap::from([("segment.ms".to_string(), "0".to_string())]);
        assert!(TopicConfig::from_map(&configs).is_err(), "a segment.ms of 0 would roll on every append");
        let configs = BTreeMap::from([("producer.id.expiration.ms".to_string(), "0".to_string())]);
        let error = TopicConfig::from_map(&configs).expect_err("refused");
        assert!(error.to_string().contains("producer.id.expiration.ms"), "{error}");
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v2_eu-1").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "a/b", "ordres\u{e9}", "with space", &"a".repeat(250)] {
            assert!(matches!(validate_topic_name(bad), Err(BrokerError::InvalidTopicName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn configs_parse_and_round_trip() {
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "1048576".to_string()),
            ("flush.policy".to_string(), "every_n_records:100".to_string()),
        ]);
        let config = TopicConfig::from_map(&configs).expect("valid");
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(config.flush_policy, FlushPolicy::EveryNRecords(100));
        assert_eq!(TopicConfig::from_map(&config.to_map()).expect("round trip"), config);
    }

    #[test]
    fn bad_configs_name_the_key_and_the_reason() {
        for (key, value) in
            [("retention.ms", "soon"), ("segment.bytes", "10"), ("min.insync.replicas", "0"), ("colour", "blue")]
        {
            let configs = BTreeMap::from([(key.to_string(), value.to_string())]);
            let error = TopicConfig::from_map(&configs).expect_err("invalid");
            assert!(error.to_string().starts_with(&format!("invalid config {key}={value}: ")), "{error}");
        }
    }
}
