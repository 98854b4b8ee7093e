//! `brook bench produce`: K producers send N records of a fixed size, as
//! fast as possible or at a target rate. Latency runs from `send` to the
//! acknowledgement; with a target rate it runs from the moment the record
//! was *due* (coordinated-omission correction), so a stall that delays the
//! sender shows up in the percentiles instead of hiding. The end of the
//! latency is the moment the producer received the batch's answer (stamped
//! once per batch), not when this tool got round to looking. Timing starts
//! after a warm-up of one acknowledged record per partition (not counted).

use std::io::IsTerminal;
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
    /// Milliseconds a batch waits to fill.
    #[arg(long, default_value_t = 5)]
    linger: u64,
    /// Send through the broker's prototype plain-TCP produce at this
    /// address (`brook serve --raw-listen`) instead of gRPC: one broker
    /// (every partition must be led by it), `--producers 1`, no target
    /// rate; batches built as the producer builds them, but by a plain
    /// loop (no delivery futures), requests of up to 1 MiB, up to
    /// RAW_IN_FLIGHT of them unanswered. Latency is per request: from
    /// building its first record to its answer.
    #[arg(long)]
    raw: Option<std::net::SocketAddr>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
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
    let config = ProducerConfig { acks: args.acks, batch_size: args.batch_size, linger, ..ProducerConfig::default() };
    let value = Bytes::from(vec![b'x'; args.record_size]);
    let progress = Arc::new(Progress {
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: (0..args.producers).map(|_| Arc::default()).collect(),
    });

    warm_up(bootstrap, &config, &setup.topic_partitions, &value).await?;
    if let Some(address) = args.raw {
        anyhow::ensure!(args.producers == 1 && args.throughput < 0, "--raw takes one producer and no target rate");
        let start = Instant::now();
        let (acknowledged, latencies) = produce_raw(address, &setup.topic_partitions, &args, &value).await?;
        return report(&args, &setup, acknowledged, 0, start.elapsed(), &latencies, "raw");
    }
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
            run_producer(producer, topics, value, records, pacer, recorder, progress).await
        }));
    }
    let reporter = tokio::spawn(report_progress(Arc::clone(&progress), args.record_size, start));
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    reporter.abort();

    let latencies = progress.merged();
    let acknowledged = progress.acknowledged.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    report(&args, &setup, acknowledged, failed, elapsed, &latencies, "grpc")
}

