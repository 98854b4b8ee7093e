//! The broker's errors, and the one place they become gRPC statuses.
//!
//! Each error maps to a gRPC code and to a Kafka-style name sent in the
//! `brook-error` metadata entry, so clients can tell a retriable
//! `NOT_LEADER` from a final `INVALID_TOPIC` without parsing messages.

use brook_record::Offset;
use brook_storage::StorageError;
use thiserror::Error;
use tonic::{Code, Status};

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("topic '{topic}' does not exist")]
    UnknownTopic { topic: String },
    #[error("topic '{topic}' has {partitions} partitions; partition {partition} does not exist")]
    PartitionNotFound { topic: String, partition: u32, partitions: u32 },
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("topic '{topic}' already exists")]
    TopicAlreadyExists { topic: String },
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    #[error("invalid partition count {partitions}: must be between 1 and {max}")]
    InvalidPartitions { partitions: u32, max: u32 },
    #[error("replication factor {requested} is invalid: the cluster has {brokers} broker(s)")]
    InvalidReplicationFactor { requested: u32, brokers: u32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid record batch for {topic}-{partition}: {source}")]
    InvalidBatch {
        topic: String,
        partition: u32,
        #[source]
        source: StorageError,
    },
    #[error("record batch for {topic}-{partition} is too large: {source}")]
    BatchTooLarge {
        topic: String,
        partition: u32,
        #[source]
        source: StorageError,
    },
    #[error("offset {requested} is out of range for {topic}-{partition}: valid offsets are {log_start_offset}..={high_watermark}")]
    OffsetOutOfRange { topic: String, partition: u32, requested: i64, log_start_offset: Offset, high_watermark: Offset },
    #[error(
        "not enough replicas for {topic}-{partition}: {isr} in sync, min.insync.replicas is {min_insync_replicas}"
    )]
    NotEnoughReplicas { topic: String, partition: u32, isr: u32, min_insync_replicas: u32 },
    #[error("storage error on {topic}-{partition}: {source}")]
    Storage {
        topic: String,
        partition: u32,
        #[source]
        source: StorageError,
    },
    #[error("broker {broker_id} does not lead {topic}-{partition}; {}", match leader { Some(leader) => format!("broker {leader} does (epoch {leader_epoch})"), None => "it has no leader right now".to_string() })]
    NotLeader { topic: String, partition: u32, broker_id: u32, leader: Option<u32>, leader_epoch: u32 },
    #[error("{topic}-{partition}: the in-sync replicas did not reach offset {target} within {waited:?} (high watermark {high_watermark})")]
    RequestTimedOut {
        topic: String,
        partition: u32,
        waited: std::time::Duration,
        high_watermark: Offset,
        target: Offset,
    },
    #[error("{topic}-{partition}: this broker stopped leading it at epoch {leader_epoch} before the in-sync replicas confirmed offset {target}; the records may or may not be kept, send them again")]
    LeadershipChanged { topic: String, partition: u32, leader_epoch: u32, target: Offset },
    #[error("{topic}-{partition}: the follower's leader epoch {requested} is not the leader's {current}")]
    FencedLeaderEpoch { topic: String, partition: u32, requested: u32, current: u32 },
    #[error("no metadata controller available: {0}")]
    NoController(String),
    #[error("data directory {}: {reason}", path.display())]
    DataDir { path: std::path::PathBuf, reason: String },
    #[error("{topic}-{partition}: topic id {requested} is not this broker's topic of that name (id {current}); the topic was deleted and created again")]
    UnknownTopicId { topic: String, partition: u32, requested: brook_record::TopicId, current: brook_record::TopicId },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl BrokerError {
    /// The Kafka-style error name a client can act on.
    pub fn code_name(&self) -> &'static str {
        match self {
            BrokerError::UnknownTopic { .. } | BrokerError::PartitionNotFound { .. } => "UNKNOWN_TOPIC_OR_PARTITION",
            BrokerError::InvalidTopicName { .. } => "INVALID_TOPIC",
            BrokerError::TopicAlreadyExists { .. } => "TOPIC_ALREADY_EXISTS",
            BrokerError::InvalidConfig { .. } => "INVALID_CONFIG",
            BrokerError::InvalidPartitions { .. } => "INVALID_PARTITIONS",
            BrokerError::InvalidReplicationFactor { .. } => "INVALID_REPLICATION_FACTOR",
            BrokerError::InvalidRequest(_) => "INVALID_REQUEST",
            BrokerError::InvalidBatch { .. } => "CORRUPT_RECORD",
            BrokerError::BatchTooLarge { .. } => "RECORD_TOO_LARGE",
            BrokerError::OffsetOutOfRange { .. } => "OFFSET_OUT_OF_RANGE",
            BrokerError::NotEnoughReplicas { .. } => "NOT_ENOUGH_REPLICAS",
            BrokerError::Storage { .. } => "KAFKA_STORAGE_ERROR",
            BrokerError::NotLeader { .. } | BrokerError::LeadershipChanged { .. } => "NOT_LEADER",
            BrokerError::FencedLeaderEpoch { .. } => "FENCED_LEADER_EPOCH",
            BrokerError::RequestTimedOut { .. } => "REQUEST_TIMED_OUT",
            BrokerError::NoController(_) => "BROKER_NOT_AVAILABLE",
            BrokerError::DataDir { .. } => "KAFKA_STORAGE_ERROR",
            BrokerError::UnknownTopicId { .. } => "UNKNOWN_TOPIC_ID",
            BrokerError::ShuttingDown => "BROKER_NOT_AVAILABLE",
        }
    }

    pub(crate) fn code(&self) -> Code {
        match self {
            BrokerError::UnknownTopic { .. }
            | BrokerError::PartitionNotFound { .. }
            | BrokerError::UnknownTopicId { .. } => Code::NotFound,
            BrokerError::TopicAlreadyExists { .. } => Code::AlreadyExists,
            BrokerError::InvalidTopicName { .. }
            | BrokerError::InvalidConfig { .. }
            | BrokerError::InvalidPartitions { .. }
            | BrokerError::InvalidReplicationFactor { .. }
            | BrokerError::InvalidRequest(_)
            | BrokerError::InvalidBatch { .. }
            | BrokerError::BatchTooLarge { .. } => Code::InvalidArgument,
            BrokerError::OffsetOutOfRange { .. } => Code::OutOfRange,
            BrokerError::RequestTimedOut { .. } => Code::DeadlineExceeded,
            BrokerError::NotEnoughReplicas { .. }
            | BrokerError::ShuttingDown
            | BrokerError::NotLeader { .. }
            | BrokerError::LeadershipChanged { .. }
            | BrokerError::FencedLeaderEpoch { .. }
            | BrokerError::NoController(_) => Code::Unavailable,
            BrokerError::Storage { .. } | BrokerError::DataDir { .. } => Code::Internal,
        }
    }
}

impl From<BrokerError> for Status {
    fn from(error: BrokerError) -> Status {
        let mut status = Status::new(error.code(), error.to_string());
        status
            .metadata_mut()
            .insert(brook_proto::ERROR_CODE_KEY, tonic::metadata::MetadataValue::from_static(error.code_name()));
        status
    }
}
