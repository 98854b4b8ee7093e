//! The partition log (Kafka's `UnifiedLog`): an ordered list of segments,
//! the last one active, with one writer and any number of readers.
//!
//! [`PartitionLog`] is the writer: it alone appends, rolls, truncates,
//! deletes and flushes (`&mut self`). [`LogReader`] is a cheap clone that
//! any thread uses to read. Readers share two things with the writer: the
//! list of segments, an `Arc` swapped under a lock held only for the swap
//! or for cloning the `Arc`, and the log end offset, an atomic published
//! after the bytes it covers. So a reader never waits on an append, and an
//! append never waits on a read for longer than that pointer swap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use brook_record::{stamp_batch, stamp_batch_head, validate_batch, LeaderEpoch, Offset, STAMPED_HEAD_BYTES};

use crate::config::{FlushPolicy, LogConfig};
use crate::error::StorageError;
use crate::leader_epoch::{LeaderEpochCache, PublishedEpochs};
use crate::load::rebuild_producer_state;
use crate::producer_state::{AppendCheck, ProducerBatch, ProducerState};
use crate::read::LogRead;
use crate::recovery::{self, Truncation, CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE};

/// The replication layer's high watermark, checkpointed (Kafka's
/// `replication-offset-checkpoint`, one file per partition here).
const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";
use crate::retention::{segments_to_delete, SegmentSummary};
use crate::segment::{file_path, now_ms, BatchInfo, Segment};

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub batch_count: usize,
    pub record_count: u64,
    pub max_timestamp_ms: i64,
    /// The append was a producer's retry of batches already in the log:
    /// nothing was written; the offsets are the ones they got then.
    pub duplicate: bool,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: Offset,
}

/// The segments, oldest first; never empty, the last one is active.
#[derive(Debug)]
pub(crate) struct Segments(pub(crate) Vec<Arc<Segment>>);

impl Segments {
    pub(crate) fn active(&self) -> &Arc<Segment> {
        self.0.last().expect("a log always has an active segment")
    }

    pub(crate) fn log_start_offset(&self) -> Offset {
        self.0[0].base_offset()
    }

    /// The index of the segment that holds `offset`, or would.
    pub(crate) fn holding(&self, offset: Offset) -> usize {
        self.0.partition_point(|segment| segment.base_offset() <= offset).saturating_sub(1)
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) segments: RwLock<Arc<Segments>>,
    pub(crate) log_end_offset: AtomicU64,
    pub(crate) epochs: Arc<PublishedEpochs>,
}

impl Shared {
    pub(crate) fn segments(&self) -> Arc<Segments> {
        // A poisoned lock only means a writer panicked mid-swap; the Arc in
        // it is still a whole, consistent list.
        Arc::clone(&self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub(crate) fn replace_segments(&self, segments: Vec<Arc<Segment>>) {
        assert!(!segments.is_empty(), "a log always has an active segment");
        *self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Segments(segments));
    }

    pub(crate) fn log_end_offset(&self) -> Offset {
        Offset(self.log_end_offset.load(Ordering::Acquire))
    }
}

/// A sealed segment's fsync, to run without the log's lock (see
/// [`PartitionLog::sealed_flush`]).
#[derive(Debug)]
pub struct PendingFlush {
    segment: Arc<Segment>,
}

impl PendingFlush {
    /// fsyncs the segment's files. Blocking.
    pub fn run(&self) -> Result<(), StorageError> {
        self.segment.flush()
    }
}

/// A read handle on a partition log. Clone it freely; it stays valid after
/// the log rolls, truncates or deletes segments (it sees the new state).
#[derive(Debug, Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

/// The writer of one partition replica's log. See the crate docs.
#[derive(Debug)]
pub struct PartitionLog {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) shared: Arc<Shared>,
    pub(crate) epochs: LeaderEpochCache,
    /// Every offset below it is on disk (fsynced).
    pub(crate) recovery_point: Offset,
    pub(crate) records_since_flush: u64,
    pub(crate) last_flush: Instant,
    /// Reused across appends so validation allocates nothing.
    pub(crate) batch_infos: Vec<BatchInfo>,
    pub(crate) truncations: Vec<Truncation>,
    /// How many segments recovery read through when the log was opened.
    pub(crate) scanned_on_open: usize,
    /// Idempotent producers' sequences, as of the log end.
    pub(crate) producers: ProducerState,
}

