//! Idempotent producers' state in one partition log (Kafka's
//! `ProducerStateManager`): for each producer id, its epoch and the
//! sequence ranges of its last appended batches with their offsets.
//!
//! The leader checks every batch that carries a producer id against it
//! before the batch is stamped: the next sequence is appended, a batch
//! already in the log is answered with the offsets it got the first time
//! (nothing is written again), a gap or an overlap is refused as out of
//! order, an older epoch as fenced. Followers and recovery only record
//! what they append, so every replica holds the same state and a new
//! leader judges a retried batch as the old one would have.
//!
//! Ranges: contiguous batches of one producer (sequences and offsets both
//! following on) merge into one run, so the last [`RUNS_KEPT`] runs cover
//! at least the last five appends however many batches each held, and a
//! retried request of several batches (whose batches were one append) is
//! recognised whole on a follower turned leader too. A run stops growing at
//! [`RUN_CAP`] records so sequence distances never wrap within one.
//!
//! Snapshots: `NNNNNNNNNNNNNNNNNNNN.snapshot` holds the state as of offset
//! N (every batch below it): written at each roll and at a clean close, so
//! that opening a log reads batch headers from the newest snapshot only.
//! The format is private to Brook: a magic, a version, the entries and a
//! CRC32C of all of it; a damaged one is skipped (an older one, or the
//! log, serves instead).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use brook_record::{sequence_after, sequence_distance as distance, BatchHeader, Offset};

use crate::error::StorageError;
use crate::recovery::write_file_replacing;

/// Runs kept per producer: Kafka keeps the last five batches.
pub const RUNS_KEPT: usize = 5;
/// The most records one run covers.
const RUN_CAP: i64 = 1 << 30;
const SNAPSHOT_MAGIC: &[u8; 4] = b"BPS2";
/// The first format: the same layout, but each producer's time was its
/// newest batch's own timestamp, which says nothing of when this broker
/// last saw it. Still read; those times become the time of opening.
const SNAPSHOT_MAGIC_BATCH_TIMES: &[u8; 4] = b"BPS1";
/// Snapshots kept per log: the newest, and one in case it is damaged.
const SNAPSHOTS_KEPT: usize = 2;

/// Consecutive batches of one producer: sequences `first..=last` at
/// offsets `first_offset..`, one offset per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: Offset,
    last_offset: Offset,
}

impl Run {
    fn records(&self) -> i64 {
        distance(self.first_sequence, self.last_sequence) + 1
    }

    /// Whether `batch` continues this run in both sequence and offset.
    fn continued_by(&self, batch: &Run) -> bool {
        batch.first_sequence == sequence_after(self.last_sequence, 1)
            && batch.first_offset == self.last_offset.plus(1)
            && self.records() + batch.records() <= RUN_CAP
    }

    /// Where `first..=last` sits in this run, if wholly inside it.
    fn locate(&self, first: i32, records: i64) -> Option<(Offset, Offset)> {
        let start = distance(self.first_sequence, first);
        if start + records > self.records() {
            return None;
        }
        let base = self.first_offset.plus(start as u64);
        Some((base, base.plus(records as u64 - 1)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; at most `RUNS_KEPT`.
    runs: VecDeque<Run>,
    /// The broker's clock when this producer's newest batch was appended
    /// here (or found in the log at open): what expiration measures. Not
    /// the batch's own timestamps, which the producer chooses: a backfill
    /// of week-old records, or a producer with a skewed clock, would be
    /// forgotten between its retries and then have a retried batch
    /// appended twice.
    last_append_ms: i64,
}

/// A producer batch as the log sees it: who sent it, which sequences, and
/// (once stamped or replicated) where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub records: i64,
    pub first_offset: Offset,
}

impl ProducerBatch {
    /// The producer fields of `header`, if it carries a producer id.
    pub fn of(header: &BatchHeader) -> Option<ProducerBatch> {
        (header.producer_id >= 0).then(|| ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            records: i64::from(header.last_offset_delta) + 1,
            first_offset: Offset(header.base_offset.max(0) as u64),
        })
    }

    fn run(&self) -> Run {
        Run {
            first_sequence: self.first_sequence,
            last_sequence: sequence_after(self.first_sequence, self.records - 1),
            first_offset: self.first_offset,
            last_offset: self.first_offset.plus(self.records as u64 - 1),
        }
    }
}

/// The leader's verdict on one producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The next sequences: append it.
    Next,
    /// Already in the log at these offsets (first, last): answer with them.
    Duplicate(Offset, Offset),
}

