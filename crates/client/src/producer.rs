//! The batching producer.
//!
//! `send` puts a record into its partition's open batch (a `BatchBuilder`,
//! so the record is encoded once, straight into the batch's buffer) and
//! returns a future of where it landed. A background sender task seals a
//! batch when it reaches `batch_size` or its `linger` expires, and sends
//! each partition's sealed batches, several batches per request, up to
//! five requests in flight per partition with idempotence and one without
//! (so order within a partition holds), many partitions at once (up to
//! `max_in_flight` requests).
//!
//! Idempotence (on by default with acks=all): the first `send` waits for
//! a producer id (`InitProducerId`); each batch is stamped when sealed with
//! the id, epoch and the partition's next sequence. A retry carries the
//! same bytes, so the leader answers it with the offsets it got the first
//! time. A request that overtook an earlier one of its partition (they
//! travel on separate HTTP/2 streams) is refused as out of order and sent
//! again as soon as the earlier one completes. A batch that fails for good,
//! or a refusal that says the leader does not know the sequence, leaves a
//! gap: the sender waits until nothing is in flight, takes a new identity
//! (new id, or the key's next epoch) and renumbers every unsent batch
//! (`restamp_producer`), as Kafka's KIP-360 epoch bump. Unlike Kafka's
//! producer, a batch refused as of an unknown producer (the leader forgot
//! it) after an earlier attempt went unanswered is not renumbered (it may
//! be in the log already): it fails, its outcome unknown, and nothing is
//! ever written twice. An
//! `INVALID_PRODUCER_EPOCH` means another producer took over the key: every
//! later send fails with it. Partitions
//! ready at the same moment and led by the same broker share one
//! `ProduceMany` request (up to `max_request_bytes` in all), so writing to
//! many partitions costs few requests, as in Kafka; a partition that
//! already has half a request's worth sealed when its request completes
//! sends it at once from the same task. Retriable errors
//! (leader moved, not enough replicas, broker unreachable) are retried
//! with backoff until `delivery_timeout`, each partition on its own.
//!
//! Memory is bounded: each record takes permits worth its size from a
//! `buffer_memory` semaphore until its batch completes, so a producer that
//! outruns the broker waits in `send` instead of growing without bound.
//!
//! Partitions: an explicit one, else murmur2 of the key (as Kafka), else a
//! sticky partition that changes whenever its batch is sealed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_proto::v1::records_client::RecordsClient;
use brook_proto::v1::{InitProducerIdRequest, PartitionBatches, ProduceManyRequest, ProduceRequest};
use brook_record::{
    restamp_producer, sequence_after, BatchBuilder, Compression, ErrorCode, Header, NewRecord, Offset, HEADER_BYTES,
};
use bytes::Bytes;
use tokio::sync::{watch, Notify, Semaphore};

use crate::completion::{Completer, DeliveryFuture};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Cluster, MAX_MESSAGE_BYTES};
use crate::error::ClientError;
use crate::partitioner::partition_for_key;
use crate::record::ProducerRecord;
use crate::records_call;

/// How many acknowledgements a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Do not wait: the record counts as sent once its request leaves.
    None,
    /// The leader appended it.
    Leader,
    /// Every in-sync replica has it.
    #[default]
    All,
}

impl Acks {
    fn wire(self) -> i32 {
        match self {
            Acks::None => brook_proto::v1::Acks::None as i32,
            Acks::Leader => brook_proto::v1::Acks::Leader as i32,
            Acks::All => brook_proto::v1::Acks::All as i32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// Seal a partition's batch at this size. Default 16 KiB.
    pub batch_size: usize,
    /// Seal a batch this long after its first record. Default 5 ms.
    pub linger: Duration,
    /// Bytes of records buffered before `send` waits. Default 32 MiB.
    pub buffer_memory: usize,
    /// The most bytes of batches one produce request carries (and so the
    /// largest record). Default 1 MiB, as Kafka's `max.request.size`.
    pub max_request_bytes: usize,
    /// Produce requests in flight at once, over all partitions (at most one
    /// per partition). Default 64.
    pub max_in_flight: usize,
    /// One attempt's limit. Default 30 s.
    pub request_timeout: Duration,
    /// Wait between retries. Default 100 ms.
    pub retry_backoff: Duration,
    /// Give up on a batch this long after it was created. Default 120 s.
    pub delivery_timeout: Duration,
    /// How long `send` may wait for a topic's metadata while no broker
    /// answers. Default 60 s, as Kafka's `max.block.ms`.
    pub max_block: Duration,
    /// How batches are compressed (Kafka's `compression.type`): none (the
    /// default), gzip, snappy, lz4 or zstd. Batches are compressed when
    /// sealed; the broker stores them as sent.
    pub compression: Compression,
    /// Idempotence (Kafka's `enable.idempotence`, on by default as since
    /// Kafka 3.0): the producer takes a producer id and numbers each
    /// partition's batches, and the leader appends each batch once however
    /// often it is retried, in order. Applies with `acks: All` only: with
    /// acks=0 or 1 it is off (as Kafka turns it off when acks is not all).
    pub enable_idempotence: bool,
    /// A name for this producer that outlives the process (Kafka's
    /// `transactional.id` plays this part): a producer started again under
    /// the same key gets the same producer id at the next epoch, and the
    /// batches of the one before it are refused from then on. `None`: a
    /// fresh producer id.
    pub producer_key: Option<String>,
    /// Requests in flight per partition (Kafka's
    /// `max.in.flight.requests.per.connection`). `None`: 5 with idempotence
    /// (order holds across retries: the leader refuses a batch that skips
    /// one), 1 without (so order holds there too, where Kafka's default of
    /// 5 may reorder on a retry). At most 5 with idempotence (the leader
    /// remembers a producer's last five appends); without, above 1 a retry
    /// may reorder, as in Kafka.
    pub max_in_flight_per_partition: Option<usize>,
}

/// The most requests in flight per partition with idempotence on.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_size: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory: 32 << 20,
            max_request_bytes: 1 << 20,
            max_in_flight: 64,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
            max_block: Duration::from_secs(60),
            compression: Compression::None,
            enable_idempotence: true,
            producer_key: None,
            max_in_flight_per_partition: None,
        }
    }
}

