//! What the broker's checks of an incoming batch cost, against a plain
//! copy of the same bytes in the same run: `validate_batch` on 16 KiB
//! batches uncompressed (header, CRC-32C, each record's length prefix) and
//! compressed (header and CRC only: the records stay opaque), and, for a
//! topic whose `compression.type` names a codec, `recompress` of an lz4
//! batch into zstd; and the consumer's decompression of each codec.
//!
//! `cargo bench -p brook-record --bench validate` (env: `BROOK_BENCH_MB`,
//! megabytes of batches per measurement, default 512).

use std::hint::black_box;
use std::time::Instant;

use brook_record::{recompress, validate_batch, BatchBuilder, Batches, Compression, NewRecord};

const BATCH_BYTES: usize = 16 * 1024;

/// A 16 KiB batch of 200-byte JSON-like events (compressible, each
/// different), compressed with `compression`; and its uncompressed size.
fn batch(compression: Compression) -> (Vec<u8>, usize) {
    let mut builder = BatchBuilder::new(BATCH_BYTES);
    let mut index = 0u64;
    loop {
        let value = format!(
            "{{\"id\":{index},\"user\":\"user-{}\",\"path\":\"/shop/item/{}\",\"ts\":{},\"words\":\"{}\"}}",
            index % 977,
            index % 131,
            1_700_000_000_000u64 + index * 7,
            ["alpha", "beta", "gamma", "delta"][(index % 4) as usize].repeat(20)
        );
        let record = NewRecord { timestamp_ms: 1, key: None, value: Some(value.as_bytes()), headers: &[] };
        if builder.size_bytes() + builder.size_of(&record) > BATCH_BYTES {
            break;
        }
        builder.push(&record);
        index += 1;
    }
    let plain = builder.size_bytes();
    (builder.finish_compressed(compression).expect("compress").to_vec(), plain)
}

/// Runs `work` over `rounds` batches and prints MB/s of `plain_bytes` each.
fn measure(what: &str, rounds: usize, plain_bytes: usize, mut work: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        work();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = (rounds * plain_bytes) as f64 / elapsed / 1e6;
    println!("{what:<48} {rate:>9.1} MB/s of uncompressed batch");
    rate
}

fn main() {
    let megabytes: usize = std::env::var("BROOK_BENCH_MB").ok().and_then(|value| value.parse().ok()).unwrap_or(512);
    let rounds = megabytes * 1_000_000 / BATCH_BYTES;
    let (plain, plain_size) = batch(Compression::None);
    let mut target = vec![0u8; plain.len()];
    let copy = measure("reference: copy of the batch (memcpy)", rounds, plain_size, || {
        target.copy_from_slice(black_box(&plain));
        black_box(&target);
    });
    let validate = measure("validate_batch, uncompressed", rounds, plain_size, || {
        black_box(validate_batch(black_box(&plain), 1 << 20).expect("valid"));
    });
    for codec in [Compression::Lz4, Compression::Zstd, Compression::Snappy, Compression::Gzip] {
        let (compressed, _) = batch(codec);
        let ratio = plain_size as f64 / compressed.len() as f64;
        measure(&format!("validate_batch, {} (ratio {ratio:.1})", codec.name()), rounds, plain_size, || {
            black_box(validate_batch(black_box(&compressed), 1 << 20).expect("valid"));
        });
        measure(&format!("consumer's decompression, {}", codec.name()), rounds / 8, plain_size, || {
            let view = Batches::new(&compressed).next().expect("a batch").expect("valid");
            black_box(view.decompressed(1 << 20).expect("decompress"));
        });
    }
    let (lz4, _) = batch(Compression::Lz4);
    measure("recompress lz4 -> zstd (compression.type=zstd)", rounds / 16, plain_size, || {
        black_box(recompress(black_box(&lz4), Compression::Zstd, 1 << 20).expect("recompress"));
    });
    println!("validate_batch (uncompressed) takes {:.2} of the time of a copy", copy / validate);
}
