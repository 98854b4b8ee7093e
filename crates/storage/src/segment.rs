//! One segment of a partition log: the `.log` file of whole batches laid
//! end to end, starting at `base_offset`, with its offset and time indexes.
//!
//! A `Segment` is shared between the log's writer and its readers (behind
//! an `Arc`). The writer appends with `pwrite` and then publishes the new
//! size and next offset with release stores; readers `pread` only below the
//! size they loaded, so they never see a half-written batch, and never
//! take a lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use brook_record::{BatchHeader, LeaderEpoch, Offset, HEADER_BYTES};

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{MmapIndex, OffsetIndex, TimeIndex};
use crate::producer_state::ProducerBatch;

/// What the log learned about one batch while validating it, enough to
/// index it without reading it back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub(crate) base_offset: Offset,
    pub(crate) last_offset: Offset,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) size_bytes: u64,
    /// `None` for an unstamped batch (epoch -1).
    pub(crate) leader_epoch: Option<LeaderEpoch>,
    /// The idempotent producer's fields, if it carries a producer id.
    pub(crate) producer: Option<ProducerBatch>,
}

impl BatchInfo {
    pub(crate) fn of(header: &BatchHeader) -> BatchInfo {
        BatchInfo {
            base_offset: Offset(header.base_offset as u64),
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp,
            size_bytes: header.total_bytes() as u64,
            leader_epoch: header.leader_epoch(),
            producer: ProducerBatch::of(header),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// No batch yet, as a timestamp.
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: Offset,
    path: PathBuf,
    file: Arc<File>,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Bytes of whole batches in the file; readers never read past it.
    size_bytes: AtomicU64,
    /// The offset after the last batch (`base_offset` when empty).
    next_offset: AtomicU64,
    max_timestamp_ms: AtomicI64,
    /// When the segment file was created (wall clock, ms): its age for
    /// `segment_ms`. Kafka takes the first batch's timestamp instead; that
    /// lets a producer with an old clock force a roll on every append, so
    /// Brook uses the broker's own clock.
    created_ms: i64,
    /// Writer-only: log bytes appended since the last offset-index entry.
    bytes_since_index_entry: AtomicU64,
}

/// The file names of the segment starting at `base_offset`.
pub(crate) fn file_path(dir: &Path, base_offset: Offset, extension: &str) -> PathBuf {
    dir.join(format!("{:020}.{extension}", base_offset.0))
}

impl Segment {
    /// Creates an empty segment, replacing any files of the same name.
    pub(crate) fn create(dir: &Path, base_offset: Offset, config: &LogConfig) -> Result<Segment, StorageError> {
        let path = file_path(dir, base_offset, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(StorageError::io("creating segment", &path))?;
        let capacity = config.max_index_entries();
        let offset_index = OffsetIndex(MmapIndex::create(&file_path(dir, base_offset, "index"), capacity)?);
        let time_index = TimeIndex(MmapIndex::create(&file_path(dir, base_offset, "timeindex"), capacity)?);
        // The new files' names are durable before anything is written in
        // them (a power loss cannot leave data in a file with no name).
        crate::recovery::sync_dir(dir)?;
        Ok(Segment::assemble(base_offset, path, file, offset_index, time_index, 0, now_ms()))
    }

    fn assemble(
        base_offset: Offset,
        path: PathBuf,
        file: File,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        size_bytes: u64,
        created_ms: i64,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            offset_index,
            time_index,
            size_bytes: AtomicU64::new(size_bytes),
            next_offset: AtomicU64::new(base_offset.0),
            max_timestamp_ms: AtomicI64::new(NO_TIMESTAMP),
            created_ms,
            bytes_since_index_entry: AtomicU64::new(0),
        }
    }

    /// Opens an existing segment's files without reading the batches yet:
    /// [`crate::recovery`] decides how much to check. `index_capacity` is
    /// how many entries the indexes must be able to take (0 for a segment
    /// that stays sealed). Returns whether both index files were there.
    pub(crate) fn open_files(
        dir: &Path,
        base_offset: Offset,
        index_capacity: usize,
    ) -> Result<(Segment, bool), StorageError> {
        let path = file_path(dir, base_offset, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(StorageError::io("opening segment", &path))?;
        let metadata = file.metadata().map_err(StorageError::io("reading segment size", &path))?;
        let size_bytes = metadata.len();
        // Birth time where the filesystem keeps it; otherwise the age
        // restarts at open, which only delays a roll.
        let created_ms = metadata
            .created()
            .ok()
            .and_then(|created| created.duration_since(UNIX_EPOCH).ok())
            .map_or_else(now_ms, |since| since.as_millis() as i64);
        let offset_path = file_path(dir, base_offset, "index");
        let time_path = file_path(dir, base_offset, "timeindex");
        let (offset_index, offset_intact) = MmapIndex::open(&offset_path, index_capacity)?;
        let (time_index, time_intact) = MmapIndex::open(&time_path, index_capacity)?;
        let (offset_index, time_index) = (OffsetIndex(offset_index), TimeIndex(time_index));
        let indexes_present = offset_intact && time_intact;
        Ok((
            Segment::assemble(base_offset, path, file, offset_index, time_index, size_bytes, created_ms),
            indexes_present,
        ))
    }

    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> Offset {
        Offset(self.next_offset.load(Ordering::Acquire))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes() == 0
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    pub(crate) fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub(crate) fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }

    pub(crate) fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }

    /// Disk blocks for `more` entries in each index (see
    /// [`crate::index`]).
    pub(crate) fn reserve_index(&self, more: usize) -> Result<(), StorageError> {
        self.offset_index.0.reserve(more)?;
        self.time_index.0.reserve(more)
    }

    pub(crate) fn index_is_full(&self) -> bool {
        self.offset_index.0.is_full() || self.time_index.0.is_full()
    }

    /// `offset` relative to the segment's base, if it fits the 32 bits the
    /// indexes keep.
    pub(crate) fn relative(&self, offset: Offset) -> Option<u32> {
        offset.0.checked_sub(self.base_offset.0).and_then(|delta| u32::try_from(delta).ok())
    }

    /// Appends the batches described by `batches`, given as `parts`
    /// (`total` bytes in all, written with `pwritev`), at the end of the
    /// file, indexes them, and publishes them to readers.
    pub(crate) fn append_vectored(
        &self,
        parts: &mut [std::io::IoSlice<'_>],
        total: u64,
        batches: &[BatchInfo],
        config: &LogConfig,
    ) -> Result<(), StorageError> {
        // Disk blocks for the index entries first: on a full disk the
        // append fails here, with nothing written.
        self.reserve_index(batches.len())?;
        let position = self.size_bytes.load(Ordering::Relaxed);
        write_all_vectored_at(&self.file, parts, position)
            .map_err(StorageError::io("appending to segment", &self.path))?;

        let mut at = position;
        for batch in batches {
            self.index_batch(batch, at, config);
            at += batch.size_bytes;
        }
        debug_assert_eq!(at, position + total, "batch infos cover the appended bytes");
        if let Some(last) = batches.last() {
            debug_assert!(last.last_offset >= self.next_offset(), "offsets only grow");
            self.size_bytes.store(at, Ordering::Release);
            self.next_offset.store(last.last_offset.0 + 1, Ordering::Release);
        }
        Ok(())
    }

    /// Records one batch that now sits at `position` in the segment's
    /// in-memory state and, every `index_interval_bytes`, in its indexes.
    /// Used by append and by the recovery scan, so both index alike.
    pub(crate) fn index_batch(&self, batch: &BatchInfo, position: u64, config: &LogConfig) {
        let since = self.bytes_since_index_entry.load(Ordering::Relaxed);
        let relative = self.relative(batch.base_offset).expect("the log rolls before relative offsets overflow");
        let max_before = self.max_timestamp_ms.load(Ordering::Relaxed);
        if since >= config.index_interval_bytes && !self.index_is_full() {
            self.offset_index.append(relative, position as u32);
            let newest_indexed = self.time_index.last().map_or(NO_TIMESTAMP, |(timestamp, _)| timestamp);
            if max_before > newest_indexed {
                self.time_index.append(max_before, relative);
            }
            self.bytes_since_index_entry.store(batch.size_bytes, Ordering::Relaxed);
        } else {
            self.bytes_since_index_entry.store(since + batch.size_bytes, Ordering::Relaxed);
        }
        self.max_timestamp_ms.store(max_before.max(batch.max_timestamp_ms), Ordering::Release);
    }

    /// Forgets every batch and index entry: the start of a recovery scan.
    pub(crate) fn reset_state(&self) {
        self.offset_index.0.clear();
        self.time_index.0.clear();
        self.size_bytes.store(0, Ordering::Release);
        self.next_offset.store(self.base_offset.0, Ordering::Release);
        self.max_timestamp_ms.store(NO_TIMESTAMP, Ordering::Release);
        self.bytes_since_index_entry.store(0, Ordering::Relaxed);
    }

    /// Marks the first `size_bytes` as whole batches ending before
    /// `next_offset` (the end of a recovery scan).
    pub(crate) fn publish_scanned(&self, size_bytes: u64, next_offset: Offset) {
        self.size_bytes.store(size_bytes, Ordering::Release);
        self.next_offset.store(next_offset.0, Ordering::Release);
    }

    /// Reads the header of the batch at `position`.
    pub(crate) fn read_header(&self, position: u64) -> Result<BatchHeader, StorageError> {
        let mut header = [0u8; HEADER_BYTES];
        self.file.read_exact_at(&mut header, position).map_err(StorageError::io("reading batch header", &self.path))?;
        BatchHeader::parse(&header).map_err(|error| self.corrupt(position, error.to_string()))
    }

    pub(crate) fn corrupt(&self, position: u64, reason: String) -> StorageError {
        StorageError::CorruptSegment { path: self.path.clone(), position, reason }
    }

    /// The position and header of the batch holding `offset`, scanning
    /// from the nearest index entry, within the first `size_bytes`.
    pub(crate) fn find_batch(
        &self,
        offset: Offset,
        size_bytes: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let Some(relative) = self.relative(offset) else {
            return Ok(None);
        };
        let mut position = self.offset_index.lookup(relative).map_or(0, |(_, position)| u64::from(position));
        while position < size_bytes {
            let header = self.read_header(position)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// The position of the batch holding `offset`. When an index entry
    /// names that batch exactly (the usual case for a reader that goes on
    /// from where its last read ended) no header is read at all.
    pub(crate) fn find_batch_position(&self, offset: Offset, size_bytes: u64) -> Result<Option<u64>, StorageError> {
        if let Some(relative) = self.relative(offset) {
            if let Some((found, position)) = self.offset_index.lookup(relative) {
                if found == relative && u64::from(position) < size_bytes {
                    return Ok(Some(u64::from(position)));
                }
            }
        }
        Ok(self.find_batch(offset, size_bytes)?.map(|(position, _)| position))
    }

    /// Drops every batch that holds `offset` or a later one; returns the new
    /// next offset (the base of the first dropped batch).
    pub(crate) fn truncate_to(&self, offset: Offset) -> Result<Offset, StorageError> {
        let size = self.size_bytes();
        let Some((position, header)) = self.find_batch(offset, size)? else {
            return Ok(self.next_offset());
        };
        let new_next = Offset(header.base_offset as u64);
        self.truncate_at(position, new_next)?;
        Ok(new_next)
    }

    /// Cuts the file at `position`, the start of the batch at `new_next`,
    /// and rebuilds the in-memory tail state from what is left.
    pub(crate) fn truncate_at(&self, position: u64, new_next: Offset) -> Result<(), StorageError> {
        let relative = self
            .relative(new_next)
            .ok_or_else(|| self.corrupt(position, format!("offset {new_next} is outside the segment")))?;
        self.file.set_len(position).map_err(StorageError::io("truncating segment", &self.path))?;
        self.time_index.truncate_to_offset(relative);
        self.offset_index.truncate_to_position(position as u32);
        self.size_bytes.store(position, Ordering::Release);
        let next = self.tail_from_indexes()?;
        debug_assert_eq!(next, new_next, "the cut is at a batch boundary");
        Ok(())
    }

    /// Restores `next_offset`, `max_timestamp_ms` and the index cadence
    /// from the indexes plus a header scan of the batches after the last
    /// offset-index entry (a few KiB). Fails if those batches do not line
    /// up, which means the indexes or the file are damaged. Returns the
    /// new next offset.
    pub(crate) fn tail_from_indexes(&self) -> Result<Offset, StorageError> {
        let size = self.size_bytes();
        let (mut position, mut next) = match self.offset_index.entries().last() {
            Some((relative, position)) => (u64::from(position), self.base_offset.plus(u64::from(relative))),
            None => (0, self.base_offset),
        };
        let mut max_timestamp = self.time_index.last().map_or(NO_TIMESTAMP, |(timestamp, _)| timestamp);
        let last_entry_position = position;
        while position < size {
            let header = self.read_header(position)?;
            if header.base_offset != next.0 as i64 {
                return Err(self.corrupt(
                    position,
                    format!("batch starts at offset {} where {next} was expected", header.base_offset),
                ));
            }
            if size - position < header.total_bytes() as u64 {
                return Err(self.corrupt(position, "last batch runs past the end of the file".to_string()));
            }
            max_timestamp = max_timestamp.max(header.max_timestamp);
            next = header.last_offset().plus(1);
            position += header.total_bytes() as u64;
        }
        self.next_offset.store(next.0, Ordering::Release);
        self.max_timestamp_ms.store(max_timestamp, Ordering::Release);
        self.bytes_since_index_entry.store(size - last_entry_position, Ordering::Relaxed);
        Ok(next)
    }

    /// Checks that the indexes agree with the file: offsets and positions
    /// strictly increasing and inside the file, timestamps not decreasing.
    pub(crate) fn indexes_look_sane(&self) -> bool {
        let size = self.size_bytes();
        let mut previous: Option<(u32, u32)> = None;
        for (relative, position) in self.offset_index.entries() {
            if u64::from(position) >= size {
                return false;
            }
            if let Some((previous_relative, previous_position)) = previous {
                if relative <= previous_relative || position <= previous_position {
                    return false;
                }
            }
            previous = Some((relative, position));
        }
        let mut previous_time: Option<(i64, u32)> = None;
        for (timestamp, relative) in self.time_index.entries() {
            if let Some((previous_timestamp, previous_relative)) = previous_time {
                if timestamp < previous_timestamp || relative <= previous_relative {
                    return false;
                }
            }
            previous_time = Some((timestamp, relative));
        }
        true
    }

    /// Seals the segment (no more appends): trims the index files to their
    /// entries.
    pub(crate) fn seal(&self) -> Result<(), StorageError> {
        self.offset_index.0.trim()?;
        self.time_index.0.trim()
    }

    /// fsyncs the file and the indexes.
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        crate::fault::slow_fsync();
        // Read before the sync: whatever it covers is on disk after it.
        let synced_bytes = self.size_bytes();
        self.file.sync_data().map_err(StorageError::io("syncing segment", &self.path))?;
        crate::fault::note_synced(&self.path, synced_bytes);
        self.offset_index.0.flush()?;
        self.time_index.0.flush()
    }

    /// Removes the segment's files. Readers that still hold the segment
    /// keep reading the unlinked file until they drop it.
    pub(crate) fn delete_files(&self) -> Result<(), StorageError> {
        for path in [&self.path, &self.offset_index.0.path().to_path_buf(), &self.time_index.0.path().to_path_buf()] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(StorageError::Io {
                        operation: "deleting segment file",
                        path: path.to_path_buf(),
                        source: error,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Writes every byte of `parts` at `offset`, however many calls it takes.
fn write_all_vectored_at(
    file: &std::fs::File,
    mut parts: &mut [std::io::IoSlice<'_>],
    mut offset: u64,
) -> std::io::Result<()> {
    // The kernel takes at most IOV_MAX (1024) pieces per call.
    const MAX_PIECES: usize = 1024;
    while !parts.is_empty() {
        let take = parts.len().min(MAX_PIECES);
        let written = rustix::io::pwritev(file, &parts[..take], offset).map_err(std::io::Error::from)?;
        if written == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the segment file took no bytes"));
        }
        offset += written as u64;
        std::io::IoSlice::advance_slices(&mut parts, written);
    }
    Ok(())
}
