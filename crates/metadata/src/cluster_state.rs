//! The replicated cluster state and its one transition function, `apply`.
//! Every broker applies the same committed commands in the same order, so
//! every broker holds the same state; `apply` must therefore depend on
//! nothing but the state and the command (no clock, no randomness, no I/O).
//!
//! Invariants, checked in `debug_assert`s after each command:
//! - every partition's replicas are distinct registered brokers;
//! - the ISR is a subset of the replicas and holds the leader, if any;
//! - leader epochs never decrease.

use std::collections::{BTreeMap, BTreeSet};

use brook_record::{LeaderEpoch, TopicId};
use serde::{Deserialize, Serialize};

use crate::command::{
    BrokerId, Command, CommandError, CommandResult, CommandV1, GroupCommit, LeaderChange, OffsetCommit, Outcome,
};
use crate::consumer_group::{Committer, ConsumerGroup};
use crate::incarnation::{BrokerEpoch, ClusterId, DirectoryId, Incarnation};

mod activity;

pub use activity::Activity;
use activity::Verdict;

/// The topic config that allows electing an out-of-sync replica.
pub const UNCLEAN_ELECTION: &str = crate::topic_keys::UNCLEAN_LEADER_ELECTION_ENABLE;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: BrokerId,
    pub address: String,
    pub alive: bool,
    /// It announced a controlled shutdown: its heartbeats no longer make
    /// it alive; registering again does.
    #[serde(default)]
    pub shutting_down: bool,
    /// The broker's current process (see `incarnation.rs`).
    #[serde(default)]
    pub incarnation: Incarnation,
    /// The epoch of that incarnation: heartbeats and replica fetches from
    /// an older one are refused.
    #[serde(default)]
    pub broker_epoch: BrokerEpoch,
    /// Where Kafka clients reach it (`host:port`); empty without a Kafka
    /// listener.
    #[serde(default)]
    pub kafka_address: String,
    /// The data directory it registered with last.
    #[serde(default)]
    pub directory_id: DirectoryId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<BrokerId>,
    /// `None` when no ISR member is alive (unclean election is off).
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
    /// The version of `leader` and `isr` together (Kafka's partition
    /// epoch): bumped by every change of either, and when a replica dies or
    /// returns. An ISR change names the version it was built on and is
    /// refused when that is not this one, so a delayed or repeated proposal
    /// never undoes a newer change nor adds a replica that restarted since.
    #[serde(default)]
    pub partition_epoch: u32,
    /// Set while the partition is offline because its last in-sync
    /// replica came back without its data: the ISR is then empty, and
    /// only an unclean election (`unclean.leader.election.enable`) gives
    /// it a leader again, accepting the loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_by: Option<BrokerId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Given at creation; never reused (KIP-516).
    pub id: TopicId,
    pub replication_factor: u32,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

/// One group's committed offsets: topic -> partition -> offset.
pub type GroupOffsets = BTreeMap<String, BTreeMap<u32, CommittedOffset>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: String,
}

/// Producer ids handed out (Kafka's `ProducerIdsRecord` and, for keyed
/// producers, the id and epoch per key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIds {
    /// The first id of the next block.
    pub next_id: i64,
    /// key -> (producer id, epoch)
    pub keyed: imbl::OrdMap<String, (i64, i16)>,
}

/// Producer ids a broker takes at a time.
pub const PRODUCER_ID_BLOCK: u32 = 1000;
/// The longest producer key, in bytes.
pub const MAX_PRODUCER_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// group -> topic -> partition -> committed offset.
    ///
    /// The maps that grow with clients (offsets, groups, producer keys) are
    /// persistent (`imbl::OrdMap`): the state machine publishes a copy of
    /// the state after every command, and a copy shares every group the
    /// command did not touch, so applying a commit costs what it changed,
    /// not the size of the state (BENCHMARKS.md).
    pub offsets: imbl::OrdMap<String, GroupOffsets>,
    /// The Raft log index of the last command applied to this state (set
    /// by the state machine store, not by `apply`): lets a broker tell
    /// whether its copy already reflects a command committed at some index.
    #[serde(default)]
    pub applied_index: u64,
    #[serde(default)]
    pub producer_ids: ProducerIds,
    /// Consumer groups with (or once with) members; a group that only
    /// stores offsets has none here.
    #[serde(default)]
    pub groups: imbl::OrdMap<String, ConsumerGroup>,
    /// Taken from the first broker that registers (see `incarnation.rs`).
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
    /// The last broker epoch given: each new incarnation gets the next.
    #[serde(default)]
    pub last_broker_epoch: u64,
    /// Per group (with offsets or state): how many commands changed it,
    /// and, once an `ExpireGroups` pass found it empty, that count and the
    /// pass's time (see `CommandV1::ExpireGroups`).
    #[serde(default)]
    pub group_activity: imbl::OrdMap<String, Activity>,
    /// Per producer key: how often it was initialised or reported
    /// appending, with the mark of an `ExpireProducerKeys` pass.
    #[serde(default)]
    pub producer_key_activity: imbl::OrdMap<String, Activity>,
}

