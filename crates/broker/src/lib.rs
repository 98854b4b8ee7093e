//! # brook-broker: the broker node
//!
//! Owns a broker's front end and wires the crates below it together. It
//! serves `brook.v1.Admin`, `Records`, `Groups` and `Metadata` and the
//! standard health and reflection services to clients on `listen`; the
//! internal services (Raft, proposal forwarding and heartbeats, replica
//! fetch) only on `internal_listen`, each call refused (UNAUTHENTICATED)
//! unless it carries the cluster secret, which every call this broker makes
//! to a peer carries. A single node serves no internal service.
//!
//! Where things come from: topics, their ids and assignments from the
//! metadata group (`brook-metadata`; a broker without peers is a group of
//! one voter, on the same path); the [`replica_manager::ReplicaManager`] opens a
//! `brook_replication::Replica` for each partition assigned here, under
//! `data_dir/topics/<topic>-<partition>-<topic id>/`. Replication itself
//! is `brook-replication`'s: this crate implements its traits
//! (`replica_network.rs`: the leader over gRPC, ISR changes through the
//! metadata group; the registry as `HostedReplicas`) and serves the
//! leader's side of replica fetches (`service/replication.rs`).
//!
//! The data path: a plain gRPC `Produce` call is decoded over the HTTP/2
//! frames it arrived in, without tonic joining them first, and a `Fetch`
//! answered with its records as they were read, without tonic's encode
//! copy (`fast_path.rs`, a layer in front of the routes;
//! anything else goes to tonic), and so is a follower's replica fetch on
//! the internal listener (the cluster secret checked first); all reach the
//! same handlers as every other call. The produce handler
//! (`service/records.rs`) looks the
//! partition up in the registry and calls `Replica::append_pieces`, which
//! hands the request's bytes to the log on the blocking pool (a
//! ProduceMany hands all its partitions' bytes to one blocking task); a
//! fetch reads whole batches below the high watermark (HW) and long-polls
//! on the HW's `watch` when there are fewer than `min_bytes`. An
//! idempotent producer's batches are checked by the log itself (the
//! producer state of `brook-storage`); a retry is answered with its first
//! offsets and counted, not appended. `InitProducerId` hands out ids from a
//! block the metadata group gave this broker (`producer_ids.rs`).
//!
//! Consumer groups: the controller is every group's coordinator
//! (`group_coordinator.rs`): it answers heartbeats from the applied state
//! when nothing changes and proposes when something does, expires
//! sessions (a new controller starts them afresh), and batches commits
//! into one metadata proposal at a time; `service/groups.rs` serves the
//! `Groups` API (other brokers answer NOT_COORDINATOR naming it).
//!
//! Incarnations: the data directory's identity (`data_dir.rs`:
//! `meta.properties` with the broker id, the cluster id and the
//! directory id; a directory of another broker id is refused at start)
//! and every start's new incarnation go into the broker's registration,
//! with the replicas it may have lost (their directories gone, or not
//! closed cleanly when the machine booted again since: `server.rs`,
//! `lost_replicas`); the metadata group fences the restart. Replica
//! fetches carry the broker epoch the registration got, and a leader
//! serves only the incarnation its metadata holds (`service/replication.rs`).
//!
//! Tasks: every task the node starts runs on one `TaskTracker` and is
//! awaited at shutdown (`server.rs`); connections on both listeners are
//! bounded (`connections.rs`: `max_connections`, a first-request deadline,
//! an idle timeout, 256 streams each, one memory budget for request
//! bodies, a short grace at shutdown). Stopping (SIGTERM) is Kafka's controlled shutdown:
//! the leaderships move to other in-sync replicas first, so producers are
//! redirected instead of waiting out a session. Every gRPC call is timed
//! (`metrics::RpcTimingLayer`); `/metrics` is served by axum.
//!
//! Invariants: a batch is stored exactly as the producer built it, but for
//! its base offset and leader epoch (and, on a topic whose
//! `compression.type` names a codec, its records area recompressed into
//! that codec, off the async workers, before the append); only a partition's leader (per the
//! cluster state, at its current epoch) appends or serves fetches, others
//! answer NOT_LEADER with the leader's id; an acknowledged append is in
//! the log (page cache, or on disk under the topic's flush policy);
//! consumers never see records at or above the HW; acks=all is answered
//! only while this broker still leads at the epoch it appended under (else
//! NOT_LEADER: another leader's HW says nothing about these records); a
//! follower proposed into the ISR bounds the HW from the proposal on; a
//! restarted cluster member leads nothing until its metadata has applied
//! its own registration (its state on disk may be long outdated), and that
//! registration has already moved what it led to other in-sync replicas.
//!
//! Never: block an async worker on file I/O (logs are touched only in
//! `spawn_blocking`; epoch lookups read a published copy); hold a lock
//! across an `.await`; answer a client with an internal error's debug text
//! (errors map to statuses in `error.rs`); serve an internal service on the
//! client port, or log the cluster secret (`config::Secret` hides it).

pub mod config;
pub mod connections;
pub mod data_dir;
pub mod error;
pub mod fast_path;
pub mod group_coordinator;
mod internal_auth;
pub mod kafka_core;
pub mod metrics;
pub mod producer_ids;
pub mod replica_manager;
pub mod replica_network;
pub mod server;
pub mod service;
pub mod topic_config;

pub use config::{BrokerConfig, Secret};
pub use error::BrokerError;
pub use server::{serve, ServeError};
