//! `brook bench produce`: K producers send N records of a fixed size, as
//! fast as possible or at a target rate. Latency runs from `send` to the
//! acknowledgement; with a target rate it runs from the moment the record
//! was *due* (coordinated-omission correction), so a stall that delays the
//! sender shows up in the percentiles instead of hiding. The end of the
//! latency is the moment the producer received the batch's answer (stamped
//! once per batch), not when this tool got round to looking. Timing starts
//! after a warm-up of one acknowledged record per partition (not counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_client::{Acks, Cluster, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::{print_json_with_latency, rates, LatencyRecorder, Setup, TopicArgs};

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to send, in all.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Target records per second over all producers; -1: as fast as possible.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    throughput: i64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = crate::produce::parse_acks)]
    acks: Acks,
    /// Producer instances, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 16 * 1024)]
    batch_size: usize,
    /// Bytes of records each producer buffers before `send` waits (the
    /// producer's `buffer_memory`; Kafka's `buffer.memory`).
    #[arg(long, default_value_t = ProducerConfig::default().buffer_memory)]
    buffer_memory: usize,
    /// The most bytes of batches one produce request carries (the
    /// producer's `max_request_bytes`; Kafka's `max.request.size`).
    #[arg(long, default_value_t = ProducerConfig::default().max_request_bytes)]
    max_request_bytes: usize,
    /// Milliseconds a batch waits to fill.
    #[arg(long, default_value_t = 5)]
    linger: u64,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: brook_client::Compression,
    /// Idempotence (producer id and sequences): true (the producer's
    /// default) or false. Takes effect with --acks all only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// Requests in flight per partition; default: 5 with idempotence, 1
    /// without.
    #[arg(long)]
    in_flight_per_partition: Option<usize>,
    /// Record values: `x` (the same bytes in every record, all 'x') or
    /// `events` (a different JSON-like event per record: an id, a user, a
    /// path, a timestamp, padded with words to the record size).
    #[arg(long, default_value = "x")]
    payload: Payload,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// A producer task's record values: `fixed` (its length is the record
/// size) or generated per record.
struct Values {
    fixed: Bytes,
    payload: Payload,
}

/// What record values hold.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Payload {
    X,
    Events,
}

/// Record `index`'s event: JSON-like text of `size` bytes, different for
/// every record, as compressible as typical event data.
fn event(index: u64, size: usize) -> Bytes {
    const WORDS: [&str; 8] = ["checkout", "product", "search", "basket", "account", "review", "shipping", "payment"];
    let mut text = format!(
        "{{\"id\":{index},\"user\":\"user-{}\",\"path\":\"/{}/{}\",\"ts\":{},\"note\":\"",
        index.wrapping_mul(2_654_435_761) % 100_000,
        WORDS[(index % 8) as usize],
        index % 977,
        1_700_000_000_000 + index * 3
    );
    let mut word = index;
    while text.len() + 2 < size {
        text.push_str(WORDS[(word % 8) as usize]);
        text.push(' ');
        word = word.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) >> 7;
    }
    text.truncate(size.saturating_sub(2));
    text.push_str("\"}");
    Bytes::from(text)
}

/// When each record is due at a target rate: record `i` at
/// `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: Instant,
    records_per_sec: Option<f64>,
}

impl Pacer {
    pub fn new(start: Instant, records_per_sec: Option<f64>) -> Pacer {
        Pacer { start, records_per_sec: records_per_sec.filter(|rate| *rate > 0.0) }
    }

    /// When record `index` is due; `None` when there is no target rate.
    pub fn due(&self, index: u64) -> Option<Instant> {
        self.records_per_sec.map(|rate| self.start + Duration::from_secs_f64(index as f64 / rate))
    }
}

struct Progress {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    latencies: Vec<Arc<Mutex<LatencyRecorder>>>,
}

