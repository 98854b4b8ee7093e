//! Wiring the broker together and serving it, in the shape of mini-redis's
//! `server.rs`: [`serve`] reads as its steps (check the data directory,
//! bind, join the metadata group, open the replicas, start the background
//! duties, serve until asked to stop, hand the leaderships over (Kafka's
//! controlled shutdown, `stop_when_asked`), stop every task, close every
//! log). The health service says SERVING only between the metadata
//! catching up and the request to stop (`report_health`).
//!
//! Ownership: every task the node starts, background duties and the ones
//! handlers start (an ISR proposal), is spawned on one [`TaskTracker`] and
//! awaited at shutdown; each stops when the shared `CancellationToken` is
//! cancelled. Connections on both listeners are bounded (see
//! `connections.rs`): `max_connections` each, a deadline for the first
//! request, an idle timeout, 256 streams each, and one memory budget for
//! the request bodies of all of them.

use std::sync::Arc;
use std::time::Duration;

use brook_metadata::{BrokerRegistration, ClusterSecret, Incarnation, MetadataConfig, MetadataError, MetadataNode};
use brook_proto::internal::replication_server::ReplicationServer;
use brook_proto::v1::admin_server::AdminServer;
use brook_proto::v1::groups_server::GroupsServer;
use brook_proto::v1::metadata_server::MetadataServer;
use brook_proto::v1::records_server::RecordsServer;
use brook_record::{BrokerId, TopicId};
use brook_replication::{run_fetcher, shrink_lagging_isrs};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;

use crate::config::BrokerConfig;
use crate::connections::{
    ActivityLayer, ConnectionLimits, LimitedIncoming, RequestBudget, HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT,
    MAX_STREAMS_PER_CONNECTION,
};
use crate::data_dir::{self, DirectoryIdentity};
use crate::error::BrokerError;
use crate::fast_path::{RecordsPath, ReplicaFetchPath};
use crate::group_coordinator::{GroupCoordinator, GroupSettings};
use crate::internal_auth::check_secret;
use crate::kafka_core::KafkaCore;
use crate::metrics::{serve_metrics, Metrics, RpcTimingLayer};
use crate::producer_ids::{keep_producer_keys, KeyExpiry, ProducerIds};
use crate::replica_manager::{partition_dir, ReplicaManager, TOPICS_DIR};
use crate::replica_network::{GrpcLeaderClient, MetadataIsrProposer};
use crate::service::admin::AdminService;
use crate::service::groups::GroupsService;
use crate::service::metadata::MetadataService;
use crate::service::records::RecordsService;
use crate::service::replication::ReplicationService;
use crate::service::NodeInfo;
use crate::topic_config::TopicConfig;

/// HTTP/2 windows sized for 128 KiB+ batches: the defaults (64 KiB) would
/// stall every large produce or fetch on a window update.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// The largest HTTP/2 DATA frame peers may send us (default 16 KiB): a
/// 1 MiB produce request then travels as one frame, not 64. Frames cost
/// per frame on both sides (measured: 1 KiB records 6-13% faster than with
/// 256 KiB frames; BENCHMARKS.md); what a peer may have in flight stays
/// bounded by the windows above, whatever the frame size.
const MAX_FRAME_BYTES: u32 = 4 << 20;
/// The largest replica fetch answer encoded (many partitions of 8 MiB).
const MAX_REPLICA_FETCH_RESPONSE_BYTES: usize = 256 << 20;
/// How often moved high watermarks are checkpointed.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a broker that handed its leaderships over keeps answering
/// before it stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(200);

/// Why the broker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Registration(MetadataError),
}

