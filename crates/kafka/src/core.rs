//! What the Kafka front end asks of the broker: the [`Core`] trait. The
//! broker implements it over the same steps its gRPC services take
//! (admission, append, the acks wait, reads below the high watermark,
//! topic proposals), so there is one produce path and one fetch path
//! whichever protocol a request came in on.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use brook_record::{BrokerId, ErrorCode, TopicId};
use bytes::Bytes;

/// A refusal, as both front ends name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CoreError {
    pub code: ErrorCode,
    /// For a person: what was refused and why.
    pub message: String,
}

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CoreError {
        CoreError { code, message: message.into() }
    }
}

/// A broker as Kafka clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: BrokerId,
    /// The advertised Kafka listener's host and port.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: u32,
    pub leader: Option<BrokerId>,
    pub leader_epoch: u32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<PartitionView>,
}

/// The cluster as this broker's metadata sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    pub controller: Option<BrokerId>,
    /// Live brokers with a Kafka listener; never empty (this broker at
    /// least).
    pub brokers: Vec<BrokerView>,
}

/// Kafka's `acks`: 0, 1 or -1 (all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

/// One partition's records of a produce request, as they arrived.
#[derive(Debug, Clone)]
pub struct PartitionRecords {
    pub topic: String,
    pub partition: u32,
    pub records: Bytes,
}

/// The answer for one partition of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// An open file that part of a response is sent from (a segment file),
/// kept open for as long as the response needs it.
pub trait FileSource: Send + Sync + std::fmt::Debug + 'static {
    fn file(&self) -> &std::fs::File;
}

/// A run of whole batches in a file.
#[derive(Debug, Clone)]
pub struct FileChunk {
    pub source: std::sync::Arc<dyn FileSource>,
    pub position: u64,
    pub length: u64,
}

/// Whole batches, as stored: in memory, or left in the segment files for
/// `sendfile`.
#[derive(Debug, Clone)]
pub enum Records {
    Bytes(Bytes),
    Files(Vec<FileChunk>),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Bytes(bytes) => bytes.len(),
            Records::Files(chunks) => chunks.iter().map(|chunk| chunk.length as usize).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Records {
    fn default() -> Records {
        Records::Bytes(Bytes::new())
    }
}

/// One partition's read, below the high watermark.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Whole batches, as stored.
    pub records: Records,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// Which offset a ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// -1: the high watermark (the next offset a consumer would read).
    Latest,
    /// -2: the log start.
    Earliest,
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// `None`: the broker's default (Kafka's -1).
    pub partitions: Option<u32>,
    pub replication_factor: Option<u32>,
    pub configs: BTreeMap<String, String>,
}

/// The broker behind the Kafka listener. Every method answers for this
/// broker (a partition it does not lead is `NOT_LEADER_OR_FOLLOWER`, as
/// on the gRPC port).
pub trait Core: Send + Sync + 'static {
    fn broker_id(&self) -> BrokerId;

    /// The brokers and the controller.
    fn cluster(&self) -> ClusterView;

    /// Every topic, or the named ones (an unknown name is left out).
    fn topics(&self, names: Option<&[String]>) -> Vec<TopicView>;

    /// Appends each partition's records through the produce path (the
    /// same checks, idempotence and acks wait as gRPC's ProduceMany), and
    /// answers each partition on its own, in the order given.
    fn produce(
        &self,
        acks: Acks,
        timeout: Duration,
        partitions: Vec<PartitionRecords>,
    ) -> impl Future<Output = Vec<Result<Produced, CoreError>>> + Send;

    /// Reads whole batches from `offset`, below the high watermark, up to
    /// `max_bytes` (the first batch whole even if larger). Does not wait.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        current_leader_epoch: Option<u32>,
    ) -> impl Future<Output = Result<Fetched, CoreError>> + Send;

    /// Resolves when the high watermark of any of `partitions` moves, or
    /// at `deadline`, or when the broker stops.
    fn wait_for_data(
        &self,
        partitions: &[(String, u32)],
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = ()> + Send;

    /// An offset, and the timestamp of its record for a time query (-1
    /// otherwise; offset -1 when no record is that late).
    fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
        current_leader_epoch: Option<u32>,
    ) -> impl Future<Output = Result<(i64, i64), CoreError>> + Send;

    /// The end offset of `leader_epoch` in the leader's log (KIP-320): the
    /// largest epoch at or below it, and where the next epoch starts.
    fn epoch_end(
        &self,
        topic: &str,
        partition: u32,
        leader_epoch: u32,
        current_leader_epoch: Option<u32>,
    ) -> impl Future<Output = Result<(i32, i64), CoreError>> + Send;

    /// A producer id and epoch; a key (Kafka's transactional id) keeps its
    /// id across restarts and fences the previous epoch.
    fn init_producer_id(&self, key: Option<String>) -> impl Future<Output = Result<(i64, i16), CoreError>> + Send;

    /// Creates a topic through the metadata group; `validate_only` checks
    /// it without creating it.
    fn create_topic(
        &self,
        topic: NewTopic,
        validate_only: bool,
    ) -> impl Future<Output = Result<TopicView, CoreError>> + Send;

    fn delete_topic(&self, name: &str) -> impl Future<Output = Result<(), CoreError>> + Send;

    /// Grows a topic to `partitions` partitions (they only grow).
    fn add_partitions(&self, name: &str, partitions: u32) -> impl Future<Output = Result<(), CoreError>> + Send;

    /// A topic's effective configs, by Kafka's names.
    fn topic_configs(&self, name: &str) -> Result<BTreeMap<String, String>, CoreError>;

    /// Sets and removes topic configs (a removed one takes its default)
    /// through the metadata group, checked as the gRPC Admin service
    /// checks them.
    fn alter_topic_configs(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> impl Future<Output = Result<(), CoreError>> + Send;

    /// Room for a request of `bytes` in the broker's request memory
    /// budget (shared with the gRPC port), held until the permit drops.
    fn reserve_request_memory(
        &self,
        bytes: usize,
    ) -> impl Future<Output = Result<tokio::sync::OwnedSemaphorePermit, CoreError>> + Send;
}
