//! `brook.v1.Admin`: topics and cluster description.

use std::sync::Arc;

use brook_proto::v1::admin_server::Admin;
use brook_proto::v1::{
    AddPartitionsRequest, AddPartitionsResponse, AlterTopicConfigRequest, AlterTopicConfigResponse, CreateTopicRequest,
    CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeTopicRequest, DescribeTopicResponse, ListTopicsRequest, ListTopicsResponse, PartitionDescription,
    TopicDescription, TopicSummary,
};
use tonic::{Request, Response, Status};

use crate::replica_manager::{ReplicaManager, Topic};
use crate::service::{wire_broker, wire_brokers, Node};

#[derive(Debug)]
pub struct AdminService {
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) node: Node,
}

use brook_metadata::topic_keys::MIN_INSYNC_REPLICAS;

/// Offsets go on the wire as Kafka's int64.
pub(crate) fn wire_offset(offset: brook_record::Offset) -> i64 {
    i64::try_from(offset.0).unwrap_or(i64::MAX)
}

impl AdminService {
    fn describe(&self, topic: &Topic) -> TopicDescription {
        TopicDescription {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            configs: topic.configs.clone().into_iter().collect(),
            partitions: topic
                .partitions
                .iter()
                .map(|slot| {
                    // Offsets are known only where the log is hosted.
                    let offsets = slot.log.as_ref().map(|log| {
                        (
                            wire_offset(log.log_start_offset()),
                            wire_offset(log.high_watermark()),
                            wire_offset(log.log_end_offset()),
                        )
                    });
                    let (log_start_offset, high_watermark, log_end_offset) = offsets.unwrap_or((-1, -1, -1));
                    PartitionDescription {
                        partition: slot.id,
                        leader: wire_broker(slot.assignment.leader),
                        leader_epoch: slot.assignment.leader_epoch.0,
                        replicas: wire_brokers(&slot.assignment.replicas),
                        isr: wire_brokers(&slot.assignment.isr),
                        log_start_offset,
                        high_watermark,
                        log_end_offset,
                        offline_reason: slot.assignment.offline_reason().unwrap_or_default(),
                    }
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let request = request.into_inner();
        // Unset settings take the broker's defaults (Kafka's
        // default.replication.factor and min.insync.replicas).
        let replication_factor = match request.replication_factor {
            0 => self.node.default_replication_factor,
            given => given,
        };
        let mut configs: std::collections::BTreeMap<String, String> = request.configs.into_iter().collect();
        if !configs.contains_key(MIN_INSYNC_REPLICAS) {
            let min_insync = self.node.default_min_insync_replicas.min(replication_factor).max(1);
            configs.insert(MIN_INSYNC_REPLICAS.to_string(), min_insync.to_string());
        }
        let topic = self.registry.create(request.name, request.partitions, replication_factor, configs).await?;
        Ok(Response::new(CreateTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.registry.delete(&request.into_inner().name).await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_topics(&self, _request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let topics = self
            .registry
            .list()
            .iter()
            .map(|topic| TopicSummary {
                name: topic.name.clone(),
                partitions: topic.partition_count(),
                replication_factor: topic.replication_factor,
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let topic = self.registry.topic(&request.into_inner().name)?;
        Ok(Response::new(DescribeTopicResponse { topic: Some(self.describe(&topic)) }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let request = request.into_inner();
        let topic =
            self.registry.alter_config(&request.name, request.set.into_iter().collect(), request.delete).await?;
        Ok(Response::new(AlterTopicConfigResponse { topic: Some(self.describe(&topic)) }))
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name, partitions = request.get_ref().partitions))]
    async fn add_partitions(
        &self,
        request: Request<AddPartitionsRequest>,
    ) -> Result<Response<AddPartitionsResponse>, Status> {
        let request = request.into_inner();
        let topic = self.registry.add_partitions(&request.name, request.partitions).await?;
        Ok(Response::new(AddPartitionsResponse { topic: Some(self.describe(&topic)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn describe_cluster(
        &self,
        _request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        // One snapshot, its borrow released before anything else borrows:
        // borrows held together (a struct literal keeps each field's
        // temporaries to its end) deadlock once the state machine waits
        // to publish between them.
        let (cluster_id, metadata_index) = {
            let state = self.node.metadata.state().borrow().clone();
            (state.cluster_id.map(|id| id.to_string()).unwrap_or_default(), state.applied_index)
        };
        Ok(Response::new(DescribeClusterResponse {
            cluster_id,
            controller_id: self.node.controller_id(),
            brokers: self.node.brokers(),
            metadata_index,
        }))
    }
}
