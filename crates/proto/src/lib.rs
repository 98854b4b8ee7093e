//! # brook-proto: the wire API
//!
//! Owns the generated code for `proto/brook/v1` (package `brook.v1`): the
//! public services `Admin`, `Records`, `Groups` and `Metadata`, the
//! internal broker-to-broker services (`brook.internal.v1`), and the
//! descriptor set that gRPC reflection serves. The `.proto` files are the
//! source of truth; this crate only compiles them.
//!
//! Besides: gRPC's 5-byte message prefix ([`MessagePrefix`]), for the two
//! places that write gRPC bodies themselves (the client's produce calls,
//! the broker's produce path).
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

#[cfg(test)]
mod tests {
    use super::MessagePrefix;

    #[test]
    fn a_message_prefix_is_a_flag_and_a_big_endian_length() {
        assert_eq!(MessagePrefix::uncompressed(258).encode(), [0, 0, 0, 1, 2]);
        assert_eq!(MessagePrefix::decode([1, 0, 1, 0, 0]), MessagePrefix { compressed: true, len: 65_536 });
    }
}
