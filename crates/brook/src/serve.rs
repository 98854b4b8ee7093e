//! `brook serve`: each setting from its flag, else `BROOK_*` in the
//! environment, else the `--config` TOML file, else its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use brook_broker::{BrokerConfig, Secret};
use tokio_util::sync::CancellationToken;

/// Every setting comes from its flag, else its environment variable
/// (`BROOK_` and the flag's name in upper snake case), else the `--config`
/// file (the `BrokerConfig` field of the same name), else its default.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// This broker's id [default: 1].
    #[arg(long, env = "BROOK_ID")]
    id: Option<u32>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long, env = "BROOK_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where partition logs and the metadata group's state are kept [default: ./data].
    #[arg(long, env = "BROOK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The address clients are told to reach this broker on (default: the
    /// listen address); e.g. the host's published port in a container.
    #[arg(long, env = "BROOK_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off by default).
    #[arg(long, env = "BROOK_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Serve Kafka's wire protocol on `host:port`, or `off` [default: 127.0.0.1:9192].
    #[arg(long, env = "BROOK_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// The address Kafka clients are told to reach this broker on (default:
    /// the Kafka listen address).
    #[arg(long, env = "BROOK_KAFKA_ADVERTISED_ADDRESS")]
    kafka_advertised_address: Option<String>,
    /// The cluster's brokers, this one included: `1=host:port,2=host:port,...`
    /// (each broker's --internal-listen address). Without it: a single node
    /// (a metadata group of one).
    #[arg(long, env = "BROOK_PEERS", value_parser = parse_peers)]
    peers: Option<std::collections::BTreeMap<u32, String>>,
    /// Where other brokers reach this one (Raft, replication); required
    /// with --peers. The client port serves none of that.
    #[arg(long, env = "BROOK_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// A file holding the cluster secret (the same on every broker; at
    /// least 16 printable characters). BROOK_CLUSTER_SECRET, if set, wins.
    #[arg(long, env = "BROOK_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Replication factor of topics created without one [default: 1].
    #[arg(long, env = "BROOK_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<u32>,
    /// min.insync.replicas of topics created without it, capped at their
    /// replication factor [default: 1].
    #[arg(long, env = "BROOK_DEFAULT_MIN_INSYNC_REPLICAS")]
    default_min_insync_replicas: Option<u32>,
    /// On SIGTERM or Ctrl-C, hand this broker's partition leaderships to
    /// other in-sync replicas for at most this long before stopping
    /// (Kafka's controlled shutdown); 0 stops at once [default: 10000].
    #[arg(long, env = "BROOK_CONTROLLED_SHUTDOWN_TIMEOUT_MS")]
    controlled_shutdown_timeout_ms: Option<u64>,
    /// Snapshot the metadata state after this many metadata log entries [default: 1000].
    #[arg(long, env = "BROOK_METADATA_SNAPSHOT_AFTER_ENTRIES")]
    metadata_snapshot_after_entries: Option<u64>,
    /// Close a connection with no request for this long (Kafka's connections.max.idle.ms) [default: 600000].
    #[arg(long, env = "BROOK_CONNECTIONS_MAX_IDLE_MS")]
    connections_max_idle_ms: Option<u64>,
    /// The memory request bodies in progress may hold, across all connections
    /// (Kafka's queued.max.request.bytes) [default: 536870912].
    #[arg(long, env = "BROOK_REQUEST_MEMORY_BUDGET_BYTES")]
    request_memory_budget_bytes: Option<usize>,
    /// Refuse a request whose body has not all arrived this long after it
    /// was given room in that memory [default: 30000].
    #[arg(long, env = "BROOK_REQUEST_BODY_TIMEOUT_MS")]
    request_body_timeout_ms: Option<u64>,
    /// Forget a consumer group with no members unchanged for this long
    /// (Kafka's offsets.retention.minutes) [default: 604800000].
    #[arg(long, env = "BROOK_OFFSETS_RETENTION_MS")]
    offsets_retention_ms: Option<u64>,
    /// How often the controller looks for such groups [default: 600000].
    #[arg(long, env = "BROOK_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    offsets_retention_check_interval_ms: Option<u64>,
    /// The most members a consumer group may have (Kafka's group.max.size) [default: 1000].
    #[arg(long, env = "BROOK_GROUP_MAX_SIZE")]
    group_max_size: Option<u32>,
    /// Forget a producer key neither initialised nor appended with for this
    /// long (Kafka's transactional.id.expiration.ms) [default: 604800000].
    #[arg(long, env = "BROOK_PRODUCER_KEY_EXPIRATION_MS")]
    producer_key_expiration_ms: Option<u64>,
    /// How often keys in use are reported and expired keys looked for; at
    /// most a quarter of the expiration [default: 3600000].
    #[arg(long, env = "BROOK_PRODUCER_KEY_EXPIRATION_CHECK_INTERVAL_MS")]
    producer_key_expiration_check_interval_ms: Option<u64>,
    /// A broker not heard from for this long loses its leaderships [default: 800].
    #[arg(long, env = "BROOK_SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// How often a broker heartbeats the controller [default: 100].
    #[arg(long, env = "BROOK_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    /// A follower behind for this long leaves the ISR [default: 10000].
    #[arg(long, env = "BROOK_REPLICA_LAG_MAX_MS")]
    replica_lag_max_ms: Option<u64>,
    /// The largest request decoded, in bytes [default: 67108864].
    #[arg(long, env = "BROOK_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<usize>,
    /// The largest Kafka request frame (Kafka's socket.request.max.bytes) [default: 104857600].
    #[arg(long, env = "BROOK_KAFKA_MAX_REQUEST_BYTES")]
    kafka_max_request_bytes: Option<usize>,
    /// The most a fetch may ask for, in bytes [default: 8388608].
    #[arg(long, env = "BROOK_MAX_FETCH_BYTES")]
    max_fetch_bytes: Option<u32>,
    /// A fetch that names no size gets this many bytes [default: 1048576].
    #[arg(long, env = "BROOK_DEFAULT_FETCH_BYTES")]
    default_fetch_bytes: Option<u32>,
    /// The longest a fetch may wait for data [default: 30000].
    #[arg(long, env = "BROOK_MAX_FETCH_WAIT_MS")]
    max_fetch_wait_ms: Option<u32>,
    /// How long an acks=all produce naming no timeout waits [default: 30000].
    #[arg(long, env = "BROOK_DEFAULT_PRODUCE_TIMEOUT_MS")]
    default_produce_timeout_ms: Option<u32>,
    /// How often retention and time-based flushes run [default: 10000].
    #[arg(long, env = "BROOK_LOG_MAINTENANCE_INTERVAL_MS")]
    log_maintenance_interval_ms: Option<u64>,
    /// The most client and peer connections open at once [default: 1000].
    #[arg(long, env = "BROOK_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A TOML file with any of these settings (the `BrokerConfig` field
    /// names: `data_dir = "/data"`, `[peers]` ...); flags and environment
    /// variables override it.
    #[arg(long, env = "BROOK_CONFIG")]
    config: Option<PathBuf>,
    /// Print every setting's effective value and where it came from
    /// (flag, environment, file, default), then exit.
    #[arg(long)]
    print_config: bool,
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