impl ProducerConfig {
    /// Whether batches carry a producer id and sequences: asked for, and
    /// acks=all.
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks == Acks::All
    }

    fn in_flight_per_partition(&self) -> usize {
        let limit = match (self.idempotent(), self.max_in_flight_per_partition) {
            (true, asked) => asked.unwrap_or(MAX_IDEMPOTENT_IN_FLIGHT).min(MAX_IDEMPOTENT_IN_FLIGHT),
            (false, asked) => asked.unwrap_or(1),
        };
        limit.max(1)
    }
}

/// The producer id and epoch batches are stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    producer_id: i64,
    epoch: i16,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    completion: Completer,
    permits: usize,
}

#[derive(Debug)]
struct SealedBatch {
    bytes: Bytes,
    /// The partition's count of sealed batches when this one was sealed:
    /// its place in the partition's order.
    number: u64,
    /// With idempotence: the base sequence it is stamped with.
    sequence: Option<i32>,
    records: u64,
    created: Instant,
    completion: Completer,
    permits: usize,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    /// Sealed batches not sent, in order (`number`).
    ready: VecDeque<SealedBatch>,
    /// Requests in flight.
    in_flight: usize,
    /// Batches sealed so far.
    sealed: u64,
    /// With idempotence: the sequence the next sealed batch starts at.
    next_sequence: i32,
    /// Numbers of the batches sealed and not yet completed.
    unresolved: std::collections::BTreeSet<u64>,
}

impl PartitionQueue {
    fn seal(&mut self, compression: Compression, identity: Option<Identity>) {
        if let Some(open) = self.open.take() {
            let records = open.builder.record_count() as u64;
            let (builder, sequence) = match identity {
                Some(identity) => {
                    let sequence = self.next_sequence;
                    self.next_sequence = sequence_after(sequence, records as i64);
                    (open.builder.with_producer(identity.producer_id, identity.epoch, sequence), Some(sequence))
                }
                None => (open.builder, None),
            };
            // The codecs write into memory: they fail only on inputs past
            // 4 GiB, far beyond a batch.
            let bytes = builder.finish_compressed(compression).expect("compressing a batch in memory");
            let number = self.sealed;
            self.sealed += 1;
            self.unresolved.insert(number);
            self.ready.push_back(SealedBatch {
                bytes,
                number,
                sequence,
                records,
                created: open.created,
                completion: open.completion,
                permits: open.permits,
            });
        }
    }
}

/// One topic's queues, indexed by partition.
#[derive(Debug)]
struct TopicQueues {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
    /// Where records without key or partition go until their batch seals.
    sticky: u32,
}

#[derive(Debug, Default)]
struct Accumulator {
    topics: HashMap<Arc<str>, TopicQueues>,
    flush_requested: bool,
    /// With idempotence: the producer id and epoch, once known.
    identity: Option<Identity>,
    /// A batch failed for good, or the leader lost this producer's
    /// sequence: take a new identity (new id, or next epoch under the
    /// key) and renumber every unsent batch, once no request is in flight.
    reset_identity: bool,
    /// The broker refused this producer's epoch: another producer took
    /// over its key. Every later batch fails with this.
    fenced: Option<ClientError>,
    /// xorshift state for picking sticky partitions.
    random: u64,
    /// When the sender looks again by itself (the earliest linger deadline
    /// it saw), `None` if only a wake-up brings it back: `send` wakes it
    /// only when it would otherwise look too late (see `enqueue`).
    sender_deadline: Option<Instant>,
}

impl Accumulator {
    fn next_random(&mut self) -> u64 {
        let mut x = self.random.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }

    /// The topic's queues, created with `partitions` partitions on first use.
    fn topic(&mut self, name: &Arc<str>, partitions: u32) -> &mut TopicQueues {
        let sticky = (self.next_random() % u64::from(partitions.max(1))) as u32;
        self.topics.entry(Arc::clone(name)).or_insert_with(|| TopicQueues {
            name: Arc::clone(name),
            partitions: (0..partitions.max(1)).map(|_| PartitionQueue::default()).collect(),
            sticky,
        })
    }
}

