//! The in-sync replicas (ISR) as a leader must count them, and the rule
//! for a follower to rejoin.
//!
//! Only the controller changes the ISR; a leader asks it to (an
//! expansion when a follower caught up, a shrink when one lags) and learns
//! the outcome later. Until the outcome shows in its own metadata, the
//! leader counts the *maximal* ISR for the high watermark (Kafka's
//! `PendingExpandIsr` / `PendingShrinkIsr` and `maximalIsr`): a follower
//! being added counts from the moment it is proposed (the controller may
//! list it, so elect it, as soon as the proposal commits, so it must never
//! lack an acknowledged record), and a follower being removed counts until
//! the removal is seen.

use std::collections::BTreeMap;

use brook_record::{BrokerId, Offset};

/// Whether a follower fetching from `fetch_offset` has caught up with a
/// leader whose LEO is `leader_log_end` (it has every record the leader
/// has). Kafka also lets a follower rejoin once it reaches the HW; Brook
/// asks for the LEO, which keeps the rule simple and the ISR honest.
pub fn caught_up(fetch_offset: Offset, leader_log_end: Offset) -> bool {
    fetch_offset >= leader_log_end
}

/// An ISR change a leader proposed and has no answer for yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingIsrChange {
    /// Kafka's `PendingExpandIsr`: `adding` counts from now on.
    Expand { adding: BrokerId },
    /// Kafka's `PendingShrinkIsr`: `removing` still counts until the
    /// metadata no longer lists it.
    Shrink { removing: Vec<BrokerId> },
}

/// How a proposed ISR change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrChangeOutcome {
    /// Committed: the metadata will show it at the next partition epoch.
    Committed,
    /// The partition's ISR version moved since the proposal was built (a
    /// newer change, a replica died or returned; or this very proposal
    /// committed and its repeat came late): the metadata will show what
    /// holds, at a newer partition epoch.
    Stale,
    /// The controller refused it for the version it was built on: it never
    /// takes effect.
    Refused,
}

/// A leader's ISR: the committed one its metadata shows (with its version,
/// the partition epoch), the change in flight (at most one), and the
/// followers an expansion may have added that its metadata does not show
/// yet.
#[derive(Debug, Clone, Default)]
pub struct IsrState {
    committed: Vec<BrokerId>,
    /// The partition epoch `committed` was read at.
    partition_epoch: u32,
    /// The change in flight and the partition epoch it was built on.
    pending: Option<(PendingIsrChange, u32)>,
    /// Followers an expansion built on a partition epoch may have added
    /// (committed, or no definite answer): counted until the metadata's
    /// partition epoch passes that one, when `committed` tells the truth.
    added_unseen: BTreeMap<BrokerId, u32>,
}

impl IsrState {
    pub fn new(committed: Vec<BrokerId>, partition_epoch: u32) -> IsrState {
        IsrState { committed, partition_epoch, ..IsrState::default() }
    }

    /// The ISR as the metadata last showed it.
    pub fn committed(&self) -> &[BrokerId] {
        &self.committed
    }

    pub fn pending(&self) -> Option<&PendingIsrChange> {
        self.pending.as_ref().map(|(change, _)| change)
    }

    /// The replicas whose progress bounds the HW now: the committed ISR,
    /// the follower being added, and the added ones not yet seen.
    pub fn maximal(&self) -> Vec<BrokerId> {
        let mut members = self.committed.clone();
        let adding = match &self.pending {
            Some((PendingIsrChange::Expand { adding }, _)) => Some(*adding),
            _ => None,
        };
        for member in adding.into_iter().chain(self.added_unseen.keys().copied()) {
            if !members.contains(&member) {
                members.push(member);
            }
        }
        members
    }

    /// The metadata's ISR at `partition_epoch`: forgets the added followers
    /// whose proposal that version has passed (the metadata then shows
    /// whether they are in).
    pub fn update_committed(&mut self, committed: Vec<BrokerId>, partition_epoch: u32) {
        debug_assert!(partition_epoch >= self.partition_epoch, "the ISR version never goes back");
        self.committed = committed;
        self.partition_epoch = partition_epoch;
        self.added_unseen.retain(|_, built_on| *built_on >= partition_epoch);
    }

    /// Starts an expansion adding `follower`; the ISR to propose. `None`
    /// while another change is in flight, when it is already a member, or
    /// when an expansion adding it waits to be seen.
    pub fn start_expand(&mut self, follower: BrokerId) -> Option<Vec<BrokerId>> {
        if self.pending.is_some() || self.committed.contains(&follower) || self.added_unseen.contains_key(&follower) {
            return None;
        }
        self.pending = Some((PendingIsrChange::Expand { adding: follower }, self.partition_epoch));
        let mut isr = self.committed.clone();
        isr.push(follower);
        Some(isr)
    }

