//! The read side of a partition log: [`LogReader`]'s reads (the range of
//! whole batches for an offset, from the sparse index), and what a read
//! hands out: file ranges of whole batches, so a transport can `sendfile`
//! them, and a helper that copies them into one `Bytes` for a transport
//! that cannot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use brook_record::{BatchView, LeaderEpoch, Offset};
use bytes::Bytes;

use crate::error::StorageError;
use crate::leader_epoch::end_offset_in;
use crate::log::LogReader;
use crate::segment::Segment;

/// A run of whole, contiguous batches in one segment file.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub(crate) segment: Arc<Segment>,
    pub(crate) position: u64,
    pub(crate) length: u64,
}

impl FileRange {
    /// The segment file, open for reading (`pread`/`sendfile`).
    pub fn file(&self) -> &File {
        self.segment.file()
    }

    pub fn segment_base_offset(&self) -> Offset {
        self.segment.base_offset()
    }

    /// Byte position of the first batch in the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn length(&self) -> u64 {
        self.length
    }
}

/// The answer to a read: whole batches from the requested offset on.
#[derive(Debug, Clone)]
pub struct LogRead {
    pub ranges: Vec<FileRange>,
    /// The offset after the last batch returned (the next offset to ask
    /// for); the requested offset when nothing was returned.
    pub next_offset: Offset,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

impl LogRead {
    pub fn total_bytes(&self) -> u64 {
        self.ranges.iter().map(|range| range.length).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Copies the batches into one new buffer: one allocation (not
    /// zero-filled first), one `pread` per range, straight from the page
    /// cache.
    pub fn to_bytes(&self) -> Result<Bytes, StorageError> {
        let mut buffer = Vec::with_capacity(self.byte_count());
        self.append_to(&mut buffer)?;
        Ok(Bytes::from(buffer))
    }

    /// Copies the batches into `buffer`, replacing its contents; a buffer
    /// reused across reads costs no allocation once it is large enough.
    pub fn read_into(&self, buffer: &mut Vec<u8>) -> Result<(), StorageError> {
        // Zero-fills only what the buffer grows by. Not `append_to`: a
        // reused buffer's spare room can be far larger than the read, and
        // a `pread` into it would read (and then drop) that much more.
        buffer.resize(self.byte_count(), 0);
        let mut at = 0usize;
        for range in &self.ranges {
            let length = range.length as usize;
            range
                .file()
                .read_exact_at(&mut buffer[at..at + length], range.position)
                .map_err(StorageError::io("reading segment", range.segment.path()))?;
            at += length;
        }
        Ok(())
    }

    fn byte_count(&self) -> usize {
        usize::try_from(self.total_bytes()).expect("a read is bounded far below usize::MAX")
    }

    /// Appends the ranges' bytes to `buffer`, which has room for exactly
    /// them all: `pread` straight into its spare capacity, so the buffer is
    /// never zero-filled first (for a 4 MiB fetch that was a second pass
    /// over the memory). A `pread` may fill more than its range (the spare
    /// room runs on to the later ranges): what it read past its range is
    /// cut off.
    fn append_to(&self, buffer: &mut Vec<u8>) -> Result<(), StorageError> {
        for range in &self.ranges {
            let end = buffer.len() + range.length as usize;
            let mut position = range.position;
            while buffer.len() < end {
                let read = rustix::io::pread(range.file(), rustix::buffer::spare_capacity(buffer), position)
                    .map_err(|errno| StorageError::io("reading segment", range.segment.path())(errno.into()))?;
                if read == 0 {
                    let ended = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment ends inside the read");
                    return Err(StorageError::io("reading segment", range.segment.path())(ended));
                }
                position += read as u64;
            }
            buffer.truncate(end);
        }
        Ok(())
    }
}

impl LogReader {
    pub fn log_start_offset(&self) -> Offset {
        self.shared.segments().log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.shared.log_end_offset()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segments().0.iter().map(|segment| segment.size_bytes()).sum()
    }

    /// [`PartitionLog::latest_epoch`], without waiting on the writer (which
    /// may be in an fsync).
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.shared.epochs.get().last().map(|&(epoch, _)| epoch)
    }

    /// [`PartitionLog::end_offset_for_epoch`], without waiting on the
    /// writer.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let entries = self.shared.epochs.get();
        end_offset_in(&entries, epoch, self.shared.log_end_offset())
    }

