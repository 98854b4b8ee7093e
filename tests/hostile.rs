//! What a client nobody controls may send, against a real broker: each
//! test crafts the input and checks that it is refused by name (or
//! skipped and reported), that the broker stays up and that its memory
//! does not follow what the input claims.
//!
//! Compressed batches whose header lies: xerial's snappy framing states
//! each block's length, and a 5-byte block `FF FF FF FF 0F` claims 4 GiB;
//! a zstd stream of 64 MiB of zeros weighs a few KiB. Decompression is
//! bounded by what the batch may hold (its record count times the topic's
//! `max.message.bytes`, and never more than 128 MiB), checked before
//! anything is allocated.
//!
//! A producer whose records carry old timestamps (a backfill, a replay, a
//! skewed clock): the leader forgets idle producers by its own clock, so
//! a retry whose first answer was lost is still recognised; and where the
//! leader has truly forgotten the producer, the client fails the retry as
//! of unknown outcome instead of writing it a second time.

mod harness;

use std::time::Duration;

use brook_client::proto::{Acks, ProduceRequest};
use brook_client::{
    Acks as ProducerAcks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use bytes::{Bytes, BytesMut};
use harness::{free_port, Broker, LinkDirection, LinkProxy};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// One record of `value`, as kafka-protocol's encoder builds its batch.
fn kafka_batch(value: Bytes, compression: Compression) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(value),
        headers: Default::default(),
        delete_horizon: Default::default(),
    };
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buffer, &[record], &options).expect("kafka-protocol encodes");
    buffer.freeze()
}

/// A batch of one record whose records area is `area` under `codec`, with
/// its length and CRC right: only what the area claims is false.
fn batch_with_area(codec: u8, area: &[u8]) -> Bytes {
    let mut batch = BytesMut::from(&kafka_batch(Bytes::from_static(b"x"), Compression::None)[..61]);
    batch.extend_from_slice(area);
    let length = (batch.len() - 12) as u32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[22] = (batch[22] & !0x07) | codec;
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// xerial's snappy framing with one block that claims 4 GiB.
fn snappy_block_claiming_4_gib() -> Bytes {
    let mut area = b"\x82SNAPPY\x00".to_vec();
    area.extend_from_slice(&1u32.to_be_bytes());
    area.extend_from_slice(&1u32.to_be_bytes());
    area.extend_from_slice(&5u32.to_be_bytes());
    area.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    batch_with_area(2, &area)
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::All as i32,
        timeout_ms: 0,
        records,
        batches: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_batch_that_lies_about_its_size_is_refused_by_a_recompressing_leader_without_allocating_it() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("lz", 1, 1).config("compression.type", "lz4")).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let peak_before = broker.peak_rss_bytes().expect("the broker's peak RSS");

    let zeros = kafka_batch(Bytes::from(vec![0u8; 64 << 20]), Compression::Zstd);
    println!("a zstd batch of one 64 MiB record of zeros: {} bytes", zeros.len());
    for (what, bomb) in [("snappy block claiming 4 GiB", snappy_block_claiming_4_gib()), ("zstd bomb", zeros)] {
        let status = records.produce(produce("lz", bomb)).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
        let name = status.metadata().get("brook-error").and_then(|value| value.to_str().ok()).unwrap_or_default();
        assert_eq!(name, "CORRUPT_RECORD", "{what}: {status:?}");
        assert!(status.message().contains("decompress to more than 1048576 bytes"), "{what}: {status:?}");
    }
    let peak_after = broker.peak_rss_bytes().expect("the broker's peak RSS");
    println!("broker peak RSS {} MiB before, {} MiB after", peak_before >> 20, peak_after >> 20);
    assert!(peak_after < peak_before + (32 << 20), "the broker's peak RSS rose from {peak_before} to {peak_after}");

    // Nothing was stored, and an honest batch still is.
    let honest = records.produce(produce("lz", kafka_batch(Bytes::from_static(b"ok"), Compression::Snappy))).await;
    assert_eq!(honest.expect("an honest batch").into_inner().base_offset, 0, "the refused batches took no offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_skips_and_reports_a_stored_batch_that_lies_about_its_size_and_reads_on() {
    // A topic that stores batches as the producer sent them: the leader
    // never decompresses, so the lying batch is stored, as it was by
    // brokers before decompression was bounded.
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("p", 1, 1)).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let stored = records.produce(produce("p", snappy_block_claiming_4_gib())).await.expect("stored as sent");
    assert_eq!(stored.into_inner().base_offset, 0);
    for index in 0..5u8 {
        let batch = kafka_batch(Bytes::from(vec![b'a' + index; 100]), Compression::Lz4);
        records.produce(produce("p", batch)).await.expect("an honest batch");
    }

    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["p"]).await.expect("subscribe");
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read.len() < 5 && std::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.expect("poll goes on past the batch") {
            read.push((record.offset.0, record.value.expect("value")[0]));
        }
    }
    assert_eq!(read, vec![(1, b'a'), (2, b'b'), (3, b'c'), (4, b'd'), (5, b'e')], "offset 0 skipped, the rest read");
}

