//! # brook-broker: the broker node
//!
//! Owns a broker's topics and partition replicas and serves them over
//! gRPC: `brook.v1.Admin`, `Records`, `Groups` and `Metadata`, the standard
//! health and reflection services, and in a cluster the internal metadata
//! services. Two modes: a single node keeps topics and committed offsets in
//! a local sled catalog; a cluster member (`peers` set) follows the
//! metadata group (`brook-metadata`) and hosts the partitions assigned to
//! it. Each hosted partition's log is under
//! `data_dir/topics/<topic>-<partition>/`. In a cluster, followers pull
//! from leaders (`follower.rs`, served by `service/replication.rs`), and the
//! high watermark follows the ISR (`partition.rs`, `brook-replication`).
//!
//! The data path: a produce handler looks the partition up in the
//! [`topics::TopicRegistry`] and calls [`partition::Partition::append`],
//! which hands the request's bytes to the log on the blocking pool (a
//! ProduceMany hands all its partitions' bytes to one blocking task); a
//! fetch reads whole batches below the high watermark (HW) and long-polls
//! on the HW's `watch` when there are fewer than `min_bytes`. `raw.rs` is
//! a measurement prototype outside gRPC (off unless `raw_listen`).
//!
//! Invariants: a batch is stored exactly as the producer built it, but for
//! its base offset and leader epoch; only a partition's leader (per the
//! cluster state, at its current epoch) appends or serves fetches, others
//! answer NOT_LEADER with the leader's id; an acknowledged append is in
//! the log (page cache, or on disk under the topic's flush policy);
//! consumers never see records at or above the HW; acks=all is answered
//! only while this broker still leads at the epoch it appended under (else
//! NOT_LEADER: another leader's HW says nothing about these records); a
//! follower proposed into the ISR bounds the HW from the proposal on; a
//! restarted cluster member leads nothing until its metadata has applied
//! its own registration (its state on disk may be long outdated).
//!
//! Never: block an async worker on file I/O (logs are touched only in
//! `spawn_blocking`); hold a lock across an `.await`; answer a client with
//! an internal error's debug text (errors map to statuses in `error.rs`).

pub mod config;
pub mod error;
pub mod metrics;
pub mod replica_network;
pub mod server;
pub mod service;
pub mod topic_config;
pub mod topics;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::{serve, ServeError};
