//! A full disk: a broker whose data directory is a 24 MiB tmpfs takes
//! produce requests until the disk is full, then answers each with
//! `KAFKA_STORAGE_ERROR`, stays up, and still serves every record it
//! acknowledged. (The mount needs root; without it the test says so and
//! checks nothing.)

use crate::harness;

use brook_client::ErrorCode;
use std::path::{Path, PathBuf};
use std::process::Command;

use brook_client::proto::records_client::RecordsClient;
use brook_client::proto::{Acks, ProduceRequest};
use brook_client::{Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset};
use brook_record::{BatchBuilder, NewRecord};
use harness::{free_port, Broker};

/// Unmounts (and removes) the mount point when dropped: declared before
/// the broker, it outlives it.
struct Mount(Option<PathBuf>);

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = Command::new("umount").arg(&path).status();
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn mount_small_tmpfs(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(path)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

fn batch(first: u64) -> Vec<u8> {
    let value = vec![b'x'; 1024];
    // Stamped now: records of 1970 are past the default retention (7 days),
    // and the log maintenance pass (every 10 s) would free the disk while
    // the test fills it.
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |since| since.as_millis() as i64);
    let mut builder = BatchBuilder::new(80 << 10);
    for index in 0..64u64 {
        let key = (first + index).to_string();
        let record = NewRecord { timestamp_ms: now_ms, key: Some(key.as_bytes()), value: Some(&value), headers: &[] };
        builder.push(&record);
    }
    builder.finish().to_vec()
}

fn produce(topic: &str, partition: u32, first: u64) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Acks::Leader as i32,
        timeout_ms: 0,
        records: batch(first).into(),
        batches: Vec::new(),
    }
}

