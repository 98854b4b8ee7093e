//! The leader's view of its followers, and the high watermark from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use brook_record::{BrokerId, Offset};

/// What a partition leader knows of its followers' progress.
#[derive(Debug, Clone, Default)]
pub struct LeaderProgress {
    /// Each follower's LEO, as its last fetch reported it (a fetch from
    /// offset N means it has everything below N).
    follower_log_end: HashMap<BrokerId, Offset>,
    /// When each follower last had everything the leader had.
    caught_up_at: HashMap<BrokerId, Instant>,
    /// Each follower's previous fetch: when it came and the leader's LEO
    /// then (Kafka's `lastFetchTime` and `lastFetchLeaderLogEndOffset`).
    previous_fetch: HashMap<BrokerId, (Instant, Offset)>,
    high_watermark: Offset,
    /// Since when this leader tracks progress: a follower never seen
    /// caught up is judged from here.
    since: Option<Instant>,
}

impl LeaderProgress {
    /// Starts from a known HW (the leader's own, or 0).
    pub fn new(high_watermark: Offset) -> LeaderProgress {
        LeaderProgress {
            follower_log_end: HashMap::new(),
            caught_up_at: HashMap::new(),
            previous_fetch: HashMap::new(),
            high_watermark,
            since: None,
        }
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// Records a follower's fetch position, and when it was last caught
    /// up, by Kafka's rule: a fetch from the leader's LEO means caught up
    /// now; a fetch from at least the LEO the leader had at the follower's
    /// previous fetch means it was caught up then. So a follower that keeps
    /// up under continuous appends (it is always one fetch behind the
    /// newest records) counts as caught up, and only one that falls
    /// further behind ages.
    pub fn record_fetch(&mut self, follower: BrokerId, fetch_offset: Offset, leader_log_end: Offset, now: Instant) {
        self.follower_log_end.insert(follower, fetch_offset);
        let caught_up_at = if crate::isr::caught_up(fetch_offset, leader_log_end) {
            Some(now)
        } else {
            self.previous_fetch
                .get(&follower)
                .filter(|(_, log_end_then)| fetch_offset >= *log_end_then)
                .map(|(fetched_at, _)| *fetched_at)
        };
        if let Some(at) = caught_up_at {
            let last = self.caught_up_at.entry(follower).or_insert(at);
            *last = (*last).max(at);
        }
        self.previous_fetch.insert(follower, (now, leader_log_end));
    }

    /// The ISR followers that have not caught up with the leader for
    /// longer than `replica_lag_max` (Kafka's `replica.lag.time.max.ms`):
    /// the leader asks the controller to drop them from the ISR.
    pub fn lagging(
        &mut self,
        leader: BrokerId,
        isr: &[BrokerId],
        now: Instant,
        replica_lag_max: Duration,
    ) -> Vec<BrokerId> {
        let since = *self.since.get_or_insert(now);
        isr.iter()
            .copied()
            .filter(|member| *member != leader)
            .filter(|member| {
                let last = self.caught_up_at.get(member).copied().unwrap_or(since).max(since);
                now.saturating_duration_since(last) > replica_lag_max
            })
            .collect()
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

    fn ids(raw: &[u32]) -> Vec<BrokerId> {
        raw.iter().copied().map(BrokerId).collect()
    }

    #[test]
    fn the_hw_is_the_lowest_leo_in_the_isr_and_never_goes_back() {
        let now = Instant::now();
        let mut progress = LeaderProgress::new(Offset(0));
        assert_eq!(
            progress.update(BrokerId(1), Offset(10), &ids(&[1])),
            Offset(10),
            "alone in the ISR, the HW is the LEO"
        );
        progress.record_fetch(BrokerId(2), Offset(4), Offset(12), now);
        progress.record_fetch(BrokerId(3), Offset(7), Offset(12), now);
        assert_eq!(progress.update(BrokerId(1), Offset(12), &ids(&[1, 2, 3])), Offset(10), "never backwards");
        progress.record_fetch(BrokerId(2), Offset(11), Offset(12), now);
        assert_eq!(progress.update(BrokerId(1), Offset(12), &ids(&[1, 2, 3])), Offset(10));
        progress.record_fetch(BrokerId(3), Offset(12), Offset(12), now);
        assert_eq!(progress.update(BrokerId(1), Offset(12), &ids(&[1, 2, 3])), Offset(11));
        // Broker 2 leaves the ISR: only 1 and 3 count.
        assert_eq!(progress.update(BrokerId(1), Offset(12), &ids(&[1, 3])), Offset(12));
    }

    #[test]
    fn an_isr_member_that_never_fetched_holds_the_hw() {
        let mut progress = LeaderProgress::new(Offset(5));
        progress.record_fetch(BrokerId(2), Offset(9), Offset(9), Instant::now());
        assert_eq!(progress.update(BrokerId(1), Offset(9), &ids(&[1, 2, 3])), Offset(5));
    }

    #[test]
    fn followers_that_stay_behind_longer_than_the_lag_limit_are_lagging() {
        let start = Instant::now();
        let lag_max = Duration::from_secs(10);
        let mut progress = LeaderProgress::new(Offset(0));
        // Judged from when this leader started tracking.
        assert!(progress.lagging(BrokerId(1), &ids(&[1, 2, 3]), start, lag_max).is_empty());
        progress.record_fetch(BrokerId(2), Offset(100), Offset(100), start + Duration::from_secs(5));
        progress.record_fetch(BrokerId(3), Offset(40), Offset(100), start + Duration::from_secs(5));
        // Broker 3 fetches, but never reaches the log end: it lags.
        let later = start + Duration::from_secs(11);
        assert_eq!(progress.lagging(BrokerId(1), &ids(&[1, 2, 3]), later, lag_max), ids(&[3]));
        let much_later = start + Duration::from_secs(16);
        assert_eq!(progress.lagging(BrokerId(1), &ids(&[1, 2, 3]), much_later, lag_max), ids(&[2, 3]));
    }

    #[test]
    fn a_follower_one_fetch_behind_under_steady_appends_never_lags() {
        let start = Instant::now();
        let lag_max = Duration::from_secs(10);
        let mut progress = LeaderProgress::new(Offset(0));
        progress.lagging(BrokerId(1), &ids(&[1, 2]), start, lag_max);
        // Every second the leader has 1,000 more records, and the follower
        // fetches from where the leader's log ended at its previous fetch.
        let mut leader_log_end = Offset(1000);
        let mut follower_at = Offset(0);
        for second in 1..=30 {
            let now = start + Duration::from_secs(second);
            progress.record_fetch(BrokerId(2), follower_at, leader_log_end, now);
            follower_at = leader_log_end;
            leader_log_end = leader_log_end.plus(1000);
            assert!(progress.lagging(BrokerId(1), &ids(&[1, 2]), now, lag_max).is_empty(), "lagging at {second} s");
        }
    }

    #[test]
    fn a_follower_that_falls_further_behind_lags() {
        let start = Instant::now();
        let lag_max = Duration::from_secs(10);
        let mut progress = LeaderProgress::new(Offset(0));
        progress.lagging(BrokerId(1), &ids(&[1, 2]), start, lag_max);
        // It copies 500 records a second while the leader gets 1,000.
        for second in 1..=12u64 {
            let now = start + Duration::from_secs(second);
            progress.record_fetch(BrokerId(2), Offset(500 * second), Offset(1000 * second), now);
        }
        let now = start + Duration::from_secs(12);
        assert_eq!(progress.lagging(BrokerId(1), &ids(&[1, 2]), now, lag_max), ids(&[2]));
    }
}