fn report(
    args: &ProduceArgs,
    setup: &Setup,
    acknowledged: u64,
    failed: u64,
    elapsed: Duration,
    latencies: &LatencyRecorder,
    transport: &str,
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
            "transport": transport,
            "setup": setup.to_json(),
        });
        print_json_with_latency(result, latencies);
    } else {
        println!("setup: {}, transport={transport}", setup.describe());
        println!(
            "{acknowledged} records sent in {:.2} s: {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s{}",
            elapsed.as_secs_f64(),
            if failed > 0 { format!(", {failed} FAILED") } else { String::new() }
        );
        println!("send-to-ack latency: {}", latencies.summary());
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
    value: Bytes,
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
        let record = ProducerRecord::new(Arc::clone(topic), value.clone());
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

/// Unanswered requests the raw produce keeps on its connection.
const RAW_IN_FLIGHT: usize = 4;
/// The most batch bytes in one raw produce request (the producer's
/// default `max_request_bytes`).
const RAW_REQUEST_BYTES: usize = 1 << 20;

/// Sends `args.records` records through the prototype plain-TCP produce
/// (protocol in `brook_broker::raw`): each request fills up to 1 MiB of
/// `--batch-size` batches for the next partition in turn. Returns the
/// records acknowledged and per-request latencies (counted per record).
async fn produce_raw(
    address: std::net::SocketAddr,
    partitions: &[(String, u32)],
    args: &ProduceArgs,
    value: &Bytes,
) -> anyhow::Result<(u64, LatencyRecorder)> {
    use brook_record::{BatchBuilder, NewRecord};
    use tokio::io::AsyncReadExt;

    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let window = Arc::new(tokio::sync::Semaphore::new(RAW_IN_FLIGHT));
    type Sent = (std::time::Instant, u64, tokio::sync::OwnedSemaphorePermit);
    let (sent, mut unanswered) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let answers = tokio::spawn(async move {
        let (mut acknowledged, mut latencies) = (0u64, LatencyRecorder::default());
        while let Some((started, records, permit)) = unanswered.recv().await {
            if reader.read_u8().await? != 0 {
                let length = reader.read_u32().await?;
                let mut message = vec![0u8; length.min(64 * 1024) as usize];
                reader.read_exact(&mut message).await?;
                anyhow::bail!("raw produce refused: {}", String::from_utf8_lossy(&message));
            }
            let (_base_offset, _last_offset) = (reader.read_i64().await?, reader.read_i64().await?);
            latencies.record_n(started.elapsed(), records);
            acknowledged += records;
            drop(permit);
        }
        Ok((acknowledged, latencies))
    });
    // The `brook.v1.Acks` numbers.
    let acks = match args.acks {
        Acks::None => 1u8,
        Acks::Leader => 2,
        Acks::All => 3,
    };
    let targets: Vec<(&str, u32)> = partitions
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(move |partition| (topic.as_str(), partition)))
        .collect();
    let (mut built, mut turn) = (0u64, 0usize);
    while built < args.records {
        let permit = Arc::clone(&window).acquire_owned().await?;
        let started = std::time::Instant::now();
        let (topic, partition) = targets[turn % targets.len()];
        turn += 1;
        let (mut pieces, mut bytes, first) = (vec![Bytes::new()], 0usize, built);
        while built < args.records && (bytes == 0 || bytes + args.batch_size <= RAW_REQUEST_BYTES) {
            let timestamp_ms = now_ms();
            let mut builder = BatchBuilder::new(args.batch_size);
            while built < args.records && builder.size_bytes() < args.batch_size {
                builder.push(&NewRecord { timestamp_ms, key: None, value: Some(value), headers: &[] });
                built += 1;
            }
            let batch = builder.finish();
            bytes += batch.len();
            pieces.push(batch);
        }
        let mut header = Vec::with_capacity(16 + topic.len());
        header.extend_from_slice(&u32::try_from(1 + 2 + topic.len() + 4 + 1 + bytes)?.to_be_bytes());
        header.push(1);
        header.extend_from_slice(&u16::try_from(topic.len())?.to_be_bytes());
        header.extend_from_slice(topic.as_bytes());
        header.extend_from_slice(&partition.to_be_bytes());
        header.push(acks);
        pieces[0] = Bytes::from(header);
        sent.send((started, built - first, permit))?;
        write_all_pieces(&mut writer, &pieces).await?;
    }
    drop(sent);
    answers.await?
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

/// Writes `pieces` in order with vectored writes (no joining copy).
async fn write_all_pieces(writer: &mut tokio::net::tcp::OwnedWriteHalf, pieces: &[Bytes]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;

    let mut slices: Vec<std::io::IoSlice<'_>> = pieces.iter().map(|piece| std::io::IoSlice::new(piece)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let written = writer.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the connection took nothing"));
        }
        std::io::IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

async fn report_progress(progress: Arc<Progress>, record_bytes: usize, start: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let acknowledged = progress.acknowledged.load(Ordering::Relaxed);
        let (records_per_sec, mb_per_sec) = rates(acknowledged, acknowledged * record_bytes as u64, start.elapsed());
        let p99 = progress.merged().quantile_ms(0.99);
        let line = format!(
            "{acknowledged} records acked, {records_per_sec:.0} records/s, {mb_per_sec:.1} MB/s, p99 {p99:.2} ms so far"
        );
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
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
