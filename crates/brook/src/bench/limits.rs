//! `brook bench limits`: what this machine can do without Brook, measured
//! the way Brook uses it, so Brook's figures can be given as ratios.
//! - disk: sequential buffered `write` of the data directory's disk in
//!   fixed chunks (timed without the final fsync, like a log with flush
//!   policy `none`), then sequential `read` of the same file (from the page
//!   cache, as consumers that keep up read);
//! - loopback: one TCP connection on 127.0.0.1 carrying the same bytes.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::rates;

#[derive(Debug, clap::Args)]
pub struct LimitsArgs {
    /// The directory whose disk to measure.
    #[arg(long, default_value = "./data")]
    dir: PathBuf,
    /// Bytes to move in each test.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bytes per write/read call.
    #[arg(long, default_value_t = 16 * 1024)]
    chunk_size: usize,
    #[arg(long)]
    json: bool,
}

struct Measured {
    disk_write: Duration,
    disk_read: Duration,
    loopback: Duration,
}

fn measure(args: &LimitsArgs) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(&args.dir)?;
    let path = args.dir.join(format!(".brook-limits-{}", std::process::id()));
    let chunk = vec![0x5au8; args.chunk_size];
    let chunks = args.bytes.div_ceil(args.chunk_size as u64);

    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..chunks {
        file.write_all(&chunk)?;
    }
    let disk_write = started.elapsed();
    file.sync_all()?;
    drop(file);

    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut buffer = vec![0u8; args.chunk_size];
    while file.read(&mut buffer)? > 0 {}
    let disk_read = started.elapsed();
    std::fs::remove_file(&path)?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let total = chunks * args.chunk_size as u64;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; 128 * 1024];
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                return Ok(received);
            }
            received += read as u64;
        }
    });
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(address)?;
    for _ in 0..chunks {
        stream.write_all(&chunk)?;
    }
    drop(stream);
    let received = reader.join().map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    let loopback = started.elapsed();
    anyhow::ensure!(received == total, "loopback moved {received} of {total} bytes");
    Ok(Measured { disk_write, disk_read, loopback })
}

pub async fn run(args: LimitsArgs) -> anyhow::Result<()> {
    let measured = tokio::task::spawn_blocking({
        let args = LimitsArgs { dir: args.dir.clone(), ..args };
        move || measure(&args).map(|measured| (measured, args))
    })
    .await??;
    let (measured, args) = measured;
    let bytes = args.bytes.div_ceil(args.chunk_size as u64) * args.chunk_size as u64;
    let mb = |elapsed| rates(0, bytes, elapsed).1;
    if args.json {
        let result = json!({
            "benchmark": "limits",
            "bytes": bytes,
            "chunk_size": args.chunk_size,
            "dir": args.dir.display().to_string(),
            "disk_write_mb_per_sec": mb(measured.disk_write),
            "disk_read_mb_per_sec": mb(measured.disk_read),
            "loopback_mb_per_sec": mb(measured.loopback),
        });
        println!("{result}");
    } else {
        println!("references: {} MiB in {}-byte chunks, disk of {}", bytes >> 20, args.chunk_size, args.dir.display());
        println!("disk sequential write (buffered) {:.1} MB/s", mb(measured.disk_write));
        println!("disk sequential read (page cache) {:.1} MB/s", mb(measured.disk_read));
        println!("loopback TCP                      {:.1} MB/s", mb(measured.loopback));
    }
    Ok(())
}
