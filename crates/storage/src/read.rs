//! What a read hands out: file ranges of whole batches, so a transport can
//! `sendfile` them, and a helper that copies them into one `Bytes` for a
//! transport that cannot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use brook_record::Offset;
use bytes::{Bytes, BytesMut};

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

    /// Copies the batches into one new buffer: one allocation, one `pread`
    /// per range, straight from the page cache.
    pub fn to_bytes(&self) -> Result<Bytes, StorageError> {
        let mut buffer = BytesMut::zeroed(self.byte_count());
        self.copy_into(&mut buffer)?;
        Ok(buffer.freeze())
    }

    /// Copies the batches into `buffer`, replacing its contents; a buffer
    /// reused across reads costs no allocation once it is large enough.
    pub fn read_into(&self, buffer: &mut Vec<u8>) -> Result<(), StorageError> {
        buffer.resize(self.byte_count(), 0);
        self.copy_into(buffer)
    }

    fn byte_count(&self) -> usize {
        usize::try_from(self.total_bytes()).expect("a read is bounded far below usize::MAX")
    }

    fn copy_into(&self, buffer: &mut [u8]) -> Result<(), StorageError> {
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
}
