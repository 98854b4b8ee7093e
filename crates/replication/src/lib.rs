//! # brook-replication: the partition replica
//!
//! Owns the one concept that decides whether an acknowledged record
//! survives: a partition replica ([`Replica`]) on a broker. It holds the
//! replica's log (a `brook-storage` `PartitionLog`), its [`Role`] (leader
//! or follower, at which [`LeaderEpoch`]), the high watermark, the leader's
//! view of its followers' progress, the ISR with its in-flight change as a
//! type ([`IsrState`], Kafka's `PendingExpandIsr` / `PendingShrinkIsr` and
//! maximal ISR), acks=all waits, and the follower fetch loop
//! ([`run_fetcher`]) with its epoch-based truncation.
//!
//! Terms: LEO (log end offset) is the next offset a replica will write;
//! the HW (high watermark) is the offset below which every ISR (in-sync
//! replica) member has the records; consumers see only records below it,
//! and acks=all answers once it passes the batch.
//!
//! The outside is reached through small traits the broker implements
//! (`network.rs`): [`LeaderClient`] (the leader a follower fetches from),
//! [`IsrProposer`] (the controller a leader asks for ISR changes) and
//! [`HostedReplicas`] (which replicas this broker hosts and whom each
//! follows). The crate depends on `brook-record` and `brook-storage` and
//! on no transport: its tests drive leaders and followers with in-memory
//! implementations of those traits.
//!
//! Threads: file I/O of a replica runs on tokio's blocking pool
//! (`spawn_blocking`), never on an async worker; no lock is held across an
//! `.await`. The one exception is [`Replica::with_io_on_caller`], for the
//! seeded simulation (`src/simulation.rs`, a test module), which drives
//! replicas, [`fetch_round`] and the controller's state machine from one
//! thread on tokio's paused clock; follower progress is measured on
//! tokio's clock so that the simulation's time is the replica's.
//!
//! Invariants: the HW never exceeds the leader's LEO, never moves
//! backwards on a leader, and never passes the LEO of a member of the
//! maximal ISR (a follower being added counts from its proposal until the
//! metadata's partition epoch passes the proposal's, one being removed
//! until its removal is seen); a replica's epoch never decreases; a
//! replica appends a client batch only while it leads, stamped with that
//! leadership's epoch, under the lock its role changes take; acks=all is
//! answered only while the replica still leads at the epoch it appended
//! under and the ISR still has min.insync.replicas members; a follower
//! keeps no record of an epoch the leader never saw (`truncation_step`);
//! a leader serves a follower only at its own epoch and topic id, and a
//! consumer that names an epoch (KIP-320) only at that epoch; ISR
//! proposals name the partition epoch they were built on, and an
//! expansion the epoch of the incarnation whose fetch showed the follower
//! caught up (the transport checks each fetch's incarnation against the
//! metadata; the controller refuses an expansion of one that registered
//! again since); retention never deletes at or above the HW.
//!
//! Idempotent producers' sequences are checked by the log's append (see
//! `brook-storage`): a leader's refusal comes back as
//! [`ReplicaError::Producer`], a retry as an `AppendInfo` marked
//! `duplicate` with the offsets of the first append, which acks=all then
//! waits for like any other.
//!
//! Never: know about gRPC, openraft or the metadata group; re-encode a
//! batch (followers append the leader's bytes as they are).

mod error;
mod follower;
mod high_watermark;
#[cfg(test)]
mod in_memory_tests;
mod isr;
mod isr_changes;
mod network;
mod replica;
mod role;
#[cfg(test)]
mod simulation;
mod truncation;

pub use error::ReplicaError;
pub use follower::{fetch_round, run_fetcher, FetchRound};
pub use high_watermark::LeaderProgress;
pub use isr::{caught_up, IsrChangeOutcome, IsrState, PendingIsrChange};
pub use isr_changes::{propose_expansion, shrink_lagging_isrs};
pub use network::{
    EpochEndQuery, FetchedPartition, HostedReplicas, IsrProposal, IsrProposer, LeaderClient, LeaderRefusal,
    NetworkError, PartitionFetch, ReplicaFetchRequest, ReplicatedData,
};
pub use replica::{FetchedRanges, FetchedRecords, Replica};
pub use role::Role;
pub use truncation::{truncation_point, truncation_step, LeaderEpochEnd, TruncationStep};

pub use brook_record::{BrokerId, LeaderEpoch, Offset, TopicId, TopicPartition};