impl PartitionLog {
    /// Whether the log in `dir` was closed cleanly when it was last open
    /// (its marker is there until it opens again). Every record of a
    /// cleanly closed log was fsynced at close; a log that was not may
    /// lack what it had not fsynced, if the machine lost power since.
    pub fn closed_cleanly(dir: &std::path::Path) -> bool {
        dir.join(CLEAN_SHUTDOWN_FILE).is_file()
    }

    pub fn reader(&self) -> LogReader {
        LogReader { shared: Arc::clone(&self.shared) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies a changed topic config; it takes effect from the next append.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), StorageError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// What recovery cut when the log was opened (empty after a clean stop).
    pub fn truncations_on_open(&self) -> &[Truncation] {
        &self.truncations
    }

    /// How many segments recovery read through when the log was opened:
    /// none after a clean stop, those above the recovery point after an
    /// unclean one (the active segment, once rolled segments are flushed).
    pub fn segments_scanned_on_open(&self) -> usize {
        self.scanned_on_open
    }

    pub fn log_start_offset(&self) -> Offset {
        self.shared.segments().log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.shared.log_end_offset()
    }

    /// Offsets below this are known to be on disk.
    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }

    pub fn segment_count(&self) -> usize {
        self.shared.segments().0.len()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.reader().size_bytes()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest().map(|(epoch, _)| epoch)
    }

