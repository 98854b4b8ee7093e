//! `brook bench consume`: read N records from the beginning of a topic as
//! fast as possible.

use std::time::Duration;

use brook_client::{Consumer, ConsumerConfig, OffsetReset};
use serde_json::json;
use tokio::time::Instant;

use super::{rates, Setup, TopicArgs};

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to read (the topic must hold at least this many).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per fetch request.
    #[arg(long, default_value_t = 4 << 20)]
    fetch_max_bytes: u32,
    /// Give up after this many seconds without a record.
    #[arg(long, default_value_t = 10)]
    idle_timeout_sec: u64,
    /// Read through the broker's prototype sendfile fetch at this address
    /// (`brook serve --raw-listen`) instead of gRPC: one broker only,
    /// records decoded but not turned into client records.
    #[arg(long)]
    sendfile: Option<std::net::SocketAddr>,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ConsumeArgs, bootstrap: &str) -> anyhow::Result<()> {
    let setup = Setup::prepare(bootstrap, &args.topic).await?;
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_bytes: args.fetch_max_bytes,
        max_poll_records: 100_000,
        max_buffered_records: 1_000_000,
        ..ConsumerConfig::default()
    };
    if let Some(address) = args.sendfile {
        let start = Instant::now();
        let (records, bytes) = consume_sendfile(address, &setup.topic_partitions, &args).await?;
        return report(&args, &setup, records, bytes, start.elapsed());
    }
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    let names = args.topic.names();
    consumer.subscribe(&names.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while records < args.records {
        let polled = consumer.poll(Duration::from_secs(args.idle_timeout_sec)).await?;
        anyhow::ensure!(
            !polled.is_empty(),
            "only {records} of {} records arrived (no record for {} s)",
            args.records,
            args.idle_timeout_sec
        );
        // A poll may carry more than is left to read: N records is N.
        let wanted = usize::try_from(args.records - records).unwrap_or(usize::MAX);
        for record in polled.into_iter().take(wanted) {
            records += 1;
            bytes += record.value.map_or(0, |value| value.len() as u64);
        }
    }
    report(&args, &setup, records, bytes, start.elapsed())
}

fn report(args: &ConsumeArgs, setup: &Setup, records: u64, bytes: u64, elapsed: Duration) -> anyhow::Result<()> {
    let (records_per_sec, mb_per_sec) = rates(records, bytes, elapsed);
    if args.json {
        let result = json!({
            "benchmark": "consume",
            "records": records,
            "elapsed_sec": elapsed.as_secs_f64(),
            "records_per_sec": records_per_sec,
            "mb_per_sec": mb_per_sec,
            "transport": if args.sendfile.is_some() { "sendfile" } else { "grpc" },
            "setup": setup.to_json(),
        });
        println!("{result}");
    } else {
        println!("setup: {}", setup.describe());
        println!(
            "{records} records read in {:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// Reads `args.records` records from the start of every partition through
/// the prototype sendfile fetch (protocol in `brook_broker::raw`),
/// round-robin over the partitions. Returns records and value bytes read.
async fn consume_sendfile(
    address: std::net::SocketAddr,
    partitions: &[(String, u32)],
    args: &ConsumeArgs,
) -> anyhow::Result<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut positions: Vec<(&str, u32, i64)> = partitions
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(move |partition| (topic.as_str(), partition, 0i64)))
        .collect();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut buffer = Vec::new();
    let mut last_data = Instant::now();
    while records < args.records {
        let mut got_any = false;
        for (topic, partition, offset) in &mut positions {
            let mut frame = Vec::with_capacity(32 + topic.len());
            frame.extend_from_slice(&(1 + 2 + topic.len() as u32 + 16).to_be_bytes());
            frame.push(0); // fetch
            frame.extend_from_slice(&u16::try_from(topic.len())?.to_be_bytes());
            frame.extend_from_slice(topic.as_bytes());
            frame.extend_from_slice(&partition.to_be_bytes());
            frame.extend_from_slice(&offset.to_be_bytes());
            frame.extend_from_slice(&args.fetch_max_bytes.to_be_bytes());
            stream.write_all(&frame).await?;
            if stream.read_u8().await? != 0 {
                let length = stream.read_u32().await?;
                let mut message = vec![0u8; length.min(64 * 1024) as usize];
                stream.read_exact(&mut message).await?;
                anyhow::bail!("sendfile fetch refused: {}", String::from_utf8_lossy(&message));
            }
            let next_offset = stream.read_i64().await?;
            let _high_watermark = stream.read_i64().await?;
            let length = usize::try_from(stream.read_u64().await?)?;
            buffer.resize(length, 0);
            stream.read_exact(&mut buffer).await?;
            for batch in brook_record::Batches::new(&buffer) {
                for record in batch?.records() {
                    if records == args.records {
                        break;
                    }
                    records += 1;
                    bytes += record?.value.map_or(0, |value| value.len() as u64);
                }
            }
            got_any |= length > 0;
            *offset = next_offset;
        }
        if got_any {
            last_data = Instant::now();
        } else {
            anyhow::ensure!(
                last_data.elapsed() < Duration::from_secs(args.idle_timeout_sec),
                "only {records} of {} records arrived (no record for {} s)",
                args.records,
                args.idle_timeout_sec
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok((records, bytes))
}
