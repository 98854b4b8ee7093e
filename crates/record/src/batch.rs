//! The batch header: parsing, validation and the two fields a leader stamps.

use crate::error::RecordError;
use crate::offset::{LeaderEpoch, Offset};
use crate::record::Records;
use crate::varint;

/// Bytes before the first record.
pub const HEADER_BYTES: usize = 61;
/// The only magic byte Brook accepts.
pub const MAGIC: i8 = 2;

/// `base_offset` (8) and `batch_length` (4) come before what the length counts.
const LOG_OVERHEAD: usize = 12;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end.
const CRC_FROM: usize = 21;
const COMPRESSION_MASK: i16 = 0x07;

/// The fixed-size fields of a record batch, as read from its first 61 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(word)
}

fn be_i32(bytes: &[u8], at: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(word)
}

fn be_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

impl BatchHeader {
    /// Reads the header from the front of `bytes` and checks what can be
    /// checked without the body: enough bytes for a header, magic 2, and a
    /// length that at least covers the header. Does not check the CRC.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
        if bytes.len() < HEADER_BYTES {
            return Err(RecordError::Truncated { needed: HEADER_BYTES, available: bytes.len() });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != MAGIC {
            return Err(RecordError::UnsupportedMagic { magic });
        }
        let batch_length = be_i32(bytes, LENGTH_AT);
        let minimum = (HEADER_BYTES - LOG_OVERHEAD) as i32;
        if batch_length < minimum {
            return Err(RecordError::InvalidLength { length: batch_length, minimum });
        }
        Ok(BatchHeader {
            base_offset: be_i64(bytes, 0),
            batch_length,
            partition_leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(bytes, CRC_AT) as u32,
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            records_count: be_i32(bytes, 57),
        })
    }

    /// The whole batch's size in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// The number of offsets the batch takes.
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }

    /// The batch's first offset, if the stored one is valid (not negative).
    pub fn base_offset(&self) -> Result<Offset, RecordError> {
        u64::try_from(self.base_offset)
            .map(Offset)
            .map_err(|_| RecordError::NegativeOffset { base_offset: self.base_offset })
    }

    /// The offset of the batch's last record. Only meaningful on a batch
    /// that passed validation (`last_offset_delta >= 0`).
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset as u64 + self.last_offset_delta as u64)
    }

    /// The leader epoch stamped into the batch, `None` for -1 (unstamped).
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        u32::try_from(self.partition_leader_epoch).ok().map(LeaderEpoch)
    }

    /// The compression codec from attribute bits 0-2 (0 = none).
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
}

