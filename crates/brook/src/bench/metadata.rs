//! `brook bench metadata`: topics created (and deleted) per second through
//! the admin API: in a cluster, each is one command committed by the
//! metadata Raft group and applied by every broker.

use std::time::Instant;

use brook_client::{Admin, NewTopic};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct MetadataArgs {
    /// Topics to create, one after another, then delete.
    #[arg(long, default_value_t = 200)]
    topics: u32,
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: MetadataArgs, bootstrap: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let brokers = admin.describe_cluster().await?.brokers.len();
    let prefix = format!("bench-metadata-{}", std::process::id());
    let started = Instant::now();
    for index in 0..args.topics {
        admin
            .create_topic(NewTopic::new(format!("{prefix}-{index}"), args.partitions, args.replication_factor))
            .await?;
    }
    let created_in = started.elapsed();
    let started = Instant::now();
    for index in 0..args.topics {
        admin.delete_topic(&format!("{prefix}-{index}")).await?;
    }
    let deleted_in = started.elapsed();
    let created_per_sec = f64::from(args.topics) / created_in.as_secs_f64();
    let deleted_per_sec = f64::from(args.topics) / deleted_in.as_secs_f64();
    if args.json {
        let result = json!({
            "benchmark": "metadata",
            "topics": args.topics,
            "topics_created_per_sec": created_per_sec,
            "topics_deleted_per_sec": deleted_per_sec,
            "setup": { "brokers": brokers, "partitions": args.partitions, "replication_factor": args.replication_factor },
        });
        outln!("{result}");
    } else {
        outln!(
            "setup: brokers={brokers} partitions-per-topic={} replication-factor={}",
            args.partitions,
            args.replication_factor
        );
        outln!(
            "{} topics created one by one: {created_per_sec:.1} topics/s; deleted: {deleted_per_sec:.1} topics/s",
            args.topics
        );
    }
    Ok(())
}
