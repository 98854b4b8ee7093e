//! Where a follower cuts its log after a leader change.
//!
//! The follower asks the leader for the end offset of the follower's own
//! latest leader epoch. Everything the follower holds at or past that
//! offset was written by a leader whose records did not survive (an old
//! leader's acks=1 records no one copied), so the follower removes it
//! before fetching, and never silently diverges.

use brook_record::Offset;

/// The offset to truncate to, if any: the leader's end offset for the
/// follower's latest epoch, when the follower's log goes past it.
pub fn truncation_point(follower_log_end: Offset, leader_end_offset_for_epoch: Offset) -> Option<Offset> {
    (leader_end_offset_for_epoch < follower_log_end).then_some(leader_end_offset_for_epoch)
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
}
