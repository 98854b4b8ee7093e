//! # brook-client: the Rust client
//!
//! Owns the client side of Brook's gRPC API: [`Admin`] for topics,
//! [`Producer`] (batching, bounded memory, retries, Kafka's murmur2
//! partitioner) and [`Consumer`] (assigned partitions, pipelined long-poll
//! fetches, committed offsets, and membership in a consumer group: the
//! coordinator's assignments applied in `poll`, auto-commit, [`ConsumerEvent`]s,
//! a `Stream` of records). A shared [`Cluster`] caches metadata and
//! keeps one HTTP/2 channel per broker.
//!
//! Invariants: a partition's log holds its records in `send` order: with
//! idempotence (the default with acks=all) up to five requests per
//! partition are in flight, each batch numbered, and the leader refuses a
//! batch that skips one and answers a repeat with its first offsets, so
//! retries neither duplicate nor reorder; without, one request per
//! partition is in flight (a `ProduceMany` carrying several partitions
//! counts as the one request of each) and a retry after an ambiguous
//! failure may duplicate; a sealed batch's bytes change only when the
//! producer renumbers unsent batches under a new producer id or epoch; a
//! producer never buffers more than `buffer_memory` bytes of records; the
//! consumer returns each partition's records in offset order; a group
//! member consumes a partition only while the coordinator's latest answer
//! gives it, commits before it gives one up (with auto-commit), and
//! returns no record while its session may have ended.
//!
//! Produce and fetch calls are written and read by the client itself
//! (`records_call.rs`): byte for byte the messages tonic would encode, but
//! each batch of 64 KiB or more sent from the buffer it was sealed in, and
//! fetched records decoded as slices of the HTTP/2 frames they came in,
//! rather than copied.
//!
//! Never: allocate per record in the encoder or decoder (records are
//! encoded straight into their batch, and decoded records share the fetched
//! buffer); block a runtime thread.

mod admin;
mod cluster;
mod completion;
mod consumer;
mod error;
mod group_member;
mod partitioner;
mod producer;
mod record;
mod records_call;

pub use admin::{Admin, NewTopic, ResetOffsets};
pub use brook_proto::v1 as proto;
pub use brook_record::{Compression, ErrorCode, Offset};
pub use cluster::Cluster;
pub use completion::DeliveryFuture;
pub use consumer::{Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, Seek, TopicPartition};
pub use error::ClientError;
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{Acks, Producer, ProducerConfig};
pub use record::{ConsumerRecord, ProducerRecord, RecordMetadata};
