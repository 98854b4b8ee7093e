//! Retention: which of the oldest segments to delete, by age and by total
//! size, as Kafka does it. Only whole, closed segments go, and only those
//! wholly below the high watermark the caller names (a record not yet
//! committed, or one a follower still needs, is never deleted); the
//! active segment always stays, so the log never loses its end offset.

use brook_record::Offset;

use crate::config::LogConfig;

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSummary {
    pub(crate) size_bytes: u64,
    /// The newest record's timestamp; `i64::MIN` for an empty segment.
    pub(crate) max_timestamp_ms: i64,
    /// The offset after its last record.
    pub(crate) next_offset: Offset,
}

/// How many segments, from the oldest, retention deletes: never one that
/// holds an offset at or above `high_watermark`. `segments` are in offset
/// order and the last one is the active segment.
pub(crate) fn segments_to_delete(
    segments: &[SegmentSummary],
    config: &LogConfig,
    now_ms: i64,
    high_watermark: Offset,
) -> usize {
    let closed = segments.len().saturating_sub(1);
    let committed = segments[..closed].iter().take_while(|segment| segment.next_offset <= high_watermark).count();
    let expired = match config.retention_ms {
        Some(retention_ms) => {
            let cutoff = now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
            segments[..closed].iter().take_while(|segment| segment.max_timestamp_ms < cutoff).count()
        }
        None => 0,
    };
    let oversized = match config.retention_bytes {
        Some(retention_bytes) => {
            let mut excess =
                segments.iter().map(|segment| segment.size_bytes).sum::<u64>().saturating_sub(retention_bytes);
            segments[..closed]
                .iter()
                .take_while(|segment| {
                    let fits = segment.size_bytes <= excess && excess > 0;
                    if fits {
                        excess -= segment.size_bytes;
                    }
                    fits
                })
                .count()
        }
        None => 0,
    };
    expired.max(oversized).min(committed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(size_bytes: u64, max_timestamp_ms: i64) -> SegmentSummary {
        SegmentSummary { size_bytes, max_timestamp_ms, next_offset: Offset(0) }
    }

    /// Segments of 10 offsets each, all old and big enough to delete.
    fn numbered(count: u64) -> Vec<SegmentSummary> {
        (1..=count)
            .map(|index| SegmentSummary { size_bytes: 10, max_timestamp_ms: 0, next_offset: Offset(10 * index) })
            .collect()
    }

    #[test]
    fn nothing_at_or_above_the_high_watermark_is_deleted() {
        let config = LogConfig { retention_ms: Some(1), retention_bytes: Some(1), ..LogConfig::default() };
        let segments = numbered(5);
        assert_eq!(segments_to_delete(&segments, &config, 1_000, Offset(100)), 4, "all closed ones, when committed");
        assert_eq!(segments_to_delete(&segments, &config, 1_000, Offset(25)), 2, "the third holds offset 25");
        assert_eq!(segments_to_delete(&segments, &config, 1_000, Offset(20)), 2);
        assert_eq!(segments_to_delete(&segments, &config, 1_000, Offset(0)), 0);
    }

    #[test]
    fn time_retention_deletes_old_closed_segments_only() {
        let config = LogConfig { retention_ms: Some(1_000), retention_bytes: None, ..LogConfig::default() };
        let segments = [summary(10, 100), summary(10, 500), summary(10, 5_000), summary(10, 100)];
        assert_eq!(segments_to_delete(&segments, &config, 2_000, Offset(u64::MAX)), 2);
        // The active segment stays however old it is.
        assert_eq!(segments_to_delete(&segments[3..], &config, 1_000_000, Offset(u64::MAX)), 0);
    }

    #[test]
    fn size_retention_keeps_the_log_at_or_under_the_limit() {
        let config = LogConfig { retention_ms: None, retention_bytes: Some(25), ..LogConfig::default() };
        let segments = [summary(10, 0), summary(10, 0), summary(10, 0), summary(5, 0)];
        // 35 bytes, 10 over: deleting the first segment is enough.
        assert_eq!(segments_to_delete(&segments, &config, 0, Offset(u64::MAX)), 1);
        let config = LogConfig { retention_bytes: Some(4), ..config };
        assert_eq!(segments_to_delete(&segments, &config, 0, Offset(u64::MAX)), 3);
    }
}
