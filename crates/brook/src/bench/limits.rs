//! `brook bench limits`: what this machine can do without Brook, measured
//! the way Brook uses it, so Brook's figures can be given as ratios.
//! - disk: sequential buffered `write` of the data directory's disk in
//!   fixed chunks (timed without the final fsync, like a log with flush
//!   policy `none`), then sequential `read` of the same file (from the page
//!   cache, as consumers that keep up read);
//! - loopback: one TCP connection on 127.0.0.1 carrying the same bytes;
//! - file to loopback: the file (in the page cache) sent over such a
//!   connection, once through a user-space buffer (`read` + `write`: the
//!   least a fetch answered through gRPC costs, before gRPC's own copies)
//!   and once with `sendfile` (no user-space copy: what a zero-copy
//!   consumer path could reach).

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
    file_copy: Duration,
    file_sendfile: Duration,
}

/// Times `send` writing into one loopback TCP connection whose far end
/// reads and discards; checks that `expected` bytes arrived.
fn time_loopback(
    expected: u64,
    send: impl FnOnce(&mut std::net::TcpStream) -> std::io::Result<()>,
) -> anyhow::Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
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
    send(&mut stream)?;
    drop(stream);
    let received = reader.join().map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    let elapsed = started.elapsed();
    anyhow::ensure!(received == expected, "loopback moved {received} of {expected} bytes");
    Ok(elapsed)
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

    let total = chunks * args.chunk_size as u64;
    let loopback = time_loopback(total, |stream| {
        for _ in 0..chunks {
            stream.write_all(&chunk)?;
        }
        Ok(())
    })?;
    let file_copy = time_loopback(total, |stream| {
        let mut file = std::fs::File::open(&path)?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            stream.write_all(&buffer[..read])?;
        }
    })?;
    let file_sendfile = time_loopback(total, |stream| {
        let file = std::fs::File::open(&path)?;
        let mut offset = 0u64;
        while offset < total {
            let count = usize::try_from(total - offset).unwrap_or(usize::MAX).min(1 << 30);
            let sent = rustix::fs::sendfile(&*stream, &file, Some(&mut offset), count)?;
            if sent == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "sendfile sent nothing"));
            }
        }
        Ok(())
    })?;
    std::fs::remove_file(&path)?;
    Ok(Measured { disk_write, disk_read, loopback, file_copy, file_sendfile })
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
            "file_to_loopback_copy_mb_per_sec": mb(measured.file_copy),
            "file_to_loopback_sendfile_mb_per_sec": mb(measured.file_sendfile),
        });
        outln!("{result}");
    } else {
        outln!("references: {} MiB in {}-byte chunks, disk of {}", bytes >> 20, args.chunk_size, args.dir.display());
        outln!("disk sequential write (buffered) {:.1} MB/s", mb(measured.disk_write));
        outln!("disk sequential read (page cache) {:.1} MB/s", mb(measured.disk_read));
        outln!("loopback TCP                      {:.1} MB/s", mb(measured.loopback));
        outln!("file -> loopback, read + write    {:.1} MB/s", mb(measured.file_copy));
        outln!("file -> loopback, sendfile        {:.1} MB/s", mb(measured.file_sendfile));
    }
    Ok(())
}
