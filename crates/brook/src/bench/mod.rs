//! `brook bench`: load generators that measure Brook on the machine at
//! hand, and `limits`, which measures that machine's own references (disk
//! and loopback bandwidth) so every figure can be read as a ratio.
//!
//! Every result states the setup it was measured with, in the human
//! output and in `--json`.

mod consume;
mod e2e;
mod group_commits;
mod latency;
mod limits;
mod metadata;
mod produce;

use std::time::Duration;

use brook_client::{Acks, Admin, NewTopic};
use serde_json::json;

pub use latency::LatencyRecorder;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Send records as fast as possible (or at a set rate) and report
    /// throughput and send-to-ack latency percentiles.
    ///
    /// Example: brook bench produce --records 5000000 --acks 1 --partitions 6
    Produce(produce::ProduceArgs),
    /// Read records from the beginning of a topic as fast as possible.
    ///
    /// Example: brook bench consume --records 5000000
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate while consuming; report produce-to-receipt
    /// latency percentiles.
    ///
    /// Example: brook bench e2e --throughput 10000 --records 100000
    E2e(e2e::E2eArgs),
    /// Topics created and deleted per second through the admin API (in a
    /// cluster: through the metadata Raft group).
    ///
    /// Example: brook bench metadata --topics 200 --replication-factor 3
    Metadata(metadata::MetadataArgs),
    /// Offset commits per second through the group coordinator, from many
    /// members of one group.
    ///
    /// Example: brook bench group-commits --members 100 --duration-secs 10
    GroupCommits(group_commits::GroupCommitsArgs),
    /// Measure this machine's references: sequential disk write and read of
    /// the data directory, and loopback TCP bandwidth.
    ///
    /// Example: brook bench limits --dir ./data
    Limits(limits::LimitsArgs),
}

pub async fn run(command: BenchCommand, bootstrap: &str) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce::run(args, bootstrap).await,
        BenchCommand::Consume(args) => consume::run(args, bootstrap).await,
        BenchCommand::E2e(args) => e2e::run(args, bootstrap).await,
        BenchCommand::Limits(args) => limits::run(args).await,
        BenchCommand::Metadata(args) => metadata::run(args, bootstrap).await,
        BenchCommand::GroupCommits(args) => group_commits::run(args, bootstrap).await,
    }
}

/// Where a topic for a benchmark comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Replication factor for a created topic.
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Spread the load over this many topics, named `<topic>-0` ... (1: just
    /// `<topic>`), each with `--partitions` partitions.
    #[arg(long, default_value_t = 1)]
    topics: u32,
}

impl TopicArgs {
    /// The topic names this run uses.
    pub fn names(&self) -> Vec<String> {
        if self.topics <= 1 {
            vec![self.topic.clone()]
        } else {
            (0..self.topics).map(|index| format!("{}-{index}", self.topic)).collect()
        }
    }
}

/// What a figure was measured with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub brokers: usize,
    pub topics: usize,
    /// Each topic with its partition count.
    pub topic_partitions: Vec<(String, u32)>,
    /// Over all topics.
    pub partitions: usize,
    pub replication_factor: u32,
    pub flush_policy: String,
    pub acks: Option<Acks>,
    pub record_bytes: Option<usize>,
    pub batch_bytes: Option<usize>,
    pub linger: Option<Duration>,
    pub producers: Option<usize>,
}

fn acks_name(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

impl Setup {
    /// Creates the topic if asked and missing, then reads the setup back
    /// from the cluster.
    pub async fn prepare(bootstrap: &str, topic: &TopicArgs) -> anyhow::Result<Setup> {
        let admin = Admin::connect(bootstrap).await?;
        let mut partitions = 0;
        let mut description = None;
        let mut topic_partitions = Vec::new();
        for name in topic.names() {
            if let Err(error) = admin.describe_topic(&name).await {
                if error.error_code() != Some(brook_client::ErrorCode::UnknownTopicOrPartition) {
                    return Err(error.into());
                }
                admin.create_topic(NewTopic::new(&name, topic.partitions, topic.replication_factor)).await?;
            }
            let described = admin.describe_topic(&name).await?;
            partitions += described.partitions.len();
            topic_partitions.push((name.clone(), described.partitions.len() as u32));
            description = Some(described);
        }
        let description = description.expect("at least one topic");
        let cluster = admin.describe_cluster().await?;
        Ok(Setup {
            brokers: cluster.brokers.len(),
            topics: topic.names().len(),
            topic_partitions,
            partitions,
            replication_factor: description.replication_factor,
            flush_policy: description
                .configs
                .get(brook_broker::topic_config::keys::FLUSH_POLICY)
                .cloned()
                .unwrap_or_else(|| "none".into()),
            acks: None,
            record_bytes: None,
            batch_bytes: None,
            linger: None,
            producers: None,
        })
    }

    /// Records the producer side of the setup.
    pub fn with_producer(
        mut self,
        acks: Acks,
        record_bytes: usize,
        batch_bytes: usize,
        linger: Duration,
        producers: usize,
    ) -> Setup {
        self.acks = Some(acks);
        self.record_bytes = Some(record_bytes);
        self.batch_bytes = Some(batch_bytes);
        self.linger = Some(linger);
        self.producers = Some(producers);
        self
    }

    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("brokers={}", self.brokers),
            format!("topics={}", self.topics),
            format!("partitions={}", self.partitions),
            format!("replication-factor={}", self.replication_factor),
            format!("flush={}", self.flush_policy),
        ];
        if let Some(acks) = self.acks {
            parts.push(format!("acks={}", acks_name(acks)));
        }
        if let Some(bytes) = self.record_bytes {
            parts.push(format!("record-size={bytes}B"));
        }
        if let Some(bytes) = self.batch_bytes {
            parts.push(format!("batch-size={bytes}B"));
        }
        if let Some(linger) = self.linger {
            parts.push(format!("linger={}ms", linger.as_millis()));
        }
        if let Some(producers) = self.producers {
            parts.push(format!("producers={producers}"));
        }
        parts.join(" ")
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "brokers": self.brokers,
            "topics": self.topics,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "flush_policy": self.flush_policy,
            "acks": self.acks.map(acks_name),
            "record_size": self.record_bytes,
            "batch_size": self.batch_bytes,
            "linger_ms": self.linger.map(|linger| linger.as_millis() as u64),
            "producers": self.producers,
        })
    }
}

/// Prints a JSON result with the latency fields merged in at the top
/// level (`latency_ms_p99`, ...), where scripts look for them.
pub fn print_json_with_latency(mut result: serde_json::Value, latencies: &LatencyRecorder) {
    if let (Some(object), serde_json::Value::Object(extra)) = (result.as_object_mut(), latencies.to_json()) {
        object.extend(extra);
    }
    outln!("{result}");
}

/// Throughput over a span.
pub fn rates(records: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    (records as f64 / seconds, bytes as f64 / seconds / 1e6)
}
