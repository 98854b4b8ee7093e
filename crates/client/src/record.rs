//! The records users hand to the producer and get from the consumer.

use std::sync::Arc;

use brook_record::Offset;
use bytes::Bytes;

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Shared, so sending many records to one topic copies no name.
    pub topic: Arc<str>,
    /// `None`: chosen by the partitioner (murmur2 of the key, or sticky).
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// `None`: the time of `send`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, key: impl Into<Bytes>, value: Option<Bytes>) -> ProducerRecord {
        self.headers.push((key.into(), value));
        self
    }

    /// The bytes the record takes in the producer's buffer, roughly as in
    /// the batch (varint overheads rounded up).
    pub(crate) fn buffered_bytes(&self) -> usize {
        let optional = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, Bytes::len);
        let headers: usize = self.headers.iter().map(|(key, value)| key.len() + optional(value) + 10).sum();
        optional(&self.key) + optional(&self.value) + headers + 32
    }
}

/// Where a sent record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// `None` with acks=0: the producer did not wait to learn it.
    pub offset: Option<Offset>,
}

/// A record as the consumer returns it; key, value and headers share the
/// fetched buffer (no copy per record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Shared by every record of the partition.
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}