impl Shared {
    fn lock_accumulator(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.accumulator.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    accumulator: Mutex<Accumulator>,
    wake: Notify,
    memory: Semaphore,
    in_flight: Arc<Semaphore>,
    /// Batches created and not yet completed.
    outstanding: watch::Sender<u64>,
    /// Bumped whenever a request completes: a retry that must follow an
    /// earlier request of its partition waits on it.
    completions: watch::Sender<u64>,
    closed: AtomicBool,
    /// Set once the producer id is known (idempotence).
    identity_known: AtomicBool,
    /// Held while a producer id is asked for, so only one request is made.
    identity_lock: tokio::sync::Mutex<()>,
}

/// The batching producer. See the module docs.
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

impl Producer {
    pub fn new(cluster: Arc<Cluster>, config: ProducerConfig) -> Producer {
        let memory_permits = config.buffer_memory.min(Semaphore::MAX_PERMITS);
        let seed = now_ms() as u64 ^ u64::from(std::process::id()) << 32;
        let shared = Arc::new(Shared {
            cluster,
            memory: Semaphore::new(memory_permits),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            accumulator: Mutex::new(Accumulator { random: seed, ..Accumulator::default() }),
            wake: Notify::new(),
            outstanding: watch::channel(0).0,
            completions: watch::channel(0).0,
            closed: AtomicBool::new(false),
            identity_known: AtomicBool::new(false),
            identity_lock: tokio::sync::Mutex::new(()),
        });
        let sender = tokio::spawn(run_sender(Arc::clone(&shared)));
        Producer { shared, sender: Mutex::new(Some(sender)) }
    }

    /// Connects to `bootstrap` and starts a producer.
    pub async fn connect(bootstrap: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        Ok(Producer::new(Cluster::connect(bootstrap).await?, config))
    }

    /// Adds `record` to its partition's batch. Waits only when the buffer
    /// is full (backpressure); the returned future resolves once the record
    /// is acknowledged at the configured level.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if shared.config.idempotent() && !shared.identity_known.load(Ordering::Acquire) {
            ensure_identity(shared).await?;
        }
        if let Some(fenced) = &shared.lock_accumulator().fenced {
            return Err(fenced.clone());
        }
        let size = record.buffered_bytes();
        let limit = shared.config.max_request_bytes.min(shared.config.buffer_memory);
        if size + HEADER_BYTES > limit {
            let setting = if limit == shared.config.buffer_memory { "buffer_memory" } else { "max_request_bytes" };
            return Err(ClientError::RecordTooLarge { size, limit, setting });
        }
        // Backpressure: the record's bytes come out of `buffer_memory`. When
        // there is room (the common case) no future is built and polled.
        match shared.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                shared.memory.acquire_many(size as u32).await.map_err(|_| ClientError::Closed)?.forget()
            }
        }
        let headers: Vec<Header<'_>> =
            record.headers.iter().map(|(key, value)| Header { key, value: value.as_deref() }).collect();
        let new_record = NewRecord {
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
        };
        // A topic seen before costs one lookup under one lock; a new one
        // first waits (unlocked) for its partition count.
        let mut learnt: Option<u32> = None;
        let (delivery, wake) = loop {
            let placed = enqueue(shared, &mut shared.lock_accumulator(), &record, &new_record, size, learnt);
            match placed {
                Some(Ok(placed)) => break placed,
                Some(Err(error)) => {
                    shared.memory.add_permits(size);
                    return Err(error);
                }
                None => match self.partition_count(&record.topic).await {
                    Ok(partitions) => learnt = Some(partitions),
                    Err(error) => {
                        shared.memory.add_permits(size);
                        return Err(error);
                    }
                },
            }
        };
        if wake {
            shared.wake.notify_one();
        }
        Ok(delivery)
    }

    /// The topic's partition count, waiting up to `max_block` while no
    /// broker answers (one restarting, say).
    async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let config = &self.shared.config;
        let give_up_at = Instant::now() + config.max_block;
        loop {
            match self.shared.cluster.partition_count(topic).await {
                Err(error) if error.is_retriable() && Instant::now() + config.retry_backoff < give_up_at => {
                    tracing::debug!(topic, %error, "no metadata yet; retrying");
                    tokio::time::sleep(config.retry_backoff).await;
                }
                result => return result,
            }
        }
    }

    /// Sends every buffered record now and waits until all are completed.
    pub async fn flush(&self) {
        self.shared.lock_accumulator().flush_requested = true;
        self.shared.wake.notify_one();
        let mut outstanding = self.shared.outstanding.subscribe();
        let _ = outstanding.wait_for(|&count| count == 0).await;
    }

    /// Flushes, then stops the sender task. Later sends fail with `Closed`.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let sender = self.sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(sender) = sender {
            if let Err(error) = sender.await {
                tracing::error!(%error, "producer sender task failed");
            }
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender task sends what is buffered, then stops.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// Appends `new_record` to its partition's open batch (sealing what is
/// full) and returns its delivery future and whether the sender should
/// look now. `None`: the topic is new here and its partition count
/// (`learnt`) is needed first.
fn enqueue(
    shared: &Shared,
    accumulator: &mut Accumulator,
    record: &ProducerRecord,
    new_record: &NewRecord<'_>,
    size: usize,
    learnt: Option<u32>,
) -> Option<Result<(DeliveryFuture, bool), ClientError>> {
    let random = accumulator.next_random();
    let identity = accumulator.identity;
    let topic = match learnt {
        Some(partitions) => accumulator.topic(&record.topic, partitions),
        None => accumulator.topics.get_mut(&*record.topic)?,
    };
    let partitions = topic.partitions.len() as u32;
    if let Some(partition) = record.partition.filter(|partition| *partition >= partitions) {
        return Some(Err(ClientError::Broker {
            code: tonic::Code::NotFound,
            code_name: Some(ErrorCode::UnknownTopicOrPartition.name().into()),
            message: format!(
                "topic '{}' has {partitions} partitions; partition {partition} does not exist",
                record.topic
            ),
        }));
    }
    let keyless = record.partition.is_none() && record.key.is_none();
    let partition = match (record.partition, &record.key) {
        (Some(partition), _) => partition,
        (None, Some(key)) => partition_for_key(key, partitions),
        (None, None) => topic.sticky,
    };
    let queue = &mut topic.partitions[partition as usize];
    let mut sealed = false;
    if let Some(open) = &queue.open {
        if open.builder.size_bytes() + open.builder.size_of(new_record) > shared.config.batch_size {
            queue.seal(shared.config.compression, identity);
            sealed = true;
        }
    }
    let created = queue.open.is_none();
    if created {
        let capacity = shared.config.batch_size.max(size + HEADER_BYTES);
        queue.open = Some(OpenBatch {
            builder: BatchBuilder::new(capacity),
            created: Instant::now(),
            completion: Completer::default(),
            permits: 0,
        });
        shared.outstanding.send_modify(|count| *count += 1);
    }
    let in_flight_full = queue.in_flight >= shared.config.in_flight_per_partition();
    let open = queue.open.as_mut().expect("an open batch was just ensured");
    open.builder.push(new_record);
    open.permits += size;
    let delivery = open.completion.future(partition, open.builder.record_count() as u64 - 1);
    if open.builder.size_bytes() >= shared.config.batch_size {
        queue.seal(shared.config.compression, identity);
        sealed = true;
    }
    // Sticky partitioning: once the sticky partition's batch is
    // sealed, keyless records move on to another partition.
    if sealed && keyless && partitions > 1 && topic.sticky == partition {
        let step = 1 + (random % u64::from(partitions - 1)) as u32;
        topic.sticky = (partition + step) % partitions;
    }
    // The sender needs waking only if it would otherwise look too late: a
    // sealed batch whose partition may send now (one whose requests are
    // all in flight is sent when one of them completes), or a new batch
    // while the sender waits for no deadline (every batch lingers as long,
    // so a new one's deadline is never before one the sender already
    // waits for). A wake-up is a thread woken on another core.
    let mut wake = sealed && !in_flight_full;
    if created && accumulator.sender_deadline.is_none() {
        accumulator.sender_deadline = Some(Instant::now() + shared.config.linger);
        wake = true;
    }
    Some(Ok((delivery, wake)))
}

