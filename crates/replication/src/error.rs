//! What can go wrong on a replica, with the facts in it. The broker maps
//! each to a gRPC status and a Kafka error name ([`ReplicaError::code_name`]).

use std::time::Duration;

use brook_record::{BrokerId, ErrorCode, LeaderEpoch, Offset, TopicId, TopicPartition};
use brook_storage::{ProducerRefusal, StorageError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("invalid record batch for {partition}: {source}")]
    InvalidBatch {
        partition: TopicPartition,
        #[source]
        source: StorageError,
    },
    #[error("record batch for {partition} is too large: {source}")]
    BatchTooLarge {
        partition: TopicPartition,
        #[source]
        source: StorageError,
    },
    #[error(
        "offset {requested} is out of range for {partition}: valid offsets are {log_start_offset}..={high_watermark}"
    )]
    OffsetOutOfRange { partition: TopicPartition, requested: Offset, log_start_offset: Offset, high_watermark: Offset },
    #[error("storage error on {partition}: {source}")]
    Storage {
        partition: TopicPartition,
        #[source]
        source: StorageError,
    },
    #[error("{partition}: the in-sync replicas did not reach offset {target} within {waited:?} (high watermark {high_watermark})")]
    RequestTimedOut { partition: TopicPartition, waited: Duration, high_watermark: Offset, target: Offset },
    #[error("{partition}: this broker stopped leading it at epoch {leader_epoch} before the in-sync replicas confirmed offset {target}; the records may or may not be kept, send them again")]
    LeadershipChanged { partition: TopicPartition, leader_epoch: LeaderEpoch, target: Offset },
    #[error("{partition}: the leader epoch {requested} the request names is older than this broker's {current}; refresh the metadata")]
    FencedLeaderEpoch { partition: TopicPartition, requested: LeaderEpoch, current: LeaderEpoch },
    #[error("{partition}: the leader epoch {requested} the request names is newer than this broker's {current}; it has not heard of it yet, try again")]
    UnknownLeaderEpoch { partition: TopicPartition, requested: LeaderEpoch, current: LeaderEpoch },
    #[error("{partition}: topic id {requested} is not this broker's topic of that name (id {current}); the topic was deleted and created again")]
    UnknownTopicId { partition: TopicPartition, requested: TopicId, current: TopicId },
    #[error("{partition}: this broker does not lead it; {}", match leader { Some(leader) => format!("broker {leader} does (epoch {leader_epoch})"), None => "it has no leader right now".to_string() })]
    NotLeader { partition: TopicPartition, leader: Option<BrokerId>, leader_epoch: LeaderEpoch },
    #[error("{partition}: the records were appended, but the in-sync replicas shrank to {isr} while the request waited (min.insync.replicas is {min_insync_replicas}); send them again")]
    NotEnoughReplicasAfterAppend { partition: TopicPartition, isr: u32, min_insync_replicas: u32 },
    #[error("{partition}: {source}")]
    Producer {
        partition: TopicPartition,
        #[source]
        source: ProducerRefusal,
    },
    #[error("{partition} is closed (the broker is shutting down or the partition moved away)")]
    Closed { partition: TopicPartition },
}

impl ReplicaError {
    /// The refusal a client or follower can act on.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReplicaError::InvalidBatch { .. } => ErrorCode::CorruptRecord,
            ReplicaError::BatchTooLarge { .. } => ErrorCode::RecordTooLarge,
            ReplicaError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ReplicaError::Storage { .. } => ErrorCode::KafkaStorageError,
            ReplicaError::RequestTimedOut { .. } => ErrorCode::RequestTimedOut,
            ReplicaError::LeadershipChanged { .. } | ReplicaError::NotLeader { .. } => ErrorCode::NotLeader,
            ReplicaError::NotEnoughReplicasAfterAppend { .. } => ErrorCode::NotEnoughReplicasAfterAppend,
            ReplicaError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            ReplicaError::UnknownLeaderEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            ReplicaError::UnknownTopicId { .. } => ErrorCode::UnknownTopicId,
            ReplicaError::Closed { .. } => ErrorCode::BrokerNotAvailable,
            ReplicaError::Producer { source, .. } => match source {
                ProducerRefusal::OutOfOrder { .. } => ErrorCode::OutOfOrderSequenceNumber,
                ProducerRefusal::UnknownProducer { .. } => ErrorCode::UnknownProducerId,
                ProducerRefusal::Fenced { .. } => ErrorCode::InvalidProducerEpoch,
                ProducerRefusal::PartlyDuplicate { .. } | ProducerRefusal::NoSequence { .. } => {
                    ErrorCode::InvalidRecord
                }
            },
        }
    }

    /// The name of [`Self::error_code`], as it travels.
    pub fn code_name(&self) -> &'static str {
        self.error_code().name()
    }

    /// An idempotent producer's batch whose sequence is ahead of the one
    /// the log expects (by less than half the sequence space): an earlier
    /// batch of the producer has not been appended yet.
    pub fn is_sequence_ahead(&self) -> bool {
        match self {
            ReplicaError::Producer { source: ProducerRefusal::OutOfOrder { expected, got, .. }, .. } => {
                let ahead = brook_record::sequence_distance(*expected, *got);
                ahead > 0 && ahead < 1 << 30
            }
            // Not known yet: the producer's first batch may still be on
            // its way (a request that overtook it).
            ReplicaError::Producer { source: ProducerRefusal::UnknownProducer { got, .. }, .. } => {
                *got > 0 && *got < 1 << 30
            }
            _ => false,
        }
    }

    /// A storage error of `partition`, sorted by what the client did wrong.
    pub(crate) fn from_storage(partition: &TopicPartition, source: StorageError) -> ReplicaError {
        let partition = partition.clone();
        match source {
            StorageError::InvalidBatch { source: brook_record::RecordError::TooLarge { .. }, .. } => {
                ReplicaError::BatchTooLarge { partition, source }
            }
            StorageError::Producer { source, .. } => ReplicaError::Producer { partition, source },
            StorageError::InvalidBatch { .. } | StorageError::EmptyAppend => {
                ReplicaError::InvalidBatch { partition, source }
            }
            source => ReplicaError::Storage { partition, source },
        }
    }
}
