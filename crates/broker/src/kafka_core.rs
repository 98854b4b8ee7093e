//! The broker as the Kafka front end sees it (`brook_kafka::Core`): each
//! method is the step a gRPC service takes for the same thing, called
//! directly: ProduceMany's produce path, the fetch's partition read, the
//! offset lookups, the producer ids, and the Admin service's topic
//! proposals. Nothing here appends, reads or checks on its own.

use std::sync::Arc;
use std::time::Duration;

use brook_kafka::{
    Acks, BrokerView, ClusterView, CoreError, Fetched, FileChunk, FileSource, NewTopic, OffsetQuery, PartitionRecords,
    PartitionView, Produced, Records, TopicView,
};
use brook_proto::v1::admin_server::Admin;
use brook_proto::v1::{OffsetForLeaderEpochRequest, OffsetSpec, PartitionBatches, ProduceManyRequest};
use brook_record::{BrokerId, ErrorCode, LeaderEpoch};
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::replica_manager::{ReplicaManager, Topic};
use crate::service::admin::{wire_offset, AdminService};
use crate::service::records::RecordsService;
use crate::service::Node;

#[derive(Debug)]
pub struct KafkaCore {
    pub(crate) records: Arc<RecordsService>,
    pub(crate) admin: AdminService,
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) node: Node,
    /// This broker's advertised Kafka address (`host:port`).
    pub(crate) kafka_address: String,
    pub(crate) shutdown: CancellationToken,
}

/// A segment file a fetch answer is sent from, open until sent.
#[derive(Debug)]
struct SegmentFile(brook_storage::FileRange);

impl FileSource for SegmentFile {
    fn file(&self) -> &std::fs::File {
        self.0.file()
    }
}

fn refused(error: BrokerError) -> CoreError {
    CoreError::new(error.error_code(), error.to_string())
}

/// A gRPC refusal of the Admin service, by the error name it carries.
fn refused_status(status: tonic::Status) -> CoreError {
    let code = status
        .metadata()
        .get(brook_proto::ERROR_CODE_KEY)
        .and_then(|name| name.to_str().ok())
        .and_then(ErrorCode::from_name)
        .unwrap_or(ErrorCode::InvalidRequest);
    CoreError::new(code, status.message())
}

/// `host:port` split for Kafka's broker list.
fn host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?))
}

fn topic_view(topic: &Topic) -> TopicView {
    TopicView {
        name: topic.name.clone(),
        id: topic.id,
        partitions: topic
            .partitions
            .iter()
            .map(|slot| PartitionView {
                partition: slot.id,
                leader: slot.assignment.leader,
                leader_epoch: slot.assignment.leader_epoch.0,
                replicas: slot.assignment.replicas.clone(),
                isr: slot.assignment.isr.clone(),
            })
            .collect(),
    }
}

fn offset(offset: i64, topic: &str, partition: u32) -> Result<brook_record::Offset, CoreError> {
    u64::try_from(offset).map(brook_record::Offset).map_err(|_| {
        CoreError::new(ErrorCode::OffsetOutOfRange, format!("offset {offset} of {topic}-{partition} is negative"))
    })
}

impl brook_kafka::Core for KafkaCore {
    fn broker_id(&self) -> BrokerId {
        self.node.broker_id
    }

    fn cluster(&self) -> ClusterView {
        // One borrow of the published state, released before anything
        // else is borrowed (see `MetadataNode::state`).
        let (cluster_id, mut brokers) = {
            let published = self.node.metadata.state();
            let state = published.borrow();
            let brokers: Vec<BrokerView> = state
                .brokers
                .values()
                .filter(|broker| broker.alive || broker.id == self.node.broker_id)
                .filter_map(|broker| {
                    let (host, port) = host_port(&broker.kafka_address)?;
                    Some(BrokerView { id: broker.id, host, port })
                })
                .collect();
            (state.cluster_id.map(|id| id.to_string()).unwrap_or_default(), brokers)
        };
        if !brokers.iter().any(|broker| broker.id == self.node.broker_id) {
            if let Some((host, port)) = host_port(&self.kafka_address) {
                brokers.push(BrokerView { id: self.node.broker_id, host, port });
            }
        }
        let controller = self.node.metadata.controller().and_then(|id| u32::try_from(id).ok()).map(BrokerId);
        ClusterView { cluster_id, controller, brokers }
    }

    fn topics(&self, names: Option<&[String]>) -> Vec<TopicView> {
        match names {
            None => self.registry.list().iter().map(|topic| topic_view(topic)).collect(),
            Some(names) => {
                names.iter().filter_map(|name| self.registry.topic(name).ok()).map(|topic| topic_view(&topic)).collect()
            }
        }
    }

