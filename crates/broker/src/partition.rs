//! One partition replica on this broker: its log, and the watch that tells
//! waiting fetches that the high watermark moved.
//!
//! The log's writer sits behind a `std::sync::Mutex` that is only ever
//! locked inside `spawn_blocking`, so file I/O never runs on an async
//! worker and no lock is held across an `.await`. Reads go through the
//! log's lock-free `LogReader`, also on the blocking pool.
//!
//! Replication is not there yet: the high watermark (HW) is the leader's
//! log end offset (LEO), and followers do not fetch. The replication issue
//! replaces that with followers and a real HW.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use brook_record::{LeaderEpoch, Offset};
use brook_storage::{AppendInfo, LogConfig, LogReader, PartitionLog, StorageError};
use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::error::BrokerError;

#[derive(Debug)]
pub struct Partition {
    topic: String,
    partition: u32,
    /// `None` once closed (shutdown or topic deletion).
    log: Mutex<Option<PartitionLog>>,
    reader: LogReader,
    high_watermark: watch::Sender<Offset>,
    /// The epoch this broker stamps into batches while it leads.
    leader_epoch: AtomicU32,
}

/// A fetch's answer.
#[derive(Debug)]
pub struct FetchedRecords {
    pub records: Bytes,
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

impl Partition {
    /// Opens (recovering if needed) the log in `dir`. Blocking.
    pub fn open(
        topic: &str,
        partition: u32,
        dir: std::path::PathBuf,
        config: LogConfig,
        leader_epoch: u32,
    ) -> Result<Partition, BrokerError> {
        let storage_error = |source| BrokerError::Storage { topic: topic.to_string(), partition, source };
        let log = PartitionLog::open(dir, config).map_err(storage_error)?;
        for truncation in log.truncations_on_open() {
            tracing::warn!(topic, partition, ?truncation, "recovery cut a damaged log tail");
        }
        let reader = log.reader();
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        Ok(Partition {
            topic: topic.to_string(),
            partition,
            log: Mutex::new(Some(log)),
            reader,
            high_watermark,
            leader_epoch: AtomicU32::new(leader_epoch),
        })
    }

    /// Follows the metadata group's decision (epochs only grow).
    pub fn set_leader_epoch(&self, leader_epoch: u32) {
        self.leader_epoch.fetch_max(leader_epoch, Ordering::AcqRel);
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.reader.log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.reader.log_end_offset()
    }

    /// Bytes of the partition's segment files.
    pub fn size_bytes(&self) -> u64 {
        self.reader.size_bytes()
    }

    /// A receiver that wakes when the HW moves: what long-poll fetches wait on.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    fn map_storage_error(&self, source: StorageError) -> BrokerError {
        let (topic, partition) = (self.topic.clone(), self.partition);
        match source {
            StorageError::InvalidBatch { source: brook_record::RecordError::TooLarge { .. }, .. } => {
                BrokerError::BatchTooLarge { topic, partition, source }
            }
            StorageError::InvalidBatch { .. } | StorageError::EmptyAppend => {
                BrokerError::InvalidBatch { topic, partition, source }
            }
            source => BrokerError::Storage { topic, partition, source },
        }
    }

    fn with_log<T>(&self, work: impl FnOnce(&mut PartitionLog) -> Result<T, StorageError>) -> Result<T, BrokerError> {
        // A poisoned lock means an append panicked; the log itself is only
        // changed through its own methods, which keep it consistent.
        let mut guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = guard.as_mut().ok_or(BrokerError::ShuttingDown)?;
        work(log).map_err(|error| self.map_storage_error(error))
    }

    /// Validates, stamps and appends the batches in `records` (the leader's
    /// append), then publishes the new HW.
    pub async fn append(self: &Arc<Self>, records: Bytes) -> Result<AppendInfo, BrokerError> {
        // Stamping needs the bytes mutable: free when the request buffer is
        // ours alone, one copy of the batch otherwise.
        let mut buffer = records.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        let partition = Arc::clone(self);
        let epoch = LeaderEpoch(self.leader_epoch.load(Ordering::Acquire));
        let info = tokio::task::spawn_blocking(move || partition.with_log(|log| log.append(&mut buffer, epoch)))
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
        // No followers fetch yet: HW = LEO (see the module docs).
        self.high_watermark.send_replace(info.last_offset.plus(1));
        Ok(info)
    }

    /// Reads whole batches from `offset`, up to about `max_bytes`, below the HW.
    pub async fn read(self: &Arc<Self>, offset: i64, max_bytes: u64) -> Result<FetchedRecords, BrokerError> {
        let requested = u64::try_from(offset)
            .map_err(|_| BrokerError::InvalidRequest(format!("fetch offset {offset} is negative")))?;
        let high_watermark = self.high_watermark();
        let partition = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let read = match partition.reader.read(Offset(requested), max_bytes, high_watermark) {
                Ok(read) => read,
                Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) => {
                    return Err(partition.out_of_range(offset, log_start_offset, high_watermark))
                }
                Err(error) => return Err(partition.map_storage_error(error)),
            };
            if Offset(requested) > high_watermark {
                return Err(partition.out_of_range(offset, read.log_start_offset, high_watermark));
            }
            let records = read.to_bytes().map_err(|error| partition.map_storage_error(error))?;
            Ok(FetchedRecords {
                records,
                next_offset: read.next_offset,
                high_watermark,
                log_start_offset: read.log_start_offset,
            })
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?
    }

    fn out_of_range(&self, requested: i64, log_start_offset: Offset, high_watermark: Offset) -> BrokerError {
        BrokerError::OffsetOutOfRange {
            topic: self.topic.clone(),
            partition: self.partition,
            requested,
            log_start_offset,
            high_watermark,
        }
    }

    /// The first offset at or after `timestamp_ms` below the HW, with its
    /// timestamp.
    pub async fn offset_for_timestamp(
        self: &Arc<Self>,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, BrokerError> {
        let partition = Arc::clone(self);
        let high_watermark = self.high_watermark();
        tokio::task::spawn_blocking(move || {
            let found =
                partition.reader.offset_for_timestamp(timestamp_ms).map_err(|e| partition.map_storage_error(e))?;
            Ok(found.filter(|(offset, _)| *offset < high_watermark))
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?
    }

    /// Retention and time-based flushes. Blocking.
    pub fn maintain(&self, now_ms: i64) -> Result<(), BrokerError> {
        self.with_log(|log| {
            log.apply_retention(now_ms)?;
            log.flush_if_due()?;
            Ok(())
        })
    }

    /// Closes the log cleanly (flush, clean-shutdown marker). Blocking.
    pub fn close(&self) -> Result<(), BrokerError> {
        let log = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match log {
            Some(log) => log.close().map_err(|error| self.map_storage_error(error)),
            None => Ok(()),
        }
    }
}
