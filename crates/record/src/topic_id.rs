//! A topic's identity apart from its name (Kafka's KIP-516).
//!
//! A name can be deleted and created again; the two topics then share the
//! name and nothing else. Everything a replica keeps on disk or decides
//! (its directory, whether a fetch is for the log it holds) goes by the
//! id, so a re-created topic never meets the old one's records.

use std::fmt;
use std::str::FromStr;

/// A topic's 128-bit id, given once when the topic is created. Shown as 32
/// lowercase hex digits (the form directory names carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicId(pub uuid::Uuid);

impl TopicId {
    /// The zero id: "no id known" (as Kafka's `Uuid.ZERO_UUID`); never
    /// given to a topic.
    pub const ZERO: TopicId = TopicId(uuid::Uuid::nil());

    /// A fresh random id (version 4).
    pub fn random() -> TopicId {
        TopicId(uuid::Uuid::new_v4())
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from its 16 wire bytes; `None` when there are not 16.
    pub fn from_slice(bytes: &[u8]) -> Option<TopicId> {
        uuid::Uuid::from_slice(bytes).ok().map(TopicId)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl FromStr for TopicId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<TopicId, uuid::Error> {
        uuid::Uuid::try_parse(text).map(TopicId)
    }
}

impl serde::Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TopicId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_round_trip_through_text_and_bytes() {
        let (a, b) = (TopicId::random(), TopicId::random());
        assert_ne!(a, b);
        assert_ne!(a, TopicId::ZERO);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<TopicId>().expect("parse"), a);
        assert_eq!(TopicId::from_slice(a.as_bytes()), Some(a));
        assert_eq!(TopicId::from_slice(&[1, 2, 3]), None);
    }
}
