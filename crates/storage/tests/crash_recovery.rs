//! Crash tests: damage the files the way a crash or a bad disk would, and
//! check that reopening keeps exactly the valid prefix, loses nothing
//! before it, and never panics. Seeds come from proptest (printed and
//! persisted on failure).

mod common;

use std::path::{Path, PathBuf};

use brook_record::{Batches, LeaderEpoch, Offset};
use brook_storage::{LogConfig, PartitionLog};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, retention_ms: None, ..LogConfig::default() }
}

/// A batch as it lies on disk.
#[derive(Debug, Clone)]
struct StoredBatch {
    segment: PathBuf,
    position: u64,
    end: u64,
    records: Vec<(u64, Vec<u8>)>,
}

/// Writes 60 batches over several segments and two leader epochs, then
/// "crashes" (drops the log without closing it). Returns what is on disk.
fn write_log(dir: &Path) -> Vec<StoredBatch> {
    let mut log = PartitionLog::open(dir, config()).expect("open");
    let start = common::now_ms();
    for index in 0..60u8 {
        let values: Vec<Vec<u8>> = (0..(1 + index % 5)).map(|r| vec![index; 10 + 7 * r as usize]).collect();
        let mut batch = common::batch(&values, start + i64::from(index) * 10);
        let epoch = LeaderEpoch(if index < 30 { 1 } else { 2 });
        log.append(&mut batch, epoch).expect("append");
    }
    assert!(log.segment_count() >= 3, "the test needs several segments");
    drop(log);
    stored_batches(dir)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

fn stored_batches(dir: &Path) -> Vec<StoredBatch> {
    let mut batches = Vec::new();
    for segment in segment_files(dir) {
        let bytes = std::fs::read(&segment).expect("read segment");
        let mut position = 0u64;
        for view in Batches::new(&bytes) {
            let view = view.expect("an undamaged log");
            let records = view
                .records()
                .map(|record| {
                    let record = record.expect("record");
                    (record.offset.0, record.value.unwrap_or_default().to_vec())
                })
                .collect();
            let end = position + view.bytes.len() as u64;
            batches.push(StoredBatch { segment: segment.clone(), position, end, records });
            position = end;
        }
    }
    batches
}

/// The records of the batches before the first damaged one.
fn records_before(batches: &[StoredBatch], damaged: Option<usize>) -> Vec<(u64, Vec<u8>)> {
    let kept = damaged.unwrap_or(batches.len());
    batches[..kept].iter().flat_map(|batch| batch.records.clone()).collect()
}

fn reopen_and_check(dir: &Path, batches: &[StoredBatch], damaged: Option<usize>) -> Result<(), TestCaseError> {
    let log = PartitionLog::open(dir, config()).expect("reopen never fails on damaged data");
    let expected = records_before(batches, damaged);
    let expected_end = expected.last().map_or(0, |(offset, _)| offset + 1);
    prop_assert_eq!(log.log_end_offset(), Offset(expected_end));
    prop_assert_eq!(common::all_records(&log), expected);
    prop_assert_eq!(log.truncations_on_open().is_empty(), damaged.is_none());
    // The log goes on: appends after recovery continue at the new end, and
    // survive another crash.
    let mut log = log;
    let mut batch = common::batch(&[b"after".to_vec()], common::now_ms());
    let info = log.append(&mut batch, LeaderEpoch(3)).expect("append after recovery");
    prop_assert_eq!(info.base_offset, Offset(expected_end));
    drop(log);
    let log = PartitionLog::open(dir, config()).expect("reopen again");
    prop_assert_eq!(log.log_end_offset(), Offset(expected_end + 1));
    Ok(())
}

/// A byte of the whole log picked by `pick`: the batch it falls in and its
/// position inside that batch.
fn locate(batches: &[StoredBatch], pick: prop::sample::Index) -> (usize, u64) {
    let total: u64 = batches.iter().map(|batch| batch.end - batch.position).sum();
    let mut at = pick.index(total as usize) as u64;
    for (index, batch) in batches.iter().enumerate() {
        let length = batch.end - batch.position;
        if at < length {
            return (index, at);
        }
        at -= length;
    }
    unreachable!("the byte lies inside the log")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn a_cut_anywhere_keeps_exactly_the_whole_batches_before_it(cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let batches = write_log(dir.path());
        let (index, at) = locate(&batches, cut);
        let batch = &batches[index];
        let file = std::fs::OpenOptions::new().write(true).open(&batch.segment).expect("open segment");
        file.set_len(batch.position + at).expect("cut");
        if at == 0 {
            // A cut at a batch boundary is not damage a scan can see: the
            // segment just ends early (and, if it is not the last, the next
            // one no longer follows it, so it goes too).
            let log = PartitionLog::open(dir.path(), config()).expect("reopen");
            prop_assert_eq!(common::all_records(&log), records_before(&batches, Some(index)));
        } else {
            reopen_and_check(dir.path(), &batches, Some(index))?;
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_found_and_cut_with_everything_after(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let dir = tempfile::tempdir().expect("temp dir");
        let batches = write_log(dir.path());
        let (index, at) = locate(&batches, at);
        let batch = &batches[index];
        let mut bytes = std::fs::read(&batch.segment).expect("read");
        bytes[(batch.position + at) as usize] ^= flip;
        std::fs::write(&batch.segment, bytes).expect("write");
        reopen_and_check(dir.path(), &batches, Some(index))?;
    }

    /// The decoder side of recovery: a segment of arbitrary bytes, after
    /// valid batches or alone, opens without panicking, keeps the valid
    /// prefix, and reads back.
    #[test]
    fn opening_never_panics_on_arbitrary_bytes(garbage in proptest::collection::vec(any::<u8>(), 0..2000), keep_valid in any::<bool>(), index_garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut valid = Vec::new();
        if keep_valid {
            let mut log = PartitionLog::open(dir.path(), config()).expect("open");
            let mut batch = common::batch(&[b"one".to_vec(), b"two".to_vec()], common::now_ms());
            log.append(&mut batch, LeaderEpoch(1)).expect("append");
            drop(log);
            valid = std::fs::read(dir.path().join("00000000000000000000.log")).expect("read");
        }
        let mut bytes = valid.clone();
        bytes.extend_from_slice(&garbage);
        std::fs::write(dir.path().join("00000000000000000000.log"), &bytes).expect("write");
        std::fs::write(dir.path().join("00000000000000000000.index"), &index_garbage).expect("write");
        let log = PartitionLog::open(dir.path(), config()).expect("open tolerates garbage");
        let records = common::all_records(&log);
        if keep_valid {
            prop_assert_eq!(&records[..2], &[(0, b"one".to_vec()), (1, b"two".to_vec())][..]);
        }
    }
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_and_lookups_still_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let batches = write_log(dir.path());
    let log = PartitionLog::open(dir.path(), config()).expect("open");
    let expected = common::all_records(&log);
    let probes: Vec<i64> = vec![0, common::now_ms() - 1_000_000, common::now_ms() + 100, common::now_ms() + 400];
    let lookups: Vec<_> = probes.iter().map(|&time| log.offset_for_timestamp(time).expect("lookup")).collect();
    log.close().expect("close");

    let first_segment = batches[0].segment.clone();
    let middle_segment = batches[batches.len() / 2].segment.clone();
    std::fs::remove_file(first_segment.with_extension("index")).expect("delete index");
    std::fs::remove_file(first_segment.with_extension("timeindex")).expect("delete time index");
    // Zeros where entries should be, as after a crash before the trim.
    let middle_index = middle_segment.with_extension("index");
    let length = std::fs::metadata(&middle_index).expect("stat").len();
    std::fs::write(&middle_index, vec![0u8; length as usize + 64]).expect("zero index");

    let log = PartitionLog::open(dir.path(), config()).expect("reopen");
    assert!(first_segment.with_extension("index").exists(), "the index is rebuilt on disk");
    assert_eq!(common::all_records(&log), expected);
    let again: Vec<_> = probes.iter().map(|&time| log.offset_for_timestamp(time).expect("lookup")).collect();
    assert_eq!(again, lookups);
    for (offset, _) in expected.iter().step_by(7) {
        let read = log.read(Offset(*offset), 1, log.log_end_offset()).expect("read");
        let bytes = read.to_bytes().expect("bytes");
        let view = Batches::new(&bytes).next().expect("a batch").expect("valid");
        assert!(view.header.base_offset as u64 <= *offset && view.header.last_offset().0 >= *offset);
    }
}

#[test]
fn a_missing_or_damaged_epoch_checkpoint_is_rebuilt_from_the_batches() {
    for damage in ["missing", "damaged"] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_log(dir.path());
        let log = PartitionLog::open(dir.path(), config()).expect("open");
        let epoch_ends: Vec<_> = [LeaderEpoch(0), LeaderEpoch(1), LeaderEpoch(2)]
            .iter()
            .map(|&epoch| log.end_offset_for_epoch(epoch))
            .collect();
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
        log.close().expect("close");

        let checkpoint = dir.path().join("leader-epoch-checkpoint");
        match damage {
            "missing" => std::fs::remove_file(&checkpoint).expect("delete"),
            _ => std::fs::write(&checkpoint, b"0\n7\n1 x\n").expect("damage"),
        }
        let log = PartitionLog::open(dir.path(), config()).expect("reopen");
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)), "{damage}: the epochs come back");
        let again: Vec<_> = [LeaderEpoch(0), LeaderEpoch(1), LeaderEpoch(2)]
            .iter()
            .map(|&epoch| log.end_offset_for_epoch(epoch))
            .collect();
        assert_eq!(again, epoch_ends, "{damage}: where each epoch ends is known again");
        drop(log);
        let text = std::fs::read_to_string(&checkpoint).expect("rewritten");
        assert!(text.starts_with("0\n2\n1 0\n"), "{damage}: {text:?}");
    }
}

