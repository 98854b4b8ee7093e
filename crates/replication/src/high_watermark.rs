//! The leader's view of its followers, and the high watermark from it.

use std::collections::HashMap;

use brook_record::Offset;

use crate::BrokerId;

/// What a partition leader knows of its followers' progress.
#[derive(Debug, Clone, Default)]
pub struct LeaderProgress {
    /// Each follower's LEO, as its last fetch reported it (a fetch from
    /// offset N means it has everything below N).
    follower_log_end: HashMap<BrokerId, Offset>,
    high_watermark: Offset,
}

impl LeaderProgress {
    /// Starts from a known HW (the leader's own, or 0).
    pub fn new(high_watermark: Offset) -> LeaderProgress {
        LeaderProgress { follower_log_end: HashMap::new(), high_watermark }
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn follower_log_end(&self, follower: BrokerId) -> Option<Offset> {
        self.follower_log_end.get(&follower).copied()
    }

    /// Records a follower's fetch position.
    pub fn record_fetch(&mut self, follower: BrokerId, fetch_offset: Offset) {
        self.follower_log_end.insert(follower, fetch_offset);
    }

    /// Recomputes the HW: the lowest LEO over the ISR (the leader's own
    /// included), never below the current HW. A follower in the ISR that
    /// has not fetched since this broker became leader holds the HW where
    /// it is.
    pub fn update(&mut self, leader: BrokerId, leader_log_end: Offset, isr: &[BrokerId]) -> Offset {
        let mut candidate = leader_log_end;
        for member in isr.iter().filter(|member| **member != leader) {
            let reached = self.follower_log_end.get(member).copied().unwrap_or(self.high_watermark);
            candidate = candidate.min(reached);
        }
        debug_assert!(candidate <= leader_log_end, "the HW never passes the leader's LEO");
        self.high_watermark = self.high_watermark.max(candidate);
        self.high_watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hw_is_the_lowest_leo_in_the_isr_and_never_goes_back() {
        let mut progress = LeaderProgress::new(Offset(0));
        assert_eq!(progress.update(1, Offset(10), &[1]), Offset(10), "alone in the ISR, the HW is the LEO");
        progress.record_fetch(2, Offset(4));
        progress.record_fetch(3, Offset(7));
        assert_eq!(progress.update(1, Offset(12), &[1, 2, 3]), Offset(10), "never backwards");
        progress.record_fetch(2, Offset(11));
        assert_eq!(progress.update(1, Offset(12), &[1, 2, 3]), Offset(10));
        progress.record_fetch(3, Offset(12));
        assert_eq!(progress.update(1, Offset(12), &[1, 2, 3]), Offset(11));
        // Broker 2 leaves the ISR: only 1 and 3 count.
        assert_eq!(progress.update(1, Offset(12), &[1, 3]), Offset(12));
    }

    #[test]
    fn an_isr_member_that_never_fetched_holds_the_hw() {
        let mut progress = LeaderProgress::new(Offset(5));
        progress.record_fetch(2, Offset(9));
        assert_eq!(progress.update(1, Offset(9), &[1, 2, 3]), Offset(5));
    }
}
