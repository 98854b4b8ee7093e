//! `brook serve`: flags over an optional `brook.toml` over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use brook_broker::BrokerConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// This broker's id [default: 1].
    #[arg(long)]
    id: Option<u32>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where topics and the catalog are kept [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off by default).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// A TOML file with any BrokerConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
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

async fn wait_for_signal() {
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