/// The sender task: seals lingering batches, dispatches ready ones, sleeps
/// until the next linger deadline or a wake-up.
async fn run_sender(shared: Arc<Shared>) {
    loop {
        let closing = shared.closed.load(Ordering::Acquire);
        let reset_due = shared.lock_accumulator().reset_identity;
        if reset_due && shared.in_flight.available_permits() == shared.config.max_in_flight.max(1) {
            reset_identity(&shared).await;
        }
        let (requests, next_deadline) = collect_ready(&shared, closing);
        for group in group_by_leader(&shared, requests) {
            let Ok(permit) = Arc::clone(&shared.in_flight).acquire_owned().await else { return };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                match group {
                    Send::One((topic, partition, batches)) => {
                        send_batches(&shared, topic, partition, batches, None).await;
                    }
                    Send::Many(address, requests) => send_many(&shared, &address, requests).await,
                }
                drop(permit);
                // A new identity waits for every request to finish: the
                // sender looks again once this one's permit is back.
                if shared.lock_accumulator().reset_identity {
                    shared.wake.notify_one();
                }
            });
        }
        if closing && *shared.outstanding.borrow() == 0 {
            return;
        }
        match next_deadline {
            Some(deadline) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

type Request = (Arc<str>, u32, Vec<SealedBatch>);

/// What one request carries: one partition's batches (`Produce`), or
/// several partitions' led by the broker at this address (`ProduceMany`).
enum Send {
    One(Request),
    Many(String, Vec<Request>),
}

fn request_bytes((_, _, batches): &Request) -> usize {
    batches.iter().map(|batch| batch.bytes.len()).sum()
}

/// Groups the partitions ready now by their cached leader, in requests of
/// at most `max_request_bytes` (a partition whose leader is unknown or
/// possibly stale goes alone: its own send asks the brokers, so this
/// never waits on the network). acks=0 keeps one request per partition.
fn group_by_leader(shared: &Shared, requests: Vec<Request>) -> Vec<Send> {
    if requests.len() < 2 || shared.config.acks == Acks::None {
        return requests.into_iter().map(Send::One).collect();
    }
    let mut sends = Vec::new();
    let mut by_leader: std::collections::BTreeMap<String, Vec<Request>> = std::collections::BTreeMap::new();
    for request in requests {
        match shared.cluster.cached_leader_address(&request.0, request.1) {
            Some(address) => by_leader.entry(address).or_default().push(request),
            None => sends.push(Send::One(request)),
        }
    }
    for (address, requests) in by_leader {
        let mut chunk: Vec<Request> = Vec::new();
        let mut bytes = 0;
        for request in requests {
            let size = request_bytes(&request);
            if !chunk.is_empty() && bytes + size > shared.config.max_request_bytes {
                sends.push(chunk_send(&address, std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += size;
            chunk.push(request);
        }
        if !chunk.is_empty() {
            sends.push(chunk_send(&address, chunk));
        }
    }
    sends
}

fn chunk_send(address: &str, mut chunk: Vec<Request>) -> Send {
    match chunk.len() {
        1 => Send::One(chunk.remove(0)),
        _ => Send::Many(address.to_string(), chunk),
    }
}

fn collect_ready(shared: &Shared, closing: bool) -> (Vec<Request>, Option<Instant>) {
    let now = Instant::now();
    let mut accumulator = shared.lock_accumulator();
    let seal_all = closing || std::mem::take(&mut accumulator.flush_requested);
    let (identity, paused) = (accumulator.identity, accumulator.reset_identity);
    let per_partition = shared.config.in_flight_per_partition();
    let mut requests = Vec::new();
    let mut next_deadline: Option<Instant> = None;
    let queues = accumulator.topics.values_mut().flat_map(|topic| {
        topic.partitions.iter_mut().enumerate().map(|(partition, queue)| (&topic.name, partition as u32, queue))
    });
    for (topic, partition, queue) in queues {
        if let Some(open) = &queue.open {
            let deadline = open.created + shared.config.linger;
            if seal_all || deadline <= now {
                queue.seal(shared.config.compression, identity);
            } else {
                next_deadline = Some(next_deadline.map_or(deadline, |earliest| earliest.min(deadline)));
            }
        }
        if paused || queue.in_flight >= per_partition || queue.ready.is_empty() {
            continue;
        }
        let batches = take_ready(queue, shared.config.max_request_bytes);
        requests.push((Arc::clone(topic), partition, batches));
    }
    accumulator.sender_deadline = next_deadline;
    (requests, next_deadline)
}

/// The partition's oldest ready batches, up to `max_bytes` (at least one),
/// for its next request; marks the partition in flight.
fn take_ready(queue: &mut PartitionQueue, max_bytes: usize) -> Vec<SealedBatch> {
    let mut bytes = 0;
    let mut batches = Vec::new();
    while let Some(batch) = queue.ready.front() {
        if !batches.is_empty() && bytes + batch.bytes.len() > max_bytes {
            break;
        }
        bytes += batch.bytes.len();
        batches.extend(queue.ready.pop_front());
    }
    queue.in_flight += 1;
    batches
}

/// Sends several partitions' batches in one `ProduceMany` request to the
/// broker at `address`; completes the partitions it appended and hands
/// each refused or unanswered one to `send_batches`, which retries it on
/// its own (each partition still has one request in flight at a time).
async fn send_many(shared: &Shared, address: &str, requests: Vec<Request>) {
    let config = &shared.config;
    let request = ProduceManyRequest {
        acks: config.acks.wire(),
        timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        partitions: requests
            .iter()
            .map(|(topic, partition, batches)| PartitionBatches {
                topic: topic.to_string(),
                partition: *partition,
                batches: batches.iter().map(|batch| batch.bytes.clone()).collect(),
            })
            .collect(),
    };
    let attempt = async {
        let channel = shared.cluster.channel(address)?;
        records_call::produce_many(channel, &request, MAX_MESSAGE_BYTES).await.map_err(ClientError::from_status)
    };
    let answered = match tokio::time::timeout(config.request_timeout, attempt).await {
        Ok(Ok(response)) => {
            let matches =
                response.partitions.len() == requests.len()
                    && response.partitions.iter().zip(&requests).all(|(result, (topic, partition, _))| {
                        result.topic == **topic && result.partition == *partition
                    });
            if matches {
                Ok(response.partitions)
            } else {
                Err(None)
            }
        }
        // A broker without `ProduceMany`: each partition on its own, now.
        Ok(Err(error)) if matches!(&error, ClientError::Broker { code: tonic::Code::Unimplemented, .. }) => Err(None),
        Ok(Err(error)) => Err(Some(error)),
        Err(_) => Err(Some(timed_out(address, config.request_timeout))),
    };
    let mut retries = Vec::new();
    match answered {
        Ok(results) => {
            for (result, (topic, partition, batches)) in results.into_iter().zip(requests) {
                if result.error_name.is_empty() {
                    complete_partition(shared, &topic, partition, &batches, Ok(result.base_offset), false);
                    continue;
                }
                let error = ClientError::Broker {
                    code: tonic::Code::from_i32(result.status_code),
                    code_name: Some(result.error_name),
                    message: result.error_message,
                };
                // Judged there: retried, sent again later, or failed.
                retries.push(send_batches(shared, topic, partition, batches, Some(error)));
            }
        }
        Err(error) => {
            for (topic, partition, batches) in requests {
                retries.push(send_batches(shared, topic, partition, batches, error.clone()));
            }
        }
    }
    futures::future::join_all(retries).await;
}

/// The failure of batches the leader refused as of an unknown producer
/// after an attempt that may have been appended: whether they are in the log is
/// unknown (a consumer can tell).
fn outcome_unknown(topic: &str, partition: u32, refusal: ClientError) -> ClientError {
    ClientError::Broker {
        code: tonic::Code::Aborted,
        code_name: Some(ErrorCode::UnknownProducerId.name().into()),
        message: format!(
            "{topic}-{partition}: the leader no longer knows this producer ({refusal}), and an earlier \
             attempt of these records got no answer, so they may or may not have been appended; they are \
             not sent again, which could write them twice"
        ),
    }
}

fn timed_out(to: &str, after: Duration) -> ClientError {
    ClientError::Broker {
        code: tonic::Code::DeadlineExceeded,
        code_name: Some(ErrorCode::RequestTimedOut.name().into()),
        message: format!("produce to {to} got no answer within {after:?}"),
    }
}

/// A leader that has not applied a new topic yet answers "unknown topic"
/// for a moment (metadata propagates per broker): retried, within the
/// delivery timeout, as Kafka does.
fn retriable_produce_error(error: &ClientError) -> bool {
    error.is_retriable() || error.error_code() == Some(ErrorCode::UnknownTopicOrPartition)
}

/// Sends one partition's batches in one request, retrying what can be
/// retried, then completes their records and frees their memory; while
/// the partition has half a request's worth of sealed batches by then,
/// sends them next, from this same task (no hand-off through the sender
/// for a partition that keeps it busy). With `failed`, the first attempt was made elsewhere (in
/// a `ProduceMany`) and failed so: it is judged and backed off from before
/// trying again.
async fn send_batches(
    shared: &Shared,
    topic: Arc<str>,
    partition: u32,
    batches: Vec<SealedBatch>,
    failed: Option<ClientError>,
) {
    let (mut batches, mut failed) = (batches, failed);
    loop {
        let result = match attempt_batches(shared, &topic, partition, &batches, failed.take()).await {
            Attempt::Done(result) => result,
            Attempt::SendAgain => return requeue(shared, &topic, partition, batches),
        };
        match complete_partition(shared, &topic, partition, &batches, result, true) {
            Some(next) => batches = next,
            None => return,
        }
    }
}

/// How one partition's request ended.
enum Attempt {
    /// The offset of its first record, or why it failed for good.
    Done(Result<i64, ClientError>),
    /// Not appended, and it cannot be under this producer id and epoch
    /// (the leader lost the producer's sequence, or an earlier batch
    /// failed for good): sent again, renumbered, after a new identity.
    SendAgain,
}

/// What to do after a refused attempt.
enum Verdict {
    Retry,
    /// Refused as out of order with nothing earlier in flight: the earlier
    /// request may have landed just after this one was refused; once,
    /// straight away, before concluding the leader lost the sequence.
    RetryNow,
    /// An earlier request of the partition is in flight and was not
    /// appended yet: retry as soon as it completes.
    RetryAfterEarlier,
    SendAgain,
    Fail,
    /// Refused, after an earlier attempt that may have been appended: its
    /// outcome cannot be known, so it fails (see `judge`).
    FailUnknown,
}

/// Whether an attempt that failed so may still have been appended: it got
/// no answer, or the leader appended and then timed out waiting for the
/// replicas. A named refusal (NOT_LEADER, out of order ...) or a
/// connection never made appended nothing.
fn may_have_appended(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code_name: Some(_), .. } => {
            matches!(error.error_code(), Some(ErrorCode::RequestTimedOut | ErrorCode::NotEnoughReplicasAfterAppend))
        }
        ClientError::Broker { code_name: None, .. } | ClientError::Timeout { .. } => true,
        _ => false,
    }
}

/// The pause before the `attempt`-th retry after a leader moved or went
/// silent: none for the first, then doubling from 5 ms up to `cap`.
fn redirect_backoff(attempt: u32, cap: Duration) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(5) * 2u32.saturating_pow(n.saturating_sub(2).min(16))).min(cap),
    }
}

