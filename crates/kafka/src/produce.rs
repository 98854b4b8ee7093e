//! Produce: every partition's records handed to the broker's produce path
//! as they arrived (a slice of the request frame, not copied), answered
//! per partition. acks=0 gets no answer at all, as in Kafka.

use std::time::Duration;

use brook_record::ErrorCode;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::core::{Acks, CoreError, PartitionRecords, Produced};
use crate::Core;

/// The oldest Produce served: v3 is the first to carry RecordBatch v2
/// (what Brook stores); v0-v2 are advertised for clients that test for
/// them and answered UNSUPPORTED_VERSION.
pub const FIRST_SERVED_VERSION: i16 = 3;

/// The answer, or `None` for acks=0.
pub async fn produce<C: Core>(core: &C, request: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = match request.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let refusal = match acks {
        _ if version < FIRST_SERVED_VERSION => Some(CoreError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "Produce v{version} carries the old message format; Brook stores RecordBatch v2 (Produce v3 and later)"
            ),
        )),
        None => Some(CoreError::new(
            ErrorCode::InvalidRequiredAcks,
            format!("acks={} is not 0, 1 or -1 (all)", request.acks),
        )),
        Some(_) => None,
    };
    let mut named = Vec::new();
    let mut partitions = Vec::new();
    for topic in &request.topic_data {
        for data in &topic.partition_data {
            named.push((topic.name.0.to_string(), data.index));
            if let Ok(partition) = u32::try_from(data.index) {
                partitions.push(PartitionRecords {
                    topic: topic.name.0.to_string(),
                    partition,
                    records: data.records.clone().unwrap_or_default(),
                });
            }
        }
    }
    let outcomes: Vec<Result<Produced, CoreError>> = match (&refusal, acks) {
        (None, Some(acks)) => {
            let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
            core.produce(acks, timeout, partitions).await
        }
        _ => Vec::new(),
    };
    if acks == Some(Acks::None) {
        return None;
    }
    let mut outcomes = outcomes.into_iter();
    let mut response = ProduceResponse::default();
    for (topic, index) in named {
        let outcome = match (&refusal, index) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, index) if index < 0 => {
                Err(CoreError::new(ErrorCode::UnknownTopicOrPartition, format!("partition {index} of '{topic}'")))
            }
            (None, _) => outcomes.next().unwrap_or_else(|| {
                Err(CoreError::new(ErrorCode::BrokerNotAvailable, "the broker gave no answer for this partition"))
            }),
        };
        let answer = match outcome {
            Ok(produced) => PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(produced.base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(produced.log_start_offset),
            Err(error) => {
                tracing::debug!(%topic, partition = index, code = %error.code, message = %error.message, "produce refused");
                PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(error.code.kafka_code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    .with_error_message((version >= 8).then(|| StrBytes::from_string(error.message)))
            }
        };
        match response.responses.iter_mut().find(|entry| entry.name.0.as_str() == topic) {
            Some(entry) => entry.partition_responses.push(answer),
            None => response.responses.push(
                TopicProduceResponse::default()
                    .with_name(crate::metadata::topic_name(&topic))
                    .with_partition_responses(vec![answer]),
            ),
        }
    }
    Some(response)
}
