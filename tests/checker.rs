//! The chaos checker: what producers were told, what consumers found, and
//! the verdict. Pure bookkeeping, so the same checker judges a run against
//! local processes (tests/chaos.rs) or a Docker cluster (the deploy tests).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One record sent: its sequence number, and where it landed if acknowledged.
#[derive(Debug, Default)]
pub struct Checker {
    /// (partition, offset) -> sequence number, for acknowledged sends.
    acknowledged: BTreeMap<(u32, u64), u64>,
    /// Sequence numbers whose send failed (never acknowledged).
    failed: BTreeSet<u64>,
    /// When each acknowledgement arrived, for the longest gap.
    ack_times: Vec<Instant>,
}

/// The verdict of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub acknowledged: usize,
    /// Acknowledged records not found where their ack said (must be 0 with acks=all).
    pub lost: usize,
    /// Records of a partition that first appear after a record sent later
    /// (must be 0). A retried batch written again after its first copy is
    /// a run of duplicates, not reordering, and is counted only there.
    pub out_of_order: usize,
    /// Records found more than once (retries; allowed without idempotence).
    pub duplicates: usize,
    /// Records whose send failed but which are there anyway (fine).
    pub unacknowledged_present: usize,
    /// The longest time between two acknowledgements.
    pub longest_gap: Duration,
    /// Every pause between acknowledgements longer than
    /// `FAILOVER_GAP_FLOOR`, longest first: the failovers, one per kill
    /// that hit a leader (the producer otherwise acks every few ms).
    pub failover_gaps: Vec<Duration>,
}

/// Pauses between acknowledgements shorter than this are normal traffic.
pub const FAILOVER_GAP_FLOOR: Duration = Duration::from_millis(250);

impl Report {
    /// (median, worst) of the failover gaps.
    pub fn failover_gap_summary(&self) -> Option<(Duration, Duration)> {
        let mut gaps = self.failover_gaps.clone();
        gaps.sort();
        let worst = *gaps.last()?;
        Some((gaps[gaps.len() / 2], worst))
    }
}

impl Checker {
    pub fn acknowledged(&mut self, partition: u32, offset: u64, sequence: u64, at: Instant) {
        self.acknowledged.insert((partition, offset), sequence);
        self.ack_times.push(at);
    }

    pub fn failed(&mut self, sequence: u64) {
        self.failed.insert(sequence);
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// Whether every acknowledged record is among `found`.
    pub fn all_found(&self, found: &BTreeMap<(u32, u64), u64>) -> bool {
        self.acknowledged.keys().all(|key| found.contains_key(key))
    }

    /// Up to `limit` acknowledged records not where their ack said.
    pub fn lost_examples(&self, found: &BTreeMap<(u32, u64), u64>, limit: usize) -> Vec<((u32, u64), u64)> {
        self.acknowledged
            .iter()
            .filter(|(key, sequence)| found.get(key) != Some(sequence))
            .take(limit)
            .map(|(k, s)| (*k, *s))
            .collect()
    }

    /// Every pause between acknowledgements longer than
    /// `FAILOVER_GAP_FLOOR`, with the time of the acknowledgement it began
    /// after, in time order: what a fault injected at some moment cost.
    pub fn failover_gaps_at(&self) -> Vec<(Instant, Duration)> {
        let mut times = self.ack_times.clone();
        times.sort();
        times.windows(2).map(|pair| (pair[0], pair[1] - pair[0])).filter(|(_, gap)| *gap > FAILOVER_GAP_FLOOR).collect()
    }

    /// Judges what a consumer read from the beginning of every partition:
    /// (partition, offset) -> sequence number.
    pub fn report(&self, found: &BTreeMap<(u32, u64), u64>) -> Report {
        let lost = self.acknowledged.iter().filter(|(key, sequence)| found.get(key) != Some(sequence)).count();
        let mut out_of_order = 0;
        let mut last_by_partition: BTreeMap<u32, u64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut duplicates = 0;
        for (&(partition, _), &sequence) in found {
            if !seen.insert(sequence) {
                duplicates += 1;
                continue;
            }
            if let Some(&last) = last_by_partition.get(&partition) {
                if sequence < last {
                    out_of_order += 1;
                }
            }
            let last = last_by_partition.entry(partition).or_insert(sequence);
            *last = (*last).max(sequence);
        }
        let unacknowledged_present = self.failed.iter().filter(|sequence| seen.contains(sequence)).count();
        let mut times = self.ack_times.clone();
        times.sort();
        let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let longest_gap = gaps.iter().copied().max().unwrap_or_default();
        let mut failover_gaps: Vec<Duration> = gaps.into_iter().filter(|gap| *gap > FAILOVER_GAP_FLOOR).collect();
        failover_gaps.sort_by(|a, b| b.cmp(a));
        Report {
            acknowledged: self.acknowledged.len(),
            lost,
            out_of_order,
            duplicates,
            unacknowledged_present,
            longest_gap,
            failover_gaps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_counts_losses_reordering_duplicates_and_gaps() {
        let start = Instant::now();
        let mut checker = Checker::default();
        checker.acknowledged(0, 0, 1, start);
        checker.acknowledged(0, 1, 2, start + Duration::from_millis(10));
        checker.acknowledged(1, 0, 3, start + Duration::from_millis(500));
        checker.failed(4);
        // Partition 0 holds 1, 2, then 2 again (a retry) and 4 (failed but
        // written); partition 1 lost sequence 3.
        let found = BTreeMap::from([((0, 0), 1), ((0, 1), 2), ((0, 2), 2), ((0, 3), 4), ((1, 0), 9)]);
        let report = checker.report(&found);
        assert_eq!(report.lost, 1);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.unacknowledged_present, 1);
        assert_eq!(report.out_of_order, 0);
        assert_eq!(report.longest_gap, Duration::from_millis(490));
        assert_eq!(report.failover_gaps, vec![Duration::from_millis(490)]);
        assert_eq!(report.failover_gap_summary(), Some((Duration::from_millis(490), Duration::from_millis(490))));
        let reordered = BTreeMap::from([((0, 0), 2), ((0, 1), 1)]);
        assert_eq!(checker.report(&reordered).out_of_order, 1);
        // A retried run written twice: duplicates, not reordering.
        let retried = BTreeMap::from([((0, 0), 1), ((0, 1), 2), ((0, 2), 1), ((0, 3), 2), ((0, 4), 3)]);
        let report = checker.report(&retried);
        assert_eq!((report.duplicates, report.out_of_order), (2, 0));
    }
}
