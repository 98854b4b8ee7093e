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
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    let names = args.topic.names();
    consumer.subscribe(&names.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let bar = crate::progress::Progress::new(Some(args.records), "records read");
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
        bar.set(records);
    }
    bar.finish();
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
            "transport": "grpc",
            "setup": setup.to_json(),
        });
        outln!("{result}");
    } else {
        outln!("setup: {}", setup.describe());
        outln!(
            "{records} records read in {:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}