impl Progress {
    fn merged(&self) -> LatencyRecorder {
        let mut merged = LatencyRecorder::default();
        for recorder in &self.latencies {
            merged.merge(&recorder.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        }
        merged
    }
}

pub async fn run(args: ProduceArgs, bootstrap: &str) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(args.records >= 1, "--records must be at least 1");
    let linger = Duration::from_millis(args.linger);
    let setup = Setup::prepare(bootstrap, &args.topic).await?.with_producer(
        args.acks,
        args.record_size,
        args.batch_size,
        linger,
        args.producers,
    );
    let config = ProducerConfig {
        acks: args.acks,
        batch_size: args.batch_size,
        buffer_memory: args.buffer_memory,
        max_request_bytes: args.max_request_bytes,
        linger,
        compression: args.compression,
        enable_idempotence: args.idempotence,
        max_in_flight_per_partition: args.in_flight_per_partition,
        ..ProducerConfig::default()
    };
    let value = Bytes::from(vec![b'x'; args.record_size]);
    let progress = Arc::new(Progress {
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: (0..args.producers).map(|_| Arc::default()).collect(),
    });

    warm_up(bootstrap, &config, &setup.topic_partitions, &value).await?;
    let start = Instant::now();
    let per_producer_rate = (args.throughput > 0).then(|| args.throughput as f64 / args.producers as f64);
    let mut tasks = Vec::new();
    for producer_index in 0..args.producers {
        let records = args.records / args.producers as u64
            + u64::from((producer_index as u64) < args.records % args.producers as u64);
        let cluster = Cluster::connect(bootstrap).await?;
        let producer = Producer::new(cluster, config.clone());
        let pacer = Pacer::new(start, per_producer_rate);
        let recorder = Arc::clone(&progress.latencies[producer_index]);
        let progress = Arc::clone(&progress);
        let topics: Vec<Arc<str>> = args.topic.names().iter().map(|name| Arc::from(name.as_str())).collect();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            run_producer(
                producer,
                topics,
                Values { fixed: value, payload: args.payload },
                records,
                pacer,
                recorder,
                progress,
            )
            .await
        }));
    }
    let bar = crate::progress::Progress::new(Some(args.records), "records acked");
    let reporter = tokio::spawn(report_progress(Arc::clone(&progress), bar.clone(), args.record_size, start));
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    reporter.abort();
    bar.finish();

    let latencies = progress.merged();
    let acknowledged = progress.acknowledged.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    report(&args, &setup, acknowledged, failed, elapsed, &latencies)
}

fn report(
    args: &ProduceArgs,
    setup: &Setup,
    acknowledged: u64,
    failed: u64,
    elapsed: Duration,
    latencies: &LatencyRecorder,
) -> anyhow::Result<()> {
    let (records_per_sec, mb_per_sec) = rates(acknowledged, acknowledged * args.record_size as u64, elapsed);
    if args.json {
        let result = json!({
            "benchmark": "produce",
            "records": acknowledged,
            "failed": failed,
            "elapsed_sec": elapsed.as_secs_f64(),
            "records_per_sec": records_per_sec,
            "mb_per_sec": mb_per_sec,
            "target_records_per_sec": (args.throughput > 0).then_some(args.throughput),
            "transport": "grpc",
            "setup": setup.to_json(),
        });
        print_json_with_latency(result, latencies);
    } else {
        outln!("setup: {}", setup.describe());
        outln!(
            "{acknowledged} records sent in {:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s{}",
            elapsed.as_secs_f64(),
            if failed > 0 { format!(", {failed} FAILED") } else { String::new() }
        );
        outln!("send-to-ack latency: {}", latencies.summary());
    }
    anyhow::ensure!(failed == 0, "{failed} records failed");
    Ok(())
}