/// Waits until the broker at `address` has applied `topic` (a create is
/// awaited only on the broker that took it).
async fn wait_known(address: &str, topic: &str) {
    harness::eventually("the broker knows the topic", std::time::Duration::from_secs(10), || async move {
        let admin = Admin::connect(address).await.map_err(|e| e.to_string())?;
        admin.describe_topic(topic).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
}

/// A three-broker cluster whose broker 1 has the small tmpfs as its data
/// dir; `None` (after saying SKIPPED) where it cannot be mounted. The
/// cluster's fields drop before the mount's.
struct FullBroker1 {
    cluster: harness::TestCluster,
    _mount: Mount,
}

async fn cluster_with_a_small_disk_on_broker_1(test: &str) -> Option<FullBroker1> {
    let mount = std::sync::Mutex::new(Mount(None));
    let failed = std::sync::Mutex::new(None);
    let cluster = harness::TestCluster::start_prepared(3, &|id, data_dir| {
        if id == 1 {
            match mount_small_tmpfs(data_dir) {
                Ok(()) => mount.lock().expect("mount").0 = Some(data_dir.to_path_buf()),
                Err(reason) => *failed.lock().expect("failed") = Some(reason),
            }
        }
    })
    .await;
    if let Some(reason) = failed.lock().expect("failed").take() {
        eprintln!("SKIPPED: {test}: cannot mount a small tmpfs here ({reason}); run as root");
        return None;
    }
    Some(FullBroker1 { cluster, _mount: mount.into_inner().expect("mount") })
}

/// Produces 64 KiB a request (48 MiB at most) until the broker refuses:
/// how many records it took, and the refusal, which must be
/// KAFKA_STORAGE_ERROR.
async fn fill(client: &mut RecordsClient<tonic::transport::Channel>, topic: &str, partition: u32) -> u64 {
    let mut acknowledged = 0u64;
    for _ in 0..768 {
        match client.produce(produce(topic, partition, acknowledged)).await {
            Ok(_) => acknowledged += 64,
            Err(status) => {
                let name = status.metadata().get("brook-error").and_then(|value| value.to_str().ok());
                assert_eq!(name, Some(ErrorCode::KafkaStorageError.name()), "{status:?}");
                assert!(status.message().contains("space"), "{status:?}");
                return acknowledged;
            }
        }
    }
    panic!("the disk did not fill up within 48 MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_kafka_storage_error_and_keeps_what_was_acknowledged() {
    let mut mount = Mount(None);
    let mut mounted = Err(String::new());
    let mut broker = Broker::start_prepared(format!("127.0.0.1:{}", free_port()), &[], &[], |data_dir| {
        mounted = mount_small_tmpfs(data_dir);
        if mounted.is_ok() {
            mount.0 = Some(data_dir.to_path_buf());
        }
    })
    .await;
    if let Err(reason) = mounted {
        eprintln!(
            "SKIPPED: a_full_disk_answers_kafka_storage_error: cannot mount a small tmpfs here ({reason}); run as root"
        );
        return;
    }
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("full", 1, 1).config("segment.bytes", "1048576")).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let acknowledged = fill(&mut records, "full", 0).await;
    assert!(acknowledged > 0, "some records went in before the disk was full");

    // Still up; the next produce is refused the same way, not a crash.
    assert!(broker.is_running(), "the broker survived the full disk");
    assert!(records.produce(produce("full", 0, acknowledged)).await.is_err(), "still full");
    assert!(broker.is_running());

    // Every acknowledged record is there, in order.
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["full"]).await.expect("subscribe");
    let mut read = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while read < acknowledged && std::time::Instant::now() < deadline {
        for record in consumer.poll(std::time::Duration::from_millis(200)).await.expect("poll") {
            let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).to_string();
            assert_eq!(key, read.to_string(), "record {read} in its place");
            read += 1;
        }
    }
    assert_eq!(read, acknowledged, "every acknowledged record is served");
    broker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_is_full_gives_up_its_leadership_and_producers_go_on_elsewhere() {
    // Broker 1's data dir is the small tmpfs; brokers 2 and 3 have room.
    let Some(setup) = cluster_with_a_small_disk_on_broker_1("a_leader_whose_disk_is_full").await else { return };
    let cluster = &setup.cluster;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("f", 3, 3).config("segment.bytes", "1048576")).await.expect("create");
    let described = admin.describe_topic("f").await.expect("describe");
    let partition = described.partitions.iter().find(|p| p.leader == 1).expect("broker 1 leads one").partition;
    wait_known(&cluster.address(1), "f").await;
    let mut leader = harness::records_client(&cluster.address(1)).await;
    fill(&mut leader, "f", partition).await;

    // Its session runs out, another in-sync replica leads, and the same
    // partition takes records again (the producer follows the metadata).
    harness::eventually("another broker leads the partition", std::time::Duration::from_secs(15), || {
        let admin = &admin;
        async move {
            let topic = admin.describe_topic("f").await.map_err(|e| e.to_string())?;
            let now = topic.partitions.iter().find(|p| p.partition == partition).map(|p| p.leader);
            match now {
                Some(id) if id != 1 && id != 0 => Ok(()),
                other => Err(format!("leader {other:?}")),
            }
        }
    })
    .await;
    let producer = brook_client::Producer::connect(&cluster.bootstrap(), brook_client::ProducerConfig::default())
        .await
        .expect("producer");
    let delivery = producer
        .send(brook_client::ProducerRecord::new("f", "after the disk filled").partition(partition))
        .await
        .expect("send")
        .await
        .expect("acknowledged by the new leader");
    assert!(delivery.offset.is_some());
    drop(producer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_is_full_gives_up_too_and_acks_all_goes_on_without_it() {
    // Broker 1's data dir is the small tmpfs; it follows a partition led
    // by another broker, whose records fill its disk.
    let Some(setup) = cluster_with_a_small_disk_on_broker_1("a_follower_whose_disk_is_full").await else { return };
    let cluster = &setup.cluster;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    let topic = NewTopic::new("g", 3, 3).config("segment.bytes", "1048576").config("min.insync.replicas", "2");
    admin.create_topic(topic).await.expect("create");
    let described = admin.describe_topic("g").await.expect("describe");
    let chosen = described.partitions.iter().find(|p| p.leader != 1).expect("another broker leads one");
    let (partition, leader) = (chosen.partition, chosen.leader);
    wait_known(&cluster.address(leader), "g").await;
    let mut client = harness::records_client(&cluster.address(leader)).await;

    // 40 MiB with acks=all: broker 1's 24 MiB fill up on the way; every
    // request is still answered (the ISR goes on without broker 1).
    for index in 0..640u64 {
        let mut request = produce("g", partition, index * 64);
        request.acks = Acks::All as i32;
        request.timeout_ms = 30_000;
        let answer = client.produce(request).await;
        assert!(answer.is_ok(), "request {index}: {answer:?}");
    }
    let brokers = admin.describe_cluster().await.expect("cluster").brokers;
    assert!(brokers.iter().any(|broker| broker.id == 1 && !broker.alive), "broker 1 gave up: {brokers:?}");
    let isr = admin.describe_topic("g").await.expect("describe").partitions[partition as usize].isr.clone();
    assert!(!isr.contains(&1), "broker 1 left the ISR: {isr:?}");
}
