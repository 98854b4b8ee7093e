//! The broker's errors, and the one place they become gRPC statuses.
//!
//! Each error maps to a gRPC code and to a Kafka-style name sent in the
//! `brook-error` metadata entry, so clients can tell a retriable
//! `NOT_LEADER` from a final `INVALID_TOPIC` without parsing messages.

use brook_metadata::CommandError;
use brook_record::{BrokerId, ErrorCode, LeaderEpoch};
use brook_replication::ReplicaError;
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
    /// The refusal a client can act on.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic { .. } | BrokerError::PartitionNotFound { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            BrokerError::InvalidTopicName { .. } => ErrorCode::InvalidTopic,
            BrokerError::TopicAlreadyExists { .. } => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::InvalidPartitions { .. } | BrokerError::PartitionsOnlyGrow { .. } => {
                ErrorCode::InvalidPartitions
            }
            BrokerError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            BrokerError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
            BrokerError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            BrokerError::NotLeader { .. } => ErrorCode::NotLeader,
            BrokerError::Replica(error) => error.error_code(),
            BrokerError::NoController(_) | BrokerError::ShuttingDown => ErrorCode::BrokerNotAvailable,
            BrokerError::DataDir { .. } => ErrorCode::KafkaStorageError,
            BrokerError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            BrokerError::PeerUnavailable { .. } => ErrorCode::LeaderNotAvailable,
            BrokerError::StaleBrokerEpoch { .. } => ErrorCode::StaleBrokerEpoch,
            BrokerError::Group(error) => group_error_code(error),
        }
    }

    /// The name of [`Self::error_code`], as it travels.
    pub fn code_name(&self) -> &'static str {
        self.error_code().name()
    }

    /// The gRPC status: the error code's, but for two refusals whose
    /// circumstances decide.
    pub(crate) fn code(&self) -> Code {
        match self {
            // A fetch from an incarnation this broker has not heard of yet:
            // worth trying again shortly.
            BrokerError::StaleBrokerEpoch { epoch, current, .. } if epoch >= current => Code::Unavailable,
            // Any other group refusal: the group's state forbids it now.
            BrokerError::Group(error)
                if group_error_code(error) == ErrorCode::InvalidRequest
                    && !matches!(error, CommandError::InvalidGroupRequest { .. }) =>
            {
                Code::FailedPrecondition
            }
            _ => Code::from(self.error_code().grpc_status() as i32),
        }
    }
}

/// The code of a group refusal.
fn group_error_code(error: &CommandError) -> ErrorCode {
    match error {
        CommandError::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
        CommandError::FencedMemberEpoch { .. } => ErrorCode::FencedMemberEpoch,
        CommandError::StaleMemberEpoch { .. } => ErrorCode::StaleMemberEpoch,
        CommandError::GroupNotEmpty { .. } => ErrorCode::NonEmptyGroup,
        CommandError::UnknownGroup { .. } => ErrorCode::GroupIdNotFound,
        CommandError::GroupMaxSizeReached { .. } => ErrorCode::GroupMaxSizeReached,
        _ => ErrorCode::InvalidRequest,
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