impl ClusterState {
    pub fn alive_brokers(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|broker| broker.alive).map(|broker| broker.id).collect()
    }

    /// Applies one committed command. A refused command changes nothing.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let Command::V1(command) = command;
        let result = match command {
            CommandV1::RegisterBroker {
                broker_id,
                address,
                incarnation,
                directory_id,
                cluster_id,
                lost_replicas,
                kafka_address,
            } => {
                let lost = LostData { everything: false, replicas: lost_replicas };
                let registered =
                    self.register_broker(*broker_id, address, *incarnation, *directory_id, *cluster_id, lost);
                if let (Ok(_), Some(broker)) = (&registered, self.brokers.get_mut(broker_id)) {
                    broker.kafka_address.clone_from(kafka_address);
                }
                registered
            }
            CommandV1::ControlledShutdown { broker_id } => {
                let result = self.set_broker_alive(*broker_id, false)?;
                if let Some(broker) = self.brokers.get_mut(broker_id) {
                    broker.shutting_down = true;
                }
                Ok(result)
            }
            CommandV1::SetBrokerAlive { broker_id, alive } => self.set_broker_alive(*broker_id, *alive),
            CommandV1::CreateTopic { name, topic_id, replication_factor, configs, assignments } => {
                self.create_topic(name, *topic_id, *replication_factor, configs, assignments)
            }
            CommandV1::DeleteTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return Err(CommandError::UnknownTopic { topic: name.clone() });
                }
                let holding: Vec<String> = self
                    .offsets
                    .iter()
                    .filter(|(_, offsets)| offsets.contains_key(name))
                    .map(|(group, _)| group.clone())
                    .collect();
                for group in holding {
                    if let Some(offsets) = self.offsets.get_mut(&group) {
                        offsets.remove(name);
                    }
                }
                Ok(Outcome::Done)
            }
            CommandV1::AlterTopicConfig { name, topic_id, configs } => {
                let alive = self.alive_brokers();
                let topic =
                    self.topics.get_mut(name).ok_or_else(|| CommandError::UnknownTopic { topic: name.clone() })?;
                if topic.id != *topic_id {
                    return Err(CommandError::TopicIdMismatch { topic: name.clone(), topic_id: *topic_id });
                }
                topic.configs = configs.clone();
                // Allowing unclean election elects, at once, a live replica
                // for each partition that has no leader (as Kafka's
                // controller does when the config changes).
                let moved = elect_unclean_where_allowed(topic, &alive);
                Ok(if moved.is_empty() { Outcome::Done } else { Outcome::LeadersChanged(moved) })
            }
            CommandV1::CreatePartitions { name, topic_id, current, assignments } => {
                self.create_partitions(name, *topic_id, *current, assignments)
            }
            CommandV1::ChangeIsr { topic, topic_id, partition, leader_epoch, partition_epoch, isr, joining } => {
                if let Some((broker_id, epoch)) = *joining {
                    let current = self.brokers.get(&broker_id).map(|broker| broker.broker_epoch).unwrap_or_default();
                    if current != epoch {
                        return Err(CommandError::StaleBrokerEpoch { broker_id, epoch, current });
                    }
                }
                self.change_isr(topic, *topic_id, *partition, *leader_epoch, *partition_epoch, isr)
            }
            CommandV1::CommitOffsets { group, offsets } => {
                let result = self.commit_offsets(group, offsets)?;
                self.touch_group(group);
                Ok(result)
            }
            CommandV1::AllocateProducerIds { broker_id } => {
                if !self.brokers.contains_key(broker_id) {
                    return Err(CommandError::UnknownBroker { broker_id: *broker_id });
                }
                Ok(self.take_producer_ids(PRODUCER_ID_BLOCK))
            }
            CommandV1::InitKeyedProducer { key } => self.init_keyed_producer(key),
            CommandV1::GroupHeartbeat(heartbeat) => {
                let group = self.groups.entry(heartbeat.group.clone()).or_default();
                let (member_epoch, assigned) = group.heartbeat(heartbeat, &self.topics)?;
                self.touch_group(&heartbeat.group);
                Ok(Outcome::GroupMember { member_epoch, assigned })
            }
            CommandV1::RemoveGroupMembers { group, member_ids } => {
                self.touch_group(group);
                if let Some(state) = self.groups.get_mut(group) {
                    state.remove_members(member_ids, &self.topics);
                }
                Ok(Outcome::Done)
            }
            CommandV1::CommitGroupOffsets { commits } => {
                Ok(Outcome::Committed(commits.iter().map(|commit| self.commit_group_offsets(commit)).collect()))
            }
            CommandV1::DeleteGroup { group } => self.delete_group(group),
            CommandV1::ExpireGroups { now_ms, retention_ms } => Ok(self.expire_groups(*now_ms, *retention_ms)),
            CommandV1::ProducerKeysActive { keys } => {
                for key in keys.iter().filter(|key| self.producer_ids.keyed.contains_key(key.as_str())) {
                    Activity::touch(&mut self.producer_key_activity, key);
                }
                Ok(Outcome::Done)
            }
            CommandV1::ExpireProducerKeys { now_ms, expiration_ms } => {
                Ok(self.expire_producer_keys(*now_ms, *expiration_ms))
            }
        };
        self.debug_check_invariants();
        result
    }

    fn partition_mut(&mut self, topic: &str, partition: u32) -> Result<&mut PartitionRecord, CommandError> {
        let record = self.topics.get_mut(topic).ok_or_else(|| CommandError::UnknownTopic { topic: topic.into() })?;
        let partitions = record.partitions.len() as u32;
        record.partitions.get_mut(partition as usize).ok_or(CommandError::UnknownPartition {
            topic: topic.into(),
            partition,
            partitions,
        })
    }

    fn create_topic(
        &mut self,
        name: &str,
        topic_id: TopicId,
        replication_factor: u32,
        configs: &BTreeMap<String, String>,
        assignments: &[Vec<BrokerId>],
    ) -> CommandResult {
        // The admin path checked the name; a command that reached the log
        // some other way (a forged proposal) is checked again here, as the
        // name becomes a directory on every broker.
        brook_record::check_topic_name(name)
            .map_err(|reason| CommandError::InvalidTopicName { name: name.into(), reason })?;
        if replication_factor == 0 {
            return Err(CommandError::InvalidAssignment { reason: "the replication factor must be at least 1".into() });
        }
        if self.topics.contains_key(name) {
            return Err(CommandError::TopicAlreadyExists { topic: name.into() });
        }
        if topic_id == TopicId::ZERO || self.topics.values().any(|topic| topic.id == topic_id) {
            return Err(CommandError::TopicIdInUse { topic_id });
        }
        if assignments.is_empty() {
            return Err(CommandError::InvalidAssignment { reason: "a topic needs at least one partition".into() });
        }
        for (partition, replicas) in assignments.iter().enumerate() {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if replicas.len() != replication_factor as usize || distinct.len() != replicas.len() {
                return Err(CommandError::InvalidAssignment {
                    reason: format!(
                        "partition {partition} needs {replication_factor} distinct replicas, got {replicas:?}"
                    ),
                });
            }
            if let Some(unknown) = replicas.iter().find(|id| !self.brokers.contains_key(id)) {
                return Err(CommandError::UnknownBroker { broker_id: *unknown });
            }
        }
        let partitions = assignments
            .iter()
            .map(|replicas| PartitionRecord {
                replicas: replicas.clone(),
                leader: replicas.first().copied(),
                leader_epoch: LeaderEpoch(0),
                isr: replicas.clone(),
                partition_epoch: 0,
                lost_by: None,
            })
            .collect();
        self.topics.insert(
            name.into(),
            TopicRecord { name: name.into(), id: topic_id, replication_factor, configs: configs.clone(), partitions },
        );
        Ok(Outcome::Done)
    }

    fn set_broker_alive(&mut self, broker_id: BrokerId, alive: bool) -> CommandResult {
        let moved = self.change_liveness(broker_id, alive, &LostData::NOTHING)?;
        Ok(if moved.is_empty() { Outcome::Done } else { Outcome::LeadersChanged(moved) })
    }

    /// A broker registers. A broker registering for the first time joins
    /// alive. A new incarnation of a registered broker is a restart (Kafka
    /// treats it so since KIP-903): the broker goes down and comes back in
    /// one command, so before it may lead or count toward any HW again it
    /// has left every ISR it was in (it rejoins by catching up as a
    /// follower), and every partition it led has a new leader at the next
    /// epoch. The last member of an ISR stays in it, as when it dies, and
    /// leads again at a new epoch, unless it came back without its data
    /// (another directory id, or the partition's files lost): then the
    /// partition stays offline and says why (`lost_by`). A repeat of the
    /// current incarnation's registration (a retry) changes nothing.
    fn register_broker(
        &mut self,
        broker_id: BrokerId,
        address: &str,
        incarnation: Incarnation,
        directory_id: DirectoryId,
        cluster_id: Option<ClusterId>,
        mut lost: LostData<'_>,
    ) -> CommandResult {
        let cluster = match (self.cluster_id, cluster_id) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(CommandError::ForeignDirectory { broker_id, directory_cluster: theirs, cluster: ours })
            }
            (Some(ours), _) => ours,
            (None, theirs) if incarnation.is_unknown() && theirs.is_none() => ClusterId::default(),
            (None, theirs) => *self.cluster_id.insert(theirs.unwrap_or(ClusterId(incarnation.0))),
        };
        let previous = self.brokers.get(&broker_id);
        if let Some(current) = previous.filter(|broker| !incarnation.is_unknown() && broker.incarnation == incarnation)
        {
            return Ok(Outcome::Registered { broker_epoch: current.broker_epoch, cluster_id: cluster, moved: vec![] });
        }
        let restarted = previous.is_some() && !incarnation.is_unknown();
        lost.everything = previous.is_some_and(|broker| {
            !broker.directory_id.is_unknown() && !directory_id.is_unknown() && broker.directory_id != directory_id
        });
        self.last_broker_epoch += 1;
        let broker_epoch = BrokerEpoch(self.last_broker_epoch);
        self.brokers.insert(
            broker_id,
            BrokerRecord {
                id: broker_id,
                address: address.into(),
                alive: false,
                shutting_down: false,
                incarnation,
                broker_epoch,
                directory_id,
                kafka_address: String::new(),
            },
        );
        let mut moved = if restarted { self.change_liveness(broker_id, false, &lost)? } else { Vec::new() };
        moved.extend(self.change_liveness(broker_id, true, &LostData::NOTHING)?);
        // A partition the restart moved twice (down, then back to this
        // broker as the last ISR member) is reported once, as it ends.
        let mut last_per_partition = BTreeMap::new();
        for change in moved {
            last_per_partition.insert((change.topic.clone(), change.partition), change);
        }
        let moved = last_per_partition.into_values().collect();
        Ok(Outcome::Registered { broker_epoch, cluster_id: cluster, moved })
    }

    /// A broker goes down (`alive` false: it leaves every ISR it is not the
    /// last member of, and what it led moves to another live ISR member at
    /// the next epoch) or comes back (a partition with no leader gets it if
    /// it is in the ISR, or, where unclean election is allowed, if it is a
    /// replica). `lost` names the replicas it no longer holds: as the last
    /// ISR member of one of those it leaves the ISR too, and the partition
    /// is offline. The leaderships that moved.
    fn change_liveness(
        &mut self,
        broker_id: BrokerId,
        alive: bool,
        lost: &LostData<'_>,
    ) -> Result<Vec<LeaderChange>, CommandError> {
        let broker = self.brokers.get_mut(&broker_id).ok_or(CommandError::UnknownBroker { broker_id })?;
        broker.alive = alive;
        let alive_brokers = self.alive_brokers();
        let mut moved = Vec::new();
        for topic in self.topics.values_mut() {
            let unclean_allowed = unclean_election_allowed(topic);
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                let before = (partition.leader, partition.isr.clone());
                if !alive {
                    // A dead broker leaves every ISR it is in, unless it is
                    // the last member: then the ISR keeps it, so it can
                    // lead again when it returns (unless the topic allows
                    // unclean election), except when it lost the data.
                    if partition.isr.len() > 1 {
                        partition.isr.retain(|&member| member != broker_id);
                    } else if partition.isr == [broker_id] && lost.holds(topic.id, index as u32) {
                        partition.isr.clear();
                        partition.lost_by = Some(broker_id);
                    }
                    if partition.leader == Some(broker_id) {
                        let in_sync = partition
                            .isr
                            .iter()
                            .copied()
                            .find(|member| *member != broker_id && alive_brokers.contains(member));
                        // Unclean election, only where the topic allows it:
                        // any live replica, accepting the loss of what it lacks.
                        let unclean = unclean_allowed
                            .then(|| {
                                let live =
                                    |replica: &BrokerId| *replica != broker_id && alive_brokers.contains(replica);
                                partition.replicas.iter().copied().find(live)
                            })
                            .flatten();
                        let successor = in_sync.or(unclean);
                        if in_sync.is_none() {
                            if let Some(leader) = successor {
                                partition.isr = vec![leader];
                                partition.lost_by = None;
                            }
                        }
                        moved.push(partition.elect(&topic.name, index, successor));
                    }
                } else if partition.leader.is_none() && partition.isr.contains(&broker_id) {
                    // A partition with no leader gets the returning ISR member.
                    moved.push(partition.elect(&topic.name, index, Some(broker_id)));
                } else if partition.leader.is_none() && unclean_allowed && partition.replicas.contains(&broker_id) {
                    partition.isr = vec![broker_id];
                    partition.lost_by = None;
                    moved.push(partition.elect(&topic.name, index, Some(broker_id)));
                }
                // A replica that died or came back is another replica (a
                // restarted one may be far behind): any proposal built
                // before counts on what it was (KIP-903's broker epoch).
                if (partition.leader, &partition.isr) != (before.0, &before.1)
                    || partition.replicas.contains(&broker_id)
                {
                    partition.partition_epoch += 1;
                }
            }
        }
        Ok(moved)
    }

    fn change_isr(
        &mut self,
        topic: &str,
        topic_id: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        partition_epoch: u32,
        isr: &[BrokerId],
    ) -> CommandResult {
        if self.topics.get(topic).is_some_and(|record| record.id != topic_id) {
            return Err(CommandError::TopicIdMismatch { topic: topic.into(), topic_id });
        }
        let alive = self.alive_brokers();
        let record = self.partition_mut(topic, partition)?;
        if leader_epoch != record.leader_epoch {
            return Err(CommandError::StaleLeaderEpoch {
                topic: topic.into(),
                partition,
                epoch: leader_epoch,
                current: record.leader_epoch,
            });
        }
        if partition_epoch != record.partition_epoch {
            return Err(CommandError::StalePartitionEpoch {
                topic: topic.into(),
                partition,
                epoch: partition_epoch,
                current: record.partition_epoch,
            });
        }
        let invalid = |reason: String| CommandError::InvalidIsr { topic: topic.into(), partition, reason };
        if let Some(outsider) = isr.iter().find(|member| !record.replicas.contains(member)) {
            return Err(invalid(format!("broker {outsider} is not a replica")));
        }
        if let Some(leader) = record.leader {
            if !isr.contains(&leader) {
                return Err(invalid(format!("the leader {leader} must stay in the ISR")));
            }
        }
        if let Some(joining) = isr.iter().find(|member| !record.isr.contains(member) && !alive.contains(member)) {
            return Err(invalid(format!("broker {joining} is not alive, so it cannot join the ISR")));
        }
        let mut isr = isr.to_vec();
        isr.sort_unstable();
        isr.dedup();
        if record.isr != isr {
            record.isr = isr;
            record.partition_epoch += 1;
        }
        Ok(Outcome::Done)
    }

    fn take_producer_ids(&mut self, count: u32) -> Outcome {
        let first = self.producer_ids.next_id;
        self.producer_ids.next_id += i64::from(count);
        Outcome::ProducerIds { first, count }
    }

    fn init_keyed_producer(&mut self, key: &str) -> CommandResult {
        if key.is_empty() || key.len() > MAX_PRODUCER_KEY_BYTES || key.contains('\0') {
            return Err(CommandError::InvalidProducerKey {
                key: key.into(),
                reason: format!("must be 1-{MAX_PRODUCER_KEY_BYTES} bytes without NUL"),
            });
        }
        let (producer_id, producer_epoch) = match self.producer_ids.keyed.get(key) {
            Some(&(id, epoch)) if epoch < i16::MAX => (id, epoch + 1),
            _ => {
                let Outcome::ProducerIds { first, .. } = self.take_producer_ids(1) else {
                    unreachable!("take_producer_ids answers with ids")
                };
                (first, 0)
            }
        };
        self.producer_ids.keyed.insert(key.into(), (producer_id, producer_epoch));
        Activity::touch(&mut self.producer_key_activity, key);
        Ok(Outcome::Producer { producer_id, producer_epoch })
    }

    fn create_partitions(
        &mut self,
        name: &str,
        topic_id: TopicId,
        current: u32,
        assignments: &[Vec<BrokerId>],
    ) -> CommandResult {
        let registered: Vec<BrokerId> = self.brokers.keys().copied().collect();
        let topic = self.topics.get_mut(name).ok_or_else(|| CommandError::UnknownTopic { topic: name.into() })?;
        if topic.id != topic_id {
            return Err(CommandError::TopicIdMismatch { topic: name.into(), topic_id });
        }
        if topic.partitions.len() as u32 != current {
            return Err(CommandError::InvalidAssignment {
                reason: format!("'{name}' has {} partitions now, not {current}", topic.partitions.len()),
            });
        }
        for replicas in assignments {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if replicas.is_empty()
                || distinct.len() != replicas.len()
                || replicas.len() as u32 != topic.replication_factor
                || replicas.iter().any(|replica| !registered.contains(replica))
            {
                return Err(CommandError::InvalidAssignment {
                    reason: format!(
                        "replicas {replicas:?} are not {} distinct registered brokers",
                        topic.replication_factor
                    ),
                });
            }
        }
        for replicas in assignments {
            topic.partitions.push(PartitionRecord {
                replicas: replicas.clone(),
                leader: replicas.first().copied(),
                leader_epoch: LeaderEpoch(0),
                isr: replicas.clone(),
                partition_epoch: 0,
                lost_by: None,
            });
        }
        Ok(Outcome::Done)
    }

    /// Notes that a command changed (or tried to change) `group`.
    fn touch_group(&mut self, group: &str) {
        Activity::touch(&mut self.group_activity, group);
    }

    /// See `CommandV1::ExpireGroups`.
    fn expire_groups(&mut self, now_ms: i64, retention_ms: u64) -> Outcome {
        let names: BTreeSet<String> = self.offsets.keys().chain(self.groups.keys()).cloned().collect();
        let mut expired = 0u32;
        for name in names {
            let has_members = self.groups.get(&name).is_some_and(|group| !group.members.is_empty());
            let activity = self.group_activity.get(&name).cloned().unwrap_or_default();
            match activity.judge(has_members, now_ms, retention_ms) {
                Verdict::Expire => {
                    self.offsets.remove(&name);
                    self.groups.remove(&name);
                    self.group_activity.remove(&name);
                    expired += 1;
                }
                Verdict::Keep(mark) if mark != activity.idle_mark => {
                    self.group_activity.insert(name, Activity { idle_mark: mark, ..activity });
                }
                Verdict::Keep(_) => {}
            }
        }
        Outcome::GroupsExpired(expired)
    }

    /// See `CommandV1::ExpireProducerKeys`. The ids of forgotten keys are
    /// never handed out again (ids only ever come from `next_id`).
    fn expire_producer_keys(&mut self, now_ms: i64, expiration_ms: u64) -> Outcome {
        let keys: Vec<String> = self.producer_ids.keyed.keys().cloned().collect();
        let mut expired = 0u32;
        for key in keys {
            let activity = self.producer_key_activity.get(&key).cloned().unwrap_or_default();
            match activity.judge(false, now_ms, expiration_ms) {
                Verdict::Expire => {
                    self.producer_ids.keyed.remove(&key);
                    self.producer_key_activity.remove(&key);
                    expired += 1;
                }
                Verdict::Keep(mark) if mark != activity.idle_mark => {
                    self.producer_key_activity.insert(key, Activity { idle_mark: mark, ..activity });
                }
                Verdict::Keep(_) => {}
            }
        }
        Outcome::ProducerKeysExpired(expired)
    }

    fn commit_group_offsets(&mut self, commit: &GroupCommit) -> Result<(), CommandError> {
        if let Some(group) = self.groups.get(&commit.group) {
            group.check_commit(&commit.group, &commit.committer)?;
        } else if let Committer::Member { member_id, .. } = &commit.committer {
            return Err(CommandError::UnknownMemberId { group: commit.group.clone(), member_id: member_id.clone() });
        }
        self.commit_offsets(&commit.group, &commit.offsets)?;
        self.touch_group(&commit.group);
        Ok(())
    }

    fn delete_group(&mut self, group: &str) -> CommandResult {
        if let Some(state) = self.groups.get(group) {
            if !state.members.is_empty() {
                return Err(CommandError::GroupNotEmpty { group: group.into(), members: state.members.len() });
            }
        }
        self.group_activity.remove(group);
        let known = self.groups.remove(group).is_some() | self.offsets.remove(group).is_some();
        if !known {
            return Err(CommandError::UnknownGroup { group: group.into() });
        }
        Ok(Outcome::Done)
    }

    fn commit_offsets(&mut self, group: &str, offsets: &[OffsetCommit]) -> CommandResult {
        for commit in offsets {
            self.partition_mut(&commit.topic, commit.partition)?;
            let current = self.topics.get(&commit.topic).map(|topic| topic.id);
            if let (Some(topic_id), Some(current)) = (commit.topic_id, current) {
                if topic_id != current {
                    return Err(CommandError::TopicIdMismatch { topic: commit.topic.clone(), topic_id });
                }
            }
        }
        let group = self.offsets.entry(group.into()).or_default();
        for commit in offsets {
            group
                .entry(commit.topic.clone())
                .or_default()
                .insert(commit.partition, CommittedOffset { offset: commit.offset, metadata: commit.metadata.clone() });
        }
        Ok(Outcome::Done)
    }

    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            for topic in self.topics.values() {
                for partition in &topic.partitions {
                    debug_assert!(partition.isr.iter().all(|member| partition.replicas.contains(member)));
                    if let Some(leader) = partition.leader {
                        debug_assert!(partition.isr.contains(&leader), "the leader is in the ISR");
                    }
                    if partition.lost_by.is_some() {
                        debug_assert!(partition.isr.is_empty() && partition.leader.is_none(), "offline for lost data");
                    }
                }
            }
        }
    }
}

