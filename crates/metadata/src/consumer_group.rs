//! Consumer groups as the metadata group keeps them (KIP-848's model):
//! members with their epochs, subscriptions and assignments, and the
//! group's target assignment. Every change is a committed command applied
//! here deterministically, so the group survives its coordinator (the
//! controller) and the next controller goes on from the same state.
//!
//! Ownership: a partition belongs to a member from the moment the
//! coordinator assigns it (`assigned`) until the member confirms, in a
//! heartbeat that no longer reports it, that it gave it up (`revoking`
//! until then). A partition is never given to a member while another one
//! owns it, so two members never consume the same partition at once.
//!
//! Epochs: the group epoch moves whenever the target is recomputed
//! (a member joins, leaves, changes its subscription, or a subscribed
//! topic's partition count changes); a member's epoch moves to the group
//! epoch whenever its own assignment changes. A heartbeat or commit at an
//! epoch the member no longer has is refused; a member removed (it left,
//! or its session expired) is unknown, and must join again at epoch 0
//! with nothing owned.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster_state::TopicRecord;
use crate::command::CommandError;
use crate::group_assignment::{range, uniform, MemberView, Partition};

/// Session timeouts a member may ask for, in ms (Kafka's default is 45 s;
/// tests go down to 1 s).
pub const MIN_SESSION_TIMEOUT_MS: u32 = 1_000;
pub const MAX_SESSION_TIMEOUT_MS: u32 = 300_000;
/// The most topics one member may subscribe to, and the longest member id.
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;
pub const MAX_MEMBER_ID_BYTES: usize = 64;

/// The server-side assignors (KIP-848's `group.remote.assignor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Assignor {
    #[default]
    Uniform,
    Range,
}

impl Assignor {
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub member_epoch: u32,
    /// The epoch before the last move: a member whose heartbeat answer was
    /// lost still speaks at it, and is answered rather than fenced.
    pub previous_epoch: u32,
    pub subscribed: BTreeSet<String>,
    /// What the member may own now (told in its last answer).
    pub assigned: BTreeSet<Partition>,
    /// What it was told to give up and has not yet confirmed giving up.
    pub revoking: BTreeSet<Partition>,
    pub session_timeout_ms: u32,
    pub client_id: String,
}

impl GroupMember {
    fn owns(&self, partition: &Partition) -> bool {
        self.assigned.contains(partition) || self.revoking.contains(partition)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub group_epoch: u32,
    pub assignor: Assignor,
    pub members: BTreeMap<String, GroupMember>,
    /// Where the assignor wants each member's partitions, as of `group_epoch`.
    pub target: BTreeMap<String, BTreeSet<Partition>>,
    /// The partition counts of the subscribed topics `target` was computed
    /// with: a topic created, grown or deleted since makes a new target.
    pub topic_partitions: BTreeMap<String, u32>,
}

/// A member's heartbeat, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeat {
    pub group: String,
    pub member_id: String,
    /// 0 to join (or join again); else the epoch the member last heard.
    pub member_epoch: u32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed: Option<BTreeSet<String>>,
    /// The partitions the member still consumes; `None`: unchanged.
    pub owned: Option<BTreeSet<Partition>>,
    pub assignor: Option<Assignor>,
    pub session_timeout_ms: u32,
    pub client_id: String,
    /// The most members the group may have (Kafka's `group.max.size`),
    /// as the coordinator's setting when it proposed the heartbeat: a new
    /// member past it is refused. `None`: no limit.
    #[serde(default)]
    pub max_size: Option<u32>,
}

/// Who commits offsets for a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Committer {
    /// A member, at the epoch it last heard.
    Member { member_id: String, member_epoch: u32 },
    /// A consumer outside the group protocol (it assigned itself its
    /// partitions): allowed only while the group has no members.
    Standalone,
    /// An operator's offset reset: allowed only while the group has no members.
    Reset,
}

