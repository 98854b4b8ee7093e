//! The Raft transport between brokers (openraft's `RaftNetwork`): each
//! RPC is one unary call of `brook.internal.v1.RaftTransport` on the peer
//! broker's port, the openraft message as JSON inside. A peer that cannot
//! be reached is reported as unreachable, so openraft backs off instead of
//! spinning.

use brook_proto::internal::raft_transport_client::RaftTransportClient;
use brook_proto::internal::Payload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::raft_types::{NodeId, TypeConfig};

/// Makes connections to peers; cheap to clone. A peer is reached at the
/// address this broker's own `--peers` names for it, else at the address in
/// the group's membership (written when the group formed): so
/// each broker can route its links its own way (a proxy, NAT; the tests put
/// a proxy on every link to cut it).
#[derive(Debug, Clone, Default)]
pub struct GrpcNetwork {
    peers: std::sync::Arc<std::collections::BTreeMap<NodeId, String>>,
    secret: ClusterSecret,
}

impl GrpcNetwork {
    pub fn new(peers: std::collections::BTreeMap<NodeId, String>, secret: ClusterSecret) -> GrpcNetwork {
        GrpcNetwork { peers: std::sync::Arc::new(peers), secret }
    }
}

/// The secret every broker-to-broker call carries (see
/// `brook_proto::CLUSTER_SECRET_KEY`); `None` in a single node, which
/// makes no such calls. Its `Debug` never shows it.
#[derive(Clone, Default)]
pub struct ClusterSecret(Option<tonic::metadata::AsciiMetadataValue>);

impl ClusterSecret {
    /// `None` if the text cannot travel in a gRPC header (it must be
    /// printable ASCII).
    pub fn new(secret: &str) -> Option<ClusterSecret> {
        let mut value = tonic::metadata::AsciiMetadataValue::try_from(secret).ok()?;
        value.set_sensitive(true);
        Some(ClusterSecret(Some(value)))
    }

    /// Puts the secret on an outgoing internal call.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(brook_proto::CLUSTER_SECRET_KEY, value.clone());
        }
    }

    /// Whether an incoming call carries this secret (compared in constant
    /// time). With no secret configured, nothing is accepted.
    pub fn admits<T>(&self, request: &tonic::Request<T>) -> bool {
        use subtle::ConstantTimeEq;
        let (Some(expected), Some(given)) = (&self.0, request.metadata().get(brook_proto::CLUSTER_SECRET_KEY)) else {
            return false;
        };
        bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ClusterSecret(set)" } else { "ClusterSecret(none)" })
    }
}

/// A connection to one peer, made lazily on first use.
#[derive(Debug)]
pub struct GrpcConnection {
    target: NodeId,
    address: String,
    client: Option<RaftTransportClient<Channel>>,
    secret: ClusterSecret,
}

pub(crate) fn channel_to(address: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(std::time::Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        let address = self.peers.get(&target).cloned().unwrap_or_else(|| node.addr.clone());
        GrpcConnection { target, address, client: None, secret: self.secret.clone() }
    }
}

impl GrpcConnection {
    /// Sends `request` with `call` and decodes the peer's
    /// `Result<Response, RaftError<_, E>>`.
    async fn send<Req, Resp, E, Call, Reply>(
        &mut self,
        request: &Req,
        option: &RPCOption,
        call: Call,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        Call: FnOnce(RaftTransportClient<Channel>, tonic::Request<Payload>) -> Reply,
        Reply: std::future::Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let json = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let channel = channel_to(&self.address).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                let client = RaftTransportClient::new(channel);
                self.client = Some(client.clone());
                client
            }
        };
        let mut request = tonic::Request::new(Payload { json: json.into() });
        request.set_timeout(option.hard_ttl());
        self.secret.authorize(&mut request);
        let reply = call(client, request).await.map_err(|status| {
            if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut client, request| async move { client.append_entries(request).await }).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.send(&rpc, &option, |mut client, request| async move { client.install_snapshot(request).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut client, request| async move { client.vote(request).await }).await
    }
}
