//! `brook group ...`: consumer groups as an operator sees them.

use anyhow::Context;
use brook_client::{Admin, ResetOffsets};

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List groups: state (Empty, Stable, Reconciling) and member count.
    ///
    /// Example: brook group list
    List,
    /// One line per partition: owner, committed offset, end offset, lag;
    /// then the members.
    ///
    /// Example: brook group describe billing
    Describe { group: String },
    /// Move a group's committed offsets on a topic. Refused while the
    /// group has live members (stop its consumers first).
    ///
    /// Example: brook group reset-offsets billing --topic orders --to-datetime 2026-11-30T08:00:00Z
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable; default all).
        #[arg(long = "partition")]
        partitions: Vec<u32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        /// Clamped into each partition's earliest..latest.
        #[arg(long)]
        to_offset: Option<i64>,
        /// RFC 3339 (2026-11-30T08:00:00Z): the first record at or after it.
        #[arg(long)]
        to_datetime: Option<String>,
    },
    /// Forget a group without members, with its committed offsets.
    ///
    /// Example: brook group delete billing
    Delete { group: String },
}

pub async fn run(command: GroupCommand, bootstrap: &str) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    match command {
        GroupCommand::List => {
            for group in admin.list_groups().await? {
                outln!("{}\tstate={}\tmembers={}", group.group_id, group.state, group.members);
            }
        }
        GroupCommand::Describe { group } => {
            let described = admin.describe_group(&group).await?;
            outln!(
                "group {}\tstate={}\tepoch={}\tassignor={}\tmembers={}",
                described.group_id,
                described.state,
                described.group_epoch,
                described.assignor,
                described.members.len()
            );
            outln!("TOPIC\tPARTITION\tOWNER\tCOMMITTED\tEND\tLAG");
            let shown = |value: i64| if value < 0 { "-".to_string() } else { value.to_string() };
            for partition in &described.partitions {
                let owner = if partition.owner.is_empty() { "-" } else { partition.owner.as_str() };
                outln!(
                    "{}\t{}\t{owner}\t{}\t{}\t{}",
                    partition.topic,
                    partition.partition,
                    shown(partition.committed_offset),
                    shown(partition.end_offset),
                    shown(partition.lag)
                );
            }
            for member in &described.members {
                let list = |partitions: &[brook_client::proto::TopicPartition]| {
                    partitions.iter().map(|tp| format!("{}-{}", tp.topic, tp.partition)).collect::<Vec<_>>().join(",")
                };
                outln!(
                    "member {}\tepoch={}\tclient={}\ttopics={}\tassigned={}\trevoking={}",
                    member.member_id,
                    member.member_epoch,
                    member.client_id,
                    member.subscribed_topics.join(","),
                    list(&member.assigned),
                    list(&member.revoking)
                );
            }
        }
        GroupCommand::ResetOffsets { group, topic, partitions, to_earliest, to_latest, to_offset, to_datetime } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime) {
                (true, ..) => ResetOffsets::Earliest,
                (_, true, ..) => ResetOffsets::Latest,
                (_, _, Some(offset), _) => ResetOffsets::Offset(offset),
                (_, _, _, Some(datetime)) => {
                    let time = chrono::DateTime::parse_from_rfc3339(&datetime).with_context(|| {
                        format!("--to-datetime '{datetime}' is not RFC 3339 (2026-11-30T08:00:00Z)")
                    })?;
                    ResetOffsets::Timestamp(time.timestamp_millis())
                }
                _ => anyhow::bail!("say where to: --to-earliest, --to-latest, --to-offset N or --to-datetime T"),
            };
            for offset in admin.reset_offsets(&group, &topic, &partitions, to).await? {
                outln!("{}\t{}\t{}", offset.topic, offset.partition, offset.offset);
            }
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            outln!("deleted group {group}");
        }
    }
    Ok(())
}
