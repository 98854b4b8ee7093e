//! # brook-replication: the rules of partition replication
//!
//! Owns the decisions a partition's replicas make, as plain functions and
//! small state types the broker drives: how far the high watermark (HW)
//! may move given what each in-sync replica (ISR member) has, when a
//! follower has caught up enough to rejoin the ISR, and where a follower
//! must cut its log after a leader change.
//!
//! Terms: LEO (log end offset) is the next offset a replica will write;
//! the HW is the offset below which every ISR member has the records;
//! consumers see only records below it, and acks=all answers once it
//! passes the batch.
//!
//! Invariants: the HW never exceeds the LEO of any ISR member (nor of a
//! member being added: the broker passes those in too), and never moves
//! backwards on a leader; a follower keeps no record of an epoch the
//! leader never saw (`truncation_step`).
//!
//! Never: do I/O or know about networks and logs; the broker feeds these
//! functions what its replicas report and applies what they decide.

mod high_watermark;
mod isr;
mod truncation;

pub use high_watermark::LeaderProgress;
pub use isr::caught_up;
pub use truncation::{truncation_point, truncation_step, LeaderEpochEnd, TruncationStep};

/// A broker's id.
pub type BrokerId = u32;
