//! The error vocabulary broker and clients share (Kafka's `Errors` enum):
//! every refusal a client can act on has one [`ErrorCode`], with its name
//! (what travels in the `brook-error` gRPC header), Kafka's numeric code
//! (what the Kafka front end answers), whether a retry may succeed, and
//! the gRPC status it is sent with.

/// The gRPC status codes an [`ErrorCode`] is sent with (the numbers of
/// `google.rpc.Code`, which `tonic::Code` shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcStatus {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    FailedPrecondition = 9,
    OutOfRange = 11,
    Internal = 13,
    Unavailable = 14,
}

macro_rules! error_codes {
    ($($(#[$meta:meta])* $variant:ident = $name:literal, $kafka:literal, $retriable:literal, $status:ident;)*) => {
        /// A refusal by name. Brook's names are Kafka's except where noted
        /// on the variant; the numeric code is always Kafka's.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[$meta])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The name clients see (the `brook-error` gRPC header).
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// Kafka's numeric error code.
            pub const fn kafka_code(self) -> i16 {
                match self {
                    $(ErrorCode::$variant => $kafka,)*
                }
            }

            /// Whether the same request may succeed if sent again (a leader
            /// moved, the ISR is catching up, a broker restarts).
            pub const fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$variant => $retriable,)*
                }
            }

            /// The gRPC status a refusal of this code is sent with (a few
            /// refusals pick another by their circumstances; see the
            /// broker's `BrokerError::code`).
            pub const fn grpc_status(self) -> GrpcStatus {
                match self {
                    $(ErrorCode::$variant => GrpcStatus::$status,)*
                }
            }
        }
    };
}

error_codes! {
    OffsetOutOfRange = "OFFSET_OUT_OF_RANGE", 1, false, OutOfRange;
    /// Kafka's `CORRUPT_MESSAGE`.
    CorruptRecord = "CORRUPT_RECORD", 2, false, InvalidArgument;
    UnknownTopicOrPartition = "UNKNOWN_TOPIC_OR_PARTITION", 3, false, NotFound;
    LeaderNotAvailable = "LEADER_NOT_AVAILABLE", 5, true, Unavailable;
    /// Kafka's `NOT_LEADER_OR_FOLLOWER`.
    NotLeader = "NOT_LEADER", 6, true, Unavailable;
    RequestTimedOut = "REQUEST_TIMED_OUT", 7, true, DeadlineExceeded;
    BrokerNotAvailable = "BROKER_NOT_AVAILABLE", 8, true, Unavailable;
    /// A request or metadata command over its limit.
    MessageTooLarge = "MESSAGE_TOO_LARGE", 10, false, InvalidArgument;
    /// A batch over the topic's `max.message.bytes` (Kafka answers
    /// `MESSAGE_TOO_LARGE`, code 10).
    RecordTooLarge = "RECORD_TOO_LARGE", 10, false, InvalidArgument;
    OffsetMetadataTooLarge = "OFFSET_METADATA_TOO_LARGE", 12, false, InvalidArgument;
    NotCoordinator = "NOT_COORDINATOR", 16, true, Unavailable;
    /// Kafka's `INVALID_TOPIC_EXCEPTION`.
    InvalidTopic = "INVALID_TOPIC", 17, false, InvalidArgument;
    NotEnoughReplicas = "NOT_ENOUGH_REPLICAS", 19, true, Unavailable;
    NotEnoughReplicasAfterAppend = "NOT_ENOUGH_REPLICAS_AFTER_APPEND", 20, true, Unavailable;
    /// A produce `acks` other than 0, 1 and -1 (all).
    InvalidRequiredAcks = "INVALID_REQUIRED_ACKS", 21, false, InvalidArgument;
    UnknownMemberId = "UNKNOWN_MEMBER_ID", 25, false, FailedPrecondition;
    /// An API version the broker does not serve.
    UnsupportedVersion = "UNSUPPORTED_VERSION", 35, false, InvalidArgument;
    TopicAlreadyExists = "TOPIC_ALREADY_EXISTS", 36, false, AlreadyExists;
    InvalidPartitions = "INVALID_PARTITIONS", 37, false, InvalidArgument;
    InvalidReplicationFactor = "INVALID_REPLICATION_FACTOR", 38, false, InvalidArgument;
    InvalidConfig = "INVALID_CONFIG", 40, false, InvalidArgument;
    InvalidRequest = "INVALID_REQUEST", 42, false, InvalidArgument;
    OutOfOrderSequenceNumber = "OUT_OF_ORDER_SEQUENCE_NUMBER", 45, false, FailedPrecondition;
    InvalidProducerEpoch = "INVALID_PRODUCER_EPOCH", 47, false, FailedPrecondition;
    KafkaStorageError = "KAFKA_STORAGE_ERROR", 56, false, Internal;
    UnknownProducerId = "UNKNOWN_PRODUCER_ID", 59, false, FailedPrecondition;
    NonEmptyGroup = "NON_EMPTY_GROUP", 68, false, FailedPrecondition;
    GroupIdNotFound = "GROUP_ID_NOT_FOUND", 69, false, NotFound;
    FencedLeaderEpoch = "FENCED_LEADER_EPOCH", 74, true, Unavailable;
    UnknownLeaderEpoch = "UNKNOWN_LEADER_EPOCH", 75, true, Unavailable;
    StaleBrokerEpoch = "STALE_BROKER_EPOCH", 77, false, FailedPrecondition;
    GroupMaxSizeReached = "GROUP_MAX_SIZE_REACHED", 81, false, FailedPrecondition;
    InvalidRecord = "INVALID_RECORD", 87, false, InvalidArgument;
    UnknownTopicId = "UNKNOWN_TOPIC_ID", 100, false, NotFound;
    FencedMemberEpoch = "FENCED_MEMBER_EPOCH", 110, false, FailedPrecondition;
    StaleMemberEpoch = "STALE_MEMBER_EPOCH", 113, false, FailedPrecondition;
}

impl ErrorCode {
    /// The code of a name, as a client reads it from the `brook-error`
    /// header; `None` for a name this build does not know.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|code| code.name() == name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_read_back() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.name()), Some(*code));
        }
        assert_eq!(ErrorCode::from_name("NO_SUCH_ERROR"), None);
    }

    #[test]
    fn kafka_codes_are_kafkas() {
        assert_eq!(ErrorCode::UnknownTopicOrPartition.kafka_code(), 3);
        assert_eq!(ErrorCode::NotLeader.kafka_code(), 6);
        assert_eq!(ErrorCode::OutOfOrderSequenceNumber.kafka_code(), 45);
        assert_eq!(ErrorCode::StaleMemberEpoch.kafka_code(), 113);
        let retriable: Vec<&str> =
            ErrorCode::ALL.iter().filter(|code| code.is_retriable()).map(|code| code.name()).collect();
        assert_eq!(
            retriable,
            [
                "LEADER_NOT_AVAILABLE",
                "NOT_LEADER",
                "REQUEST_TIMED_OUT",
                "BROKER_NOT_AVAILABLE",
                "NOT_COORDINATOR",
                "NOT_ENOUGH_REPLICAS",
                "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
                "FENCED_LEADER_EPOCH",
                "UNKNOWN_LEADER_EPOCH",
            ]
        );
    }
}