impl ConsumerGroup {
    /// Applies a heartbeat: joins, checks the epoch, takes the member's
    /// subscription and what it still owns, recomputes the target if the
    /// group changed, and moves the member one step towards its target.
    /// Answers the member's epoch and what it may own now.
    pub fn heartbeat(
        &mut self,
        heartbeat: &GroupHeartbeat,
        topics: &BTreeMap<String, TopicRecord>,
    ) -> Result<(u32, BTreeSet<Partition>), CommandError> {
        let group = &heartbeat.group;
        let id = &heartbeat.member_id;
        let mut changed = false;
        if heartbeat.member_epoch == 0 {
            let subscribed = heartbeat.subscribed.clone().unwrap_or_default();
            if subscribed.is_empty() {
                return Err(CommandError::InvalidGroupRequest {
                    group: group.clone(),
                    reason: "a member joins with at least one subscribed topic".into(),
                });
            }
            if let Some(max_size) = heartbeat.max_size {
                if !self.members.contains_key(id) && self.members.len() >= max_size as usize {
                    return Err(CommandError::GroupMaxSizeReached { group: group.clone(), max_size });
                }
            }
            if self.members.is_empty() {
                self.assignor = heartbeat.assignor.unwrap_or_default();
            }
            // Joining again under the same id starts afresh: what the old
            // incarnation owned is released (it may not have committed).
            self.members.insert(
                id.clone(),
                GroupMember {
                    member_epoch: 0,
                    previous_epoch: 0,
                    subscribed,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    session_timeout_ms: heartbeat.session_timeout_ms,
                    client_id: heartbeat.client_id.clone(),
                },
            );
            changed = true;
        } else {
            let member = self
                .members
                .get_mut(id)
                .ok_or_else(|| CommandError::UnknownMemberId { group: group.clone(), member_id: id.clone() })?;
            if heartbeat.member_epoch != member.member_epoch && heartbeat.member_epoch != member.previous_epoch {
                return Err(CommandError::FencedMemberEpoch {
                    group: group.clone(),
                    member_id: id.clone(),
                    epoch: heartbeat.member_epoch,
                    current: member.member_epoch,
                });
            }
            member.session_timeout_ms = heartbeat.session_timeout_ms;
            if let Some(subscribed) = &heartbeat.subscribed {
                if !subscribed.is_empty() && *subscribed != member.subscribed {
                    member.subscribed = subscribed.clone();
                    changed = true;
                }
            }
            if let Some(owned) = &heartbeat.owned {
                member.revoking.retain(|partition| owned.contains(partition));
            }
        }
        if changed || self.topic_partitions != self.subscribed_partition_counts(topics) {
            self.compute_target(topics);
        }
        Ok(self.step(id))
    }

    /// Removes members (they left, or their sessions expired): what they
    /// owned is free for the others. Unknown ids are skipped.
    pub fn remove_members(&mut self, member_ids: &[String], topics: &BTreeMap<String, TopicRecord>) -> usize {
        let before = self.members.len();
        for id in member_ids {
            self.members.remove(id);
        }
        let removed = before - self.members.len();
        if removed > 0 {
            self.compute_target(topics);
        }
        removed
    }

    /// Whether `committer` may commit offsets for this group now.
    pub fn check_commit(&self, group: &str, committer: &Committer) -> Result<(), CommandError> {
        match committer {
            Committer::Member { member_id, member_epoch } => {
                let member = self.members.get(member_id).ok_or_else(|| CommandError::UnknownMemberId {
                    group: group.to_string(),
                    member_id: member_id.clone(),
                })?;
                if *member_epoch != member.member_epoch && *member_epoch != member.previous_epoch {
                    return Err(CommandError::StaleMemberEpoch {
                        group: group.to_string(),
                        member_id: member_id.clone(),
                        epoch: *member_epoch,
                        current: member.member_epoch,
                    });
                }
                Ok(())
            }
            Committer::Standalone | Committer::Reset if !self.members.is_empty() => {
                Err(CommandError::GroupNotEmpty { group: group.to_string(), members: self.members.len() })
            }
            Committer::Standalone | Committer::Reset => Ok(()),
        }
    }

    /// Who owns each partition now (assigned or still revoking).
    pub fn owners(&self) -> BTreeMap<&Partition, &String> {
        let mut owners = BTreeMap::new();
        for (id, member) in &self.members {
            for partition in member.assigned.iter().chain(&member.revoking) {
                owners.insert(partition, id);
            }
        }
        owners
    }

    fn subscribed_partition_counts(&self, topics: &BTreeMap<String, TopicRecord>) -> BTreeMap<String, u32> {
        self.members
            .values()
            .flat_map(|member| &member.subscribed)
            .filter_map(|topic| Some((topic.clone(), topics.get(topic)?.partitions.len() as u32)))
            .collect()
    }

