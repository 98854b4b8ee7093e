//! `brook.internal.v1.Replication`, the leader's side of replication:
//! followers fetch batches past their log end (which tells the leader how
//! far they are, and so moves the HW), and ask where an epoch ends before
//! they fetch after a leader change. A follower that has caught up while
//! outside the ISR is proposed back into it.

use std::sync::Arc;
use std::time::Duration;

use brook_metadata::{Command, CommandV1};
use brook_proto::internal::replication_server::Replication;
use brook_proto::internal::{
    EpochEndOffsetRequest, EpochEndOffsetResponse, PartitionData, ReplicaFetchRequest, ReplicaFetchResponse,
};
use brook_record::{Offset, TopicId};
use tonic::{Request, Response, Status};

use crate::error::BrokerError;
use crate::partition::{IsrChangeOutcome, Partition, Role};
use crate::service::admin::wire_offset;
use crate::topics::TopicRegistry;

/// The longest a replica fetch may wait for records.
const MAX_REPLICA_WAIT: Duration = Duration::from_secs(1);
/// The most bytes per partition per replica fetch.
const MAX_REPLICA_FETCH_BYTES: u32 = 8 << 20;

#[derive(Debug)]
pub struct ReplicationService {
    pub(crate) registry: Arc<TopicRegistry>,
    /// Where ISR proposals run, owned by the node.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

impl ReplicationService {
    /// One pass over the requested partitions.
    async fn read_all(&self, request: &ReplicaFetchRequest) -> Vec<PartitionData> {
        let max_bytes = u64::from(request.max_bytes.clamp(1, MAX_REPLICA_FETCH_BYTES));
        let mut answers = Vec::with_capacity(request.partitions.len());
        for wanted in &request.partitions {
            let mut data =
                PartitionData { topic: wanted.topic.clone(), partition: wanted.partition, ..PartitionData::default() };
            let result = async {
                let partition = self.registry.partition(&wanted.topic, wanted.partition)?;
                check_topic_id(&partition, &wanted.topic_id)?;
                check_epoch(&partition, wanted.leader_epoch)?;
                let fetch_offset = u64::try_from(wanted.fetch_offset).map_err(|_| {
                    BrokerError::InvalidRequest(format!("fetch offset {} is negative", wanted.fetch_offset))
                })?;
                if let Some(role) = partition.record_follower_fetch(request.follower_id, Offset(fetch_offset)) {
                    self.propose_rejoin(&partition, role, request.follower_id);
                }
                let fetched = partition.read_for_follower(wanted.fetch_offset, max_bytes).await?;
                Ok::<_, BrokerError>((fetched, partition.high_watermark()))
            }
            .await;
            match result {
                Ok((fetched, high_watermark)) => {
                    data.records = fetched.records;
                    data.high_watermark = wire_offset(high_watermark);
                    data.log_start_offset = wire_offset(fetched.log_start_offset);
                }
                Err(error) => {
                    data.error = error.code_name().to_string();
                    data.message = error.to_string();
                }
            }
            answers.push(data);
        }
        answers
    }

