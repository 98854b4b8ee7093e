//! The partition log's API, one behaviour per test: what append refuses,
//! what read returns, time lookups, rolling, flushing, leader epochs.

mod common;

use brook_record::{LeaderEpoch, Offset, RecordError};
use brook_storage::{FlushPolicy, LogConfig, PartitionLog, StorageError};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, index_interval_bytes: 512, retention_ms: None, ..LogConfig::default() }
}

fn values(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count).map(|index| vec![index as u8; size]).collect()
}

fn open(dir: &tempfile::TempDir) -> PartitionLog {
    PartitionLog::open(dir.path(), config()).expect("open")
}

#[test]
fn append_stamps_offsets_and_epoch_without_touching_the_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    let mut first = common::batch(&values(3, 10), common::now_ms());
    let mut second = common::batch(&values(2, 10), common::now_ms());
    let original = second.clone();
    assert_eq!(log.append(&mut first, LeaderEpoch(4)).expect("append").base_offset, Offset(0));
    let info = log.append(&mut second, LeaderEpoch(4)).expect("append");
    assert_eq!((info.base_offset, info.last_offset, info.record_count), (Offset(3), Offset(4), 2));
    assert_eq!(&second[..8], &3i64.to_be_bytes(), "base offset stamped in place");
    assert_eq!(&second[12..16], &4i32.to_be_bytes(), "leader epoch stamped in place");
    assert_eq!(&second[16..], &original[16..], "everything else is as it came");
    let stored = log.read(Offset(3), 1 << 20, log.log_end_offset()).expect("read").to_bytes().expect("bytes");
    assert_eq!(&stored[..], &second[..], "the log holds the bytes as appended");
}

#[test]
fn append_shared_stores_the_same_bytes_as_append_from_one_buffer_or_several() {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let (mut in_place, mut shared) = (open(&dir_a), open(&dir_b));
    for round in 0..40u8 {
        // Several batches per append, enough rounds to roll segments.
        let first = common::batch(&values(3, 1000 + usize::from(round)), common::now_ms());
        let second = common::batch(&values(1, 7), common::now_ms());
        let third = common::batch(&values(5, 90), common::now_ms());
        let mut records = [first.clone(), second.clone(), third.clone()].concat();
        let untouched = records.clone();
        let epoch = LeaderEpoch(u32::from(round / 10));
        let expected = in_place.append(&mut records, epoch).expect("append");
        // Half the rounds as one buffer, half as separate pieces.
        let got = if round % 2 == 0 {
            shared.append_shared(&untouched, epoch).expect("append_shared")
        } else {
            let pieces = [&first[..], &second[..], &third[..]];
            shared.append_shared_parts(&pieces, epoch).expect("append_shared_parts")
        };
        assert_eq!(
            (got.base_offset, got.last_offset, got.batch_count, got.record_count),
            (expected.base_offset, expected.last_offset, expected.batch_count, expected.record_count)
        );
    }
    assert!(shared.segment_count() > 1, "the appends rolled segments");
    let end = in_place.log_end_offset();
    assert_eq!(shared.log_end_offset(), end);
    let mut offset = Offset(0);
    while offset < end {
        let a = in_place.read(offset, 1 << 20, end).expect("read");
        let b = shared.read(offset, 1 << 20, end).expect("read");
        assert_eq!(a.to_bytes().expect("bytes"), b.to_bytes().expect("bytes"), "same bytes from {offset}");
        offset = a.next_offset;
    }
    assert_eq!(shared.latest_epoch(), Some(LeaderEpoch(3)));
    let stale = common::batch(&values(1, 1), 1);
    assert!(matches!(shared.append_shared(&stale, LeaderEpoch(1)), Err(StorageError::StaleLeaderEpoch { .. })));
    let mut corrupt = common::batch(&values(1, 1), 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(shared.append_shared(&corrupt, LeaderEpoch(3)), Err(StorageError::InvalidBatch { .. })));
    let good = common::batch(&values(1, 1), 1);
    let mixed = [&good[..], &corrupt[..]];
    assert!(
        matches!(shared.append_shared_parts(&mixed, LeaderEpoch(3)), Err(StorageError::InvalidBatch { index: 1, .. })),
        "a bad piece refuses the whole append"
    );
    assert!(matches!(shared.append_shared_parts(&[], LeaderEpoch(3)), Err(StorageError::EmptyAppend)));
    assert_eq!(shared.log_end_offset(), end, "nothing written");
}

#[test]
fn several_batches_in_one_append_get_consecutive_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    let mut records = common::batch(&values(2, 5), 1);
    records.extend(common::batch(&values(3, 5), 2));
    let info = log.append(&mut records, LeaderEpoch(0)).expect("append");
    assert_eq!((info.base_offset, info.last_offset, info.batch_count), (Offset(0), Offset(4), 2));
    assert_eq!(common::all_records(&log).len(), 5);
}

