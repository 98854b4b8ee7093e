//! The names of a topic's configuration entries (Kafka's), as a topic's
//! record stores them. The broker's `topic_config.rs` parses the values;
//! everything else names a key through these constants.

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Brook's own: when the log fsyncs (Kafka has `flush.messages` and
/// `flush.ms`).
pub const FLUSH_POLICY: &str = "flush.policy";
/// Allows electing an out-of-sync replica; off unless set to `true`.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
pub const COMPRESSION_TYPE: &str = "compression.type";
pub const PRODUCER_ID_EXPIRATION_MS: &str = "producer.id.expiration.ms";

/// Every key, in the order `brook topic describe` lists them.
pub const ALL: &[&str] = &[
    RETENTION_MS,
    RETENTION_BYTES,
    SEGMENT_BYTES,
    SEGMENT_MS,
    MIN_INSYNC_REPLICAS,
    MAX_MESSAGE_BYTES,
    FLUSH_POLICY,
    UNCLEAN_LEADER_ELECTION_ENABLE,
    COMPRESSION_TYPE,
    PRODUCER_ID_EXPIRATION_MS,
];

/// How a boolean entry is read: `true` or `false`, nothing else (the
/// broker refuses other values when the entry is set).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}