    /// Proposes `follower` back into the ISR, in the background (the fetch
    /// does not wait for the metadata group). Until it has a definite
    /// answer (committed at some index, or refused), it proposes again
    /// while this broker still leads at that epoch: the leader keeps
    /// counting the follower in its HW meanwhile (see `Partition`).
    fn propose_rejoin(&self, partition: &Arc<Partition>, role: Role, follower: u32) {
        let metadata = self.registry.metadata().clone();
        let shutdown = self.shutdown.clone();
        let mut isr = role.isr.clone();
        isr.push(follower);
        let (topic, index) = (partition.topic().to_string(), partition.partition());
        let command =
            CommandV1::ChangeIsr { topic: topic.clone(), partition: index, leader_epoch: role.leader_epoch, isr };
        let partition = Arc::clone(partition);
        self.tasks.spawn(async move {
            loop {
                let outcome = match metadata.propose_indexed(Command::V1(command.clone())).await {
                    Ok((Ok(_), at)) => {
                        tracing::info!(topic, partition = index, follower, "follower caught up and rejoined the ISR");
                        Some(IsrChangeOutcome::Committed(at))
                    }
                    Ok((Err(refused), _)) => {
                        tracing::debug!(topic, partition = index, follower, %refused, "ISR expansion refused");
                        Some(IsrChangeOutcome::Refused)
                    }
                    Err(error) => {
                        tracing::warn!(topic, partition = index, follower, %error, "ISR expansion unanswered; proposing again");
                        None
                    }
                };
                if outcome.is_some() || !partition.leads_at(role.leader_epoch) || shutdown.is_cancelled() {
                    partition.isr_change_settled(role.leader_epoch, Some(follower), outcome);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// Refuses a follower whose partition belongs to another topic of the same
/// name (one deleted and created again): its log is not this one's.
fn check_topic_id(partition: &Partition, requested: &[u8]) -> Result<(), BrokerError> {
    let current = partition.topic_id();
    let requested = TopicId::from_slice(requested)
        .ok_or_else(|| BrokerError::InvalidRequest(format!("a topic id has 16 bytes, not {}", requested.len())))?;
    if requested == current {
        return Ok(());
    }
    Err(BrokerError::UnknownTopicId {
        topic: partition.topic().to_string(),
        partition: partition.partition(),
        requested,
        current,
    })
}

/// Refuses a follower whose idea of the leader epoch is not this leader's:
/// its progress would be measured against another log.
fn check_epoch(partition: &Partition, requested: u32) -> Result<(), BrokerError> {
    let current = partition.role_epoch();
    if requested == current {
        return Ok(());
    }
    Err(BrokerError::FencedLeaderEpoch {
        topic: partition.topic().to_string(),
        partition: partition.partition(),
        requested,
        current,
    })
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    #[tracing::instrument(skip_all, fields(follower = request.get_ref().follower_id, partitions = request.get_ref().partitions.len()))]
    async fn fetch(&self, request: Request<ReplicaFetchRequest>) -> Result<Response<ReplicaFetchResponse>, Status> {
        let request = request.into_inner();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_REPLICA_WAIT);
        // Subscribe before reading, so an append in between still wakes us.
        let mut appended = self.registry.watch_appends();
        loop {
            let partitions = self.read_all(&request).await;
            let has_data = partitions.iter().any(|data| !data.records.is_empty() || !data.error.is_empty());
            if has_data || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(ReplicaFetchResponse { partitions }));
            }
            // Nothing yet: wait for an append (or the deadline). An idle
            // cluster costs one wake-up per max wait, not a spin.
            if tokio::time::timeout_at(deadline, appended.changed()).await.is_err() {
                let partitions = self.read_all(&request).await;
                return Ok(Response::new(ReplicaFetchResponse { partitions }));
            }
        }
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, epoch = request.get_ref().leader_epoch))]
    async fn epoch_end_offset(
        &self,
        request: Request<EpochEndOffsetRequest>,
    ) -> Result<Response<EpochEndOffsetResponse>, Status> {
        let request = request.into_inner();
        let led = self.registry.partition(&request.topic, request.partition);
        let led = led.and_then(|partition| {
            check_topic_id(&partition, &request.topic_id)?;
            check_epoch(&partition, request.current_leader_epoch)?;
            Ok(partition)
        });
        let answer = match led {
            Ok(partition) => match partition.end_offset_for_epoch(request.leader_epoch) {
                Some((epoch, end)) => EpochEndOffsetResponse {
                    leader_epoch: i64::from(epoch),
                    end_offset: wire_offset(end),
                    error: String::new(),
                },
                None => EpochEndOffsetResponse {
                    leader_epoch: -1,
                    end_offset: wire_offset(partition.log_start_offset()),
                    error: String::new(),
                },
            },
            Err(error) => {
                EpochEndOffsetResponse { leader_epoch: -1, end_offset: -1, error: error.code_name().to_string() }
            }
        };
        Ok(Response::new(answer))
    }
}
