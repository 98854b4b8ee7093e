//! Topic ids (KIP-516) across three real brokers: a topic deleted and
//! created again under the same name while one broker is down is a new
//! topic to every replica. When that broker returns, no replica of the new
//! topic holds a record of the old one: every replica of every partition is
//! byte for byte the same, the old topic's directories are gone, and a
//! consumer reads only the new records.

use crate::harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use harness::{eventually, log_bytes, partition_dirs, TestCluster};

const TOPIC: &str = "t";
const PARTITIONS: u32 = 3;

/// `count` records `<tag>-<index>` to `partition`, all acknowledged.
async fn produce(bootstrap: &str, acks: Acks, partition: u32, tag: &str, count: u32) {
    let producer =
        Producer::connect(bootstrap, ProducerConfig { acks, ..ProducerConfig::default() }).await.expect("producer");
    let mut deliveries = Vec::new();
    for index in 0..count {
        let record = ProducerRecord::new(TOPIC, format!("{tag}-{partition}-{index}")).partition(partition);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
    producer.close().await;
}

/// Each partition's leader, as `address` describes the topic.
async fn leaders(address: &str) -> BTreeMap<u32, u32> {
    let admin = Admin::connect(address).await.expect("admin");
    let described = admin.describe_topic(TOPIC).await.expect("describe");
    described.partitions.iter().map(|partition| (partition.partition, partition.leader)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_recreated_while_a_broker_was_down_holds_only_its_own_records_on_every_replica() {
    // A long session: the stopped broker stays registered as alive, so the
    // re-created topic is assigned to it as well (with the default 800 ms,
    // the controller would place the new topic on the two others only).
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_dir.path().join("brook.toml");
    std::fs::write(&config, "session_timeout_ms = 60000\n").expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let mut cluster = TestCluster::start_with(3, &["--config", &config]).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");

    admin.create_topic(NewTopic::new(TOPIC, PARTITIONS, 3)).await.expect("create");
    for partition in 0..PARTITIONS {
        produce(&bootstrap, Acks::All, partition, "old", 200).await;
    }
    let old_dirs = partition_dirs(cluster.broker(3).dir());
    assert_eq!(old_dirs.len(), PARTITIONS as usize, "broker 3 hosts every partition: {old_dirs:?}");

    cluster.broker(3).kill();
    admin.delete_topic(TOPIC).await.expect("delete");
    admin
        .create_topic(NewTopic::new(TOPIC, PARTITIONS, 3).config("min.insync.replicas", "1"))
        .await
        .expect("re-create");
    // New records where the leader is up; acks=1, as broker 3 is in the
    // ISR but away (its session has not run out).
    let led = leaders(&cluster.address(1)).await;
    let new_counts: BTreeMap<u32, u32> = (0..PARTITIONS).map(|partition| (partition, 50 + 10 * partition)).collect();
    for (&partition, &leader) in &led {
        if leader != 3 {
            produce(&bootstrap, Acks::Leader, partition, "new", new_counts[&partition]).await;
        }
    }

    cluster.broker(3).restart().await;
    for (&partition, &leader) in &led {
        if leader == 3 {
            produce(&bootstrap, Acks::Leader, partition, "new", new_counts[&partition]).await;
        }
    }

    // Every replica reaches the same end, and the HW with it.
    for id in 1..=3 {
        let address = cluster.address(id);
        eventually(&format!("broker {id}'s replicas caught up"), Duration::from_secs(30), || {
            let (address, new_counts) = (address.clone(), new_counts.clone());
            async move {
                let admin = Admin::connect(&address).await.map_err(|e| e.to_string())?;
                let described = admin.describe_topic(TOPIC).await.map_err(|e| e.to_string())?;
                let done = described.partitions.iter().all(|partition| {
                    let count = i64::from(new_counts[&partition.partition]);
                    partition.log_end_offset == count && partition.high_watermark == count && partition.isr.len() == 3
                });
                if done {
                    Ok(())
                } else {
                    Err(format!("{:?}", described.partitions))
                }
            }
        })
        .await;
    }

    // A consumer reads the new records only, all of them.
    let consumer_config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, consumer_config).await.expect("consumer");
    consumer.subscribe(&[TOPIC]).await.expect("subscribe");
    let expected: u32 = new_counts.values().sum();
    let mut seen = Vec::new();
    while seen.len() < expected as usize {
        let polled = consumer.poll(Duration::from_secs(10)).await.expect("poll");
        assert!(!polled.is_empty(), "only {} of {expected} records arrived", seen.len());
        seen.extend(
            polled
                .into_iter()
                .map(|record| String::from_utf8(record.value.expect("a value").to_vec()).expect("utf-8 value")),
        );
    }
    assert!(seen.iter().all(|value| value.starts_with("new-")), "an old record came back: {seen:?}");
    assert!(consumer.poll(Duration::from_millis(500)).await.expect("poll").is_empty(), "nothing more");

    // On disk: each replica holds the same bytes, and nothing of the old topic.
    let data_dirs: Vec<PathBuf> = (1..=3).map(|id| cluster.broker(id).dir().to_path_buf()).collect();
    for id in 1..=3 {
        cluster.broker(id).kill();
    }
    let new_dirs = partition_dirs(&data_dirs[0]);
    assert_eq!(new_dirs.len(), PARTITIONS as usize, "{new_dirs:?}");
    for dir in &old_dirs {
        assert!(!new_dirs.contains(dir), "a new partition directory reuses an old one: {dir}");
    }
    for data_dir in &data_dirs {
        assert_eq!(partition_dirs(data_dir), new_dirs, "every broker holds exactly the new topic's partitions");
    }
    for dir in &new_dirs {
        let replicas: Vec<Vec<u8>> =
            data_dirs.iter().map(|data_dir| log_bytes(&data_dir.join("topics").join(dir))).collect();
        assert!(!replicas[0].is_empty(), "{dir} holds records");
        assert!(replicas.iter().all(|bytes| *bytes == replicas[0]), "the replicas of {dir} differ");
    }
}
