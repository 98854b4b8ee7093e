//! The idempotent producer's sender against an in-process fake broker
//! whose partitions are real `brook-storage` logs (so the sequence check is
//! the broker's own) and which injects faults: refusals before the append
//! (NOT_LEADER), answers lost after it (REQUEST_TIMED_OUT), and random
//! delays that let a partition's requests overtake each other. Whatever
//! the faults, each partition's log must hold every record exactly once,
//! in the order sent, and each record's future must name its offset.

use brook_client::ErrorCode;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_client::{Acks, Cluster, Producer, ProducerConfig, ProducerRecord};
use brook_proto::v1::metadata_server::{Metadata, MetadataServer};
use brook_proto::v1::records_server::{Records, RecordsServer};
use brook_proto::v1::{
    BrokerInfo, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    PartitionMetadata, ProduceManyRequest, ProduceManyResponse, ProduceRequest, ProduceResponse, TopicMetadata,
};
use brook_record::{Batches, LeaderEpoch, Offset};
use brook_storage::{LogConfig, PartitionLog, StorageError};
use proptest::prelude::*;
use tonic::{Request, Response, Status};

const TOPIC: &str = "ordered";
const PARTITIONS: u32 = 2;

/// How often, in percent, a produce request meets each fault.
#[derive(Debug, Clone, Copy)]
struct Faults {
    refuse_before: u64,
    lose_answer: u64,
    max_delay_ms: u64,
}

struct FakeBroker {
    address: String,
    logs: Vec<Mutex<PartitionLog>>,
    faults: Faults,
    random: Mutex<u64>,
    next_producer_id: Mutex<i64>,
    /// Requests whose answer was dropped after the append.
    answers_lost: Mutex<u64>,
}

impl FakeBroker {
    fn roll(&self, below: u64) -> bool {
        self.next_random() % 100 < below
    }

    fn next_random(&self) -> u64 {
        let mut state = self.random.lock().expect("rng");
        let mut x = (*state).max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        x
    }
}

fn refusal(code: tonic::Code, name: &'static str, message: String) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(brook_proto::ERROR_CODE_KEY, tonic::metadata::MetadataValue::from_static(name));
    status
}

/// The services' handle on the fake.
#[derive(Clone)]
struct Fake(Arc<FakeBroker>);

impl std::ops::Deref for Fake {
    type Target = FakeBroker;

    fn deref(&self) -> &FakeBroker {
        &self.0
    }
}

#[tonic::async_trait]
impl Metadata for Fake {
    async fn get_metadata(&self, _: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        Ok(Response::new(MetadataResponse {
            brokers: vec![BrokerInfo { id: 1, address: self.address.clone(), alive: true }],
            controller_id: 1,
            topics: vec![TopicMetadata {
                name: TOPIC.into(),
                partitions: (0..PARTITIONS)
                    .map(|partition| PartitionMetadata {
                        partition,
                        leader: 1,
                        leader_epoch: 0,
                        replicas: vec![1],
                        isr: vec![1],
                    })
                    .collect(),
            }],
        }))
    }
}

#[tonic::async_trait]
impl Records for Fake {
    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let request = request.into_inner();
        let delay = self.next_random() % (self.faults.max_delay_ms + 1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.roll(self.faults.refuse_before) {
            return Err(refusal(
                tonic::Code::Unavailable,
                ErrorCode::NotLeader.name(),
                "injected: not the leader".into(),
            ));
        }
        let mut records: Vec<u8> = request.records.to_vec();
        for piece in &request.batches {
            records.extend_from_slice(piece);
        }
        let log = self.logs.get(request.partition as usize).ok_or_else(|| Status::not_found("no such partition"))?;
        let appended = log.lock().expect("log").append(&mut records, LeaderEpoch(0));
        match appended {
            Ok(info) => {
                if !info.duplicate && self.roll(self.faults.lose_answer) {
                    *self.answers_lost.lock().expect("count") += 1;
                    return Err(refusal(
                        tonic::Code::DeadlineExceeded,
                        ErrorCode::RequestTimedOut.name(),
                        "injected: answer lost".into(),
                    ));
                }
                Ok(Response::new(ProduceResponse {
                    base_offset: info.base_offset.0 as i64,
                    last_offset: info.last_offset.0 as i64,
                    log_append_time_ms: 0,
                    log_start_offset: 0,
                    duplicate: info.duplicate,
                }))
            }
            Err(StorageError::Producer { source, .. }) => {
                let name = match source {
                    brook_storage::ProducerRefusal::OutOfOrder { .. } => ErrorCode::OutOfOrderSequenceNumber.name(),
                    brook_storage::ProducerRefusal::UnknownProducer { .. } => ErrorCode::UnknownProducerId.name(),
                    brook_storage::ProducerRefusal::Fenced { .. } => ErrorCode::InvalidProducerEpoch.name(),
                    _ => ErrorCode::InvalidRecord.name(),
                };
                Err(refusal(tonic::Code::FailedPrecondition, name, source.to_string()))
            }
            Err(error) => Err(Status::internal(error.to_string())),
        }
    }

