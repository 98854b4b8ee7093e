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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

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

/// One topic's candidates, the one to give the next partition to on top:
/// (at or above its share, partitions held, id), least first.
type CandidateHeap<'a> = BinaryHeap<Reverse<(bool, usize, &'a String)>>;

/// Balanced, sticky assignment of every subscribed topic's partitions.
///
/// Costs O(P log M + M) for P partitions and M members in the common case
/// (the choices per topic come from a heap, not a scan of every member per
/// partition), so a join to a group of a thousand members stays cheap
/// inside `apply`.
pub fn uniform(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Partition>> {
    let mut target = empty_targets(members);
    // Each subscribed topic's candidates (its subscribers, by id): every
    // partition of the topic has the same.
    let subscribers: BTreeMap<&str, Vec<&String>> = partitions
        .keys()
        .map(|topic| (topic.as_str(), subscribers_of(members, topic)))
        .filter(|(_, subscribers)| !subscribers.is_empty())
        .collect();
    let candidates = |partition: &Partition| -> &[&String] {
        subscribers.get(partition.0.as_str()).map(Vec::as_slice).unwrap_or_default()
    };
    // Each member's fair share of the partitions it can take: partitions
    // are spread over the members who can own them, counted per member as
    // the share of each partition's candidate set, rounded per member.
    let quota = quotas(&subscribers, partitions, members);
    let share = |member: &str| quota.get(member).copied().unwrap_or(0);
    // Stickiness: keep what a member owns while it is still a candidate
    // and under its quota (the lowest-numbered first, for determinism).
    let mut owner_of: BTreeMap<&Partition, &String> = BTreeMap::new();
    for (member, view) in members {
        for partition in &view.owned {
            owner_of.entry(partition).or_insert(member);
        }
    }
    // Partitions in order, topic by topic, with who may keep them.
    let mut unassigned: Vec<Partition> = Vec::new();
    for topic in subscribers.keys() {
        for index in 0..partitions[*topic] {
            let partition = (topic.to_string(), index);
            match owner_of.get(&partition) {
                Some(owner)
                    if candidates(&partition).contains(owner) && target[owner.as_str()].len() < share(owner) =>
                {
                    target.get_mut(owner.as_str()).expect("every member has a target").insert(partition);
                }
                _ => unassigned.push(partition),
            }
        }
    }
    // The rest go to the candidate furthest below its quota (then the one
    // holding fewest, then by id): deterministic, balanced. The unassigned
    // partitions come topic by topic, and within a topic only its
    // candidates' counts change, so one heap per topic picks the same
    // member a scan would.
    let mut current: Option<(String, CandidateHeap<'_>)> = None;
    for partition in unassigned {
        if current.as_ref().is_none_or(|(topic, _)| *topic != partition.0) {
            let heap = candidates(&partition)
                .iter()
                .map(|member| {
                    let held = target[member.as_str()].len();
                    Reverse((held >= share(member), held, *member))
                })
                .collect();
            current = Some((partition.0.clone(), heap));
        }
        let (_, heap) = current.as_mut().expect("set just above");
        let Reverse((_, held, chosen)) = heap.pop().expect("a candidate set is never empty");
        target.get_mut(chosen.as_str()).expect("every member has a target").insert(partition);
        heap.push(Reverse((held + 1 >= share(chosen), held + 1, chosen)));
    }
    // A member kept more than its share (what it owned used the room its
    // only-candidate partitions needed): hand the excess to candidates
    // below theirs, partitions it did not own first.
    loop {
        let mut moved = false;
        for member in members.keys() {
            if target[member].len() <= share(member) {
                continue;
            }
            let owned = &members[member].owned;
            let mut held: Vec<Partition> = target[member].iter().cloned().collect();
            held.sort_by(|a, b| (owned.contains(a), a).cmp(&(owned.contains(b), b)));
            for partition in held {
                if target[member].len() <= share(member) {
                    break;
                }
                let taker = candidates(&partition)
                    .iter()
                    .filter(|other| other.as_str() != member && target[other.as_str()].len() < share(other))
                    .min_by(|a, b| (target[a.as_str()].len(), *a).cmp(&(target[b.as_str()].len(), *b)));
                if let Some(taker) = taker {
                    target.get_mut(member).expect("member").remove(&partition);
                    target.get_mut(taker.as_str()).expect("member").insert(partition);
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
                .min_by(|a, b| (owned.contains(*a), *a).cmp(&(owned.contains(*b), *b)))
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
    subscribers: &BTreeMap<&str, Vec<&String>>,
    partitions: &BTreeMap<String, u32>,
    members: &BTreeMap<String, MemberView>,
) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<&str, usize> = members.keys().map(|member| (member.as_str(), 0)).collect();
    // Topics whose partitions have fewer candidates first: they have less
    // choice. Within a topic only its candidates' counts change, so a heap
    // of them deals its partitions as a scan per partition would.
    let mut order: Vec<(&str, &Vec<&String>)> = subscribers.iter().map(|(topic, list)| (*topic, list)).collect();
    order.sort_by_key(|(topic, list)| (list.len(), *topic));
    for (topic, list) in order {
        let mut heap: BinaryHeap<Reverse<(usize, Reverse<usize>, &str)>> = list
            .iter()
            .map(|member| {
                Reverse((counts[member.as_str()], Reverse(members[member.as_str()].owned.len()), member.as_str()))
            })
            .collect();
        for _ in 0..partitions[topic] {
            let Reverse((count, owned, chosen)) = heap.pop().expect("a candidate set is never empty");
            *counts.get_mut(chosen).expect("counted") = count + 1;
            heap.push(Reverse((count + 1, owned, chosen)));
        }
    }
    counts.into_iter().map(|(member, count)| (member.to_string(), count)).collect()
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
