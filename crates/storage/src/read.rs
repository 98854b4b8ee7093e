//! What a read hands out: file ranges of whole batches, so a transport can
//! `sendfile` them, and a helper that copies them into one `Bytes` for a
//! transport that cannot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use brook_record::Offset;
use bytes::Bytes;

use crate::error::StorageError;
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
