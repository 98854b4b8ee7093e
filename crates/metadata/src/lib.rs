//! # brook-metadata: the cluster's metadata group
//!
//! Owns what the brokers of a cluster agree on: brokers, topics (each with
//! its topic id, given at creation and never reused), replica
//! assignments, partition leaders, leader epochs, ISRs, consumer groups
//! and their committed offsets, and the producer ids handed out (blocks of
//! [`PRODUCER_ID_BLOCK`] per broker; keyed producers' id and epoch)
//! ([`ClusterState`]), changed only by committed
//! [`Command`]s of one openraft group whose log, vote and state machine
//! live in sled. [`MetadataNode`] is a broker's member: it forms the group
//! from the peer list (a broker without peers is a group of one voter, on
//! the same path), carries Raft RPCs over `brook.internal.v1` to each
//! peer at the address this broker's own peer list names (the broker's
//! internal listener, or a proxy), with the [`ClusterSecret`] on every
//! call, forwards proposals to the controller (the Raft leader), and runs
//! the controller's liveness duty ([`liveness_changes`]; time the
//! controller itself did not run is no broker's silence; a broker that
//! announced a controlled shutdown stays down, whatever heartbeat was
//! still on its way, until it registers again).
//!
//! Incarnations (`incarnation.rs`: [`Incarnation`], [`BrokerEpoch`],
//! [`DirectoryId`], [`ClusterId`]): every start of a broker registers a new
//! incarnation, and applying it is a restart (KIP-903): the broker leaves
//! every ISR it is not the last member of and what it led moves to another
//! in-sync replica at the next epoch, before it may lead again; the last
//! ISR member leads again at a new epoch, unless it registered without the
//! data (a new directory id, or the partition named lost): then the
//! partition is offline (`PartitionRecord::lost_by`) until an unclean
//! election. Heartbeats and ISR expansions name the broker epoch and are
//! refused from an older incarnation. The first registration names the
//! cluster; a directory of another cluster is refused.
//!
//! Invariants: `ClusterState::apply` is deterministic; a command is applied
//! exactly once, in log order, on every member; leader epochs never
//! decrease; a partition's leader is always in its ISR; only a live broker
//! joins an ISR, as the incarnation the leader saw; an empty ISR only
//! while a partition is offline for lost data; broker epochs only grow; a topic name that `apply` accepts is a legal one however
//! the command reached the log (`brook_record::check_topic_name`); no
//! producer id is handed out twice (blocks never overlap, a keyed
//! producer's epoch only grows). Each published state carries the log index it was applied
//! at (`applied_index`), and `propose_indexed` tells the index a command
//! committed at, so a broker can tell whether its copy already reflects a
//! change (`wait_applied`), and knows when its state is current after a
//! restart (`caught_up`).
//!
//! Consumer groups ([`consumer_group`]): members with their epochs,
//! subscriptions and assignments, the target assignment, and committed
//! offsets, changed only by committed commands (`GroupHeartbeat`,
//! `RemoveGroupMembers`, `CommitGroupOffsets`, `DeleteGroup`), so a group
//! survives its coordinator. [`group_assignment`] holds the server-side
//! assignors (uniform and range) and KIP-848's incremental reconcile step
//! as pure functions of the members and the topics, so every broker
//! computes the same target. Invariant: a partition is never assigned to
//! a member while another member owns it (assigned, or revoking until it
//! confirms); member and group epochs never decrease.
//!
//! Size and growth: no command over [`MAX_COMMAND_BYTES`] is proposed
//! (the broker bounds requests below it at admission); Raft messages are
//! postcard-encoded, bounded (16 MiB; appends split above 4 MiB) and
//! snapshots sent in 1 MiB chunks (`network.rs`), so no entry or state is
//! too large to replicate. Empty groups expire (`ExpireGroups`, the time
//! carried in the command), and so do producer keys unused for their
//! expiration (`ExpireProducerKeys`; brokers report keys whose ids
//! appended with `ProducerKeysActive`); the maps that grow with clients are persistent
//! (`imbl`), so publishing the state after a command costs what it changed.
//!
//! Never: apply a command that was not committed; depend on the clock or
//! on I/O inside `apply`; know about partition logs (brokers react to the
//! state, this crate does not reach up into them).

mod assignment;
mod cluster_state;
mod command;
pub mod consumer_group;
pub mod group_assignment;
mod incarnation;
mod liveness;
mod log_store;
mod network;
mod node;
mod raft_service;
mod raft_types;
mod state_machine;
pub mod topic_keys;

pub use assignment::assign_replicas;
pub use cluster_state::{
    BrokerRecord, ClusterState, CommittedOffset, PartitionRecord, ProducerIds, TopicRecord, MAX_PRODUCER_KEY_BYTES,
    PRODUCER_ID_BLOCK, UNCLEAN_ELECTION,
};
pub use command::{
    BrokerId, Command, CommandError, CommandResult, CommandV1, GroupCommit, LeaderChange, OffsetCommit, Outcome,
    MAX_COMMAND_BYTES,
};
pub use consumer_group::{Assignor, Committer, ConsumerGroup, GroupHeartbeat, GroupMember};
pub use incarnation::{BrokerEpoch, ClusterId, DirectoryId, Incarnation};
pub use liveness::liveness_changes;
pub use log_store::LogStore;
pub use network::{ClusterSecret, GrpcNetwork};
pub use node::{BrokerRegistration, MetadataConfig, MetadataError, MetadataNode};
pub use raft_types::{NodeId, Raft, TypeConfig};
pub use state_machine::StateMachineStore;
