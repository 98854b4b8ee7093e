//! `brook.internal.v1.Replication`, the leader's side of replication over
//! gRPC: followers fetch batches past their log end (which tells the
//! leader how far they are, and so moves the HW), and ask where an epoch
//! ends before they fetch after a leader change. The decisions are the
//! replica's (`Replica::serve_follower_fetch`); this service converts the
//! wire's fields, long-polls across partitions, and runs the ISR expansion
//! a fetch may start on the node's task tracker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::internal::replication_server::Replication;
use brook_proto::internal::{
    EpochEndOffsetRequest, EpochEndOffsetResponse, PartitionData, ReplicaFetchRequest, ReplicaFetchResponse,
};
use brook_record::{BrokerId, LeaderEpoch, Offset, TopicId};
use brook_replication::{propose_expansion, PartitionFetch, Replica, ReplicaError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::error::BrokerError;
use crate::replica_manager::ReplicaManager;
use crate::replica_network::MetadataIsrProposer;
use crate::service::admin::wire_offset;

/// The longest a replica fetch may wait for records.
const MAX_REPLICA_WAIT: Duration = Duration::from_secs(1);
/// The most bytes per partition per replica fetch.
const MAX_REPLICA_FETCH_BYTES: u32 = 8 << 20;

#[derive(Debug)]
pub struct ReplicationService {
    pub(crate) registry: Arc<ReplicaManager>,
    pub(crate) proposer: Arc<MetadataIsrProposer>,
    /// Where ISR proposals run, owned by the node.
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// A topic id from the wire.
fn topic_id_from_wire(bytes: &[u8]) -> Result<TopicId, BrokerError> {
    TopicId::from_slice(bytes)
        .ok_or_else(|| BrokerError::InvalidRequest(format!("a topic id has 16 bytes, not {}", bytes.len())))
}

impl ReplicationService {
    /// One partition of a fetch: the leader replica's answer, and the
    /// expansion it started (run in the background: the fetch does not
    /// wait for the metadata group).
    async fn read_one(
        &self,
        (follower, follower_epoch): (BrokerId, u64),
        wanted: &brook_proto::internal::PartitionFetch,
        max_bytes: u64,
    ) -> Result<(brook_replication::FetchedRecords, Offset), BrokerError> {
        let replica = self.registry.partition(&wanted.topic, wanted.partition)?;
        let fetch = PartitionFetch {
            partition: replica.topic_partition().clone(),
            topic_id: topic_id_from_wire(&wanted.topic_id)?,
            fetch_offset: Offset(u64::try_from(wanted.fetch_offset).map_err(|_| {
                BrokerError::InvalidRequest(format!("fetch offset {} is negative", wanted.fetch_offset))
            })?),
            leader_epoch: LeaderEpoch(wanted.leader_epoch),
        };
        let (fetched, proposal) = replica.serve_follower_fetch(follower, follower_epoch, &fetch, max_bytes).await?;
        if let Some(proposal) = proposal {
            let expansion =
                propose_expansion(Arc::clone(&replica), Arc::clone(&self.proposer), proposal, self.shutdown.clone());
            self.tasks.spawn(expansion);
        }
        Ok((fetched, replica.high_watermark()))
    }

    /// A fetch counts only from the follower's current incarnation, as
    /// this broker's metadata knows it (checked on every pass of a long
    /// poll: the follower may be replaced meanwhile).
    fn check_broker_epoch(&self, request: &ReplicaFetchRequest) -> Result<(), BrokerError> {
        let broker_id = BrokerId(request.follower_id);
        let current =
            self.registry.metadata().state().borrow().brokers.get(&broker_id).map(|broker| broker.broker_epoch.0);
        match current {
            Some(current) if current == request.broker_epoch => Ok(()),
            current => Err(BrokerError::StaleBrokerEpoch {
                broker_id,
                epoch: request.broker_epoch,
                current: current.unwrap_or_default(),
            }),
        }
    }

    /// One pass over the requested partitions.
    async fn read_all(&self, request: &ReplicaFetchRequest) -> Result<Vec<PartitionData>, BrokerError> {
        self.check_broker_epoch(request)?;
        let max_bytes = u64::from(request.max_bytes.clamp(1, MAX_REPLICA_FETCH_BYTES));
        let follower = BrokerId(request.follower_id);
        let mut answers = Vec::with_capacity(request.partitions.len());
        for wanted in &request.partitions {
            let mut data =
                PartitionData { topic: wanted.topic.clone(), partition: wanted.partition, ..PartitionData::default() };
            match self.read_one((follower, request.broker_epoch), wanted, max_bytes).await {
                Ok((fetched, high_watermark)) => {
                    data.records = fetched.records;
                    data.high_watermark = wire_offset(high_watermark);
                    data.log_start_offset = wire_offset(fetched.log_start_offset);
                }
                Err(error) => {
                    data.error = error.code_name().to_string();
                    data.message = error.to_string();
                    // A follower below the log start restarts its log there.
                    if let BrokerError::Replica(ReplicaError::OffsetOutOfRange { log_start_offset, .. }) = &error {
                        data.log_start_offset = wire_offset(*log_start_offset);
                    }
                }
            }
            answers.push(data);
        }
        Ok(answers)
    }

    /// Where an epoch ends on the leader's log, for a follower at the
    /// leader's epoch and topic id.
    fn epoch_end(&self, request: &EpochEndOffsetRequest) -> Result<EpochEndOffsetResponse, BrokerError> {
        let replica: Arc<Replica> = self.registry.partition(&request.topic, request.partition)?;
        replica.check_follower(topic_id_from_wire(&request.topic_id)?, LeaderEpoch(request.current_leader_epoch))?;
        let end = replica.epoch_end(LeaderEpoch(request.leader_epoch));
        Ok(EpochEndOffsetResponse {
            leader_epoch: end.epoch.map_or(-1, |epoch| i64::from(epoch.0)),
            end_offset: wire_offset(end.end_offset),
            error: String::new(),
        })
    }
}

/// Refuses a fetch naming a partition twice: its answer would be built
/// twice (a request of a few KB could ask for gigabytes).
fn check_distinct(request: &ReplicaFetchRequest) -> Result<(), BrokerError> {
    let mut named = HashSet::with_capacity(request.partitions.len());
    for wanted in &request.partitions {
        if !named.insert((wanted.topic.as_str(), wanted.partition)) {
            return Err(BrokerError::InvalidRequest(format!(
                "partition {}-{} appears twice in one replica fetch",
                wanted.topic, wanted.partition
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    #[tracing::instrument(skip_all, fields(follower = request.get_ref().follower_id, partitions = request.get_ref().partitions.len()))]
    async fn fetch(&self, request: Request<ReplicaFetchRequest>) -> Result<Response<ReplicaFetchResponse>, Status> {
        let request = request.into_inner();
        check_distinct(&request)?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_REPLICA_WAIT);
        // Subscribe before reading, so an append in between still wakes us.
        let mut appended = self.registry.watch_appends();
        loop {
            let partitions = self.read_all(&request).await?;
            let has_data = partitions.iter().any(|data| !data.records.is_empty() || !data.error.is_empty());
            if has_data || tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(ReplicaFetchResponse { partitions }));
            }
            // Nothing yet: wait for an append (or the deadline). An idle
            // cluster costs one wake-up per max wait, not a spin.
            if tokio::time::timeout_at(deadline, appended.changed()).await.is_err() {
                let partitions = self.read_all(&request).await?;
                return Ok(Response::new(ReplicaFetchResponse { partitions }));
            }
        }
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, epoch = request.get_ref().leader_epoch))]
    async fn epoch_end_offset(
        &self,
        request: Request<EpochEndOffsetRequest>,
    ) -> Result<Response<EpochEndOffsetResponse>, Status> {
        let answer = self.epoch_end(request.get_ref()).unwrap_or_else(|error| EpochEndOffsetResponse {
            leader_epoch: -1,
            end_offset: -1,
            error: error.code_name().to_string(),
        });
        Ok(Response::new(answer))
    }
}
