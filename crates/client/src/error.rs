use std::sync::Arc;

use brook_record::ErrorCode;
use thiserror::Error;
use tonic::Code;

/// What a client call can fail with. Cheap to clone: one failed batch
/// fails every record in it with the same error.
#[derive(Debug, Error, Clone)]
pub enum ClientError {
    #[error("invalid bootstrap address '{address}': {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("no broker reachable at {addresses}: {reason}")]
    Unreachable { addresses: String, reason: String },
    /// The broker refused the call; `code_name` is its Kafka-style error
    /// (`UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER`, ...) when it sent one.
    #[error("{message}")]
    Broker { code: Code, code_name: Option<String>, message: String },
    #[error("topic '{topic}' does not exist")]
    UnknownTopic { topic: String },
    #[error("record of {size} bytes is larger than {limit} ({setting})")]
    RecordTooLarge { size: usize, limit: usize, setting: &'static str },
    #[error("invalid record batch from the broker: {0}")]
    Decode(#[from] brook_record::RecordError),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("timed out after {after_ms} ms: {last_error}")]
    Timeout { after_ms: u128, last_error: Arc<ClientError> },
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    pub(crate) fn from_status(status: tonic::Status) -> ClientError {
        let code_name = status
            .metadata()
            .get(brook_proto::ERROR_CODE_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let message =
            if status.message().is_empty() { format!("{:?}", status.code()) } else { status.message().to_string() };
        ClientError::Broker { code: status.code(), code_name, message }
    }

    /// The broker's refusal, if this is one and this build knows its name.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code_name().and_then(ErrorCode::from_name)
    }

    /// The broker's error name, if this is a broker refusal.
    pub fn code_name(&self) -> Option<&str> {
        match self {
            ClientError::Broker { code_name, .. } => code_name.as_deref(),
            _ => None,
        }
    }

    /// Whether the call never reached a broker (connection refused, reset).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Broker { code, code_name: None, .. } => matches!(code, Code::Unavailable | Code::Unknown),
            ClientError::Unreachable { .. } => true,
            _ => false,
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            // A leader moved, the ISR is catching up, a broker restarts.
            ClientError::Broker { code_name: Some(_), .. } => self.error_code().is_some_and(ErrorCode::is_retriable),
            // No error name: the call never reached Brook's handlers
            // (connection refused or reset, broker restarting).
            ClientError::Broker { code, code_name: None, .. } => {
                matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
            }
            ClientError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> ClientError {
        ClientError::from_status(status)
    }
}
