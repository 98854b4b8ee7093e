//! The Kafka listener against a Kafka client nobody here wrote: the
//! `rskafka` crate (pure Rust; Metadata, CreateTopics, Produce, Fetch,
//! ListOffsets) talks to real `brook serve` processes on their
//! `--kafka-listen` ports. Records go both ways between it and Brook's own
//! client; a leader killed under acks=all loses no acknowledged record;
//! frames that break the protocol close their connection and nothing
//! else.

use crate::harness;

use std::collections::BTreeMap;
use std::time::Duration;

use brook_client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use chrono::{TimeZone, Utc};
use harness::{Broker, TestCluster};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn kafka_client(bootstrap: Vec<String>) -> Client {
    harness::eventually("an rskafka client", Duration::from_secs(30), || {
        let bootstrap = bootstrap.clone();
        async move { ClientBuilder::new(bootstrap).build().await.map_err(|error| error.to_string()) }
    })
    .await
}

async fn partition(client: &Client, topic: &str, partition: i32) -> PartitionClient {
    client
        .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
        .await
        .unwrap_or_else(|error| panic!("a partition client for {topic}-{partition}: {error}"))
}

fn record(index: i64) -> Record {
    Record {
        key: Some(format!("key-{index}").into_bytes()),
        value: Some(format!("value {index} {}", "kafka".repeat(30)).into_bytes()),
        headers: BTreeMap::from([("index".to_string(), index.to_be_bytes().to_vec())]),
        timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + index).single().expect("a time"),
    }
}

