//! `brook consume`: records to stdout, one per line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use brook_client::{Consumer, ConsumerConfig, OffsetReset, Seek, TopicPartition};

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Only this partition (default: all of them).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the earliest offset (default: the group's committed offset,
    /// else only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (of each consumed partition).
    #[arg(long)]
    offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop once no record arrived for this many milliseconds.
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Commit consumed offsets under this group id, and start from them.
    #[arg(long)]
    group: Option<String>,
    /// Print the key before the value, tab-separated.
    #[arg(long)]
    print_key: bool,
    /// Print partition:offset before the record, tab-separated.
    #[arg(long)]
    print_offset: bool,
}

pub async fn run(args: ConsumeArgs, bootstrap: &str) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        auto_offset_reset: if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    match args.partition {
        Some(partition) => consumer.assign(vec![TopicPartition::new(&args.topic, partition)]).await?,
        None => consumer.subscribe(&[&args.topic]).await?,
    }
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Some(Seek::Beginning),
        (false, Some(offset)) => Some(Seek::Offset(brook_client::Offset(offset))),
        (false, None) => None,
    };
    if let Some(start) = start {
        for tp in consumer.assignment() {
            consumer.seek(&tp, start).await?;
        }
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let max_messages = args.max_messages.unwrap_or(u64::MAX);
    let idle_timeout = args.idle_timeout.map(Duration::from_millis);
    let mut printed = 0u64;
    // What was printed, per partition: what a group commits (poll may
    // return more than --max-messages lets through).
    let mut next_offsets = std::collections::BTreeMap::new();
    let mut last_record = Instant::now();
    while printed < max_messages {
        let wait = idle_timeout.map_or(Duration::from_millis(500), |idle| idle.saturating_sub(last_record.elapsed()));
        let records = consumer.poll(wait.max(Duration::from_millis(1))).await?;
        if records.is_empty() {
            out.flush().context("writing stdout")?;
            if idle_timeout.is_some_and(|idle| last_record.elapsed() >= idle) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for record in records {
            if printed == max_messages {
                break;
            }
            if args.print_offset {
                write!(out, "{}:{}\t", record.partition, record.offset)?;
            }
            if args.print_key {
                out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
                out.write_all(b"\t")?;
            }
            out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
            out.write_all(b"\n")?;
            printed += 1;
            next_offsets.insert(TopicPartition::new(&*record.topic, record.partition), record.offset.plus(1));
        }
    }
    out.flush().context("writing stdout")?;
    if args.group.is_some() && !next_offsets.is_empty() {
        consumer.commit_offsets(next_offsets).await?;
    }
    Ok(())
}
