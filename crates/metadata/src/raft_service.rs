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

/// How a peer encoded its message; the answer goes back the same way.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// What Raft messages travel as (see `network.rs`).
    Postcard,
    /// Forwarded commands and heartbeats, and Raft messages from brokers
    /// of the versions before postcard.
    Json,
}

fn decode<T: DeserializeOwned>(request: Request<Payload>) -> Result<(T, Encoding), Status> {
    let payload = request.into_inner();
    let decoded = if payload.postcard.is_empty() {
        serde_json::from_slice(&payload.json).map(|value| (value, Encoding::Json)).map_err(|error| error.to_string())
    } else {
        postcard::from_bytes(&payload.postcard)
            .map(|value| (value, Encoding::Postcard))
            .map_err(|error| error.to_string())
    };
    decoded.map_err(|error| Status::invalid_argument(format!("malformed internal message: {error}")))
}

fn encode<T: Serialize>(value: &T, encoding: Encoding) -> Result<Response<Payload>, Status> {
    let payload = match encoding {
        Encoding::Json => serde_json::to_vec(value)
            .map(|json| Payload { json: json.into(), ..Payload::default() })
            .map_err(|error| error.to_string()),
        Encoding::Postcard => postcard::to_stdvec(value)
            .map(|bytes| Payload { postcard: bytes.into(), ..Payload::default() })
            .map_err(|error| error.to_string()),
    };
    payload.map(Response::new).map_err(|error| Status::internal(format!("encoding a reply: {error}")))
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
        let (request, encoding): (openraft::raft::AppendEntriesRequest<crate::raft_types::TypeConfig>, _) =
            decode(request)?;
        let leader = request.vote.leader_id().voted_for();
        let response = self.raft.append_entries(request).await;
        if let (Ok(answer), Some(leader)) = (&response, leader) {
            if !matches!(answer, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                self.node.controller_heard_from(leader);
            }
        }
        encode(&response, encoding)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let (vote, encoding) = decode(request)?;
        encode(&self.raft.vote(vote).await, encoding)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let mut request = request;
        let data = std::mem::take(&mut request.get_mut().snapshot_data);
        let (mut chunk, encoding): (openraft::raft::InstallSnapshotRequest<crate::raft_types::TypeConfig>, _) =
            decode(request)?;
        if !data.is_empty() {
            chunk.data = data.into();
        }
        encode(&self.raft.install_snapshot(chunk).await, encoding)
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
        let (command, encoding): (Command, _) = decode(request)?;
        encode(&self.node.propose_here(command).await, encoding)
    }

    async fn heartbeat(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let (heartbeat, encoding): (crate::node::BrokerHeartbeat, _) = decode(request)?;
        self.node.heartbeat_received(heartbeat);
        encode(&self.node.is_controller(), encoding)
    }
}