#[test]
fn invalid_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { max_batch_bytes: 2048, ..config() }).expect("open");
    let good = common::batch(&values(2, 10), 1);

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut records = good.clone();
    records.extend_from_slice(&bad_crc);
    let error = log.append(&mut records, LeaderEpoch(0)).expect_err("bad CRC");
    assert!(matches!(error, StorageError::InvalidBatch { index: 1, source: RecordError::CrcMismatch { .. } }));
    assert!(error.to_string().contains("batch 1 of the append is invalid: record batch CRC mismatch"), "{error}");

    let mut truncated = good[..good.len() - 3].to_vec();
    assert!(matches!(
        log.append(&mut truncated, LeaderEpoch(0)),
        Err(StorageError::InvalidBatch { source: RecordError::Truncated { .. }, .. })
    ));
    let mut oversized = common::batch(&values(1, 3000), 1);
    assert!(matches!(
        log.append(&mut oversized, LeaderEpoch(0)),
        Err(StorageError::InvalidBatch { source: RecordError::TooLarge { max: 2048, .. }, .. })
    ));
    let mut garbage = vec![0xAB; 100];
    assert!(matches!(log.append(&mut garbage, LeaderEpoch(0)), Err(StorageError::InvalidBatch { .. })));
    assert!(matches!(log.append(&mut [], LeaderEpoch(0)), Err(StorageError::EmptyAppend)));

    assert_eq!(log.log_end_offset(), Offset(0), "nothing was appended");
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn reads_return_whole_batches_at_least_one_and_stop_below_upto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    for _ in 0..10 {
        let mut batch = common::batch(&values(4, 100), common::now_ms());
        log.append(&mut batch, LeaderEpoch(0)).expect("append");
    }
    let end = log.log_end_offset();
    assert_eq!(end, Offset(40));
    let batch_bytes = log.read(Offset(0), 1, end).expect("read").total_bytes();

    // Mid-batch offset: the whole batch holding it comes back.
    let read = log.read(Offset(6), 1, end).expect("read");
    assert_eq!((read.total_bytes(), read.next_offset), (batch_bytes, Offset(8)));
    // max_bytes rounds down to whole batches, never to zero. (The read may
    // stop at the last indexed batch boundary within it, to avoid reading
    // headers: up to one index interval short.)
    let read = log.read(Offset(0), batch_bytes * 3 + 10, end).expect("read");
    assert!(read.total_bytes() <= batch_bytes * 3 && read.total_bytes() + 512 + batch_bytes >= batch_bytes * 3);
    assert_eq!(read.total_bytes() % batch_bytes, 0);
    assert_eq!(read.next_offset, Offset(4 * read.total_bytes() / batch_bytes));
    // upto (the high watermark) cuts before the batch that crosses it.
    let read = log.read(Offset(0), 1 << 20, Offset(10)).expect("read");
    assert_eq!(read.next_offset, Offset(8));
    let read = log.read(Offset(8), 1 << 20, Offset(10)).expect("read");
    assert!(read.is_empty(), "the batch holding the HW is not visible yet");
    // At the log end: empty, not an error (a consumer that caught up).
    assert!(log.read(end, 1 << 20, end).expect("read at end").is_empty());
}

#[test]
fn out_of_range_reads_name_the_valid_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    let mut batch = common::batch(&values(5, 1), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    let error = log.read(Offset(6), 100, Offset(5)).expect_err("past the end");
    assert!(matches!(
        error,
        StorageError::OffsetOutOfRange { requested: Offset(6), log_start_offset: Offset(0), log_end_offset: Offset(5) }
    ));
    assert_eq!(error.to_string(), "offset 6 is out of range: the log holds offsets 0..5");
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { segment_bytes: 4096, ..config() }).expect("open");
    let base = common::now_ms() - 100_000;
    // 50 batches of 3 records, timestamps base + 10*batch + record.
    for batch_index in 0..50 {
        let mut batch = common::batch(&values(3, 100), base + batch_index * 10);
        log.append(&mut batch, LeaderEpoch(0)).expect("append");
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), Some((Offset(0), base)));
    assert_eq!(log.offset_for_timestamp(base + 1).expect("lookup"), Some((Offset(1), base + 1)));
    assert_eq!(log.offset_for_timestamp(base + 3).expect("lookup"), Some((Offset(3), base + 10)));
    assert_eq!(log.offset_for_timestamp(base + 252).expect("lookup"), Some((Offset(77), base + 252)));
    assert_eq!(log.offset_for_timestamp(base + 492).expect("lookup"), Some((Offset(149), base + 492)));
    assert_eq!(log.offset_for_timestamp(base + 493).expect("lookup"), None);
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { segment_bytes: 4096, ..config() }).expect("open");
    for _ in 0..20 {
        let mut batch = common::batch(&values(5, 100), common::now_ms());
        log.append(&mut batch, LeaderEpoch(0)).expect("append");
    }
    assert_eq!(log.segment_count(), 4, "20 batches of ~620 bytes, 6 to a 4 KiB segment");
    assert!(dir.path().join("00000000000000000000.log").exists());

    let aged = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(aged.path(), LogConfig { segment_ms: 300, ..config() }).expect("open");
    // Producer timestamps do not age a segment: an old one does not roll it.
    let mut old = common::batch(&values(1, 10), common::now_ms() - 120_000);
    log.append(&mut old, LeaderEpoch(0)).expect("append");
    let mut next = common::batch(&values(1, 10), common::now_ms());
    log.append(&mut next, LeaderEpoch(0)).expect("append");
    assert_eq!(log.segment_count(), 1);
    // The broker's clock does: once the segment is older than segment_ms,
    // the next append rolls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.segment_count() == 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut fresh = common::batch(&values(1, 10), common::now_ms());
        log.append(&mut fresh, LeaderEpoch(0)).expect("append");
    }
    assert_eq!(log.segment_count(), 2, "a segment older than segment_ms rolls");
}

