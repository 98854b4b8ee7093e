//! The topics this broker knows and the partition logs it hosts. Handlers
//! look partitions up here; nothing else holds them.
//!
//! Where topics come from:
//! - single node (no `--peers`): a local sled catalog; every partition is
//!   hosted and led here;
//! - cluster: the metadata group's replicated state. A reconciler applies
//!   every new state here: it opens the logs of partitions assigned to this
//!   broker, closes and deletes those no longer assigned, and records each
//!   partition's leader and epoch. Admin changes are proposed to the group
//!   and take effect here when the reconciler sees them.
//!
//! Each hosted partition's log lives in `data_dir/topics/<topic>-<partition>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use brook_metadata::{assign_replicas, ClusterState, Command, CommandError, CommandV1, MetadataError, MetadataNode};
use tokio::sync::watch;

use crate::catalog::{Catalog, CommittedOffset, TopicRecord};
use crate::error::BrokerError;
use crate::partition::{Partition, Role};
use crate::topic_config::{validate_topic_name, TopicConfig};

/// The most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 1000;
/// How long an admin call waits to see its own change applied here.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// Who hosts and leads a partition, as the cluster decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<u32>,
    /// `None` while no in-sync replica is alive.
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    pub isr: Vec<u32>,
}

#[derive(Debug)]
pub struct PartitionSlot {
    pub id: u32,
    pub assignment: Assignment,
    /// The log, when this broker is one of the replicas.
    pub log: Option<Arc<Partition>>,
}

#[derive(Debug)]
pub struct Topic {
    pub record: TopicRecord,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionSlot>,
}

impl Topic {
    pub fn slot(&self, partition: u32) -> Result<&PartitionSlot, BrokerError> {
        self.partitions.get(partition as usize).ok_or_else(|| BrokerError::PartitionNotFound {
            topic: self.record.name.clone(),
            partition,
            partitions: self.record.partitions,
        })
    }

    /// The partition's log, if `broker_id` leads it; otherwise NOT_LEADER
    /// naming the leader, so the client re-routes.
    pub fn led_partition(&self, partition: u32, broker_id: u32) -> Result<Arc<Partition>, BrokerError> {
        let slot = self.slot(partition)?;
        match (&slot.log, slot.assignment.leader) {
            (Some(log), Some(leader)) if leader == broker_id => Ok(Arc::clone(log)),
            (_, leader) => Err(BrokerError::NotLeader {
                topic: self.record.name.clone(),
                partition,
                broker_id,
                leader,
                leader_epoch: slot.assignment.leader_epoch,
            }),
        }
    }

    pub fn hosted(&self) -> impl Iterator<Item = (&PartitionSlot, &Arc<Partition>)> {
        self.partitions.iter().filter_map(|slot| slot.log.as_ref().map(|log| (slot, log)))
    }
}

#[derive(Debug)]
enum Source {
    Local(Catalog),
    Cluster(MetadataNode),
}

#[derive(Debug)]
pub struct TopicRegistry {
    topics_dir: PathBuf,
    broker_id: u32,
    source: Source,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped after every change to `topics`, so admin calls can wait to
    /// see their own change.
    version: watch::Sender<u64>,
    /// Bumped on every append to a hosted partition: replica fetches wait on it.
    appended: Arc<watch::Sender<u64>>,
}

fn partition_dir(topics_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    topics_dir.join(format!("{topic}-{partition}"))
}

fn create_topics_dir(data_dir: &Path) -> Result<PathBuf, BrokerError> {
    let topics_dir = data_dir.join("topics");
    std::fs::create_dir_all(&topics_dir)
        .map_err(|error| BrokerError::Catalog(format!("creating {}: {error}", topics_dir.display())))?;
    Ok(topics_dir)
}

/// Opens every partition of a single-node topic. Blocking.
fn open_local_topic(
    topics_dir: &Path,
    broker_id: u32,
    record: TopicRecord,
    appended: &Arc<watch::Sender<u64>>,
) -> Result<Topic, BrokerError> {
    let config = TopicConfig::from_map(&record.configs)?;
    let partitions = (0..record.partitions)
        .map(|partition| {
            let dir = partition_dir(topics_dir, &record.name, partition);
            let role = Role::sole_leader(broker_id);
            let log = Partition::open(&record.name, partition, dir, config.log_config(), role, Arc::clone(appended))?;
            let assignment = Assignment {
                replicas: vec![broker_id],
                leader: Some(broker_id),
                leader_epoch: 0,
                isr: vec![broker_id],
            };
            Ok(PartitionSlot { id: partition, assignment, log: Some(Arc::new(log)) })
        })
        .collect::<Result<Vec<_>, BrokerError>>()?;
    Ok(Topic { record, config, partitions })
}

