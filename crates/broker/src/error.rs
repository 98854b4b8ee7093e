//! The broker's errors, and the one place they become gRPC statuses.
//!
//! Each error maps to a gRPC code and to a Kafka-style name sent in the
//! `brook-error` metadata entry, so clients can tell a retriable
//! `NOT_LEADER` from a final `INVALID_TOPIC` without parsing messages.

use brook_metadata::CommandError;
use brook_record::{BrokerId, LeaderEpoch};
use brook_replication::ReplicaError;
use brook_storage::ProducerRefusal;
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
    #[error("topic '{topic}' has {current} partitions; it can only grow (asked for {requested})")]
    PartitionsOnlyGrow { topic: String, current: u32, requested: u32 },
    #[error("replication factor {requested} is invalid: the cluster has {brokers} broker(s)")]
    InvalidReplicationFactor { requested: u32, brokers: u32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A request that would become a metadata command larger than the
    /// metadata group takes (Kafka's MESSAGE_TOO_LARGE).
    #[error("{what} is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge { what: String, bytes: usize, limit: usize },
    #[error("commit metadata for {topic}-{partition} is {bytes} bytes, over the {limit}-byte limit")]
    OffsetMetadataTooLarge { topic: String, partition: u32, bytes: usize, limit: usize },
    #[error(
        "not enough replicas for {topic}-{partition}: {isr} in sync, min.insync.replicas is {min_insync_replicas}"
    )]
    NotEnoughReplicas { topic: String, partition: u32, isr: u32, min_insync_replicas: u32 },
    #[error("broker {broker_id} does not lead {topic}-{partition}; {}", match leader { Some(leader) => format!("broker {leader} does (epoch {leader_epoch})"), None => "it has no leader right now".to_string() })]
    NotLeader {
        topic: String,
        partition: u32,
        broker_id: BrokerId,
        leader: Option<BrokerId>,
        leader_epoch: LeaderEpoch,
    },
    /// What a partition replica refused or failed at (`brook-replication`).
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("no metadata controller available: {0}")]
    NoController(String),
    #[error("data directory {}: {reason}", path.display())]
    DataDir { path: std::path::PathBuf, reason: String },
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("broker {broker_id} does not coordinate consumer groups{}; {}", if group.is_empty() { String::new() } else { format!(" ('{group}')") }, match coordinator { Some(id) => format!("broker {id} does (the controller)"), None => "no controller is elected right now".to_string() })]
    NotCoordinator { group: String, broker_id: BrokerId, coordinator: Option<BrokerId> },
    #[error("broker {broker_id} could not be asked: {reason}")]
    PeerUnavailable { broker_id: BrokerId, reason: String },
    /// A replica fetch from a broker's older incarnation (KIP-903), or from
    /// a newer one this broker's metadata has not applied yet.
    #[error("broker {broker_id} fetched as incarnation epoch {epoch}; {}", if epoch < current { format!("it restarted since (its epoch is {current} now): a fetch of the old process never counts") } else { format!("this broker's metadata knows it at epoch {current} only so far; fetch again") })]
    StaleBrokerEpoch { broker_id: BrokerId, epoch: u64, current: u64 },
    /// A consumer group refusal from the metadata group (member epochs,
    /// unknown members, non-empty groups).
    #[error(transparent)]
    Group(brook_metadata::CommandError),
}