/// The leader's verdict on one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCheck {
    New,
    /// A retry of batches already in the log at these offsets (first, last).
    Duplicate(Offset, Offset),
}

/// Why a producer batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerRefusal {
    #[error("producer {producer_id} at epoch {epoch} is fenced: epoch {current} took over")]
    Fenced { producer_id: i64, epoch: i16, current: i16 },
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {got} is out of order (expected {expected}; \
         an earlier batch is missing or this one overlaps what was appended)"
    )]
    OutOfOrder { producer_id: i64, epoch: i16, expected: i32, got: i32 },
    #[error(
        "producer {producer_id}: the append mixes batches already in the log with new ones \
         (a retry must resend exactly the batches of the request it retries)"
    )]
    PartlyDuplicate { producer_id: i64 },
    #[error("producer {producer_id} sent a batch without a base sequence")]
    NoSequence { producer_id: i64 },
    /// No state for this producer (never seen here, or forgotten after
    /// `producer.id.expiration.ms` idle), and the batch does not start at
    /// sequence 0: the leader cannot tell whether it is in the log (Kafka's
    /// UNKNOWN_PRODUCER_ID).
    #[error(
        "producer {producer_id} epoch {epoch} is unknown to this leader (never seen, or idle past \
         producer.id.expiration.ms) and its batch starts at sequence {got}, not 0"
    )]
    UnknownProducer { producer_id: i64, epoch: i16, got: i32 },
}

