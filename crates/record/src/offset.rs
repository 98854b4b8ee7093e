//! Newtypes for the two numbers a broker must never mix up.

use std::fmt;

/// A position in a partition's log. Offsets are dense and start at 0; the
/// leader assigns them. Kafka carries them as `int64`; a valid one is never
/// negative, so Brook keeps them as `u64` and converts at the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    /// The offset `count` records after this one.
    pub fn plus(self, count: u64) -> Offset {
        Offset(self.0 + count)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The generation of a partition's leadership: bumped on every leader
/// change and stamped into each batch the leader appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub u32);

impl LeaderEpoch {
    /// The epoch after this one: a new leadership.
    pub fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Leader epochs travel as plain numbers (the metadata group stores them so).
impl serde::Serialize for LeaderEpoch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for LeaderEpoch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LeaderEpoch, D::Error> {
        u32::deserialize(deserializer).map(LeaderEpoch)
    }
}
