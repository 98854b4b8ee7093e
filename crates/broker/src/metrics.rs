//! The broker's Prometheus metrics and the HTTP endpoint that serves them
//! (`GET /metrics`, text format 0.0.4, on axum), off unless
//! `metrics_listen` is set; the standard `process_*` metrics; every gRPC
//! call timed by a tower layer on the server.
//!
//! Request metrics are counted on the request path; per-partition gauges
//! (log end offset, high watermark, ISR size, log size) are read from the
//! topic registry at scrape time, so they are never stale and cost nothing
//! between scrapes. Names and meanings are listed in the README.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::replica_manager::ReplicaManager;

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `process_*`, unprefixed.
    process_registry: Registry,
    /// `brook_requests_total{api, outcome}`: outcome is `ok` or the Kafka-style error name.
    pub requests: IntCounterVec,
    /// `brook_request_duration_seconds{api}`.
    pub request_duration: HistogramVec,
    /// `brook_bytes_in_total{topic}` / `brook_bytes_out_total{topic}`: record batch bytes.
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    /// `brook_records_in_total{topic}`.
    pub records_in: IntCounterVec,
    /// `brook_duplicate_batches_total{topic}`: producer retries answered
    /// from the log instead of appended again.
    pub duplicates: IntCounterVec,
    /// `brook_rpc_duration_seconds{service, method}`: every gRPC call,
    /// timed at the server (see [`RpcTimingLayer`]).
    pub rpc_duration: HistogramVec,
    log_end_offset: IntGaugeVec,
    high_watermark: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    isr_size: IntGaugeVec,
    log_size_bytes: IntGaugeVec,
    under_replicated: IntGauge,
    offline: IntGaugeVec,
    partitions: IntGauge,
    raft_term: IntGauge,
    controller_id: IntGauge,
    group_lag: IntGaugeVec,
    group_members: IntGaugeVec,
    group_epoch: IntGaugeVec,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique and valid");
    metric
}

