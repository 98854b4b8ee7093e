//! ListOffsets (an offset by time, or the log's ends) and
//! OffsetForLeaderEpoch (KIP-320: where a leader epoch ended, for a
//! consumer checking whether its position was truncated away).

use brook_record::ErrorCode;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use crate::core::{CoreError, OffsetQuery};
use crate::Core;

/// Kafka's special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn list_offsets<C: Core>(core: &C, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let query = match wanted.timestamp {
                LATEST => Some(OffsetQuery::Latest),
                EARLIEST => Some(OffsetQuery::Earliest),
                at if at >= 0 => Some(OffsetQuery::Timestamp(at)),
                // -3 (max timestamp) and later specials are not served.
                _ => None,
            };
            let outcome = match (u32::try_from(wanted.partition_index), query) {
                (Ok(partition), Some(query)) => {
                    core.list_offset(&name, partition, query, u32::try_from(wanted.current_leader_epoch).ok()).await
                }
                (Err(_), _) => Err(CoreError::new(ErrorCode::UnknownTopicOrPartition, "a negative partition")),
                (_, None) => Err(CoreError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("timestamp {} asks for an offset Brook does not look up", wanted.timestamp),
                )),
            };
            let answer = ListOffsetsPartitionResponse::default().with_partition_index(wanted.partition_index);
            partitions.push(match outcome {
                Ok((offset, timestamp)) => answer.with_offset(offset).with_timestamp(timestamp),
                Err(error) => answer.with_error_code(error.code.kafka_code()).with_offset(-1).with_timestamp(-1),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

pub async fn offset_for_leader_epoch<C: Core>(
    core: &C,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let outcome = match (u32::try_from(wanted.partition), u32::try_from(wanted.leader_epoch)) {
                (Ok(partition), Ok(epoch)) => {
                    core.epoch_end(&name, partition, epoch, u32::try_from(wanted.current_leader_epoch).ok()).await
                }
                _ => Err(CoreError::new(ErrorCode::InvalidRequest, "a negative partition or leader epoch")),
            };
            let answer = EpochEndOffset::default().with_partition(wanted.partition);
            partitions.push(match outcome {
                Ok((epoch, end_offset)) => answer.with_leader_epoch(epoch).with_end_offset(end_offset),
                Err(error) => answer.with_error_code(error.code.kafka_code()).with_leader_epoch(-1).with_end_offset(-1),
            });
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(topic.topic).with_partitions(partitions));
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
