//! Opening a log after a crash: which segments to check, the full check of
//! one segment, and the two small files that say how much can be trusted.
//!
//! - `recovery-point-offset-checkpoint`: the log end offset at the last
//!   fsync. Everything below it reached the disk, so only segments that may
//!   hold offsets at or above it are scanned after an unclean stop.
//! - `.clean-shutdown`: written by `close` after everything is flushed; if
//!   present at open, nothing is scanned (indexes are still sanity-checked).
//!
//! A scan reads every batch, checks its framing, CRC, record count, that
//! its base offset follows the previous batch's last offset, and that its
//! leader epoch is the one the leader-epoch checkpoint gives for its offset
//! (or at least does not go back, when there is no checkpoint). The last
//! two checks matter because those fields lie outside the CRC; the
//! checkpoint is written before any batch of a new epoch, so it always
//! knows the epochs on disk.
//! At the first batch that fails, the segment is cut there and the cut is
//! logged with its reason; the log then drops every later segment, because
//! offsets after a hole cannot be trusted. Opening never panics on any
//! bytes on disk: every length is checked before it is used.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use brook_record::{validate_batch, BatchHeader, Offset, HEADER_BYTES};

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::leader_epoch::LeaderEpochCache;
use crate::segment::{BatchInfo, Segment};

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// The largest batch a scan will read. Bigger than `max_batch_bytes` so
/// that lowering that setting never makes recovery cut batches it accepted
/// before; bounded so that a damaged length field cannot ask for gigabytes.
const SCAN_MAX_BATCH_BYTES: usize = 64 << 20;

/// What a scan removed from the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment_base_offset: Offset,
    pub position: u64,
    pub bytes_removed: u64,
    pub reason: String,
}

/// Checks every batch of `segment`, rebuilding its indexes on the way, and
/// cuts the file at the first batch that fails.
pub(crate) fn scan_segment(
    segment: &Segment,
    config: &LogConfig,
    epochs: &LeaderEpochCache,
) -> Result<Option<Truncation>, StorageError> {
    let file_bytes = segment.size_bytes();
    segment.reset_state();
    let max_batch_bytes = config.max_batch_bytes.max(SCAN_MAX_BATCH_BYTES);
    let mut buffer = Vec::new();
    let mut position = 0u64;
    let mut next = segment.base_offset();
    let mut newest_epoch = -1i32;
    let failure = loop {
        if position == file_bytes {
            break None;
        }
        match check_batch(segment, position, file_bytes, max_batch_bytes, &mut buffer) {
            Err(reason) => break Some(reason),
            Ok(header) if header.base_offset != next.0 as i64 => {
                break Some(format!("batch starts at offset {} where {next} was expected", header.base_offset))
            }
            Ok(header) if !epochs.is_empty() && header.leader_epoch() != epochs.epoch_at(next) => {
                break Some(format!(
                    "batch at offset {next} has leader epoch {} but the checkpoint says {:?}",
                    header.partition_leader_epoch,
                    epochs.epoch_at(next)
                ))
            }
            Ok(header) if header.partition_leader_epoch < newest_epoch => {
                break Some(format!("leader epoch goes back from {newest_epoch} to {}", header.partition_leader_epoch))
            }
            Ok(header) if segment.relative(header.last_offset()).is_none() => {
                break Some("segment spans more than 2^32 offsets".to_string())
            }
            Ok(header) => {
                let info = BatchInfo::of(&header);
                segment.reserve_index(1)?;
                segment.index_batch(&info, position, config);
                newest_epoch = header.partition_leader_epoch;
                next = info.last_offset.plus(1);
                position += info.size_bytes;
            }
        }
    };
    segment.publish_scanned(position, next);
    let Some(reason) = failure else {
        return Ok(None);
    };
    segment.truncate_at(position, next)?;
    let truncation = Truncation {
        segment_base_offset: segment.base_offset(),
        position,
        bytes_removed: file_bytes - position,
        reason,
    };
    tracing::warn!(
        segment = %segment.path().display(),
        position,
        bytes_removed = truncation.bytes_removed,
        reason = %truncation.reason,
        "truncated a damaged segment tail during recovery"
    );
    Ok(Some(truncation))
}