/// Where a setting's value came from.
type Sources = std::collections::BTreeMap<&'static str, String>;

/// The settings given on the command line or in the environment, as
/// `BrokerConfig` fields, each with where it came from.
fn given_settings(args: &ServeArgs) -> (toml::Table, Sources) {
    let matches = <crate::Cli as clap::CommandFactory>::command().get_matches();
    let serve = matches.subcommand_matches("serve");
    let mut table = toml::Table::new();
    let mut sources = Sources::new();
    let mut given = |key: &'static str, value: Option<toml::Value>| {
        let Some(value) = value else { return };
        let source = match serve.and_then(|serve| serve.value_source(key)) {
            Some(clap::parser::ValueSource::EnvVariable) => {
                format!("environment BROOK_{}", key.to_ascii_uppercase())
            }
            _ => format!("flag --{}", key.replace('_', "-")),
        };
        table.insert(key.to_string(), value);
        sources.insert(key, source);
    };
    let number = |value: Option<u64>| value.map(|value| toml::Value::Integer(value.min(i64::MAX as u64) as i64));
    let text = |value: Option<String>| value.map(toml::Value::String);
    given("id", number(args.id.map(u64::from)));
    given("listen", text(args.listen.map(|address| address.to_string())));
    given("data_dir", text(args.data_dir.as_ref().map(|dir| dir.display().to_string())));
    given("advertised_address", text(args.advertised_address.clone()));
    given("metrics_listen", text(args.metrics_listen.map(|address| address.to_string())));
    given("kafka_listen", text(args.kafka_listen.clone()));
    given("kafka_advertised_address", text(args.kafka_advertised_address.clone()));
    given(
        "peers",
        args.peers.as_ref().map(|peers| {
            toml::Value::Table(
                peers.iter().map(|(id, address)| (id.to_string(), toml::Value::String(address.clone()))).collect(),
            )
        }),
    );
    given("internal_listen", text(args.internal_listen.map(|address| address.to_string())));
    given("default_replication_factor", number(args.default_replication_factor.map(u64::from)));
    given("default_min_insync_replicas", number(args.default_min_insync_replicas.map(u64::from)));
    given("controlled_shutdown_timeout_ms", number(args.controlled_shutdown_timeout_ms));
    given("metadata_snapshot_after_entries", number(args.metadata_snapshot_after_entries));
    given("connections_max_idle_ms", number(args.connections_max_idle_ms));
    given("request_memory_budget_bytes", number(args.request_memory_budget_bytes.map(|bytes| bytes as u64)));
    given("request_body_timeout_ms", number(args.request_body_timeout_ms));
    given("offsets_retention_ms", number(args.offsets_retention_ms));
    given("offsets_retention_check_interval_ms", number(args.offsets_retention_check_interval_ms));
    given("group_max_size", number(args.group_max_size.map(u64::from)));
    given("producer_key_expiration_ms", number(args.producer_key_expiration_ms));
    given("producer_key_expiration_check_interval_ms", number(args.producer_key_expiration_check_interval_ms));
    given("session_timeout_ms", number(args.session_timeout_ms));
    given("heartbeat_interval_ms", number(args.heartbeat_interval_ms));
    given("replica_lag_max_ms", number(args.replica_lag_max_ms));
    given("max_request_bytes", number(args.max_request_bytes.map(|bytes| bytes as u64)));
    given("kafka_max_request_bytes", number(args.kafka_max_request_bytes.map(|bytes| bytes as u64)));
    given("max_fetch_bytes", number(args.max_fetch_bytes.map(u64::from)));
    given("default_fetch_bytes", number(args.default_fetch_bytes.map(u64::from)));
    given("max_fetch_wait_ms", number(args.max_fetch_wait_ms.map(u64::from)));
    given("default_produce_timeout_ms", number(args.default_produce_timeout_ms.map(u64::from)));
    given("log_maintenance_interval_ms", number(args.log_maintenance_interval_ms));
    given("max_connections", number(args.max_connections.map(|count| count as u64)));
    (table, sources)
}

