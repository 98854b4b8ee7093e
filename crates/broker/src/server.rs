//! Wiring the broker together and serving it: open the catalog and the
//! logs, bind the port, serve the four Brook services plus gRPC health and
//! reflection, run log maintenance, and on shutdown close every log
//! cleanly.

use std::sync::Arc;
use std::time::Duration;

use brook_proto::v1::admin_server::AdminServer;
use brook_proto::v1::groups_server::GroupsServer;
use brook_proto::v1::metadata_server::MetadataServer;
use brook_proto::v1::records_server::RecordsServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use brook_metadata::{MetadataConfig, MetadataNode};

use crate::catalog::Catalog;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metrics::{serve_metrics, Metrics};
use crate::service::admin::AdminService;
use crate::service::groups::GroupsService;
use crate::service::metadata::MetadataService;
use crate::service::records::RecordsService;
use crate::service::replication::ReplicationService;
use crate::service::NodeInfo;
use crate::topics::TopicRegistry;
use brook_proto::internal::replication_server::ReplicationServer;

/// HTTP/2 windows sized for 128 KiB+ batches: the defaults (64 KiB) would
/// stall every large produce or fetch on a window update.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// The largest HTTP/2 DATA frame peers may send us (default 16 KiB): a
/// 1 MiB produce request then travels as 4 frames, not 64.
pub const MAX_FRAME_BYTES: u32 = 256 << 10;

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
}

