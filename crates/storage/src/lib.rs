//! # brook-storage: the partition log
//!
//! Owns the bytes of every partition replica on a broker: an append-only,
//! segmented, crash-safe log, in Kafka's shape (`UnifiedLog`, `LogSegment`,
//! `OffsetIndex`, `TimeIndex`, `LeaderEpochFileCache`). Nothing else in
//! Brook writes partition data.
//!
//! On disk, one directory per partition replica:
//!
//! ```text
//! 00000000000000000000.log        whole record batches, end to end
//! 00000000000000000000.index      offset -> position, every ~4 KiB (mmap)
//! 00000000000000000000.timeindex  timestamp -> offset (mmap)
//! 00000000000000052110.log        the next segment, named by base offset
//! ...
//! 00000000000000052110.snapshot   idempotent producers' state below 52110
//! leader-epoch-checkpoint         epoch -> first offset
//! recovery-point-offset-checkpoint  offsets below it were fsynced
//! high-watermark-checkpoint       the replication HW, for restarts
//! .clean-shutdown                 present only between close and open
//! ```
//!
//! Terms: LEO (log end offset) is the next offset the log will write; the
//! log start offset is the first it still holds.
//!
//! Invariants:
//! - Offsets are dense and strictly increasing through the log; each
//!   segment starts where the previous one ends.
//! - Every stored batch passed [`brook_record::validate_batch`]; `append`
//!   writes nothing unless every batch of the call is valid.
//! - A reader sees only whole batches below the LEO it loaded: bytes are
//!   written before the LEO that covers them is published.
//! - Leader epochs never decrease along the log.
//! - The idempotent producers' state (`producer_state.rs`) matches the
//!   batches below the log end: the leader's append
//!   writes nothing unless every idempotent batch is the next of its
//!   producer (a retry of an earlier append is answered with that append's
//!   offsets instead); followers and recovery record what they append;
//!   truncation rebuilds it from the newest snapshot at or below the new
//!   end. Snapshots are written at roll and clean close without fsync: a
//!   torn one fails its CRC and an older one (or the log) serves.
//! - The leader-epoch checkpoint matches the batches: a missing or damaged
//!   one is rebuilt from the batch headers (each carries its epoch) when
//!   the log opens, since a follower's truncation depends on it.
//! - Checkpoints are replaced atomically: temporary file, fsync, rename,
//!   fsync of the directory (HW checkpoints, written often, skip the
//!   fsyncs). Creating a segment and removing the clean-shutdown marker
//!   fsync the directory too.
//! - Offsets below the recovery point are on disk. A rolled segment is
//!   fsynced off the append path ([`PartitionLog::sealed_flush`], run
//!   without the writer's lock, then [`PartitionLog::finish_flush`]), which
//!   moves the recovery point to the active segment: opening after a crash
//!   reads through only what lies above it, so restart time does not grow
//!   with the closed log.
//!
//! Never: re-encode or copy a batch (the leader stamps base offset and
//! leader epoch, outside the CRC, in place when the buffer is its own, or
//! in a 16-byte copy of each batch's head written with the untouched rest
//! in one `pwritev` when it is shared: `append_shared`); fsync on
//! the append path unless the flush policy asks; panic on any bytes found
//! on disk.
//!
//! Threads: the crate is synchronous and does blocking file I/O. The one
//! writer ([`PartitionLog`]) belongs on a blocking thread (its own, or
//! `spawn_blocking`), never on an async worker; [`LogReader`]s read with
//! `pread` from any thread and never take a lock for longer than cloning
//! an `Arc` (the leader-epoch cache included: readers see a copy the writer
//! replaces on every change, so an epoch lookup never waits on an fsync).
//!
//! Layout: `log.rs` the writer (append, roll, truncate, retention,
//! flushes, checkpoints); `load.rs` opening a log (Kafka's `LogLoader`),
//! with `recovery.rs` deciding what a crash left to check and cut;
//! `read.rs` the reader and what a read hands out; `segment.rs` and
//! `index.rs` one segment's files; `producer_state.rs` idempotent
//! producers; `leader_epoch.rs` the epoch cache; `retention.rs` which
//! segments go; `config.rs` a log's settings.

mod config;
mod error;
mod fault;
mod index;
mod leader_epoch;
mod load;
mod log;
mod producer_state;
mod read;
mod recovery;
mod retention;
mod segment;

pub use config::{ConfigField, FlushPolicy, LogConfig};
pub use error::StorageError;
pub use log::{AppendInfo, LogReader, PartitionLog, PendingFlush, RetentionOutcome};
pub use producer_state::{ProducerRefusal, RUNS_KEPT};
pub use read::{FileRange, LogRead};
pub use recovery::Truncation;
