//! `brook serve`: flags over an optional `brook.toml` over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use brook_broker::{BrokerConfig, Secret};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// This broker's id [default: 1].
    #[arg(long)]
    id: Option<u32>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where partition logs and the metadata group's state are kept [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The address clients are told to reach this broker on (default: the
    /// listen address); e.g. the host's published port in a container.
    #[arg(long)]
    advertised_address: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off by default).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// The cluster's brokers, this one included: `1=host:port,2=host:port,...`
    /// (each broker's --internal-listen address). Without it: a single node
    /// (a metadata group of one).
    #[arg(long, value_parser = parse_peers)]
    peers: Option<std::collections::BTreeMap<u32, String>>,
    /// Where other brokers reach this one (Raft, replication); required
    /// with --peers. The client port serves none of that.
    #[arg(long)]
    internal_listen: Option<SocketAddr>,
    /// A file holding the cluster secret (the same on every broker; at
    /// least 16 printable characters). BROOK_CLUSTER_SECRET, if set, wins.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Replication factor of topics created without one [default: 1].
    #[arg(long)]
    default_replication_factor: Option<u32>,
    /// min.insync.replicas of topics created without it, capped at their
    /// replication factor [default: 1].
    #[arg(long)]
    default_min_insync_replicas: Option<u32>,
    /// On SIGTERM or Ctrl-C, hand this broker's partition leaderships to
    /// other in-sync replicas for at most this long before stopping
    /// (Kafka's controlled shutdown); 0 stops at once. Default 10000.
    #[arg(long)]
    controlled_shutdown_timeout_ms: Option<u64>,
    /// A TOML file with any BrokerConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Parses `1=host:port,2=host:port`.
pub(crate) fn parse_peers(text: &str) -> Result<std::collections::BTreeMap<u32, String>, String> {
    let mut peers = std::collections::BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (id, address) = entry.split_once('=').ok_or_else(|| format!("'{entry}' is not id=host:port"))?;
        let id: u32 = id.trim().parse().map_err(|_| format!("'{id}' in '{entry}' is not a broker id"))?;
        if peers.insert(id, address.trim().to_string()).is_some() {
            return Err(format!("broker {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".to_string());
    }
    Ok(peers)
}

fn load_config(args: ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if let Some(id) = args.id {
        config.id = id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(address) = args.metrics_listen {
        config.metrics_listen = Some(address);
    }
    if let Some(address) = args.advertised_address {
        config.advertised_address = Some(address);
    }
    if let Some(peers) = args.peers {
        config.peers = peers;
    }
    if let Some(address) = args.internal_listen {
        config.internal_listen = Some(address);
    }
    if let Some(path) = &args.cluster_secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?;
        config.cluster_secret = Some(Secret(text.trim().to_string()));
    }
    if let Ok(secret) = std::env::var("BROOK_CLUSTER_SECRET") {
        config.cluster_secret = Some(Secret(secret.trim().to_string()));
    }
    if let Some(factor) = args.default_replication_factor {
        config.default_replication_factor = factor;
    }
    if let Some(min_insync) = args.default_min_insync_replicas {
        config.default_min_insync_replicas = min_insync;
    }
    if let Some(timeout_ms) = args.controlled_shutdown_timeout_ms {
        config.controlled_shutdown_timeout_ms = timeout_ms;
    }
    anyhow::ensure!(config.default_replication_factor >= 1, "the default replication factor must be at least 1");
    anyhow::ensure!(config.default_min_insync_replicas >= 1, "the default min.insync.replicas must be at least 1");
    if !config.peers.is_empty() {
        anyhow::ensure!(
            config.peers.contains_key(&config.id),
            "--peers must include this broker's own id {} (it lists {:?})",
            config.id,
            config.peers.keys().collect::<Vec<_>>()
        );
    }
    anyhow::ensure!(config.id >= 1, "broker ids start at 1 (0 means \"no leader\" on the wire)");
    config.validate().map_err(|reason| anyhow::anyhow!("invalid configuration: {reason}"))?;
    Ok(config)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    brook_broker::serve(config, shutdown).await.context("broker failed")
}

/// Until Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