    fn compute_target(&mut self, topics: &BTreeMap<String, TopicRecord>) {
        self.group_epoch += 1;
        self.topic_partitions = self.subscribed_partition_counts(topics);
        let views: BTreeMap<String, MemberView> = self
            .members
            .iter()
            .map(|(id, member)| {
                (id.clone(), MemberView { subscribed: member.subscribed.clone(), owned: member.assigned.clone() })
            })
            .collect();
        self.target = match self.assignor {
            Assignor::Uniform => uniform(&views, &self.topic_partitions),
            Assignor::Range => range(&views, &self.topic_partitions),
        };
    }

    /// One member's step towards its target: what it keeps stays, what
    /// the target no longer holds goes to revoking, and target partitions
    /// no other member owns are assigned.
    fn step(&mut self, id: &str) -> (u32, BTreeSet<Partition>) {
        let empty = BTreeSet::new();
        let wanted = self.target.get(id).unwrap_or(&empty).clone();
        let taken: BTreeSet<Partition> = self
            .members
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .flat_map(|(_, member)| member.assigned.iter().chain(&member.revoking).cloned())
            .collect();
        let group_epoch = self.group_epoch;
        let member = self.members.get_mut(id).expect("the member was found or inserted above");
        let before = (member.assigned.clone(), member.revoking.clone());
        let (keep, give_up): (BTreeSet<Partition>, BTreeSet<Partition>) =
            member.assigned.iter().cloned().partition(|partition| wanted.contains(partition));
        member.assigned = keep;
        member.revoking.extend(give_up);
        for partition in &wanted {
            if member.revoking.remove(partition) || !member.owns(partition) && !taken.contains(partition) {
                member.assigned.insert(partition.clone());
            }
        }
        let moved = member.member_epoch == 0 || before != (member.assigned.clone(), member.revoking.clone());
        if moved && member.member_epoch != group_epoch {
            member.previous_epoch = member.member_epoch;
            member.member_epoch = group_epoch;
        }
        debug_assert!(member.assigned.is_disjoint(&member.revoking));
        (member.member_epoch, member.assigned.clone())
    }
}

#[cfg(test)]
mod tests {
    use brook_record::{BrokerId, LeaderEpoch, TopicId};

    use super::*;
    use crate::cluster_state::PartitionRecord;

    fn topics(spec: &[(&str, u32)]) -> BTreeMap<String, TopicRecord> {
        spec.iter()
            .map(|(name, count)| {
                let partition = PartitionRecord {
                    replicas: vec![BrokerId(1)],
                    leader: Some(BrokerId(1)),
                    leader_epoch: LeaderEpoch(0),
                    isr: vec![BrokerId(1)],
                    partition_epoch: 0,
                    lost_by: None,
                };
                let record = TopicRecord {
                    name: name.to_string(),
                    id: TopicId::random(),
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                    partitions: vec![partition; *count as usize],
                };
                (name.to_string(), record)
            })
            .collect()
    }

    fn join(member_id: &str, topic: &str) -> GroupHeartbeat {
        GroupHeartbeat {
            group: "g".into(),
            member_id: member_id.into(),
            member_epoch: 0,
            subscribed: Some([topic.to_string()].into()),
            owned: Some(BTreeSet::new()),
            assignor: None,
            session_timeout_ms: 45_000,
            client_id: "test".into(),
            max_size: None,
        }
    }

    fn beat(member_id: &str, epoch: u32, owned: &BTreeSet<Partition>) -> GroupHeartbeat {
        GroupHeartbeat { member_epoch: epoch, subscribed: None, owned: Some(owned.clone()), ..join(member_id, "") }
    }

    /// Heartbeats every member, each reporting what it was last told to
    /// own, until nothing moves; each member's (epoch, owned).
    fn settle(
        group: &mut ConsumerGroup,
        topics: &BTreeMap<String, TopicRecord>,
        members: &mut BTreeMap<String, (u32, BTreeSet<Partition>)>,
    ) {
        for _ in 0..10 {
            // A member's answer can stay the same while the group moves (a
            // confirmed revocation frees a partition for the next round).
            let before = (members.clone(), group.clone());
            for (id, (epoch, owned)) in members.iter_mut() {
                let (next_epoch, assigned) = group.heartbeat(&beat(id, *epoch, owned), topics).expect("heartbeat");
                *epoch = next_epoch;
                *owned = assigned;
            }
            if (members.clone(), group.clone()) == before {
                return;
            }
        }
        panic!("the group did not settle: {group:?}");
    }

