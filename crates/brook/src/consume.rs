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
    /// Start at the earliest offset (default: only new records). With
    /// --group: where a partition the group never committed starts.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (of each consumed partition; not with --group).
    #[arg(long, conflicts_with = "group")]
    offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop once no record arrived for this many milliseconds.
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Join this consumer group: consume the partitions it assigns (shared
    /// with the group's other members), from its committed offsets, and
    /// commit what was printed (every 5 s, when partitions move, at exit).
    /// With --partition: that partition only, outside the group protocol
    /// (refused while the group has members).
    #[arg(long)]
    group: Option<String>,
    /// The group session timeout (ms): a member not heard from for this
    /// long loses its partitions to the others.
    #[arg(long, default_value_t = 45_000)]
    session_timeout_ms: u64,
    /// Print the key before the value, tab-separated.
    #[arg(long)]
    print_key: bool,
    /// Print partition:offset before the record, tab-separated.
    #[arg(long)]
    print_offset: bool,
    /// `value` (the value, one per line; with --print-key/--print-offset);
    /// `json` (one object per line: topic, partition, offset, timestamp_ms,
    /// key, value, headers; bytes that are not UTF-8 as {"base64": ...}:
    /// `brook produce --format json` reads it back); or a template such as
    /// '{partition}:{offset} {key}={value} [{headers}]\n' ({topic},
    /// {timestamp} too; \n and \t as escapes; no newline is added).
    #[arg(long, default_value = "value")]
    format: String,
}

pub async fn run(args: ConsumeArgs, bootstrap: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(args.format.as_str(), "value" | "json") || args.format.contains('{'),
        "--format must be value, json or a template with {{fields}} (e.g. '{{offset}} {{value}}\\n'), not '{}'",
        args.format
    );
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        auto_offset_reset: if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(bootstrap, config).await?;
    match args.partition {
        Some(partition) => consumer.assign(vec![TopicPartition::new(args.topic.as_str(), partition)]).await?,
        None => consumer.subscribe(&[&args.topic]).await?,
    }
    let in_group = args.group.is_some() && args.partition.is_none();
    let start = match (args.from_beginning, args.offset) {
        // A group starts each partition at its committed offset, else by
        // the reset policy (earliest, with --from-beginning).
        _ if in_group => None,
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
    // Where each partition's first record that was returned but not
    // printed is (poll may return more than --max-messages lets through):
    // the group's position goes back there before it commits.
    let mut unprinted = std::collections::BTreeMap::new();
    let mut last_record = Instant::now();
    // Ctrl-C or SIGTERM ends the run like --max-messages does: what was
    // printed is committed and a group member leaves its group, so its
    // partitions go to the others at once rather than after its session.
    let stop = crate::serve::wait_for_signal();
    tokio::pin!(stop);
    // A bar only towards a --max-messages goal, and only on a terminal
    // (stderr), so the records on stdout stay as they are.
    let bar = args.max_messages.map(|goal| crate::progress::Progress::new(Some(goal), "records"));
    while printed < max_messages {
        let wait = idle_timeout.map_or(Duration::from_millis(500), |idle| idle.saturating_sub(last_record.elapsed()));
        let records = tokio::select! {
            records = consumer.poll(wait.max(Duration::from_millis(1))) => records?,
            () = &mut stop => break,
        };
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
                unprinted.entry(TopicPartition::new(&*record.topic, record.partition)).or_insert(record.offset);
                continue;
            }
            match args.format.as_str() {
                "value" => {
                    if args.print_offset {
                        write!(out, "{}:{}\t", record.partition, record.offset)?;
                    }
                    if args.print_key {
                        out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
                        out.write_all(b"\t")?;
                    }
                    out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
                    out.write_all(b"\n")?;
                }
                "json" => writeln!(out, "{}", crate::record_format::to_json(&record))?,
                template => {
                    let mut rendered = Vec::new();
                    crate::record_format::render_template(template, &record, &mut rendered);
                    out.write_all(&rendered)?;
                }
            }
            printed += 1;
        }
        if let Some(bar) = &bar {
            bar.set(printed);
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    out.flush().context("writing stdout")?;
    for (tp, offset) in unprinted {
        consumer.seek(&tp, Seek::Offset(offset)).await?;
    }
    if in_group {
        // Commits what was printed and leaves: the partitions go to the
        // group's other members at once.
        consumer.close().await?;
    } else if args.group.is_some() {
        consumer.commit().await?;
    }
    Ok(())
}
