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

mod accumulator;
mod identity;
mod sender;
mod verdict;

use accumulator::*;
use identity::*;
use sender::*;
use verdict::*;

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
