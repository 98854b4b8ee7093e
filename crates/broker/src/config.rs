//! The broker's configuration: what `brook serve` flags and `brook.toml`
//! set. Every field has a documented default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret's text; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The shortest cluster secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;

/// Where Kafka clients find a broker unless told otherwise: beside the
/// gRPC port's 9092, which Kafka's own default would have taken.
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9192";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in the cluster. Default 1.
    pub id: u32,
    /// Where the gRPC server listens. Default `127.0.0.1:9092`.
    pub listen: SocketAddr,
    /// The address clients are told to use; default: `listen`.
    pub advertised_address: Option<String>,
    /// Partition logs and the metadata group's state live here. Default `./data`.
    pub data_dir: PathBuf,
    /// The largest gRPC request the broker decodes, in bytes (a produce
    /// request carries whole batches). Default 64 MiB.
    pub max_request_bytes: usize,
    /// Upper bound for a fetch's `max_bytes`. Default 8 MiB.
    pub max_fetch_bytes: u32,
    /// Default fetch size when a request says 0. Default 1 MiB.
    pub default_fetch_bytes: u32,
    /// Upper bound for a fetch's long-poll wait, in ms. Default 30 s.
    pub max_fetch_wait_ms: u32,
    /// How long an acks=all produce waits when it names no timeout, in ms.
    /// Default 30 s.
    pub default_produce_timeout_ms: u32,
    /// How often retention and time-based flushes run, in ms. Default 10 s.
    pub log_maintenance_interval_ms: u64,
    /// The most client and peer connections open at once; past it the
    /// broker stops accepting until one closes. Default 1,000.
    pub max_connections: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`); off by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Where Kafka's wire protocol is served (`host:port`), or `off`.
    /// Default `127.0.0.1:9192`.
    pub kafka_listen: String,
    /// The address Kafka clients are told to use; default: `kafka_listen`.
    pub kafka_advertised_address: Option<String>,
    /// The largest Kafka request frame (Kafka's
    /// `socket.request.max.bytes`). Default 100 MiB.
    pub kafka_max_request_bytes: usize,
    /// Every broker of the cluster, this one included: id -> its internal
    /// listener's address. Empty (the default): a single node, a metadata
    /// group of one.
    pub peers: BTreeMap<u32, String>,
    /// Where other brokers reach this one (Raft, forwarding to the
    /// controller, heartbeats, replica fetches): a listener of its own, as
    /// Kafka separates listeners; the client port serves none of that.
    /// Required with `peers`. Default: none (a single node needs none).
    pub internal_listen: Option<SocketAddr>,
    /// The secret every call between brokers carries; the internal
    /// listener refuses a call without it. Required with `peers`: at least
    /// 16 printable ASCII characters, the same on every broker. Usually
    /// given by `BROOK_CLUSTER_SECRET` or `--cluster-secret-file` rather
    /// than in the config file.
    pub cluster_secret: Option<Secret>,
    /// A broker not heard from for this long is declared dead and loses its
    /// leaderships. Default 800 ms (8 heartbeats: load alone does not
    /// miss that many; the cluster tests check it under produce load).
    pub session_timeout_ms: u64,
    /// How often a broker heartbeats the controller. Default 100 ms.
    pub heartbeat_interval_ms: u64,
    /// A follower that has not caught up with its leader for this long is
    /// dropped from the ISR (Kafka's `replica.lag.time.max.ms`). Default 10 s.
    pub replica_lag_max_ms: u64,
    /// The replication factor of a topic created without one (a request
    /// with 0; Kafka's `default.replication.factor`). Default 1.
    pub default_replication_factor: u32,
    /// `min.insync.replicas` of a topic created without it (Kafka's
    /// broker-level `min.insync.replicas`), capped at the topic's
    /// replication factor so a default never makes a topic unwritable with
    /// acks=all. Default 1.
    pub default_min_insync_replicas: u32,
    /// On SIGTERM (or Ctrl-C) a cluster member first hands its partition
    /// leaderships to other in-sync replicas, waiting at most this long,
    /// then stops (Kafka's controlled shutdown). 0: stop at once, as after
    /// a crash. Default 10 s.
    pub controlled_shutdown_timeout_ms: u64,
    /// The metadata group snapshots its state (and may drop the log it
    /// covers) after this many entries. Default 1,000.
    pub metadata_snapshot_after_entries: u64,
    /// A connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`). Default 10 min.
    pub connections_max_idle_ms: u64,
    /// The memory request bodies in progress may hold, across every
    /// connection of both listeners (Kafka's `queued.max.request.bytes`):
    /// each request reserves its size before its body is read, waits up to
    /// 10 s for room, and is refused with RESOURCE_EXHAUSTED past that or
    /// when larger than the whole budget. At least `max_request_bytes`.
    /// Default 512 MiB.
    pub request_memory_budget_bytes: usize,
    /// A request whose body has not all arrived this long after it was
    /// given room in that memory is refused (DEADLINE_EXCEEDED) and its
    /// room given back: a body that never ends holds nothing for ever.
    /// Default 30 s (Kafka's `request.timeout.ms`).
    pub request_body_timeout_ms: u64,
    /// A consumer group with no members whose offsets and state nothing
    /// changed for this long is forgotten (Kafka's
    /// `offsets.retention.minutes`). Default 7 days.
    pub offsets_retention_ms: u64,
    /// How often the controller looks for such groups (Kafka's
    /// `offsets.retention.check.interval.ms`). Default 10 min.
    pub offsets_retention_check_interval_ms: u64,
    /// The most members a consumer group may have (Kafka's
    /// `group.max.size`): a new member past it is refused with
    /// GROUP_MAX_SIZE_REACHED. Default 1,000.
    pub group_max_size: u32,
    /// A producer key neither initialised nor appended with for this long
    /// is forgotten: the next producer under it starts with a new id at
    /// epoch 0 (Kafka's `transactional.id.expiration.ms`). Default 7 days.
    pub producer_key_expiration_ms: u64,
    /// How often brokers report the keys their replicas saw append, and
    /// the controller looks for expired keys (Kafka's
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`). At
    /// most a quarter of the expiration. Default 1 hour.
    pub producer_key_expiration_check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_address: None,
            data_dir: PathBuf::from("./data"),
            max_request_bytes: 64 << 20,
            max_fetch_bytes: 8 << 20,
            default_fetch_bytes: 1 << 20,
            max_fetch_wait_ms: 30_000,
            default_produce_timeout_ms: 30_000,
            log_maintenance_interval_ms: 10_000,
            max_connections: 1000,
            metrics_listen: None,
            kafka_listen: DEFAULT_KAFKA_LISTEN.to_string(),
            kafka_advertised_address: None,
            kafka_max_request_bytes: 100 << 20,
            peers: BTreeMap::new(),
            internal_listen: None,
            cluster_secret: None,
            session_timeout_ms: 800,
            heartbeat_interval_ms: 100,
            replica_lag_max_ms: 10_000,
            default_replication_factor: 1,
            default_min_insync_replicas: 1,
            controlled_shutdown_timeout_ms: 10_000,
            metadata_snapshot_after_entries: 1_000,
            connections_max_idle_ms: 600_000,
            request_memory_budget_bytes: 512 << 20,
            request_body_timeout_ms: 30_000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            group_max_size: 1_000,
            producer_key_expiration_ms: 7 * 24 * 3_600_000,
            producer_key_expiration_check_interval_ms: 3_600_000,
        }
    }
}

impl BrokerConfig {
    /// Every field's name, in order (what `brook serve --print-config` lists).
    pub const FIELDS: &'static [&'static str] = &[
        "id",
        "listen",
        "advertised_address",
        "data_dir",
        "max_request_bytes",
        "max_fetch_bytes",
        "default_fetch_bytes",
        "max_fetch_wait_ms",
        "default_produce_timeout_ms",
        "log_maintenance_interval_ms",
        "max_connections",
        "metrics_listen",
        "kafka_listen",
        "kafka_advertised_address",
        "kafka_max_request_bytes",
        "peers",
        "internal_listen",
        "cluster_secret",
        "session_timeout_ms",
        "heartbeat_interval_ms",
        "replica_lag_max_ms",
        "default_replication_factor",
        "default_min_insync_replicas",
        "controlled_shutdown_timeout_ms",
        "metadata_snapshot_after_entries",
        "connections_max_idle_ms",
        "request_memory_budget_bytes",
        "request_body_timeout_ms",
        "offsets_retention_ms",
        "offsets_retention_check_interval_ms",
        "group_max_size",
        "producer_key_expiration_ms",
        "producer_key_expiration_check_interval_ms",
    ];

    /// Every setting within its limits, checked at start; the error names
    /// the setting. (A heartbeat interval of 0 would panic a timer; a
    /// session not longer than two heartbeats would declare live brokers
    /// dead.)
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("replica_lag_max_ms", self.replica_lag_max_ms),
            ("log_maintenance_interval_ms", self.log_maintenance_interval_ms),
            ("metadata_snapshot_after_entries", self.metadata_snapshot_after_entries),
            ("connections_max_idle_ms", self.connections_max_idle_ms),
            ("request_body_timeout_ms", self.request_body_timeout_ms),
            ("offsets_retention_ms", self.offsets_retention_ms),
            ("offsets_retention_check_interval_ms", self.offsets_retention_check_interval_ms),
            ("group_max_size", u64::from(self.group_max_size)),
            ("producer_key_expiration_ms", self.producer_key_expiration_ms),
            ("producer_key_expiration_check_interval_ms", self.producer_key_expiration_check_interval_ms),
            ("max_connections", self.max_connections as u64),
            ("max_request_bytes", self.max_request_bytes as u64),
            ("max_fetch_bytes", u64::from(self.max_fetch_bytes)),
            ("default_fetch_bytes", u64::from(self.default_fetch_bytes)),
            ("default_produce_timeout_ms", u64::from(self.default_produce_timeout_ms)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be positive"));
        }
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        let times = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("replica_lag_max_ms", self.replica_lag_max_ms),
            ("log_maintenance_interval_ms", self.log_maintenance_interval_ms),
        ];
        if let Some((name, value)) = times.iter().find(|(_, value)| *value > DAY_MS) {
            return Err(format!("{name} is {value} ms, more than a day"));
        }
        if self.session_timeout_ms < 2 * self.heartbeat_interval_ms {
            return Err(format!(
                "session_timeout_ms ({}) must be at least two heartbeat intervals (heartbeat_interval_ms {})",
                self.session_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.producer_key_expiration_check_interval_ms > self.producer_key_expiration_ms / 4 {
            return Err(format!(
                "producer_key_expiration_check_interval_ms ({}) must be at most a quarter of \
                 producer_key_expiration_ms ({}): a key in use is reported within two intervals, and must \
                 never look unused for the whole expiration",
                self.producer_key_expiration_check_interval_ms, self.producer_key_expiration_ms
            ));
        }
        if self.default_replication_factor == 0 || self.default_min_insync_replicas == 0 {
            return Err("default_replication_factor and default_min_insync_replicas must be at least 1".into());
        }
        if self.request_memory_budget_bytes < self.max_request_bytes {
            return Err(format!(
                "request_memory_budget_bytes ({}) must be at least max_request_bytes ({}): a request of the \
                 largest size allowed could never be read",
                self.request_memory_budget_bytes, self.max_request_bytes
            ));
        }
        self.kafka_listen()?;
        self.check_cluster_settings()
    }

    /// What a cluster member needs beyond a single node: its internal
    /// listener and a usable secret. The error names the setting.
    pub fn check_cluster_settings(&self) -> Result<(), String> {
        if let Some(Secret(secret)) = &self.cluster_secret {
            if secret.len() < MIN_SECRET_CHARS || !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(format!(
                    "the cluster secret must be at least {MIN_SECRET_CHARS} printable ASCII characters without spaces"
                ));
            }
        }
        if self.peers.is_empty() {
            return Ok(());
        }
        if self.internal_listen.is_none() {
            return Err(
                "--internal-listen is required with --peers: brokers reach each other there (and --peers names \
                        each broker's internal address), never on the client port"
                    .into(),
            );
        }
        if self.cluster_secret.is_none() {
            return Err("a cluster needs a secret shared by its brokers: set BROOK_CLUSTER_SECRET or \
                        --cluster-secret-file (the same on every broker)"
                .into());
        }
        Ok(())
    }

    /// The Kafka listener's address; `None` when it is off. The error
    /// names the setting.
    pub fn kafka_listen(&self) -> Result<Option<SocketAddr>, String> {
        if self.kafka_listen == "off" {
            return Ok(None);
        }
        self.kafka_listen.parse().map(Some).map_err(|_| {
            format!("kafka_listen '{}' is neither host:port (an IP address and a port) nor 'off'", self.kafka_listen)
        })
    }

    pub fn advertised_address(&self) -> String {
        self.advertised_address.clone().unwrap_or_else(|| self.listen.to_string())
    }

    pub fn log_maintenance_interval(&self) -> Duration {
        Duration::from_millis(self.log_maintenance_interval_ms.max(10))
    }
}
