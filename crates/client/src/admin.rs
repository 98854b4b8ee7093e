//! `Admin`: topics and cluster information.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_proto::v1::admin_client::AdminClient;
use brook_proto::v1::{
    CreateTopicRequest, DeleteTopicRequest, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicRequest,
    ListTopicsRequest, TopicDescription, TopicSummary,
};

use crate::cluster::Cluster;
use crate::error::ClientError;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Kafka config names (`retention.ms`, `segment.bytes`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32, replication_factor: u32) -> NewTopic {
        NewTopic { name: name.into(), partitions, replication_factor, configs: BTreeMap::new() }
    }

    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    pub fn new(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    /// Connects to `bootstrap` (`host:port[,host:port...]`).
    pub async fn connect(bootstrap: &str) -> Result<Admin, ClientError> {
        Ok(Admin::new(Cluster::connect(bootstrap).await?))
    }

    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicDescription, ClientError> {
        let request = CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: topic.configs.into_iter().collect(),
        };
        let response = self
            .cluster
            .with_any_broker(|channel| {
                let request = request.clone();
                async move { Ok(AdminClient::new(channel).create_topic(request).await?.into_inner()) }
            })
            .await?;
        response.topic.ok_or_else(|| ClientError::InvalidArgument("broker answered without the topic".into()))
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.cluster
            .with_any_broker(|channel| async move {
                AdminClient::new(channel).delete_topic(DeleteTopicRequest { name: name.to_string() }).await?;
                Ok(())
            })
            .await?;
        self.cluster.invalidate(name);
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        self.cluster
            .with_any_broker(|channel| async move {
                Ok(AdminClient::new(channel).list_topics(ListTopicsRequest {}).await?.into_inner().topics)
            })
            .await
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let response = self
            .cluster
            .with_any_broker(|channel| async move {
                let request = DescribeTopicRequest { name: name.to_string() };
                Ok(AdminClient::new(channel).describe_topic(request).await?.into_inner())
            })
            .await?;
        response.topic.ok_or_else(|| ClientError::InvalidArgument("broker answered without the topic".into()))
    }

    pub async fn describe_cluster(&self) -> Result<DescribeClusterResponse, ClientError> {
        self.cluster
            .with_any_broker(|channel| async move {
                Ok(AdminClient::new(channel).describe_cluster(DescribeClusterRequest {}).await?.into_inner())
            })
            .await
    }
}
