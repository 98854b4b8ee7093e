//! `brook bench e2e`: produce at a fixed rate while a consumer in the same
//! process reads; latency runs from the moment a record was due to be sent
//! until the consumer holds it. Each value carries its due time, as
//! nanoseconds since the run started, in its first 8 bytes.

use std::time::Duration;

use brook_client::{Acks, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;
use tokio::time::Instant;

use super::produce::Pacer;
use super::{print_json_with_latency, LatencyRecorder, Setup, TopicArgs};

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    topic: TopicArgs,
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Bytes of each record's value (at least 8).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records per second.
    #[arg(long, default_value_t = 10_000)]
    throughput: u64,
    #[arg(long, default_value = "all", value_parser = crate::produce::parse_acks)]
    acks: Acks,
    #[arg(long, default_value_t = 16 * 1024)]
    batch_size: usize,
    #[arg(long, default_value_t = 5)]
    linger: u64,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: E2eArgs, bootstrap: &str) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_size >= 8, "--record-size must be at least 8 (the value carries a timestamp)");
    anyhow::ensure!(args.throughput > 0, "--throughput must be positive");
    anyhow::ensure!(args.topic.topics <= 1, "bench e2e uses one topic; --topics is for produce and consume");
    let linger = Duration::from_millis(args.linger);
    let setup = Setup::prepare(bootstrap, &args.topic).await?.with_producer(
        args.acks,
        args.record_size,
        args.batch_size,
        linger,
        1,
    );

    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Latest,
        fetch_max_wait: Duration::from_millis(500),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    consumer.subscribe(&[&args.topic.topic]).await?;
    // Fix the starting positions at the current end before producing.
    consumer.poll(Duration::from_millis(10)).await?;

    let producer_config =
        ProducerConfig { acks: args.acks, batch_size: args.batch_size, linger, ..ProducerConfig::default() };
    let producer = Producer::connect(bootstrap, producer_config).await?;
    let start = Instant::now();
    let pacer = Pacer::new(start, Some(args.throughput as f64));
    let topic: std::sync::Arc<str> = args.topic.topic.as_str().into();
    let (records, record_size) = (args.records, args.record_size);
    let sending = tokio::spawn(async move {
        for index in 0..records {
            let due = pacer.due(index).expect("a positive rate paces");
            tokio::time::sleep_until(due).await;
            let mut value = vec![b'x'; record_size];
            value[..8].copy_from_slice(&(due - start).as_nanos().min(u128::from(u64::MAX)).to_le_bytes()[..8]);
            producer.send(ProducerRecord::new(topic.clone(), value)).await?;
        }
        producer.close().await;
        anyhow::Ok(())
    });

    let mut latencies = LatencyRecorder::default();
    let mut received = 0u64;
    let bar = crate::progress::Progress::new(Some(args.records), "records received");
    while received < args.records {
        let polled = consumer.poll(Duration::from_secs(10)).await?;
        anyhow::ensure!(!polled.is_empty(), "only {received} of {} records arrived", args.records);
        let now = start.elapsed();
        for record in polled {
            let value = record.value.unwrap_or_default();
            let mut due = [0u8; 8];
            due.copy_from_slice(&value[..8.min(value.len())]);
            latencies.record(now.saturating_sub(Duration::from_nanos(u64::from_le_bytes(due))));
            received += 1;
        }
        bar.set(received);
    }
    bar.finish();
    sending.await??;
    if args.json {
        let result = json!({
            "benchmark": "e2e",
            "records": received,
            "target_records_per_sec": args.throughput,
            "setup": setup.to_json(),
        });
        print_json_with_latency(result, &latencies);
    } else {
        outln!("setup: {}", setup.describe());
        outln!("{received} records at {} records/s", args.throughput);
        outln!("produce-to-consume latency: {}", latencies.summary());
    }
    Ok(())
}
