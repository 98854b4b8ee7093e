//! Fetch: many partitions per request, whole batches below the high
//! watermark, a long poll until `min_bytes` or `max_wait_ms`.
//!
//! Each partition is read through the broker's read path (leadership and
//! KIP-320 epoch checks included) up to its `partition_max_bytes` and what
//! is left of the request's `max_bytes`; the first batch of the response
//! is always whole, even over `max_bytes`, so a consumer never stalls on a
//! large batch. Once the response is full, the remaining partitions are
//! answered with their offsets and no records. `last_stable_offset` is the
//! high watermark (there are no transactions), so a client that reads
//! committed (librdkafka's default) reads what one reading uncommitted
//! does. Fetch sessions (KIP-227) are not kept: `session_id` is always 0,
//! and every request names its partitions in full.

use brook_record::ErrorCode;
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use crate::core::{CoreError, Fetched, Records};
use crate::Core;

/// The longest a fetch waits, whatever it asks (Kafka caps it by the
/// client's request timeout; 30 s is librdkafka's socket timeout).
pub const MAX_WAIT_MS: u64 = 30_000;

/// The most a response carries, whatever it asks (Kafka's
/// `fetch.max.bytes`, 55 MiB by default).
pub const MAX_RESPONSE_BYTES: usize = 55 << 20;

/// One partition of the request.
struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: Option<u32>,
}

/// A Fetch answer: the response with every partition's records left
/// out (`Some(empty)`), and those records, in the order the partitions
/// appear in it (topic by topic), for [`crate::fetch_frame`] to send.
#[derive(Debug)]
pub struct FetchAnswer {
    pub response: FetchResponse,
    pub records: Vec<Records>,
}

pub async fn fetch<C: Core>(core: &C, request: FetchRequest, version: i16) -> FetchAnswer {
    let by_id = version >= 13;
    let known = if by_id { core.topics(None) } else { Vec::new() };
    let mut wanted = Vec::new();
    let mut unknown_ids = Vec::new();
    for topic in &request.topics {
        let name = if by_id {
            match known.iter().find(|known| known.id.0 == topic.topic_id) {
                Some(known) => known.name.clone(),
                None => {
                    unknown_ids
                        .push((topic.topic_id, topic.partitions.iter().map(|p| p.partition).collect::<Vec<_>>()));
                    continue;
                }
            }
        } else {
            topic.topic.0.to_string()
        };
        for partition in &topic.partitions {
            wanted.push(Wanted {
                topic: name.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: u32::try_from(partition.current_leader_epoch).ok(),
            });
        }
    }
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0).min(MAX_RESPONSE_BYTES);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let wait = u64::try_from(request.max_wait_ms).unwrap_or(0).min(MAX_WAIT_MS);
    let deadline = Instant::now() + std::time::Duration::from_millis(wait);
    let watched: Vec<(String, u32)> = wanted
        .iter()
        .filter_map(|wanted| Some((wanted.topic.clone(), u32::try_from(wanted.partition).ok()?)))
        .collect();
    let outcomes = loop {
        let outcomes = read_all(core, &wanted, max_bytes).await;
        let bytes: usize = outcomes.iter().map(|outcome| outcome.as_ref().map_or(0, |read| read.records.len())).sum();
        let refused = outcomes.iter().any(|outcome| outcome.is_err());
        if bytes >= min_bytes || refused || Instant::now() >= deadline || wanted.is_empty() {
            break outcomes;
        }
        core.wait_for_data(&watched, deadline).await;
        if Instant::now() >= deadline {
            break read_all(core, &wanted, max_bytes).await;
        }
    };
    let mut response = FetchResponse::default();
    let mut by_topic: Vec<Vec<Records>> = Vec::new();
    for (wanted, outcome) in wanted.iter().zip(outcomes) {
        let (data, records) = partition_data(wanted.partition, outcome);
        let topic_id =
            known.iter().find(|known| known.name == wanted.topic).map(|known| known.id.0).unwrap_or_default();
        let same = |entry: &&mut FetchableTopicResponse| {
            if by_id {
                entry.topic_id == topic_id
            } else {
                entry.topic.0.as_str() == wanted.topic
            }
        };
        match response.responses.iter_mut().position(|entry| same(&entry)) {
            Some(index) => {
                response.responses[index].partitions.push(data);
                by_topic[index].push(records);
            }
            None => {
                let mut entry = FetchableTopicResponse::default().with_partitions(vec![data]);
                if by_id {
                    entry.topic_id = topic_id;
                } else {
                    entry.topic = crate::metadata::topic_name(&wanted.topic);
                }
                response.responses.push(entry);
                by_topic.push(vec![records]);
            }
        }
    }
    for (topic_id, partitions) in unknown_ids {
        let refusal = CoreError::new(ErrorCode::UnknownTopicId, format!("no topic has id {topic_id}"));
        let partitions: Vec<PartitionData> =
            partitions.into_iter().map(|partition| partition_data(partition, Err(refusal.clone())).0).collect();
        by_topic.push(partitions.iter().map(|_| Records::default()).collect());
        response.responses.push(FetchableTopicResponse::default().with_topic_id(topic_id).with_partitions(partitions));
    }
    FetchAnswer { response, records: by_topic.into_iter().flatten().collect() }
}

/// Every partition read once, in request order, within the response's
/// byte budget (the first non-empty read whole, whatever its size).
async fn read_all<C: Core>(core: &C, wanted: &[Wanted], max_bytes: usize) -> Vec<Result<Fetched, CoreError>> {
    let mut left = max_bytes;
    let mut first = true;
    let mut outcomes = Vec::with_capacity(wanted.len());
    for wanted in wanted {
        let Ok(partition) = u32::try_from(wanted.partition) else {
            outcomes.push(Err(CoreError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("partition {} of '{}'", wanted.partition, wanted.topic),
            )));
            continue;
        };
        let budget = wanted.max_bytes.min(left).max(1);
        let read = core
            .read(
                &wanted.topic,
                partition,
                wanted.offset,
                u32::try_from(budget).unwrap_or(u32::MAX),
                wanted.current_leader_epoch,
            )
            .await
            .map(|mut read| {
                if !first && read.records.len() > left {
                    // The response is full: offsets only.
                    read.records = Records::default();
                }
                read
            });
        if let Ok(read) = &read {
            if !read.records.is_empty() {
                first = false;
                left = left.saturating_sub(read.records.len());
            }
        }
        outcomes.push(read);
    }
    outcomes
}

/// A partition's answer, its records left out, and those records.
fn partition_data(partition: i32, outcome: Result<Fetched, CoreError>) -> (PartitionData, Records) {
    match outcome {
        Ok(read) => (
            PartitionData::default()
                .with_partition_index(partition)
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.high_watermark)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(Bytes::new())),
            read.records,
        ),
        Err(error) => {
            tracing::debug!(partition, code = %error.code, message = %error.message, "fetch refused");
            let data = PartitionData::default()
                .with_partition_index(partition)
                .with_error_code(error.code.kafka_code())
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(Bytes::new()));
            (data, Records::default())
        }
    }
}
