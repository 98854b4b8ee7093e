//! Where a follower cuts its log after a leader change.
//!
//! The follower asks the leader for the end offset of the follower's own
//! latest leader epoch. Everything the follower holds at or past that
//! offset was written by a leader whose records did not survive (an old
//! leader's acks=1 records no one copied), so the follower removes it
//! before fetching, and never silently diverges.
//!
//! When the leader never saw the follower's latest epoch (it answers with
//! an older one), the follower's records of the newer epochs are not the
//! leader's even where the offsets overlap: it cuts at the earlier of the
//! leader's end of the answered epoch and its own, and asks again about
//! what is then its latest epoch (Kafka's KIP-279 rule).

use brook_record::{LeaderEpoch, Offset};

/// The offset to truncate to, if any: the leader's end offset for the
/// follower's latest epoch, when the follower's log goes past it.
pub fn truncation_point(follower_log_end: Offset, leader_end_offset_for_epoch: Offset) -> Option<Offset> {
    (leader_end_offset_for_epoch < follower_log_end).then_some(leader_end_offset_for_epoch)
}

/// The leader's answer to "where does epoch E end on your log?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderEpochEnd {
    /// The largest epoch at or below E the leader knows; `None`: none.
    pub epoch: Option<LeaderEpoch>,
    /// Where that epoch ends on the leader (its log start when `None`).
    pub end_offset: Offset,
}

/// What a follower does with the leader's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationStep {
    /// Cut here if given, then fetch: the logs agree below the cut.
    Done(Option<Offset>),
    /// Cut here, then ask again about the (older) latest epoch left.
    CutAndAskAgain(Offset),
}

/// Decides the follower's cut after asking about `follower_latest_epoch`.
/// `follower_end_of_answered_epoch` is where the epoch the leader answered
/// with ends on the follower's own log (the start of its first newer
/// epoch), or the follower's log start if it knows no epoch at or below
/// it; it is only used when the leader answered with an older epoch.
pub fn truncation_step(
    follower_latest_epoch: LeaderEpoch,
    follower_log_end: Offset,
    leader: LeaderEpochEnd,
    follower_end_of_answered_epoch: Offset,
) -> TruncationStep {
    match leader.epoch {
        Some(epoch) if epoch < follower_latest_epoch => {
            let cut = leader.end_offset.min(follower_end_of_answered_epoch).min(follower_log_end);
            TruncationStep::CutAndAskAgain(cut)
        }
        _ => TruncationStep::Done(truncation_point(follower_log_end, leader.end_offset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_cuts_only_what_the_leader_does_not_have() {
        assert_eq!(truncation_point(Offset(15), Offset(12)), Some(Offset(12)));
        assert_eq!(truncation_point(Offset(12), Offset(12)), None);
        assert_eq!(truncation_point(Offset(10), Offset(12)), None, "behind, not diverged: it just fetches");
    }

    #[test]
    fn the_same_epoch_on_both_sides_cuts_at_the_leaders_end() {
        let leader = LeaderEpochEnd { epoch: Some(LeaderEpoch(3)), end_offset: Offset(12) };
        assert_eq!(
            truncation_step(LeaderEpoch(3), Offset(15), leader, Offset(0)),
            TruncationStep::Done(Some(Offset(12)))
        );
        assert_eq!(truncation_step(LeaderEpoch(3), Offset(10), leader, Offset(0)), TruncationStep::Done(None));
    }

    #[test]
    fn an_epoch_the_leader_never_saw_is_cut_even_when_the_leader_has_more_offsets() {
        // Follower: epoch 1 at 0..700, epoch 2 (a leader no one followed) at
        // 700..710. Leader: epoch 1 up to 720, then epoch 3. The follower's
        // 700..710 are epoch-2 records, not the leader's epoch-1 ones.
        let leader = LeaderEpochEnd { epoch: Some(LeaderEpoch(1)), end_offset: Offset(720) };
        assert_eq!(
            truncation_step(LeaderEpoch(2), Offset(710), leader, Offset(700)),
            TruncationStep::CutAndAskAgain(Offset(700))
        );
        // The follower's epoch 1 ran longer than the leader's.
        let leader = LeaderEpochEnd { epoch: Some(LeaderEpoch(1)), end_offset: Offset(650) };
        assert_eq!(
            truncation_step(LeaderEpoch(2), Offset(710), leader, Offset(700)),
            TruncationStep::CutAndAskAgain(Offset(650))
        );
    }

    #[test]
    fn a_leader_that_knows_no_older_epoch_leaves_nothing_past_its_log_start() {
        let leader = LeaderEpochEnd { epoch: None, end_offset: Offset(0) };
        assert_eq!(
            truncation_step(LeaderEpoch(2), Offset(10), leader, Offset(0)),
            TruncationStep::Done(Some(Offset(0)))
        );
    }
}
