//! `brook topic ...`.

use brook_client::{Admin, NewTopic};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    ///
    /// Example: brook topic create orders --partitions 6 --replication-factor 3 --config retention.ms=86400000
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Default: the cluster's (`brook serve --default-replication-factor`).
        #[arg(long)]
        replication_factor: Option<u32>,
        /// A topic config as key=value (retention.ms, segment.bytes,
        /// min.insync.replicas, flush.policy, ...); repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    ///
    /// Example: brook topic list
    List,
    /// Show a topic's partitions, offsets and configs.
    ///
    /// Example: brook topic describe orders
    Describe { name: String },
    /// Delete a topic and its data.
    ///
    /// Example: brook topic delete orders
    Delete { name: String },
    /// Change a topic's configs; every replica applies them at once
    /// (retention at its next pass, segment size at its next append).
    ///
    /// Example: brook topic alter-config orders --set retention.ms=3600000 --delete segment.bytes
    AlterConfig {
        name: String,
        /// key=value to set (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// A config to remove, back to its default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Grow a topic to N partitions (Kafka's semantics: only up). Keyed
    /// records are placed by hash of the key over the partition count, so
    /// the keys that now hash to a new partition land there from now on:
    /// their older records stay where they were (per-key order across the
    /// change is not kept).
    ///
    /// Example: brook topic add-partitions orders --to 12
    AddPartitions {
        name: String,
        /// The new partition count.
        #[arg(long)]
        to: u32,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .ok_or_else(|| format!("'{text}' is not key=value"))
}

pub async fn run(command: TopicCommand, bootstrap: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        TopicCommand::AlterConfig { name, set, delete } => {
            anyhow::ensure!(
                !set.is_empty() || !delete.is_empty(),
                "say what to change: --set key=value or --delete key"
            );
            let topic = admin.alter_topic_config(&name, set.into_iter().collect(), delete).await?;
            let mut configs: Vec<_> = topic.configs.into_iter().collect();
            configs.sort();
            outln!(
                "topic {name} configs: {}",
                configs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            );
        }
        TopicCommand::AddPartitions { name, to } => {
            let topic = admin.add_partitions(&name, to).await?;
            outln!("topic {name} now has {} partitions", topic.partitions.len());
        }
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let mut topic = NewTopic::new(&name, partitions, replication_factor.unwrap_or(0));
            topic.configs.extend(configs);
            let created = admin.create_topic(topic).await?;
            outln!(
                "created topic {name} with {partitions} partition(s), replication factor {}",
                created.replication_factor
            );
        }
        TopicCommand::List => {
            for topic in admin.list_topics().await? {
                outln!(
                    "{}\tpartitions={}\treplication-factor={}",
                    topic.name,
                    topic.partitions,
                    topic.replication_factor
                );
            }
        }
        TopicCommand::Describe { name } => {
            let topic = admin.describe_topic(&name).await?;
            outln!("topic {}\treplication-factor={}", topic.name, topic.replication_factor);
            let mut configs: Vec<_> = topic.configs.into_iter().collect();
            configs.sort();
            outln!("configs\t{}", configs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
            for partition in topic.partitions {
                outln!(
                    "partition {}\tleader={}\tepoch={}\treplicas={:?}\tisr={:?}\tlog-start={}\thigh-watermark={}\tlog-end={}",
                    partition.partition,
                    partition.leader,
                    partition.leader_epoch,
                    partition.replicas,
                    partition.isr,
                    partition.log_start_offset,
                    partition.high_watermark,
                    partition.log_end_offset
                );
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            outln!("deleted topic {name}");
        }
    }
    Ok(())
}
