//! A broker's membership in the metadata group: starts the Raft node on
//! its sled data, forms the cluster on first start, and proposes commands
//! from any broker (forwarding them to the controller, the Raft leader).
//!
//! Forming the cluster: every broker of a fresh cluster initializes it with
//! the same member list (from `--peers`); openraft accepts that on every
//! node, and refuses it on a node that already has state, so starting the
//! same command twice, or restarting a broker, never forms a second
//! cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_proto::internal::metadata_forwarding_client::MetadataForwardingClient;
use brook_proto::internal::metadata_forwarding_server::MetadataForwardingServer;
use brook_proto::internal::raft_transport_server::RaftTransportServer;
use brook_proto::internal::Payload;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster_state::ClusterState;
use crate::command::{BrokerId, Command, CommandError, CommandResult, CommandV1, Outcome};
use crate::incarnation::{BrokerEpoch, ClusterId, DirectoryId, Incarnation};
use crate::liveness::Liveness;
use crate::log_store::LogStore;
use crate::network::{
    ClusterSecret, GrpcNetwork, PeerChannels, MAX_FORWARDED_MESSAGE_BYTES, MAX_RAFT_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES,
};
use crate::raft_service::{ForwardingService, RaftTransportService};
use crate::raft_types::{NodeId, Raft};
use crate::state_machine::StateMachineStore;

#[derive(Debug, Clone)]
pub struct MetadataConfig {
    pub node_id: NodeId,
    /// Every voter, this node included: id -> address of its broker port.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the Raft log and state machine live (a sled database).
    pub data_dir: PathBuf,
    /// Raft leader heartbeats. Default 100 ms.
    pub heartbeat_interval: Duration,
    /// The election timeout range. openraft (0.9) lets a follower that
    /// knew a leader start an election only after `election_timeout_max`
    /// (its lease on that leader) plus a random time in this range, so the
    /// default 250-500 ms means a new controller 0.75-1 s after the old
    /// one's last heartbeat (it was 1.2-1.6 s at 400-800 ms).
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long `propose` tries (elections, forwarding) before it reports
    /// that no majority answers. Default 5 s.
    pub propose_timeout: Duration,
    /// Snapshot (and compact the log) after this many entries. Default 1,000.
    pub snapshot_after_entries: u64,
    /// How often a broker heartbeats the controller. Default 100 ms.
    pub broker_heartbeat_interval: Duration,
    /// Carried by every call to a peer (Raft, forwarding, heartbeats).
    pub cluster_secret: ClusterSecret,
    /// A broker not heard from for this long is declared dead. Default 800 ms:
    /// failover in about a second (Kafka's default is 9 s).
    pub session_timeout: Duration,
}

impl MetadataConfig {
    pub fn new(node_id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> MetadataConfig {
        MetadataConfig {
            node_id,
            peers,
            data_dir,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(250),
            election_timeout_max: Duration::from_millis(500),
            propose_timeout: Duration::from_secs(5),
            snapshot_after_entries: 1000,
            broker_heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(800),
            cluster_secret: ClusterSecret::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata storage: {0}")]
    Storage(String),
    #[error("metadata Raft group: {0}")]
    Raft(String),
    #[error("a majority of the {voters} brokers did not answer within {waited:?}")]
    NoQuorum { voters: usize, waited: Duration },
    #[error("this broker ({node_id}) is not in the peer list {peers:?}")]
    NotAPeer { node_id: NodeId, peers: Vec<NodeId> },
    #[error("the metadata group refused this broker's registration: {0}")]
    RegistrationRefused(CommandError),
    /// Refused before it was proposed: a Raft entry this large would stall
    /// the group (see `MAX_COMMAND_BYTES`).
    #[error("the metadata command is {bytes} bytes encoded, over the {limit}-byte limit of one metadata entry")]
    CommandTooLarge { bytes: usize, limit: usize },
}

/// What a broker says of itself when it registers (see `incarnation.rs`).
#[derive(Debug, Clone)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// Where clients and peers reach it.
    pub address: String,
    /// This start of the process.
    pub incarnation: Incarnation,
    /// The data directory's id (`meta.properties`).
    pub directory_id: DirectoryId,
    /// The cluster the directory joined, if it has joined one.
    pub cluster_id: Option<ClusterId>,
    /// Replicas that may lack what they acknowledged (see `CommandV1::RegisterBroker`).
    pub lost_replicas: Vec<(brook_record::TopicId, u32)>,
    /// Where Kafka clients reach it; empty without a Kafka listener.
    pub kafka_address: String,
}

/// A broker's liveness heartbeat: its id, and the epoch of the
/// incarnation sending it (one from an older incarnation is ignored).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct BrokerHeartbeat {
    pub(crate) broker_id: BrokerId,
    pub(crate) broker_epoch: BrokerEpoch,
}

/// Why a proposal on this node did not commit here; travels back to a
/// forwarding broker as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ProposeError {
    /// Another node leads; send it there.
    ForwardTo {
        leader: NodeId,
        address: String,
    },
    /// No leader known right now (an election is on).
    NoLeader,
    Fatal(String),
}

