//! `brook.v1.Records`: produce, produce to many partitions, fetch (long
//! poll) and list offsets.
//!
//! Produce walks straight down: handler -> checks (`admit`) -> partition
//! `append` -> log `append` -> acks=all wait and answer (`conclude`; the
//! wait is for nothing extra while the ISR is this broker alone).
//! ProduceMany admits each partition on its own, appends all admitted ones
//! in one blocking task, then concludes them concurrently, answering each
//! partition on its own. Fetch: handler -> partition `read` up to the high
//! watermark -> bytes; if fewer than `min_bytes`, wait on the HW watch
//! until more arrive or `max_wait_ms` passes.

use std::sync::Arc;
use std::time::Duration;

use brook_proto::v1::records_server::Records;
use brook_proto::v1::{
    Acks, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, OffsetSpec, PartitionProduceResult,
    ProduceManyRequest, ProduceManyResponse, ProduceRequest, ProduceResponse,
};
use brook_record::{Compression, RecordError};
use brook_storage::{AppendInfo, StorageError};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::producer_ids::ProducerIds;
use crate::replica_manager::ReplicaManager;
use crate::service::admin::wire_offset;
use brook_record::{LeaderEpoch, Offset};
use brook_replication::{Replica, ReplicaError};
/// A produce request that passed the checks before an append.
struct Admitted {
    topic: String,
    acks: Acks,
    timeout_ms: u32,
    /// The topic's min.insync.replicas, checked again once acks=all's HW
    /// is reached.
    min_insync_replicas: u32,
    partition: Arc<Replica>,
    /// The batches, taken out for the append.
    pieces: Vec<Bytes>,
    bytes: u64,
    recompression: Recompression,
}

/// What the leader does to a topic's batches before the append.
#[derive(Debug, Clone, Copy)]
struct Recompression {
    /// The topic's `compression.type` codec, if it names one.
    compression: Option<Compression>,
    /// The topic's `max.message.bytes`: no record decompresses larger.
    max_record_bytes: usize,
}

/// How long a producer's request that overtook an earlier one of the same
/// producer waits for it before it is refused as out of order.
const OVERTAKEN_WAIT: Duration = Duration::from_millis(100);

/// A topic whose `compression.type` names a codec: each batch in another
/// codec is recompressed (a new buffer; the others are kept as they are).
/// A piece that does not parse is left for the log's validation to refuse
/// by name; a batch whose records do not decompress, or decompress to more
/// than they may hold (no record over `max_record_bytes`, the topic's
/// `max.message.bytes`), refuses the append with CORRUPT_RECORD before
/// anything is allocated for what its header claims. CPU work: called on
/// the blocking pool.
fn recompress_pieces(
    pieces: Vec<Bytes>,
    recompression: Recompression,
    partition: &Replica,
) -> Result<Vec<Bytes>, ReplicaError> {
    let Recompression { compression, max_record_bytes } = recompression;
    let Some(compression) = compression else { return Ok(pieces) };
    let mut index = 0;
    let mut recompressed = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let mut rebuilt: Option<Vec<u8>> = None;
        let mut position = 0;
        while position < piece.len() {
            let Ok(header) = brook_record::BatchHeader::parse(&piece[position..]) else { break };
            let end = (position + header.total_bytes()).min(piece.len());
            match brook_record::recompress(&piece[position..end], compression, max_record_bytes) {
                Ok(Some(batch)) => rebuilt.get_or_insert_with(|| piece[..position].to_vec()).extend_from_slice(&batch),
                Ok(None) => {
                    if let Some(rebuilt) = &mut rebuilt {
                        rebuilt.extend_from_slice(&piece[position..end]);
                    }
                }
                Err(source @ (RecordError::Decompression { .. } | RecordError::DecompressedTooLarge { .. })) => {
                    return Err(ReplicaError::InvalidBatch {
                        partition: partition.topic_partition().clone(),
                        source: StorageError::InvalidBatch { index, source },
                    });
                }
                // Anything else the log's validation refuses by name.
                Err(_) => {
                    rebuilt = None;
                    break;
                }
            }
            position = end;
            index += 1;
        }
        recompressed.push(rebuilt.map_or(piece, Bytes::from));
    }
    Ok(recompressed)
}

