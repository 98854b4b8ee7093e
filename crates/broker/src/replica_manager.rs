//! The replica manager (Kafka's `ReplicaManager`): the topics this broker
//! knows and the partition replicas it hosts. Handlers look partitions up
//! here; nothing else holds them. Reconciliation with the metadata is in
//! `replica_manager/reconcile.rs`.
//!
//! Topics come from one place: the metadata group's replicated state (a
//! single broker is a group of one voter, on the same path). A reconciler
//! applies every new state here ([`ReplicaManager::reconcile`]): it opens the
//! replicas of partitions assigned to this broker, closes and deletes those
//! no longer assigned, records each partition's leader and epoch, and, once
//! this broker's metadata has caught up, removes partition directories of
//! topic ids the metadata no longer holds. Admin changes are proposed to
//! the group and take effect here when the reconciler sees them.
//!
//! Each hosted partition lives in `data_dir/topics/<name>-<partition>-<topic
//! id>/`. The topic id decides (a topic deleted and created again under the
//! same name gets a new id, so a new directory, and never meets the old
//! one's records); the name is there for people, cut to
//! [`DIR_NAME_PREFIX_CHARS`] so the directory name fits any filesystem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use brook_metadata::{
    assign_replicas, ClusterState, Command, CommandError, CommandV1, CommittedOffset, MetadataError, MetadataNode,
    PartitionRecord, TopicRecord,
};
use brook_record::{BrokerId, LeaderEpoch, TopicId, TopicPartition};
use brook_replication::{HostedReplicas, Replica, Role};
use tokio::sync::watch;

use crate::error::BrokerError;
use crate::topic_config::{validate_topic_name, TopicConfig};

mod reconcile;

/// The most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1000;
/// How long an admin call waits to see its own change applied here.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// The most characters of a topic's name a partition directory carries.
pub const DIR_NAME_PREFIX_CHARS: usize = 200;

/// Who hosts and leads a partition, as the cluster decided.
/// How long a broker that failed to write its data directory sends no
/// heartbeat (and so leads nothing); it is alive again after.
const STORAGE_FAILURE_FENCE: std::time::Duration = std::time::Duration::from_secs(10);
/// A storage failure this recent still fences the broker (the checkpoint
/// pass looks every 500 ms).
const STORAGE_FAILURE_RECENT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<BrokerId>,
    /// `None` while no in-sync replica is alive.
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
    /// The version of `leader` and `isr` (Kafka's partition epoch).
    pub partition_epoch: u32,
    /// Replicas on brokers the metadata shows not alive.
    pub unavailable: Vec<BrokerId>,
    /// The last in-sync replica that came back without its data, while
    /// that keeps the partition offline.
    pub lost_by: Option<BrokerId>,
}

impl Assignment {
    /// Why the partition has no leader; `None` while it has one.
    pub fn offline_reason(&self) -> Option<String> {
        if self.leader.is_some() {
            return None;
        }
        Some(match self.lost_by {
            Some(broker) => format!(
                "its last in-sync replica, broker {broker}, came back without its data (a new disk, lost files, or \
                 a power loss); only an unclean election (unclean.leader.election.enable=true) gives it a leader, \
                 losing what the elected replica lacks"
            ),
            None => format!("no in-sync replica {:?} is alive", self.isr.iter().map(|id| id.0).collect::<Vec<_>>()),
        })
    }
}

impl From<&PartitionRecord> for Assignment {
    fn from(record: &PartitionRecord) -> Assignment {
        Assignment {
            replicas: record.replicas.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            isr: record.isr.clone(),
            partition_epoch: record.partition_epoch,
            // Every replica, narrowed to those not alive by the caller,
            // which knows the brokers (`reconcile_topic`).
            unavailable: record.replicas.clone(),
            lost_by: record.lost_by,
        }
    }
}

#[derive(Debug)]
pub struct PartitionSlot {
    pub id: u32,
    pub assignment: Assignment,
    /// The replica, when this broker is one of the replicas.
    pub log: Option<Arc<Replica>>,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: TopicId,
    pub replication_factor: u32,
    /// Effective configs, Kafka names.
    pub configs: BTreeMap<String, String>,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionSlot>,
}