/// Reads and validates the batch at `position`; the error is the reason
/// the scan stops there.
fn check_batch(
    segment: &Segment,
    position: u64,
    file_bytes: u64,
    max_batch_bytes: usize,
    buffer: &mut Vec<u8>,
) -> Result<BatchHeader, String> {
    let remaining = file_bytes - position;
    if remaining < HEADER_BYTES as u64 {
        return Err(format!("torn write: {remaining} bytes left, less than a batch header"));
    }
    let header = segment.read_header(position).map_err(|error| error.to_string())?;
    let total = header.total_bytes();
    if total as u64 > remaining {
        return Err(format!("torn write: batch of {total} bytes but only {remaining} left in the file"));
    }
    if total > max_batch_bytes {
        return Err(format!("batch length {total} is over the {max_batch_bytes}-byte limit"));
    }
    buffer.resize(total, 0);
    std::os::unix::fs::FileExt::read_exact_at(&**segment.file(), buffer, position)
        .map_err(|error| error.to_string())?;
    validate_batch(buffer, max_batch_bytes).map_err(|error| error.to_string())
}

/// Opens one segment. `scan` asks for the full check; otherwise the
/// indexes are sanity-checked and the tail state restored from them, and a
/// segment whose indexes are missing or wrong is scanned instead.
pub(crate) fn open_segment(
    dir: &Path,
    base_offset: Offset,
    config: &LogConfig,
    scan: bool,
    active: bool,
    epochs: &LeaderEpochCache,
) -> Result<(Arc<Segment>, Option<Truncation>), StorageError> {
    // A sealed segment's indexes are mapped at their size; one that is
    // scanned or appended to needs room for every entry it may get.
    let capacity = if active || scan { config.max_index_entries() } else { 0 };
    let (mut segment, indexes_present) = Segment::open_files(dir, base_offset, capacity)?;
    let needs_scan = scan || !indexes_present || !segment.indexes_look_sane() || segment.tail_from_indexes().is_err();
    if needs_scan && !scan {
        tracing::warn!(segment = %segment.path().display(), "index missing or inconsistent with the log; rebuilding it");
        drop(segment);
        segment = Segment::open_files(dir, base_offset, config.max_index_entries())?.0;
    }
    let truncation = if needs_scan { scan_segment(&segment, config, epochs)? } else { None };
    if needs_scan && !active {
        segment.seal()?;
    }
    Ok((Arc::new(segment), truncation))
}

/// Reads an offset checkpoint; a missing or unreadable one counts as none,
/// which only makes recovery check more.
pub(crate) fn read_offset_file(path: &Path) -> Option<Offset> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse::<u64>().ok().map(Offset)
}

/// Writes a small file so that it is either the old or the new one after a
/// crash: to a temporary file, fsync, rename, fsync the directory.
pub(crate) fn write_file_atomically(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    write_file_replacing(path, contents, true)
}

/// Like `write_file_atomically`; without `sync`, the new contents survive
/// a process crash (the page cache keeps them) but not a power loss, which
/// may leave the old contents: for checkpoints written often and cheap to
/// have stale.
pub(crate) fn write_file_replacing(path: &Path, contents: &[u8], sync: bool) -> Result<(), StorageError> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(StorageError::io("creating checkpoint", &temporary))?;
    file.write_all(contents).map_err(StorageError::io("writing checkpoint", &temporary))?;
    if sync {
        file.sync_all().map_err(StorageError::io("syncing checkpoint", &temporary))?;
    }
    std::fs::rename(&temporary, path).map_err(StorageError::io("renaming checkpoint", path))?;
    if sync {
        // The rename itself is a change to the directory: without this,
        // a power loss may bring back the old name's contents.
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// fsyncs a directory: makes the creation, removal or renaming of the
/// files in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = std::fs::File::open(dir).map_err(StorageError::io("opening directory", dir))?;
    handle.sync_all().map_err(StorageError::io("syncing directory", dir))
}
