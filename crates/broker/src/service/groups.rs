//! `brook.v1.Groups`: committed consumer offsets.

use std::sync::Arc;

use brook_proto::v1::groups_server::Groups;
use brook_proto::v1::{
    CommitOffsetsRequest, CommitOffsetsResponse, CommittedOffset as WireCommittedOffset, FetchOffsetsRequest,
    FetchOffsetsResponse,
};
use brook_record::TopicPartition;
use tonic::{Request, Response, Status};

use crate::error::BrokerError;
use crate::topics::TopicRegistry;

/// The longest group id and commit metadata accepted, in bytes.
const MAX_GROUP_ID_BYTES: usize = 255;
const MAX_METADATA_BYTES: usize = 4096;

#[derive(Debug)]
pub struct GroupsService {
    pub(crate) registry: Arc<TopicRegistry>,
}

fn validate_group_id(group_id: &str) -> Result<(), BrokerError> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_BYTES || group_id.contains('\0') {
        return Err(BrokerError::InvalidRequest(format!(
            "group id '{group_id}' must be 1-{MAX_GROUP_ID_BYTES} bytes without NUL"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Groups for GroupsService {
    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id))]
    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let request = request.into_inner();
        validate_group_id(&request.group_id)?;
        let mut commits = Vec::with_capacity(request.offsets.len());
        for commit in request.offsets {
            if commit.offset < 0 {
                return Err(BrokerError::InvalidRequest(format!(
                    "committed offset {} for {}-{} is negative",
                    commit.offset, commit.topic, commit.partition
                ))
                .into());
            }
            if commit.metadata.len() > MAX_METADATA_BYTES {
                return Err(BrokerError::InvalidRequest(format!(
                    "commit metadata is {} bytes, over the {MAX_METADATA_BYTES}-byte limit",
                    commit.metadata.len()
                ))
                .into());
            }
            commits.push(brook_metadata::OffsetCommit {
                topic: commit.topic,
                partition: commit.partition,
                offset: commit.offset,
                metadata: commit.metadata,
            });
        }
        self.registry.commit_offsets(request.group_id, commits).await?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id))]
    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let request = request.into_inner();
        validate_group_id(&request.group_id)?;
        let wanted =
            request.partitions.into_iter().map(|wanted| TopicPartition::new(wanted.topic, wanted.partition)).collect();
        let offsets = self
            .registry
            .committed_offsets(&request.group_id, wanted)
            .into_iter()
            .map(|(partition, committed)| {
                let (offset, metadata) = committed.map_or((-1, String::new()), |c| (c.offset, c.metadata));
                WireCommittedOffset {
                    topic: partition.topic.to_string(),
                    partition: partition.partition,
                    offset,
                    metadata,
                }
            })
            .collect();
        Ok(Response::new(FetchOffsetsResponse { offsets }))
    }
}
