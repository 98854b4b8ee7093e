//! `Admin`: topics, consumer groups and cluster information.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_proto::v1::admin_client::AdminClient;
use brook_proto::v1::groups_client::GroupsClient;
use brook_proto::v1::{
    AddPartitionsRequest, AlterTopicConfigRequest, CommittedOffset, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest, DescribeTopicRequest,
    GroupDescription, GroupSummary, ListGroupsRequest, ListTopicsRequest, ResetOffsetsRequest, ResetTo,
    TopicDescription, TopicSummary,
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

/// How long group calls look for the coordinator (the controller) while
/// it moves.
const GROUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Where `Admin::reset_offsets` moves a group's positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOffsets {
    Earliest,
    Latest,
    /// Clamped into each partition's earliest..latest.
    Offset(i64),
    /// The first record at or after this time (ms); the latest if none.
    Timestamp(i64),
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

    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        self.cluster
            .with_coordinator(GROUP_PATIENCE, |channel| async move {
                Ok(GroupsClient::new(channel).list_groups(ListGroupsRequest {}).await?.into_inner().groups)
            })
            .await
    }

    /// Members, assignments, committed and end offsets, and lag.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupsRequest { group_ids: vec![group_id.to_string()] };
        let mut groups = self
            .cluster
            .with_coordinator(GROUP_PATIENCE, |channel| {
                let request = request.clone();
                async move { Ok(GroupsClient::new(channel).describe_groups(request).await?.into_inner().groups) }
            })
            .await?;
        groups.pop().ok_or_else(|| ClientError::InvalidArgument("broker answered without the group".into()))
    }

    /// Forgets a group without members: its committed offsets too.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        let request = DeleteGroupRequest { group_id: group_id.to_string() };
        self.cluster
            .with_coordinator(GROUP_PATIENCE, |channel| {
                let request = request.clone();
                async move {
                    GroupsClient::new(channel).delete_group(request).await?;
                    Ok(())
                }
            })
            .await
    }

    /// Moves a group's committed offsets on `topic` (every partition when
    /// `partitions` is empty); refused while the group has live members.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetOffsets,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let (to, offset, timestamp_ms) = match to {
            ResetOffsets::Earliest => (ResetTo::Earliest, 0, 0),
            ResetOffsets::Latest => (ResetTo::Latest, 0, 0),
            ResetOffsets::Offset(offset) => (ResetTo::Offset, offset, 0),
            ResetOffsets::Timestamp(timestamp_ms) => (ResetTo::Timestamp, 0, timestamp_ms),
        };
        let request = ResetOffsetsRequest {
            group_id: group_id.to_string(),
            topic: topic.to_string(),
            partitions: partitions.to_vec(),
            to: to as i32,
            offset,
            timestamp_ms,
        };
        self.cluster
            .with_coordinator(GROUP_PATIENCE, |channel| {
                let request = request.clone();
                async move { Ok(GroupsClient::new(channel).reset_offsets(request).await?.into_inner().offsets) }
            })
            .await
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

    /// Sets `set` and removes `delete` (back to defaults) in a topic's configs.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<TopicDescription, ClientError> {
        let request = AlterTopicConfigRequest { name: name.to_string(), set: set.into_iter().collect(), delete };
        let response = self
            .cluster
            .with_any_broker(|channel| {
                let request = request.clone();
                async move { Ok(AdminClient::new(channel).alter_topic_config(request).await?.into_inner()) }
            })
            .await?;
        response.topic.ok_or_else(|| ClientError::InvalidArgument("broker answered without the topic".into()))
    }

    /// Grows a topic to `partitions` (only up). Keyed records whose keys now
    /// hash to another partition go there from now on.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<TopicDescription, ClientError> {
        let request = AddPartitionsRequest { name: name.to_string(), partitions };
        let response = self
            .cluster
            .with_any_broker(|channel| {
                let request = request.clone();
                async move { Ok(AdminClient::new(channel).add_partitions(request).await?.into_inner()) }
            })
            .await?;
        self.cluster.invalidate(name);
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
