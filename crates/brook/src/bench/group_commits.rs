//! `brook bench group-commits`: offset commits per second sustained by the
//! group coordinator. `--members` consumers join one group on a topic with
//! as many partitions (one each), then each commits its partition's offset
//! in a loop, one commit in flight per member, for `--duration-secs`. Every
//! commit is checked against the member's epoch and goes through the
//! metadata Raft group (the coordinator batches the commits that arrive
//! while a proposal is in flight).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_client::{Admin, Cluster, Consumer, ConsumerConfig, NewTopic, Offset};
use serde_json::json;

use super::LatencyRecorder;

#[derive(Debug, clap::Args)]
pub struct GroupCommitsArgs {
    /// Consumers in the group, each committing in a loop.
    #[arg(long, default_value_t = 100)]
    members: u32,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// The topic (created with one partition per member if missing).
    #[arg(long, default_value = "bench-commits")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    #[arg(long)]
    json: bool,
}

/// How long the members may take to each get their partition.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(args: GroupCommitsArgs, bootstrap: &str) -> anyhow::Result<()> {
    anyhow::ensure!((1..=1000).contains(&args.members), "--members must be 1-1000");
    let cluster = Cluster::connect(bootstrap).await?;
    let admin = Admin::new(Arc::clone(&cluster));
    if admin.describe_topic(&args.topic).await.is_err() {
        admin.create_topic(NewTopic::new(&args.topic, args.members, args.replication_factor)).await?;
    }
    let brokers = admin.describe_cluster().await?.brokers.len();
    let group = format!("bench-commits-{}", std::process::id());
    let config = ConsumerConfig {
        group_id: Some(group.clone()),
        enable_auto_commit: false,
        session_timeout: Duration::from_secs(10),
        ..ConsumerConfig::default()
    };
    let mut members = Vec::new();
    for _ in 0..args.members {
        let mut consumer = Consumer::new(Arc::clone(&cluster), config.clone());
        consumer.subscribe(&[&args.topic]).await?;
        members.push(consumer);
    }
    let joined_at = Instant::now();
    // Each member polls (which applies its assignment) until every one
    // holds one partition.
    let settled = settle(&admin, &group, members, joined_at).await?;
    let settle_time = joined_at.elapsed();

    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for consumer in settled {
        tasks.spawn(async move {
            let mut latencies = LatencyRecorder::default();
            let Some(partition) = consumer.assignment().into_iter().next() else { return Ok((latencies, 0u64)) };
            let mut offset = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                consumer.commit_offsets(BTreeMap::from([(partition.clone(), Offset(offset))])).await?;
                latencies.record(sent.elapsed());
                offset += 1;
            }
            Ok::<_, brook_client::ClientError>((latencies, offset))
        });
    }
    let mut latencies = LatencyRecorder::default();
    let mut commits = 0u64;
    while let Some(done) = tasks.join_next().await {
        let (member_latencies, count) = done??;
        latencies.merge(&member_latencies);
        commits += count;
    }
    let elapsed = started.elapsed();
    let per_sec = commits as f64 / elapsed.as_secs_f64();
    if args.json {
        let result = json!({
            "benchmark": "group-commits",
            "members": args.members,
            "commits": commits,
            "commits_per_sec": per_sec,
            "settle_ms": settle_time.as_millis() as u64,
            "latency_ms": {
                "p50": latencies.quantile_ms(0.5),
                "p99": latencies.quantile_ms(0.99),
                "max": latencies.max_ms(),
            },
            "setup": { "brokers": brokers, "replication_factor": args.replication_factor },
        });
        outln!("{result}");
    } else {
        outln!(
            "setup: brokers={brokers} members={} partitions={} (one each) replication-factor={}",
            args.members,
            args.members,
            args.replication_factor
        );
        outln!("{} members joined and held one partition each after {} ms", args.members, settle_time.as_millis());
        outln!(
            "{commits} commits in {:.1} s: {per_sec:.0} commits/s; commit latency {}",
            elapsed.as_secs_f64(),
            latencies.summary()
        );
    }
    Ok(())
}

/// Polls every member, in rounds, until the group is stable with one
/// partition per member.
async fn settle(
    admin: &Admin,
    group: &str,
    mut members: Vec<Consumer>,
    since: Instant,
) -> anyhow::Result<Vec<Consumer>> {
    loop {
        anyhow::ensure!(since.elapsed() < SETTLE_LIMIT, "the group did not settle within {SETTLE_LIMIT:?}");
        let mut round = tokio::task::JoinSet::new();
        for mut consumer in members.drain(..) {
            round.spawn(async move {
                consumer.poll(Duration::from_millis(200)).await?;
                Ok::<_, brook_client::ClientError>(consumer)
            });
        }
        while let Some(done) = round.join_next().await {
            members.push(done??);
        }
        let described = admin.describe_group(group).await?;
        let settled = described.state == "Stable"
            && described.members.len() == members.len()
            && described.members.iter().all(|member| member.assigned.len() == 1)
            && members.iter().all(|consumer| consumer.assignment().len() == 1);
        if settled {
            return Ok(members);
        }
    }
}
