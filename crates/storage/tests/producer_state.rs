//! Idempotent producers in the partition log: the leader's sequence check
//! (a retry is answered with its first offsets and written once), and the
//! state surviving a clean close, a crash, a truncation and many rolls.

mod common;

use brook_record::{LeaderEpoch, Offset};
use brook_storage::{LogConfig, PartitionLog, ProducerRefusal, StorageError};
use common::producer_batch;

fn config() -> LogConfig {
    LogConfig { segment_bytes: 4 * 1024, index_interval_bytes: 512, retention_ms: None, ..LogConfig::default() }
}

fn values(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|index| vec![index as u8; 100]).collect()
}

/// Appends producer 9's batch of `count` records at `sequence` as the leader.
fn append(log: &mut PartitionLog, sequence: i32, count: usize) -> Result<brook_storage::AppendInfo, StorageError> {
    log.append(&mut producer_batch(&values(count), 9, 0, sequence), LeaderEpoch(1))
}

fn refusal(result: Result<brook_storage::AppendInfo, StorageError>) -> ProducerRefusal {
    match result {
        Err(StorageError::Producer { source, .. }) => source,
        other => panic!("expected a producer refusal, got {other:?}"),
    }
}

#[test]
fn a_retried_batch_is_answered_with_its_offsets_and_not_written_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    let first = append(&mut log, 0, 3).expect("append");
    append(&mut log, 3, 2).expect("append");
    let size = log.size_bytes();
    let retry = append(&mut log, 0, 3).expect("a retry is answered");
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (Offset(5), size), "nothing written");
    assert!(matches!(refusal(append(&mut log, 7, 1)), ProducerRefusal::OutOfOrder { expected: 5, got: 7, .. }));
    let fenced = log.append(&mut producer_batch(&values(1), 9, 1, 0), LeaderEpoch(1)).expect("epoch 1 starts at 0");
    assert_eq!(fenced.base_offset, Offset(5));
    assert!(matches!(refusal(append(&mut log, 5, 1)), ProducerRefusal::Fenced { current: 1, .. }));
}

#[test]
fn the_state_survives_a_clean_close_and_a_crash_and_reads_only_past_the_newest_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    // ~100 records of 100 bytes per 4 KiB segment: many rolls, each a snapshot.
    let mut sequence = 0;
    for _ in 0..60 {
        append(&mut log, sequence, 5).expect("append");
        sequence += 5;
    }
    assert!(log.segment_count() > 5);
    log.close().expect("close");
    let snapshots = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|entry| entry.as_ref().is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "snapshot")))
        .count();
    assert_eq!(snapshots, 2, "the newest two snapshots are kept");

    let mut log = PartitionLog::open(dir.path(), config()).expect("reopen after a clean close");
    assert!(append(&mut log, sequence - 5, 5).expect("retry").duplicate);
    append(&mut log, sequence, 5).expect("append");
    sequence += 5;
    // A crash: no close; the state comes from the roll's snapshot plus the
    // active segment's batches.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), config()).expect("reopen after a crash");
    let retry = append(&mut log, sequence - 5, 5).expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, Offset(sequence as u64 - 5));
    assert_eq!(log.producer_count(), 1);
}

#[test]
fn a_truncation_rebuilds_the_state_of_what_is_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    let mut sequence = 0;
    for _ in 0..40 {
        append(&mut log, sequence, 5).expect("append");
        sequence += 5;
    }
    // A follower cutting its tail: offsets (= sequences here) from 103 on
    // go, to the start of the batch holding 103.
    let end = log.truncate_to(Offset(103)).expect("truncate");
    assert_eq!(end, Offset(100));
    // The cut batches are new again; what was kept is a duplicate.
    assert!(append(&mut log, 95, 5).expect("retry of a kept batch").duplicate);
    let info = append(&mut log, 100, 5).expect("the cut batch again");
    assert!(!info.duplicate);
    assert_eq!(info.base_offset, Offset(100));
    // Emptied: nothing is known.
    log.truncate_fully_and_start_at(Offset(500)).expect("empty");
    assert_eq!(log.producer_count(), 0);
    assert!(matches!(refusal(append(&mut log, 105, 1)), ProducerRefusal::UnknownProducer { .. }));
}

#[test]
fn followers_build_the_same_state_from_the_batches_they_replicate() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let mut leader = PartitionLog::open(leader_dir.path(), config()).expect("open");
    let mut follower = PartitionLog::open(follower_dir.path(), config()).expect("open");
    for sequence in (0..50).step_by(5) {
        append(&mut leader, sequence, 5).expect("append");
    }
    while follower.log_end_offset() < leader.log_end_offset() {
        let read = leader.read(follower.log_end_offset(), 1 << 20, leader.log_end_offset()).expect("read");
        follower.append_replicated(&read.to_bytes().expect("bytes")).expect("replicate");
    }
    // The follower, now leading, answers the last batch's retry as a
    // duplicate and takes the next one.
    assert!(append(&mut follower, 45, 5).expect("retry").duplicate);
    assert_eq!(append(&mut follower, 50, 5).expect("next").base_offset, Offset(50));
}
