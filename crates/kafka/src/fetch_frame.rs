//! The Fetch response frame, written around its records so they can be
//! sent from the segment files with `sendfile`: everything but the records
//! is encoded into small buffers (each partition's fields by the codec
//! crate, the frame around them here), and each partition's records
//! follow their length prefix as a piece of their own. The bytes on the
//! wire are exactly what the codec crate encodes for the same response
//! with the records in it (checked for every version in the tests below).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::core::{FileChunk, Records};
use crate::fetch::FetchAnswer;
use crate::KafkaError;

/// Part of a response frame.
#[derive(Debug, Clone)]
pub enum Piece {
    Bytes(Bytes),
    /// Sent from the file (`sendfile`).
    File(FileChunk),
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(bytes) => bytes.len(),
            Piece::File(chunk) => chunk.length as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The frame pieces of a Fetch answer at `version`: size, header, body.
pub fn encode(correlation_id: i32, version: i16, answer: FetchAnswer) -> Result<Vec<Piece>, KafkaError> {
    let encoding = |error: &dyn std::fmt::Display| KafkaError::Encode(format!("Fetch v{version}: {error}"));
    let flexible = version >= 12;
    let FetchAnswer { response, records } = answer;
    let mut records = records.into_iter();
    let mut pieces = Vec::new();
    let mut current = BytesMut::with_capacity(256);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut current, ApiKey::Fetch.response_header_version(version))
        .map_err(|error| encoding(&error))?;
    current.put_i32(response.throttle_time_ms);
    if version >= 7 {
        current.put_i16(response.error_code);
        current.put_i32(response.session_id);
    }
    put_length(&mut current, response.responses.len(), flexible);
    for topic in &response.responses {
        if version >= 13 {
            current.put_slice(topic.topic_id.as_bytes());
        } else {
            let name = topic.topic.0.as_bytes();
            if flexible {
                put_uvarint(&mut current, name.len() as u64 + 1);
            } else {
                current.put_i16(i16::try_from(name.len()).map_err(|error| encoding(&error))?);
            }
            current.put_slice(name);
        }
        put_length(&mut current, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            let mut fields = BytesMut::new();
            partition.encode(&mut fields, version).map_err(|error| encoding(&error))?;
            // Encoded with empty records (and, flexible, no tagged
            // fields): their length prefix is the tail, replaced below.
            let tail: &[u8] = if flexible { &[1, 0] } else { &[0, 0, 0, 0] };
            if !fields.ends_with(tail) {
                return Err(encoding(&"a partition's fields do not end in empty records"));
            }
            current.put_slice(&fields[..fields.len() - tail.len()]);
            let data = records.next().unwrap_or_default();
            if flexible {
                put_uvarint(&mut current, data.len() as u64 + 1);
            } else {
                current.put_i32(i32::try_from(data.len()).map_err(|error| encoding(&error))?);
            }
            match data {
                Records::Bytes(bytes) if bytes.is_empty() => {}
                Records::Bytes(bytes) => {
                    pieces.push(Piece::Bytes(current.split().freeze()));
                    pieces.push(Piece::Bytes(bytes));
                }
                Records::Files(chunks) => {
                    pieces.push(Piece::Bytes(current.split().freeze()));
                    pieces.extend(chunks.into_iter().filter(|chunk| chunk.length > 0).map(Piece::File));
                }
            }
            if flexible {
                current.put_u8(0);
            }
        }
        if flexible {
            current.put_u8(0);
        }
    }
    if flexible {
        // No tagged fields (node_endpoints is empty).
        current.put_u8(0);
    }
    pieces.push(Piece::Bytes(current.freeze()));
    let size: usize = pieces.iter().map(Piece::len).sum();
    let size = i32::try_from(size).map_err(|error| encoding(&error))?;
    pieces.insert(0, Piece::Bytes(Bytes::copy_from_slice(&size.to_be_bytes())));
    Ok(pieces)
}

/// An array's length: compact (n + 1, varint) in flexible versions.
fn put_length(buffer: &mut BytesMut, length: usize, flexible: bool) {
    if flexible {
        put_uvarint(buffer, length as u64 + 1);
    } else {
        buffer.put_i32(length as i32);
    }
}

fn put_uvarint(buffer: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{BrokerId, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn partition(index: i32, error: i16) -> PartitionData {
        PartitionData::default()
            .with_partition_index(index)
            .with_error_code(error)
            .with_high_watermark(1000 + i64::from(index))
            .with_last_stable_offset(1000 + i64::from(index))
            .with_log_start_offset(7)
            .with_aborted_transactions(Some(Vec::new()))
            .with_preferred_read_replica(BrokerId(-1))
    }

    fn records(size: usize, seed: u8) -> Bytes {
        (0..size).map(|at| (at as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
    }

    #[test]
    fn the_frame_is_byte_for_byte_the_codec_crates_at_every_version() {
        // Large enough that the flexible versions' varint takes 3 bytes.
        let data = [records(300, 1), Bytes::new(), records(70_000, 2), records(1, 3), Bytes::new()];
        for version in 4..=16 {
            let topics = [
                ("alpha", uuid::Uuid::from_u128(1), vec![(0, 0), (1, 0)]),
                ("beta", uuid::Uuid::from_u128(2), vec![(4, 0), (2, 0), (9, 6)]),
            ];
            let mut full = FetchResponse::default().with_session_id(0);
            let mut stripped = FetchResponse::default().with_session_id(0);
            let mut at = 0;
            for (name, id, partitions) in &topics {
                let mut whole = FetchableTopicResponse::default();
                let mut empty = FetchableTopicResponse::default();
                if version >= 13 {
                    whole.topic_id = *id;
                    empty.topic_id = *id;
                } else {
                    whole.topic = TopicName(StrBytes::from_static_str(name));
                    empty.topic = TopicName(StrBytes::from_static_str(name));
                }
                for (index, error) in partitions {
                    whole.partitions.push(partition(*index, *error).with_records(Some(data[at].clone())));
                    empty.partitions.push(partition(*index, *error).with_records(Some(Bytes::new())));
                    at += 1;
                }
                full.responses.push(whole);
                stripped.responses.push(empty);
            }
            let expected = crate::api::encode_frame(42, ApiKey::Fetch.response_header_version(version), &full, version)
                .expect("the codec crate encodes it");
            let answer =
                FetchAnswer { response: stripped, records: data.iter().cloned().map(Records::Bytes).collect() };
            let pieces = encode(42, version, answer).expect("encodes");
            let mut ours = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Bytes(bytes) => ours.extend_from_slice(&bytes),
                    Piece::File(_) => unreachable!("no files here"),
                }
            }
            assert_eq!(ours, expected.to_vec(), "Fetch v{version}");
        }
    }
}