impl Metrics {
    pub fn new(broker_id: u32) -> Metrics {
        let registry =
            Registry::new_custom(Some("brook".into()), Some([("broker".to_string(), broker_id.to_string())].into()))
                .expect("static registry labels are valid");
        // The standard process_* metrics (CPU seconds, resident memory,
        // open file descriptors, start time), under their own names.
        let process_registry = Registry::new_custom(None, Some([("broker".to_string(), broker_id.to_string())].into()))
            .expect("static registry labels are valid");
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(error) = process_registry.register(Box::new(process)) {
            tracing::warn!(%error, "process metrics unavailable");
        }
        let partition_labels = &["topic", "partition"];
        let gauge = |name: &str, help: &str| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), partition_labels).expect("valid metric"))
        };
        Metrics {
            requests: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("requests_total", "Requests handled, by API and outcome"),
                    &["api", "outcome"],
                )
                .expect("valid metric"),
            ),
            request_duration: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("request_duration_seconds", "Time to answer a request, by API").buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ]),
                    &["api"],
                )
                .expect("valid metric"),
            ),
            bytes_in: registered(
                &registry,
                IntCounterVec::new(Opts::new("bytes_in_total", "Record batch bytes appended"), &["topic"])
                    .expect("valid"),
            ),
            bytes_out: registered(
                &registry,
                IntCounterVec::new(Opts::new("bytes_out_total", "Record batch bytes fetched"), &["topic"])
                    .expect("valid"),
            ),
            records_in: registered(
                &registry,
                IntCounterVec::new(Opts::new("records_in_total", "Records appended"), &["topic"]).expect("valid"),
            ),
            duplicates: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "duplicate_batches_total",
                        "Idempotent producers' retries answered with the offsets already given",
                    ),
                    &["topic"],
                )
                .expect("valid"),
            ),
            rpc_duration: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rpc_duration_seconds",
                        "Time to answer a gRPC call, by service and method (every call, admin included)",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ]),
                    &["service", "method"],
                )
                .expect("valid metric"),
            ),
            log_end_offset: gauge("log_end_offset", "Next offset the partition's log will write (LEO)"),
            high_watermark: gauge("high_watermark", "Offset below which every in-sync replica has the records (HW)"),
            log_start_offset: gauge("log_start_offset", "First offset the partition's log still holds"),
            isr_size: gauge("isr_size", "In-sync replicas of the partition"),
            log_size_bytes: gauge("log_size_bytes", "Bytes of the partition's segment files"),
            under_replicated: registered(
                &registry,
                IntGauge::new(
                    "under_replicated_partitions",
                    "Partitions led here whose ISR is smaller than their replicas",
                )
                .expect("valid metric"),
            ),
            offline: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "offline_partition",
                        "1 for each partition without a leader, by the controller, with why: no_live_isr (no \
                         in-sync replica is alive) or lost_data (its last in-sync replica came back without its \
                         data; only an unclean election ends it)",
                    ),
                    &["topic", "partition", "reason"],
                )
                .expect("valid metric"),
            ),
            partitions: registered(&registry, IntGauge::new("partitions", "Partitions hosted").expect("valid metric")),
            raft_term: registered(
                &registry,
                IntGauge::new("raft_term", "Term of the metadata Raft group (0 until the cluster exists)")
                    .expect("valid"),
            ),
            controller_id: registered(
                &registry,
                IntGauge::new("controller_id", "Broker id of the controller (the Raft leader)").expect("valid metric"),
            ),
            group_lag: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "consumer_group_lag",
                        "Records between a group's committed offset and the high watermark, by the partition's leader",
                    ),
                    &["group", "topic", "partition"],
                )
                .expect("valid metric"),
            ),
            group_members: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new("consumer_group_members", "Live members of a consumer group, by its coordinator"),
                    &["group"],
                )
                .expect("valid metric"),
            ),
            group_epoch: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "consumer_group_epoch",
                        "A consumer group's epoch, by its coordinator: bumped by every rebalance (its rate is the \
                         rebalance rate)",
                    ),
                    &["group"],
                )
                .expect("valid metric"),
            ),
            registry,
            process_registry,
        }
    }

    /// Counts one answered request under its outcome (`ok` or the error name).
    pub fn observe_result<T>(&self, api: &str, elapsed: Duration, result: &Result<T, BrokerError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.code_name(),
        };
        self.observe(api, outcome, elapsed);
    }

    /// Counts one answered request and its duration.
    pub fn observe(&self, api: &str, outcome: &str, elapsed: Duration) {
        self.requests.with_label_values(&[api, outcome]).inc();
        self.request_duration.with_label_values(&[api]).observe(elapsed.as_secs_f64());
    }

    /// The partitions without a leader, as the controller's state has
    /// them (only the controller reports them, as Kafka's
    /// `OfflinePartitionsCount`, so that a sum over brokers counts each once).
    fn render_offline(&self, metadata: &brook_metadata::MetadataNode) {
        self.offline.reset();
        if !metadata.is_controller() {
            return;
        }
        let state = metadata.state().borrow().clone();
        for topic in state.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate().filter(|(_, p)| p.leader.is_none()) {
                let reason = if partition.lost_by.is_some() { "lost_data" } else { "no_live_isr" };
                self.offline.with_label_values(&[topic.name.as_str(), &index.to_string(), reason]).set(1);
            }
        }
    }

    /// The text exposition, with partition gauges read from `registry` now.
    pub fn render(&self, topics: &ReplicaManager) -> Vec<u8> {
        for gauge in
            [&self.log_end_offset, &self.high_watermark, &self.log_start_offset, &self.isr_size, &self.log_size_bytes]
        {
            gauge.reset();
        }
        let (mut partitions, mut under_replicated) = (0, 0);
        for topic in topics.list() {
            for (slot, partition) in topic.hosted() {
                if slot.assignment.leader == Some(topics.broker_id())
                    && slot.assignment.isr.len() < slot.assignment.replicas.len()
                {
                    under_replicated += 1;
                }
                let labels = [topic.name.clone(), partition.partition().to_string()];
                let labels = [labels[0].as_str(), labels[1].as_str()];
                let as_gauge = |offset: brook_record::Offset| i64::try_from(offset.0).unwrap_or(i64::MAX);
                self.log_end_offset.with_label_values(&labels).set(as_gauge(partition.log_end_offset()));
                self.high_watermark.with_label_values(&labels).set(as_gauge(partition.high_watermark()));
                self.log_start_offset.with_label_values(&labels).set(as_gauge(partition.log_start_offset()));
                self.isr_size.with_label_values(&labels).set(slot.assignment.isr.len() as i64);
                self.log_size_bytes
                    .with_label_values(&labels)
                    .set(i64::try_from(partition.size_bytes()).unwrap_or(i64::MAX));
                partitions += 1;
            }
        }
        self.partitions.set(partitions);
        self.under_replicated.set(under_replicated);
        self.render_groups(topics);
        self.render_offline(topics.metadata());
        let metadata = topics.metadata();
        let (term, controller) = (metadata.term(), metadata.controller().unwrap_or(0));
        self.raft_term.set(i64::try_from(term).unwrap_or(i64::MAX));
        self.controller_id.set(i64::try_from(controller).unwrap_or(i64::MAX));
        let mut text = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process_registry.gather());
        if let Err(error) = TextEncoder::new().encode(&families, &mut text) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