/// Every record from `from` up to `until`, in order, by offset.
async fn fetch_all(partition: &PartitionClient, from: i64, until: i64) -> Vec<(i64, Record)> {
    let mut read = Vec::new();
    let mut next = from;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while next < until && std::time::Instant::now() < deadline {
        let (records, _high_watermark) = partition.fetch_records(next, 1..1_000_000, 500).await.expect("fetch");
        for record in records {
            if record.offset >= next {
                next = record.offset + 1;
                read.push((record.offset, record.record));
            }
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rskafka_creates_a_topic_and_produces_and_fetches_byte_exact_with_every_codec() {
    let broker = Broker::start().await;
    let client = kafka_client(vec![broker.kafka_address.clone()]).await;
    client.controller_client().expect("controller").create_topic("k", 2, 1, 5_000).await.expect("create topic");
    let topics = client.list_topics().await.expect("list topics");
    let listed = topics.iter().find(|topic| topic.name == "k").expect("k is listed");
    assert_eq!(listed.partitions.len(), 2, "{topics:?}");

    let part = partition(&client, "k", 1).await;
    let codecs =
        [Compression::NoCompression, Compression::Gzip, Compression::Lz4, Compression::Snappy, Compression::Zstd];
    let mut sent = 0i64;
    for codec in codecs {
        let records: Vec<Record> = (sent..sent + 50).map(record).collect();
        let offsets = part.produce(records, codec).await.unwrap_or_else(|error| panic!("{codec:?}: {error}"));
        assert_eq!(offsets, (sent..sent + 50).collect::<Vec<_>>(), "{codec:?}: offsets in order");
        sent += 50;
    }
    assert_eq!(part.get_offset(OffsetAt::Latest).await.expect("latest"), sent);
    assert_eq!(part.get_offset(OffsetAt::Earliest).await.expect("earliest"), 0);
    let read = fetch_all(&part, 0, sent).await;
    assert_eq!(read.len() as i64, sent, "every record of every codec read back");
    for (offset, got) in read {
        assert_eq!(got, record(offset), "offset {offset}");
    }

    // Brook's own consumer reads what rskafka wrote, byte for byte.
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["k"]).await.expect("subscribe");
    let mut seen = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen < sent && std::time::Instant::now() < deadline {
        for got in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
            let index = got.offset.0 as i64;
            let wanted = record(index);
            assert_eq!(got.key.as_deref(), wanted.key.as_deref());
            assert_eq!(got.value.as_deref(), wanted.value.as_deref());
            assert_eq!(got.timestamp_ms, 1_700_000_000_000 + index);
            seen += 1;
        }
    }
    assert_eq!(seen, sent, "Brook's consumer read every record rskafka produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rskafka_reads_what_brooks_producer_wrote() {
    let broker = Broker::start().await;
    brook_client::Admin::connect(&broker.address)
        .await
        .expect("admin")
        .create_topic(brook_client::NewTopic::new("b", 1, 1))
        .await
        .expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    let mut deliveries = Vec::new();
    for index in 0..300i64 {
        let mut sent = ProducerRecord::new("b", format!("brook {index}"));
        sent.key = Some(format!("k{index}").into());
        sent.timestamp_ms = Some(1_600_000_000_000 + index);
        deliveries.push(producer.send(sent).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    let client = kafka_client(vec![broker.kafka_address.clone()]).await;
    let part = partition(&client, "b", 0).await;
    let read = fetch_all(&part, 0, 300).await;
    assert_eq!(read.len(), 300, "rskafka read every record");
    for (offset, got) in read {
        assert_eq!(got.value, Some(format!("brook {offset}").into_bytes()));
        assert_eq!(got.key, Some(format!("k{offset}").into_bytes()));
        assert_eq!(got.timestamp.timestamp_millis(), 1_600_000_000_000 + offset);
    }
    // From the middle: the batch holding offset 150 comes back whole, and
    // nothing before 150 is taken for it.
    let middle = fetch_all(&part, 150, 300).await;
    assert_eq!(middle.first().map(|(offset, _)| *offset), Some(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_under_rskafka_loses_no_acknowledged_record() {
    let mut cluster = TestCluster::start(3).await;
    let client = kafka_client(cluster.kafka_bootstrap()).await;
    client.controller_client().expect("controller").create_topic("f", 1, 3, 5_000).await.expect("create topic");
    let (leader, _, _) = harness::eventually("a full ISR", Duration::from_secs(30), || {
        let address = cluster.address(1);
        async move {
            let view = harness::partition_view(&address, "f", 0).await?;
            if view.2.len() == 3 {
                Ok(view)
            } else {
                Err(format!("{view:?}"))
            }
        }
    })
    .await;
    let part = partition(&client, "f", 0).await;
    let mut acknowledged = Vec::new();
    for round in 0..40i64 {
        if round == 20 {
            cluster.broker(leader).kill();
        }
        let records: Vec<Record> = (round * 10..round * 10 + 10).map(record).collect();
        // rskafka retries a produce to a broker that went away (acks=all).
        let outcome = tokio::time::timeout(Duration::from_secs(30), part.produce(records, Compression::Lz4)).await;
        if let Ok(Ok(offsets)) = outcome {
            acknowledged.extend(offsets.into_iter().zip(round * 10..round * 10 + 10));
        }
    }
    assert!(acknowledged.len() >= 300, "most rounds were acknowledged: {}", acknowledged.len());
    let survivor = (1..=3).find(|id| *id != leader).expect("a survivor");
    let client = kafka_client(vec![cluster.broker(survivor).kafka_address.clone()]).await;
    let part = partition(&client, "f", 0).await;
    let end = acknowledged.iter().map(|(offset, _)| *offset).max().expect("some") + 1;
    let read: BTreeMap<i64, Record> = fetch_all(&part, 0, end).await.into_iter().collect();
    for (offset, index) in &acknowledged {
        assert_eq!(read.get(offset), Some(&record(*index)), "acknowledged offset {offset} (record {index})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_the_protocol_close_only_their_connection() {
    let broker = Broker::start().await;
    let address = broker.kafka_address.clone();
    let closed = |frame: Vec<u8>| {
        let address = address.clone();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
            socket.write_all(&frame).await.expect("write");
            let mut buffer = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(read)) => panic!("answered {read} bytes to {frame:?}"),
                Err(_) => false,
            }
        }
    };
    // A size over socket.request.max.bytes (100 MiB): nothing allocated.
    assert!(closed(0x7fff_fff0_i32.to_be_bytes().to_vec()).await, "a 2 GiB frame closes the connection");
    // A negative size.
    assert!(closed((-5i32).to_be_bytes().to_vec()).await, "a negative size closes the connection");
    // An API key nobody knows (v0 header: key, version, correlation id, client id).
    let mut unknown = vec![0, 0, 0, 10];
    unknown.extend_from_slice(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(closed(unknown).await, "an unknown API key closes the connection");
    // Produce at a version not served (v99).
    let mut version = vec![0, 0, 0, 10];
    version.extend_from_slice(&[0, 0, 0, 99, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(closed(version).await, "an unserved version closes the connection");
    // A Metadata v1 request whose topic array claims more than it holds.
    let mut lying = vec![0, 0, 0, 14];
    lying.extend_from_slice(&[0, 3, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
    assert!(closed(lying).await, "a body that lies about its lengths closes the connection");

    // ApiVersions at a version newer than ours: a v0 answer with
    // UNSUPPORTED_VERSION (35) and the versions we have.
    let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let mut newer = vec![0, 0, 0, 10];
    newer.extend_from_slice(&[0, 18, 0, 99, 0, 0, 0, 7, 0xff, 0xff]);
    socket.write_all(&newer).await.expect("write");
    let size = socket.read_i32().await.expect("an answer");
    let mut answer = vec![0u8; size as usize];
    socket.read_exact(&mut answer).await.expect("the answer");
    assert_eq!(&answer[..4], &7i32.to_be_bytes(), "its correlation id");
    assert_eq!(&answer[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");

    // The broker is up and serves a well-behaved client.
    let client = kafka_client(vec![address]).await;
    client.controller_client().expect("controller").create_topic("ok", 1, 1, 5_000).await.expect("create");
    let part = partition(&client, "ok", 0).await;
    assert_eq!(part.produce(vec![record(0)], Compression::NoCompression).await.expect("produce"), vec![0]);
}