#[test]
fn after_its_rolled_segments_are_flushed_a_crashed_log_reads_through_only_the_active_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path());
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    let segments = log.segment_count();
    let end = log.log_end_offset();
    // Opening after a crash flushed what it scanned; write past it again,
    // rolling, and crash once more without flushing: everything from the
    // old end is read through on the next open.
    for index in 0..60u8 {
        let mut batch = common::batch(&[vec![index; 200]], common::now_ms());
        log.append(&mut batch, LeaderEpoch(3)).expect("append");
    }
    assert!(log.segment_count() > segments + 1, "the appends rolled segments");
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).expect("reopen");
    assert!(log.segments_scanned_on_open() > 1, "unflushed rolled segments are read through");
    let rolled = log.segment_count();
    drop(log);

    // The same, with the maintenance pass's flush of every rolled segment
    // (outside the log's lock: sealed_flush, run, finish_flush).
    let mut log = PartitionLog::open(dir.path(), config()).expect("reopen");
    for index in 0..60u8 {
        let mut batch = common::batch(&[vec![index; 200]], common::now_ms());
        log.append(&mut batch, LeaderEpoch(3)).expect("append");
    }
    assert!(log.segment_count() > rolled + 1, "the appends rolled segments");
    while let Some(pending) = log.sealed_flush() {
        pending.run().expect("fsync the sealed segment");
        log.finish_flush(&pending).expect("move the recovery point");
    }
    let active_base = log.recovery_point();
    let last = log.log_end_offset();
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.segments_scanned_on_open(), 1, "only the active segment (from {active_base}) is read through");
    assert_eq!(log.log_end_offset(), last, "and nothing is lost");
    assert!(end < last);
}