    async fn produce_many(&self, _: Request<ProduceManyRequest>) -> Result<Response<ProduceManyResponse>, Status> {
        // The producer falls back to one request per partition.
        Err(Status::unimplemented("not in the fake"))
    }

    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_offsets(&self, _: Request<ListOffsetsRequest>) -> Result<Response<ListOffsetsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn offset_for_leader_epoch(
        &self,
        _: Request<OffsetForLeaderEpochRequest>,
    ) -> Result<Response<OffsetForLeaderEpochResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        let mut next = self.next_producer_id.lock().expect("ids");
        *next += 1;
        Ok(Response::new(InitProducerIdResponse { producer_id: *next, producer_epoch: 0 }))
    }
}

/// Every record value of `log`, in log order, with its offset.
fn log_values(log: &PartitionLog) -> Vec<(u64, Vec<u8>)> {
    let mut values = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let read = log.read(next, 1 << 20, log.log_end_offset()).expect("read");
        let bytes = read.to_bytes().expect("bytes");
        for batch in Batches::new(&bytes) {
            let batch = batch.expect("valid batch");
            for record in batch.records() {
                let record = record.expect("record");
                values.push((record.offset.0, record.value.unwrap_or_default().to_vec()));
            }
        }
        next = read.next_offset;
    }
    values
}

async fn run_case(seed: u64, faults: Faults, records: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..PARTITIONS).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    let config = LogConfig { segment_bytes: 16 * 1024, ..LogConfig::default() };
    let broker = Arc::new(FakeBroker {
        address: address.to_string(),
        logs: dirs.iter().map(|dir| Mutex::new(PartitionLog::open(dir.path(), config.clone()).expect("log"))).collect(),
        faults,
        random: Mutex::new(seed),
        next_producer_id: Mutex::new(0),
        answers_lost: Mutex::new(0),
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetadataServer::new(Fake(Arc::clone(&broker))))
            .add_service(RecordsServer::new(Fake(Arc::clone(&broker))))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let cluster = Cluster::connect(&address.to_string()).await.expect("connect");
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            acks: Acks::All,
            batch_size: 300,
            linger: Duration::from_millis(1),
            retry_backoff: Duration::from_millis(5),
            request_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(60),
            max_in_flight_per_partition: Some(5),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for index in 0..records {
        let partition = (index % PARTITIONS as usize) as u32;
        let value = format!("record-{index:05}");
        let record = ProducerRecord::new(TOPIC, value.clone().into_bytes()).partition(partition);
        deliveries.push((partition, value, producer.send(record).await.expect("send")));
        if index % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut landed: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); PARTITIONS as usize];
    for (partition, value, delivery) in deliveries {
        let metadata = delivery.await.unwrap_or_else(|error| panic!("seed {seed}: {value} failed: {error}"));
        let offset = metadata.offset.expect("acks=all names the offset");
        landed[partition as usize].push((offset.0, value.into_bytes()));
    }
    producer.close().await;
    for (partition, expected) in landed.iter().enumerate() {
        let stored = log_values(&broker.logs[partition].lock().expect("log"));
        assert_eq!(
            stored.len(),
            expected.len(),
            "seed {seed} {faults:?}: partition {partition} holds each record once ({} answers lost)",
            broker.answers_lost.lock().expect("count")
        );
        let first_difference = stored.iter().zip(expected).position(|(stored, expected)| stored != expected);
        assert_eq!(
            first_difference.map(|at| (at, &stored[at], &expected[at])),
            None,
            "seed {seed} {faults:?}: partition {partition} holds the records in send order at the offsets answered \
             (first difference: position, stored, expected)"
        );
        assert_eq!(stored.first().map(|(offset, _)| Offset(*offset)), Some(Offset::ZERO));
    }
    server.abort();
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn five_in_flight_keep_order_and_write_each_record_once_across_injected_faults(
        seed in 1u64..u64::MAX,
        refuse_before in 0u64..25,
        lose_answer in 0u64..25,
        max_delay_ms in 0u64..8,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(run_case(seed, Faults { refuse_before, lose_answer, max_delay_ms }, 600));
    }
}

#[test]
fn without_faults_every_record_lands_once_in_order() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run_case(7, Faults { refuse_before: 0, lose_answer: 0, max_delay_ms: 0 }, 2000));
}
