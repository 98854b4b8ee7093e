//! The broker's implementations of `brook-replication`'s traits (as an
//! openraft application implements `RaftNetwork`): [`GrpcLeaderClient`]
//! reaches a leader over `brook.internal.v1.Replication`, and
//! [`MetadataIsrProposer`] asks the controller for ISR changes through the
//! metadata group. Conversions between the wire's fields and the replica's
//! types happen here and in `service/replication.rs`, nowhere else.

use std::time::Duration;

use brook_metadata::{BrokerEpoch, ClusterSecret, Command, CommandError, CommandV1, MetadataNode};
use brook_proto::internal::replication_client::ReplicationClient;
use brook_proto::internal::{self as wire};
use brook_record::{LeaderEpoch, Offset, TopicPartition};
use brook_replication::{
    EpochEndQuery, FetchedPartition, IsrChangeOutcome, IsrProposal, IsrProposer, LeaderClient, LeaderEpochEnd,
    LeaderRefusal, NetworkError, ReplicaFetchRequest, ReplicatedData,
};
use tonic::transport::{Channel, Endpoint};

use crate::service::admin::wire_offset;

/// How long a replica fetch may take beyond its own long-poll wait.
const FETCH_GRACE: Duration = Duration::from_secs(5);
/// The largest replica fetch answer decoded.
const MAX_FETCH_RESPONSE_BYTES: usize = 256 << 20;

/// A leader broker, reached over gRPC, by this broker's current
/// incarnation (its fetches carry the broker epoch `metadata` holds).
#[derive(Debug, Clone)]
pub struct GrpcLeaderClient {
    client: ReplicationClient<Channel>,
    secret: ClusterSecret,
    metadata: MetadataNode,
}

impl GrpcLeaderClient {
    /// A client for the broker at `address`; connects on first use (and
    /// again after a failure).
    pub fn connect_lazy(address: &str, metadata: MetadataNode) -> Result<GrpcLeaderClient, tonic::transport::Error> {
        let secret = metadata.cluster_secret();
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            // Fetch answers in frames of up to 256 KiB: this client
            // decodes through tonic, which joins the frames, and consumers
            // that did read 1 KiB records 2-13% slower with 4 MiB frames.
            .max_frame_size(256 << 10)
            .connect_lazy();
        let client = ReplicationClient::new(channel).max_decoding_message_size(MAX_FETCH_RESPONSE_BYTES);
        Ok(GrpcLeaderClient { client, secret, metadata })
    }
}

/// An offset from the wire; a negative one is the leader's bug, not data.
fn offset_from_wire(offset: i64, what: &str) -> Result<Offset, NetworkError> {
    u64::try_from(offset).map(Offset).map_err(|_| NetworkError(format!("the leader sent a negative {what}: {offset}")))
}

impl LeaderClient for GrpcLeaderClient {
    async fn fetch(&self, request: ReplicaFetchRequest) -> Result<Vec<FetchedPartition>, NetworkError> {
        let max_wait = request.max_wait;
        let wire_request = wire::ReplicaFetchRequest {
            follower_id: request.follower.0,
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
            max_bytes: request.max_bytes_per_partition,
            broker_epoch: self.metadata.broker_epoch().0,
            partitions: request
                .partitions
                .iter()
                .map(|fetch| wire::PartitionFetch {
                    topic: fetch.partition.topic.to_string(),
                    partition: fetch.partition.partition,
                    fetch_offset: wire_offset(fetch.fetch_offset),
                    leader_epoch: fetch.leader_epoch.0,
                    topic_id: fetch.topic_id.as_bytes().to_vec().into(),
                })
                .collect(),
        };
        let mut call = tonic::Request::new(wire_request);
        call.set_timeout(max_wait + FETCH_GRACE);
        self.secret.authorize(&mut call);
        let response =
            self.client.clone().fetch(call).await.map_err(|status| NetworkError(status.message().to_string()))?;
        response
            .into_inner()
            .partitions
            .into_iter()
            .map(|data| {
                let partition = TopicPartition::new(data.topic, data.partition);
                let outcome = if data.error.is_empty() {
                    Ok(ReplicatedData {
                        records: data.records,
                        high_watermark: offset_from_wire(data.high_watermark, "high watermark")?,
                        log_start_offset: offset_from_wire(data.log_start_offset, "log start offset")?,
                    })
                } else {
                    let log_start_offset = (data.error == brook_record::ErrorCode::OffsetOutOfRange.name())
                        .then(|| offset_from_wire(data.log_start_offset, "log start offset"))
                        .transpose()?;
                    Err(LeaderRefusal { code_name: data.error, message: data.message, log_start_offset })
                };
                Ok(FetchedPartition { partition, outcome })
            })
            .collect()
    }

    async fn epoch_end_offset(&self, query: EpochEndQuery) -> Result<LeaderEpochEnd, NetworkError> {
        let request = wire::EpochEndOffsetRequest {
            topic: query.partition.topic.to_string(),
            partition: query.partition.partition,
            leader_epoch: query.epoch.0,
            current_leader_epoch: query.current_leader_epoch.0,
            topic_id: query.topic_id.as_bytes().to_vec().into(),
        };
        let mut request = tonic::Request::new(request);
        self.secret.authorize(&mut request);
        let answer = self
            .client
            .clone()
            .epoch_end_offset(request)
            .await
            .map_err(|status| NetworkError(status.message().to_string()))?
            .into_inner();
        if !answer.error.is_empty() {
            return Err(NetworkError(format!("refused: {}", answer.error)));
        }
        Ok(LeaderEpochEnd {
            epoch: u32::try_from(answer.leader_epoch).ok().map(LeaderEpoch),
            end_offset: offset_from_wire(answer.end_offset, "end offset")?,
        })
    }
}

/// ISR changes proposed to the controller through the metadata group.
#[derive(Debug, Clone)]
pub struct MetadataIsrProposer {
    metadata: MetadataNode,
}

impl MetadataIsrProposer {
    pub fn new(metadata: MetadataNode) -> MetadataIsrProposer {
        MetadataIsrProposer { metadata }
    }
}

impl IsrProposer for MetadataIsrProposer {
    async fn propose(&self, proposal: IsrProposal) -> Option<IsrChangeOutcome> {
        let command = CommandV1::ChangeIsr {
            topic: proposal.partition.topic.to_string(),
            topic_id: proposal.topic_id,
            partition: proposal.partition.partition,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            isr: proposal.isr.clone(),
            joining: proposal.joining.map(|(broker_id, epoch)| (broker_id, BrokerEpoch(epoch))),
        };
        match self.metadata.propose(Command::V1(command)).await {
            Ok(Ok(_)) => Some(IsrChangeOutcome::Committed),
            Ok(Err(CommandError::StalePartitionEpoch { current, .. })) => {
                tracing::debug!(partition = %proposal.partition, built_on = proposal.partition_epoch, current, "ISR change built on an old version");
                Some(IsrChangeOutcome::Stale)
            }
            Ok(Err(refused)) => {
                tracing::debug!(partition = %proposal.partition, %refused, "ISR change refused");
                Some(IsrChangeOutcome::Refused)
            }
            Err(error) => {
                tracing::warn!(partition = %proposal.partition, %error, "ISR change unanswered");
                None
            }
        }
    }
}