/// Every producer's state in one log, as of `end` (all batches below it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerState {
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The producers that appended at or after `since_ms` (this broker's
    /// clock, as `record` was given it).
    pub fn appended_since(&self, since_ms: i64) -> Vec<i64> {
        self.producers.iter().filter(|(_, entry)| entry.last_append_ms >= since_ms).map(|(id, _)| *id).collect()
    }

    /// The leader's check of one batch (offsets not yet assigned).
    pub fn check(&self, batch: &ProducerBatch) -> Result<SequenceCheck, ProducerRefusal> {
        if batch.first_sequence < 0 {
            return Err(ProducerRefusal::NoSequence { producer_id: batch.producer_id });
        }
        let out_of_order = |expected| ProducerRefusal::OutOfOrder {
            producer_id: batch.producer_id,
            epoch: batch.epoch,
            expected,
            got: batch.first_sequence,
        };
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // A producer starts at sequence 0 (a forgotten one, idle past
            // the expiration, must start again with a new epoch).
            return if batch.first_sequence == 0 {
                Ok(SequenceCheck::Next)
            } else {
                Err(ProducerRefusal::UnknownProducer {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    got: batch.first_sequence,
                })
            };
        };
        if batch.epoch < entry.epoch {
            return Err(ProducerRefusal::Fenced {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        if batch.epoch > entry.epoch {
            return if batch.first_sequence == 0 { Ok(SequenceCheck::Next) } else { Err(out_of_order(0)) };
        }
        let Some(last) = entry.runs.back() else {
            return if batch.first_sequence == 0 { Ok(SequenceCheck::Next) } else { Err(out_of_order(0)) };
        };
        let expected = sequence_after(last.last_sequence, 1);
        if batch.first_sequence == expected {
            return Ok(SequenceCheck::Next);
        }
        for run in &entry.runs {
            if let Some((first, last)) = run.locate(batch.first_sequence, batch.records) {
                return Ok(SequenceCheck::Duplicate(first, last));
            }
        }
        Err(out_of_order(expected))
    }

    /// The leader's check of one append's batches, in order (`None` for a
    /// batch without a producer id). A producer's later batches in the
    /// append must follow its earlier ones. Either every producer batch
    /// is new, or the append is a retry of one already in the log (every
    /// batch a duplicate, none without a producer id): then the offsets
    /// its batches got, first and last. Refusals name the batch's index.
    pub fn check_append(&self, batches: &[Option<ProducerBatch>]) -> Result<AppendCheck, (usize, ProducerRefusal)> {
        let mut following: Vec<(i64, i32)> = Vec::new();
        let (mut duplicates, mut new) = (None::<(Offset, Offset)>, false);
        for (index, batch) in batches.iter().enumerate() {
            let Some(batch) = batch else {
                new = true;
                continue;
            };
            let verdict = match following.iter_mut().find(|(id, _)| *id == batch.producer_id) {
                Some((_, expected)) if batch.first_sequence == *expected => SequenceCheck::Next,
                Some((_, expected)) => {
                    // Within one append a repeat is not a retry: refused.
                    return Err((
                        index,
                        ProducerRefusal::OutOfOrder {
                            producer_id: batch.producer_id,
                            epoch: batch.epoch,
                            expected: *expected,
                            got: batch.first_sequence,
                        },
                    ));
                }
                None => self.check(batch).map_err(|refusal| (index, refusal))?,
            };
            match verdict {
                SequenceCheck::Next => {
                    new = true;
                    let next = sequence_after(batch.first_sequence, batch.records);
                    match following.iter_mut().find(|(id, _)| *id == batch.producer_id) {
                        Some((_, expected)) => *expected = next,
                        None => following.push((batch.producer_id, next)),
                    }
                }
                SequenceCheck::Duplicate(first, last) => {
                    duplicates = Some(duplicates.map_or((first, last), |(earliest, _)| (earliest, last)));
                }
            }
            if new && duplicates.is_some() {
                return Err((index, ProducerRefusal::PartlyDuplicate { producer_id: batch.producer_id }));
            }
        }
        Ok(match duplicates {
            Some((first, last)) => AppendCheck::Duplicate(first, last),
            None => AppendCheck::New,
        })
    }

    /// Records an appended batch (offsets assigned) at `now_ms` on this
    /// broker's clock: on the leader after its check, on followers as they
    /// append, in recovery as found (then `now_ms` is the time of opening:
    /// a producer is never forgotten sooner than its expiration after the
    /// broker last saw it).
    pub fn record(&mut self, batch: &ProducerBatch, now_ms: i64) {
        let run = batch.run();
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.epoch,
            runs: VecDeque::new(),
            last_append_ms: now_ms,
        });
        if batch.epoch < entry.epoch {
            // Only a leader's check keeps these out; a log written before
            // that check existed may still hold them. Kept as they are.
            return;
        }
        if batch.epoch > entry.epoch {
            entry.epoch = batch.epoch;
            entry.runs.clear();
        }
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        match entry.runs.back_mut() {
            Some(last) if last.continued_by(&run) => {
                last.last_sequence = run.last_sequence;
                last.last_offset = run.last_offset;
            }
            _ => {
                if entry.runs.len() == RUNS_KEPT {
                    entry.runs.pop_front();
                }
                entry.runs.push_back(run);
            }
        }
    }

    /// Forgets producers that appended nothing here for `expiration_ms`
    /// before `now_ms`, both on this broker's clock (Kafka's
    /// `producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: u64) -> usize {
        let before = self.producers.len();
        let horizon = now_ms.saturating_sub(i64::try_from(expiration_ms).unwrap_or(i64::MAX));
        self.producers.retain(|_, entry| entry.last_append_ms >= horizon);
        before - self.producers.len()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let entry = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            out.push(entry.runs.len() as u8);
            for run in &entry.runs {
                out.extend_from_slice(&run.first_sequence.to_be_bytes());
                out.extend_from_slice(&run.last_sequence.to_be_bytes());
                out.extend_from_slice(&run.first_offset.0.to_be_bytes());
                out.extend_from_slice(&run.last_offset.0.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The state in `bytes`; `now_ms` stands for the times of a snapshot
    /// in the first format.
    fn decode(bytes: &[u8], now_ms: i64) -> Option<ProducerState> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut reader = Reader(body);
        let batch_times = match reader.take(4)? {
            magic if magic == SNAPSHOT_MAGIC => false,
            magic if magic == SNAPSHOT_MAGIC_BATCH_TIMES => true,
            _ => return None,
        };
        let count = u32::from_be_bytes(reader.array()?);
        let mut producers = HashMap::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let id = i64::from_be_bytes(reader.array()?);
            let epoch = i16::from_be_bytes(reader.array()?);
            let stored_ms = i64::from_be_bytes(reader.array()?);
            let last_append_ms = if batch_times { now_ms } else { stored_ms };
            let run_count = reader.take(1)?[0] as usize;
            if run_count > RUNS_KEPT {
                return None;
            }
            let mut runs = VecDeque::with_capacity(run_count);
            for _ in 0..run_count {
                runs.push_back(Run {
                    first_sequence: i32::from_be_bytes(reader.array()?),
                    last_sequence: i32::from_be_bytes(reader.array()?),
                    first_offset: Offset(u64::from_be_bytes(reader.array()?)),
                    last_offset: Offset(u64::from_be_bytes(reader.array()?)),
                });
            }
            producers.insert(id, ProducerEntry { epoch, runs, last_append_ms });
        }
        reader.0.is_empty().then_some(ProducerState { producers })
    }

    /// Writes the state as of `offset` to `dir` and removes all but the
    /// newest snapshots. Not fsynced: a snapshot lost in a power loss, or
    /// torn, fails its CRC and an older one (or the log) serves.
    pub fn write_snapshot(&self, dir: &Path, offset: Offset) -> Result<(), StorageError> {
        write_file_replacing(&snapshot_path(dir, offset), &self.encode(), false)?;
        let snapshots = list_snapshots(dir)?;
        let excess = snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        for old in &snapshots[..excess] {
            remove_snapshot(dir, *old)?;
        }
        Ok(())
    }

    /// The newest readable snapshot at or below `at_most`, with its offset
    /// (`now_ms`: the broker's clock, see `decode`). Snapshots above it (a
    /// truncated log's) are removed.
    pub fn load_snapshot(
        dir: &Path,
        at_most: Offset,
        now_ms: i64,
    ) -> Result<Option<(Offset, ProducerState)>, StorageError> {
        let snapshots = list_snapshots(dir)?;
        for offset in snapshots.iter().rev() {
            if *offset > at_most {
                remove_snapshot(dir, *offset)?;
                continue;
            }
            let path = snapshot_path(dir, *offset);
            match std::fs::read(&path).ok().and_then(|bytes| ProducerState::decode(&bytes, now_ms)) {
                Some(state) => return Ok(Some((*offset, state))),
                None => {
                    tracing::warn!(path = %path.display(), "producer-state snapshot is damaged; ignoring it");
                }
            }
        }
        Ok(None)
    }

    /// Removes every snapshot (the log was emptied).
    pub fn remove_snapshots(dir: &Path) -> Result<(), StorageError> {
        for offset in list_snapshots(dir)? {
            remove_snapshot(dir, offset)?;
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(count)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    dir.join(format!("{:020}.snapshot", offset.0))
}

fn remove_snapshot(dir: &Path, offset: Offset) -> Result<(), StorageError> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::Io { operation: "removing producer snapshot", path, source: error })
        }
        _ => Ok(()),
    }
}

