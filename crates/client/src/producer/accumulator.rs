//! The record accumulator (Kafka's `RecordAccumulator`): per partition, the
//! open batch records are encoded into, and the sealed batches waiting to
//! be sent, bounded by the producer's memory.

use super::*;

#[derive(Debug)]
pub(super) struct OpenBatch {
    pub(super) builder: BatchBuilder,
    pub(super) created: Instant,
    pub(super) completion: Completer,
    pub(super) permits: usize,
}

#[derive(Debug)]
pub(super) struct SealedBatch {
    pub(super) bytes: Bytes,
    /// The partition's count of sealed batches when this one was sealed:
    /// its place in the partition's order.
    pub(super) number: u64,
    /// With idempotence: the base sequence it is stamped with.
    pub(super) sequence: Option<i32>,
    pub(super) records: u64,
    pub(super) created: Instant,
    pub(super) completion: Completer,
    pub(super) permits: usize,
}

#[derive(Debug, Default)]
pub(super) struct PartitionQueue {
    pub(super) open: Option<OpenBatch>,
    /// Sealed batches not sent, in order (`number`).
    pub(super) ready: VecDeque<SealedBatch>,
    /// Requests in flight.
    pub(super) in_flight: usize,
    /// Batches sealed so far.
    pub(super) sealed: u64,
    /// With idempotence: the sequence the next sealed batch starts at.
    pub(super) next_sequence: i32,
    /// Numbers of the batches sealed and not yet completed.
    pub(super) unresolved: std::collections::BTreeSet<u64>,
}

impl PartitionQueue {
    pub(super) fn seal(&mut self, compression: Compression, identity: Option<Identity>) {
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
pub(super) struct TopicQueues {
    pub(super) name: Arc<str>,
    pub(super) partitions: Vec<PartitionQueue>,
    /// Where records without key or partition go until their batch seals.
    pub(super) sticky: u32,
}

#[derive(Debug, Default)]
pub(super) struct Accumulator {
    pub(super) topics: HashMap<Arc<str>, TopicQueues>,
    pub(super) flush_requested: bool,
    /// With idempotence: the producer id and epoch, once known.
    pub(super) identity: Option<Identity>,
    /// A batch failed for good, or the leader lost this producer's
    /// sequence: take a new identity (new id, or next epoch under the
    /// key) and renumber every unsent batch, once no request is in flight.
    pub(super) reset_identity: bool,
    /// The broker refused this producer's epoch: another producer took
    /// over its key. Every later batch fails with this.
    pub(super) fenced: Option<ClientError>,
    /// xorshift state for picking sticky partitions.
    pub(super) random: u64,
    /// When the sender looks again by itself (the earliest linger deadline
    /// it saw), `None` if only a wake-up brings it back: `send` wakes it
    /// only when it would otherwise look too late (see `enqueue`).
    pub(super) sender_deadline: Option<Instant>,
}

impl Accumulator {
    pub(super) fn next_random(&mut self) -> u64 {
        let mut x = self.random.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }

    /// The topic's queues, created with `partitions` partitions on first use.
    pub(super) fn topic(&mut self, name: &Arc<str>, partitions: u32) -> &mut TopicQueues {
        let sticky = (self.next_random() % u64::from(partitions.max(1))) as u32;
        self.topics.entry(Arc::clone(name)).or_insert_with(|| TopicQueues {
            name: Arc::clone(name),
            partitions: (0..partitions.max(1)).map(|_| PartitionQueue::default()).collect(),
            sticky,
        })
    }
}

/// Appends `new_record` to its partition's open batch (sealing what is
/// full) and returns its delivery future and whether the sender should
/// look now. `None`: the topic is new here and its partition count
/// (`learnt`) is needed first.
pub(super) fn enqueue(
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
