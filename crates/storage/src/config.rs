//! The knobs of one partition log, with Kafka's names and defaults.

use crate::error::StorageError;

/// When the log calls `fsync`. Kafka's default, and Brook's, is to leave
/// durability to replication and let the page cache write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Never fsync on the append path (only on roll, clean close and
    /// explicit `flush`).
    #[default]
    None,
    /// fsync once this many records were appended since the last flush.
    EveryNRecords(u64),
    /// fsync when this many milliseconds passed since the last flush,
    /// checked on append and by [`crate::PartitionLog::flush_if_due`].
    EveryMs(u64),
    /// fsync before `append` returns.
    Always,
}

/// The configuration of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one would pass this size.
    /// Default 1 GiB; at most 2 GiB (index positions are 32-bit, as in Kafka).
    pub segment_bytes: u64,
    /// Roll once the active segment was created this long ago (broker
    /// clock) and holds data. Default 7 days.
    pub segment_ms: u64,
    /// Delete closed segments whose newest record is older than this.
    /// `None` keeps them forever. Default 7 days.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this.
    /// `None` (the default) sets no size limit.
    pub retention_bytes: Option<u64>,
    /// The largest batch `append` accepts. Default 1 MiB, as Kafka's
    /// `message.max.bytes`.
    pub max_batch_bytes: usize,
    /// Bytes of log between two offset-index entries. Default 4 KiB.
    pub index_interval_bytes: u64,
    pub flush_policy: FlushPolicy,
    /// Forget an idempotent producer whose newest batch is older than this
    /// (Kafka's `producer.id.expiration.ms`). Default 24 hours.
    pub producer_id_expiration_ms: u64,
}

const GIB: u64 = 1 << 30;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: GIB,
            segment_ms: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            max_batch_bytes: 1 << 20,
            index_interval_bytes: 4096,
            flush_policy: FlushPolicy::None,
            producer_id_expiration_ms: DAY_MS,
        }
    }
}

/// A field of [`LogConfig`], as `StorageError::InvalidConfig` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigField {
    SegmentBytes,
    SegmentMs,
    RetentionMs,
    MaxBatchBytes,
    IndexIntervalBytes,
    FlushPolicy,
    ProducerIdExpirationMs,
}

impl std::fmt::Display for ConfigField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigField::SegmentBytes => "segment_bytes",
            ConfigField::SegmentMs => "segment_ms",
            ConfigField::RetentionMs => "retention_ms",
            ConfigField::MaxBatchBytes => "max_batch_bytes",
            ConfigField::IndexIntervalBytes => "index_interval_bytes",
            ConfigField::FlushPolicy => "flush_policy",
            ConfigField::ProducerIdExpirationMs => "producer_id_expiration_ms",
        })
    }
}

/// The longest time setting accepted: 100 years, in milliseconds.
pub const MAX_MS: u64 = 100 * 365 * DAY_MS;

impl LogConfig {
    /// Checks the values against their limits, naming the one that is off.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |field: ConfigField, reason: String| Err(StorageError::InvalidConfig { field, reason });
        if self.segment_bytes < 1024 || self.segment_bytes > 2 * GIB {
            return invalid(ConfigField::SegmentBytes, format!("{} is outside 1 KiB..=2 GiB", self.segment_bytes));
        }
        // A batch bigger than `segment_bytes` is fine: it gets a segment of
        // its own, as in Kafka. The 1 GiB cap keeps positions in 32 bits.
        if self.max_batch_bytes < brook_record::HEADER_BYTES || self.max_batch_bytes as u64 > GIB {
            return invalid(
                ConfigField::MaxBatchBytes,
                format!("{} is outside {}..=1 GiB", self.max_batch_bytes, brook_record::HEADER_BYTES),
            );
        }
        if self.index_interval_bytes == 0 {
            return invalid(ConfigField::IndexIntervalBytes, "must be positive".to_string());
        }
        if let FlushPolicy::EveryNRecords(0) = self.flush_policy {
            return invalid(ConfigField::FlushPolicy, "every_n_records needs a positive count".to_string());
        }
        // Times are compared as signed milliseconds since the epoch: a value
        // past a century would wrap there (and roll or delete on every pass).
        if self.segment_ms == 0 || self.segment_ms > MAX_MS {
            return invalid(ConfigField::SegmentMs, format!("{} is outside 1..={MAX_MS} (100 years)", self.segment_ms));
        }
        if let Some(retention_ms) = self.retention_ms.filter(|ms| *ms > MAX_MS) {
            return invalid(
                ConfigField::RetentionMs,
                format!("{retention_ms} is past {MAX_MS} (100 years); use no limit"),
            );
        }
        if self.producer_id_expiration_ms == 0 || self.producer_id_expiration_ms > MAX_MS {
            return invalid(
                ConfigField::ProducerIdExpirationMs,
                format!("{} is outside 1..={MAX_MS} (100 years)", self.producer_id_expiration_ms),
            );
        }
        if let FlushPolicy::EveryMs(interval) = self.flush_policy {
            if interval == 0 || interval > MAX_MS {
                return invalid(ConfigField::FlushPolicy, format!("every_ms needs 1..={MAX_MS}, got {interval}"));
            }
        }
        Ok(())
    }

    /// Index entries a segment can need: one per `index_interval_bytes`,
    /// plus slack for the batch that may carry a segment past its size.
    pub(crate) fn max_index_entries(&self) -> usize {
        (self.segment_bytes / self.index_interval_bytes + 2) as usize
    }
}
