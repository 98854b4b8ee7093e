//! Reading Kafka's compressed record batches: the records area (after the
//! 61-byte header) of a batch whose attributes name a codec is that codec's
//! stream of the records. Kafka's framings: gzip; snappy in xerial's
//! framing (what the Java client writes) or raw (what some others write);
//! the LZ4 frame format; zstd. The broker stores compressed batches as
//! sent; consumers decompress.

use std::io::Read;

use crate::error::RecordError;

/// xerial's snappy stream: this magic, a version and a compatible version
/// (4 bytes each), then blocks of a 4-byte big-endian length and a raw
/// snappy block.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

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
