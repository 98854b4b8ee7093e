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

/// The records area of a batch compressed with `codec` (1-4), whole.
pub(crate) fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(data.len() * 4);
    match codec {
        1 => {
            flate2::read::GzDecoder::new(data).read_to_end(&mut out).map_err(|e| failed("gzip")(e.to_string()))?;
        }
        2 => out = snappy(data)?,
        3 => {
            lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out).map_err(|e| failed("lz4")(e.to_string()))?;
        }
        4 => {
            zstd::stream::read::Decoder::new(data)
                .and_then(|mut decoder| decoder.read_to_end(&mut out))
                .map_err(|e| failed("zstd")(e.to_string()))?;
        }
        codec => return Err(RecordError::UnsupportedCompression { codec }),
    }
    Ok(out)
}

fn snappy(data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let error = failed("snappy");
    if !data.starts_with(XERIAL_MAGIC) {
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
        out.resize(start + size, 0);
        decoder.decompress(block, &mut out[start..]).map_err(|e| error(e.to_string()))?;
        rest = after;
    }
    Ok(out)
}