fn judge(
    shared: &Shared,
    topic: &str,
    partition: u32,
    batches: &[SealedBatch],
    error: &ClientError,
    retried_now: bool,
    maybe_appended: bool,
) -> Verdict {
    let idempotent = batches.first().is_some_and(|batch| batch.sequence.is_some());
    let unknown_producer = error.error_code() == Some(ErrorCode::UnknownProducerId);
    if idempotent && (unknown_producer || error.error_code() == Some(ErrorCode::OutOfOrderSequenceNumber)) {
        if earlier_in_flight(shared, topic, partition, batches) {
            return Verdict::RetryAfterEarlier;
        }
        if !retried_now {
            return Verdict::RetryNow;
        }
        // Out of order: the leader knows the producer and its log ends
        // before these sequences, so they are not in it (a leader that
        // lost them in an unclean election, say): renumbered, they are
        // written once. Unknown producer: the leader forgot the producer
        // (idle past its expiration), so if an earlier attempt went
        // unanswered the batches may be in the log already, and
        // renumbered they would be written twice. Kafka's KIP-360
        // producer bumps the epoch and sends them again; Brook fails them
        // instead, as delivered-or-not.
        return if unknown_producer && maybe_appended { Verdict::FailUnknown } else { Verdict::SendAgain };
    }
    if retriable_produce_error(error) {
        Verdict::Retry
    } else {
        Verdict::Fail
    }
}