    fn assert_no_partition_owned_twice(members: &BTreeMap<String, (u32, BTreeSet<Partition>)>) {
        let mut seen = BTreeSet::new();
        for (_, owned) in members.values() {
            for partition in owned {
                assert!(seen.insert(partition.clone()), "{partition:?} is consumed by two members");
            }
        }
    }

    #[test]
    fn a_joining_member_gets_a_partition_only_after_its_owner_gives_it_up() {
        let topics = topics(&[("orders", 6)]);
        let mut group = ConsumerGroup::default();
        let mut members = BTreeMap::new();
        for id in ["a", "b", "c"] {
            let (epoch, owned) = group.heartbeat(&join(id, "orders"), &topics).expect("join");
            members.insert(id.to_string(), (epoch, owned));
        }
        settle(&mut group, &topics, &mut members);
        assert!(members.values().all(|(_, owned)| owned.len() == 2), "{members:?}");
        let before = members.clone();

        let (epoch_d, owned_d) = group.heartbeat(&join("d", "orders"), &topics).expect("join");
        assert!(owned_d.is_empty(), "d waits: every partition is owned");
        members.insert("d".into(), (epoch_d, owned_d));
        // The members are told one at a time, as heartbeats arrive: at
        // every step no partition is consumed twice.
        for _ in 0..10 {
            for id in ["a", "b", "c", "d"] {
                let (epoch, owned) = members[id].clone();
                let answer = group.heartbeat(&beat(id, epoch, &owned), &topics).expect("heartbeat");
                members.insert(id.to_string(), answer);
                assert_no_partition_owned_twice(&members);
            }
        }
        assert_eq!(members["d"].1.len(), 1);
        let moved: usize = ["a", "b", "c"].iter().map(|id| before[*id].1.difference(&members[*id].1).count()).sum();
        assert_eq!(moved, 1, "only the partition d takes moves");
    }

    #[test]
    fn a_removed_member_is_unknown_and_its_partitions_go_to_the_others() {
        let topics = topics(&[("orders", 4)]);
        let mut group = ConsumerGroup::default();
        let mut members = BTreeMap::new();
        for id in ["a", "b"] {
            members.insert(id.to_string(), group.heartbeat(&join(id, "orders"), &topics).expect("join"));
        }
        settle(&mut group, &topics, &mut members);
        let (epoch_a, _) = members["a"].clone();
        group.remove_members(&["a".to_string()], &topics);
        members.remove("a");
        settle(&mut group, &topics, &mut members);
        assert_eq!(members["b"].1.len(), 4);
        let refused = group.heartbeat(&beat("a", epoch_a, &BTreeSet::new()), &topics);
        assert!(matches!(refused, Err(CommandError::UnknownMemberId { .. })), "{refused:?}");
        let commit = group.check_commit("g", &Committer::Member { member_id: "a".into(), member_epoch: epoch_a });
        assert!(matches!(commit, Err(CommandError::UnknownMemberId { .. })), "{commit:?}");
        assert!(group.check_commit("g", &Committer::Reset).is_err(), "b is live");
    }

