//! Opening a partition log (Kafka's `LogLoader`): listing its segments,
//! recovering what an unclean stop left (`recovery.rs` decides what is
//! checked and cut), and rebuilding the leader-epoch cache and the
//! producers' state from the batches when their files are lost or behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use brook_record::{LeaderEpoch, Offset};

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::leader_epoch::LeaderEpochCache;
use crate::log::{delete_segment_files, PartitionLog, Segments, Shared};
use crate::producer_state::{ProducerBatch, ProducerState};
use crate::recovery::{self, CLEAN_SHUTDOWN_FILE, RECOVERY_POINT_FILE};
use crate::segment::{file_path, Segment};

/// The leader epoch and base offset of every batch, in log order: one
/// header read per batch (only when the epoch checkpoint is lost).
fn batch_epochs(segments: &[Arc<Segment>]) -> Result<Vec<(LeaderEpoch, Offset)>, StorageError> {
    let mut epochs = Vec::new();
    for segment in segments {
        let (mut position, size_bytes) = (0u64, segment.size_bytes());
        while position < size_bytes {
            let header = segment.read_header(position)?;
            let base_offset = header.base_offset().map_err(|error| segment.corrupt(position, error.to_string()))?;
            if let Some(epoch) = header.leader_epoch() {
                epochs.push((epoch, base_offset));
            }
            position += header.total_bytes() as u64;
        }
    }
    Ok(epochs)
}

/// Calls `visit` with the header of every batch from the one holding
/// `from` to the end of `segments`.
fn for_each_batch_from(
    segments: &[Arc<Segment>],
    from: Offset,
    mut visit: impl FnMut(&brook_record::BatchHeader),
) -> Result<(), StorageError> {
    for segment in segments.iter().filter(|segment| segment.next_offset() > from) {
        let size_bytes = segment.size_bytes();
        let start =
            if segment.base_offset() >= from { Some(0) } else { segment.find_batch_position(from, size_bytes)? };
        let Some(mut position) = start else { continue };
        while position < size_bytes {
            let header = segment.read_header(position)?;
            visit(&header);
            position += header.total_bytes() as u64;
        }
    }
    Ok(())
}

/// The producers' state as of `log_end_offset`: the newest snapshot at or
/// below it, then the batches above it (from the log start if the
/// snapshot is older, or if there is none).
pub(crate) fn rebuild_producer_state(
    dir: &Path,
    segments: &[Arc<Segment>],
    log_end_offset: Offset,
) -> Result<ProducerState, StorageError> {
    let log_start_offset = segments.first().map_or(Offset::ZERO, |segment| segment.base_offset());
    let now_ms = crate::segment::now_ms();
    let (from, mut state) = match ProducerState::load_snapshot(dir, log_end_offset, now_ms)? {
        Some((offset, state)) => (offset.max(log_start_offset), state),
        None => (log_start_offset, ProducerState::default()),
    };
    if from < log_end_offset {
        let mut batches = 0usize;
        for_each_batch_from(segments, from, |header| {
            batches += 1;
            if let Some(batch) = ProducerBatch::of(header) {
                state.record(&batch, now_ms);
            }
        })?;
        tracing::debug!(dir = %dir.display(), from = %from, batches, "rebuilt producer state from the log");
    }
    Ok(state)
}

/// Base offsets of the segments in `dir`, sorted. Index files whose
/// segment is gone (a crash while deleting) are removed.
fn list_segments(dir: &Path) -> Result<Vec<Offset>, StorageError> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing log directory", dir))? {
        let entry = entry.map_err(StorageError::io("listing log directory", dir))?;
        let path = entry.path();
        let (Some(stem), Some(extension)) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        let Ok(base) = stem.parse::<u64>() else {
            continue;
        };
        if stem.len() != 20 {
            continue;
        }
        match extension {
            "log" => bases.push(Offset(base)),
            "index" | "timeindex" if !path.with_extension("log").exists() => orphans.push(path),
            _ => {}
        }
    }
    for orphan in orphans {
        tracing::info!(path = %orphan.display(), "removing an index whose segment is gone");
        std::fs::remove_file(&orphan).map_err(StorageError::io("removing orphan index", &orphan))?;
    }
    bases.sort();
    Ok(bases)
}

