//! A real single broker: records go in through the batching producer and
//! come back byte-exact and in order, before and after a kill -9; committed
//! offsets survive the restart too.

use crate::harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, Offset, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use bytes::Bytes;
use harness::Broker;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
const RECORDS: usize = 200_000;

/// Record `index`'s key: none, empty, or short text, by turns.
fn key(index: usize) -> Option<Bytes> {
    match index % 5 {
        0 => None,
        1 => Some(Bytes::new()),
        _ => Some(Bytes::from(format!("key-{}", index % 1000))),
    }
}

/// Record `index`'s value: mostly small, some empty or missing, every
/// 2,000th 100 KiB.
fn value(index: usize) -> Option<Bytes> {
    if index % 2000 == 7 {
        return Some(Bytes::from(vec![(index % 251) as u8; 100 * 1024]));
    }
    match index % 7 {
        0 => None,
        1 => Some(Bytes::new()),
        _ => Some(Bytes::from(format!("value {index} {}", "x".repeat(index % 300)))),
    }
}

/// Reads every partition from the beginning until `expected` records came.
async fn consume_all(address: &str, expected: usize) -> BTreeMap<u32, Vec<brook_client::ConsumerRecord>> {
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(address, config).await.expect("consumer");
    consumer.subscribe(&[TOPIC]).await.expect("subscribe");
    let mut by_partition: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < expected {
        assert!(Instant::now() < deadline, "consumed {count} of {expected} records in 120 s");
        for record in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            by_partition.entry(record.partition).or_default().push(record);
            count += 1;
        }
    }
    assert!(consumer.poll(Duration::from_millis(300)).await.expect("poll").is_empty(), "no extra records");
    by_partition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_byte_exact_in_order_and_survive_kill_9() {
    let mut broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new(TOPIC, PARTITIONS, 1)).await.expect("create topic");

    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    let mut deliveries = Vec::with_capacity(RECORDS);
    for index in 0..RECORDS {
        let record =
            ProducerRecord { key: key(index), value: value(index), ..ProducerRecord::new(TOPIC, Bytes::new()) };
        deliveries.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await;
    // (partition, offset) -> the index of the record sent there.
    let mut sent_at = BTreeMap::new();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let landed = delivery.await.expect("acknowledged");
        let offset = landed.offset.expect("acks=all reports the offset");
        assert!(sent_at.insert((landed.partition, offset), index).is_none(), "two records at one offset");
    }
    producer.close().await;

    let check = |by_partition: &BTreeMap<u32, Vec<brook_client::ConsumerRecord>>| {
        let mut seen = 0;
        for (partition, records) in by_partition {
            let mut previous_index = None;
            for (position, record) in records.iter().enumerate() {
                assert_eq!(record.offset, Offset(position as u64), "partition {partition} offsets are dense from 0");
                let index = sent_at[&(*partition, record.offset)];
                assert_eq!(record.key, key(index), "key of record {index}");
                assert_eq!(record.value, value(index), "value of record {index}");
                assert!(previous_index < Some(index), "partition {partition} keeps send order");
                previous_index = Some(index);
                seen += 1;
            }
        }
        assert_eq!(seen, RECORDS);
    };
    let before = consume_all(&broker.address, RECORDS).await;
    check(&before);
    assert!(before.len() > 1, "records spread over partitions");

    let mut group = Consumer::connect(
        &broker.address,
        ConsumerConfig { group_id: Some("auditors".into()), ..ConsumerConfig::default() },
    )
    .await
    .expect("group consumer");
    group.assign(vec![TopicPartition::new(TOPIC, 0), TopicPartition::new(TOPIC, 2)]).await.expect("assign");
    let commits =
        BTreeMap::from([(TopicPartition::new(TOPIC, 0), Offset(1234)), (TopicPartition::new(TOPIC, 2), Offset(7))]);
    group.commit_offsets(commits.clone()).await.expect("commit");

    broker.kill();
    broker.restart().await;

    let after = consume_all(&broker.address, RECORDS).await;
    check(&after);
    for (partition, records) in &before {
        let again = &after[partition];
        assert_eq!(again.len(), records.len());
        assert!(records.iter().zip(again).all(|(a, b)| a.key == b.key && a.value == b.value && a.offset == b.offset));
    }
    let group = Consumer::connect(
        &broker.address,
        ConsumerConfig { group_id: Some("auditors".into()), ..ConsumerConfig::default() },
    )
    .await
    .expect("group consumer");
    let committed = group.committed(&commits.keys().cloned().collect::<Vec<_>>()).await.expect("committed");
    assert_eq!(committed, commits, "committed offsets survive kill -9");
    assert!(broker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_in_a_group_resumes_from_its_committed_offset() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("events", 1, 1)).await.expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    for index in 0..100u32 {
        producer.send(ProducerRecord::new("events", index.to_string())).await.expect("send");
    }
    producer.close().await;

    let config = ConsumerConfig {
        group_id: Some("readers".into()),
        auto_offset_reset: OffsetReset::Earliest,
        max_poll_records: 30,
        ..ConsumerConfig::default()
    };
    let mut first = Consumer::connect(&broker.address, config.clone()).await.expect("consumer");
    first.subscribe(&["events"]).await.expect("subscribe");
    let batch = first.poll(Duration::from_secs(5)).await.expect("poll");
    assert_eq!(batch.len(), 30);
    first.commit().await.expect("commit");
    // A group shares its partitions: the one partition is the first
    // member's until it leaves.
    first.close().await.expect("leave");

    let mut second = Consumer::connect(&broker.address, config).await.expect("consumer");
    second.subscribe(&["events"]).await.expect("subscribe");
    let resumed = second.poll(Duration::from_secs(5)).await.expect("poll");
    assert_eq!(resumed.first().map(|record| record.offset), Some(Offset(30)));
    assert_eq!(resumed.first().and_then(|record| record.value.clone()), Some(Bytes::from("30")));
}
