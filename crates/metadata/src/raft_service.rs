//! The server side of the internal services: peers' Raft RPCs handed to
//! the local Raft, and commands forwarded by non-controller brokers.

use brook_proto::internal::metadata_forwarding_server::MetadataForwarding;
use brook_proto::internal::raft_transport_server::RaftTransport;
use brook_proto::internal::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::command::Command;
use crate::node::MetadataNode;
use crate::raft_types::Raft;

fn decode<T: DeserializeOwned>(request: Request<Payload>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|error| Status::invalid_argument(format!("malformed internal message: {error}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let json = serde_json::to_vec(value).map_err(|error| Status::internal(format!("encoding a reply: {error}")))?;
    Ok(Response::new(Payload { json: json.into() }))
}

/// `brook.internal.v1.RaftTransport`, backed by the local Raft. Notes
/// when the controller was last heard from (an accepted append), which a
/// node that becomes controller uses to judge its dead predecessor.
#[derive(Clone)]
pub struct RaftTransportService {
    pub(crate) raft: Raft,
    pub(crate) node: MetadataNode,
}

impl std::fmt::Debug for RaftTransportService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftTransportService")
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let request: openraft::raft::AppendEntriesRequest<crate::raft_types::TypeConfig> = decode(request)?;
        let leader = request.vote.leader_id().voted_for();
        let response = self.raft.append_entries(request).await;
        if let (Ok(answer), Some(leader)) = (&response, leader) {
            if !matches!(answer, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                self.node.controller_heard_from(leader);
            }
        }
        encode(&response)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        encode(&self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        encode(&self.raft.install_snapshot(decode(request)?).await)
    }
}

/// `brook.internal.v1.MetadataForwarding`: proposes a forwarded command
/// here if this broker is the controller (else the caller retries with the
/// leader it learns from the error).
#[derive(Debug, Clone)]
pub struct ForwardingService {
    pub(crate) node: MetadataNode,
}

#[tonic::async_trait]
impl MetadataForwarding for ForwardingService {
    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let command: Command = decode(request)?;
        encode(&self.node.propose_here(command).await)
    }

    async fn heartbeat(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let heartbeat: crate::node::BrokerHeartbeat = decode(request)?;
        self.node.heartbeat_received(heartbeat);
        encode(&self.node.is_controller())
    }
}