impl Topic {
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn slot(&self, partition: u32) -> Result<&PartitionSlot, BrokerError> {
        self.partitions.get(partition as usize).ok_or_else(|| BrokerError::PartitionNotFound {
            topic: self.name.clone(),
            partition,
            partitions: self.partition_count(),
        })
    }

    /// The partition's replica, if `broker_id` leads it; otherwise
    /// NOT_LEADER naming the leader, so the client re-routes.
    pub fn led_partition(&self, partition: u32, broker_id: BrokerId) -> Result<Arc<Replica>, BrokerError> {
        let slot = self.slot(partition)?;
        match (&slot.log, slot.assignment.leader) {
            (Some(log), Some(leader)) if leader == broker_id => Ok(Arc::clone(log)),
            (_, leader) => Err(BrokerError::NotLeader {
                topic: self.name.clone(),
                partition,
                broker_id,
                leader,
                leader_epoch: slot.assignment.leader_epoch,
            }),
        }
    }

    pub fn hosted(&self) -> impl Iterator<Item = (&PartitionSlot, &Arc<Replica>)> {
        self.partitions.iter().filter_map(|slot| slot.log.as_ref().map(|log| (slot, log)))
    }
}

#[derive(Debug)]
pub struct ReplicaManager {
    topics_dir: PathBuf,
    broker_id: BrokerId,
    metadata: MetadataNode,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped after every change to `topics`, so admin calls can wait to
    /// see their own change.
    version: watch::Sender<u64>,
    /// Bumped on every append to a hosted partition: replica fetches wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// The partitions assigned here when the directory was last swept for
    /// left-overs (`None`: not swept since start): sweeping again is only
    /// needed when that set changes.
    swept_for: Mutex<Option<BTreeSet<(TopicId, u32)>>>,
}

/// A partition's directory: `<name prefix>-<partition>-<topic id>`.
pub fn partition_dir(topics_dir: &Path, name: &str, topic_id: TopicId, partition: u32) -> PathBuf {
    let prefix: String = name.chars().take(DIR_NAME_PREFIX_CHARS).collect();
    topics_dir.join(format!("{prefix}-{partition}-{topic_id}"))
}

/// The topic id and partition a directory name says it holds; `None` for
/// anything else (the name part is not needed: the id decides).
fn parse_partition_dir(file_name: &str) -> Option<(TopicId, u32)> {
    let mut parts = file_name.rsplitn(3, '-');
    let topic_id = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    parts.next().filter(|name| !name.is_empty())?;
    Some((topic_id, partition))
}

/// Where the partition directories are, in the data directory.
pub const TOPICS_DIR: &str = "topics";

fn create_topics_dir(data_dir: &Path) -> Result<PathBuf, BrokerError> {
    let topics_dir = data_dir.join(TOPICS_DIR);
    std::fs::create_dir_all(&topics_dir).map_err(|error| BrokerError::DataDir {
        path: topics_dir.clone(),
        reason: format!("cannot create it: {error}"),
    })?;
    Ok(topics_dir)
}

fn close_and_remove(log: &Replica) {
    if let Err(error) = log.close() {
        tracing::warn!(topic = log.topic(), partition = log.partition(), %error, "closing a removed partition failed");
    }
    remove_dir(log.dir());
}

fn remove_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "could not remove a partition's files");
    }
}

impl From<MetadataError> for BrokerError {
    fn from(error: MetadataError) -> BrokerError {
        match error {
            MetadataError::CommandTooLarge { bytes, limit } => {
                BrokerError::TooLarge { what: "the metadata command this request makes".into(), bytes, limit }
            }
            error => BrokerError::NoController(error.to_string()),
        }
    }
}