/// Runs a broker until `stop` is cancelled: then, in a cluster, it hands
/// its leaderships over (Kafka's controlled shutdown, bounded by
/// `controlled_shutdown_timeout_ms`), stops its tasks and closes its logs.
pub async fn serve(config: BrokerConfig, stop: CancellationToken) -> Result<(), ServeError> {
    // `stop` asks for the end; `shutdown` ends every task, once the
    // leaderships are handed over.
    let shutdown = CancellationToken::new();
    config.validate().map_err(ServeError::Config)?;
    let secret = match &config.cluster_secret {
        Some(secret) => ClusterSecret::new(&secret.0)
            .ok_or_else(|| ServeError::Config("the cluster secret must be printable ASCII".into()))?,
        None => ClusterSecret::default(),
    };
    let config = Arc::new(config);
    let directory = data_dir::open(&config.data_dir, BrokerId(config.id))?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServeError::Bind { address: config.listen, source })?;
    let local_address = listener.local_addr().map_err(|source| ServeError::Bind { address: config.listen, source })?;
    let advertised = config.advertised_address.clone().unwrap_or_else(|| local_address.to_string());
    let kafka_listener = match config.kafka_listen().map_err(ServeError::Config)? {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|source| ServeError::Bind { address, source })?;
            let local = listener.local_addr().map_err(|source| ServeError::Bind { address, source })?;
            let advertised = config.kafka_advertised_address.clone().unwrap_or_else(|| local.to_string());
            Some((listener, advertised))
        }
        None => None,
    };
    let internal_listener = match config.internal_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|source| ServeError::Bind { address, source })?),
        None => None,
    };

    let metadata = tokio::select! {
        started = start_metadata(&config, &advertised, &secret) => started?,
        () = stop.cancelled() => return Ok(()),
    };
    // Before the registry opens (and creates) the replicas' directories:
    // which of them this broker's last known state assigns here are gone.
    let rebooted = data_dir::rebooted_since_last_start(&config.data_dir);
    let lost_replicas = lost_replicas(&config.data_dir, BrokerId(config.id), &metadata, rebooted);
    let registry = open_registry(&config, &metadata).await?;
    let node = Arc::new(NodeInfo {
        broker_id: BrokerId(config.id),
        address: advertised.clone(),
        metadata: metadata.clone(),
        default_replication_factor: config.default_replication_factor,
        default_min_insync_replicas: config.default_min_insync_replicas,
        request_budget: Arc::new(RequestBudget::new(
            config.request_memory_budget_bytes,
            Duration::from_millis(config.request_body_timeout_ms),
        )),
    });
    let metrics = Arc::new(Metrics::new(config.id));
    let tasks = TaskTracker::new();
    tasks.spawn(stop_when_asked(
        stop.clone(),
        shutdown.clone(),
        metadata.clone(),
        BrokerId(config.id),
        (!config.peers.is_empty()).then(|| Duration::from_millis(config.controlled_shutdown_timeout_ms)),
    ));
    let registration = BrokerRegistration {
        broker_id: BrokerId(config.id),
        address: advertised.clone(),
        incarnation: Incarnation::random(),
        directory_id: directory.directory_id,
        cluster_id: directory.cluster_id,
        lost_replicas,
        kafka_address: kafka_listener.as_ref().map(|(_, advertised)| advertised.clone()).unwrap_or_default(),
    };
    let refused = Arc::new(std::sync::OnceLock::new());
    let joining = Joining { registration, directory, refused: Arc::clone(&refused) };
    start_joining(&tasks, &config, &metadata, joining, &stop, &shutdown);
    start_duties(&tasks, &config, &metadata, &registry, &metrics, &shutdown);
    let settings = GroupSettings {
        retention: Duration::from_millis(config.offsets_retention_ms),
        check_interval: Duration::from_millis(config.offsets_retention_check_interval_ms),
        max_size: config.group_max_size,
    };
    let coordinator = Arc::new(GroupCoordinator::new(metadata.clone(), settings));
    tasks.spawn(Arc::clone(&coordinator).run(shutdown.clone()));
    let key_expiry = KeyExpiry {
        expiration: Duration::from_millis(config.producer_key_expiration_ms),
        check_interval: Duration::from_millis(config.producer_key_expiration_check_interval_ms),
    };
    tasks.spawn(keep_producer_keys(metadata.clone(), Arc::clone(&registry), key_expiry, shutdown.clone()));
    if let Some(internal) = internal_listener {
        let (config, registry, node, tracker, stop) =
            (Arc::clone(&config), Arc::clone(&registry), Arc::clone(&node), tasks.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(error) = serve_internal(internal, &config, &registry, &node, secret, &tracker, &stop).await {
                tracing::error!(%error, "internal listener failed");
                stop.cancel();
            }
        });
    }
    if config.peers.is_empty() {
        // The only voter needs nothing from the network to catch up, so
        // clients first meet it registered and current (as a Kafka broker
        // opens its listeners once it has caught up). A cluster member
        // may have no majority yet, and its clients should hear that from
        // it, so it does not wait like this.
        tokio::select! {
            () = metadata.wait_caught_up() => {}
            () = shutdown.cancelled() => {}
        }
    }

    tracing::info!(
        broker_id = config.id,
        address = %local_address,
        data_dir = %config.data_dir.display(),
        topics = registry.list().len(),
        "brook broker {} ready on {local_address}",
        config.id
    );
    let parts = ClientServiceParts {
        registry: &registry,
        node: &node,
        metrics: &metrics,
        coordinator: &coordinator,
        kafka_listener,
    };
    let served = serve_grpc(listener, &config, parts, &tasks, &stop, &shutdown).await;

    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    metadata.shutdown().await;
    let closing = Arc::clone(&registry);
    tokio::task::spawn_blocking(move || closing.close()).await.map_err(|_| BrokerError::ShuttingDown)?;
    tracing::info!(broker_id = config.id, "broker stopped; logs closed cleanly");
    if let Some(refusal) = Arc::into_inner(refused).and_then(std::sync::OnceLock::into_inner) {
        return Err(ServeError::Registration(refusal));
    }
    served
}