/// Whether a batch of the partition before `batches` is in flight (sealed,
/// not completed, not back in the ready queue), while no identity reset
/// is due (then every unsent batch is renumbered anyway).
fn earlier_in_flight(shared: &Shared, topic: &str, partition: u32, batches: &[SealedBatch]) -> bool {
    let Some(first) = batches.first().map(|batch| batch.number) else { return false };
    let accumulator = shared.lock_accumulator();
    if accumulator.reset_identity {
        return false;
    }
    let Some(queue) = accumulator.topics.get(topic).and_then(|topic| topic.partitions.get(partition as usize)) else {
        return false;
    };
    queue.unresolved.range(..first).any(|number| !queue.ready.iter().any(|batch| batch.number == *number))
}

/// Puts a request's batches back in their partition's ready queue, in
/// order, to be renumbered under a new identity and sent again.
fn requeue(shared: &Shared, topic: &str, partition: u32, batches: Vec<SealedBatch>) {
    let mut accumulator = shared.lock_accumulator();
    if accumulator.fenced.is_none() {
        accumulator.reset_identity = true;
    }
    if let Some(queue) =
        accumulator.topics.get_mut(topic).and_then(|topic| topic.partitions.get_mut(partition as usize))
    {
        queue.in_flight = queue.in_flight.saturating_sub(1);
        for batch in batches {
            let at = queue.ready.iter().position(|queued| queued.number > batch.number).unwrap_or(queue.ready.len());
            queue.ready.insert(at, batch);
        }
    }
    drop(accumulator);
    tracing::info!(
        topic,
        partition,
        "batches not appended under this producer epoch; sending them again under a new one"
    );
    shared.completions.send_modify(|count| *count = count.wrapping_add(1));
    shared.wake.notify_one();
}

