//! What the metadata group agrees on: typed, versioned commands. A command
//! is validated against the current state before it is proposed, and
//! applied deterministically on every broker once committed.
//!
//! Versioning: `Command` wraps each version's enum; a broker that meets a
//! version it does not know stops applying rather than guess (a rolling
//! upgrade finishes before new versions are proposed).

use std::collections::{BTreeMap, BTreeSet};

use brook_record::{LeaderEpoch, TopicId};
use serde::{Deserialize, Serialize};

pub use crate::consumer_group::{Committer, GroupHeartbeat};
use crate::group_assignment::Partition;
pub use crate::incarnation::{BrokerEpoch, ClusterId, DirectoryId, Incarnation};

pub use brook_record::BrokerId;

/// The largest command the metadata group takes, encoded (as it travels
/// in a Raft entry). Requests that become commands are bounded below this
/// at admission (offsets per commit, metadata bytes, owned partitions:
/// see the broker's services), and `MetadataNode::propose` refuses
/// anything over it, so no entry is too large to replicate: one 12 MB
/// commit used to stall the group until an election.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    V1(CommandV1),
}

impl Command {
    /// Its size in a Raft entry, refused over [`MAX_COMMAND_BYTES`].
    pub fn check_size(&self) -> Result<(), crate::MetadataError> {
        let bytes = postcard::to_stdvec(self).map_err(|error| crate::MetadataError::Raft(error.to_string()))?.len();
        if bytes > MAX_COMMAND_BYTES {
            return Err(crate::MetadataError::CommandTooLarge { bytes, limit: MAX_COMMAND_BYTES });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandV1 {
    /// A broker joined or restarted at `address`; it counts as alive.
    /// A new incarnation of a registered broker is a restart: it is
    /// fenced first (see `ClusterState::register_broker`). Answered with
    /// `Outcome::Registered`.
    RegisterBroker {
        broker_id: BrokerId,
        address: String,
        /// This start of the broker; the same one again is a repeat of
        /// the registration (a retry), not a restart.
        #[serde(default)]
        incarnation: Incarnation,
        /// The broker's data directory: another one than it registered
        /// with before means it lost every replica it held.
        #[serde(default)]
        directory_id: DirectoryId,
        /// The cluster the directory belongs to; `None` for a directory
        /// that has not joined a cluster yet.
        #[serde(default)]
        cluster_id: Option<ClusterId>,
        /// Replicas that may not hold all they acknowledged although the
        /// directory is the one the broker had (by topic id and
        /// partition): their files are gone, or the machine restarted
        /// after they were last closed uncleanly (a power loss).
        #[serde(default)]
        lost_replicas: Vec<(TopicId, u32)>,
        /// Where Kafka clients reach it (`host:port`); empty without a
        /// Kafka listener.
        #[serde(default)]
        kafka_address: String,
    },
    /// The controller saw a broker's session expire (or a dead one come
    /// back). A broker going down loses the leadership of its partitions to
    /// another ISR member (epoch + 1) and leaves every ISR.
    SetBrokerAlive {
        broker_id: BrokerId,
        alive: bool,
    },
    /// A broker about to stop (Kafka's controlled shutdown): as a broker
    /// going down (its leaderships move to other ISR members, it leaves
    /// every ISR), but it stays down until it registers again, whatever
    /// heartbeats were still on their way.
    ControlledShutdown {
        broker_id: BrokerId,
    },
    /// A topic with replicas already assigned (see `assignment.rs`): the
    /// first replica of each partition leads, at epoch 0, ISR = replicas.
    CreateTopic {
        name: String,
        /// Chosen by the proposer (random), so `apply` stays deterministic.
        topic_id: TopicId,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
        assignments: Vec<Vec<BrokerId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Replaces a topic's configs (validated by the proposer); the topic
    /// id guards against a topic deleted and created again meanwhile.
    AlterTopicConfig {
        name: String,
        topic_id: TopicId,
        configs: BTreeMap<String, String>,
    },
    /// Grows a topic to `assignments.len()` partitions more (Kafka's
    /// CreatePartitions: only up); each new partition led by its first
    /// replica at epoch 0.
    CreatePartitions {
        name: String,
        topic_id: TopicId,
        /// The partition count the proposer saw: refused if it changed.
        current: u32,
        assignments: Vec<Vec<BrokerId>>,
    },
    /// A partition leader's request to change its ISR, valid only for the
    /// epoch it leads in.
    ChangeIsr {
        topic: String,
        /// The topic the leader's replica belongs to: a proposal for a
        /// topic deleted and created again under the name is refused.
        topic_id: TopicId,
        partition: u32,
        leader_epoch: LeaderEpoch,
        /// The partition epoch (ISR version) the change was built on.
        partition_epoch: u32,
        isr: Vec<BrokerId>,
        /// An expansion's new member and the broker epoch of the
        /// incarnation the leader saw caught up: refused if that broker
        /// registered again since (KIP-903).
        #[serde(default)]
        joining: Option<(BrokerId, BrokerEpoch)>,
    },
    CommitOffsets {
        group: String,
        offsets: Vec<OffsetCommit>,
    },
    /// A broker takes the next block of producer ids to hand out to
    /// producers without a key (Kafka's `ProducerIdManager`): answered with
    /// `Outcome::ProducerIds`.
    AllocateProducerIds {
        broker_id: BrokerId,
    },
    /// A producer that names itself (`key`) starts: the first one under the
    /// key gets a new id at epoch 0, a restart the same id at the next
    /// epoch (fencing its predecessor's batches); past epoch `i16::MAX`, a
    /// new id. Answered with `Outcome::Producer`.
    InitKeyedProducer {
        key: String,
    },
    /// A consumer group member's heartbeat that changes the group (a
    /// join, a new subscription, a confirmed revocation, a step towards
    /// the target): answered with `Outcome::GroupMember`.
    GroupHeartbeat(GroupHeartbeat),
    /// Members that left, or whose sessions the coordinator saw expire.
    RemoveGroupMembers {
        group: String,
        member_ids: Vec<String>,
    },
    /// Offsets of many groups at once (the coordinator batches the
    /// commits that arrive while a proposal is in flight), each checked
    /// on its own: answered with `Outcome::Committed`, one result each.
    CommitGroupOffsets {
        commits: Vec<GroupCommit>,
    },
    /// Forgets a group with no members: its offsets and its state.
    DeleteGroup {
        group: String,
    },
    /// The controller's periodic pass over groups (Kafka's
    /// `offsets.retention.minutes`): a group with no members whose offsets
    /// and state have not changed for `retention_ms` is forgotten. Time is
    /// the proposer's clock (`now_ms`), so every broker applies the same:
    /// a pass marks each empty group it finds changed (or unmarked) with
    /// `now_ms`, and a later pass expires those still unchanged since
    /// their mark by `retention_ms`. Answered with `Outcome::GroupsExpired`.
    ExpireGroups {
        now_ms: i64,
        retention_ms: u64,
    },
    /// Brokers report the producer keys whose ids appended to a replica
    /// they host since their last report: each counts as a use of the key
    /// (unknown keys are skipped).
    ProducerKeysActive {
        keys: Vec<String>,
    },
    /// The controller's periodic pass over producer keys (Kafka's
    /// `transactional.id.expiration.ms`): a key neither initialised nor
    /// reported appending for `expiration_ms` is forgotten, so a later
    /// `InitKeyedProducer` under it gets a new id at epoch 0. Marked and
    /// swept like `ExpireGroups`, on the proposer's clock. Answered with
    /// `Outcome::ProducerKeysExpired`.
    ExpireProducerKeys {
        now_ms: i64,
        expiration_ms: u64,
    },
}

impl CommandV1 {
    /// The registration of a broker's incarnation that holds every replica
    /// its directory ever held, in a directory that has joined no cluster
    /// yet (what tests and the simulation register with).
    pub fn register(
        broker_id: BrokerId,
        address: impl Into<String>,
        incarnation: Incarnation,
        directory_id: DirectoryId,
    ) -> CommandV1 {
        CommandV1::RegisterBroker {
            broker_id,
            address: address.into(),
            incarnation,
            directory_id,
            cluster_id: None,
            lost_replicas: Vec::new(),
            kafka_address: String::new(),
        }
    }
}

/// One group's share of a `CommitGroupOffsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommit {
    pub group: String,
    pub committer: Committer,
    pub offsets: Vec<OffsetCommit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub metadata: String,
    /// The topic the committer saw (set by the broker at admission): a
    /// commit queued before the topic was deleted and created again is
    /// refused rather than land on the new topic. `None`: not checked.
    #[serde(default)]
    pub topic_id: Option<TopicId>,
}

/// The most bytes a string's length or an enum's tag takes encoded, and
/// the most a number does (postcard's varints).
const LENGTH_BYTES: usize = 5;
const NUMBER_BYTES: usize = 10;
/// An optional topic id: a tag and 16 bytes with its length.
const TOPIC_ID_BYTES: usize = 1 + LENGTH_BYTES + 16;

impl GroupCommit {
    /// At least its encoded size in a command: what the coordinator adds
    /// up to keep a batch of commits under [`MAX_COMMAND_BYTES`].
    pub fn encoded_bytes_bound(&self) -> usize {
        let committer = match &self.committer {
            Committer::Member { member_id, .. } => LENGTH_BYTES + member_id.len() + NUMBER_BYTES,
            Committer::Standalone | Committer::Reset => 0,
        };
        let offsets: usize = self.offsets.iter().map(OffsetCommit::encoded_bytes_bound).sum();
        LENGTH_BYTES + self.group.len() + LENGTH_BYTES + committer + LENGTH_BYTES + offsets
    }
}

impl OffsetCommit {
    /// At least its encoded size (see `GroupCommit::encoded_bytes_bound`).
    pub fn encoded_bytes_bound(&self) -> usize {
        2 * LENGTH_BYTES + self.topic.len() + self.metadata.len() + 2 * NUMBER_BYTES + TOPIC_ID_BYTES
    }
}

/// What applying a command did, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// Leadership moved.
    LeadersChanged(Vec<LeaderChange>),
    /// Producer ids `first..first + count` are the proposer's to hand out.
    ProducerIds {
        first: i64,
        count: u32,
    },
    /// The keyed producer's id and epoch.
    Producer {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// A group member's epoch and the partitions it may own now.
    GroupMember {
        member_epoch: u32,
        assigned: BTreeSet<Partition>,
    },
    /// Per `GroupCommit`, in order: committed, or why not.
    Committed(Vec<Result<(), CommandError>>),
    /// How many groups an `ExpireGroups` forgot.
    GroupsExpired(u32),
    /// A broker's registration: the epoch of its incarnation, and the
    /// cluster's id (to write into its data directory).
    Registered {
        broker_epoch: BrokerEpoch,
        cluster_id: ClusterId,
        /// Leaderships the registration moved (a restart is fenced).
        moved: Vec<LeaderChange>,
    },
    /// How many producer keys an `ExpireProducerKeys` forgot.
    ProducerKeysExpired(u32),
}

/// One partition whose leadership a command moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderChange {
    pub topic: String,
    pub partition: u32,
    /// The new leader; `None` while no in-sync replica is alive.
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
}

/// Why a command was refused. Refusals are part of the replicated
/// history: every broker refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("group '{group}' has {max_size} members, the most group_max_size allows")]
    GroupMaxSizeReached { group: String, max_size: u32 },
    #[error("topic '{topic}' is not the topic with id {topic_id} (it was deleted and created again)")]
    TopicIdMismatch { topic: String, topic_id: TopicId },
    #[error("topic id {topic_id} is already in use")]
    TopicIdInUse { topic_id: TopicId },
    #[error("topic '{topic}' already exists")]
    TopicAlreadyExists { topic: String },
    #[error("topic '{topic}' does not exist")]
    UnknownTopic { topic: String },
    #[error("topic '{topic}' has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition { topic: String, partition: u32, partitions: u32 },
    #[error("broker {broker_id} is not registered")]
    UnknownBroker { broker_id: BrokerId },
    #[error(
        "broker {broker_id}'s data directory belongs to cluster {directory_cluster}, not to this cluster \
         ({cluster}): start it with its own directory, or an empty one"
    )]
    ForeignDirectory { broker_id: BrokerId, directory_cluster: ClusterId, cluster: ClusterId },
    #[error("replication factor {requested} is invalid: {alive} broker(s) are alive")]
    InvalidReplicationFactor { requested: u32, alive: u32 },
    #[error("invalid assignment: {reason}")]
    InvalidAssignment { reason: String },
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("stale leader epoch {epoch} for {topic}-{partition}: the current epoch is {current}")]
    StaleLeaderEpoch { topic: String, partition: u32, epoch: LeaderEpoch, current: LeaderEpoch },
    #[error("stale partition epoch {epoch} for {topic}-{partition}: the ISR changed since (now at {current})")]
    StalePartitionEpoch { topic: String, partition: u32, epoch: u32, current: u32 },
    #[error("invalid producer key '{key}': {reason}")]
    InvalidProducerKey { key: String, reason: String },
    #[error("invalid ISR for {topic}-{partition}: {reason}")]
    InvalidIsr { topic: String, partition: u32, reason: String },
    #[error(
        "broker {broker_id} cannot join the ISR as incarnation epoch {epoch}: it registered again since (epoch \
         {current} now), and must catch up as that incarnation"
    )]
    StaleBrokerEpoch { broker_id: BrokerId, epoch: BrokerEpoch, current: BrokerEpoch },
    #[error("member '{member_id}' is not in group '{group}' (it left or its session expired); join again")]
    UnknownMemberId { group: String, member_id: String },
    #[error("member '{member_id}' of group '{group}' is at epoch {current}, not {epoch}; join again")]
    FencedMemberEpoch { group: String, member_id: String, epoch: u32, current: u32 },
    #[error("member '{member_id}' of group '{group}' committed at epoch {epoch}; it is at {current} now")]
    StaleMemberEpoch { group: String, member_id: String, epoch: u32, current: u32 },
    #[error("group '{group}' has {members} live member(s); only they commit, and it cannot be reset or deleted")]
    GroupNotEmpty { group: String, members: usize },
    #[error("group '{group}' does not exist")]
    UnknownGroup { group: String },
    #[error("invalid request for group '{group}': {reason}")]
    InvalidGroupRequest { group: String, reason: String },
}

