//! `brook produce`: one record per stdin line, through the batching
//! producer. Delivery futures are awaited in order by a second task, so
//! reading stdin never waits for acknowledgements (only for buffer space).

use anyhow::Context;
use brook_client::{Acks, ClientError, Producer, ProducerConfig, ProducerRecord};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// 0: do not wait; 1: the leader has it; all: every in-sync replica has it.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Split each line at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: brook_client::Compression,
    /// Idempotence, on by default with acks=all (retries never write a
    /// record twice): `--idempotence false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idempotence: bool,
    /// A name for this producer across runs (1-255 bytes): a new run under
    /// the same key fences the batches of the one before.
    #[arg(long)]
    producer_key: Option<String>,
    /// A header on every record, as key=value (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// `line`: each line is a value (or key and value, with
    /// --key-separator); `json`: each line is a record as `brook consume
    /// --format json` prints it (key, value, headers and timestamp_ms are
    /// taken; binary as {"base64": ...}; topic, partition and offset are
    /// not: the record goes to this topic, by --partition or its key).
    #[arg(long, value_enum, default_value_t = InputFormat::Line)]
    format: InputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Line,
    Json,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| format!("header '{text}' is not key=value"))
}

pub(crate) fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!("'{text}' is not 0, 1 or all")),
    }
}

/// Deliveries awaited but not yet confirmed, at most.
const MAX_PENDING_DELIVERIES: usize = 1 << 16;

pub async fn run(args: ProduceArgs, bootstrap: &str) -> anyhow::Result<()> {
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        enable_idempotence: args.idempotence,
        producer_key: args.producer_key,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(bootstrap, config).await?;
    let (deliveries, mut pending) = tokio::sync::mpsc::channel::<brook_client::DeliveryFuture>(MAX_PENDING_DELIVERIES);
    let confirmer = tokio::spawn(async move {
        let (mut acknowledged, mut first_error): (u64, Option<ClientError>) = (0, None);
        while let Some(delivery) = pending.recv().await {
            match delivery.await {
                Ok(_) => acknowledged += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (acknowledged, first_error)
    });

    let topic: std::sync::Arc<str> = args.topic.as_str().into();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut lines_read = 0u64;
    let mut send_error = None;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        lines_read += 1;
        let mut record = match args.format {
            InputFormat::Json => crate::record_format::from_json(&line, topic.clone(), false)
                .with_context(|| format!("line {lines_read} is not a record"))?,
            InputFormat::Line => {
                let (key, value) = match args.key_separator.as_deref().and_then(|separator| line.split_once(separator))
                {
                    Some((key, value)) => (Some(Bytes::copy_from_slice(key.as_bytes())), value.to_string()),
                    None => (None, line),
                };
                ProducerRecord { key, ..ProducerRecord::new(topic.clone(), value) }
            }
        };
        record.partition = args.partition;
        for (key, value) in &args.headers {
            record
                .headers
                .push((Bytes::copy_from_slice(key.as_bytes()), Some(Bytes::copy_from_slice(value.as_bytes()))));
        }
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send(delivery).await.is_err() {
                    break;
                }
            }
            Err(error) => {
                send_error = Some(error);
                break;
            }
        }
    }
    producer.close().await;
    drop(deliveries);
    let (acknowledged, delivery_error) = confirmer.await.context("confirming deliveries")?;
    if let Some(error) = send_error.or(delivery_error) {
        anyhow::bail!("{acknowledged} of {lines_read} records were acknowledged; first error: {error}");
    }
    Ok(())
}