#[test]
fn retention_by_time_deletes_old_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig { segment_bytes: 4096, retention_ms: Some(60_000), ..config() };
    let mut log = PartitionLog::open(dir.path(), config).expect("open");
    let now = common::now_ms();
    for index in 0..20 {
        // The first ten batches are two minutes old.
        let timestamp = if index < 10 { now - 120_000 } else { now };
        let mut batch = common::batch(&values(5, 100), timestamp);
        log.append(&mut batch, LeaderEpoch(0)).expect("append");
    }
    let outcome = log.apply_retention(now, log.log_end_offset()).expect("retention");
    assert!(outcome.segments_deleted >= 1);
    assert_eq!(outcome.log_start_offset, log.log_start_offset());
    assert!(log.log_start_offset() <= Offset(50), "no record newer than the cutoff is deleted");
    assert!(matches!(log.read(Offset(0), 100, Offset(100)), Err(StorageError::OffsetOutOfRange { .. })));
    let records = common::all_records(&log);
    assert_eq!(records.first().map(|(offset, _)| Offset(*offset)), Some(log.log_start_offset()));
    assert_eq!(records.last().map(|(offset, _)| *offset), Some(99));
}

#[test]
fn flush_always_moves_the_recovery_point_with_every_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log =
        PartitionLog::open(dir.path(), LogConfig { flush_policy: FlushPolicy::Always, ..config() }).expect("open");
    let mut batch = common::batch(&values(3, 10), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    assert_eq!(log.recovery_point(), Offset(3));

    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { flush_policy: FlushPolicy::EveryNRecords(5), ..config() })
        .expect("open");
    let mut batch = common::batch(&values(3, 10), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    assert_eq!(log.recovery_point(), Offset(0), "3 of 5 records: not yet");
    let mut batch = common::batch(&values(3, 10), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    assert_eq!(log.recovery_point(), Offset(6));

    let mut log = PartitionLog::open(tempfile::tempdir().expect("dir").keep(), config()).expect("open");
    let mut batch = common::batch(&values(3, 10), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    assert_eq!(log.recovery_point(), Offset(0), "the default leaves durability to replication");
    std::fs::remove_dir_all(log.dir()).expect("cleanup");
}

#[test]
fn leader_epochs_answer_end_offsets_and_follow_truncation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    for (epoch, count) in [(1, 3), (1, 2), (3, 4), (5, 1)] {
        let mut batch = common::batch(&values(count, 10), 1);
        log.append(&mut batch, LeaderEpoch(epoch)).expect("append");
    }
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), Some((LeaderEpoch(1), Offset(5))));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), Some((LeaderEpoch(1), Offset(5))));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(3)), Some((LeaderEpoch(3), Offset(9))));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(5)), Some((LeaderEpoch(5), Offset(10))));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);

    let mut stale = common::batch(&values(1, 10), 1);
    assert!(matches!(
        log.append(&mut stale, LeaderEpoch(4)),
        Err(StorageError::StaleLeaderEpoch { epoch: LeaderEpoch(4), latest: LeaderEpoch(5) })
    ));

    // A follower cuts what the new leader does not have.
    assert_eq!(log.truncate_to(Offset(7)).expect("truncate"), Offset(5), "the whole batch holding 7 goes");
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
    drop(log);
    let log = open(&dir);
    assert_eq!(log.log_end_offset(), Offset(5));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(3)), Some((LeaderEpoch(1), Offset(5))));
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_and_must_continue_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut leader = open(&dir);
    let mut batch = common::batch(&values(3, 10), 1);
    leader.append(&mut batch, LeaderEpoch(2)).expect("append");
    let mut batch = common::batch(&values(2, 10), 1);
    leader.append(&mut batch, LeaderEpoch(3)).expect("append");
    let fetched = leader.read(Offset(0), 1 << 20, leader.log_end_offset()).expect("read").to_bytes().expect("bytes");

    let follower_dir = tempfile::tempdir().expect("temp dir");
    let mut follower = open(&follower_dir);
    let info = follower.append_replicated(&fetched).expect("replicate");
    assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(4)));
    assert_eq!(follower.end_offset_for_epoch(LeaderEpoch(2)), Some((LeaderEpoch(2), Offset(3))));
    assert_eq!(common::all_records(&follower), common::all_records(&leader));
    assert!(matches!(
        follower.append_replicated(&fetched),
        Err(StorageError::NonContiguousAppend { expected: Offset(5), got: Offset(0) })
    ));
}