fn close_and_remove(topics_dir: &Path, log: &Partition) {
    if let Err(error) = log.close() {
        tracing::warn!(topic = log.topic(), partition = log.partition(), %error, "closing a removed partition failed");
    }
    let dir = partition_dir(topics_dir, log.topic(), log.partition());
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %error, "could not remove a partition's files");
    }
}

impl From<MetadataError> for BrokerError {
    fn from(error: MetadataError) -> BrokerError {
        BrokerError::NoController(error.to_string())
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
            other => BrokerError::InvalidRequest(other.to_string()),
        }
    }
}

impl TopicRegistry {
    /// Single node: opens the catalog's topics (recovering their logs). Blocking.
    pub fn open_local(data_dir: &Path, catalog: Catalog, broker_id: u32) -> Result<TopicRegistry, BrokerError> {
        let topics_dir = create_topics_dir(data_dir)?;
        let appended = Arc::new(watch::channel(0).0);
        let mut topics = BTreeMap::new();
        for record in catalog.topics()? {
            let topic = open_local_topic(&topics_dir, broker_id, record, &appended)?;
            tracing::info!(topic = %topic.record.name, partitions = topic.record.partitions, "opened topic");
            topics.insert(topic.record.name.clone(), Arc::new(topic));
        }
        Ok(TopicRegistry {
            topics_dir,
            broker_id,
            source: Source::Local(catalog),
            topics: RwLock::new(topics),
            version: watch::channel(0).0,
            appended,
        })
    }

    /// Cluster: topics follow the metadata group; call `reconcile` with
    /// each new state. Blocking.
    pub fn open_cluster(data_dir: &Path, metadata: MetadataNode, broker_id: u32) -> Result<TopicRegistry, BrokerError> {
        let registry = TopicRegistry {
            topics_dir: create_topics_dir(data_dir)?,
            broker_id,
            source: Source::Cluster(metadata.clone()),
            topics: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
            appended: Arc::new(watch::channel(0).0),
        };
        let state = metadata.state().borrow().clone();
        registry.reconcile(&state);
        Ok(registry)
    }

    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// The metadata node, in cluster mode.
    pub fn metadata(&self) -> Option<&MetadataNode> {
        match &self.source {
            Source::Cluster(metadata) => Some(metadata),
            Source::Local(_) => None,
        }
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
    pub fn partition(&self, name: &str, partition: u32) -> Result<Arc<Partition>, BrokerError> {
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

    /// Validates and creates a topic.
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
        if self.read().contains_key(&name) {
            return Err(BrokerError::TopicAlreadyExists { topic: name });
        }
        match &self.source {
            Source::Local(_) => self.create_local(name, partitions, replication_factor, config).await,
            Source::Cluster(metadata) => {
                let state = metadata.state().borrow().clone();
                let alive = state.alive_brokers();
                // Spread leaders of different topics over the brokers too.
                let start = name.bytes().fold(0usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as usize));
                let assignments = assign_replicas(&alive, partitions, replication_factor, start)?;
                let command = CommandV1::CreateTopic {
                    name: name.clone(),
                    replication_factor,
                    configs: config.to_map(),
                    assignments,
                };
                metadata.propose(Command::V1(command)).await??;
                self.wait_applied(|topics| topics.contains_key(&name)).await?;
                tracing::info!(topic = %name, partitions, replication_factor, "created topic");
                self.topic(&name)
            }
        }
    }