    /// Starts a shrink removing `lagging`; the ISR to propose. `None` while
    /// another change is in flight or when nothing would change.
    pub fn start_shrink(&mut self, lagging: Vec<BrokerId>) -> Option<Vec<BrokerId>> {
        if self.pending.is_some() || lagging.is_empty() {
            return None;
        }
        let isr = self.committed.iter().copied().filter(|member| !lagging.contains(member)).collect();
        self.pending = Some((PendingIsrChange::Shrink { removing: lagging }, self.partition_epoch));
        Some(isr)
    }

    /// The answer to the change in flight (`None`: no definite answer). An
    /// expansion that may have taken effect keeps counting its follower
    /// until the metadata's version passes the proposal's.
    pub fn settle(&mut self, outcome: Option<IsrChangeOutcome>) {
        let Some((PendingIsrChange::Expand { adding }, built_on)) = self.pending.take() else { return };
        if outcome != Some(IsrChangeOutcome::Refused) && built_on >= self.partition_epoch {
            self.added_unseen.insert(adding, built_on);
        }
    }

    /// A new leadership: what the old one proposed is the old one's (the
    /// controller refuses proposals of another epoch).
    pub fn reset(&mut self, committed: Vec<BrokerId>, partition_epoch: u32) {
        *self = IsrState::new(committed, partition_epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u32]) -> Vec<BrokerId> {
        raw.iter().copied().map(BrokerId).collect()
    }

    #[test]
    fn caught_up_means_reaching_the_leaders_log_end() {
        assert!(caught_up(Offset(10), Offset(10)));
        assert!(!caught_up(Offset(9), Offset(10)));
    }

    #[test]
    fn an_added_follower_counts_from_its_proposal_until_the_metadata_shows_the_outcome() {
        let mut isr = IsrState::new(ids(&[1]), 4);
        assert_eq!(isr.start_expand(BrokerId(2)), Some(ids(&[1, 2])));
        assert_eq!(isr.start_expand(BrokerId(3)), None, "one change in flight");
        assert_eq!(isr.maximal(), ids(&[1, 2]));
        isr.settle(Some(IsrChangeOutcome::Committed));
        assert_eq!(isr.start_expand(BrokerId(2)), None, "committed: nothing to propose again");
        isr.update_committed(ids(&[1]), 4);
        assert_eq!(isr.maximal(), ids(&[1, 2]), "the metadata is still at the proposal's version");
        isr.update_committed(ids(&[1]), 6);
        assert_eq!(isr.maximal(), ids(&[1]), "past it: the metadata tells the truth (it left again)");
    }

    #[test]
    fn a_stale_or_unanswered_expansion_counts_until_the_metadata_moves_on() {
        for outcome in [Some(IsrChangeOutcome::Stale), None] {
            let mut isr = IsrState::new(ids(&[1]), 2);
            isr.start_expand(BrokerId(2));
            isr.settle(outcome);
            assert_eq!(isr.maximal(), ids(&[1, 2]), "{outcome:?}: it may be in the ISR already");
            isr.update_committed(ids(&[1, 2]), 3);
            assert_eq!(isr.maximal(), ids(&[1, 2]));
            isr.update_committed(ids(&[1]), 4);
            assert_eq!(isr.maximal(), ids(&[1]));
        }
    }

    #[test]
    fn a_refused_expansion_stops_counting_and_a_shrink_counts_until_seen() {
        let mut isr = IsrState::new(ids(&[1, 3]), 0);
        isr.start_expand(BrokerId(2));
        isr.settle(Some(IsrChangeOutcome::Refused));
        assert_eq!(isr.maximal(), ids(&[1, 3]));
        assert_eq!(isr.start_shrink(ids(&[3])), Some(ids(&[1])));
        assert_eq!(isr.maximal(), ids(&[1, 3]), "still counted while the removal is in flight");
        isr.settle(Some(IsrChangeOutcome::Committed));
        assert_eq!(isr.maximal(), ids(&[1, 3]), "and until the metadata shows it");
        isr.update_committed(ids(&[1]), 1);
        assert_eq!(isr.maximal(), ids(&[1]));
    }

    #[test]
    fn a_new_leadership_forgets_the_old_ones_proposals() {
        let mut isr = IsrState::new(ids(&[1]), 0);
        isr.start_expand(BrokerId(2));
        isr.reset(ids(&[1, 3]), 4);
        assert_eq!(isr.pending(), None);
        assert_eq!(isr.maximal(), ids(&[1, 3]));
    }
}