struct Inner {
    config: MetadataConfig,
    raft: Raft,
    state: watch::Receiver<Arc<ClusterState>>,
    /// Controller only: when each broker last heartbeated, and since when
    /// this node has been controller (see `liveness.rs`).
    liveness: Mutex<Liveness>,
    /// Whether this broker has registered since it started and its state
    /// has applied that registration: until then its state may be an old
    /// one (from disk), which it must not act on as a leader.
    caught_up: watch::Sender<bool>,
    /// This broker sends no heartbeat before this time (it cannot write
    /// its data directory): see [`MetadataNode::withhold_heartbeats_until`].
    withheld_until: Mutex<Option<Instant>>,
    /// The epoch this broker's registration got (0 until it registered).
    broker_epoch: AtomicU64,
    /// One channel per peer for heartbeats and forwarded commands.
    channels: PeerChannels,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode").field("node_id", &self.config.node_id).finish_non_exhaustive()
    }
}

/// A handle on this broker's metadata node; clone it freely.
#[derive(Debug, Clone)]
pub struct MetadataNode {
    inner: Arc<Inner>,
}

impl MetadataNode {
    /// Opens the node's storage, starts Raft, and initializes the cluster
    /// if this node has never been part of one.
    pub async fn start(config: MetadataConfig) -> Result<MetadataNode, MetadataError> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(MetadataError::NotAPeer {
                node_id: config.node_id,
                peers: config.peers.keys().copied().collect(),
            });
        }
        let data_dir = config.data_dir.clone();
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            let storage = |error: sled::Error| MetadataError::Storage(error.to_string());
            let db = sled::open(&data_dir).map_err(storage)?;
            let log_store = LogStore::open(&db).map_err(storage)?;
            Ok::<_, MetadataError>((log_store, StateMachineStore::open(&db)?))
        })
        .await
        .map_err(|error| MetadataError::Storage(error.to_string()))??;
        let state = state_machine.subscribe();
        let raft_config = openraft::Config {
            cluster_name: "brook".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            max_in_snapshot_log_to_keep: 100,
            // Sizes and times said, not left to openraft's defaults (see
            // `network.rs`): appends of at most 64 entries (split further
            // by size), snapshots in 1 MiB chunks, and 20 s for the last
            // chunk, which includes installing the state (50 MiB of
            // state takes seconds in a debug build; the 200 ms default
            // made a far-behind broker start over forever).
            max_payload_entries: 64,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: 20_000,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|error| MetadataError::Raft(error.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            GrpcNetwork::new(config.peers.clone(), config.cluster_secret.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|error| MetadataError::Raft(error.to_string()))?;

        let members: BTreeMap<NodeId, BasicNode> =
            config.peers.iter().map(|(id, address)| (*id, BasicNode::new(address))).collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(node_id = config.node_id, "initialized a new metadata group"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(node_id = config.node_id, "rejoining the existing metadata group")
            }
            Err(error) => return Err(MetadataError::Raft(error.to_string())),
        }
        let caught_up = watch::channel(false).0;
        let inner = Inner {
            config,
            raft,
            state,
            liveness: Mutex::default(),
            caught_up,
            withheld_until: Mutex::default(),
            broker_epoch: AtomicU64::new(0),
            channels: PeerChannels::default(),
        };
        Ok(MetadataNode { inner: Arc::new(inner) })
    }

    /// The internal gRPC services to serve on the broker's port.
    pub fn services(&self) -> (RaftTransportServer<RaftTransportService>, MetadataForwardingServer<ForwardingService>) {
        (
            RaftTransportServer::new(RaftTransportService { raft: self.inner.raft.clone(), node: self.clone() })
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            MetadataForwardingServer::new(ForwardingService { node: self.clone() })
                .max_decoding_message_size(MAX_FORWARDED_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_FORWARDED_MESSAGE_BYTES),
        )
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The secret this node's calls to peers carry (the broker's own
    /// broker-to-broker calls carry it too).
    pub fn cluster_secret(&self) -> ClusterSecret {
        self.inner.config.cluster_secret.clone()
    }

    /// The applied state, and every later one. Take what you need from a
    /// `borrow()` and drop it at once: never hold one across an `.await`
    /// or while borrowing again (the state machine's publish waits for
    /// every borrow, and a second borrow queued behind that publish never
    /// comes: a deadlock of the whole metadata group on this broker).
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.state.clone()
    }

    /// Whether this broker's state is known to be current (see
    /// `run_broker_duties`), and every change of that.
    pub fn caught_up(&self) -> watch::Receiver<bool> {
        self.inner.caught_up.subscribe()
    }

    /// Returns once this broker's state is known to be current (see
    /// `caught_up`); never, if the node stops first.
    pub async fn wait_caught_up(&self) {
        let mut caught_up = self.caught_up();
        if caught_up.wait_for(|current| *current).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The epoch of this broker's incarnation (see `incarnation.rs`): 0
    /// until its registration committed.
    pub fn broker_epoch(&self) -> BrokerEpoch {
        BrokerEpoch(self.inner.broker_epoch.load(Ordering::Acquire))
    }

    /// The controller (Raft leader), if one is known.
    pub fn controller(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    pub fn is_controller(&self) -> bool {
        self.controller() == Some(self.node_id())
    }

    /// Proposes `command` and waits until it is committed and applied,
    /// forwarding it to the controller if this broker is not it, and
    /// riding out elections, for at most `propose_timeout`. The result is
    /// the state machine's: it may be a refusal.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, MetadataError> {
        Ok(self.propose_indexed(command).await?.0)
    }

    /// `propose`, also telling the metadata log index the command was
    /// applied at (see [`MetadataNode::wait_applied`]).
    pub async fn propose_indexed(&self, command: Command) -> Result<(CommandResult, u64), MetadataError> {
        command.check_size()?;
        let timeout = self.inner.config.propose_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let no_quorum = || MetadataError::NoQuorum { voters: self.inner.config.peers.len(), waited: timeout };
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(remaining, self.propose_here(command.clone())).await;
            let error = match attempt {
                Err(_) => return Err(no_quorum()),
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(ProposeError::ForwardTo { leader, address })) => {
                    match tokio::time::timeout(
                        remaining,
                        forward(&self.inner.channels, &address, &command, &self.inner.config.cluster_secret),
                    )
                    .await
                    {
                        Err(_) => return Err(no_quorum()),
                        Ok(Ok(Ok(result))) => return Ok(result),
                        Ok(Ok(Err(ProposeError::Fatal(message)))) => return Err(MetadataError::Raft(message)),
                        Ok(Ok(Err(error))) => format!("{error:?}"),
                        Ok(Err(error)) => format!("forwarding to controller {leader} at {address}: {error}"),
                    }
                }
                Ok(Err(ProposeError::NoLeader)) => "no controller elected yet".to_string(),
                Ok(Err(ProposeError::Fatal(message))) => return Err(MetadataError::Raft(message)),
            };
            tracing::debug!(%error, "proposal not placed yet; retrying");
            if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(no_quorum());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until this broker's state has applied the metadata log up to
    /// `index`, at most `timeout`; whether it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut state = self.inner.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|state| state.applied_index >= index))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Proposes on this node's Raft (it must be the leader).
    pub(crate) async fn propose_here(&self, command: Command) -> Result<(CommandResult, u64), ProposeError> {
        match self.inner.raft.client_write(command).await {
            Ok(response) => Ok((response.data, response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                match (forward.leader_id, forward.leader_node) {
                    (Some(leader), Some(node)) => {
                        // This broker's own route to the controller first
                        // (see `GrpcNetwork`).
                        let address = self.inner.config.peers.get(&leader).cloned().unwrap_or(node.addr);
                        Err(ProposeError::ForwardTo { leader, address })
                    }
                    _ => Err(ProposeError::NoLeader),
                }
            }
            Err(error) => Err(ProposeError::Fatal(error.to_string())),
        }
    }

    /// Notes that `controller` (the Raft leader) was just heard from.
    pub(crate) fn controller_heard_from(&self, controller: NodeId) {
        let Ok(controller) = u32::try_from(controller).map(BrokerId) else { return };
        let mut liveness = self.inner.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        liveness.last_controller_contact = Some((controller, Instant::now()));
    }

    /// Records a broker's heartbeat (meaningful on the controller),
    /// unless it comes from an older incarnation than the state holds: a
    /// process that was replaced keeps no broker alive.
    pub(crate) fn heartbeat_received(&self, heartbeat: BrokerHeartbeat) {
        let current = self.inner.state.borrow().brokers.get(&heartbeat.broker_id).map(|broker| broker.broker_epoch);
        if current.is_some_and(|current| heartbeat.broker_epoch < current) {
            tracing::debug!(broker_id = %heartbeat.broker_id, epoch = %heartbeat.broker_epoch, ?current, "ignoring a heartbeat from an older incarnation");
            return;
        }
        self.inner
            .liveness
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .last_seen
            .insert(heartbeat.broker_id, Instant::now());
    }

    /// Runs this broker's part in the cluster until `shutdown`: registers
    /// it (a new incarnation: see `incarnation.rs`), marks its state
    /// caught up once that registration is applied here, heartbeats the
    /// controller, and, while this node is the controller, declares brokers
    /// dead or alive by their heartbeats. Fails only if the metadata group
    /// refuses the registration (a data directory of another cluster).
    pub async fn run_broker_duties(
        &self,
        registration: BrokerRegistration,
        shutdown: CancellationToken,
    ) -> Result<(), MetadataError> {
        let broker_id = registration.broker_id;
        let command = Command::V1(CommandV1::RegisterBroker {
            broker_id,
            address: registration.address,
            incarnation: registration.incarnation,
            directory_id: registration.directory_id,
            cluster_id: registration.cluster_id,
            lost_replicas: registration.lost_replicas,
            kafka_address: registration.kafka_address,
        });
        // A retry repeats the same incarnation, so a registration that
        // committed although its answer was lost is not taken for a restart.
        let (outcome, registered_at) = loop {
            match self.propose_indexed(command.clone()).await {
                Ok((Err(refused), _)) => return Err(MetadataError::RegistrationRefused(refused)),
                Ok((Ok(outcome), index)) => break (outcome, index),
                Err(error) => tracing::warn!(%error, "registering with the controller; retrying"),
            }
            if shutdown.is_cancelled() {
                return Ok(());
            }
        };
        if let Outcome::Registered { broker_epoch, cluster_id, moved } = &outcome {
            self.inner.broker_epoch.store(broker_epoch.0, Ordering::Release);
            tracing::info!(%broker_id, %broker_epoch, %cluster_id, moved = moved.len(), "registered a new incarnation with the metadata group");
            for change in moved {
                tracing::info!(%broker_id, topic = %change.topic, partition = change.partition, leader = ?change.leader, epoch = %change.leader_epoch, "restart fenced: leadership moved");
            }
        }
        // The state read from disk at start may be long outdated (this
        // broker may think it still leads what others lead now): it only
        // counts as current once it holds this registration.
        while !self.wait_applied(registered_at, Duration::from_secs(1)).await {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            tracing::info!(%broker_id, index = registered_at, "waiting for the metadata to catch up");
        }
        self.inner.caught_up.send_replace(true);
        tracing::info!(%broker_id, index = registered_at, "metadata caught up: taking up partition leadership");
        let mut ticks = tokio::time::interval(self.inner.config.broker_heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            self.send_heartbeat(broker_id).await;
            self.act_as_controller().await;
        }
    }

    /// Sends no heartbeat before `until`: the controller declares this
    /// broker dead when its session runs out, which moves every leadership
    /// it holds to another in-sync replica (a broker that cannot write its
    /// data directory gives up what it leads, as Kafka moves leadership
    /// off a failed log directory). Its next heartbeat after brings it back.
    pub fn withhold_heartbeats_until(&self, until: Instant) {
        let mut withheld = self.inner.withheld_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *withheld = Some(withheld.map_or(until, |current| current.max(until)));
    }

    async fn send_heartbeat(&self, broker_id: BrokerId) {
        let withheld = *self.inner.withheld_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if withheld.is_some_and(|until| Instant::now() < until) {
            return;
        }
        let Some(controller) = self.controller() else { return };
        let heartbeat = BrokerHeartbeat { broker_id, broker_epoch: self.broker_epoch() };
        if controller == self.node_id() {
            self.heartbeat_received(heartbeat);
            return;
        }
        let Some(address) = self.inner.config.peers.get(&controller) else { return };
        let Ok(channel) = self.inner.channels.get(address) else { return };
        let Ok(json) = serde_json::to_vec(&heartbeat) else { return };
        let mut request = tonic::Request::new(Payload { json: json.into(), ..Payload::default() });
        request.set_timeout(self.inner.config.broker_heartbeat_interval * 2);
        self.inner.config.cluster_secret.authorize(&mut request);
        if let Err(status) = MetadataForwardingClient::new(channel).heartbeat(request).await {
            tracing::debug!(controller, %status, "heartbeat not delivered");
        }
    }

    async fn act_as_controller(&self) {
        let changes = {
            let mut liveness = self.inner.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !self.is_controller() {
                liveness.step_down();
                return;
            }
            let state = self.inner.state.borrow().clone();
            liveness.judge(&state, self.term(), self.node_id(), Instant::now(), self.inner.config.session_timeout)
        };
        for change in changes {
            tracing::info!(?change, "controller: broker liveness changed");
            if let Err(error) = self.propose(Command::V1(change)).await {
                tracing::warn!(%error, "controller could not record a liveness change");
            }
        }
    }

    /// Kafka's controlled shutdown: stops heartbeating, asks the
    /// controller to move every leadership this broker holds to another
    /// in-sync replica (and to take it out of every ISR), and waits until
    /// this broker's own state shows it leads nothing, for at most
    /// `timeout`. Whether it got there. A partition with no other in-sync
    /// replica is left without a leader until this broker returns, as a
    /// crash would leave it.
    pub async fn controlled_shutdown(&self, broker_id: BrokerId, timeout: Duration) -> bool {
        let started = tokio::time::Instant::now();
        self.withhold_heartbeats_until(Instant::now() + Duration::from_secs(24 * 3600));
        let leads_nothing = |state: &ClusterState| {
            state
                .topics
                .values()
                .flat_map(|topic| &topic.partitions)
                .all(|partition| partition.leader != Some(broker_id))
        };
        let proposed = tokio::time::timeout(
            timeout,
            self.propose_indexed(Command::V1(CommandV1::ControlledShutdown { broker_id })),
        )
        .await;
        match proposed {
            Ok(Ok((Ok(_), index))) => {
                let remaining = timeout.saturating_sub(started.elapsed());
                if !self.wait_applied(index, remaining).await {
                    return false;
                }
            }
            Ok(Ok((Err(error), _))) => {
                tracing::warn!(%error, "the controller refused the controlled shutdown");
                return false;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "controlled shutdown not committed");
                return false;
            }
            Err(_) => return false,
        }
        let state = self.inner.state.borrow().clone();
        leads_nothing(&state)
    }

    /// Stops Raft (the storage stays as it is, for a restart).
    pub async fn shutdown(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "metadata Raft did not stop cleanly");
        }
    }
}

async fn forward(
    channels: &PeerChannels,
    address: &str,
    command: &Command,
    secret: &ClusterSecret,
) -> Result<Result<(CommandResult, u64), ProposeError>, String> {
    let channel = channels.get(address).map_err(|error| error.to_string())?;
    let json = serde_json::to_vec(command).map_err(|error| error.to_string())?;
    let mut request = tonic::Request::new(Payload { json: json.into(), ..Payload::default() });
    secret.authorize(&mut request);
    let reply = MetadataForwardingClient::new(channel)
        .max_decoding_message_size(MAX_FORWARDED_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_FORWARDED_MESSAGE_BYTES)
        .propose(request)
        .await
        .map_err(|status| status.message().to_string())?;
    serde_json::from_slice(&reply.into_inner().json).map_err(|error| error.to_string())
}