/// Checks that `bytes` begins with a whole, intact, uncompressed batch of
/// at most `max_batch_bytes`, and returns its header. What is checked: the
/// header fields ([`BatchHeader::parse`]), the size, the CRC-32C, the codec,
/// `records_count == last_offset_delta + 1 > 0`, and that the records'
/// length prefixes tile the records area exactly. The inner fields of each
/// record are left to the consumer's decoder: walking them here would cost
/// the broker a decode per record on the hot path, and the CRC already
/// proves they are what the producer built.
pub fn validate_batch(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(bytes)?;
    let total = header.total_bytes();
    if total > max_batch_bytes {
        return Err(RecordError::TooLarge { size: total, max: max_batch_bytes });
    }
    if bytes.len() < total {
        return Err(RecordError::Truncated { needed: total, available: bytes.len() });
    }
    let actual = crc32c::crc32c(&bytes[CRC_FROM..total]);
    if actual != header.crc {
        return Err(RecordError::CrcMismatch { expected: header.crc, actual });
    }
    let compressed = match header.compression() {
        0 => false,
        1..=4 => true,
        codec => return Err(RecordError::UnsupportedCompression { codec }),
    };
    if header.records_count <= 0 {
        return Err(RecordError::Empty);
    }
    if header.last_offset_delta < 0 || header.records_count != header.last_offset_delta.wrapping_add(1) {
        return Err(RecordError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // A compressed records area is opaque until decompressed: the CRC
    // proves it is what the producer sent; the consumer decodes it.
    if !compressed {
        check_record_framing(&bytes[HEADER_BYTES..total], header.records_count as usize)?;
    }
    Ok(header)
}

/// Walks the records' length prefixes: `count` records must fill `area`
/// exactly.
fn check_record_framing(area: &[u8], count: usize) -> Result<(), RecordError> {
    let mut at = 0usize;
    for index in 0..count {
        let (length, used) = varint::get_varint(&area[at..])
            .ok_or(RecordError::MalformedRecord { index, reason: "bad length varint" })?;
        let length =
            usize::try_from(length).map_err(|_| RecordError::MalformedRecord { index, reason: "negative length" })?;
        at += used;
        if length > area.len() - at {
            return Err(RecordError::MalformedRecord { index, reason: "length runs past the batch" });
        }
        at += length;
    }
    if at != area.len() {
        return Err(RecordError::TrailingBytes { extra: area.len() - at });
    }
    Ok(())
}

/// Writes the two fields the leader owns. Both lie outside the CRC, so the
/// batch stays valid and its record bytes are untouched.
///
/// # Panics
/// If `batch` is shorter than a header: callers stamp only validated batches.
pub fn stamp_batch(batch: &mut [u8], base_offset: Offset, leader_epoch: LeaderEpoch) {
    assert!(batch.len() >= HEADER_BYTES, "stamp_batch is only called on validated batches");
    stamp_fields(batch, base_offset, leader_epoch);
}

/// The first bytes of a batch that hold both stamped fields (base offset,
/// batch length, leader epoch): a copy of them can be stamped on its own and
/// written before the untouched rest of the batch.
pub const STAMPED_HEAD_BYTES: usize = LEADER_EPOCH_AT + 4;

/// `stamp_batch` on a copy of a batch's first `STAMPED_HEAD_BYTES`.
pub fn stamp_batch_head(head: &mut [u8; STAMPED_HEAD_BYTES], base_offset: Offset, leader_epoch: LeaderEpoch) {
    stamp_fields(head, base_offset, leader_epoch);
}

/// Producer sequences wrap from `i32::MAX` to 0, as Kafka's.
const SEQUENCE_SPACE: i64 = 1 << 31;

/// The sequence `records` after `sequence`, wrapping past `i32::MAX`.
pub fn sequence_after(sequence: i32, records: i64) -> i32 {
    (i64::from(sequence) + records).rem_euclid(SEQUENCE_SPACE) as i32
}

/// How far `to` is after `from` in wrapping sequence space (0..2^31).
pub fn sequence_distance(from: i32, to: i32) -> i64 {
    (i64::from(to) - i64::from(from)).rem_euclid(SEQUENCE_SPACE)
}

/// Whether the first batch of `pieces` carries an idempotent producer's
/// id (a request's batches come from one producer): only such batches can
/// be refused as out of order.
pub fn carries_producer_id(pieces: &[bytes::Bytes]) -> bool {
    let first = pieces.iter().find(|piece| !piece.is_empty());
    first.and_then(|piece| BatchHeader::parse(piece).ok()).is_some_and(|header| header.producer_id >= 0)
}

/// Where the idempotent-producer fields start: producer id (8 bytes),
/// producer epoch (2), base sequence (4). The CRC covers them.
const PRODUCER_ID_AT: usize = 43;

/// A copy of a sealed batch with new idempotent-producer fields (producer
/// id, epoch, base sequence) and the CRC computed again: for a producer
/// that renumbers the batches it has not sent yet after taking a new
/// producer id or epoch. The records are untouched.
///
/// # Panics
/// If `batch` is shorter than a header: callers restamp only batches they built.
pub fn restamp_producer(batch: &[u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Vec<u8> {
    assert!(batch.len() >= HEADER_BYTES, "restamp_producer is only called on built batches");
    let mut copy = batch.to_vec();
    copy[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    copy[PRODUCER_ID_AT + 8..PRODUCER_ID_AT + 10].copy_from_slice(&producer_epoch.to_be_bytes());
    copy[PRODUCER_ID_AT + 10..PRODUCER_ID_AT + 14].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&copy[CRC_AT + 4..]);
    copy[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    copy
}

/// The attributes' codec bits.
const CODEC_MASK: i16 = 0x07;
const ATTRIBUTES_AT: usize = CRC_AT + 4;

/// A valid batch with its records area in `compression` instead (a topic
/// whose `compression.type` names a codec): decompressed, compressed
/// again, the codec bits, length and CRC written anew; every other field
/// as it was. `None` when the batch already uses that codec. A records
/// area that decompresses to more than its records may hold (none larger
/// than `max_record_bytes`: [`crate::decompressed_limit`]) is refused.
pub fn recompress(
    batch: &[u8],
    compression: crate::Compression,
    max_record_bytes: usize,
) -> Result<Option<Vec<u8>>, RecordError> {
    let header = validate_batch(batch, batch.len())?;
    if header.compression() == compression.codec() {
        return Ok(None);
    }
    let records_area = &batch[HEADER_BYTES..header.total_bytes()];
    let limit = crate::decompressed_limit(header.records_count, max_record_bytes);
    let plain = match header.compression() {
        0 => None,
        codec => Some(crate::compression::decompress(codec, records_area, limit)?),
    };
    let plain = plain.as_deref().unwrap_or(records_area);
    let area = match compression {
        crate::Compression::None => plain.to_vec(),
        codec => crate::compression::compress(codec, plain)?,
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + area.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.extend_from_slice(&area);
    let batch_length =
        i32::try_from(out.len() - 12).map_err(|_| RecordError::TooLarge { size: out.len(), max: i32::MAX as usize })?;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !CODEC_MASK) | i16::from(compression.codec());
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out))
}

fn stamp_fields(bytes: &mut [u8], base_offset: Offset, leader_epoch: LeaderEpoch) {
    let base = i64::try_from(base_offset.0).expect("offsets stay below i64::MAX");
    let epoch = i32::try_from(leader_epoch.0).expect("leader epochs stay below i32::MAX");
    bytes[..8].copy_from_slice(&base.to_be_bytes());
    bytes[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// One batch inside a buffer, with its header parsed. Get them from
/// [`Batches`].
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub header: BatchHeader,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The batch's records, decoded lazily, keys and values borrowed. For
    /// a compressed batch, decompress first ([`BatchView::decompressed`])
    /// and read with [`BatchView::records_in`].
    pub fn records(&self) -> Records<'a> {
        Records::new(&self.header, &self.bytes[HEADER_BYTES..])
    }

    /// The records area, decompressed; `None` if the batch is not
    /// compressed (read it in place with [`BatchView::records`]). Refused
    /// past what the batch's records may hold when none is larger than
    /// `max_record_bytes` ([`crate::decompressed_limit`]).
    pub fn decompressed(&self, max_record_bytes: usize) -> Result<Option<Vec<u8>>, RecordError> {
        let limit = crate::decompressed_limit(self.header.records_count, max_record_bytes);
        match self.header.compression() {
            0 => Ok(None),
            codec => crate::compression::decompress(codec, &self.bytes[HEADER_BYTES..], limit).map(Some),
        }
    }

    /// The batch's records read from `area` (its decompressed records).
    pub fn records_in<'b>(&self, area: &'b [u8]) -> Records<'b> {
        Records::new(&self.header, area)
    }
}

/// Iterates over the batches laid end to end in a buffer (a fetch response,
/// a produce request). Each batch is checked as by [`validate_batch`] with
/// no size limit; iteration stops at the first error, which is yielded.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(bytes: &'a [u8]) -> Batches<'a> {
        Batches { rest: bytes, failed: false }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match validate_batch(self.rest, usize::MAX) {
            Ok(header) => {
                let (bytes, rest) = self.rest.split_at(header.total_bytes());
                self.rest = rest;
                Some(Ok(BatchView { header, bytes }))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod rewrite_tests {
    use super::*;
    use crate::{BatchBuilder, NewRecord};

    #[test]
    fn a_recompressed_batch_is_valid_and_holds_the_same_records() {
        let mut builder = BatchBuilder::new(4096).with_producer(4, 1, 7);
        for index in 0..20u8 {
            builder.push(&NewRecord { timestamp_ms: 5, key: Some(&[index]), value: Some(&[b'v'; 100]), headers: &[] });
        }
        let gzip = builder.finish_compressed(crate::Compression::Gzip).expect("gzip");
        let zstd = recompress(&gzip, crate::Compression::Zstd, 1 << 20).expect("recompress").expect("changed");
        let header = validate_batch(&zstd, 1 << 20).expect("valid");
        assert_eq!(header.compression(), crate::Compression::Zstd.codec());
        assert_eq!((header.producer_id, header.base_sequence, header.records_count), (4, 7, 20));
        let plain = recompress(&zstd, crate::Compression::None, 1 << 20).expect("recompress").expect("changed");
        let view = crate::Batches::new(&plain).next().expect("one batch").expect("valid");
        let keys: Vec<u8> = view.records().map(|record| record.expect("record").key.expect("key")[0]).collect();
        assert_eq!(keys, (0..20).collect::<Vec<u8>>());
        assert!(recompress(&plain, crate::Compression::None, 1 << 20).expect("same codec").is_none());
    }

    #[test]
    fn a_restamped_batch_is_valid_and_carries_the_new_producer_fields() {
        let mut builder = BatchBuilder::new(64).with_producer(1, 0, 10);
        builder.push(&NewRecord { timestamp_ms: 5, key: None, value: Some(b"v"), headers: &[] });
        let batch = builder.finish();
        let restamped = restamp_producer(&batch, 77, 3, 0);
        let header = validate_batch(&restamped, 1 << 20).expect("still valid");
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (77, 3, 0));
        assert_eq!(&restamped[HEADER_BYTES..], &batch[HEADER_BYTES..], "records untouched");
    }
}
