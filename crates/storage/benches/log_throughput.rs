//! Storage throughput against the same machine's plain-file rates.
//!
//! Appends `BROOK_BENCH_BYTES` (default 1 GiB) of 100-byte records in
//! 16 KiB batches to a partition log, reads them back in 16 KiB reads, and
//! in the same run writes and reads the same bytes to a plain file with
//! plain `write`/`read` of the same chunk size. Each side runs three times,
//! alternating, and the best run counts (the page cache and writeback make
//! single runs noisy). Prints records/s, MB/s and log/plain ratios.
//!
//! `cargo bench -p brook-storage` (env: `BROOK_BENCH_BYTES`,
//! `BROOK_BENCH_DIR` for the disk to measure, default the temp dir).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use brook_record::{BatchBuilder, LeaderEpoch, NewRecord, Offset};
use brook_storage::{LogConfig, PartitionLog};

const RECORD_BYTES: usize = 100;
const BATCH_BYTES: usize = 16 * 1024;
const ROUNDS: usize = 3;

fn template_batch() -> (Vec<u8>, u64) {
    let value = [b'x'; RECORD_BYTES];
    let mut builder = BatchBuilder::new(BATCH_BYTES);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let record = NewRecord { timestamp_ms: now_ms, key: None, value: Some(&value), headers: &[] };
    while builder.size_bytes() + builder.size_of(&record) <= BATCH_BYTES {
        builder.push(&record);
    }
    let records = builder.record_count() as u64;
    (builder.finish().to_vec(), records)
}

struct Rate {
    bytes: u64,
    records: u64,
    elapsed: Duration,
}

impl Rate {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

fn plain_write(path: &Path, chunk: &[u8], chunks: u64) -> Rate {
    let started = Instant::now();
    let mut file = File::create(path).expect("create plain file");
    for _ in 0..chunks {
        file.write_all(chunk).expect("write");
    }
    let elapsed = started.elapsed();
    // Untimed: write back now, so the next run does not start throttled
    // by this one's dirty pages.
    file.sync_all().expect("sync");
    Rate { bytes: chunk.len() as u64 * chunks, records: 0, elapsed }
}

fn plain_read(path: &Path, chunk_bytes: usize) -> Rate {
    let started = Instant::now();
    let mut file = File::open(path).expect("open plain file");
    let mut buffer = vec![0u8; chunk_bytes];
    let mut bytes = 0u64;
    loop {
        let read = file.read(&mut buffer).expect("read");
        if read == 0 {
            break;
        }
        bytes += read as u64;
    }
    Rate { bytes, records: 0, elapsed: started.elapsed() }
}

fn log_append(dir: &Path, batch: &mut [u8], batches: u64, records_per_batch: u64) -> Rate {
    let _ = std::fs::remove_dir_all(dir);
    let mut log = PartitionLog::open(dir, LogConfig::default()).expect("open log");
    let started = Instant::now();
    for _ in 0..batches {
        log.append(batch, LeaderEpoch(0)).expect("append");
    }
    let elapsed = started.elapsed();
    assert_eq!(log.log_end_offset(), Offset(batches * records_per_batch));
    log.close().expect("close (untimed: writes back, like the plain file's sync)");
    Rate { bytes: batch.len() as u64 * batches, records: batches * records_per_batch, elapsed }
}

fn log_read(dir: &Path, max_bytes: u64) -> Rate {
    let log = PartitionLog::open(dir, LogConfig::default()).expect("open log");
    let reader = log.reader();
    let end = reader.log_end_offset();
    let mut buffer = Vec::with_capacity(max_bytes as usize * 2);
    let (mut next, mut bytes) = (Offset::ZERO, 0u64);
    let started = Instant::now();
    while next < end {
        let read = reader.read(next, max_bytes, end).expect("read");
        read.read_into(&mut buffer).expect("read bytes");
        bytes += buffer.len() as u64;
        next = read.next_offset;
    }
    Rate { bytes, records: end.0, elapsed: started.elapsed() }
}

fn best(rates: Vec<Rate>) -> Rate {
    rates.into_iter().min_by_key(|rate| rate.elapsed).expect("at least one round")
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments are not ours.
    let total_bytes: u64 =
        std::env::var("BROOK_BENCH_BYTES").ok().and_then(|value| value.parse().ok()).unwrap_or(1 << 30);
    let base = std::env::var("BROOK_BENCH_DIR").map(Into::into).unwrap_or_else(|_| std::env::temp_dir());
    let scratch = tempfile::tempdir_in(&base).expect("scratch dir");
    let (mut batch, records_per_batch) = template_batch();
    let batches = total_bytes.div_ceil(batch.len() as u64);
    let plain_path = scratch.path().join("plain.bin");
    let log_dir = scratch.path().join("log");

    println!(
        "storage bench: {} MiB of {RECORD_BYTES}-byte records, {} records per {}-byte batch, in {}",
        (batches * batch.len() as u64) >> 20,
        records_per_batch,
        batch.len(),
        base.display()
    );
    let (mut plain_writes, mut log_appends, mut plain_reads, mut log_reads) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        plain_writes.push(plain_write(&plain_path, &batch, batches));
        log_appends.push(log_append(&log_dir, &mut batch, batches, records_per_batch));
    }
    for _ in 0..ROUNDS {
        plain_reads.push(plain_read(&plain_path, batch.len()));
        log_reads.push(log_read(&log_dir, batch.len() as u64));
    }
    for (round, (log, plain)) in log_appends.iter().zip(&plain_writes).enumerate() {
        println!("  round {round}: append {:.1} MB/s, plain write {:.1} MB/s", log.mb_per_sec(), plain.mb_per_sec());
    }
    for (round, (log, plain)) in log_reads.iter().zip(&plain_reads).enumerate() {
        println!("  round {round}: read {:.1} MB/s, plain read {:.1} MB/s", log.mb_per_sec(), plain.mb_per_sec());
    }
    let report = |what: &str, log: &Rate, plain: &Rate| {
        println!(
            "{what:<7} log {:>12.0} records/s {:>8.1} MB/s | plain file {:>8.1} MB/s | ratio {:.3}",
            log.records_per_sec(),
            log.mb_per_sec(),
            plain.mb_per_sec(),
            log.mb_per_sec() / plain.mb_per_sec()
        );
    };
    report("append", &best(log_appends), &best(plain_writes));
    report("read", &best(log_reads), &best(plain_reads));
}