#[derive(Debug)]
pub struct RecordsService {
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) config: Arc<BrokerConfig>,
    /// Ends long polls early when the broker shuts down.
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) producer_ids: Arc<ProducerIds>,
}

impl RecordsService {
    /// Counts a finished request under its outcome (`ok` or the error name).
    fn observe<T>(&self, api: &str, started: Instant, result: &Result<T, BrokerError>) {
        self.metrics.observe_result(api, started.elapsed(), result);
    }

    /// What comes before an append: the acks value, leadership, the ISR
    /// against min.insync.replicas, the request's form.
    fn admit(&self, request: ProduceRequest) -> Result<Admitted, BrokerError> {
        let acks = Acks::try_from(request.acks)
            .map_err(|_| BrokerError::InvalidRequest(format!("acks value {} is not 0, 1 or all", request.acks)))?;
        let topic = self.registry.topic(&request.topic)?;
        let partition = topic.led_partition(request.partition, self.registry.broker_id())?;
        let isr = topic.slot(request.partition)?.assignment.isr.len() as u32;
        if matches!(acks, Acks::All | Acks::Unspecified) && topic.config.min_insync_replicas > isr {
            return Err(BrokerError::NotEnoughReplicas {
                topic: request.topic,
                partition: request.partition,
                isr,
                min_insync_replicas: topic.config.min_insync_replicas,
            });
        }
        let pieces = match (request.records.is_empty(), request.batches.is_empty()) {
            (_, true) => vec![request.records],
            (true, false) => request.batches,
            (false, false) => {
                return Err(BrokerError::InvalidRequest(
                    "a produce request sets `records` or `batches`, not both".to_string(),
                ))
            }
        };
        let bytes = pieces.iter().map(|piece| piece.len() as u64).sum();
        Ok(Admitted {
            recompression: Recompression {
                compression: topic.config.compression,
                max_record_bytes: topic.config.max_message_bytes,
            },
            topic: request.topic,
            acks,
            timeout_ms: request.timeout_ms,
            min_insync_replicas: topic.config.min_insync_replicas,
            partition,
            pieces,
            bytes,
        })
    }

    /// What comes after the append: the acks=all wait, the counters, the
    /// answer.
    async fn conclude(
        &self,
        admitted: Admitted,
        (info, leader_epoch): (AppendInfo, LeaderEpoch),
    ) -> Result<ProduceResponse, BrokerError> {
        if matches!(admitted.acks, Acks::All | Acks::Unspecified) {
            let timeout_ms = match admitted.timeout_ms {
                0 => self.config.default_produce_timeout_ms,
                requested => requested,
            };
            admitted
                .partition
                .wait_for_high_watermark(
                    info.last_offset.plus(1),
                    leader_epoch,
                    admitted.min_insync_replicas,
                    Duration::from_millis(u64::from(timeout_ms)),
                )
                .await?;
        }
        tracing::Span::current().record("offset", info.base_offset.0);
        if info.duplicate {
            tracing::debug!(base_offset = %info.base_offset, last_offset = %info.last_offset, "a producer's retry was already appended; answered with its offsets");
            self.metrics.duplicates.with_label_values(&[admitted.topic.as_str()]).inc_by(info.batch_count as u64);
        } else {
            self.metrics.bytes_in.with_label_values(&[admitted.topic.as_str()]).inc_by(admitted.bytes);
            self.metrics.records_in.with_label_values(&[admitted.topic.as_str()]).inc_by(info.record_count);
        }
        Ok(ProduceResponse {
            duplicate: info.duplicate,
            base_offset: wire_offset(info.base_offset),
            last_offset: wire_offset(info.last_offset),
            log_append_time_ms: now_ms(),
            log_start_offset: wire_offset(admitted.partition.log_start_offset()),
        })
    }

