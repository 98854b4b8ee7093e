//! Metadata: the brokers' Kafka addresses, the controller, and each
//! topic's partitions with their leaders, leader epochs, replicas and ISR.
//! Topics are never created by a Metadata request (Brook creates topics
//! only when asked to): an unknown topic is UNKNOWN_TOPIC_OR_PARTITION.

use brook_record::{BrokerId, ErrorCode};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::core::TopicView;
use crate::Core;

pub(crate) fn broker_id(id: BrokerId) -> kafka_protocol::messages::BrokerId {
    kafka_protocol::messages::BrokerId(i32::try_from(id.0).unwrap_or(i32::MAX))
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn metadata<C: Core>(core: &C, request: MetadataRequest, version: i16) -> MetadataResponse {
    let cluster = core.cluster();
    // v0 asks for every topic with an empty list; later versions with none.
    let wanted: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => {
            Some(topics.into_iter().filter_map(|topic| topic.name.map(|name| name.0.to_string())).collect())
        }
    };
    let found = core.topics(wanted.as_deref());
    let mut topics: Vec<MetadataResponseTopic> = found.iter().map(topic_metadata).collect();
    for name in wanted.iter().flatten().filter(|name| !found.iter().any(|topic| &topic.name == *name)) {
        topics.push(
            MetadataResponseTopic::default()
                .with_error_code(ErrorCode::UnknownTopicOrPartition.kafka_code())
                .with_name(Some(topic_name(name))),
        );
    }
    MetadataResponse::default()
        .with_brokers(
            cluster
                .brokers
                .iter()
                .map(|broker| {
                    MetadataResponseBroker::default()
                        .with_node_id(broker_id(broker.id))
                        .with_host(StrBytes::from_string(broker.host.clone()))
                        .with_port(i32::from(broker.port))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(cluster.cluster_id)))
        .with_controller_id(cluster.controller.map_or(kafka_protocol::messages::BrokerId(-1), broker_id))
        .with_topics(topics)
}

/// DescribeCluster: the same brokers and controller as Metadata.
pub fn describe_cluster<C: Core>(core: &C) -> DescribeClusterResponse {
    let cluster = core.cluster();
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(cluster.cluster_id))
        .with_controller_id(cluster.controller.map_or(kafka_protocol::messages::BrokerId(-1), broker_id))
        .with_brokers(
            cluster
                .brokers
                .iter()
                .map(|broker| {
                    DescribeClusterBroker::default()
                        .with_broker_id(broker_id(broker.id))
                        .with_host(StrBytes::from_string(broker.host.clone()))
                        .with_port(i32::from(broker.port))
                })
                .collect(),
        )
}

fn topic_metadata(topic: &TopicView) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(Some(topic_name(&topic.name))).with_topic_id(topic.id.0).with_partitions(
        topic
            .partitions
            .iter()
            .map(|partition| {
                let error = match partition.leader {
                    Some(_) => 0,
                    None => ErrorCode::LeaderNotAvailable.kafka_code(),
                };
                MetadataResponsePartition::default()
                    .with_error_code(error)
                    .with_partition_index(i32::try_from(partition.partition).unwrap_or(i32::MAX))
                    .with_leader_id(partition.leader.map_or(kafka_protocol::messages::BrokerId(-1), broker_id))
                    .with_leader_epoch(i32::try_from(partition.leader_epoch).unwrap_or(i32::MAX))
                    .with_replica_nodes(partition.replicas.iter().copied().map(broker_id).collect())
                    .with_isr_nodes(partition.isr.iter().copied().map(broker_id).collect())
            })
            .collect(),
    )
}
