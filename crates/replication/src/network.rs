//! What a replica needs from outside, as small traits the broker
//! implements (the shape of openraft's `RaftNetwork`: this crate defines
//! the trait, the application implements it over its transport, nothing in
//! between):
//!
//! - [`LeaderClient`]: the leader a follower fetches from (replica fetch,
//!   and where an epoch ends on the leader's log);
//! - [`IsrProposer`]: the way a leader asks for an ISR change (through
//!   the controller);
//! - [`HostedReplicas`]: the replicas this broker hosts and whom each
//!   follows, and a watch that changes when that does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use brook_record::{BrokerId, LeaderEpoch, Offset, TopicId, TopicPartition};
use bytes::Bytes;
use tokio::sync::watch;

use crate::isr::IsrChangeOutcome;
use crate::replica::Replica;
use crate::truncation::LeaderEpochEnd;

/// One partition of a replica fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    pub partition: TopicPartition,
    pub topic_id: TopicId,
    /// The follower's LEO: it has every record below it.
    pub fetch_offset: Offset,
    /// The leader epoch the follower believes is current.
    pub leader_epoch: LeaderEpoch,
}

/// A follower's fetch of every partition it follows from one leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    pub follower: BrokerId,
    /// How long the leader may hold the fetch with nothing to send.
    pub max_wait: Duration,
    pub max_bytes_per_partition: u32,
    pub partitions: Vec<PartitionFetch>,
}

/// The leader's answer for one partition of a replica fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub partition: TopicPartition,
    pub outcome: Result<ReplicatedData, LeaderRefusal>,
}

/// Whole batches from the fetch offset, as the leader stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedData {
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

/// Why a leader refused one partition (NOT_LEADER, FENCED_LEADER_EPOCH,
/// UNKNOWN_TOPIC_ID, ...): the follower waits for its metadata to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRefusal {
    /// The Kafka error name.
    pub code_name: String,
    pub message: String,
    /// With OFFSET_OUT_OF_RANGE: the leader's log start offset (a follower
    /// below it restarts its log there).
    pub log_start_offset: Option<Offset>,
}

impl LeaderRefusal {
    /// The refusal's code, when this build knows its name.
    pub fn error_code(&self) -> Option<brook_record::ErrorCode> {
        brook_record::ErrorCode::from_name(&self.code_name)
    }
}

/// A question to the leader: where does `epoch` end on your log?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochEndQuery {
    pub partition: TopicPartition,
    pub topic_id: TopicId,
    /// The epoch asked about (the follower's latest).
    pub epoch: LeaderEpoch,
    /// The epoch the follower believes current: a leader at another
    /// epoch refuses, so a follower never truncates against a stale or
    /// newer leader.
    pub current_leader_epoch: LeaderEpoch,
}

/// A failed call to the leader (unreachable, refused as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// The leader a follower fetches from.
pub trait LeaderClient: Send + Sync + 'static {
    /// One replica fetch (a long poll).
    fn fetch(
        &self,
        request: ReplicaFetchRequest,
    ) -> impl Future<Output = Result<Vec<FetchedPartition>, NetworkError>> + Send;

    /// Where an epoch ends on the leader's log.
    fn epoch_end_offset(
        &self,
        query: EpochEndQuery,
    ) -> impl Future<Output = Result<LeaderEpochEnd, NetworkError>> + Send;
}

/// A leader's request to change a partition's ISR, valid only at the
/// epoch it leads in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub partition: TopicPartition,
    pub topic_id: TopicId,
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch (ISR version) the proposal was built on.
    pub partition_epoch: u32,
    pub isr: Vec<BrokerId>,
    /// An expansion's new member, with the epoch of the incarnation whose
    /// fetch showed it caught up (as the fetch carried it): the controller
    /// refuses the change if that broker has registered again since, so a
    /// fetch of a replaced process never brings its successor into the ISR
    /// (Kafka's KIP-903). `None` for a shrink.
    pub joining: Option<(BrokerId, u64)>,
}

/// The way a leader asks the controller for an ISR change.
pub trait IsrProposer: Send + Sync + 'static {
    /// Proposes `proposal`; `None` when no definite answer came (it may
    /// still commit).
    fn propose(&self, proposal: IsrProposal) -> impl Future<Output = Option<IsrChangeOutcome>> + Send;
}

/// The replicas this broker hosts, as its metadata assigns them.
pub trait HostedReplicas: Send + Sync + 'static {
    /// The hosted replicas `leader` leads and this broker follows, each
    /// with the leader epoch it follows at.
    fn followed_from(&self, leader: BrokerId) -> Vec<(Arc<Replica>, LeaderEpoch)>;

    /// Every hosted replica.
    fn hosted(&self) -> Vec<Arc<Replica>>;

    /// Changes whenever what is hosted or followed may have changed.
    fn watch_changes(&self) -> watch::Receiver<u64>;
}