    pub(crate) async fn produce(&self, request: ProduceRequest) -> Result<ProduceResponse, BrokerError> {
        let mut admitted = self.admit(request)?;
        let mut pieces = std::mem::take(&mut admitted.pieces);
        if admitted.recompression.compression.is_some() {
            let (recompression, partition) = (admitted.recompression, Arc::clone(&admitted.partition));
            pieces = tokio::task::spawn_blocking(move || recompress_pieces(pieces, recompression, &partition))
                .await
                .map_err(|_| BrokerError::ShuttingDown)??;
        }
        let appended = admitted.partition.append_in_order(pieces, OVERTAKEN_WAIT).await;
        if let Err(error) = &appended {
            self.after_append_failure(error);
        }
        self.conclude(admitted, appended?).await
    }

    /// A log this broker cannot write (a full or failed disk): it gives up
    /// its leaderships for a while, so producers go on at other in-sync
    /// replicas (see `MetadataNode::withhold_heartbeats_until`).
    fn after_append_failure(&self, error: &ReplicaError) {
        if let ReplicaError::Storage { partition, source } = error {
            tracing::error!(%partition, %source, "append failed on the data directory");
            self.registry.fence_after_storage_failure(&partition.to_string());
        }
    }

    /// Each partition admitted on its own, the admitted ones appended by
    /// one task on the blocking pool (one hand-off for the request, not
    /// one per partition), then concluded (acks=all waits) all at once.
    /// Answered per partition; counted in the metrics as one produce per
    /// partition.
    pub(crate) async fn produce_many(&self, request: ProduceManyRequest) -> Result<ProduceManyResponse, BrokerError> {
        if request.partitions.is_empty() {
            return Err(BrokerError::InvalidRequest("a produce request names at least one partition".to_string()));
        }
        let mut named = std::collections::HashSet::new();
        for part in &request.partitions {
            if !named.insert((part.topic.as_str(), part.partition)) {
                return Err(BrokerError::InvalidRequest(format!(
                    "partition {}-{} appears twice in one produce request",
                    part.topic, part.partition
                )));
            }
        }
        let started = Instant::now();
        let (acks, timeout_ms) = (request.acks, request.timeout_ms);
        let mut names = Vec::with_capacity(request.partitions.len());
        let mut admitted = Vec::with_capacity(request.partitions.len());
        for part in request.partitions {
            names.push((part.topic.clone(), part.partition));
            let single = ProduceRequest {
                topic: part.topic,
                partition: part.partition,
                acks,
                timeout_ms,
                records: Bytes::new(),
                batches: part.batches,
            };
            admitted.push(self.admit(single));
        }
        let work: Vec<(Arc<Replica>, Vec<Bytes>, Recompression)> = admitted
            .iter_mut()
            .filter_map(|admitted| admitted.as_mut().ok())
            .map(|admitted| {
                (Arc::clone(&admitted.partition), std::mem::take(&mut admitted.pieces), admitted.recompression)
            })
            .collect();
        let span = tracing::Span::current();
        let mut appended = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            work.into_iter()
                .map(|(partition, pieces, recompression)| {
                    let pieces = match recompress_pieces(pieces, recompression, &partition) {
                        Ok(pieces) => pieces,
                        Err(refused) => return (Err(refused), None),
                    };
                    // Kept (cheap clones) when a producer's request may have
                    // overtaken an earlier one: appended again below once
                    // that one is. Others are not cloned (a clone makes the
                    // buffer shared, and its batches are then stamped in copies).
                    let kept = brook_record::carries_producer_id(&pieces).then(|| pieces.clone());
                    (partition.append_pieces_blocking(pieces), kept)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?
        .into_iter();
        let concluded = admitted.into_iter().zip(names).map(|(admitted, (topic, partition))| {
            let appended = admitted.is_ok().then(|| appended.next()).flatten();
            let span = tracing::info_span!("partition", topic = %topic, partition, offset = tracing::field::Empty);
            async move {
                let appended = match (&admitted, appended) {
                    (Ok(admitted), Some((Err(error), Some(pieces)))) if error.is_sequence_ahead() => {
                        Some(admitted.partition.append_in_order(pieces, OVERTAKEN_WAIT).await)
                    }
                    (_, appended) => appended.map(|(result, _)| result),
                };
                let result = match (admitted, appended) {
                    (Ok(admitted), Some(Ok(appended))) => self.conclude(admitted, appended).await,
                    (Err(error), _) => Err(error),
                    (Ok(_), Some(Err(error))) => {
                        self.after_append_failure(&error);
                        Err(error.into())
                    }
                    (Ok(_), None) => Err(BrokerError::ShuttingDown),
                };
                self.observe("produce", started, &result);
                match result {
                    Ok(answer) => PartitionProduceResult {
                        topic,
                        partition,
                        base_offset: answer.base_offset,
                        last_offset: answer.last_offset,
                        duplicate: answer.duplicate,
                        ..PartitionProduceResult::default()
                    },
                    Err(error) => PartitionProduceResult {
                        topic,
                        partition,
                        base_offset: -1,
                        last_offset: -1,
                        status_code: error.code() as i32,
                        error_name: error.code_name().to_string(),
                        error_message: error.to_string(),
                        duplicate: false,
                    },
                }
            }
            .instrument(span)
        });
        Ok(ProduceManyResponse { partitions: futures::future::join_all(concluded).await })
    }

    /// A fetch's size: what it asks for (0: the default fetch size), never
    /// over `max_fetch_bytes`.
    fn fetch_bytes(&self, requested: u32) -> u64 {
        u64::from(match requested {
            0 => self.config.default_fetch_bytes,
            requested => requested.min(self.config.max_fetch_bytes),
        })
    }

    /// One read of a partition this broker leads, below its HW, up to
    /// `max_bytes` (0: the default fetch size; never over
    /// `max_fetch_bytes`), the first batch whole; counted as bytes out.
    /// What a fetch does before it waits, on either front end.
    pub(crate) async fn read_partition(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        max_bytes: u32,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> Result<brook_replication::FetchedRecords, BrokerError> {
        let (replica, max_bytes) = (self.registry.partition(topic, partition)?, self.fetch_bytes(max_bytes));
        let fetched = replica.read(offset, max_bytes, current_leader_epoch).await?;
        self.metrics.bytes_out.with_label_values(&[topic]).inc_by(fetched.records.len() as u64);
        Ok(fetched)
    }

    /// [`RecordsService::read_partition`] with the batches left in the
    /// segment files, for a transport that sends them with `sendfile`.
    pub(crate) async fn read_partition_ranges(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        max_bytes: u32,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> Result<brook_replication::FetchedRanges, BrokerError> {
        let (replica, max_bytes) = (self.registry.partition(topic, partition)?, self.fetch_bytes(max_bytes));
        let fetched = replica.read_ranges(offset, max_bytes, current_leader_epoch).await?;
        self.metrics.bytes_out.with_label_values(&[topic]).inc_by(fetched.byte_count());
        Ok(fetched)
    }

    async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, BrokerError> {
        let partition = self.registry.partition(&request.topic, request.partition)?;
        let offset = u64::try_from(request.offset).map(Offset).map_err(|_| {
            BrokerError::InvalidRequest(format!(
                "fetch offset {} is negative ({}-{})",
                request.offset, request.topic, request.partition
            ))
        })?;
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms.min(self.config.max_fetch_wait_ms)));
        let deadline = Instant::now() + max_wait;
        // Subscribe before the first read, so an append between the read
        // and the wait still wakes us.
        let mut high_watermark = partition.watch_high_watermark();
        loop {
            let fetched = self
                .read_partition(
                    &request.topic,
                    request.partition,
                    offset,
                    request.max_bytes,
                    request.current_leader_epoch.map(LeaderEpoch),
                )
                .await?;
            let enough = fetched.records.len() >= request.min_bytes as usize;
            let woken = enough
                || tokio::select! {
                    changed = tokio::time::timeout_at(deadline, high_watermark.changed()) => matches!(changed, Ok(Ok(()))),
                    () = self.shutdown.cancelled() => false,
                };
            if !woken || enough {
                return Ok(FetchResponse {
                    records: fetched.records,
                    high_watermark: wire_offset(fetched.high_watermark),
                    log_start_offset: wire_offset(fetched.log_start_offset),
                    next_offset: wire_offset(fetched.next_offset),
                });
            }
        }
    }

    async fn list_offsets(&self, request: ListOffsetsRequest) -> Result<ListOffsetsResponse, BrokerError> {
        let partition = self.registry.partition(&request.topic, request.partition)?;
        let spec = OffsetSpec::try_from(request.spec)
            .map_err(|_| BrokerError::InvalidRequest(format!("offset spec {} is unknown", request.spec)))?;
        let (offset, timestamp_ms) = crate::service::offset_by_spec(&partition, spec, request.timestamp_ms).await?;
        Ok(ListOffsetsResponse { offset, timestamp_ms })
    }

    pub(crate) async fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
    ) -> Result<OffsetForLeaderEpochResponse, BrokerError> {
        let partition = self.registry.partition(&request.topic, request.partition)?;
        if let Some(current) = request.current_leader_epoch {
            partition.check_leader_epoch(LeaderEpoch(current))?;
        }
        let end = partition.epoch_end(LeaderEpoch(request.leader_epoch));
        Ok(OffsetForLeaderEpochResponse {
            leader_epoch: end.epoch.map_or(-1, |epoch| i64::from(epoch.0)),
            end_offset: wire_offset(end.end_offset),
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}

/// Each RPC: time it, run it, count its outcome, map its error.
#[tonic::async_trait]
impl Records for RecordsService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, bytes = request.get_ref().records.len() + request.get_ref().batches.iter().map(|piece| piece.len()).sum::<usize>(), offset))]
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let started = Instant::now();
        let result = RecordsService::produce(self, request.into_inner()).await;
        self.observe("produce", started, &result);
        Ok(Response::new(result?))
    }

    #[tracing::instrument(skip_all, fields(partitions = request.get_ref().partitions.len()))]
    async fn produce_many(
        &self,
        request: Request<ProduceManyRequest>,
    ) -> Result<Response<ProduceManyResponse>, Status> {
        // Refusals of single partitions are in the answer (and counted as
        // `produce`); an error here is the request's own (no partition,
        // one named twice).
        let started = Instant::now();
        let result = RecordsService::produce_many(self, request.into_inner()).await;
        self.observe("produce_many", started, &result);
        Ok(Response::new(result?))
    }

    #[tracing::instrument(skip_all, fields(key = %request.get_ref().producer_key))]
    async fn init_producer_id(
        &self,
        request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let started = Instant::now();
        let key = Some(request.into_inner().producer_key).filter(|key| !key.is_empty());
        let result = self.producer_ids.init(key).await;
        self.observe("init_producer_id", started, &result);
        let (producer_id, producer_epoch) = result?;
        tracing::info!(producer_id, producer_epoch, "producer id handed out");
        Ok(Response::new(InitProducerIdResponse { producer_id, producer_epoch: producer_epoch as u32 }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, offset = request.get_ref().offset))]
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let started = Instant::now();
        let result = RecordsService::fetch(self, request.into_inner()).await;
        self.observe("fetch", started, &result);
        Ok(Response::new(result?))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let started = Instant::now();
        let result = RecordsService::list_offsets(self, request.into_inner()).await;
        self.observe("list_offsets", started, &result);
        Ok(Response::new(result?))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, epoch = request.get_ref().leader_epoch))]
    async fn offset_for_leader_epoch(
        &self,
        request: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        let started = Instant::now();
        let result = RecordsService::offset_for_leader_epoch(self, request.into_inner()).await;
        self.observe("offset_for_leader_epoch", started, &result);
        Ok(Response::new(result?))
    }
}