impl BrokerError {
    /// The Kafka-style error name a client can act on.
    pub fn code_name(&self) -> &'static str {
        match self {
            BrokerError::UnknownTopic { .. } | BrokerError::PartitionNotFound { .. } => "UNKNOWN_TOPIC_OR_PARTITION",
            BrokerError::InvalidTopicName { .. } => "INVALID_TOPIC",
            BrokerError::TopicAlreadyExists { .. } => "TOPIC_ALREADY_EXISTS",
            BrokerError::InvalidConfig { .. } => "INVALID_CONFIG",
            BrokerError::InvalidPartitions { .. } | BrokerError::PartitionsOnlyGrow { .. } => "INVALID_PARTITIONS",
            BrokerError::InvalidReplicationFactor { .. } => "INVALID_REPLICATION_FACTOR",
            BrokerError::InvalidRequest(_) => "INVALID_REQUEST",
            BrokerError::TooLarge { .. } => "MESSAGE_TOO_LARGE",
            BrokerError::OffsetMetadataTooLarge { .. } => "OFFSET_METADATA_TOO_LARGE",
            BrokerError::NotEnoughReplicas { .. } => "NOT_ENOUGH_REPLICAS",
            BrokerError::NotLeader { .. } => "NOT_LEADER",
            BrokerError::Replica(error) => error.code_name(),
            BrokerError::NoController(_) | BrokerError::ShuttingDown => "BROKER_NOT_AVAILABLE",
            BrokerError::DataDir { .. } => "KAFKA_STORAGE_ERROR",
            BrokerError::NotCoordinator { .. } => "NOT_COORDINATOR",
            BrokerError::PeerUnavailable { .. } => "LEADER_NOT_AVAILABLE",
            BrokerError::StaleBrokerEpoch { .. } => "STALE_BROKER_EPOCH",
            BrokerError::Group(error) => group_code_name(error),
        }
    }

    pub(crate) fn code(&self) -> Code {
        match self {
            BrokerError::UnknownTopic { .. } | BrokerError::PartitionNotFound { .. } => Code::NotFound,
            BrokerError::TopicAlreadyExists { .. } => Code::AlreadyExists,
            BrokerError::InvalidTopicName { .. }
            | BrokerError::InvalidConfig { .. }
            | BrokerError::InvalidPartitions { .. }
            | BrokerError::PartitionsOnlyGrow { .. }
            | BrokerError::InvalidReplicationFactor { .. }
            | BrokerError::InvalidRequest(_)
            | BrokerError::TooLarge { .. }
            | BrokerError::OffsetMetadataTooLarge { .. } => Code::InvalidArgument,
            BrokerError::NotEnoughReplicas { .. }
            | BrokerError::ShuttingDown
            | BrokerError::NotLeader { .. }
            | BrokerError::NoController(_) => Code::Unavailable,
            BrokerError::Replica(error) => replica_code(error),
            BrokerError::DataDir { .. } => Code::Internal,
            BrokerError::NotCoordinator { .. } | BrokerError::PeerUnavailable { .. } => Code::Unavailable,
            BrokerError::StaleBrokerEpoch { epoch, current, .. } if epoch < current => Code::FailedPrecondition,
            BrokerError::StaleBrokerEpoch { .. } => Code::Unavailable,
            BrokerError::Group(CommandError::UnknownGroup { .. }) => Code::NotFound,
            BrokerError::Group(CommandError::InvalidGroupRequest { .. }) => Code::InvalidArgument,
            BrokerError::Group(_) => Code::FailedPrecondition,
        }
    }
}

/// The Kafka error name of a group refusal.
fn group_code_name(error: &CommandError) -> &'static str {
    match error {
        CommandError::UnknownMemberId { .. } => "UNKNOWN_MEMBER_ID",
        CommandError::FencedMemberEpoch { .. } => "FENCED_MEMBER_EPOCH",
        CommandError::StaleMemberEpoch { .. } => "STALE_MEMBER_EPOCH",
        CommandError::GroupNotEmpty { .. } => "NON_EMPTY_GROUP",
        CommandError::UnknownGroup { .. } => "GROUP_ID_NOT_FOUND",
        CommandError::GroupMaxSizeReached { .. } => "GROUP_MAX_SIZE_REACHED",
        _ => "INVALID_REQUEST",
    }
}

/// The gRPC code of a replica's error.
fn replica_code(error: &ReplicaError) -> Code {
    match error {
        ReplicaError::InvalidBatch { .. } | ReplicaError::BatchTooLarge { .. } => Code::InvalidArgument,
        ReplicaError::OffsetOutOfRange { .. } => Code::OutOfRange,
        ReplicaError::RequestTimedOut { .. } => Code::DeadlineExceeded,
        ReplicaError::LeadershipChanged { .. }
        | ReplicaError::NotLeader { .. }
        | ReplicaError::NotEnoughReplicasAfterAppend { .. }
        | ReplicaError::FencedLeaderEpoch { .. }
        | ReplicaError::UnknownLeaderEpoch { .. }
        | ReplicaError::Closed { .. } => Code::Unavailable,
        ReplicaError::UnknownTopicId { .. } => Code::NotFound,
        ReplicaError::Storage { .. } => Code::Internal,
        ReplicaError::Producer { source, .. } => match source {
            ProducerRefusal::OutOfOrder { .. }
            | ProducerRefusal::UnknownProducer { .. }
            | ProducerRefusal::Fenced { .. } => Code::FailedPrecondition,
            ProducerRefusal::PartlyDuplicate { .. } | ProducerRefusal::NoSequence { .. } => Code::InvalidArgument,
        },
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
