//! A slow disk under `flush.policy=always`: every fsync of every broker
//! takes 200 ms more (`BROOK_FAULT_FSYNC_DELAY_MS`), so every append holds
//! its log's lock for that long. Nothing that waits on a disk runs on an
//! async worker, so heartbeats, Raft and replica fetches go on: in 30 s of
//! acks=all load no leader moves and no broker is declared dead.

use crate::harness;

use std::time::{Duration, Instant};

use brook_client::{Acks, Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
use harness::TestCluster;

const PARTITIONS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsyncs_slowed_by_200_ms_move_no_leader_in_30_s_of_load() {
    let cluster = TestCluster::start_with_env(3, &[("BROOK_FAULT_FSYNC_DELAY_MS", "200")]).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let topic =
        NewTopic::new("slow", PARTITIONS, 3).config("flush.policy", "always").config("min.insync.replicas", "2");
    admin.create_topic(topic).await.expect("create");
    let epochs = |topic: &brook_client::proto::TopicDescription| -> Vec<(u32, u32)> {
        topic.partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect()
    };
    let before = epochs(&admin.describe_topic("slow").await.expect("describe"));

    let config = ProducerConfig { acks: Acks::All, ..ProducerConfig::default() };
    let producer = Producer::connect(&bootstrap, config).await.expect("producer");
    let (started, mut sent, mut acknowledged) = (Instant::now(), 0u64, 0u64);
    // Bounded in time and count: 30 s, at most 200,000 records.
    while started.elapsed() < Duration::from_secs(30) && sent < 200_000 {
        let mut deliveries = Vec::new();
        for _ in 0..200 {
            let record = ProducerRecord::new("slow", sent.to_string()).partition((sent % u64::from(PARTITIONS)) as u32);
            deliveries.push(producer.send(record).await.expect("send"));
            sent += 1;
        }
        for delivery in deliveries {
            if delivery.await.is_ok() {
                acknowledged += 1;
            }
        }
    }
    println!("slow disk: {sent} sent, {acknowledged} acknowledged in {:?}", started.elapsed());
    assert!(acknowledged > 0, "records go through, slowly");

    let after = admin.describe_topic("slow").await.expect("describe");
    assert_eq!(epochs(&after), before, "no leader moved");
    assert!(after.partitions.iter().all(|p| p.isr.len() == 3), "every replica kept up: {:?}", after.partitions);
    let brokers = admin.describe_cluster().await.expect("cluster").brokers;
    assert!(brokers.iter().all(|broker| broker.alive), "no broker declared dead: {brokers:?}");
}