/// The replicas that `metadata`'s state (as this broker last applied it)
/// assigns here but that may not hold everything they acknowledged: those
/// whose directories are gone (though the data directory is the one this
/// broker had: a new directory is lost as a whole, and the metadata group
/// tells that by its id), and, after the machine restarted (`rebooted`),
/// those not closed cleanly whose topics do not fsync every append: a
/// power loss took what they had not fsynced. The metadata group never
/// lets such a replica lead as the last in-sync one.
fn lost_replicas(
    data_dir: &std::path::Path,
    me: BrokerId,
    metadata: &MetadataNode,
    rebooted: bool,
) -> Vec<(TopicId, u32)> {
    let (state, topics_dir) = (metadata.state().borrow().clone(), data_dir.join(TOPICS_DIR));
    let mut lost = Vec::new();
    for topic in state.topics.values() {
        let fsyncs_every_append = TopicConfig::from_map(&topic.configs)
            .is_ok_and(|config| config.flush_policy == brook_storage::FlushPolicy::Always);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if !partition.replicas.contains(&me) {
                continue;
            }
            let dir = partition_dir(&topics_dir, &topic.name, topic.id, index as u32);
            let why = if !dir.is_dir() {
                "its directory is gone"
            } else if rebooted && !fsyncs_every_append && !brook_storage::PartitionLog::closed_cleanly(&dir) {
                "the machine restarted since it was last closed uncleanly, so what it had not fsynced may be gone"
            } else {
                continue;
            };
            tracing::warn!(topic = %topic.name, partition = index, dir = %dir.display(), "a replica may lack what it acknowledged ({why}): it never leads as the last in-sync replica");
            lost.push((topic.id, index as u32));
        }
    }
    lost
}

/// Starts this broker's member of the metadata group: with `--peers`, the
/// cluster's voters; without, a group of one voter (this broker), on the
/// very same code path (as Kafka's single-node KRaft).
async fn start_metadata(
    config: &BrokerConfig,
    advertised: &str,
    secret: &ClusterSecret,
) -> Result<MetadataNode, BrokerError> {
    let peers = if config.peers.is_empty() {
        std::collections::BTreeMap::from([(u64::from(config.id), advertised.to_string())])
    } else {
        config.peers.iter().map(|(id, address)| (u64::from(*id), address.clone())).collect()
    };
    let mut metadata_config = MetadataConfig::new(u64::from(config.id), peers, config.data_dir.join("metadata"));
    metadata_config.session_timeout = Duration::from_millis(config.session_timeout_ms);
    metadata_config.snapshot_after_entries = config.metadata_snapshot_after_entries;
    metadata_config.broker_heartbeat_interval = Duration::from_millis(config.heartbeat_interval_ms);
    metadata_config.cluster_secret = secret.clone();
    MetadataNode::start(metadata_config).await.map_err(|error| BrokerError::NoController(error.to_string()))
}