/// Runs a broker until `shutdown` is cancelled, then closes its logs.
pub async fn serve(config: BrokerConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| BrokerError::Catalog(format!("creating data dir {}: {error}", config.data_dir.display())))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { address: config.listen, source })?;
    let local_address = listener.local_addr().map_err(|source| ServeError::Bind { address: config.listen, source })?;
    let advertised = config.advertised_address.clone().unwrap_or_else(|| local_address.to_string());

    let metadata_node = if config.peers.is_empty() {
        None
    } else {
        let peers = config.peers.iter().map(|(id, address)| (u64::from(*id), address.clone())).collect();
        let mut metadata_config = MetadataConfig::new(u64::from(config.id), peers, config.data_dir.join("metadata"));
        metadata_config.session_timeout = Duration::from_millis(config.session_timeout_ms);
        metadata_config.broker_heartbeat_interval = Duration::from_millis(config.heartbeat_interval_ms);
        Some(MetadataNode::start(metadata_config).await.map_err(|error| BrokerError::NoController(error.to_string()))?)
    };
    let opening = Arc::clone(&config);
    let opening_metadata = metadata_node.clone();
    let (registry, cluster_id) = tokio::task::spawn_blocking(move || -> Result<_, BrokerError> {
        match opening_metadata {
            Some(metadata) => {
                let registry = TopicRegistry::open_cluster(&opening.data_dir, metadata, opening.id)?;
                Ok((Arc::new(registry), "brook-cluster".to_string()))
            }
            None => {
                let catalog = Catalog::open(&opening.data_dir.join("catalog"))?;
                let cluster_id = catalog.cluster_id()?;
                Ok((Arc::new(TopicRegistry::open_local(&opening.data_dir, catalog, opening.id)?), cluster_id))
            }
        }
    })
    .await
    .map_err(|_| BrokerError::ShuttingDown)??;

    let node = Arc::new(NodeInfo {
        broker_id: config.id,
        address: advertised.clone(),
        cluster_id,
        metadata: metadata_node.clone(),
        default_replication_factor: config.default_replication_factor,
        default_min_insync_replicas: config.default_min_insync_replicas,
    });

    let metrics = Arc::new(Metrics::new(config.id));
    let limit = config.max_request_bytes;
    let admin = AdminServer::new(AdminService { registry: Arc::clone(&registry), node: Arc::clone(&node) })
        .max_decoding_message_size(limit);
    let records_service = Arc::new(RecordsService {
        registry: Arc::clone(&registry),
        config: Arc::clone(&config),
        shutdown: shutdown.clone(),
        metrics: Arc::clone(&metrics),
    });
    let records = RecordsServer::from_arc(Arc::clone(&records_service))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let groups = GroupsServer::new(GroupsService { registry: Arc::clone(&registry) }).max_decoding_message_size(limit);
    let metadata = MetadataServer::new(MetadataService { registry: Arc::clone(&registry), node: Arc::clone(&node) });

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<RecordsServer<RecordsService>>().await;
    health_reporter.set_serving::<AdminServer<AdminService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(brook_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ServeError::Reflection(error.to_string()))?;

    if let Some(address) = config.metrics_listen {
        let (metrics, registry, shutdown) = (Arc::clone(&metrics), Arc::clone(&registry), shutdown.clone());
        let controller_id = config.id;
        tokio::spawn(async move {
            if let Err(error) = serve_metrics(address, metrics, registry, controller_id, shutdown).await {
                tracing::error!(%address, %error, "metrics endpoint failed");
            }
        });
    }
    if let Some(address) = config.raw_listen {
        let listener =
            tokio::net::TcpListener::bind(address).await.map_err(|source| ServeError::Bind { address, source })?;
        tracing::info!(%address, "serving the prototype plain-TCP transport");
        tokio::spawn(crate::raw::serve(listener, records_service, shutdown.clone()));
    }
    if let Some(metadata) = &metadata_node {
        crate::follower::spawn_fetchers(Arc::clone(&registry), &config.peers, shutdown.clone());
        let lag_max = Duration::from_millis(config.replica_lag_max_ms);
        tokio::spawn(crate::follower::shrink_lagging_isrs(
            Arc::clone(&registry),
            metadata.clone(),
            lag_max,
            shutdown.clone(),
        ));
    }
    if let Some(metadata) = &metadata_node {
        tokio::spawn(follow_cluster_state(metadata.clone(), Arc::clone(&registry), shutdown.clone()));
        let (metadata, shutdown) = (metadata.clone(), shutdown.clone());
        let (broker_id, address) = (config.id, advertised.clone());
        tokio::spawn(async move { metadata.run_broker_duties(broker_id, address, shutdown).await });
    }
    tokio::spawn(every(
        HIGH_WATERMARK_CHECKPOINT_INTERVAL,
        "HW checkpoint",
        Arc::clone(&registry),
        shutdown.clone(),
        TopicRegistry::checkpoint_high_watermarks,
    ));
    let maintenance = tokio::spawn(every(
        config.log_maintenance_interval(),
        "log maintenance",
        Arc::clone(&registry),
        shutdown.clone(),
        maintain_logs,
    ));

    tracing::info!(
        broker_id = config.id,
        address = %local_address,
        data_dir = %config.data_dir.display(),
        topics = registry.list().len(),
        "brook broker {} ready on {local_address}",
        config.id
    );
    let internal = metadata_node.as_ref().map(MetadataNode::services);
    let (raft_transport, forwarding) = match internal {
        Some((raft, forwarding)) => (Some(raft), Some(forwarding)),
        None => (None, None),
    };
    let replication = metadata_node.as_ref().map(|_| {
        ReplicationServer::new(ReplicationService { registry: Arc::clone(&registry) })
            .max_encoding_message_size(256 << 20)
            .max_decoding_message_size(limit)
    });
    let served = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .add_optional_service(raft_transport)
        .add_optional_service(forwarding)
        .add_optional_service(replication)
        .add_service(health)
        .add_service(reflection)
        .add_service(admin)
        .add_service(records)
        .add_service(groups)
        .add_service(metadata)
        // Nagle off on every accepted connection: without it a small fetch
        // or produce answer waits for the peer's delayed ACK (~40 ms). The
        // builder's own tcp_nodelay does not reach a listener we bound.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    shutdown.cancel();
    if let Err(error) = maintenance.await {
        tracing::error!(%error, "log maintenance task failed");
    }
    if let Some(metadata) = &metadata_node {
        metadata.shutdown().await;
    }
    let closing = Arc::clone(&registry);
    tokio::task::spawn_blocking(move || closing.close()).await.map_err(|_| BrokerError::ShuttingDown)?;
    tracing::info!(broker_id = config.id, "broker stopped; logs closed cleanly");
    served.map_err(ServeError::from)
}

/// Applies every new cluster state to the hosted partitions, and the state
/// again once the metadata is caught up (which lifts the fence on leading),
/// until shutdown.
async fn follow_cluster_state(metadata: MetadataNode, registry: Arc<TopicRegistry>, shutdown: CancellationToken) {
    let (mut state, mut caught_up) = (metadata.state(), metadata.caught_up());
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            changed = caught_up.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let current = state.borrow_and_update().clone();
        let registry = Arc::clone(&registry);
        if let Err(error) = tokio::task::spawn_blocking(move || registry.reconcile(&current)).await {
            tracing::error!(%error, "applying the cluster state panicked");
        }
    }
}

/// How often moved high watermarks are checkpointed.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Runs blocking `work` on the registry every `interval` (on the blocking
/// pool, one run at a time), until shutdown. `what` names it in logs.
async fn every(
    interval: Duration,
    what: &'static str,
    registry: Arc<TopicRegistry>,
    shutdown: CancellationToken,
    work: fn(&TopicRegistry),
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
fn maintain_logs(registry: &TopicRegistry) {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64);
    registry.maintain(now_ms);
}
