//! Latency percentiles with an HDR histogram (microsecond resolution, up
//! to an hour, 3 significant digits).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid"),
        }
    }
}

impl LatencyRecorder {
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, self.histogram.high());
        self.histogram.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at `quantile` (0.0..=1.0), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        self.histogram.mean() / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }

    pub fn summary(&self) -> String {
        format!(
            "avg {:.2} ms, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.mean_ms(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.max_ms()
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "latency_samples": self.count(),
            "latency_ms_avg": self.mean_ms(),
            "latency_ms_p50": self.quantile_ms(0.50),
            "latency_ms_p95": self.quantile_ms(0.95),
            "latency_ms_p99": self.quantile_ms(0.99),
            "latency_ms_p999": self.quantile_ms(0.999),
            "latency_ms_max": self.max_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut recorder = LatencyRecorder::default();
        for millis in 1..=1000u64 {
            recorder.record(Duration::from_millis(millis));
        }
        assert_eq!(recorder.count(), 1000);
        assert!((recorder.quantile_ms(0.5) - 500.0).abs() <= 0.5, "{}", recorder.quantile_ms(0.5));
        assert!((recorder.quantile_ms(0.99) - 990.0).abs() <= 1.0, "{}", recorder.quantile_ms(0.99));
        assert!((recorder.max_ms() - 1000.0).abs() <= 1.0);
        assert!((recorder.mean_ms() - 500.5).abs() <= 0.5);
    }

    #[test]
    fn merging_adds_counts_and_keeps_extremes() {
        let mut fast = LatencyRecorder::default();
        let mut slow = LatencyRecorder::default();
        fast.record(Duration::from_micros(100));
        slow.record(Duration::from_millis(50));
        fast.merge(&slow);
        assert_eq!(fast.count(), 2);
        assert!((fast.max_ms() - 50.0).abs() < 0.1);
        // Sub-microsecond latencies count as one microsecond, not zero.
        let mut tiny = LatencyRecorder::default();
        tiny.record(Duration::from_nanos(10));
        assert_eq!(tiny.count(), 1);
    }
}