/// The effective configuration (flag > environment > file > default),
/// checked, with where each setting came from.
fn load_config(args: &ServeArgs) -> anyhow::Result<(BrokerConfig, Sources)> {
    let mut table = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<toml::Table>(&text).with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut sources: Sources = Sources::new();
    let file_keys: Vec<String> = table.keys().cloned().collect();
    let (given, given_sources) = given_settings(args);
    table.extend(given);
    // TOML keys are strings; the peer map's are broker ids.
    let peers = match table.remove("peers") {
        Some(toml::Value::Table(peers)) => Some(peers_from_table(&peers)?),
        Some(other) => anyhow::bail!("peers must be a table of id = \"host:port\", not {other}"),
        None => None,
    };
    let mut config: BrokerConfig = table.try_into().with_context(|| match &args.config {
        Some(path) => format!("invalid config file {} (or a flag or BROOK_* variable over it)", path.display()),
        None => "invalid settings".to_string(),
    })?;
    if let Some(peers) = peers {
        config.peers = peers;
    }
    if let Some(path) = &args.config {
        for key in BrokerConfig::FIELDS {
            if file_keys.iter().any(|file_key| file_key == key) {
                sources.insert(key, format!("file {}", path.display()));
            }
        }
    }
    sources.extend(given_sources);
    if let Some(path) = &args.cluster_secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster secret file {}", path.display()))?;
        config.cluster_secret = Some(Secret(text.trim().to_string()));
        sources.insert("cluster_secret", format!("file {} (--cluster-secret-file)", path.display()));
    }
    if let Ok(secret) = std::env::var("BROOK_CLUSTER_SECRET") {
        config.cluster_secret = Some(Secret(secret.trim().to_string()));
        sources.insert("cluster_secret", "environment BROOK_CLUSTER_SECRET".to_string());
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
    Ok((config, sources))
}

/// `[peers]` as TOML gives it: `1 = "host:port"`.
fn peers_from_table(table: &toml::Table) -> anyhow::Result<std::collections::BTreeMap<u32, String>> {
    table
        .iter()
        .map(|(id, address)| {
            let id: u32 = id.parse().map_err(|_| anyhow::anyhow!("peers: '{id}' is not a broker id"))?;
            let address =
                address.as_str().ok_or_else(|| anyhow::anyhow!("peers: broker {id}'s address must be a string"))?;
            Ok((id, address.to_string()))
        })
        .collect()
}

/// `--print-config`: every setting, its value and its source, as TOML
/// with comments (the secret hidden).
fn print_config(config: &BrokerConfig, sources: &Sources) -> anyhow::Result<()> {
    let mut shown = config.clone();
    if shown.cluster_secret.is_some() {
        shown.cluster_secret = Some(Secret("(hidden)".to_string()));
    }
    // TOML keys are strings: the peer map is shown on its own.
    let peers = std::mem::take(&mut shown.peers);
    let table = toml::Table::try_from(&shown).context("showing the configuration")?;
    for key in BrokerConfig::FIELDS {
        let source = sources.get(key).map_or("default", String::as_str);
        if *key == "peers" {
            let inline: Vec<String> = peers.iter().map(|(id, address)| format!("{id} = \"{address}\"")).collect();
            outln!("peers = {{ {} }}  # {source}", inline.join(", "));
            continue;
        }
        match table.get(*key) {
            Some(value) => outln!("{key} = {value}  # {source}"),
            None => outln!("# {key} is not set  # {source}"),
        }
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, sources) = load_config(&args)?;
    if args.print_config {
        return print_config(&config, &sources);
    }
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