impl From<CommandError> for BrokerError {
    fn from(error: CommandError) -> BrokerError {
        match error {
            CommandError::TopicAlreadyExists { topic } => BrokerError::TopicAlreadyExists { topic },
            CommandError::UnknownTopic { topic } => BrokerError::UnknownTopic { topic },
            CommandError::UnknownPartition { topic, partition, partitions } => {
                BrokerError::PartitionNotFound { topic, partition, partitions }
            }
            CommandError::InvalidReplicationFactor { requested, alive } => {
                BrokerError::InvalidReplicationFactor { requested, brokers: alive }
            }
            CommandError::InvalidTopicName { name, reason } => BrokerError::InvalidTopicName { name, reason },
            group @ (CommandError::UnknownMemberId { .. }
            | CommandError::FencedMemberEpoch { .. }
            | CommandError::StaleMemberEpoch { .. }
            | CommandError::GroupNotEmpty { .. }
            | CommandError::GroupMaxSizeReached { .. }
            | CommandError::UnknownGroup { .. }
            | CommandError::InvalidGroupRequest { .. }) => BrokerError::Group(group),
            other => BrokerError::InvalidRequest(other.to_string()),
        }
    }
}

impl ReplicaManager {
    /// Topics follow the metadata group; call `reconcile` with each new
    /// state. Blocking (opens the logs the current state assigns here).
    pub fn open(data_dir: &Path, metadata: MetadataNode, broker_id: BrokerId) -> Result<ReplicaManager, BrokerError> {
        let registry = ReplicaManager {
            topics_dir: create_topics_dir(data_dir)?,
            broker_id,
            metadata: metadata.clone(),
            topics: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
            appended: Arc::new(watch::channel(0).0),
            swept_for: Mutex::new(None),
        };
        let state = metadata.state().borrow().clone();
        registry.reconcile(&state);
        Ok(registry)
    }

    pub fn broker_id(&self) -> BrokerId {
        self.broker_id
    }