/// Opens the replicas the metadata on disk assigns here (recovering their
/// logs) on the blocking pool.
async fn open_registry(config: &BrokerConfig, metadata: &MetadataNode) -> Result<Arc<ReplicaManager>, BrokerError> {
    let (data_dir, metadata, broker_id) = (config.data_dir.clone(), metadata.clone(), BrokerId(config.id));
    let registry = tokio::task::spawn_blocking(move || ReplicaManager::open(&data_dir, metadata, broker_id))
        .await
        .map_err(|_| BrokerError::ShuttingDown)??;
    Ok(Arc::new(registry))
}

/// The node's background duties, each an owned task that stops on
/// `shutdown`: following the cluster state, one replica fetcher per other
/// broker, the ISR shrink check, HW checkpoints, log maintenance and the
/// metrics endpoint (the broker's part in the metadata group is
/// `start_joining`'s).
fn start_duties(
    tasks: &TaskTracker,
    config: &Arc<BrokerConfig>,
    metadata: &MetadataNode,
    registry: &Arc<ReplicaManager>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) {
    tasks.spawn(follow_cluster_state(metadata.clone(), Arc::clone(registry), shutdown.clone()));
    start_fetchers(tasks, config, registry, metadata, shutdown);
    tasks.spawn(shrink_lagging_isrs(
        Arc::clone(registry),
        Arc::new(MetadataIsrProposer::new(metadata.clone())),
        Duration::from_millis(config.replica_lag_max_ms),
        shutdown.clone(),
    ));
    tasks.spawn(every(
        HIGH_WATERMARK_CHECKPOINT_INTERVAL,
        "HW checkpoint",
        Arc::clone(registry),
        shutdown.clone(),
        ReplicaManager::checkpoint_high_watermarks,
    ));
    tasks.spawn(every(
        config.log_maintenance_interval(),
        "log maintenance",
        Arc::clone(registry),
        shutdown.clone(),
        maintain_logs,
    ));
    if let Some(address) = config.metrics_listen {
        let (metrics, registry, stop) = (Arc::clone(metrics), Arc::clone(registry), shutdown.clone());
        tasks.spawn(async move {
            if let Err(error) = serve_metrics(address, metrics, registry, stop).await {
                tracing::error!(%address, %error, "metrics endpoint failed");
            }
        });
    }
}

/// How this start joins the cluster: its registration (a new
/// incarnation), the directory it registers from, and where a refusal is
/// kept for `serve` to return.
struct Joining {
    registration: BrokerRegistration,
    directory: DirectoryIdentity,
    refused: Arc<std::sync::OnceLock<MetadataError>>,
}

/// The broker's part in the metadata group (registration, heartbeats, the
/// controller's liveness duty) and, once its registration is applied, the
/// cluster's id written into its data directory. A refused registration
/// (a directory of another cluster) stops the broker: `stop` is cancelled
/// and the refusal kept in `joining.refused`.
fn start_joining(
    tasks: &TaskTracker,
    config: &BrokerConfig,
    metadata: &MetadataNode,
    joining: Joining,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let Joining { registration, directory, refused } = joining;
    let (duties, stop_now, ending) = (metadata.clone(), stop.clone(), shutdown.clone());
    tasks.spawn(async move {
        if let Err(error) = duties.run_broker_duties(registration, ending).await {
            tracing::error!(%error, "stopping: this broker cannot join the cluster");
            let _ = refused.set(error);
            stop_now.cancel();
        }
    });
    let (joined, data_dir, ending) = (metadata.clone(), config.data_dir.clone(), shutdown.clone());
    tasks.spawn(async move {
        tokio::select! {
            () = joined.wait_caught_up() => {}
            () = ending.cancelled() => return,
        }
        let Some(cluster_id) = joined.state().borrow().cluster_id else { return };
        let written =
            tokio::task::spawn_blocking(move || data_dir::record_cluster_id(&data_dir, &directory, cluster_id)).await;
        if let Ok(Err(error)) = written {
            tracing::error!(%error, "could not write the cluster id into the data directory");
        }
    });
}

