use std::io;
use std::path::PathBuf;

use brook_record::{LeaderEpoch, Offset, RecordError};
use thiserror::Error;

use crate::config::ConfigField;

/// What can go wrong in the partition log. Disk errors carry the file and
/// the operation; refusals carry the facts a client needs to fix its call.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("batch {index} of the append is invalid: {source}")]
    InvalidBatch {
        index: usize,
        #[source]
        source: RecordError,
    },
    #[error("batch {index} of the append is refused: {source}")]
    Producer {
        index: usize,
        #[source]
        source: crate::producer_state::ProducerRefusal,
    },
    #[error("an append must hold at least one record batch")]
    EmptyAppend,
    #[error("offset {requested} is out of range: the log holds offsets {log_start_offset}..{log_end_offset}")]
    OffsetOutOfRange { requested: Offset, log_start_offset: Offset, log_end_offset: Offset },
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: LeaderEpoch, latest: LeaderEpoch },
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    NonContiguousAppend { expected: Offset, got: Offset },
    #[error("invalid log config {field}: {reason}")]
    InvalidConfig { field: ConfigField, reason: String },
    #[error("segment {} is corrupt at position {position}: {reason}", path.display())]
    CorruptSegment { path: PathBuf, position: u64, reason: String },
}

impl StorageError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { operation, path, source }
    }
}
