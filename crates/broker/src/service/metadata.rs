//! `brook.v1.Metadata`: brokers and partition leaders, for routing.

use std::sync::Arc;

use brook_proto::v1::metadata_server::Metadata;
use brook_proto::v1::{MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata};
use tonic::{Request, Response, Status};

use crate::replica_manager::{ReplicaManager, Topic};
use crate::service::{wire_broker, wire_brokers, Node};

#[derive(Debug)]
pub struct MetadataService {
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) node: Node,
}

impl MetadataService {
    fn topic_metadata(&self, topic: &Topic) -> TopicMetadata {
        TopicMetadata {
            name: topic.name.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|slot| PartitionMetadata {
                    partition: slot.id,
                    leader: wire_broker(slot.assignment.leader),
                    leader_epoch: slot.assignment.leader_epoch.0,
                    replicas: wire_brokers(&slot.assignment.replicas),
                    isr: wire_brokers(&slot.assignment.isr),
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Metadata for MetadataService {
    #[tracing::instrument(skip_all, fields(topics = request.get_ref().topics.len()))]
    async fn get_metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let wanted = request.into_inner().topics;
        let topics = if wanted.is_empty() {
            self.registry.list()
        } else {
            wanted.iter().map(|name| self.registry.topic(name)).collect::<Result<Vec<_>, _>>()?
        };
        Ok(Response::new(MetadataResponse {
            brokers: self.node.brokers(),
            controller_id: self.node.controller_id(),
            topics: topics.iter().map(|topic| self.topic_metadata(topic)).collect(),
        }))
    }
}
