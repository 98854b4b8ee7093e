//! Building a batch record by record into one buffer, then sealing it with
//! its header and CRC. One allocation per batch, none per record.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{HEADER_BYTES, MAGIC};
use crate::record::Header;
use crate::varint;

/// A record to append: what a producer's `send` carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    /// Milliseconds since the Unix epoch (CreateTime).
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
}

impl NewRecord<'_> {
    /// The bytes of the record after its length prefix.
    fn body_len(&self, timestamp_delta: i64, offset_delta: i32) -> usize {
        fn nullable_len(bytes: Option<&[u8]>) -> usize {
            match bytes {
                None => 1,
                Some(bytes) => varint::varlong_len(bytes.len() as i64) + bytes.len(),
            }
        }
        let headers: usize = self
            .headers
            .iter()
            .map(|header| varint::varlong_len(header.key.len() as i64) + header.key.len() + nullable_len(header.value))
            .sum();
        1 + varint::varlong_len(timestamp_delta)
            + varint::varlong_len(i64::from(offset_delta))
            + nullable_len(self.key)
            + nullable_len(self.value)
            + varint::varlong_len(self.headers.len() as i64)
            + headers
    }
}

/// Accumulates records into a RecordBatch v2. The header is written by
/// [`BatchBuilder::finish`]; until then its 61 bytes are reserved.
#[derive(Debug)]
pub struct BatchBuilder {
    buffer: BytesMut,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    count: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl BatchBuilder {
    /// A builder whose buffer starts with room for `capacity_bytes`.
    pub fn new(capacity_bytes: usize) -> BatchBuilder {
        let mut buffer = BytesMut::with_capacity(capacity_bytes.max(HEADER_BYTES));
        buffer.put_bytes(0, HEADER_BYTES);
        BatchBuilder {
            buffer,
            base_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            count: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Sets the idempotent-producer fields (left at -1 otherwise).
    pub fn with_producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size if it were sealed now.
    pub fn size_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes `record` would add to this batch.
    pub fn size_of(&self, record: &NewRecord<'_>) -> usize {
        let (timestamp_delta, offset_delta) = self.deltas(record);
        let body = record.body_len(timestamp_delta, offset_delta);
        varint::varlong_len(body as i64) + body
    }

    fn deltas(&self, record: &NewRecord<'_>) -> (i64, i32) {
        if self.count == 0 {
            (0, 0)
        } else {
            (record.timestamp_ms.wrapping_sub(self.base_timestamp_ms), self.count)
        }
    }

    /// Appends a record. The caller decides when the batch is full
    /// (compare [`BatchBuilder::size_bytes`] + [`BatchBuilder::size_of`]
    /// with its limit).
    pub fn push(&mut self, record: &NewRecord<'_>) {
        if self.count == 0 {
            self.base_timestamp_ms = record.timestamp_ms;
        }
        let (timestamp_delta, offset_delta) = self.deltas(record);
        let body = record.body_len(timestamp_delta, offset_delta);
        let out = &mut self.buffer;
        out.reserve(body + varint::MAX_VARLONG_BYTES);
        varint::put_varlong(out, body as i64);
        out.put_u8(0); // record attributes: unused in v2
        varint::put_varlong(out, timestamp_delta);
        varint::put_varint(out, offset_delta);
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        varint::put_varlong(out, record.headers.len() as i64);
        for header in record.headers {
            varint::put_varlong(out, header.key.len() as i64);
            out.put_slice(header.key);
            put_nullable(out, header.value);
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        self.count += 1;
    }

    /// Writes the header (base offset 0, leader epoch -1: the broker stamps
    /// both) and the CRC, and hands the batch out.
    ///
    /// # Panics
    /// On an empty builder: a batch holds at least one record.
    pub fn finish(mut self) -> Bytes {
        assert!(self.count > 0, "a record batch holds at least one record");
        self.write_header(0);
        self.buffer.freeze()
    }

    /// `finish`, with the records area compressed with `compression` (its
    /// codec in the attributes). A compressed batch is a new buffer: the
    /// header, then the codec's stream of the records.
    ///
    /// # Panics
    /// On an empty builder, as `finish`.
    pub fn finish_compressed(mut self, compression: crate::Compression) -> Result<Bytes, crate::RecordError> {
        if compression == crate::Compression::None {
            return Ok(self.finish());
        }
        assert!(self.count > 0, "a record batch holds at least one record");
        let compressed = crate::compression::compress(compression, &self.buffer[HEADER_BYTES..])?;
        self.buffer.truncate(HEADER_BYTES);
        self.buffer.extend_from_slice(&compressed);
        self.write_header(i16::from(compression.codec()));
        Ok(self.buffer.freeze())
    }

    /// Fills the reserved header (length, attributes, counts, CRC) over
    /// what the buffer holds after it.
    fn write_header(&mut self, attributes: i16) {
        let batch_length = i32::try_from(self.buffer.len() - 12).expect("a batch is under 2 GiB");
        let mut header = &mut self.buffer[..HEADER_BYTES];
        header.put_i64(0);
        header.put_i32(batch_length);
        header.put_i32(-1);
        header.put_i8(MAGIC);
        header.put_u32(0); // CRC, filled below
        header.put_i16(attributes); // codec; CreateTime
        header.put_i32(self.count - 1);
        header.put_i64(self.base_timestamp_ms);
        header.put_i64(self.max_timestamp_ms);
        header.put_i64(self.producer_id);
        header.put_i16(self.producer_epoch);
        header.put_i32(self.base_sequence);
        header.put_i32(self.count);
        let crc = crc32c::crc32c(&self.buffer[21..]);
        self.buffer[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::put_varint(out, -1),
        Some(bytes) => {
            varint::put_varlong(out, bytes.len() as i64);
            out.put_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{stamp_batch, validate_batch, Batches, LeaderEpoch, Offset, RecordError};
    use proptest::prelude::*;

    type OwnedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

    fn build(records: &[OwnedRecord]) -> Bytes {
        let mut builder = BatchBuilder::new(1024);
        for (timestamp_ms, key, value, headers) in records {
            let headers: Vec<Header<'_>> =
                headers.iter().map(|(key, value)| Header { key, value: value.as_deref() }).collect();
            let record = NewRecord {
                timestamp_ms: *timestamp_ms,
                key: key.as_deref(),
                value: value.as_deref(),
                headers: &headers,
            };
            let before = builder.size_bytes();
            let expected = builder.size_of(&record);
            builder.push(&record);
            assert_eq!(builder.size_bytes() - before, expected, "size_of predicts push");
        }
        builder.finish()
    }

    fn arb_record() -> impl Strategy<Value = OwnedRecord> {
        let bytes = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        let header = (
            proptest::collection::vec(any::<u8>(), 0..10),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
        );
        (0i64..4_000_000_000_000, bytes.clone(), bytes, proptest::collection::vec(header, 0..3))
    }

    proptest! {
        #[test]
        fn built_batches_decode_to_what_went_in(records in proptest::collection::vec(arb_record(), 1..20), base in 0u64..1 << 40, epoch in 0u32..1000) {
            let mut batch = build(&records).to_vec();
            prop_assert!(validate_batch(&batch, usize::MAX).is_ok());
            stamp_batch(&mut batch, Offset(base), LeaderEpoch(epoch));
            let header = validate_batch(&batch, usize::MAX).expect("stamping keeps the batch valid");
            prop_assert_eq!(header.base_offset, base as i64);
            prop_assert_eq!(header.leader_epoch(), Some(LeaderEpoch(epoch)));
            prop_assert_eq!(header.last_offset(), Offset(base + records.len() as u64 - 1));
            prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.0).max().unwrap_or(0));
            let views: Vec<_> = Batches::new(&batch).collect::<Result<_, _>>().expect("one valid batch");
            prop_assert_eq!(views.len(), 1);
            let decoded: Vec<_> = views[0].records().collect::<Result<_, _>>().expect("records decode");
            prop_assert_eq!(decoded.len(), records.len());
            for (index, (record, (timestamp_ms, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, Offset(base + index as u64));
                prop_assert_eq!(record.timestamp_ms, *timestamp_ms);
                prop_assert_eq!(record.key, key.as_deref());
                prop_assert_eq!(record.value, value.as_deref());
                let got: Vec<_> = record.headers.map(|h| h.map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))).collect::<Result<_, _>>().expect("headers decode");
                prop_assert_eq!(&got, headers);
            }
        }

        /// The decoder fuzz harness: any bytes at all give batches or an
        /// error, never a panic, and every record either decodes or errors.
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for view in Batches::new(&bytes).flatten() {
                for record in view.records() {
                    let _ = record;
                }
            }
        }

        /// Garbage inside a batch whose framing and CRC are right (a buggy
        /// producer): validation or decoding reports it, nothing panics.
        #[test]
        fn decoder_never_panics_on_garbage_records(area in proptest::collection::vec(any::<u8>(), 0..300), count in 1i32..6) {
            let mut batch = vec![0u8; HEADER_BYTES];
            batch.extend_from_slice(&area);
            let length = (batch.len() - 12) as i32;
            batch[8..12].copy_from_slice(&length.to_be_bytes());
            batch[12..16].copy_from_slice(&(-1i32).to_be_bytes());
            batch[16] = 2;
            batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            batch[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            for view in Batches::new(&batch).flatten() {
                for record in view.records().flatten() {
                    for header in record.headers {
                        let _ = header;
                    }
                }
            }
        }

        /// The same, on damaged copies of real batches: a flipped byte
        /// inside the CRC'd area is always caught by validation.
        #[test]
        fn any_flipped_byte_in_a_batch_is_detected(records in proptest::collection::vec(arb_record(), 1..8), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut batch = build(&records).to_vec();
            let at = 21 + at.index(batch.len() - 21);
            batch[at] ^= flip;
            let result = validate_batch(&batch, usize::MAX);
            prop_assert!(matches!(result, Err(RecordError::CrcMismatch { .. })), "got {:?}", result);
        }

        #[test]
        fn every_cut_of_a_batch_is_reported_as_truncated(records in proptest::collection::vec(arb_record(), 1..8), cut in any::<prop::sample::Index>()) {
            let batch = build(&records);
            let cut = cut.index(batch.len());
            let result = validate_batch(&batch[..cut], usize::MAX);
            prop_assert!(matches!(result, Err(RecordError::Truncated { .. })), "got {:?}", result);
        }
    }

    #[test]
    fn oversized_batches_are_refused_with_their_size() {
        let value = vec![7u8; 1000];
        let batch = build(&[(1, None, Some(value), vec![])]);
        let error = validate_batch(&batch, 500).expect_err("over the limit");
        assert_eq!(error, RecordError::TooLarge { size: batch.len(), max: 500 });
        assert!(error.to_string().contains("over the limit of 500 bytes"));
    }

    #[test]
    fn other_magics_and_codecs_kafka_lacks_are_refused() {
        let mut batch = build(&[(1, None, Some(b"v".to_vec()), vec![])]).to_vec();
        batch[16] = 1;
        assert_eq!(validate_batch(&batch, usize::MAX), Err(RecordError::UnsupportedMagic { magic: 1 }));
        batch[16] = 2;
        let with_codec = |codec: u8| {
            let mut batch = batch.clone();
            batch[22] |= codec;
            let crc = crc32c::crc32c(&batch[21..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            batch
        };
        for codec in 5..=7 {
            assert_eq!(
                validate_batch(&with_codec(codec), usize::MAX),
                Err(RecordError::UnsupportedCompression { codec })
            );
        }
        // Kafka's codecs are accepted as sent (the CRC covers them); records
        // that are not in the codec's format fail when a consumer
        // decompresses them, with the codec named.
        let zstd = with_codec(4);
        assert!(validate_batch(&zstd, usize::MAX).is_ok());
        let view = crate::Batches::new(&zstd).next().expect("a batch").expect("valid");
        assert!(matches!(view.decompressed(1 << 20), Err(RecordError::Decompression { codec: "zstd", .. })));
    }

    #[test]
    fn a_record_count_that_disagrees_with_the_records_is_refused() {
        let mut batch =
            build(&[(1, None, Some(b"a".to_vec()), vec![]), (2, None, Some(b"b".to_vec()), vec![])]).to_vec();
        // Claim three records, keep two, and fix the CRC as a careless producer would.
        batch[23..27].copy_from_slice(&2i32.to_be_bytes());
        batch[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate_batch(&batch, usize::MAX), Err(RecordError::MalformedRecord { index: 2, .. })));
    }
}
