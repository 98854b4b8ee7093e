//! Who a registering broker is, beyond its id (Kafka's incarnation id,
//! broker epoch and directory id, KIP-858 and KIP-903).
//!
//! A broker id names a seat in the cluster; the process sitting in it may
//! have restarted, and the disk under it may have been replaced. The
//! metadata group tells these apart:
//! - every start of a broker process draws a new [`Incarnation`]; a
//!   registration with another incarnation than the state holds is a
//!   restart, and the broker is fenced before it takes part again (see
//!   `ClusterState::register_broker`);
//! - each registration of a new incarnation gets the next [`BrokerEpoch`]
//!   from the state, and what a broker sends as a replica (heartbeats,
//!   replica fetches) carries it, so that anything from an older
//!   incarnation is recognised and refused;
//! - each data directory holds a [`DirectoryId`] (and the [`ClusterId`] it
//!   belongs to) from the moment it is first used: a broker that registers
//!   with another directory id than before lost everything it held.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One start of a broker process: random, drawn at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub Uuid);

impl Incarnation {
    pub fn random() -> Incarnation {
        Incarnation(Uuid::new_v4())
    }

    /// A given one (for seeded tests, which must replay exactly).
    pub fn from_u128(value: u128) -> Incarnation {
        Incarnation(Uuid::from_u128(value))
    }

    /// Registrations written before incarnations existed carry none.
    pub fn is_unknown(&self) -> bool {
        self.0.is_nil()
    }
}

/// The epoch of a broker's current incarnation: given by the metadata
/// group when it applies the incarnation's registration, and larger than
/// every epoch given before (to any broker). 0 is never given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerEpoch(pub u64);

impl fmt::Display for BrokerEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A data directory's identity, drawn when the directory is first used
/// and kept in its `meta.properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DirectoryId(pub Uuid);

impl DirectoryId {
    pub fn random() -> DirectoryId {
        DirectoryId(Uuid::new_v4())
    }

    /// A given one (for seeded tests, which must replay exactly).
    pub fn from_u128(value: u128) -> DirectoryId {
        DirectoryId(Uuid::from_u128(value))
    }

    /// Brokers registered before directory ids existed have none.
    pub fn is_unknown(&self) -> bool {
        self.0.is_nil()
    }
}

impl fmt::Display for DirectoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.simple().fmt(f)
    }
}

/// The cluster's id: taken by the metadata group from the first broker
/// that registers, and written into every data directory that joins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub Uuid);

impl ClusterId {
    pub fn random() -> ClusterId {
        ClusterId(Uuid::new_v4())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.simple().fmt(f)
    }
}

/// Text ids as `meta.properties` and the command line write them (32 hex
/// digits, or the hyphenated form).
impl std::str::FromStr for DirectoryId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<DirectoryId, uuid::Error> {
        Uuid::try_parse(text).map(DirectoryId)
    }
}

impl std::str::FromStr for ClusterId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<ClusterId, uuid::Error> {
        Uuid::try_parse(text).map(ClusterId)
    }
}