impl Metrics {
    /// Group gauges: lag by the leader of each partition (each partition's
    /// lag appears once in the cluster, where its high watermark is
    /// exact), members and epochs by the coordinator.
    fn render_groups(&self, topics: &ReplicaManager) {
        for gauge in [&self.group_lag, &self.group_members, &self.group_epoch] {
            gauge.reset();
        }
        let state = topics.metadata().state().borrow().clone();
        for (group, committed) in &state.offsets {
            for (topic, partitions) in committed {
                let Ok(led) = topics.topic(topic) else { continue };
                for (partition, offset) in partitions {
                    let Ok(replica) = led.led_partition(*partition, topics.broker_id()) else { continue };
                    let high_watermark = i64::try_from(replica.high_watermark().0).unwrap_or(i64::MAX);
                    let labels = [group.as_str(), topic.as_str(), &partition.to_string()];
                    self.group_lag.with_label_values(&labels).set((high_watermark - offset.offset).max(0));
                }
            }
        }
        if topics.metadata().is_controller() {
            for (group, state) in &state.groups {
                self.group_members.with_label_values(&[group.as_str()]).set(state.members.len() as i64);
                self.group_epoch.with_label_values(&[group.as_str()]).set(i64::from(state.group_epoch));
            }
        }
    }
}

/// Serves `GET /metrics` on `address` until `shutdown` (axum; anything
/// else is a 404 that says what is served).
pub async fn serve_metrics(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    topics: Arc<ReplicaManager>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    let render = move || {
        let (metrics, topics) = (Arc::clone(&metrics), Arc::clone(&topics));
        async move {
            // The partition gauges read every hosted log: off the async workers.
            let body = tokio::task::spawn_blocking(move || metrics.render(&topics)).await.unwrap_or_default();
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
        }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "only GET /metrics is served here\n") });
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// A tower layer that times every gRPC call the server answers, by
/// service and method (`brook_rpc_duration_seconds`), admin and metadata
/// calls included.
#[derive(Debug, Clone)]
pub struct RpcTimingLayer {
    histogram: HistogramVec,
}

impl RpcTimingLayer {
    pub fn new(metrics: &Metrics) -> RpcTimingLayer {
        RpcTimingLayer { histogram: metrics.rpc_duration.clone() }
    }
}

impl<S> tower::Layer<S> for RpcTimingLayer {
    type Service = RpcTiming<S>;

    fn layer(&self, inner: S) -> RpcTiming<S> {
        RpcTiming { inner, histogram: self.histogram.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct RpcTiming<S> {
    inner: S,
    histogram: HistogramVec,
}

impl<S, B> tower::Service<http::Request<B>> for RpcTiming<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // gRPC paths are /package.Service/Method.
        let path = request.uri().path();
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("unknown", path));
        let timer = self.histogram.with_label_values(&[service, method]).start_timer();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answered = answer.await;
            timer.observe_duration();
            answered
        })
    }
}