/// Asks a broker for a producer id and epoch (the next epoch under the
/// configured key), retrying while none can answer, up to `max_block`.
async fn init_identity(shared: &Shared) -> Result<Identity, ClientError> {
    let config = &shared.config;
    let key = config.producer_key.clone().unwrap_or_default();
    let give_up_at = Instant::now() + config.max_block;
    loop {
        let result = shared
            .cluster
            .with_any_broker(|channel| {
                let request = InitProducerIdRequest { producer_key: key.clone() };
                async move {
                    RecordsClient::new(channel)
                        .init_producer_id(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(ClientError::from_status)
                }
            })
            .await;
        match result {
            Ok(answer) => {
                let epoch = i16::try_from(answer.producer_epoch).map_err(|_| {
                    ClientError::InvalidArgument(format!(
                        "the broker answered producer epoch {}",
                        answer.producer_epoch
                    ))
                })?;
                tracing::info!(producer_id = answer.producer_id, epoch, "idempotent producer");
                return Ok(Identity { producer_id: answer.producer_id, epoch });
            }
            Err(error)
                if (error.is_retriable()
                    || matches!(&error, ClientError::Broker { code: tonic::Code::Unavailable, .. }))
                    && Instant::now() + config.retry_backoff < give_up_at =>
            {
                tracing::debug!(%error, "no producer id yet; retrying");
                tokio::time::sleep(config.retry_backoff).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The first send of an idempotent producer waits for its producer id.
async fn ensure_identity(shared: &Shared) -> Result<(), ClientError> {
    let _only_one = shared.identity_lock.lock().await;
    if shared.lock_accumulator().identity.is_some() {
        return Ok(());
    }
    let identity = init_identity(shared).await?;
    shared.lock_accumulator().identity = Some(identity);
    shared.identity_known.store(true, Ordering::Release);
    Ok(())
}

/// With no request in flight: a new identity, and every unsent batch
/// renumbered under it from sequence 0 per partition (Kafka's epoch bump
/// after a sequence gap, KIP-360). On failure, tried again on the
/// sender's next pass.
async fn reset_identity(shared: &Shared) {
    let identity = match init_identity(shared).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(%error, "could not take a new producer id; trying again");
            tokio::time::sleep(shared.config.retry_backoff).await;
            return;
        }
    };
    let mut accumulator = shared.lock_accumulator();
    accumulator.identity = Some(identity);
    accumulator.reset_identity = false;
    let mut renumbered = 0usize;
    for topic in accumulator.topics.values_mut() {
        for queue in &mut topic.partitions {
            let mut sequence = 0;
            for batch in &mut queue.ready {
                if batch.sequence.is_some() {
                    batch.bytes =
                        Bytes::from(restamp_producer(&batch.bytes, identity.producer_id, identity.epoch, sequence));
                    batch.sequence = Some(sequence);
                    sequence = sequence_after(sequence, batch.records as i64);
                    renumbered += 1;
                }
            }
            queue.next_sequence = sequence;
        }
    }
    tracing::info!(
        producer_id = identity.producer_id,
        epoch = identity.epoch,
        renumbered,
        "new producer identity; unsent batches renumbered"
    );
}

/// One partition's request, with its retries: the offset of its first
/// record, or why it failed for good.
async fn attempt_batches(
    shared: &Shared,
    topic: &Arc<str>,
    partition: u32,
    batches: &[SealedBatch],
    failed: Option<ClientError>,
) -> Attempt {
    let config = &shared.config;
    if let Some(fenced) = shared.lock_accumulator().fenced.clone() {
        return Attempt::Done(Err(fenced));
    }
    // The batches travel as separate pieces: no joining copy here.
    let pieces: Vec<Bytes> = batches.iter().map(|batch| batch.bytes.clone()).collect();
    if config.acks == Acks::None {
        // acks=0: the records count as sent once the request leaves.
        for batch in batches {
            batch.completion.complete(Ok(None));
        }
    }
    let oldest = batches.iter().map(|batch| batch.created).min().unwrap_or_else(Instant::now);
    let give_up_at = oldest + config.delivery_timeout;
    let request = ProduceRequest {
        topic: topic.to_string(),
        partition,
        acks: config.acks.wire(),
        timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        records: Bytes::new(),
        batches: pieces,
    };
    let mut maybe_appended = failed.as_ref().is_some_and(may_have_appended);
    let mut failed = failed;
    let mut retried_now = false;
    // A leader that says it no longer leads has handed over (a controlled
    // shutdown, a failover), and one that stopped answering may have: the
    // first such failure is followed at once, with fresh metadata, and the
    // next ones after 5, 10, 20 ... ms up to `retry_backoff` (the metadata
    // asked may be a moment behind), not after a full backoff each (a
    // rolling restart's pause was the 100 ms backoff; BENCHMARKS.md).
    let mut redirects = 0u32;
    let result = loop {
        if let Some(error) = failed.take() {
            let verdict = judge(shared, topic, partition, batches, &error, retried_now, maybe_appended);
            let backoff = match verdict {
                Verdict::Fail => break Err(error),
                Verdict::FailUnknown => break Err(outcome_unknown(topic, partition, error)),
                Verdict::SendAgain => return Attempt::SendAgain,
                Verdict::Retry if error.error_code() == Some(ErrorCode::NotLeader) || error.is_unreachable() => {
                    redirects += 1;
                    redirect_backoff(redirects, config.retry_backoff)
                }
                Verdict::Retry => config.retry_backoff,
                Verdict::RetryNow => {
                    retried_now = true;
                    Duration::ZERO
                }
                Verdict::RetryAfterEarlier => Duration::ZERO,
            };
            if Instant::now() + backoff >= give_up_at {
                break Err(ClientError::Timeout {
                    after_ms: oldest.elapsed().as_millis(),
                    last_error: Arc::new(error),
                });
            }
            tracing::debug!(topic = &**topic, partition, %error, "produce failed; retrying");
            if matches!(verdict, Verdict::RetryAfterEarlier) {
                // Sent before an earlier request of the partition landed:
                // again as soon as that one completes.
                let mut completions = shared.completions.subscribe();
                while earlier_in_flight(shared, topic, partition, batches) && Instant::now() < give_up_at {
                    let _ = tokio::time::timeout(config.retry_backoff, completions.changed()).await;
                }
            } else if !matches!(verdict, Verdict::RetryNow) {
                shared.cluster.invalidate(topic);
                tokio::time::sleep(backoff).await;
            }
        }
        let attempt = async {
            let channel = shared.cluster.leader(topic, partition).await?;
            // The batches go out as they are, not copied into tonic's
            // encode buffer (see `records_call`).
            records_call::produce(channel, &request, MAX_MESSAGE_BYTES).await.map_err(ClientError::from_status)
        };
        let error = match tokio::time::timeout(config.request_timeout, attempt).await {
            Ok(Ok(response)) => break Ok(response.base_offset),
            Ok(Err(error)) => error,
            Err(_) => timed_out(&format!("{topic}-{partition}"), config.request_timeout),
        };
        maybe_appended |= may_have_appended(&error);
        failed = Some(error);
    };
    if let Err(error) = &result {
        tracing::warn!(topic = &**topic, partition, %error, batches = batches.len(), "produce failed");
    }
    Attempt::Done(result)
}

/// Completes a partition's batches with the request's outcome (offsets
/// counted on from `base`) and frees their memory. With `chain`, returns
/// the partition's next ready batches if they fill at least half a
/// request (it stays in flight, for the caller to send them); otherwise
/// lets the partition send again through the sender.
fn complete_partition(
    shared: &Shared,
    topic: &str,
    partition: u32,
    batches: &[SealedBatch],
    result: Result<i64, ClientError>,
    chain: bool,
) -> Option<Vec<SealedBatch>> {
    let config = &shared.config;
    let mut base = result.as_ref().ok().and_then(|&base| u64::try_from(base).ok());
    let mut permits = 0;
    for batch in batches {
        permits += batch.permits;
        if config.acks != Acks::None {
            let outcome = match (&result, base) {
                (Ok(_), Some(offset)) => Ok(Some(Offset(offset))),
                (Ok(_), None) => Ok(None),
                (Err(error), _) => Err(error.clone()),
            };
            batch.completion.complete(outcome);
        }
        base = base.map(|offset| offset + batch.records);
    }
    shared.memory.add_permits(permits);
    let mut next = None;
    let mut accumulator = shared.lock_accumulator();
    if let Err(error) = &result {
        // An idempotent batch that failed for good leaves a gap in its
        // partition's sequence: later ones need a new identity.
        if batches.iter().any(|batch| batch.sequence.is_some()) && accumulator.fenced.is_none() {
            if error.error_code() == Some(ErrorCode::InvalidProducerEpoch) {
                accumulator.fenced = Some(error.clone());
            } else {
                accumulator.reset_identity = true;
            }
        }
    }
    let paused = accumulator.reset_identity;
    if let Some(topic) = accumulator.topics.get_mut(topic) {
        if let Some(queue) = topic.partitions.get_mut(partition as usize) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            for batch in batches {
                queue.unresolved.remove(&batch.number);
            }
            // Only a request's worth: smaller leftovers go back through the
            // sender, which may group them with other partitions'.
            let ready: usize = queue.ready.iter().map(|batch| batch.bytes.len()).sum();
            if chain && !paused && ready >= config.max_request_bytes / 2 {
                next = Some(take_ready(queue, config.max_request_bytes));
            }
        }
    }
    drop(accumulator);
    shared.completions.send_modify(|count| *count = count.wrapping_add(1));
    shared.outstanding.send_modify(|count| *count -= batches.len() as u64);
    if next.is_none() {
        shared.wake.notify_one();
    }
    next
}
