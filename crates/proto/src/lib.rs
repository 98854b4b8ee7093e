//! # brook-proto: the wire API
//!
//! Owns the generated code for `proto/brook/v1` (package `brook.v1`): the
//! public services `Admin`, `Records`, `Groups` and `Metadata`, the
//! internal broker-to-broker services (`brook.internal.v1`), and the
//! descriptor set that gRPC reflection serves. The `.proto` files are the
//! source of truth; this crate only compiles them.
//!
//! Never: hand-edit generated code, or put logic here. Broker and client
//! both depend on this crate; it depends on neither.

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
