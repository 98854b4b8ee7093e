//! # brook-proto: the wire API
//!
//! Owns the generated code for `proto/brook/v1` (package `brook.v1`): the
//! public services `Admin`, `Records`, `Groups` and `Metadata`, the
//! internal broker-to-broker services (`brook.internal.v1`), and the
//! descriptor set that gRPC reflection serves. The `.proto` files are the
//! source of truth; this crate only compiles them.
//!
//! Besides: gRPC's message framing ([`MessagePrefix`]; [`MessagePieces`]
//! to write a message whose large `bytes` fields are sent as they are;
//! [`Frames`] to decode one over the HTTP/2 frames it came in), for the
//! places that write and read gRPC bodies themselves (the client's records
//! calls, the broker's records path).
//!
//! Never: hand-edit generated code, or put other logic here. Broker and
//! client both depend on this crate; it depends on neither.

#![allow(missing_debug_implementations)]

/// Package `brook.v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("brook.v1");
}

/// Package `brook.internal.v1`: broker-to-broker RPCs (Raft transport,
/// command forwarding). Not part of the public API.
#[allow(clippy::all, clippy::pedantic)]
pub mod internal {
    tonic::include_proto!("brook.internal.v1");
}

/// The encoded `FileDescriptorSet` of every Brook proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/brook_descriptor.bin"));

/// The gRPC metadata key under which the broker names the Kafka-style
/// error of a failed call (`NOT_LEADER`, `UNKNOWN_TOPIC_OR_PARTITION`, ...).
pub const ERROR_CODE_KEY: &str = "brook-error";

/// The gRPC metadata key that carries the cluster secret on every
/// broker-to-broker call (`brook.internal.v1`); the internal listener
/// refuses a call without it.
pub const CLUSTER_SECRET_KEY: &str = "brook-cluster-secret";

/// gRPC's length prefix of a message in a request or response body: a
/// compressed flag (one byte) and the message's length (four bytes, big
/// endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePrefix {
    pub compressed: bool,
    pub len: usize,
}

impl MessagePrefix {
    /// Bytes of the prefix on the wire.
    pub const BYTES: usize = 5;

    /// The prefix of an uncompressed message of `len` bytes.
    pub fn uncompressed(len: usize) -> MessagePrefix {
        MessagePrefix { compressed: false, len }
    }

    pub fn encode(self) -> [u8; 5] {
        let len = u32::try_from(self.len).unwrap_or(u32::MAX).to_be_bytes();
        [u8::from(self.compressed), len[0], len[1], len[2], len[3]]
    }

    pub fn decode(bytes: [u8; 5]) -> MessagePrefix {
        MessagePrefix {
            compressed: bytes[0] != 0,
            len: u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize,
        }
    }
}

/// A gRPC message (prefix included) written as pieces, each sent as an
/// HTTP/2 DATA frame of its own: encoded fields go into a running buffer,
/// and `bytes` values of [`MessagePieces::COPY_BELOW`] or more are sent as
/// the `Bytes` they are, not copied. Smaller values are copied: a frame
/// costs a few microseconds at each end, more than copying 16 KiB
/// (BENCHMARKS.md). The pieces joined are byte for byte what prost
/// encodes, given the same fields in the same order.
#[derive(Debug, Default)]
pub struct MessagePieces {
    done: Vec<bytes::Bytes>,
    running: bytes::BytesMut,
    len: usize,
}

impl MessagePieces {
    pub const COPY_BELOW: usize = 64 << 10;

    /// Starts a message of `len` bytes (uncompressed), of which
    /// `referenced` are values sent as they are: the rest is copied into
    /// one buffer, allocated once at its size.
    pub fn new(len: usize, referenced: usize) -> MessagePieces {
        let mut running = bytes::BytesMut::with_capacity(MessagePrefix::BYTES + len.saturating_sub(referenced));
        running.extend_from_slice(&MessagePrefix::uncompressed(len).encode());
        MessagePieces { done: Vec::new(), running, len: MessagePrefix::BYTES }
    }