    /// The whole batches from the one holding `from_offset` on, up to about
    /// `max_bytes`, all of whose records are below `upto` (the high
    /// watermark for a consumer; the log end for a follower). Always at
    /// least one batch when one exists at `from_offset` below `upto`, even
    /// if it is bigger than `max_bytes`, so a consumer cannot get stuck.
    ///
    /// `from_offset` may be anything from the log start to the log end;
    /// outside that the error names the valid range.
    pub fn read(&self, from_offset: Offset, max_bytes: u64, upto: Offset) -> Result<LogRead, StorageError> {
        // The end first: every byte it covers was published before it.
        let log_end_offset = self.shared.log_end_offset();
        let segments = self.shared.segments();
        let log_start_offset = segments.log_start_offset();
        if from_offset < log_start_offset || from_offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange { requested: from_offset, log_start_offset, log_end_offset });
        }
        let upto = upto.min(log_end_offset);
        let mut read = LogRead { ranges: Vec::new(), next_offset: from_offset, log_start_offset, log_end_offset };
        if from_offset >= upto {
            return Ok(read);
        }
        let mut total_bytes = 0u64;
        for segment in &segments.0[segments.holding(from_offset)..] {
            let size_bytes = segment.size_bytes();
            let Some(start) = segment.find_batch_position(read.next_offset, size_bytes)? else {
                continue;
            };
            let budget = max_bytes.saturating_sub(total_bytes);
            let (end, next_offset, stopped) = match Self::end_from_index(segment, start, budget, upto, size_bytes) {
                Some((end, next_offset)) => (end, next_offset, end < size_bytes),
                None => Self::end_from_headers(segment, start, budget, total_bytes == 0, upto, size_bytes)?,
            };
            if end > start {
                read.ranges.push(FileRange { segment: Arc::clone(segment), position: start, length: end - start });
                total_bytes += end - start;
                read.next_offset = next_offset;
            }
            if stopped || total_bytes >= max_bytes {
                break;
            }
        }
        Ok(read)
    }

    /// The fast way to find where a read ends: at the last indexed batch
    /// boundary within the byte budget and below `upto`. Costs no I/O; the
    /// batches before an index entry are whole and below its offset. `None`
    /// when no entry lies past `start` within bounds.
    fn end_from_index(
        segment: &Segment,
        start: u64,
        budget: u64,
        upto: Offset,
        size_bytes: u64,
    ) -> Option<(u64, Offset)> {
        let upto_relative = upto.0.saturating_sub(segment.base_offset().0).min(u64::from(u32::MAX)) as u32;
        let max_position = start.saturating_add(budget).min(size_bytes);
        let (relative, position) = segment.offset_index().last_within(upto_relative, max_position)?;
        (u64::from(position) > start).then(|| (u64::from(position), segment.base_offset().plus(u64::from(relative))))
    }

    /// The slow way: walk batch headers from `start` while batches fit the
    /// budget and lie below `upto`. With `at_least_one`, the first batch is
    /// taken whatever its size, so a consumer can never get stuck on a
    /// batch bigger than its `max_bytes`. Returns the end, the offset after
    /// it, and whether the read must stop here (rather than go on to the
    /// next segment).
    fn end_from_headers(
        segment: &Segment,
        start: u64,
        budget: u64,
        at_least_one: bool,
        upto: Offset,
        size_bytes: u64,
    ) -> Result<(u64, Offset, bool), StorageError> {
        let mut end = start;
        let mut next_offset = Offset::ZERO;
        while end < size_bytes {
            let header = segment.read_header(end)?;
            let length = header.total_bytes() as u64;
            let first = end == start;
            if header.last_offset() >= upto || (end - start + length > budget && !(first && at_least_one)) {
                return Ok((end, next_offset, true));
            }
            end += length;
            next_offset = header.last_offset().plus(1);
        }
        Ok((end, next_offset, false))
    }

    /// The first offset whose record timestamp is at or after
    /// `timestamp_ms`, with that timestamp (Kafka's ListOffsets by time);
    /// `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let log_end_offset = self.shared.log_end_offset();
        let segments = self.shared.segments();
        let Some(segment) = segments.0.iter().find(|segment| segment.max_timestamp_ms() >= timestamp_ms) else {
            return Ok(None);
        };
        let size_bytes = segment.size_bytes();
        let start_relative = segment.time_index().lookup(timestamp_ms).unwrap_or(0);
        let mut position = segment.offset_index().lookup(start_relative).map_or(0, |(_, position)| u64::from(position));
        let mut buffer = Vec::new();
        while position < size_bytes {
            let header = segment.read_header(position)?;
            if header.last_offset() >= log_end_offset {
                break;
            }
            if header.max_timestamp >= timestamp_ms {
                buffer.resize(header.total_bytes(), 0);
                std::os::unix::fs::FileExt::read_exact_at(&**segment.file(), &mut buffer, position)
                    .map_err(StorageError::io("reading segment", segment.path()))?;
                let view = BatchView { header, bytes: &buffer };
                for record in view.records() {
                    let record = record.map_err(|error| segment.corrupt(position, error.to_string()))?;
                    if record.timestamp_ms >= timestamp_ms {
                        return Ok(Some((record.offset, record.timestamp_ms)));
                    }
                }
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }
}