impl PartitionLog {
    /// Opens the log in `dir` (creating it if needed), recovering whatever
    /// an unclean stop left: see [`crate::recovery`].
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<PartitionLog, StorageError> {
        config.validate()?;
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(StorageError::io("creating log directory", &dir))?;
        let clean_marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = clean_marker.exists();
        if clean {
            std::fs::remove_file(&clean_marker)
                .map_err(StorageError::io("removing clean-shutdown marker", &clean_marker))?;
            // Durably gone before anything is written: a marker brought
            // back by a power loss would skip the recovery of what follows.
            recovery::sync_dir(&dir)?;
        }
        let recovery_point = if clean {
            Offset(u64::MAX)
        } else {
            recovery::read_offset_file(&dir.join(RECOVERY_POINT_FILE)).unwrap_or(Offset::ZERO)
        };

        let (mut epochs, epochs_trusted) = LeaderEpochCache::load(&dir);
        let mut bases = list_segments(&dir)?;
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
        let mut truncations = Vec::new();
        let mut index = 0;
        let mut last_opened_active = true;
        let mut scanned = 0;
        while index < bases.len() {
            let base = bases[index];
            let is_last = index + 1 == bases.len();
            let scan = !clean && (is_last || bases[index + 1] > recovery_point);
            scanned += usize::from(scan);
            if let Some(previous) = segments.last() {
                if previous.next_offset() != base {
                    tracing::warn!(
                        segment = %file_path(&dir, base, "log").display(),
                        expected = %previous.next_offset(),
                        "segment does not follow the previous one; dropping it and every later segment"
                    );
                    delete_segment_files(&dir, &bases[index..])?;
                    bases.truncate(index);
                    break;
                }
            }
            let (segment, truncation) = recovery::open_segment(&dir, base, &config, scan, is_last, &epochs)?;
            segments.push(segment);
            last_opened_active = is_last;
            if let Some(truncation) = truncation {
                truncations.push(truncation);
                if !is_last {
                    tracing::warn!(dropped = bases.len() - index - 1, "dropping the segments after a damaged one");
                    delete_segment_files(&dir, &bases[index + 1..])?;
                    bases.truncate(index + 1);
                }
            }
            index += 1;
        }
        match segments.pop() {
            None => segments.push(Arc::new(Segment::create(&dir, Offset::ZERO, &config)?)),
            // Opened as sealed, but the segments after it were dropped:
            // reopen it with room in its indexes for appends.
            Some(last) if !last_opened_active => {
                let base = last.base_offset();
                drop(last);
                segments.push(recovery::open_segment(&dir, base, &config, false, true, &epochs)?.0);
            }
            Some(last) => segments.push(last),
        }

        let log_end_offset = segments.last().map_or(Offset::ZERO, |segment| segment.next_offset());
        let log_start_offset = segments[0].base_offset();
        if !epochs_trusted && log_end_offset > log_start_offset {
            // Without its epochs a follower could not find where it
            // diverged from a new leader: the batches know them.
            epochs.rebuild(batch_epochs(&segments)?)?;
            tracing::warn!(dir = %dir.display(), epochs = ?epochs.latest(), "rebuilt the leader-epoch checkpoint from the batch headers");
        }
        epochs.truncate_from_end(log_end_offset)?;
        epochs.truncate_from_start(log_start_offset)?;
        let producers = rebuild_producer_state(&dir, &segments, log_end_offset)?;
        let shared = Arc::new(Shared {
            segments: RwLock::new(Arc::new(Segments(segments))),
            log_end_offset: AtomicU64::new(log_end_offset.0),
            epochs: epochs.published(),
        });
        let mut log = PartitionLog {
            dir,
            config,
            shared,
            epochs,
            recovery_point: if clean { log_end_offset } else { recovery_point.min(log_end_offset) },
            records_since_flush: 0,
            last_flush: Instant::now(),
            batch_infos: Vec::new(),
            truncations,
            scanned_on_open: scanned,
            producers,
        };
        if !clean {
            // What the scan checked is made durable, so the next unclean
            // stop does not scan it again.
            log.flush()?;
        }
        tracing::info!(
            dir = %log.dir.display(),
            log_start_offset = %log_start_offset,
            log_end_offset = %log_end_offset,
            clean,
            truncations = log.truncations.len(),
            scanned,
            "opened partition log"
        );
        Ok(log)
    }
}