/// A broker behind a proxy that can hold its answers, forgetting idle
/// producers every 100 ms, with topic `topic` (one partition) made with
/// `configs`.
async fn broker_behind_proxy(topic: &str, configs: &[(&str, &str)]) -> (Broker, LinkProxy) {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = LinkProxy::in_front_of(address.clone()).await;
    let broker =
        Broker::start_at(address, &["--advertised-address", &proxy.address, "--log-maintenance-interval-ms", "100"])
            .await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    let mut new_topic = NewTopic::new(topic, 1, 1);
    for (key, value) in configs {
        new_topic = new_topic.config(*key, *value);
    }
    admin.create_topic(new_topic).await.expect("create");
    (broker, proxy)
}

/// Sends 400 records stamped `timestamp_ms`, the broker's answers held
/// for 4 s while records 100..300 go out; every delivery's outcome, in
/// order.
async fn send_through_a_lost_answer(
    proxy: &LinkProxy,
    topic: &str,
    timestamp_ms: i64,
) -> Vec<Result<u64, brook_client::ClientError>> {
    let producer = Producer::connect(
        &proxy.address,
        ProducerConfig {
            acks: ProducerAcks::All,
            request_timeout: Duration::from_millis(1500),
            retry_backoff: Duration::from_millis(100),
            linger: Duration::from_millis(2),
            batch_size: 512,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let send_range = |from: usize, to: usize| {
        let producer = &producer;
        async move {
            let mut deliveries = Vec::new();
            for index in from..to {
                let mut record = ProducerRecord::new(topic, format!("seq-{index}").into_bytes()).partition(0);
                record.timestamp_ms = Some(timestamp_ms);
                deliveries.push(producer.send(record).await.expect("send"));
            }
            deliveries
        }
    };
    let mut outcomes = Vec::new();
    for delivery in send_range(0, 100).await {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    // The broker appends what arrives, but its answers are held: requests
    // time out and the producer retries batches the broker has appended.
    proxy.cut(LinkDirection::Answers, true);
    let in_the_dark = send_range(100, 300).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    proxy.cut(LinkDirection::Answers, false);
    for delivery in in_the_dark {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    for delivery in send_range(300, 400).await {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    outcomes
}

/// Every value stored in partition 0 of `topic`, read from the start
/// until nothing more comes.
async fn stored_values(bootstrap: &str, topic: &str) -> Vec<String> {
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(bootstrap, config).await.expect("consumer");
    consumer.assign(vec![TopicPartition::new(topic, 0)]).await.expect("assign");
    let mut values = Vec::new();
    let mut quiet_polls = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while quiet_polls < 3 && std::time::Instant::now() < give_up {
        let records = consumer.poll(Duration::from_millis(300)).await.expect("poll");
        quiet_polls = if records.is_empty() { quiet_polls + 1 } else { 0 };
        for record in records {
            values.push(String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    values
}

fn two_days_ago_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    now as i64 - 48 * 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stamped_two_days_ago_and_a_lost_answer_are_each_written_once() {
    // The topic keeps idle producers for 24 h (the default); the records
    // say they were made 48 h ago. Measured by their timestamps, the
    // producer would be forgotten at every maintenance pass.
    let (broker, proxy) = broker_behind_proxy("backfill", &[]).await;
    let outcomes = send_through_a_lost_answer(&proxy, "backfill", two_days_ago_ms()).await;
    let offsets: Vec<u64> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| outcome.unwrap_or_else(|error| panic!("record {index} not delivered: {error}")))
        .collect();
    assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 1), "the offsets answered follow each other");
    let stored = stored_values(&broker.address, "backfill").await;
    let expected: Vec<String> = (0..400).map(|index| format!("seq-{index}")).collect();
    assert_eq!(stored, expected, "each record once, in the order sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_the_leader_forgot_fails_as_unknown_and_is_never_written_twice() {
    // Idle producers forgotten after 500 ms on the broker's clock: the
    // broker forgets this one while its answers are held, so the retry of
    // an appended batch cannot be placed.
    let (broker, proxy) = broker_behind_proxy("forgetful", &[("producer.id.expiration.ms", "500")]).await;
    let outcomes = send_through_a_lost_answer(&proxy, "forgetful", two_days_ago_ms()).await;
    let stored = stored_values(&broker.address, "forgetful").await;
    let mut seen = std::collections::HashSet::new();
    for value in &stored {
        assert!(seen.insert(value.as_str()), "{value} was written twice: {stored:?}");
    }
    let mut unknown = 0;
    for (index, outcome) in outcomes.iter().enumerate() {
        let value = format!("seq-{index}");
        match outcome {
            Ok(_) => assert!(seen.contains(value.as_str()), "{value} was acknowledged but is not stored"),
            Err(error) => {
                assert!((100..300).contains(&index), "{value} failed outside the cut: {error}");
                assert!(error.to_string().contains("may or may not have been appended"), "{value}: {error}");
                unknown += 1;
            }
        }
    }
    println!("{unknown} records of unknown outcome, {} stored", stored.len());
    // Records sent after the cut are delivered: the producer went on
    // under a new epoch.
    assert!(outcomes[300..].iter().all(Result::is_ok), "the producer goes on after the refusal");
}
