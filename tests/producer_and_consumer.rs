//! Client behaviour against a real broker that misbehaves: a hung broker
//! makes `send` wait once the buffer is full (bounded memory), a restarted
//! one is retried until the records land; and consumers seek by time.

use crate::harness;

use std::time::Duration;

use brook_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig, ProducerRecord, Seek, TopicPartition,
};
use bytes::Bytes;
use harness::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_send_wait_instead_of_growing() {
    let broker = Broker::start().await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let config =
        ProducerConfig { buffer_memory: 64 * 1024, linger: Duration::from_millis(1), ..ProducerConfig::default() };
    let producer = Producer::connect(&broker.address, config).await.expect("producer");
    let value = Bytes::from(vec![b'v'; 1000]);

    broker.pause();
    let mut accepted = Vec::new();
    let blocked = loop {
        let send = producer.send(ProducerRecord::new("t", value.clone()));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(delivery) => accepted.push(delivery.expect("send")),
            Err(_) => break true,
        }
        if accepted.len() > 1000 {
            break false;
        }
    };
    assert!(blocked, "send never waited: {} records of 1 KB buffered in 64 KiB", accepted.len());
    assert!(accepted.len() <= 64, "{} records of ~1 KB exceed buffer_memory", accepted.len());

    broker.resume();
    for delivery in accepted {
        delivery.await.expect("delivered once the broker is back");
    }
    let last = producer.send(ProducerRecord::new("t", value)).await.expect("send after resume");
    assert!(last.await.expect("delivered").offset.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_during_a_broker_restart_are_retried_until_they_land() {
    let mut broker = Broker::start().await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("t", 2, 1)).await.expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");

    let mut deliveries = Vec::new();
    for index in 0..1000u32 {
        deliveries.push(producer.send(ProducerRecord::new("t", index.to_string())).await.expect("send"));
    }
    broker.kill();
    for index in 1000..2000u32 {
        deliveries.push(producer.send(ProducerRecord::new("t", index.to_string())).await.expect("send"));
    }
    broker.restart().await;
    let mut landed = std::collections::BTreeSet::new();
    for delivery in deliveries {
        let metadata = delivery.await.expect("retried until acknowledged");
        landed.insert((metadata.partition, metadata.offset.expect("offset")));
    }
    assert_eq!(landed.len(), 2000, "every acknowledged record has its own offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_seek_to_the_beginning_the_end_an_offset_and_a_time() {
    let broker = Broker::start().await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    let base_ms = 1_800_000_000_000i64;
    for index in 0..50i64 {
        let record = ProducerRecord {
            timestamp_ms: Some(base_ms + index * 1000),
            ..ProducerRecord::new("t", index.to_string())
        };
        producer.send(record).await.expect("send");
    }
    producer.close().await;

    let mut consumer = Consumer::connect(&broker.address, ConsumerConfig::default()).await.expect("consumer");
    let tp = TopicPartition::new("t", 0);
    consumer.assign(vec![tp.clone()]).await.expect("assign");
    let first = |records: Vec<brook_client::ConsumerRecord>| records.first().map(|record| record.offset);

    consumer.seek(&tp, Seek::Timestamp(base_ms + 20_500)).await.expect("seek by time");
    assert_eq!(first(consumer.poll(Duration::from_secs(5)).await.expect("poll")), Some(Offset(21)));
    consumer.seek(&tp, Seek::Offset(Offset(7))).await.expect("seek to offset");
    assert_eq!(first(consumer.poll(Duration::from_secs(5)).await.expect("poll")), Some(Offset(7)));
    consumer.seek(&tp, Seek::Beginning).await.expect("seek to beginning");
    assert_eq!(first(consumer.poll(Duration::from_secs(5)).await.expect("poll")), Some(Offset(0)));
    consumer.seek(&tp, Seek::End).await.expect("seek to end");
    assert!(consumer.poll(Duration::from_millis(300)).await.expect("poll").is_empty());
    assert_eq!(consumer.position(&tp), Some(Offset(50)));
    consumer.seek(&tp, Seek::Timestamp(base_ms + 999_000)).await.expect("seek past the last record");
    assert_eq!(consumer.position(&tp), Some(Offset(50)), "a time after every record seeks to the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_fetch_answers_when_records_arrive() {
    use brook_client::proto::records_client::RecordsClient;
    use brook_client::proto::FetchRequest;

    let broker = Broker::start().await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", broker.address))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut records = RecordsClient::new(channel);
    let waiting = tokio::spawn(async move {
        let request = FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 30_000,
            min_bytes: 1,
            current_leader_epoch: None,
        };
        records.fetch(request).await.map(tonic::Response::into_inner)
    });
    // The fetch is parked in the broker: it has no records to return yet.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a fetch with min_bytes=1 on an empty partition waits");

    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    producer.send(ProducerRecord::new("t", "wake up")).await.expect("send").await.expect("delivered");
    let fetched = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the fetch answers once the record arrives, long before max_wait")
        .expect("task")
        .expect("fetch");
    assert_eq!(fetched.high_watermark, 1);
    assert!(!fetched.records.is_empty(), "the waiting fetch carries the new record");
}

/// Batches of 64 KiB and more travel as the producer sealed them, not
/// copied into one request buffer (`records_call`): through `Produce` (one
/// partition ready) and `ProduceMany` (several at once), they come back
/// byte for byte and in order, beside small batches sent the usual way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_sent_as_pieces_come_back_byte_exact() {
    let broker = Broker::start().await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("t", 3, 1)).await.expect("create");
    let config =
        ProducerConfig { batch_size: 256 * 1024, linger: Duration::from_millis(20), ..ProducerConfig::default() };
    let producer = Producer::connect(&broker.address, config).await.expect("producer");
    // A different value per record, 1 byte to 6 KiB, so a misplaced piece
    // shows; partition 2 only gets a few small records (its batches stay
    // under the copying threshold).
    let value = |index: u32| -> Bytes {
        let len = 1 + (index as usize * 7919) % 6000;
        Bytes::from((0..len).map(|at| (index as usize * 31 + at) as u8).collect::<Vec<u8>>())
    };
    let mut deliveries = Vec::new();
    for index in 0..3000u32 {
        let partition = if index % 100 == 0 { 2 } else { index % 2 };
        let record = ProducerRecord { partition: Some(partition), ..ProducerRecord::new("t", value(index)) };
        deliveries.push((partition, index, producer.send(record).await.expect("send")));
    }
    let mut expected: [Vec<(Offset, u32)>; 3] = Default::default();
    for (partition, index, delivery) in deliveries {
        let landed = delivery.await.expect("delivered");
        expected[partition as usize].push((landed.offset.expect("acks=all gives an offset"), index));
    }
    producer.close().await;

    let mut consumer = Consumer::connect(&broker.address, ConsumerConfig::default()).await.expect("consumer");
    let partitions: Vec<TopicPartition> = (0..3).map(|partition| TopicPartition::new("t", partition)).collect();
    consumer.assign(partitions.clone()).await.expect("assign");
    for tp in &partitions {
        consumer.seek(tp, Seek::Beginning).await.expect("seek");
    }
    let mut read: [Vec<(Offset, Bytes)>; 3] = Default::default();
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while read.iter().map(Vec::len).sum::<usize>() < 3000 && std::time::Instant::now() < give_up {
        for record in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            read[record.partition as usize].push((record.offset, record.value.expect("a value")));
        }
    }
    for partition in 0..3 {
        let want: Vec<(Offset, Bytes)> =
            expected[partition].iter().map(|(offset, index)| (*offset, value(*index))).collect();
        assert_eq!(read[partition].len(), want.len(), "partition {partition}: records read back");
        assert!(read[partition] == want, "partition {partition}: a record differs from what was sent");
    }
    assert!(expected[0].len() > 1000 && expected[2].len() == 30);
}
