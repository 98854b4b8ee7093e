//! Decoding the records inside a batch, without allocating: keys, values
//! and headers are slices of the batch's bytes.

use crate::batch::BatchHeader;
use crate::error::RecordError;
use crate::offset::Offset;
use crate::varint;

/// One record as a consumer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: Offset,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// A record header: a key (a string in Kafka, bytes here) and an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Reads from the front of a byte slice, failing with the record's index.
struct Cursor<'a> {
    bytes: &'a [u8],
    index: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, reason: &'static str) -> RecordError {
        RecordError::MalformedRecord { index: self.index, reason }
    }

    fn varlong(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let (value, used) = varint::get_varlong(self.bytes).ok_or_else(|| self.malformed(what))?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    fn varint(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let (value, used) = varint::get_varint(self.bytes).ok_or_else(|| self.malformed(what))?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    fn take(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if length > self.bytes.len() {
            return Err(self.malformed(what));
        }
        let (taken, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(taken)
    }

    /// A length-prefixed byte string; length -1 means null.
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        let length = self.varint(what)?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| self.malformed(what))?;
        self.take(length, what).map(Some)
    }
}

/// The records of one batch, in order.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    base_offset: i64,
    base_timestamp: i64,
    remaining: usize,
    area: &'a [u8],
    index: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(header: &BatchHeader, area: &'a [u8]) -> Records<'a> {
        Records {
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            remaining: usize::try_from(header.records_count).unwrap_or(0),
            area,
            index: 0,
            failed: false,
        }
    }

    fn decode_next(&mut self) -> Result<Record<'a>, RecordError> {
        let mut outer = Cursor { bytes: self.area, index: self.index };
        let length = outer.varint("bad length varint")?;
        let length = usize::try_from(length).map_err(|_| outer.malformed("negative length"))?;
        let body = outer.take(length, "length runs past the batch")?;
        self.area = outer.bytes;

        let mut cursor = Cursor { bytes: body, index: self.index };
        let _attributes = cursor.take(1, "missing attributes")?;
        let timestamp_delta = cursor.varlong("bad timestamp delta")?;
        let offset_delta = cursor.varint("bad offset delta")?;
        if offset_delta < 0 {
            return Err(cursor.malformed("negative offset delta"));
        }
        let key = cursor.nullable_bytes("bad key")?;
        let value = cursor.nullable_bytes("bad value")?;
        let header_count = cursor.varint("bad header count")?;
        let header_count = usize::try_from(header_count).map_err(|_| cursor.malformed("negative header count"))?;
        let headers = Headers { remaining: header_count, bytes: cursor.bytes, index: self.index };
        // Walk the headers once now so that a malformed one is reported here,
        // and the `Headers` iterator handed out cannot fail.
        for header in headers {
            header?;
        }
        Ok(Record {
            offset: Offset((self.base_offset.wrapping_add(i64::from(offset_delta))) as u64),
            timestamp_ms: self.base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        let result = self.decode_next();
        self.remaining -= 1;
        self.index += 1;
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

/// The headers of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    remaining: usize,
    bytes: &'a [u8],
    index: usize,
}

impl<'a> Headers<'a> {
    /// How many headers are left to read.
    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<Header<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let mut cursor = Cursor { bytes: self.bytes, index: self.index };
        let result = (|| {
            let key_length = cursor.varint("bad header key length")?;
            let key_length = usize::try_from(key_length).map_err(|_| cursor.malformed("null header key"))?;
            let key = cursor.take(key_length, "header key runs past the record")?;
            let value = cursor.nullable_bytes("bad header value")?;
            Ok(Header { key, value })
        })();
        match result {
            Ok(header) => {
                self.bytes = cursor.bytes;
                self.remaining -= 1;
                Some(Ok(header))
            }
            Err(error) => {
                self.remaining = 0;
                Some(Err(error))
            }
        }
    }
}