/// One replica fetcher per other broker of the cluster: it follows every
/// partition that broker leads and this one hosts.
fn start_fetchers(
    tasks: &TaskTracker,
    config: &BrokerConfig,
    registry: &Arc<ReplicaManager>,
    metadata: &MetadataNode,
    shutdown: &CancellationToken,
) {
    let me = registry.broker_id();
    for (&leader, address) in config.peers.iter().filter(|(id, _)| BrokerId(**id) != me) {
        match GrpcLeaderClient::connect_lazy(address, metadata.clone()) {
            Ok(client) => {
                let fetcher = run_fetcher(me, BrokerId(leader), client, Arc::clone(registry), shutdown.clone());
                tasks.spawn(fetcher);
            }
            Err(error) => tracing::error!(leader, %address, %error, "cannot reach a peer for replication"),
        }
    }
}

/// What the client services are built on.
struct ClientServiceParts<'a> {
    registry: &'a Arc<ReplicaManager>,
    node: &'a Arc<NodeInfo>,
    metrics: &'a Arc<Metrics>,
    coordinator: &'a Arc<GroupCoordinator>,
    /// The Kafka listener and the address it advertises, if it is on.
    kafka_listener: Option<(TcpListener, String)>,
}

/// Serves the client services (records, admin, groups, metadata), gRPC
/// health and reflection on `listener` until `shutdown`. Nothing a broker
/// asks of another is served here (see [`serve_internal`]).
async fn serve_grpc(
    listener: TcpListener,
    config: &Arc<BrokerConfig>,
    parts: ClientServiceParts<'_>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let ClientServiceParts { registry, node, metrics, coordinator, kafka_listener } = parts;
    let limit = config.max_request_bytes;
    let admin = AdminServer::new(AdminService { registry: Arc::clone(registry), node: Arc::clone(node) })
        .max_decoding_message_size(limit);
    let records_service = Arc::new(RecordsService {
        registry: Arc::clone(registry),
        config: Arc::clone(config),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(metrics),
        producer_ids: Arc::new(ProducerIds::new(registry.metadata().clone(), registry.broker_id())),
    });
    if let Some((listener, advertised)) = kafka_listener {
        let core = KafkaCore {
            records: Arc::clone(&records_service),
            admin: AdminService { registry: Arc::clone(registry), node: Arc::clone(node) },
            registry: Arc::clone(registry),
            node: Arc::clone(node),
            kafka_address: advertised.clone(),
            shutdown: shutdown.clone(),
        };
        let settings = brook_kafka::ListenerConfig {
            max_request_bytes: config.kafka_max_request_bytes,
            body_timeout: Duration::from_millis(config.request_body_timeout_ms),
            shutdown: shutdown.clone(),
        };
        let accepted = incoming(listener, config, shutdown).map(|connection| {
            connection.map(|connection| {
                let (peer, activity) = (connection.peer(), connection.activity());
                let (reader, writer) = connection.into_split();
                brook_kafka::Accepted {
                    reader,
                    writer,
                    peer,
                    activity: activity as Arc<dyn brook_kafka::RequestActivity>,
                }
            })
        });
        tracing::info!(address = %advertised, "serving Kafka's wire protocol");
        tasks.spawn(brook_kafka::serve(accepted, Arc::new(core), settings, tasks.clone()));
    }
    let records_path = RecordsPath::layer(Arc::clone(&records_service), limit);
    let records =
        RecordsServer::from_arc(records_service).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let groups =
        GroupsServer::new(GroupsService::new(Arc::clone(registry), Arc::clone(coordinator), Arc::clone(metrics)))
            .max_decoding_message_size(limit);
    let metadata = MetadataServer::new(MetadataService { registry: Arc::clone(registry), node: Arc::clone(node) });

    let (health_reporter, health) = tonic_health::server::health_reporter();
    tasks.spawn(report_health(health_reporter, registry.metadata().caught_up(), stop.clone()));
    // Reflection in both versions (v1, and the v1alpha that older grpcurl,
    // grpcui and Postman ask for), each listing the services this listener
    // serves, and only those (the internal ones are on the other port).
    let reflection_builder = || {
        let served = [
            brook_proto::v1::admin_server::SERVICE_NAME,
            brook_proto::v1::groups_server::SERVICE_NAME,
            brook_proto::v1::metadata_server::SERVICE_NAME,
            brook_proto::v1::records_server::SERVICE_NAME,
            tonic_health::pb::health_server::SERVICE_NAME,
            tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
            tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
        ];
        served.into_iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(brook_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
                .include_reflection_service(false),
            |builder, name| builder.with_service_name(name),
        )
    };
    let reflection = reflection_builder().build_v1().map_err(|error| ServeError::Reflection(error.to_string()))?;
    let reflection_v1alpha =
        reflection_builder().build_v1alpha().map_err(|error| ServeError::Reflection(error.to_string()))?;

    server_builder()
        // Connection activity and the memory budget outermost, then timing,
        // so that the calls taken by the records path are timed like every
        // other call.
        .layer(
            tower::ServiceBuilder::new()
                .layer(ActivityLayer::new(Arc::clone(&node.request_budget)))
                .layer(RpcTimingLayer::new(metrics))
                .layer(records_path)
                .into_inner(),
        )
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(admin)
        .add_service(records)
        .add_service(groups)
        .add_service(metadata)
        .serve_with_incoming_shutdown(incoming(listener, config, shutdown), shutdown.clone().cancelled_owned())
        .await
        .map_err(ServeError::from)
}