    /// Bytes of `values` that will be sent as they are.
    pub fn referenced_bytes<'a>(values: impl IntoIterator<Item = &'a bytes::Bytes>) -> usize {
        values.into_iter().map(bytes::Bytes::len).filter(|&len| len >= Self::COPY_BELOW).sum()
    }

    /// The length of a `bytes` field (or embedded message) of `len` bytes,
    /// key included.
    pub fn length_delimited_len(field: u32, len: usize) -> usize {
        prost::encoding::key_len(field) + prost::encoding::encoded_len_varint(len as u64) + len
    }

    /// Appends `message`'s fields.
    pub fn put_message(&mut self, message: &impl prost::Message) {
        self.len += message.encoded_len();
        message.encode_raw(&mut self.running);
    }

    /// Appends the key and length of a length-delimited field of `len`
    /// bytes, whose contents follow.
    pub fn put_length_delimited_key(&mut self, field: u32, len: usize) {
        let before = self.running.len();
        prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut self.running);
        prost::encoding::encode_varint(len as u64, &mut self.running);
        self.len += self.running.len() - before;
    }

    /// Appends a `bytes` field holding `value`.
    pub fn put_bytes_field(&mut self, field: u32, value: &bytes::Bytes) {
        self.put_length_delimited_key(field, value.len());
        self.len += value.len();
        if value.len() < Self::COPY_BELOW {
            self.running.extend_from_slice(value);
        } else {
            if !self.running.is_empty() {
                self.done.push(self.running.split().freeze());
            }
            self.done.push(value.clone());
        }
    }

    /// The pieces, and how many bytes they hold (the prefix included).
    pub fn finish(mut self) -> (Vec<bytes::Bytes>, usize) {
        if !self.running.is_empty() {
            self.done.push(self.running.split().freeze());
        }
        (self.done, self.len)
    }
}

/// A message's bytes as the frames that carried them. `copy_to_bytes`
/// (what prost calls for a `bytes` field) slices a frame when the field
/// lies within it and copies only when it straddles two.
#[derive(Debug, Default)]
pub struct Frames {
    frames: std::collections::VecDeque<bytes::Bytes>,
    remaining: usize,
}

impl Frames {
    /// Adds the next frame's data.
    pub fn push(&mut self, frame: bytes::Bytes) {
        if !frame.is_empty() {
            self.remaining += frame.len();
            self.frames.push_back(frame);
        }
    }

    /// Takes the message prefix off the front, once all five of its bytes
    /// are here (`None` before).
    pub fn take_prefix(&mut self) -> Option<MessagePrefix> {
        use bytes::Buf;
        if self.remaining < MessagePrefix::BYTES {
            return None;
        }
        let mut prefix = [0u8; MessagePrefix::BYTES];
        self.copy_to_slice(&mut prefix);
        Some(MessagePrefix::decode(prefix))
    }
}

impl bytes::Buf for Frames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.frames.front().map_or(&[], |frame| &frame[..])
    }

    fn advance(&mut self, mut count: usize) {
        assert!(count <= self.remaining, "advanced past the end of the frames");
        self.remaining -= count;
        while count > 0 {
            let Some(front) = self.frames.front_mut() else { return };
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.frames.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> bytes::Bytes {
        assert!(len <= self.remaining, "took more bytes than the frames hold");
        if let Some(front) = self.frames.front_mut() {
            if len <= front.len() {
                let taken = front.split_to(len);
                if front.is_empty() {
                    self.frames.pop_front();
                }
                self.remaining -= len;
                return taken;
            }
        }
        use bytes::BufMut;
        let mut joined = bytes::BytesMut::with_capacity(len);
        joined.put(self.take(len));
        joined.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::{Frames, MessagePrefix};
    use bytes::Buf;

    #[test]
    fn a_message_prefix_is_a_flag_and_a_big_endian_length() {
        assert_eq!(MessagePrefix::uncompressed(258).encode(), [0, 0, 0, 1, 2]);
        assert_eq!(MessagePrefix::decode([1, 0, 1, 0, 0]), MessagePrefix { compressed: true, len: 65_536 });
    }
    #[test]
    fn a_field_within_one_frame_is_a_slice_of_it_and_one_across_two_is_joined() {
        let mut frames = Frames::default();
        let first = bytes::Bytes::from_static(b"abcdef");
        frames.push(first.clone());
        frames.push(bytes::Bytes::from_static(b"ghij"));
        let within = frames.copy_to_bytes(4);
        assert_eq!(&within[..], b"abcd");
        assert_eq!(within.as_ptr(), first.as_ptr(), "no copy within a frame");
        let across = frames.copy_to_bytes(4);
        assert_eq!(&across[..], b"efgh");
        assert_eq!(frames.remaining(), 2);
        assert_eq!(frames.chunk(), b"ij");
        frames.advance(2);
        assert_eq!(frames.remaining(), 0);
        assert_eq!(frames.chunk(), b"");
    }
}