    async fn create_local(
        self: &Arc<Self>,
        name: String,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<Arc<Topic>, BrokerError> {
        if replication_factor != 1 {
            return Err(BrokerError::InvalidReplicationFactor { requested: replication_factor, brokers: 1 });
        }
        let Source::Local(catalog) = &self.source else { unreachable!("create_local is only called in local mode") };
        let catalog = catalog.clone();
        let record = TopicRecord { name: name.clone(), partitions, replication_factor, configs: config.to_map() };
        let registry = Arc::clone(self);
        let topic = tokio::task::spawn_blocking(move || {
            catalog.create_topic(&record)?;
            // Left-overs of an earlier topic of this name (a crash during
            // its deletion) are not this topic's data.
            for partition in 0..partitions {
                let dir = partition_dir(&registry.topics_dir, &name, partition);
                if dir.exists() {
                    tracing::warn!(dir = %dir.display(), "removing stale data of an earlier topic");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            open_local_topic(&registry.topics_dir, registry.broker_id, record, &registry.appended).inspect_err(|_| {
                let _ = catalog.delete_topic(&name);
            })
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)??;
        let topic = Arc::new(topic);
        let mut topics = self.read().clone();
        topics.insert(topic.record.name.clone(), Arc::clone(&topic));
        self.replace(topics);
        tracing::info!(topic = %topic.record.name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic: its logs are closed and their files removed.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        match &self.source {
            Source::Cluster(metadata) => {
                metadata.propose(Command::V1(CommandV1::DeleteTopic { name: name.to_string() })).await??;
                self.wait_applied(|topics| !topics.contains_key(name)).await
            }
            Source::Local(catalog) => {
                let mut topics = self.read().clone();
                let topic = topics.remove(name).ok_or_else(|| BrokerError::UnknownTopic { topic: name.to_string() })?;
                self.replace(topics);
                let (catalog, topics_dir) = (catalog.clone(), self.topics_dir.clone());
                tokio::task::spawn_blocking(move || {
                    catalog.delete_topic(&topic.record.name)?;
                    for (_, log) in topic.hosted() {
                        close_and_remove(&topics_dir, log);
                    }
                    tracing::info!(topic = %topic.record.name, "deleted topic");
                    Ok(())
                })
                .await
                .map_err(|_| BrokerError::ShuttingDown)?
            }
        }
    }

    pub async fn commit_offsets(
        &self,
        group: String,
        commits: Vec<(String, u32, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        for (topic, partition, _) in &commits {
            self.topic(topic)?.slot(*partition)?;
        }
        match &self.source {
            Source::Local(catalog) => {
                let catalog = catalog.clone();
                tokio::task::spawn_blocking(move || catalog.commit_offsets(&group, &commits))
                    .await
                    .map_err(|_| BrokerError::ShuttingDown)?
            }
            Source::Cluster(metadata) => {
                let offsets = commits
                    .into_iter()
                    .map(|(topic, partition, committed)| brook_metadata::OffsetCommit {
                        topic,
                        partition,
                        offset: committed.offset,
                        metadata: committed.metadata,
                    })
                    .collect();
                metadata.propose(Command::V1(CommandV1::CommitOffsets { group, offsets })).await??;
                Ok(())
            }
        }
    }

    /// The group's committed offsets: of `wanted` (absent ones as none), or
    /// all it has when `wanted` is empty.
    pub async fn committed_offsets(
        &self,
        group: String,
        wanted: Vec<(String, u32)>,
    ) -> Result<Vec<(String, u32, Option<CommittedOffset>)>, BrokerError> {
        let all: Vec<(String, u32, CommittedOffset)> = match &self.source {
            Source::Local(catalog) => {
                let (catalog, group) = (catalog.clone(), group.clone());
                tokio::task::spawn_blocking(move || catalog.group_offsets(&group))
                    .await
                    .map_err(|_| BrokerError::ShuttingDown)??
            }
            Source::Cluster(metadata) => {
                let state = metadata.state().borrow().clone();
                state
                    .offsets
                    .get(&group)
                    .into_iter()
                    .flat_map(|topics| topics.iter())
                    .flat_map(|(topic, partitions)| {
                        partitions.iter().map(move |(partition, committed)| {
                            let offset =
                                CommittedOffset { offset: committed.offset, metadata: committed.metadata.clone() };
                            (topic.clone(), *partition, offset)
                        })
                    })
                    .collect()
            }
        };
        if wanted.is_empty() {
            return Ok(all.into_iter().map(|(topic, partition, offset)| (topic, partition, Some(offset))).collect());
        }
        Ok(wanted
            .into_iter()
            .map(|(topic, partition)| {
                let found =
                    all.iter().find(|(t, p, _)| *t == topic && *p == partition).map(|(_, _, offset)| offset.clone());
                (topic, partition, found)
            })
            .collect())
    }

    /// Brings the hosted logs in line with `state` (cluster mode). Blocking.
    ///
    /// Until the metadata is caught up (`MetadataNode::caught_up`), this
    /// broker is fenced: it hosts and follows, but leads nothing, as its
    /// state may be one from before it stopped.
    pub fn reconcile(&self, state: &ClusterState) {
        let me = self.broker_id;
        let fenced = self.metadata().is_some_and(|metadata| !*metadata.caught_up().borrow());
        let old = self.read().clone();
        let mut next = BTreeMap::new();
        for (name, topic_state) in &state.topics {
            let config = match TopicConfig::from_map(&topic_state.configs) {
                Ok(config) => config,
                Err(error) => {
                    tracing::error!(topic = %name, %error, "topic has configs this broker cannot use; skipping it");
                    continue;
                }
            };
            let previous = old.get(name);
            let mut slots = Vec::with_capacity(topic_state.partitions.len());
            for (index, record) in topic_state.partitions.iter().enumerate() {
                let partition = index as u32;
                let mut record = record.clone();
                if fenced && record.leader == Some(me) {
                    record.leader = None;
                }
                let previous_slot = previous.and_then(|topic| topic.partitions.get(index));
                let hosted = record.replicas.contains(&me);
                let log = match (hosted, previous_slot.and_then(|slot| slot.log.clone())) {
                    (true, Some(log)) => Some(log),
                    (true, None) => {
                        let dir = partition_dir(&self.topics_dir, name, partition);
                        let role = Role {
                            broker_id: me,
                            leader: record.leader,
                            leader_epoch: record.leader_epoch,
                            isr: record.isr.clone(),
                        };
                        match Partition::open(
                            name,
                            partition,
                            dir,
                            config.log_config(),
                            role,
                            Arc::clone(&self.appended),
                        ) {
                            Ok(log) => Some(Arc::new(log)),
                            Err(error) => {
                                tracing::error!(topic = %name, partition, %error, "cannot open an assigned partition");
                                None
                            }
                        }
                    }
                    (false, Some(log)) => {
                        close_and_remove(&self.topics_dir, &log);
                        None
                    }
                    (false, None) => None,
                };
                let assignment = Assignment {
                    replicas: record.replicas.clone(),
                    leader: record.leader,
                    leader_epoch: record.leader_epoch,
                    isr: record.isr.clone(),
                };
                if let Some(log) = &log {
                    log.set_role(
                        Role {
                            broker_id: me,
                            leader: record.leader,
                            leader_epoch: record.leader_epoch,
                            isr: record.isr.clone(),
                        },
                        state.applied_index,
                    );
                    let was_leading = previous_slot.is_some_and(|slot| slot.assignment.leader == Some(me));
                    let leads = record.leader == Some(me);
                    if leads != was_leading
                        || previous_slot.is_some_and(|slot| slot.assignment.leader_epoch != record.leader_epoch)
                    {
                        let role = if leads { "leads" } else { "follows" };
                        tracing::info!(broker_id = me, topic = %name, partition, epoch = record.leader_epoch, leader = ?record.leader, "broker {me} now {role} {name}-{partition} at epoch {}", record.leader_epoch);
                    }
                }
                slots.push(PartitionSlot { id: partition, assignment, log });
            }
            let topic_record = TopicRecord {
                name: name.clone(),
                partitions: topic_state.partitions.len() as u32,
                replication_factor: topic_state.replication_factor,
                configs: topic_state.configs.clone(),
            };
            next.insert(name.clone(), Arc::new(Topic { record: topic_record, config, partitions: slots }));
        }
        for (name, topic) in &old {
            if !state.topics.contains_key(name) {
                for (_, log) in topic.hosted() {
                    close_and_remove(&self.topics_dir, log);
                }
                tracing::info!(topic = %name, "deleted topic");
            }
        }
        self.replace(next);
    }

    /// Something to wait on for any change of the topics here (a new
    /// cluster state applied, a topic created or deleted).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Something to wait on for appends to any hosted partition.
    pub fn watch_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The hosted partitions that `leader` leads and this broker follows.
    pub fn followed_from(&self, leader: u32) -> Vec<(Arc<Partition>, u32)> {
        if leader == self.broker_id {
            return Vec::new();
        }
        self.list()
            .iter()
            .flat_map(|topic| {
                topic.hosted().map(|(slot, log)| (slot.assignment.clone(), Arc::clone(log))).collect::<Vec<_>>()
            })
            .filter(|(assignment, _)| assignment.leader == Some(leader))
            .map(|(assignment, log)| (log, assignment.leader_epoch))
            .collect()
    }

    /// Retention and time-based flushes on every hosted partition. Blocking.
    pub fn maintain(&self, now_ms: i64) {
        for topic in self.list() {
            for (_, partition) in topic.hosted() {
                if let Err(error) = partition.maintain(now_ms) {
                    tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "log maintenance failed");
                }
            }
        }
    }

    /// Checkpoints every hosted partition's HW that moved. Blocking.
    pub fn checkpoint_high_watermarks(&self) {
        for topic in self.list() {
            for (_, partition) in topic.hosted() {
                if let Err(error) = partition.checkpoint_high_watermark() {
                    tracing::warn!(topic = partition.topic(), partition = partition.partition(), %error, "HW checkpoint failed");
                }
            }
        }
    }

    /// Closes every log cleanly. Blocking.
    pub fn close(&self) {
        for topic in self.list() {
            for (_, partition) in topic.hosted() {
                if let Err(error) = partition.close() {
                    tracing::error!(topic = partition.topic(), partition = partition.partition(), %error, "closing log failed");
                }
            }
        }
    }
}