/// A server with the settings both listeners share: windows and frames
/// sized for large batches, at most 256 streams per connection, HTTP/2
/// pings to find peers that vanished (see `connections.rs`).
fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(HTTP2_PING_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_PING_TIMEOUT))
}

/// A listener's connections under the broker's limits.
fn incoming(
    listener: TcpListener,
    config: &BrokerConfig,
    shutdown: &CancellationToken,
) -> impl futures::Stream<Item = std::io::Result<crate::connections::LimitedConnection>> {
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: Duration::from_millis(config.connections_max_idle_ms),
        shutdown: shutdown.clone(),
    };
    LimitedIncoming::new(listener, limits).into_stream()
}

/// Serves what brokers ask of each other (the metadata group's Raft
/// transport, forwarding to the controller and heartbeats, replica
/// fetches) on the internal listener until `shutdown`, each call refused
/// with UNAUTHENTICATED unless it carries the cluster secret.
async fn serve_internal(
    listener: TcpListener,
    config: &Arc<BrokerConfig>,
    registry: &Arc<ReplicaManager>,
    node: &Arc<NodeInfo>,
    secret: ClusterSecret,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let replication_service = Arc::new(ReplicationService {
        registry: Arc::clone(registry),
        proposer: Arc::new(MetadataIsrProposer::new(node.metadata.clone())),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    });
    let replica_fetch_path = ReplicaFetchPath::layer(
        Arc::clone(&replication_service),
        secret.clone(),
        config.max_request_bytes,
        MAX_REPLICA_FETCH_RESPONSE_BYTES,
    );
    let check = move |request: tonic::Request<()>| check_secret(&secret, request);
    let replication = ReplicationServer::from_arc(replication_service)
        .max_encoding_message_size(MAX_REPLICA_FETCH_RESPONSE_BYTES)
        .max_decoding_message_size(config.max_request_bytes);
    let (raft_transport, forwarding) = node.metadata.services();
    server_builder()
        // Replica fetches answered with their records as read (the secret
        // checked there too); everything else through the interceptor.
        .layer(
            tower::ServiceBuilder::new()
                .layer(ActivityLayer::new(Arc::clone(&node.request_budget)))
                .layer(replica_fetch_path)
                .into_inner(),
        )
        .add_service(InterceptedService::new(raft_transport, check.clone()))
        .add_service(InterceptedService::new(forwarding, check.clone()))
        .add_service(InterceptedService::new(replication, check))
        .serve_with_incoming_shutdown(incoming(listener, config, shutdown), shutdown.clone().cancelled_owned())
        .await
        .map_err(ServeError::from)
}