#[test]
fn readers_on_other_threads_see_only_whole_published_batches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { segment_bytes: 16 * 1024, ..config() }).expect("open");
    let reader = log.reader();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = reader.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let records = common::read_all(&reader, reader.log_start_offset(), 4096);
                    for (index, (offset, value)) in records.iter().enumerate() {
                        assert_eq!(*offset, index as u64);
                        assert_eq!(value, &vec![(*offset % 4) as u8; 50]);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for _ in 0..500 {
        let mut batch = common::batch(&values(4, 50), common::now_ms());
        log.append(&mut batch, LeaderEpoch(0)).expect("append");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }
    assert_eq!(log.log_end_offset(), Offset(2000));
}

#[test]
fn the_high_watermark_checkpoint_survives_a_crash_and_never_passes_the_log_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(&dir);
    assert_eq!(log.checkpointed_high_watermark(), None);
    let mut batch = common::batch(&values(10, 10), 1);
    log.append(&mut batch, LeaderEpoch(0)).expect("append");
    log.checkpoint_high_watermark(Offset(7)).expect("checkpoint");
    drop(log);
    let mut log = open(&dir);
    assert_eq!(log.checkpointed_high_watermark(), Some(Offset(7)));
    // A log cut below the checkpoint (a follower's truncation) caps it.
    log.truncate_to(Offset(0)).expect("truncate");
    assert_eq!(log.checkpointed_high_watermark(), Some(Offset(0)));
}

#[test]
fn reads_copy_their_batches_into_a_fresh_or_reused_buffer_and_nothing_more() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), LogConfig { segment_bytes: 4096, ..config() }).expect("open");
    let mut appended = Vec::new();
    for round in 0..30u8 {
        let mut batch = common::batch(&values(2, 300 + usize::from(round)), common::now_ms());
        log.append(&mut batch, LeaderEpoch(1)).expect("append");
        appended.extend_from_slice(&batch);
    }
    // Read it all back, read after read (segment after segment), once into
    // fresh buffers and once into one reused buffer that starts larger
    // than any read and full of old bytes.
    let (mut fresh, mut reused) = (Vec::new(), Vec::new());
    let mut buffer = vec![0xee; 1 << 20];
    let mut offset = Offset(0);
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, log.log_end_offset()).expect("read");
        let bytes = read.to_bytes().expect("bytes");
        assert_eq!(bytes.len() as u64, read.total_bytes(), "just the read's batches");
        fresh.extend_from_slice(&bytes);
        read.read_into(&mut buffer).expect("read_into");
        assert_eq!(&buffer[..], &bytes[..], "the reused buffer holds the same, nothing more");
        reused.extend_from_slice(&buffer);
        offset = read.next_offset;
    }
    assert_eq!(fresh, appended);
    assert_eq!(reused, appended);
}

#[test]
fn a_log_can_restart_past_its_end_and_keeps_that_start_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    let mut batch = common::batch(&values(5, 10), 1);
    log.append(&mut batch, LeaderEpoch(3)).expect("append");
    assert_eq!(log.truncate_fully_and_start_at(Offset(100)).expect("restart"), Offset(100));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(100), Offset(100)));
    assert_eq!(log.latest_epoch(), None, "no record of any epoch is left");
    assert!(matches!(log.read(Offset(4), 100, Offset(100)), Err(StorageError::OffsetOutOfRange { .. })));
    let mut batch = common::batch(&values(2, 10), 2);
    let appended = log.append(&mut batch, LeaderEpoch(4)).expect("append");
    assert_eq!(appended.base_offset, Offset(100));
    log.close().expect("close");
    let log = PartitionLog::open(dir.path(), config()).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(100), Offset(102)));
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(4)));
    assert_eq!(common::all_records(&log).first().map(|(offset, _)| *offset), Some(100));
}
