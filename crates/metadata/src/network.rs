//! The Raft transport between brokers (openraft's `RaftNetwork`): each
//! RPC is one unary call of `brook.internal.v1.RaftTransport` on the peer
//! broker's port, the openraft message postcard-encoded inside (compact
//! binary; JSON turned each snapshot byte into 3-4 characters). A peer
//! that cannot be reached is reported as unreachable, so openraft backs
//! off instead of spinning.
//!
//! Sizes are bounded on both ends: no Raft message over
//! [`MAX_RAFT_MESSAGE_BYTES`] is accepted; an append whose entries would
//! encode to more than [`APPEND_ENTRIES_TARGET_BYTES`] is refused here
//! with openraft's `PayloadTooLarge` and a hint of how many fit, so
//! openraft sends fewer; snapshots go in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`]. A single entry always fits: admission keeps
//! every command under `MAX_COMMAND_BYTES` (see `command.rs`).

use brook_proto::internal::raft_transport_client::RaftTransportClient;
use brook_proto::internal::Payload;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::command::MAX_COMMAND_BYTES;
use crate::raft_types::{NodeId, TypeConfig};

/// The largest Raft message a broker accepts or sends: well above the
/// largest append (`APPEND_ENTRIES_TARGET_BYTES`, or one entry of at most
/// `MAX_COMMAND_BYTES`) and a snapshot chunk.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 16 << 20;
/// An append's entries beyond this many encoded bytes are split across
/// several appends.
pub const APPEND_ENTRIES_TARGET_BYTES: usize = 4 << 20;
/// The largest forwarded command or its answer (JSON, so up to a few
/// times `MAX_COMMAND_BYTES`).
pub const MAX_FORWARDED_MESSAGE_BYTES: usize = 8 << 20;
/// Snapshots are sent in chunks of this many bytes, whatever the state's
/// size (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

const _: () = assert!(MAX_COMMAND_BYTES + (64 << 10) < APPEND_ENTRIES_TARGET_BYTES);
const _: () = assert!(APPEND_ENTRIES_TARGET_BYTES < MAX_RAFT_MESSAGE_BYTES);
const _: () = assert!((SNAPSHOT_CHUNK_BYTES as usize) + (64 << 10) < MAX_RAFT_MESSAGE_BYTES);

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

/// One channel per peer address for heartbeats and forwarded commands,
/// made on first use and kept (a channel reconnects by itself): a new
/// connection per 100 ms heartbeat costs a handshake each time, and under
/// load a late handshake looks like a dead broker.
#[derive(Debug, Default)]
pub(crate) struct PeerChannels(std::sync::Mutex<std::collections::HashMap<String, Channel>>);

impl PeerChannels {
    pub(crate) fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = channel_to(address)?;
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
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

/// A lazily connecting channel to a peer's broker port (tonic reconnects
/// it when the connection drops): made once per peer and kept.
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
        let encoded = postcard::to_stdvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_encoded(Payload { postcard: encoded.into(), ..Payload::default() }, option, call).await
    }

    /// `send` of a message already encoded.
    async fn send_encoded<Resp, E, Call, Reply>(
        &mut self,
        payload: Payload,
        option: &RPCOption,
        call: Call,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        Call: FnOnce(RaftTransportClient<Channel>, tonic::Request<Payload>) -> Reply,
        Reply: std::future::Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let channel = channel_to(&self.address).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                let client = RaftTransportClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
                self.client = Some(client.clone());
                client
            }
        };
        let mut request = tonic::Request::new(payload);
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
            postcard::from_bytes(&reply.into_inner().postcard).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let encoded = postcard::to_stdvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if encoded.len() > APPEND_ENTRIES_TARGET_BYTES && rpc.entries.len() > 1 {
            let fit = entries_that_fit(&rpc.entries, APPEND_ENTRIES_TARGET_BYTES);
            tracing::debug!(entries = rpc.entries.len(), bytes = encoded.len(), fit, "append too large; splitting");
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit as u64)));
        }
        let payload = Payload { postcard: encoded.into(), ..Payload::default() };
        self.send_encoded(payload, &option, |mut client, request| async move { client.append_entries(request).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        // The chunk's bytes travel beside the rest, as they are.
        let mut rpc = rpc;
        let data = std::mem::take(&mut rpc.data);
        let encoded = postcard::to_stdvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let payload = Payload { postcard: encoded.into(), snapshot_data: data.into(), ..Payload::default() };
        self.send_encoded(payload, &option, |mut client, request| async move { client.install_snapshot(request).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut client, request| async move { client.vote(request).await }).await
    }
}

/// How many of `entries`, from the first, encode to at most `target`
/// bytes: at least one, and fewer than all (the caller found all too many).
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>], target: usize) -> usize {
    let mut total = 0;
    let mut fit = 0;
    for entry in entries {
        total += postcard::to_stdvec(entry).map_or(target, |bytes| bytes.len());
        if total > target {
            break;
        }
        fit += 1;
    }
    fit.clamp(1, entries.len().saturating_sub(1).max(1))
}
