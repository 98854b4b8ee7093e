//! What applying a metadata command costs as the state grows: one offset
//! commit applied and the state published (the copy every broker's state
//! machine hands the broker after each command), at 100 and at 100,000
//! consumer groups; the snapshot's size; an expiry pass over all of them.
//!
//! The reference, measured in the same run: a deep copy of the same
//! offsets held in a `std` `BTreeMap`, which is what publishing cost
//! before the state's group maps shared their unchanged parts.
//!
//! And a join's cost inside `apply` (the group's target assignment is
//! computed over its members and partitions) at 10 and at 1,000 members
//! (`group_max_size`'s default) on a topic of 1,000 partitions.
//!
//! `cargo bench -p brook-metadata --bench apply`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook_metadata::{
    assign_replicas, BrokerId, ClusterState, Command, CommandV1, DirectoryId, Incarnation, OffsetCommit, Outcome,
};
use brook_record::TopicId;

const COMMITS_TIMED: u32 = 1_000;

fn command(command: CommandV1) -> Command {
    Command::V1(command)
}

/// A state with one broker and a topic `name` of `partitions` partitions.
fn state_with_topic(name: &str, partitions: u32) -> ClusterState {
    let mut state = ClusterState::default();
    state
        .apply(&command(CommandV1::register(BrokerId(1), "b1:9092", Incarnation::random(), DirectoryId::random())))
        .expect("register");
    let assignments = assign_replicas(&[BrokerId(1)], partitions, 1, 0).expect("assign");
    state
        .apply(&command(CommandV1::CreateTopic {
            name: name.into(),
            topic_id: TopicId::random(),
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignments,
        }))
        .expect("create");
    state
}

/// A state with one broker, a topic of 10 partitions and `groups` groups
/// of 10 committed offsets each (64 bytes of metadata apiece).
fn state_with_groups(groups: usize) -> ClusterState {
    let mut state = state_with_topic("t", 10);
    for group in 0..groups {
        state.apply(&commit(&format!("group-{group:06}"), 1)).expect("commit");
    }
    state
}

fn commit(group: &str, offset: i64) -> Command {
    let offsets = (0..10)
        .map(|partition| OffsetCommit {
            topic: "t".into(),
            partition,
            offset,
            metadata: "m".repeat(64),
            topic_id: None,
        })
        .collect();
    command(CommandV1::CommitOffsets { group: group.into(), offsets })
}

fn per_commit(elapsed: Duration) -> String {
    format!("{:.1} µs", elapsed.as_secs_f64() * 1e6 / f64::from(COMMITS_TIMED))
}

/// A group of `members` members on a 1,000-partition topic; the time the
/// last join took to apply.
fn last_join(members: usize) -> Duration {
    let mut state = state_with_topic("wide", 1000);
    let join = |member: usize| {
        command(CommandV1::GroupHeartbeat(brook_metadata::GroupHeartbeat {
            group: "g".into(),
            member_id: format!("member-{member:04}"),
            member_epoch: 0,
            subscribed: Some(["wide".to_string()].into()),
            owned: None,
            assignor: None,
            session_timeout_ms: 45_000,
            client_id: String::new(),
            max_size: Some(1000),
        }))
    };
    for member in 0..members - 1 {
        state.apply(&join(member)).expect("join");
    }
    let started = Instant::now();
    state.apply(&join(members - 1)).expect("the last join");
    started.elapsed()
}

fn main() {
    println!("| groups | apply + publish, per commit | deep copy of the offsets (reference) | snapshot (JSON) | expiry pass |");
    println!("|---|---|---|---|---|");
    for groups in [100, 100_000] {
        let mut state = state_with_groups(groups);
        // Commit to existing groups, as consumers do; publish after each.
        let started = Instant::now();
        let mut published = Vec::with_capacity(2);
        for round in 0..COMMITS_TIMED {
            let group = format!("group-{:06}", round as usize % groups);
            state.apply(&commit(&group, i64::from(round) + 2)).expect("commit");
            published.push(std::sync::Arc::new(state.clone()));
            if published.len() > 1 {
                published.remove(0);
            }
        }
        let applied = started.elapsed();

        let deep: BTreeMap<String, _> =
            state.offsets.iter().map(|(group, offsets)| (group.clone(), offsets.clone())).collect();
        let started = Instant::now();
        let copies = 10.min(COMMITS_TIMED);
        for _ in 0..copies {
            std::hint::black_box(deep.clone());
        }
        let deep_copy = started.elapsed() / copies;

        let snapshot = serde_json::to_vec(&state).expect("serialise").len();
        let started = Instant::now();
        let marked = state.apply(&command(CommandV1::ExpireGroups { now_ms: 0, retention_ms: 1 })).expect("mark");
        let expired = state.apply(&command(CommandV1::ExpireGroups { now_ms: 1, retention_ms: 1 })).expect("expire");
        let expiry = started.elapsed() / 2;
        assert_eq!(marked, Outcome::GroupsExpired(0));
        assert_eq!(expired, Outcome::GroupsExpired(groups as u32), "every group expired");
        assert!(state.offsets.is_empty());
        println!(
            "| {groups} | {} | {:.1} µs | {:.1} MiB | {:.1} ms |",
            per_commit(applied),
            deep_copy.as_secs_f64() * 1e6,
            snapshot as f64 / f64::from(1 << 20),
            expiry.as_secs_f64() * 1e3
        );
    }
    println!();
    println!("| members (1,000 partitions) | the last join, applied |");
    println!("|---|---|");
    for members in [10, 1000] {
        println!("| {members} | {:.2} ms |", last_join(members).as_secs_f64() * 1e3);
    }
}