    pub fn metadata(&self) -> &MetadataNode {
        &self.metadata
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn replace(&self, topics: BTreeMap<String, Arc<Topic>>) {
        *self.topics.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = topics;
        self.version.send_modify(|version| *version += 1);
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.read().values().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.read().get(name).cloned().ok_or_else(|| BrokerError::UnknownTopic { topic: name.to_string() })
    }

    /// The shared first step of every data request: the partition, if this
    /// broker leads it.
    pub fn partition(&self, name: &str, partition: u32) -> Result<Arc<Replica>, BrokerError> {
        self.topic(name)?.led_partition(partition, self.broker_id)
    }

    /// Waits (bounded) until `done` holds for the topics here.
    async fn wait_applied(&self, done: impl Fn(&BTreeMap<String, Arc<Topic>>) -> bool) -> Result<(), BrokerError> {
        let mut version = self.version.subscribe();
        let waited = tokio::time::timeout(APPLY_WAIT, async {
            while !done(&self.read()) {
                if version.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.map_err(|_| {
            BrokerError::NoController(format!("the change committed but was not applied here within {APPLY_WAIT:?}"))
        })
    }

    /// Waits (bounded) until this broker's metadata is current: decisions
    /// made on an older state (which brokers are alive, which topics
    /// exist) would be made on a past cluster.
    async fn wait_caught_up(&self) -> Result<(), BrokerError> {
        if tokio::time::timeout(APPLY_WAIT, self.metadata.wait_caught_up()).await.is_ok() {
            return Ok(());
        }
        Err(BrokerError::NoController(format!(
            "this broker's metadata did not catch up with the group within {APPLY_WAIT:?}"
        )))
    }

    /// Validates and creates a topic, with a fresh topic id.
    pub async fn create(
        self: &Arc<Self>,
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions { partitions, max: MAX_PARTITIONS });
        }
        let config = TopicConfig::from_map(&configs)?;
        self.wait_caught_up().await?;
        if self.read().contains_key(&name) {
            return Err(BrokerError::TopicAlreadyExists { topic: name });
        }
        let alive = self.metadata.state().borrow().alive_brokers();
        // Spread leaders of different topics over the brokers too.
        let start = name.bytes().fold(0usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as usize));
        let assignments = assign_replicas(&alive, partitions, replication_factor, start)?;
        let topic_id = TopicId::random();
        let command = CommandV1::CreateTopic {
            name: name.clone(),
            topic_id,
            replication_factor,
            configs: config.to_map(),
            assignments,
        };
        self.metadata.propose(Command::V1(command)).await??;
        self.wait_applied(|topics| topics.get(&name).is_some_and(|topic| topic.id == topic_id)).await?;
        tracing::info!(topic = %name, %topic_id, partitions, replication_factor, "created topic");
        self.topic(&name)
    }

    /// Changes a topic's configs: `set` ones set, `delete` ones back to
    /// their defaults; the result is validated as a whole before it is
    /// proposed. Every replica applies it when it applies the change.
    pub async fn alter_config(
        self: &Arc<Self>,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let topic = self.topic(name)?;
        let mut configs = topic.configs.clone();
        for key in &delete {
            configs.remove(key);
        }
        configs.extend(set);
        let config = TopicConfig::from_map(&configs)?;
        let configs = config.to_map();
        let command =
            CommandV1::AlterTopicConfig { name: name.to_string(), topic_id: topic.id, configs: configs.clone() };
        self.metadata.propose(Command::V1(command)).await??;
        self.wait_applied(|topics| topics.get(name).is_some_and(|topic| topic.configs == configs)).await?;
        tracing::info!(topic = %name, ?configs, "topic configs changed");
        self.topic(name)
    }

    /// Grows a topic to `to` partitions (Kafka's CreatePartitions: only up).
    pub async fn add_partitions(self: &Arc<Self>, name: &str, to: u32) -> Result<Arc<Topic>, BrokerError> {
        let topic = self.topic(name)?;
        let current = topic.partition_count();
        if to <= current {
            return Err(BrokerError::PartitionsOnlyGrow { topic: name.to_string(), current, requested: to });
        }
        if to > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions { partitions: to, max: MAX_PARTITIONS });
        }
        let alive = self.metadata.state().borrow().alive_brokers();
        let start = name.bytes().fold(current as usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as usize));
        let assignments = assign_replicas(&alive, to - current, topic.replication_factor, start)?;
        let command = CommandV1::CreatePartitions { name: name.to_string(), topic_id: topic.id, current, assignments };
        self.metadata.propose(Command::V1(command)).await??;
        self.wait_applied(|topics| topics.get(name).is_some_and(|topic| topic.partition_count() == to)).await?;
        tracing::info!(topic = %name, from = current, to, "topic grew");
        self.topic(name)
    }

    /// Deletes a topic: every replica closes its log and removes its files.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        self.metadata.propose(Command::V1(CommandV1::DeleteTopic { name: name.to_string() })).await??;
        self.wait_applied(|topics| !topics.contains_key(name)).await
    }

    /// The group's committed offsets: of `wanted` (absent ones as none), or
    /// all it has when `wanted` is empty.
    pub fn committed_offsets(
        &self,
        group: &str,
        wanted: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let state = self.metadata.state().borrow().clone();
        let committed = state.offsets.get(group);
        if wanted.is_empty() {
            return committed
                .into_iter()
                .flat_map(|topics| topics.iter())
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(move |(partition, offset)| {
                        (TopicPartition::new(topic.as_str(), *partition), Some(offset.clone()))
                    })
                })
                .collect();
        }
        wanted
            .into_iter()
            .map(|wanted| {
                let found = committed.and_then(|topics| topics.get(&*wanted.topic)?.get(&wanted.partition)).cloned();
                (wanted, found)
            })
            .collect()
    }

    /// Something to wait on for appends to any hosted partition.
    pub fn watch_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Retention and time-based flushes on every hosted partition. Blocking.
    pub fn maintain(&self, now_ms: i64) {
        for partition in HostedReplicas::hosted(self) {
            if let Err(error) = partition.maintain(now_ms) {
                tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "log maintenance failed");
            }
        }
    }

    /// The idempotent producers that appended to any hosted replica at or
    /// after `since_ms` (this broker's clock). Blocking.
    pub fn producers_appended_since(&self, since_ms: i64) -> BTreeSet<i64> {
        let mut ids = BTreeSet::new();
        for partition in HostedReplicas::hosted(self) {
            match partition.producers_appended_since(since_ms) {
                Ok(found) => ids.extend(found),
                Err(error) => {
                    tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "could not list recent producers")
                }
            }
        }
        ids
    }

    /// Checkpoints every hosted partition's HW that moved, and fsyncs
    /// segments rolled since the last pass (moving the recovery point).
    /// Blocking.
    pub fn checkpoint_high_watermarks(&self) {
        let recent = std::time::Instant::now().checked_sub(STORAGE_FAILURE_RECENT);
        let failed = HostedReplicas::hosted(self)
            .into_iter()
            .find(|partition| partition.storage_failed_at().is_some_and(|at| recent.is_none_or(|recent| at >= recent)));
        if let Some(partition) = failed {
            // A follower's failed replicated append reaches no client: this
            // pass is where it counts.
            self.fence_after_storage_failure(&partition.topic_partition().to_string());
        }
        for partition in HostedReplicas::hosted(self) {
            if let Err(error) = partition.checkpoint_high_watermark() {
                tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "HW checkpoint failed");
            }
            if let Err(error) = partition.flush_rolled_segments() {
                tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "flushing a rolled segment failed");
            }
        }
    }

    /// This broker cannot write its data directory (a full or failing
    /// disk): it gives up its leaderships for a while, by withholding its
    /// heartbeats (see `MetadataNode::withhold_heartbeats_until`), so
    /// producers go on at other in-sync replicas, and the replicas here
    /// leave the ISRs at once rather than after the lag limit.
    pub fn fence_after_storage_failure(&self, partition: &str) {
        tracing::error!(%partition, "cannot write the data directory: giving up this broker's leaderships for {STORAGE_FAILURE_FENCE:?}");
        self.metadata.withhold_heartbeats_until(std::time::Instant::now() + STORAGE_FAILURE_FENCE);
    }

    /// Closes every log cleanly. Blocking.
    pub fn close(&self) {
        for partition in HostedReplicas::hosted(self) {
            if let Err(error) = partition.close() {
                tracing::error!(topic = partition.topic(), partition = partition.partition(), %error, "closing log failed");
            }
        }
    }
}

