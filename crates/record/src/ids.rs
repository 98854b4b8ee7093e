//! The identities every Brook crate shares beside [`crate::Offset`],
//! [`crate::LeaderEpoch`] and [`crate::TopicId`]: which broker, which
//! partition. Newtypes, so that a broker id is never taken for an epoch or
//! a partition number; Kafka's signed wire fields are converted at the
//! gRPC edge only.

use std::fmt;
use std::sync::Arc;

/// A broker's id in its cluster (also its metadata group node id). Ids
/// start at 1: Brook's wire uses 0 for "no broker" (no leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BrokerId(pub u32);

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition of a topic, by name (what clients and logs say). Cheap to
/// clone: the name is shared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Broker ids travel as plain numbers (the metadata group stores them so).
impl serde::Serialize for BrokerId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for BrokerId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BrokerId, D::Error> {
        u32::deserialize(deserializer).map(BrokerId)
    }
}

/// Kafka's rule for topic names: 1-249 characters of ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`. A name becomes part of a
/// directory name on every broker, so the admin path and the metadata
/// state machine both apply it. The error says what is wrong.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 249 {
        return Err("it is longer than 249 characters".into());
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are reserved".into());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("character {bad:?} is not allowed; use only ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}
