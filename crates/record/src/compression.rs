//! Reading Kafka's compressed record batches: the records area (after the
//! 61-byte header) of a batch whose attributes name a codec is that codec's
//! stream of the records. Kafka's framings: gzip; snappy in xerial's
//! framing (what the Java client writes) or raw (what some others write);
//! the LZ4 frame format; zstd. The broker stores compressed batches as
//! sent; consumers decompress. A producer compresses with [`Compression`]
//! (snappy in xerial's framing, as Kafka's Java client writes it).

use std::io::{Read, Write};

use crate::error::RecordError;

/// xerial's snappy stream: this magic, a version and a compatible version
/// (4 bytes each), then blocks of a 4-byte big-endian length and a raw
/// snappy block.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// The most bytes any batch's records area may decompress to, whatever
/// its record count: a header cannot make a reader allocate more.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 128 << 20;

/// The most bytes a compressed batch of `record_count` records may
/// decompress to when no record is larger than `max_record_bytes` (the
/// topic's `max.message.bytes` at the leader), and never more than
/// [`MAX_DECOMPRESSED_BATCH_BYTES`]. Decompression stops, and fails, past
/// it, before allocating for what a lying header claims (xerial's block
/// lengths, snappy's stated length, a bomb's output).
pub fn decompressed_limit(record_count: i32, max_record_bytes: usize) -> usize {
    usize::try_from(record_count.max(1)).unwrap_or(1).saturating_mul(max_record_bytes).min(MAX_DECOMPRESSED_BATCH_BYTES)
}

/// A producer's codec (Kafka's `compression.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec number in a batch's attributes.
    pub fn codec(self) -> u8 {
        self as u8
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(name: &str) -> Result<Compression, String> {
        match name {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression '{other}': expected none, gzip, snappy, lz4 or zstd")),
        }
    }
}

/// Xerial framing's chunk size (its default block size).
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

/// `data` (a batch's records area) compressed with `compression`.
pub(crate) fn compress(compression: Compression, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let error =
        |codec: &'static str| move |e: std::io::Error| RecordError::CompressionFailed { codec, reason: e.to_string() };
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).map_err(error("gzip"))?;
            encoder.finish().map_err(error("gzip"))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_BYTES);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK_BYTES) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| RecordError::CompressionFailed { codec: "snappy", reason: e.to_string() })?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(data).map_err(error("lz4"))?;
            encoder.finish().map_err(|e| RecordError::CompressionFailed { codec: "lz4", reason: e.to_string() })
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).map_err(error("zstd")),
    }
}

fn failed(codec: &'static str) -> impl Fn(String) -> RecordError {
    move |reason| RecordError::Decompression { codec, reason }
}

/// The records area of a batch compressed with `codec` (1-4), whole, if it
/// is at most `limit` bytes (see [`decompressed_limit`]).
pub(crate) fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    // Each stream is read through a `take` one byte past the limit: a
    // stream that reaches it is refused, whatever it would have grown to.
    let bounded = |codec: &'static str, reader: &mut dyn Read, out: &mut Vec<u8>| {
        reader.take(limit as u64 + 1).read_to_end(out).map_err(|e| failed(codec)(e.to_string()))?;
        if out.len() > limit {
            return Err(RecordError::DecompressedTooLarge { codec, limit });
        }
        Ok(())
    };
    match codec {
        1 => bounded("gzip", &mut flate2::read::GzDecoder::new(data), &mut out)?,
        2 => out = snappy(data, limit)?,
        3 => bounded("lz4", &mut lz4_flex::frame::FrameDecoder::new(data), &mut out)?,
        4 => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(|e| failed("zstd")(e.to_string()))?;
            bounded("zstd", &mut decoder, &mut out)?;
        }
        codec => return Err(RecordError::UnsupportedCompression { codec }),
    }
    Ok(out)
}

/// Snappy, raw or in xerial's blocks: each block's stated length is
/// checked against what is left of `limit` before anything is allocated
/// for it.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
    let error = failed("snappy");
    let too_large = RecordError::DecompressedTooLarge { codec: "snappy", limit };
    if !data.starts_with(XERIAL_MAGIC) {
        if snap::raw::decompress_len(data).map_err(|e| error(e.to_string()))? > limit {
            return Err(too_large);
        }
        return snap::raw::Decoder::new().decompress_vec(data).map_err(|e| error(e.to_string()));
    }
    let mut out = Vec::new();
    let mut rest = data.get(XERIAL_HEADER_BYTES..).ok_or_else(|| error("a truncated xerial header".into()))?;
    let mut decoder = snap::raw::Decoder::new();
    while !rest.is_empty() {
        let (length, after) = rest.split_at_checked(4).ok_or_else(|| error("a truncated block length".into()))?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let (block, after) = after.split_at_checked(length).ok_or_else(|| error("a truncated block".into()))?;
        let size = snap::raw::decompress_len(block).map_err(|e| error(e.to_string()))?;
        let start = out.len();
        if size > limit - start {
            return Err(too_large);
        }
        out.resize(start + size, 0);
        decoder.decompress(block, &mut out[start..]).map_err(|e| error(e.to_string()))?;
        rest = after;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_may_decompress_to_its_record_count_times_the_largest_record_and_never_more_than_the_cap() {
        assert_eq!(decompressed_limit(10, 1 << 20), 10 << 20);
        assert_eq!(decompressed_limit(0, 1 << 20), 1 << 20, "a count of 0 or less holds at most one record");
        assert_eq!(decompressed_limit(-5, 1 << 20), 1 << 20);
        assert_eq!(decompressed_limit(i32::MAX, 1 << 30), MAX_DECOMPRESSED_BATCH_BYTES);
    }

    #[test]
    fn every_codec_stops_at_the_limit_and_says_so() {
        let zeros = vec![0u8; 4 << 20];
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let compressed = compress(compression, &zeros).expect("compress");
            let whole = decompress(compression.codec(), &compressed, zeros.len()).expect("within the limit");
            assert_eq!(whole.len(), zeros.len(), "{compression:?}");
            let refused = decompress(compression.codec(), &compressed, (1 << 20) - 1);
            assert!(
                matches!(refused, Err(RecordError::DecompressedTooLarge { limit, .. }) if limit == (1 << 20) - 1),
                "{compression:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_snappy_block_claiming_4_gib_is_refused_before_anything_is_allocated() {
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        xerial.extend_from_slice(&5u32.to_be_bytes());
        xerial.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        let refused = decompress(2, &xerial, 1 << 20);
        assert!(matches!(refused, Err(RecordError::DecompressedTooLarge { codec: "snappy", .. })), "{refused:?}");
        // Raw snappy states its length first too.
        let refused = decompress(2, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F], 1 << 20);
        assert!(matches!(refused, Err(RecordError::DecompressedTooLarge { codec: "snappy", .. })), "{refused:?}");
    }
}