/// What the replica fetchers and the ISR duty of `brook-replication` need
/// of this broker.
impl HostedReplicas for ReplicaManager {
    fn followed_from(&self, leader: BrokerId) -> Vec<(Arc<Replica>, LeaderEpoch)> {
        if leader == self.broker_id {
            return Vec::new();
        }
        self.list()
            .iter()
            .flat_map(|topic| {
                topic
                    .hosted()
                    .filter(|(slot, _)| slot.assignment.leader == Some(leader))
                    .map(|(slot, replica)| (Arc::clone(replica), slot.assignment.leader_epoch))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn hosted(&self) -> Vec<Arc<Replica>> {
        self.list()
            .iter()
            .flat_map(|topic| topic.hosted().map(|(_, log)| Arc::clone(log)).collect::<Vec<_>>())
            .collect()
    }

    fn watch_changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_directory_names_its_topic_id_and_partition() {
        let id = TopicId::random();
        let dir = partition_dir(Path::new("/data/topics"), "orders-eu.v2", id, 17);
        let name = dir.file_name().and_then(|name| name.to_str()).expect("a name");
        assert_eq!(name, format!("orders-eu.v2-17-{id}"));
        assert_eq!(parse_partition_dir(name), Some((id, 17)));
        assert_eq!(parse_partition_dir("orders-0"), None, "no id: not one of ours");
        assert_eq!(parse_partition_dir(&format!("-3-{id}")), None);
        let long = "x".repeat(249);
        let dir = partition_dir(Path::new("/d"), &long, id, 999);
        let name = dir.file_name().and_then(|name| name.to_str()).expect("a name");
        assert!(name.len() <= 255, "fits a filesystem's name limit: {}", name.len());
        assert_eq!(parse_partition_dir(name), Some((id, 999)));
    }
}