/// Applies every new cluster state to the hosted partitions, and the state
/// again once the metadata is caught up (which lifts the fence on leading),
/// until shutdown.
async fn follow_cluster_state(metadata: MetadataNode, registry: Arc<ReplicaManager>, shutdown: CancellationToken) {
    let (mut state, mut caught_up) = (metadata.state(), metadata.caught_up());
    // What the registry last followed: most new states change only what
    // it does not read (committed offsets, groups, producer ids), and
    // reconciling every topic for each commit cost the coordinator a
    // tenth of its offset commits (BENCHMARKS.md).
    let mut followed: Option<Arc<brook_metadata::ClusterState>> = None;
    loop {
        let caught_up_changed = tokio::select! {
            changed = state.changed() => if changed.is_err() { return } else { false },
            changed = caught_up.changed() => if changed.is_err() { return } else { true },
            () = shutdown.cancelled() => return,
        };
        let current = state.borrow_and_update().clone();
        let unchanged =
            followed.as_ref().is_some_and(|last| last.topics == current.topics && last.brokers == current.brokers);
        if unchanged && !caught_up_changed {
            continue;
        }
        followed = Some(Arc::clone(&current));
        let registry = Arc::clone(&registry);
        if let Err(error) = tokio::task::spawn_blocking(move || registry.reconcile(&current)).await {
            tracing::error!(%error, "applying the cluster state panicked");
        }
    }
}

/// Waits for `stop`, then (in a cluster: `handover` is the bound) moves
/// this broker's leaderships to other in-sync replicas before it ends
/// every task: producers are redirected to the new leaders rather than
/// waiting out a session timeout, as after a crash.
async fn stop_when_asked(
    stop: CancellationToken,
    shutdown: CancellationToken,
    metadata: MetadataNode,
    broker_id: BrokerId,
    handover: Option<Duration>,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = shutdown.cancelled() => return,
    }
    if let Some(timeout) = handover.filter(|timeout| !timeout.is_zero()) {
        tracing::info!(%broker_id, "controlled shutdown: handing this broker's leaderships to other in-sync replicas");
        let started = std::time::Instant::now();
        if metadata.controlled_shutdown(broker_id, timeout).await {
            tracing::info!(%broker_id, elapsed_ms = started.elapsed().as_millis() as u64, "controlled shutdown: this broker leads nothing now; stopping");
            // Clients that have not heard yet still send here for a moment:
            // they get NOT_LEADER (and go to the new leader at once) rather
            // than a refused connection (and a retry backoff).
            tokio::time::sleep(SHUTDOWN_DRAIN).await;
        } else {
            tracing::warn!(%broker_id, ?timeout, "controlled shutdown did not complete in time; stopping anyway");
        }
    }
    shutdown.cancel();
}

/// The standard health service's answers: NOT_SERVING until this broker's
/// metadata has caught up (before that it leads nothing and its view of
/// the cluster may be old), SERVING after, NOT_SERVING again from the
/// moment it is asked to stop.
async fn report_health(
    reporter: tonic_health::server::HealthReporter,
    mut caught_up: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    use tonic_health::ServingStatus;
    const SERVICES: [&str; 5] = ["", "brook.v1.Records", "brook.v1.Admin", "brook.v1.Groups", "brook.v1.Metadata"];
    let set = |status: ServingStatus| {
        let reporter = reporter.clone();
        async move {
            for service in SERVICES {
                reporter.set_service_status(service, status).await;
            }
        }
    };
    set(ServingStatus::NotServing).await;
    let became_current = tokio::select! {
        seen = caught_up.wait_for(|caught_up| *caught_up) => seen.is_ok(),
        () = stop.cancelled() => false,
    };
    if became_current {
        set(ServingStatus::Serving).await;
    }
    stop.cancelled().await;
    set(ServingStatus::NotServing).await;
}

/// Runs blocking `work` on the registry every `interval` (on the blocking
/// pool, one run at a time), until shutdown. `what` names it in logs.
async fn every(
    interval: Duration,
    what: &'static str,
    registry: Arc<ReplicaManager>,
    shutdown: CancellationToken,
    work: fn(&ReplicaManager),
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let registry = Arc::clone(&registry);
        if let Err(error) = tokio::task::spawn_blocking(move || work(&registry)).await {
            tracing::error!(%error, "{what} panicked");
        }
    }
}

/// Retention and time-based flushes on every hosted log.
fn maintain_logs(registry: &ReplicaManager) {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
    registry.maintain(now_ms);
}
