//! Helpers shared by the storage tests: building batches and reading a log
//! back as plain records.

#![allow(dead_code)]

use brook_record::{BatchBuilder, Batches, NewRecord, Offset};
use brook_storage::{LogReader, PartitionLog};

/// A batch of records with the given values, all stamped `timestamp_ms`
/// plus their index.
pub fn batch(values: &[Vec<u8>], timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(256);
    for (index, value) in values.iter().enumerate() {
        builder.push(&NewRecord {
            timestamp_ms: timestamp_ms + index as i64,
            key: None,
            value: Some(value),
            headers: &[],
        });
    }
    builder.finish().to_vec()
}

/// Every record from `from` to the log end, as (offset, value), read in
/// reads of at most `max_bytes`; checks on the way that each read is whole
/// batches that continue the previous one.
pub fn read_all(reader: &LogReader, from: Offset, max_bytes: u64) -> Vec<(u64, Vec<u8>)> {
    let mut records = Vec::new();
    let mut next = from;
    let end = reader.log_end_offset();
    while next < end {
        let read = reader.read(next, max_bytes, end).expect("read within range");
        assert!(!read.is_empty(), "a read below the log end returns at least one batch");
        let bytes = read.to_bytes().expect("read bytes");
        let mut expected_next = None;
        for view in Batches::new(&bytes) {
            let view = view.expect("stored batches are valid");
            if let Some(expected) = expected_next {
                assert_eq!(view.header.base_offset as u64, expected, "batches follow each other");
            }
            expected_next = Some(view.header.last_offset().0 + 1);
            for record in view.records() {
                let record = record.expect("records decode");
                if record.offset >= next {
                    records.push((record.offset.0, record.value.unwrap_or_default().to_vec()));
                }
            }
        }
        assert_eq!(Some(read.next_offset.0), expected_next, "next_offset follows the last batch");
        next = read.next_offset;
    }
    records
}

pub fn all_records(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    read_all(&log.reader(), log.log_start_offset(), 1 << 20)
}

/// Current wall-clock time in milliseconds, so that age-based roll and
/// retention stay out of the way unless a test wants them.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Property-test cases: `PROPTEST_CASES` when set (for long runs), else
/// `default` (kept small so the default test run stays quick).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// `batch` from an idempotent producer: id, epoch and base sequence set.
pub fn producer_batch(values: &[Vec<u8>], producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(256).with_producer(producer_id, epoch, base_sequence);
    for value in values {
        builder.push(&NewRecord { timestamp_ms: now_ms(), key: None, value: Some(value), headers: &[] });
    }
    builder.finish().to_vec()
}