/// Before timing: one acknowledged record per partition, so the figures
/// are the steady state's, not a new topic's first moments (followers
/// starting to fetch it, the producer learning its leaders).
async fn warm_up(
    bootstrap: &str,
    config: &ProducerConfig,
    topics: &[(String, u32)],
    value: &Bytes,
) -> anyhow::Result<()> {
    let producer = Producer::new(Cluster::connect(bootstrap).await?, config.clone());
    let mut deliveries = Vec::new();
    for (topic, partitions) in topics {
        for partition in 0..*partitions {
            let record = ProducerRecord::new(topic.as_str(), value.clone()).partition(partition);
            deliveries.push(producer.send(record).await?);
        }
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    producer.close().await;
    Ok(())
}

/// Sends handed to the collector at once: one channel message per chunk,
/// not per record. With a target rate the chunk goes before every wait.
const CHUNK: usize = 256;
/// How often the collector publishes what it measured (progress line).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

async fn run_producer(
    producer: Producer,
    topics: Vec<Arc<str>>,
    values: Values,
    records: u64,
    pacer: Pacer,
    recorder: Arc<Mutex<LatencyRecorder>>,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    type Sent = (DeliveryFuture, std::time::Instant);
    let (deliveries, mut pending) = tokio::sync::mpsc::channel::<Vec<Sent>>(256);
    let collector = tokio::spawn(async move {
        let mut first_error = None;
        // Measured here, published to `recorder` and `progress` now and
        // then, so the shared ones are not touched per record.
        let mut local = LatencyRecorder::default();
        let (mut acknowledged, mut published_at) = (0u64, Instant::now());
        let publish = |local: &mut LatencyRecorder, acknowledged: &mut u64| {
            recorder.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).merge(local);
            *local = LatencyRecorder::default();
            progress.acknowledged.fetch_add(std::mem::take(acknowledged), Ordering::Relaxed);
        };
        while let Some(chunk) = pending.recv().await {
            for (mut delivery, sent_at) in chunk {
                match (&mut delivery).await {
                    Ok(_) => {
                        // The producer stamps each batch's answer as it
                        // arrives: how late we look does not count.
                        let acked_at = delivery.completed_at().unwrap_or_else(std::time::Instant::now);
                        local.record(acked_at.saturating_duration_since(sent_at));
                        acknowledged += 1;
                    }
                    Err(error) => {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(error);
                    }
                }
            }
            if published_at.elapsed() >= PUBLISH_EVERY {
                publish(&mut local, &mut acknowledged);
                published_at = Instant::now();
            }
        }
        publish(&mut local, &mut acknowledged);
        first_error
    });
    let mut chunk = Vec::with_capacity(CHUNK);
    for index in 0..records {
        let sent_at = match pacer.due(index) {
            Some(due) => {
                if !chunk.is_empty() && deliveries.send(std::mem::take(&mut chunk)).await.is_err() {
                    break;
                }
                tokio::time::sleep_until(due).await;
                due.into_std()
            }
            None => std::time::Instant::now(),
        };
        let topic = &topics[index as usize % topics.len()];
        let record = match values.payload {
            Payload::X => ProducerRecord::new(Arc::clone(topic), values.fixed.clone()),
            Payload::Events => ProducerRecord::new(Arc::clone(topic), event(index, values.fixed.len())),
        };
        chunk.push((producer.send(record).await?, sent_at));
        if chunk.len() >= CHUNK
            && deliveries.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).await.is_err()
        {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = deliveries.send(chunk).await;
    }
    producer.close().await;
    drop(deliveries);
    if let Some(error) = collector.await? {
        tracing::warn!(%error, "some records failed");
    }
    Ok(())
}

/// Keeps the progress bar current (it draws only on a terminal).
async fn report_progress(progress: Arc<Progress>, bar: crate::progress::Progress, record_bytes: usize, start: Instant) {
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let acknowledged = progress.acknowledged.load(Ordering::Relaxed);
        let (_, mb_per_sec) = rates(acknowledged, acknowledged * record_bytes as u64, start.elapsed());
        let p99 = progress.merged().quantile_ms(0.99);
        bar.set(acknowledged);
        bar.note(format!("{mb_per_sec:.1} MB/s, p99 {p99:.2} ms"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_spreads_records_evenly_over_time() {
        let start = Instant::now();
        let pacer = Pacer::new(start, Some(1000.0));
        assert_eq!(pacer.due(0), Some(start));
        assert_eq!(pacer.due(500), Some(start + Duration::from_millis(500)));
        assert_eq!(pacer.due(2000), Some(start + Duration::from_secs(2)));
        assert_eq!(Pacer::new(start, None).due(10), None);
        assert_eq!(Pacer::new(start, Some(0.0)).due(10), None, "a zero rate means no pacing");
    }
}