/// The state machine's answer to one command.
pub type CommandResult = Result<Outcome, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commits_bound_is_never_below_its_encoded_size() {
        let offsets = (0..50)
            .map(|index| OffsetCommit {
                topic: format!("topic-{index}"),
                partition: u32::MAX - index,
                offset: i64::MAX - i64::from(index),
                metadata: "m".repeat(index as usize * 80),
                topic_id: Some(TopicId::random()),
            })
            .collect();
        let member = Committer::Member { member_id: "x".repeat(64), member_epoch: u32::MAX };
        for committer in [member, Committer::Standalone, Committer::Reset] {
            let commit = GroupCommit { group: "g".repeat(255), committer, offsets: Vec::clone(&offsets) };
            let bound = commit.encoded_bytes_bound();
            let command = Command::V1(CommandV1::CommitGroupOffsets { commits: vec![commit] });
            let encoded = postcard::to_stdvec(&command).expect("encodes").len();
            assert!(encoded <= bound + 16, "{encoded} bytes encoded, bound {bound}");
        }
    }

    #[test]
    fn a_command_over_the_limit_is_refused_by_size() {
        let metadata = "m".repeat(4096);
        let offsets = (0..300)
            .map(|partition| OffsetCommit {
                topic: "t".into(),
                partition,
                offset: 0,
                metadata: metadata.clone(),
                topic_id: None,
            })
            .collect();
        let command = Command::V1(CommandV1::CommitOffsets { group: "g".into(), offsets });
        match command.check_size() {
            Err(crate::MetadataError::CommandTooLarge { bytes, limit }) => {
                assert!(bytes > 1_200_000 && limit == MAX_COMMAND_BYTES, "{bytes} {limit}")
            }
            other => panic!("{other:?}"),
        }
    }
}