/// Replicas a registering broker no longer holds.
struct LostData<'a> {
    /// It came back with another data directory.
    everything: bool,
    /// (topic id, partition) of replicas whose files it did not find.
    replicas: &'a [(TopicId, u32)],
}

impl LostData<'_> {
    const NOTHING: LostData<'static> = LostData { everything: false, replicas: &[] };

    fn holds(&self, topic_id: TopicId, partition: u32) -> bool {
        self.everything || self.replicas.contains(&(topic_id, partition))
    }
}

fn unclean_election_allowed(topic: &TopicRecord) -> bool {
    topic.configs.get(UNCLEAN_ELECTION).and_then(|value| crate::topic_keys::parse_bool(value)) == Some(true)
}

impl PartitionRecord {
    /// `leader` leads (or, `None`, nobody does) from the next epoch.
    fn elect(&mut self, topic: &str, partition: usize, leader: Option<BrokerId>) -> LeaderChange {
        self.leader = leader;
        self.leader_epoch = self.leader_epoch.next();
        LeaderChange { topic: topic.into(), partition: partition as u32, leader, leader_epoch: self.leader_epoch }
    }
}

/// Where the topic allows unclean election: each partition without a
/// leader gets its first live replica, whose log becomes the partition's
/// (what it lacks is lost, as Kafka's unclean election accepts).
fn elect_unclean_where_allowed(topic: &mut TopicRecord, alive: &[BrokerId]) -> Vec<LeaderChange> {
    if !unclean_election_allowed(topic) {
        return Vec::new();
    }
    let mut moved = Vec::new();
    for (index, partition) in topic.partitions.iter_mut().enumerate() {
        if partition.leader.is_some() {
            continue;
        }
        // A replica that did not lose its data first: it may hold more.
        let live = |replica: &&BrokerId| alive.contains(replica);
        let complete = partition.replicas.iter().filter(live).find(|replica| Some(**replica) != partition.lost_by);
        if let Some(leader) = complete.or_else(|| partition.replicas.iter().find(live)).copied() {
            partition.isr = vec![leader];
            partition.lost_by = None;
            partition.partition_epoch += 1;
            moved.push(partition.elect(&topic.name, index, Some(leader)));
        }
    }
    moved
}

#[cfg(test)]
mod tests;