    /// The end offset of `epoch` on this log (see
    /// [`crate::leader_epoch`]): what a leader answers a follower that asks
    /// where its last epoch ended. `None` when the log knows no epoch at or
    /// below it.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader's append: validates every batch in `records` (one or more
    /// batches laid end to end), then stamps each with its base offset and
    /// `leader_epoch` in place and appends the bytes as they are. Nothing is
    /// written unless every batch is valid.
    pub fn append(&mut self, records: &mut [u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo, StorageError> {
        if let Some(latest) = self.latest_epoch() {
            if leader_epoch < latest {
                return Err(StorageError::StaleLeaderEpoch { epoch: leader_epoch, latest });
            }
        }
        self.validate(records)?;
        if let Some(duplicate) = self.check_producers()? {
            return Ok(duplicate);
        }
        let mut next = self.log_end_offset();
        let mut position = 0usize;
        for info in &mut self.batch_infos {
            let count = info.last_offset.0 - info.base_offset.0;
            stamp_batch(&mut records[position..], next, leader_epoch);
            info.base_offset = next;
            info.last_offset = next.plus(count);
            next = info.last_offset.plus(1);
            position += info.size_bytes as usize;
        }
        let base_offset = self.log_end_offset();
        self.epochs.assign(leader_epoch, base_offset)?;
        self.write(records)
    }

    /// The leader's append from a buffer it may not change (shared with the
    /// request it came in): as `append`, but each batch's stamped first
    /// bytes (base offset, length, leader epoch) go from a small copy and
    /// the rest straight from `records`, in one vectored write. No copy of
    /// the batches is made. The CRC does not cover the stamped fields.
    pub fn append_shared(&mut self, records: &[u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo, StorageError> {
        self.append_shared_parts(&[records], leader_epoch)
    }

    /// `append_shared` of batches that arrive in several buffers, each
    /// holding whole batches (a request that carries its batches as
    /// separate pieces): they are written as one append, in order.
    pub fn append_shared_parts(
        &mut self,
        buffers: &[&[u8]],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, StorageError> {
        if let Some(latest) = self.latest_epoch() {
            if leader_epoch < latest {
                return Err(StorageError::StaleLeaderEpoch { epoch: leader_epoch, latest });
            }
        }
        // Where each batch sits: (buffer, start) beside `batch_infos`.
        let mut places = Vec::new();
        self.batch_infos.clear();
        for (buffer_index, buffer) in buffers.iter().enumerate() {
            let found = self.batch_infos.len();
            self.validate_into(buffer)?;
            let mut start = 0usize;
            for info in &self.batch_infos[found..] {
                places.push((buffer_index, start));
                start += info.size_bytes as usize;
            }
        }
        if self.batch_infos.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        if let Some(duplicate) = self.check_producers()? {
            return Ok(duplicate);
        }
        let mut next = self.log_end_offset();
        let mut heads = Vec::with_capacity(self.batch_infos.len());
        for (info, &(buffer, start)) in self.batch_infos.iter_mut().zip(&places) {
            let count = info.last_offset.0 - info.base_offset.0;
            let mut head = [0u8; STAMPED_HEAD_BYTES];
            head.copy_from_slice(&buffers[buffer][start..start + STAMPED_HEAD_BYTES]);
            stamp_batch_head(&mut head, next, leader_epoch);
            heads.push(head);
            info.base_offset = next;
            info.last_offset = next.plus(count);
            next = info.last_offset.plus(1);
        }
        let mut parts = Vec::with_capacity(2 * heads.len());
        let mut total = 0u64;
        for ((info, &(buffer, start)), head) in self.batch_infos.iter().zip(&places).zip(&heads) {
            let end = start + info.size_bytes as usize;
            parts.push(std::io::IoSlice::new(head));
            parts.push(std::io::IoSlice::new(&buffers[buffer][start + STAMPED_HEAD_BYTES..end]));
            total += info.size_bytes;
        }
        let base_offset = self.log_end_offset();
        self.epochs.assign(leader_epoch, base_offset)?;
        self.write_parts(&mut parts, total)
    }

    /// The follower's append: batches fetched from the leader keep the
    /// offsets and epochs the leader stamped; they must start at this log's
    /// end and follow each other.
    pub fn append_replicated(&mut self, records: &[u8]) -> Result<AppendInfo, StorageError> {
        self.validate(records)?;
        let mut expected = self.log_end_offset();
        let mut newest_epoch = self.latest_epoch();
        for info in &self.batch_infos {
            if info.base_offset != expected {
                return Err(StorageError::NonContiguousAppend { expected, got: info.base_offset });
            }
            if let (Some(epoch), Some(newest)) = (info.leader_epoch, newest_epoch) {
                if epoch < newest {
                    return Err(StorageError::StaleLeaderEpoch { epoch, latest: newest });
                }
            }
            newest_epoch = info.leader_epoch.or(newest_epoch);
            expected = info.last_offset.plus(1);
        }
        // Each new epoch starts where its first batch does.
        for info in &self.batch_infos {
            if let Some(epoch) = info.leader_epoch {
                self.epochs.assign(epoch, info.base_offset)?;
            }
        }
        self.write(records)
    }

    /// The leader's sequence check of the validated `batch_infos`:
    /// `Some` when the append is a producer's retry of batches already in
    /// the log (answered with their offsets, nothing written).
    fn check_producers(&self) -> Result<Option<AppendInfo>, StorageError> {
        if self.batch_infos.iter().all(|info| info.producer.is_none()) {
            return Ok(None);
        }
        let batches: Vec<Option<ProducerBatch>> = self.batch_infos.iter().map(|info| info.producer).collect();
        match self.producers.check_append(&batches) {
            Ok(AppendCheck::New) => Ok(None),
            Ok(AppendCheck::Duplicate(first, last)) => Ok(Some(AppendInfo {
                base_offset: first,
                last_offset: last,
                batch_count: self.batch_infos.len(),
                record_count: last.0 - first.0 + 1,
                max_timestamp_ms: self.batch_infos.iter().map(|info| info.max_timestamp_ms).max().unwrap_or(i64::MIN),
                duplicate: true,
            })),
            Err((index, source)) => Err(StorageError::Producer { index, source }),
        }
    }

    /// How many idempotent producers this log knows.
    pub fn producer_count(&self) -> usize {
        self.producers.producer_count()
    }

    /// The idempotent producers that appended here at or after `since_ms`
    /// (on this broker's clock).
    pub fn producers_appended_since(&self, since_ms: i64) -> Vec<i64> {
        self.producers.appended_since(since_ms)
    }

    /// Checks every batch of an append and fills `batch_infos`.
    fn validate(&mut self, records: &[u8]) -> Result<(), StorageError> {
        if records.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        self.batch_infos.clear();
        self.validate_into(records)
    }

    /// Checks every batch of `records` and adds them to `batch_infos`.
    fn validate_into(&mut self, records: &[u8]) -> Result<(), StorageError> {
        let mut position = 0usize;
        while position < records.len() {
            let index = self.batch_infos.len();
            let header = validate_batch(&records[position..], self.config.max_batch_bytes)
                .map_err(|source| StorageError::InvalidBatch { index, source })?;
            if header.base_offset < 0 {
                return Err(StorageError::InvalidBatch {
                    index,
                    source: brook_record::RecordError::NegativeOffset { base_offset: header.base_offset },
                });
            }
            self.batch_infos.push(BatchInfo::of(&header));
            position += header.total_bytes();
        }
        Ok(())
    }

    /// Appends validated, stamped batches to the active segment, rolling
    /// first if they do not belong in it, then publishes the new end.
    fn write(&mut self, records: &[u8]) -> Result<AppendInfo, StorageError> {
        self.write_parts(&mut [std::io::IoSlice::new(records)], records.len() as u64)
    }

    /// `write` of batches given in pieces, `total` bytes in all.
    fn write_parts(&mut self, parts: &mut [std::io::IoSlice<'_>], total: u64) -> Result<AppendInfo, StorageError> {
        let first = *self.batch_infos.first().expect("validate refuses empty appends");
        let last = *self.batch_infos.last().expect("validate refuses empty appends");
        debug_assert_eq!(first.base_offset, self.log_end_offset(), "appends continue the log");
        self.roll_if_needed(total, last.last_offset)?;
        let active = Arc::clone(self.shared.segments().active());
        active.append_vectored(parts, total, &self.batch_infos, &self.config)?;
        let log_end_offset = last.last_offset.plus(1);
        self.shared.log_end_offset.store(log_end_offset.0, Ordering::Release);
        let now_ms = crate::segment::now_ms();
        for info in &self.batch_infos {
            if let Some(batch) = info.producer {
                self.producers.record(&ProducerBatch { first_offset: info.base_offset, ..batch }, now_ms);
            }
        }

        let record_count = log_end_offset.0 - first.base_offset.0;
        self.records_since_flush += record_count;
        let flush_due = match self.config.flush_policy {
            FlushPolicy::None => false,
            FlushPolicy::Always => true,
            FlushPolicy::EveryNRecords(records) => self.records_since_flush >= records,
            FlushPolicy::EveryMs(interval_ms) => self.last_flush.elapsed().as_millis() >= u128::from(interval_ms),
        };
        if flush_due {
            self.flush()?;
        }
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            batch_count: self.batch_infos.len(),
            record_count,
            max_timestamp_ms: self.batch_infos.iter().map(|info| info.max_timestamp_ms).max().unwrap_or(i64::MIN),
            duplicate: false,
        })
    }

    fn roll_if_needed(&mut self, incoming_bytes: u64, last_offset: Offset) -> Result<(), StorageError> {
        let segments = self.shared.segments();
        let active = segments.active();
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size_bytes() + incoming_bytes > self.config.segment_bytes;
        let too_old = now_ms().saturating_sub(active.created_ms()) >= self.config.segment_ms as i64;
        let offsets_overflow = active.relative(last_offset).is_none();
        if too_big || too_old || offsets_overflow || active.index_is_full() {
            drop(segments);
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end.
    /// Does nothing if the active segment is empty.
    pub fn roll(&mut self) -> Result<(), StorageError> {
        let segments = self.shared.segments();
        let active = segments.active();
        if active.is_empty() {
            return Ok(());
        }
        active.seal()?;
        let base_offset = self.log_end_offset();
        // Opening the log reads batch headers only from the newest
        // snapshot on, so the producers' state never costs a full scan.
        self.producers.write_snapshot(&self.dir, base_offset)?;
        let segment = Arc::new(Segment::create(&self.dir, base_offset, &self.config)?);
        let mut list = segments.0.clone();
        list.push(segment);
        self.shared.replace_segments(list);
        tracing::debug!(dir = %self.dir.display(), base_offset = %base_offset, "rolled to a new segment");
        Ok(())
    }

    /// Removes every batch that holds `offset` or a later one (a follower
    /// cutting what diverged from its leader). Batches are whole, so the new
    /// log end is the base offset of the batch holding `offset`, which may
    /// be below it. Returns the new log end offset.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<Offset, StorageError> {
        let log_end_offset = self.log_end_offset();
        if offset >= log_end_offset {
            return Ok(log_end_offset);
        }
        let segments = self.shared.segments();
        if offset <= segments.log_start_offset() {
            return self.truncate_fully_and_start_at(offset);
        }
        let holding = segments.holding(offset);
        let (kept, dropped) = segments.0.split_at(holding + 1);
        let mut kept = kept.to_vec();
        let target = kept.pop().expect("the holding segment is kept");
        let reopened = if dropped.is_empty() {
            target
        } else {
            // A sealed segment becomes active again: reopen it with room
            // in its indexes. Readers keep the old handle until they drop it.
            drop(target);
            recovery::open_segment(
                &self.dir,
                segments.0[holding].base_offset(),
                &self.config,
                false,
                true,
                &self.epochs,
            )?
            .0
        };
        let new_end = reopened.truncate_to(offset)?;
        kept.push(reopened);
        self.shared.log_end_offset.store(new_end.0, Ordering::Release);
        self.shared.replace_segments(kept);
        for segment in dropped {
            segment.delete_files()?;
        }
        self.after_truncation(new_end)?;
        tracing::info!(dir = %self.dir.display(), requested = %offset, log_end_offset = %new_end, "truncated log");
        Ok(new_end)
    }

    /// Empties the log and restarts it at `offset`, anywhere: at or below
    /// the log start (a follower whose every record diverged), or past the
    /// log end (a follower so far behind that its leader's retention
    /// deleted what it lacks: Kafka's `truncateFullyAndStartAt`). The first
    /// segment is emptied in place when it starts there (its files stay, so
    /// no reader ever sees them vanish mid-read).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<Offset, StorageError> {
        let old = self.shared.segments();
        let fresh = if old.log_start_offset() == offset {
            let first = recovery::open_segment(&self.dir, offset, &self.config, false, true, &self.epochs)?.0;
            first.truncate_at(0, offset)?;
            first
        } else {
            Arc::new(Segment::create(&self.dir, offset, &self.config)?)
        };
        self.shared.log_end_offset.store(offset.0, Ordering::Release);
        self.shared.replace_segments(vec![fresh]);
        for segment in old.0.iter().filter(|segment| segment.base_offset() != offset) {
            segment.delete_files()?;
        }
        self.epochs.clear()?;
        ProducerState::remove_snapshots(&self.dir)?;
        self.producers = ProducerState::default();
        self.recovery_point = offset;
        recovery::write_file_atomically(&self.dir.join(RECOVERY_POINT_FILE), offset.to_string().as_bytes())?;
        tracing::info!(dir = %self.dir.display(), log_end_offset = %offset, "emptied log");
        Ok(offset)
    }

    fn after_truncation(&mut self, log_end_offset: Offset) -> Result<(), StorageError> {
        self.epochs.truncate_from_end(log_end_offset)?;
        self.producers = rebuild_producer_state(&self.dir, &self.shared.segments().0, log_end_offset)?;
        self.recovery_point = self.recovery_point.min(log_end_offset);
        recovery::write_file_atomically(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point.to_string().as_bytes())
    }

    /// Deletes the oldest closed segments that retention (by time, then by
    /// size) no longer keeps, and advances the log start offset. Never a
    /// segment holding an offset at or above `high_watermark`: a record
    /// not yet committed, or one a follower still needs, stays.
    pub fn apply_retention(&mut self, now_ms: i64, high_watermark: Offset) -> Result<RetentionOutcome, StorageError> {
        let segments = self.shared.segments();
        let summaries: Vec<SegmentSummary> = segments
            .0
            .iter()
            .map(|segment| SegmentSummary {
                size_bytes: segment.size_bytes(),
                max_timestamp_ms: segment.max_timestamp_ms(),
                next_offset: segment.next_offset(),
            })
            .collect();
        let expired = self.producers.expire(now_ms, self.config.producer_id_expiration_ms);
        if expired > 0 {
            tracing::info!(dir = %self.dir.display(), expired, "forgot idle producers");
        }
        let count = segments_to_delete(&summaries, &self.config, now_ms, high_watermark);
        let (deleted, kept) = segments.0.split_at(count);
        let log_start_offset = kept[0].base_offset();
        if count == 0 {
            return Ok(RetentionOutcome { log_start_offset, ..RetentionOutcome::default() });
        }
        self.shared.replace_segments(kept.to_vec());
        let mut bytes_deleted = 0;
        for segment in deleted {
            bytes_deleted += segment.size_bytes();
            segment.delete_files()?;
        }
        self.epochs.truncate_from_start(log_start_offset)?;
        tracing::info!(
            dir = %self.dir.display(),
            segments_deleted = count,
            bytes_deleted,
            log_start_offset = %log_start_offset,
            "retention deleted old segments"
        );
        Ok(RetentionOutcome { segments_deleted: count, bytes_deleted, log_start_offset })
    }

    /// fsyncs every segment that may hold data above the recovery point,
    /// then moves the recovery point to the log end and persists it.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        let log_end_offset = self.log_end_offset();
        let segments = self.shared.segments();
        for segment in
            segments.0.iter().filter(|segment| segment.next_offset() > self.recovery_point || segment.is_empty())
        {
            segment.flush()?;
        }
        self.recovery_point = log_end_offset;
        self.records_since_flush = 0;
        self.last_flush = Instant::now();
        recovery::write_file_atomically(&self.dir.join(RECOVERY_POINT_FILE), log_end_offset.to_string().as_bytes())
    }

    /// The oldest sealed segment not yet known to be on disk (above the
    /// recovery point), as a flush to run without this log's lock: a
    /// rolled segment gets fsynced off the append path (by the broker's
    /// maintenance pass), then [`PartitionLog::finish_flush`] moves the
    /// recovery point past it. So after a kill -9 recovery scans only the
    /// active segment, however much closed log the partition holds.
    pub fn sealed_flush(&self) -> Option<PendingFlush> {
        let segments = self.shared.segments();
        let sealed = &segments.0[..segments.0.len() - 1];
        let segment = sealed.iter().find(|segment| segment.next_offset() > self.recovery_point)?;
        Some(PendingFlush { segment: Arc::clone(segment) })
    }

    /// After [`PendingFlush::run`]: the recovery point moves past the
    /// flushed segment, if it is still part of this log as it was (not cut
    /// by a truncation or deleted by retention meanwhile).
    pub fn finish_flush(&mut self, flushed: &PendingFlush) -> Result<(), StorageError> {
        let segments = self.shared.segments();
        let still_here =
            segments.0[..segments.0.len() - 1].iter().any(|segment| Arc::ptr_eq(segment, &flushed.segment));
        let end = flushed.segment.next_offset();
        if !still_here || end <= self.recovery_point || end > self.log_end_offset() {
            return Ok(());
        }
        self.recovery_point = end;
        recovery::write_file_atomically(&self.dir.join(RECOVERY_POINT_FILE), end.to_string().as_bytes())
    }

    /// Both steps of a sealed segment's flush at once, under this log's
    /// lock (tests, tools).
    pub fn flush_sealed(&mut self) -> Result<(), StorageError> {
        while let Some(pending) = self.sealed_flush() {
            pending.run()?;
            self.finish_flush(&pending)?;
        }
        Ok(())
    }

    /// For `FlushPolicy::EveryMs`: flushes if the interval has passed and
    /// something was appended since. Call it from a timer.
    pub fn flush_if_due(&mut self) -> Result<bool, StorageError> {
        if let FlushPolicy::EveryMs(interval_ms) = self.config.flush_policy {
            if self.records_since_flush > 0 && self.last_flush.elapsed().as_millis() >= u128::from(interval_ms) {
                self.flush()?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Flushes, seals the active segment's indexes and marks the stop as
    /// clean, so the next open scans nothing.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.flush()?;
        self.shared.segments().active().seal()?;
        self.producers.write_snapshot(&self.dir, self.log_end_offset())?;
        recovery::write_file_atomically(&self.dir.join(CLEAN_SHUTDOWN_FILE), b"")?;
        tracing::info!(dir = %self.dir.display(), log_end_offset = %self.log_end_offset(), "closed partition log");
        Ok(())
    }

    /// Persists the replication layer's high watermark beside the log (a
    /// restart must not expose records above it). The old or the new value
    /// survives a crash; without fsync (it is written often), a power loss
    /// may keep the old one, which is only ever lower.
    pub fn checkpoint_high_watermark(&self, high_watermark: Offset) -> Result<(), StorageError> {
        recovery::write_file_replacing(
            &self.dir.join(HIGH_WATERMARK_FILE),
            high_watermark.to_string().as_bytes(),
            false,
        )
    }

    /// The last checkpointed high watermark, capped at the log end (a log
    /// cut by recovery holds less); `None` if never checkpointed.
    pub fn checkpointed_high_watermark(&self) -> Option<Offset> {
        recovery::read_offset_file(&self.dir.join(HIGH_WATERMARK_FILE)).map(|hw| hw.min(self.log_end_offset()))
    }

    /// Reads from `from_offset`: see [`LogReader::read`].
    pub fn read(&self, from_offset: Offset, max_bytes: u64, upto: Offset) -> Result<LogRead, StorageError> {
        self.reader().read(from_offset, max_bytes, upto)
    }

    /// See [`LogReader::offset_for_timestamp`].
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        self.reader().offset_for_timestamp(timestamp_ms)
    }
}

pub(crate) fn delete_segment_files(dir: &Path, bases: &[Offset]) -> Result<(), StorageError> {
    for &base in bases {
        for extension in ["log", "index", "timeindex"] {
            let path = file_path(dir, base, extension);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StorageError::Io { operation: "deleting segment file", path, source }),
            }
        }
    }
    Ok(())
}
