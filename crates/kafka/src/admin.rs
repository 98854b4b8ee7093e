//! InitProducerId, CreateTopics, DeleteTopics and CreatePartitions,
//! through the same metadata proposals as the gRPC Admin service.

use brook_record::ErrorCode;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;

use crate::core::{CoreError, NewTopic};
use crate::Core;

/// A producer id. A transactional id is taken as the producer's key (its
/// id survives restarts and fences the previous epoch), but Brook has no
/// transactions: a client that goes on to use them finds their APIs
/// missing from ApiVersions.
pub async fn init_producer_id<C: Core>(core: &C, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let key = request.transactional_id.map(|id| id.0.to_string()).filter(|id| !id.is_empty());
    match core.init_producer_id(key).await {
        Ok((id, epoch)) => {
            InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
        }
        Err(error) => InitProducerIdResponse::default()
            .with_error_code(error.code.kafka_code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

pub async fn create_topics<C: Core>(core: &C, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = if !topic.assignments.is_empty() {
            Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "manual replica assignments are not taken; the controller places replicas",
            ))
        } else {
            let new = NewTopic {
                name: name.clone(),
                partitions: u32::try_from(topic.num_partitions).ok(),
                replication_factor: u32::try_from(topic.replication_factor).ok(),
                configs: topic
                    .configs
                    .into_iter()
                    .filter_map(|config| Some((config.name.to_string(), config.value?.to_string())))
                    .collect(),
            };
            core.create_topic(new, request.validate_only).await
        };
        results.push(match outcome {
            Ok(created) => CreatableTopicResult::default()
                .with_name(topic.name)
                .with_topic_id(created.id.0)
                .with_num_partitions(i32::try_from(created.partitions.len()).unwrap_or(i32::MAX))
                .with_replication_factor(
                    created.partitions.first().map_or(-1, |partition| partition.replicas.len() as i16),
                ),
            Err(error) => CreatableTopicResult::default()
                .with_name(topic.name)
                .with_error_code(error.code.kafka_code())
                .with_error_message(Some(StrBytes::from_string(error.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics<C: Core>(core: &C, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id), earlier versions in
    // `topic_names`.
    let known = core.topics(None);
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> =
        request.topic_names.iter().map(|name| (Some(name.0.to_string()), uuid::Uuid::nil())).collect();
    wanted.extend(
        request.topics.iter().map(|state| (state.name.as_ref().map(|name| name.0.to_string()), state.topic_id)),
    );
    let mut results = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = name.or_else(|| known.iter().find(|topic| topic.id.0 == id).map(|topic| topic.name.clone()));
        let outcome = match &name {
            Some(name) => core.delete_topic(name).await,
            None => Err(CoreError::new(ErrorCode::UnknownTopicId, format!("no topic has id {id}"))),
        };
        let id = name
            .as_ref()
            .and_then(|name| known.iter().find(|topic| &topic.name == name))
            .map_or(id, |topic| topic.id.0);
        let result = DeletableTopicResult::default()
            .with_name(name.as_deref().map(crate::metadata::topic_name))
            .with_topic_id(id);
        results.push(match outcome {
            Ok(()) => result,
            Err(error) => result
                .with_error_code(error.code.kafka_code())
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}

/// CreatePartitions: a topic grows to `count` partitions; the controller
/// places the new replicas (manual assignments are refused).
pub async fn create_partitions<C: Core>(core: &C, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = match (u32::try_from(topic.count), &topic.assignments) {
            (_, Some(assignments)) if !assignments.is_empty() => Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "manual replica assignments are not taken; the controller places replicas",
            )),
            (Err(_), _) => Err(CoreError::new(ErrorCode::InvalidPartitions, format!("{} partitions", topic.count))),
            (Ok(count), _) if request.validate_only => match core.topics(Some(std::slice::from_ref(&name))).first() {
                None => {
                    Err(CoreError::new(ErrorCode::UnknownTopicOrPartition, format!("topic '{name}' does not exist")))
                }
                Some(found) if (found.partitions.len() as u32) >= count => Err(CoreError::new(
                    ErrorCode::InvalidPartitions,
                    format!("topic '{name}' has {} partitions; it can only grow", found.partitions.len()),
                )),
                Some(_) => Ok(()),
            },
            (Ok(count), _) => core.add_partitions(&name, count).await,
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(error) => result
                .with_error_code(error.code.kafka_code())
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
