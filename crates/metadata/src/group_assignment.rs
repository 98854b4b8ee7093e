//! Server-side partition assignment for consumer groups (the assignors of
//! Kafka's KIP-848 protocol), as pure functions of the group's members and
//! the topics' partition counts, so that every broker computes the same
//! target from the same state.
//!
//! - [`uniform`]: balanced and sticky. Every member subscribed to a topic
//!   may own its partitions; each member ends with its fair share (the
//!   counts differ by at most one among members with the same
//!   subscriptions), and a partition stays with its current owner whenever
//!   that owner is still subscribed and not above its share, so a member
//!   joining or leaving moves only the partitions that must move. With
//!   every member on the same subscriptions a settled group keeps its
//!   assignment; with mixed subscriptions the shares can shift with
//!   ownership, and a partition may move once more before it settles.
//! - [`range`]: Kafka's range assignor, per topic: the topic's partitions
//!   in order, split into contiguous ranges over its subscribers sorted by
//!   id, the first `partitions % members` getting one more.
//!
//! [`reconcile`] is the incremental step: a member is given a partition of
//! its target only once no other member still owns it, and is asked to
//! revoke what its target no longer holds; members whose partitions do not
//! move keep them throughout (no stop-the-world rebalance).

use std::collections::{BTreeMap, BTreeSet};

/// One partition of a topic.
pub type Partition = (String, u32);

/// What the assignors know of a member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberView {
    /// Topics the member subscribes to.
    pub subscribed: BTreeSet<String>,
    /// Partitions the member owns now (what it last reported).
    pub owned: BTreeSet<Partition>,
}

/// Every member, with nothing assigned yet.
fn empty_targets(members: &BTreeMap<String, MemberView>) -> BTreeMap<String, BTreeSet<Partition>> {
    members.keys().map(|member| (member.clone(), BTreeSet::new())).collect()
}

/// The members subscribed to `topic`, by id.
fn subscribers_of<'a>(members: &'a BTreeMap<String, MemberView>, topic: &str) -> Vec<&'a String> {
    members.iter().filter(|(_, view)| view.subscribed.contains(topic)).map(|(id, _)| id).collect()
}