    #[test]
    fn an_old_epoch_is_fenced_and_a_commit_at_it_is_stale() {
        let topics = topics(&[("orders", 2)]);
        let mut group = ConsumerGroup::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_string(), group.heartbeat(&join("a", "orders"), &topics).expect("join"));
        members.insert("b".to_string(), group.heartbeat(&join("b", "orders"), &topics).expect("join"));
        settle(&mut group, &topics, &mut members);
        let epoch = group.members["a"].member_epoch;
        let fenced = group.heartbeat(&beat("a", epoch + 5, &BTreeSet::new()), &topics);
        assert!(matches!(fenced, Err(CommandError::FencedMemberEpoch { .. })), "{fenced:?}");
        let stale = group.check_commit("g", &Committer::Member { member_id: "a".into(), member_epoch: epoch + 5 });
        assert!(matches!(stale, Err(CommandError::StaleMemberEpoch { .. })), "{stale:?}");
        assert!(group.check_commit("g", &Committer::Member { member_id: "a".into(), member_epoch: epoch }).is_ok());
    }

    #[test]
    fn the_range_assignor_named_by_the_first_member_gives_contiguous_ranges() {
        let topics = topics(&[("orders", 5)]);
        let mut group = ConsumerGroup::default();
        let mut members = BTreeMap::new();
        let first = GroupHeartbeat { assignor: Some(Assignor::Range), ..join("a", "orders") };
        members.insert("a".to_string(), group.heartbeat(&first, &topics).expect("join"));
        // A later member's choice does not change the group's assignor.
        let second = GroupHeartbeat { assignor: Some(Assignor::Uniform), ..join("b", "orders") };
        members.insert("b".to_string(), group.heartbeat(&second, &topics).expect("join"));
        settle(&mut group, &topics, &mut members);
        assert_eq!(group.assignor, Assignor::Range);
        let partitions = |id: &str| members[id].1.iter().map(|(_, partition)| *partition).collect::<Vec<_>>();
        assert_eq!(partitions("a"), [0, 1, 2]);
        assert_eq!(partitions("b"), [3, 4]);
    }

    #[test]
    fn a_new_partition_count_makes_a_new_target() {
        let mut topics = topics(&[("orders", 2)]);
        let mut group = ConsumerGroup::default();
        let mut members = BTreeMap::new();
        members.insert("a".to_string(), group.heartbeat(&join("a", "orders"), &topics).expect("join"));
        settle(&mut group, &topics, &mut members);
        let epoch = group.group_epoch;
        let grown = topics.get_mut("orders").expect("topic");
        grown.partitions.push(grown.partitions[0].clone());
        settle(&mut group, &topics, &mut members);
        assert!(group.group_epoch > epoch);
        assert_eq!(members["a"].1.len(), 3);
    }

    proptest::proptest! {
        /// Any order of joins, leaves, heartbeats and topic growth: the
        /// partitions members consume (what each last heard it may own)
        /// never overlap, and once everyone has heartbeated enough, every
        /// partition is consumed.
        #[test]
        fn members_never_consume_the_same_partition(
            ops in proptest::collection::vec((0u8..4, 0usize..5), 1..60),
        ) {
            let ids = ["a", "b", "c", "d", "e"];
            let mut topics = topics(&[("orders", 7)]);
            let mut group = ConsumerGroup::default();
            // What each live member consumes, with its epoch.
            let mut members: BTreeMap<String, (u32, BTreeSet<Partition>)> = BTreeMap::new();
            for (op, who) in ops {
                let id = ids[who];
                match op {
                    0 if !members.contains_key(id) => {
                        let answer = group.heartbeat(&join(id, "orders"), &topics).expect("join");
                        members.insert(id.to_string(), answer);
                    }
                    1 if members.contains_key(id) => {
                        group.remove_members(&[id.to_string()], &topics);
                        members.remove(id);
                    }
                    2 => {
                        let grown = topics.get_mut("orders").expect("topic");
                        if grown.partitions.len() < 12 {
                            grown.partitions.push(grown.partitions[0].clone());
                        }
                    }
                    _ => {
                        if let Some((epoch, owned)) = members.get(id).cloned() {
                            let answer = group.heartbeat(&beat(id, epoch, &owned), &topics).expect("heartbeat");
                            members.insert(id.to_string(), answer);
                        }
                    }
                }
                assert_no_partition_owned_twice(&members);
            }
            if !members.is_empty() {
                settle(&mut group, &topics, &mut members);
                let consumed: usize = members.values().map(|(_, owned)| owned.len()).sum();
                proptest::prop_assert_eq!(consumed, topics["orders"].partitions.len());
            }
        }
    }

    #[test]
    fn a_group_at_its_max_size_refuses_new_members_but_not_its_own() {
        let topics = topics(&[("orders", 4)]);
        let mut group = ConsumerGroup::default();
        let capped = |member: &str| GroupHeartbeat { max_size: Some(2), ..join(member, "orders") };
        group.heartbeat(&capped("a"), &topics).expect("a joins");
        group.heartbeat(&capped("b"), &topics).expect("b joins");
        let refused = group.heartbeat(&capped("c"), &topics);
        assert_eq!(refused, Err(CommandError::GroupMaxSizeReached { group: "g".into(), max_size: 2 }));
        group.heartbeat(&capped("a"), &topics).expect("a member joining again is no new member");
        assert_eq!(group.members.len(), 2);
    }
}