/// Offsets of the snapshots in `dir`, oldest first.
fn list_snapshots(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing log directory", dir))? {
        let entry = entry.map_err(StorageError::io("listing log directory", dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".snapshot")) else {
            continue;
        };
        if let (20, Ok(offset)) = (stem.len(), stem.parse::<u64>()) {
            offsets.push(Offset(offset));
        }
    }
    offsets.sort();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first_sequence: i32, records: i64, first_offset: u64) -> ProducerBatch {
        ProducerBatch { producer_id, epoch, first_sequence, records, first_offset: Offset(first_offset) }
    }

    #[test]
    fn the_next_sequence_is_appended_a_repeat_is_a_duplicate_and_a_gap_is_refused() {
        let mut state = ProducerState::default();
        assert_eq!(state.check(&batch(7, 0, 0, 10, 0)), Ok(SequenceCheck::Next));
        state.record(&batch(7, 0, 0, 10, 100), 0);
        assert_eq!(state.check(&batch(7, 0, 0, 10, 0)), Ok(SequenceCheck::Duplicate(Offset(100), Offset(109))));
        assert_eq!(state.check(&batch(7, 0, 10, 5, 0)), Ok(SequenceCheck::Next));
        assert!(matches!(state.check(&batch(7, 0, 11, 5, 0)), Err(ProducerRefusal::OutOfOrder { expected: 10, .. })));
        // Overlapping what was appended without matching it: out of order.
        assert!(matches!(state.check(&batch(7, 0, 5, 10, 0)), Err(ProducerRefusal::OutOfOrder { .. })));
        // A new producer must start at 0.
        assert!(matches!(state.check(&batch(8, 0, 3, 1, 0)), Err(ProducerRefusal::UnknownProducer { got: 3, .. })));
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_starts_at_zero() {
        let mut state = ProducerState::default();
        state.record(&batch(7, 2, 0, 10, 0), 0);
        assert!(matches!(state.check(&batch(7, 1, 10, 1, 0)), Err(ProducerRefusal::Fenced { current: 2, .. })));
        assert!(matches!(state.check(&batch(7, 3, 10, 1, 0)), Err(ProducerRefusal::OutOfOrder { .. })));
        assert_eq!(state.check(&batch(7, 3, 0, 1, 0)), Ok(SequenceCheck::Next));
        state.record(&batch(7, 3, 0, 1, 10), 0);
        assert!(matches!(state.check(&batch(7, 2, 10, 1, 0)), Err(ProducerRefusal::Fenced { .. })));
    }

    #[test]
    fn contiguous_batches_merge_so_a_retried_request_of_many_batches_is_found_whole() {
        let mut state = ProducerState::default();
        // Eight batches of 10 in one append, then three single appends
        // elsewhere in the log (offsets not contiguous).
        for index in 0..8 {
            state.record(&batch(1, 0, index * 10, 10, 50 + index as u64 * 10), 0);
        }
        for (index, offset) in [(0, 200u64), (1, 300), (2, 400)] {
            state.record(&batch(1, 0, 80 + index, 1, offset), 0);
        }
        // The whole first request, as its retry would carry it.
        assert_eq!(state.check(&batch(1, 0, 0, 80, 0)), Ok(SequenceCheck::Duplicate(Offset(50), Offset(129))));
        assert_eq!(state.check(&batch(1, 0, 81, 1, 0)), Ok(SequenceCheck::Duplicate(Offset(300), Offset(300))));
        // After five more separate appends the first run is forgotten.
        for index in 0..5 {
            state.record(&batch(1, 0, 83 + index, 1, 1000 + 10 * index as u64), 0);
        }
        assert!(matches!(state.check(&batch(1, 0, 0, 80, 0)), Err(ProducerRefusal::OutOfOrder { .. })));
    }

    #[test]
    fn an_append_is_new_or_a_whole_retry_never_a_mix() {
        let mut state = ProducerState::default();
        let first = [Some(batch(1, 0, 0, 10, 0)), Some(batch(1, 0, 10, 10, 0)), Some(batch(2, 0, 0, 1, 0))];
        assert_eq!(state.check_append(&first), Ok(AppendCheck::New));
        for (index, stored) in first.iter().flatten().enumerate() {
            state.record(&ProducerBatch { first_offset: Offset(100 + 10 * index as u64), ..*stored }, 0);
        }
        assert_eq!(state.check_append(&first), Ok(AppendCheck::Duplicate(Offset(100), Offset(120))));
        let mixed = [Some(batch(1, 0, 10, 10, 0)), Some(batch(1, 0, 20, 1, 0))];
        assert!(matches!(state.check_append(&mixed), Err((1, ProducerRefusal::PartlyDuplicate { .. }))));
        let skipping = [Some(batch(1, 0, 20, 1, 0)), Some(batch(1, 0, 22, 1, 0))];
        assert!(matches!(state.check_append(&skipping), Err((1, ProducerRefusal::OutOfOrder { expected: 21, .. }))));
        assert_eq!(state.check_append(&[None, Some(batch(3, 0, 0, 1, 0))]), Ok(AppendCheck::New));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut state = ProducerState::default();
        state.record(&batch(1, 0, i32::MAX - 4, 5, 0), 0);
        assert_eq!(state.check(&batch(1, 0, 0, 5, 0)), Ok(SequenceCheck::Next));
        state.record(&batch(1, 0, 0, 5, 5), 0);
        assert_eq!(state.check(&batch(1, 0, i32::MAX - 4, 10, 0)), Ok(SequenceCheck::Duplicate(Offset(0), Offset(9))));
    }

    #[test]
    fn idle_producers_expire() {
        let mut state = ProducerState::default();
        state.record(&batch(1, 0, 0, 1, 0), 1_000);
        state.record(&batch(2, 0, 0, 1, 1), 9_000);
        assert_eq!(state.expire(10_000, 5_000), 1);
        assert_eq!(state.producer_count(), 1);
        assert!(matches!(state.check(&batch(1, 0, 1, 1, 0)), Err(ProducerRefusal::UnknownProducer { .. })));
    }

    #[test]
    fn expiry_follows_the_brokers_clock_not_the_batches_timestamps() {
        // A backfill: every batch stamped two days ago, appended now.
        let now_ms = 1_800_000_000_000;
        let two_days_ago = now_ms - 2 * 24 * 3_600_000;
        let header = BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 9,
            base_timestamp: two_days_ago,
            max_timestamp: two_days_ago,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            records_count: 10,
        };
        let batch = ProducerBatch::of(&header).expect("a producer batch");
        let mut state = ProducerState::default();
        state.record(&batch, now_ms);
        assert_eq!(state.expire(now_ms + 1_000, 24 * 3_600_000), 0, "appended a second ago");
        assert_eq!(state.check(&batch), Ok(SequenceCheck::Duplicate(Offset(0), Offset(9))), "a retry is still known");
        assert_eq!(state.expire(now_ms + 24 * 3_600_000 + 1, 24 * 3_600_000), 1, "idle for a day");
    }

    #[test]
    fn a_snapshot_of_the_first_format_loads_with_its_times_set_to_the_opening() {
        let mut state = ProducerState::default();
        state.record(&batch(7, 0, 0, 3, 0), 0);
        let mut bytes = state.encode();
        bytes[..4].copy_from_slice(SNAPSHOT_MAGIC_BATCH_TIMES);
        let body = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        let mut loaded = ProducerState::decode(&bytes, 5_000).expect("the first format is read");
        assert_eq!(loaded.expire(5_000 + 999, 1_000), 0, "its time is the opening's, not the stored one");
        assert_eq!(loaded.check(&batch(7, 0, 3, 1, 0)), Ok(SequenceCheck::Next));
    }

    #[test]
    fn snapshots_round_trip_skip_damage_and_keep_two() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = ProducerState::default();
        for id in 0..50 {
            state.record(&batch(id, 1, 0, 3, id as u64 * 3), 0);
        }
        state.write_snapshot(dir.path(), Offset(150)).expect("snapshot");
        state.record(&batch(99, 0, 0, 1, 150), 0);
        state.write_snapshot(dir.path(), Offset(151)).expect("snapshot");
        state.write_snapshot(dir.path(), Offset(152)).expect("snapshot");
        assert_eq!(list_snapshots(dir.path()).expect("list"), vec![Offset(151), Offset(152)]);
        let (offset, loaded) = ProducerState::load_snapshot(dir.path(), Offset(1000), 0).expect("load").expect("found");
        assert_eq!((offset, &loaded), (Offset(152), &state));
        // A torn newest snapshot: the older one serves.
        let newest = snapshot_path(dir.path(), Offset(152));
        let bytes = std::fs::read(&newest).expect("read");
        std::fs::write(&newest, &bytes[..bytes.len() / 2]).expect("tear");
        let (offset, _) = ProducerState::load_snapshot(dir.path(), Offset(1000), 0).expect("load").expect("found");
        assert_eq!(offset, Offset(151));
        // A truncated log drops the snapshots above its end.
        assert_eq!(ProducerState::load_snapshot(dir.path(), Offset(100), 0).expect("load"), None);
        assert!(list_snapshots(dir.path()).expect("list").is_empty());
    }
}