/// Balanced, sticky assignment of every subscribed topic's partitions.
pub fn uniform(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Partition>> {
    let mut target = empty_targets(members);
    // Every partition some member subscribes to, with its candidates.
    let mut candidates: BTreeMap<Partition, Vec<&String>> = BTreeMap::new();
    for (topic, count) in partitions {
        let subscribers = subscribers_of(members, topic);
        if subscribers.is_empty() {
            continue;
        }
        for partition in 0..*count {
            candidates.insert((topic.clone(), partition), subscribers.clone());
        }
    }
    // Each member's fair share of the partitions it can take: partitions
    // are spread over the members who can own them, counted per member as
    // the share of each partition's candidate set, rounded per member.
    let quota = quotas(&candidates, members);
    // Stickiness: keep what a member owns while it is still a candidate
    // and under its quota (the lowest-numbered first, for determinism).
    let mut unassigned: Vec<Partition> = Vec::new();
    let mut owner_of: BTreeMap<&Partition, &String> = BTreeMap::new();
    for (member, view) in members {
        for partition in &view.owned {
            owner_of.entry(partition).or_insert(member);
        }
    }
    for (partition, subscribers) in &candidates {
        match owner_of.get(partition) {
            Some(owner)
                if subscribers.contains(owner)
                    && target[owner.as_str()].len() < quota.get(owner.as_str()).copied().unwrap_or(0) =>
            {
                target.get_mut(owner.as_str()).expect("every member has a target").insert(partition.clone());
            }
            _ => unassigned.push(partition.clone()),
        }
    }
    // The rest go to the candidate furthest below its quota (then the one
    // holding fewest, then by id): deterministic, balanced.
    for partition in unassigned {
        let subscribers = &candidates[&partition];
        let chosen = subscribers
            .iter()
            .min_by_key(|member| {
                let held = target[member.as_str()].len();
                let share = quota.get(member.as_str()).copied().unwrap_or(0);
                (held >= share, held, member.as_str().to_string())
            })
            .expect("a candidate set is never empty");
        target.get_mut(chosen.as_str()).expect("every member has a target").insert(partition);
    }
    // A member kept more than its share (what it owned used the room its
    // only-candidate partitions needed): hand the excess to candidates
    // below theirs, partitions it did not own first.
    loop {
        let mut moved = false;
        for member in members.keys() {
            let share = quota.get(member.as_str()).copied().unwrap_or(0);
            if target[member].len() <= share {
                continue;
            }
            let mut held: Vec<Partition> = target[member].iter().cloned().collect();
            held.sort_by_key(|partition| (members[member].owned.contains(partition), partition.clone()));
            for partition in held {
                if target[member].len() <= quota.get(member.as_str()).copied().unwrap_or(0) {
                    break;
                }
                let taker = candidates[&partition]
                    .iter()
                    .filter(|other| {
                        other.as_str() != member
                            && target[other.as_str()].len() < quota.get(other.as_str()).copied().unwrap_or(0)
                    })
                    .min_by_key(|other| (target[other.as_str()].len(), other.as_str().to_string()));
                if let Some(taker) = taker {
                    let taker = (*taker).clone();
                    target.get_mut(member).expect("member").remove(&partition);
                    target.get_mut(&taker).expect("member").insert(partition);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    balance_alike(members, &mut target);
    target
}

/// Members with the same subscriptions can take each other's partitions:
/// within each such class, move from the fullest to the emptiest (what the
/// giver did not own first) until they are within one of each other.
fn balance_alike(members: &BTreeMap<String, MemberView>, target: &mut BTreeMap<String, BTreeSet<Partition>>) {
    let mut classes: BTreeMap<&BTreeSet<String>, Vec<&String>> = BTreeMap::new();
    for (member, view) in members {
        classes.entry(&view.subscribed).or_default().push(member);
    }
    for class in classes.values().filter(|class| class.len() > 1) {
        loop {
            let fullest =
                class.iter().max_by_key(|member| (target[member.as_str()].len(), std::cmp::Reverse(member.as_str())));
            let emptiest = class.iter().min_by_key(|member| (target[member.as_str()].len(), member.as_str()));
            let (Some(fullest), Some(emptiest)) = (fullest, emptiest) else { break };
            if target[fullest.as_str()].len() <= target[emptiest.as_str()].len() + 1 {
                break;
            }
            let owned = &members[fullest.as_str()].owned;
            let partition = target[fullest.as_str()]
                .iter()
                .min_by_key(|partition| (owned.contains(*partition), (*partition).clone()))
                .cloned()
                .expect("the fullest member holds at least two partitions");
            target.get_mut(fullest.as_str()).expect("member").remove(&partition);
            target.get_mut(emptiest.as_str()).expect("member").insert(partition);
        }
    }
}

/// How many partitions each member should hold: the partitions are dealt
/// out, in order, to the candidate holding the fewest so far (on a tie,
/// the one owning more now, so a balanced group keeps its counts); the
/// counts that come out are the shares (members with the same
/// subscriptions end within one of each other).
fn quotas(
    candidates: &BTreeMap<Partition, Vec<&String>>,
    members: &BTreeMap<String, MemberView>,
) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = members.keys().map(|member| (member.clone(), 0)).collect();
    // Partitions with fewer candidates first: they have less choice.
    let mut order: Vec<(&Partition, &Vec<&String>)> = candidates.iter().collect();
    order.sort_by_key(|(partition, subscribers)| (subscribers.len(), (*partition).clone()));
    for (_, subscribers) in order {
        let chosen = subscribers
            .iter()
            .min_by_key(|member| {
                let owned = members[member.as_str()].owned.len();
                (counts[member.as_str()], std::cmp::Reverse(owned), member.as_str().to_string())
            })
            .expect("a candidate set is never empty");
        *counts.get_mut(chosen.as_str()).expect("counted") += 1;
    }
    counts
}

/// Kafka's range assignor: per topic, contiguous ranges of partitions
/// over the topic's subscribers sorted by member id.
pub fn range(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Partition>> {
    let mut target = empty_targets(members);
    for (topic, count) in partitions {
        let subscribers = subscribers_of(members, topic);
        if subscribers.is_empty() {
            continue;
        }
        let (per_member, extra) = (*count as usize / subscribers.len(), *count as usize % subscribers.len());
        let mut next = 0u32;
        for (index, member) in subscribers.iter().enumerate() {
            let take = per_member + usize::from(index < extra);
            let owned = target.get_mut(member.as_str()).expect("every member has a target");
            for partition in next..next + take as u32 {
                owned.insert((topic.clone(), partition));
            }
            next += take as u32;
        }
    }
    target
}

/// One member's next step towards its target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// What the member may own now: what it owns and keeps, plus the
    /// target's partitions no other member still owns.
    pub assigned: BTreeSet<Partition>,
    /// What it must give up (commit, then stop fetching) before others may
    /// have it.
    pub revoking: BTreeSet<Partition>,
    /// Target partitions it waits for: another member still owns them.
    pub pending: BTreeSet<Partition>,
}

/// The incremental step for every member: from what each owns now towards
/// `target`. A partition is never assigned to two members at once.
pub fn reconcile(
    members: &BTreeMap<String, MemberView>,
    target: &BTreeMap<String, BTreeSet<Partition>>,
) -> BTreeMap<String, Reconciled> {
    let mut owners: BTreeMap<&Partition, &String> = BTreeMap::new();
    for (member, view) in members {
        for partition in &view.owned {
            owners.entry(partition).or_insert(member);
        }
    }
    let empty = BTreeSet::new();
    members
        .iter()
        .map(|(member, view)| {
            let wanted = target.get(member).unwrap_or(&empty);
            let mut step = Reconciled::default();
            for partition in &view.owned {
                if wanted.contains(partition) {
                    step.assigned.insert(partition.clone());
                } else {
                    step.revoking.insert(partition.clone());
                }
            }
            for partition in wanted.difference(&view.owned) {
                match owners.get(partition) {
                    Some(owner) if *owner != member => {
                        step.pending.insert(partition.clone());
                    }
                    _ => {
                        step.assigned.insert(partition.clone());
                    }
                }
            }
            (member.clone(), step)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A member's id, subscribed topics and owned partitions.
    type MemberSpec<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, u32)]);

    fn members(spec: &[MemberSpec<'_>]) -> BTreeMap<String, MemberView> {
        spec.iter()
            .map(|(id, topics, owned)| {
                let view = MemberView {
                    subscribed: topics.iter().map(|topic| topic.to_string()).collect(),
                    owned: owned.iter().map(|(topic, partition)| (topic.to_string(), *partition)).collect(),
                };
                (id.to_string(), view)
            })
            .collect()
    }

    fn counts(target: &BTreeMap<String, BTreeSet<Partition>>) -> Vec<usize> {
        target.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn three_members_share_six_partitions_two_each_and_a_fourth_takes_from_them_without_moving_the_rest() {
        let topics = BTreeMap::from([("orders".to_string(), 6)]);
        let three = members(&[("a", &["orders"], &[]), ("b", &["orders"], &[]), ("c", &["orders"], &[])]);
        let first = uniform(&three, &topics);
        assert_eq!(counts(&first), [2, 2, 2]);
        // Everyone owns its share; d joins.
        let mut four: BTreeMap<String, MemberView> = first
            .iter()
            .map(|(id, owned)| {
                (id.clone(), MemberView { subscribed: ["orders".to_string()].into(), owned: owned.clone() })
            })
            .collect();
        four.insert("d".into(), MemberView { subscribed: ["orders".to_string()].into(), owned: BTreeSet::new() });
        let second = uniform(&four, &topics);
        let mut sizes = counts(&second);
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 1, 2, 2]);
        // One partition moved (6 over 4 is 2, 2, 1, 1): the least possible.
        let moved: usize = first.iter().map(|(id, owned)| owned.difference(&second[id]).count()).sum();
        assert_eq!(moved, 1);
        // The incremental step: d waits for it until its owner revokes it.
        let steps = reconcile(&four, &second);
        assert_eq!(steps["d"].assigned.len(), 0);
        assert_eq!(steps["d"].pending.len(), 1);
        let revoking: usize = steps.values().map(|step| step.revoking.len()).sum();
        assert_eq!(revoking, 1);
        for (id, step) in &steps {
            if id != "d" {
                assert!(step.pending.is_empty(), "{id} keeps consuming what it keeps");
            }
        }
    }

    #[test]
    fn a_balanced_group_keeps_what_it_owns() {
        let topics = BTreeMap::from([("t".to_string(), 3)]);
        let group = members(&[("a", &["t"], &[("t", 0)]), ("b", &["t"], &[("t", 1), ("t", 2)])]);
        let target = uniform(&group, &topics);
        assert_eq!(target["a"], group["a"].owned);
        assert_eq!(target["b"], group["b"].owned);
    }

    #[test]
    fn range_gives_contiguous_ranges_the_first_members_one_more() {
        let topics = BTreeMap::from([("t".to_string(), 7), ("u".to_string(), 2)]);
        let group = members(&[("m1", &["t", "u"], &[]), ("m2", &["t"], &[]), ("m3", &["t", "u"], &[])]);
        let target = range(&group, &topics);
        let of = |member: &str, topic: &str| -> Vec<u32> {
            target[member].iter().filter(|(t, _)| t == topic).map(|(_, partition)| *partition).collect()
        };
        assert_eq!((of("m1", "t"), of("m2", "t"), of("m3", "t")), (vec![0, 1, 2], vec![3, 4], vec![5, 6]));
        assert_eq!((of("m1", "u"), of("m3", "u")), (vec![0], vec![1]));
    }

    proptest! {
        // PROPTEST_CASES raises the count for a long run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any group, any prior ownership: each partition of a subscribed
        /// topic goes to exactly one subscriber, members with the same
        /// subscriptions are within one of each other, an owner under its
        /// share keeps what it owns, and reconciling never gives one
        /// partition to two members.
        #[test]
        fn uniform_is_complete_exclusive_balanced_and_sticky(
            topic_sizes in proptest::collection::vec(1u32..9, 1..4),
            subscriptions in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 3), 1..7),
            ownership in proptest::collection::vec((0usize..7, 0usize..3, 0u32..9), 0..20),
        ) {
            let topics: BTreeMap<String, u32> =
                topic_sizes.iter().enumerate().map(|(index, size)| (format!("t{index}"), *size)).collect();
            let mut group: BTreeMap<String, MemberView> = BTreeMap::new();
            for (index, flags) in subscriptions.iter().enumerate() {
                let subscribed = topics.keys().zip(flags).filter(|(_, on)| **on).map(|(topic, _)| topic.clone()).collect();
                group.insert(format!("m{index}"), MemberView { subscribed, owned: BTreeSet::new() });
            }
            // Prior ownership, each partition owned at most once.
            let mut taken = BTreeSet::new();
            for (member, topic, partition) in ownership {
                let (Some(member), Some(topic)) = (group.keys().nth(member).cloned(), topics.keys().nth(topic).cloned()) else { continue };
                if partition < topics[&topic] && taken.insert((topic.clone(), partition)) {
                    group.get_mut(&member).expect("member").owned.insert((topic, partition));
                }
            }
            let target = uniform(&group, &topics);
            let mut seen = BTreeSet::new();
            for (member, owned) in &target {
                for partition in owned {
                    prop_assert!(group[member].subscribed.contains(&partition.0), "only to subscribers");
                    prop_assert!(seen.insert(partition.clone()), "exclusive: {partition:?}");
                }
            }
            for (topic, count) in &topics {
                let subscribed = group.values().any(|view| view.subscribed.contains(topic));
                for partition in 0..*count {
                    prop_assert_eq!(seen.contains(&(topic.clone(), partition)), subscribed, "complete");
                }
            }
            for (a, view_a) in &group {
                for (b, view_b) in &group {
                    if view_a.subscribed == view_b.subscribed {
                        let (x, y) = (target[a].len() as i64, target[b].len() as i64);
                        prop_assert!((x - y).abs() <= 1, "balanced: {a} {x}, {b} {y}");
                    }
                }
            }
            let steps = reconcile(&group, &target);
            let mut assigned = BTreeSet::new();
            for step in steps.values() {
                for partition in &step.assigned {
                    prop_assert!(assigned.insert(partition.clone()), "never two owners at once: {partition:?}");
                }
            }
            // Stable: once every member owns its target, nothing moves
            // (with the same subscriptions everywhere, the common case; with
            // mixed ones a partition may move once more).
            let same_subscriptions = group.values().all(|view| view.subscribed == group.values().next().map(|first| first.subscribed.clone()).unwrap_or_default());
            if same_subscriptions {
            let settled: BTreeMap<String, MemberView> = group
                .iter()
                .map(|(id, view)| (id.clone(), MemberView { subscribed: view.subscribed.clone(), owned: target[id].clone() }))
                .collect();
            prop_assert_eq!(&uniform(&settled, &topics), &target, "a settled group keeps its assignment");
            }
        }
    }
}
