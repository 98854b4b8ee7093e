use thiserror::Error;

/// Why some bytes are not a valid record batch. Every variant names the
/// fact that failed so the sender can tell what it did wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("record batch has magic {magic}; only magic 2 (RecordBatch v2) is supported")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch length {length} is invalid (minimum {minimum})")]
    InvalidLength { length: i32, minimum: i32 },
    #[error("record batch is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("record batch CRC mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("record batch uses compression codec {codec}; Kafka's are 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd")]
    UnsupportedCompression { codec: u8 },
    #[error("compressed records ({codec}) do not decompress: {reason}")]
    Decompression { codec: &'static str, reason: String },
    #[error(
        "compressed records ({codec}) decompress to more than {limit} bytes, more than the batch's records may hold"
    )]
    DecompressedTooLarge { codec: &'static str, limit: usize },
    #[error("records could not be compressed with {codec}: {reason}")]
    CompressionFailed { codec: &'static str, reason: String },
    #[error("record batch claims {count} records but its last offset delta is {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("record batch holds no records")]
    Empty,
    #[error("record {index} of the batch is malformed: {reason}")]
    MalformedRecord { index: usize, reason: &'static str },
    #[error("record batch records area has {extra} bytes after the last record")]
    TrailingBytes { extra: usize },
    #[error("record batch base offset {base_offset} is negative")]
    NegativeOffset { base_offset: i64 },
}