    async fn produce(
        &self,
        acks: Acks,
        timeout: Duration,
        partitions: Vec<PartitionRecords>,
    ) -> Vec<Result<Produced, CoreError>> {
        let count = partitions.len();
        let request = ProduceManyRequest {
            acks: match acks {
                Acks::None => brook_proto::v1::Acks::None,
                Acks::Leader => brook_proto::v1::Acks::Leader,
                Acks::All => brook_proto::v1::Acks::All,
            } as i32,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            partitions: partitions
                .into_iter()
                .map(|part| PartitionBatches {
                    topic: part.topic,
                    partition: part.partition,
                    batches: vec![part.records],
                })
                .collect(),
        };
        match self.records.produce_many(request).await {
            Ok(answer) => answer
                .partitions
                .into_iter()
                .map(|result| match ErrorCode::from_name(&result.error_name) {
                    Some(code) if result.status_code != 0 => Err(CoreError::new(code, result.error_message)),
                    None if result.status_code != 0 => {
                        Err(CoreError::new(ErrorCode::InvalidRequest, result.error_message))
                    }
                    _ => Ok(Produced { base_offset: result.base_offset, log_start_offset: -1 }),
                })
                .collect(),
            Err(error) => vec![Err(refused(error)); count],
        }
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_bytes: u32,
        current_leader_epoch: Option<u32>,
    ) -> Result<Fetched, CoreError> {
        let from = offset(from, topic, partition)?;
        let read = self
            .records
            .read_partition_ranges(topic, partition, from, max_bytes, current_leader_epoch.map(LeaderEpoch))
            .await
            .map_err(refused)?;
        let chunks = read
            .ranges
            .into_iter()
            .map(|range| FileChunk {
                position: range.position(),
                length: range.length(),
                source: Arc::new(SegmentFile(range)) as Arc<dyn FileSource>,
            })
            .collect();
        Ok(Fetched {
            records: Records::Files(chunks),
            high_watermark: wire_offset(read.high_watermark),
            log_start_offset: wire_offset(read.log_start_offset),
        })
    }

    async fn wait_for_data(&self, partitions: &[(String, u32)], deadline: tokio::time::Instant) {
        let mut watches: Vec<_> = partitions
            .iter()
            .filter_map(|(topic, partition)| self.registry.partition(topic, *partition).ok())
            .map(|replica| replica.watch_high_watermark())
            .collect();
        let any_changed = async {
            if watches.is_empty() {
                // Nothing here to wait on (not led here, or gone): the
                // deadline answers.
                std::future::pending::<()>().await;
            }
            let _ = futures::future::select_all(watches.iter_mut().map(|watch| Box::pin(watch.changed()))).await;
        };
        tokio::select! {
            () = any_changed => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
        current_leader_epoch: Option<u32>,
    ) -> Result<(i64, i64), CoreError> {
        let replica = self.registry.partition(topic, partition).map_err(refused)?;
        if let Some(epoch) = current_leader_epoch {
            replica.check_leader_epoch(LeaderEpoch(epoch)).map_err(|error| refused(error.into()))?;
        }
        let (spec, timestamp) = match query {
            OffsetQuery::Latest => (OffsetSpec::Latest, -1),
            OffsetQuery::Earliest => (OffsetSpec::Earliest, -1),
            OffsetQuery::Timestamp(at) => (OffsetSpec::Timestamp, at),
        };
        crate::service::offset_by_spec(&replica, spec, timestamp).await.map_err(refused)
    }

    async fn epoch_end(
        &self,
        topic: &str,
        partition: u32,
        leader_epoch: u32,
        current_leader_epoch: Option<u32>,
    ) -> Result<(i32, i64), CoreError> {
        let request =
            OffsetForLeaderEpochRequest { topic: topic.to_string(), partition, leader_epoch, current_leader_epoch };
        let answer = self.records.offset_for_leader_epoch(request).await.map_err(refused)?;
        Ok((i32::try_from(answer.leader_epoch).unwrap_or(-1), answer.end_offset))
    }

    async fn init_producer_id(&self, key: Option<String>) -> Result<(i64, i16), CoreError> {
        self.records.producer_ids.init(key).await.map_err(refused)
    }

    async fn create_topic(&self, topic: NewTopic, validate_only: bool) -> Result<TopicView, CoreError> {
        if validate_only {
            // The checks that need no proposal; the rest (names, configs)
            // are the metadata group's, at creation.
            if self.registry.topic(&topic.name).is_ok() {
                return Err(refused(BrokerError::TopicAlreadyExists { topic: topic.name }));
            }
            return Ok(TopicView { name: topic.name, id: brook_record::TopicId::ZERO, partitions: Vec::new() });
        }
        let request = brook_proto::v1::CreateTopicRequest {
            name: topic.name.clone(),
            partitions: topic.partitions.unwrap_or(1),
            replication_factor: topic.replication_factor.unwrap_or(0),
            configs: topic.configs.into_iter().collect(),
        };
        self.admin.create_topic(tonic::Request::new(request)).await.map_err(refused_status)?;
        let created = self.registry.topic(&topic.name).map_err(refused)?;
        Ok(topic_view(&created))
    }

    async fn delete_topic(&self, name: &str) -> Result<(), CoreError> {
        let request = brook_proto::v1::DeleteTopicRequest { name: name.to_string() };
        self.admin.delete_topic(tonic::Request::new(request)).await.map_err(refused_status)?;
        Ok(())
    }

    async fn add_partitions(&self, name: &str, partitions: u32) -> Result<(), CoreError> {
        let request = brook_proto::v1::AddPartitionsRequest { name: name.to_string(), partitions };
        self.admin.add_partitions(tonic::Request::new(request)).await.map_err(refused_status)?;
        Ok(())
    }

    fn topic_configs(&self, name: &str) -> Result<std::collections::BTreeMap<String, String>, CoreError> {
        Ok(self.registry.topic(name).map_err(refused)?.configs.clone())
    }

    async fn alter_topic_configs(
        &self,
        name: &str,
        set: std::collections::BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), CoreError> {
        let request =
            brook_proto::v1::AlterTopicConfigRequest { name: name.to_string(), set: set.into_iter().collect(), delete };
        self.admin.alter_topic_config(tonic::Request::new(request)).await.map_err(refused_status)?;
        Ok(())
    }

    async fn reserve_request_memory(&self, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit, CoreError> {
        self.node
            .request_budget
            .reserve(bytes)
            .await
            .map_err(|message| CoreError::new(ErrorCode::MessageTooLarge, message))
    }
}
