//! # brook-record: the record batch, byte for byte
//!
//! Owns the one data format that crosses every boundary in Brook: Kafka's
//! RecordBatch v2 (magic 2). Producers build batches with [`BatchBuilder`],
//! the broker validates and stamps them with [`validate_batch`] and
//! [`stamp_batch`] and stores their bytes as they came, consumers unpack
//! them with [`BatchView::records`].
//!
//! The layout (big-endian, as in Kafka):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset            stamped by the leader, outside the CRC
//!      8     4  batch_length           bytes after this field
//!     12     4  partition_leader_epoch stamped by the leader, outside the CRC
//!     16     1  magic                  always 2
//!     17     4  crc                    CRC-32C of bytes 21..end
//!     21     2  attributes             bits 0-2 compression (0 none, 1-4 gzip, snappy, lz4, zstd),
//!                                      bit 3 timestamp type, 4 transactional,
//!                                      5 control
//!     23     4  last_offset_delta
//!     27     8  base_timestamp         milliseconds since the Unix epoch
//!     35     8  max_timestamp
//!     43     8  producer_id            -1 when not idempotent
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  records_count
//!     61     …  records: varint length, attributes, timestamp delta,
//!               offset delta, key, value, headers (zig-zag varints)
//! ```
//!
//! Invariants:
//! - A batch that passes [`validate_batch`] has magic 2, a length that
//!   matches the bytes, a correct CRC, records whose length prefixes tile the
//!   records area exactly, and `records_count == last_offset_delta + 1 > 0`.
//! - Stamping touches only `base_offset` and `partition_leader_epoch`, which
//!   lie outside the CRC, so a stamped batch stays valid.
//!
//! Beside the batch, the crate holds the identities every crate shares, as
//! newtypes: [`Offset`], [`LeaderEpoch`], [`BrokerId`], [`TopicId`] and
//! [`TopicPartition`], and the error vocabulary broker and clients share,
//! [`ErrorCode`] (name, Kafka's numeric code, whether retriable, gRPC
//! status).
//!
//! Never: re-encode a batch to store or forward it; allocate per record in
//! the encoder or the decoder (keys, values and headers are borrowed slices).
//! Compressed batches (Kafka's codecs 1-4) are validated as far as their
//! header, size and CRC, and read by decompressing their records area into
//! one buffer (`BatchView::decompressed`, `compression.rs`); the builder
//! compresses a batch's records area when asked (`finish_compressed`).

mod batch;
mod builder;
mod compression;
mod error;
mod error_code;
mod ids;
mod offset;
mod record;
mod topic_id;
mod varint;

pub use batch::{
    carries_producer_id, recompress, restamp_producer, sequence_after, sequence_distance, stamp_batch,
    stamp_batch_head, validate_batch, BatchHeader, BatchView, Batches, HEADER_BYTES, MAGIC, STAMPED_HEAD_BYTES,
};
pub use builder::{BatchBuilder, NewRecord};
pub use compression::{decompressed_limit, Compression, MAX_DECOMPRESSED_BATCH_BYTES};
pub use error::RecordError;
pub use error_code::{ErrorCode, GrpcStatus};
pub use ids::{check_topic_name, BrokerId, TopicPartition};
pub use offset::{LeaderEpoch, Offset};
pub use record::{Header, Headers, Record, Records};
pub use topic_id::TopicId;
