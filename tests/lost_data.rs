//! A broker that comes back without its data within its session (a
//! replaced disk, or a power loss that took the page cache) is a new
//! incarnation: the metadata group takes it out of every ISR and moves
//! what it led before it may lead or count toward a HW again, so it never
//! leads an empty or short log and never makes another replica truncate
//! acknowledged records. It rejoins every ISR by catching up as a follower.
//! A partition whose only in-sync replica lost its data stays offline and
//! says why, until an unclean election is asked for. A data directory of
//! another broker is refused at start.

use crate::harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use harness::{eventually, partition_view, Broker, TestCluster, BROOK};

/// A producer with acks=all (idempotent, the default with it).
async fn acks_all_producer(bootstrap: &str) -> Producer {
    Producer::connect(bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer")
}

/// Sends `count` records numbered from `first`, round robin over
/// `partitions`, with acks=all; where each landed.
async fn send_acked(
    producer: &Producer,
    topic: &str,
    partitions: u32,
    first: u32,
    count: u32,
) -> BTreeMap<(u32, u64), u32> {
    let mut deliveries = Vec::new();
    for index in first..first + count {
        let record = ProducerRecord::new(topic, index.to_string()).partition(index % partitions);
        deliveries.push((index, producer.send(record).await.expect("send")));
    }
    let mut landed = BTreeMap::new();
    for (index, delivery) in deliveries {
        let metadata = delivery.await.expect("acks=all send acknowledged");
        landed.insert((metadata.partition, metadata.offset.expect("offset").0), index);
    }
    landed
}

/// Reads `topic` from the beginning until every key of `acknowledged` is
/// seen (60 s at most); what was read, by (partition, offset).
async fn read_all(bootstrap: &str, topic: &str, acknowledged: &BTreeMap<(u32, u64), u32>) -> BTreeMap<(u32, u64), u32> {
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(bootstrap, config).await.expect("consumer");
    consumer.subscribe(&[topic]).await.expect("subscribe");
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.keys().all(|key| seen.contains_key(key)) && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(500)).await.expect("poll") {
            let value: u32 = std::str::from_utf8(&record.value.expect("value")).expect("utf8").parse().expect("number");
            seen.insert((record.partition, record.offset.0), value);
        }
    }
    seen
}

/// Fails naming the acknowledged records `seen` lacks (or has otherwise).
fn assert_none_lost(acknowledged: &BTreeMap<(u32, u64), u32>, seen: &BTreeMap<(u32, u64), u32>) {
    let lost: Vec<(u32, u64)> =
        acknowledged.iter().filter(|(key, index)| seen.get(*key) != Some(*index)).map(|(key, _)| *key).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}

async fn wait_back_in_every_isr(cluster: &TestCluster, topic: &str, partitions: u32, broker: u32) {
    let address = cluster.address(if broker == 1 { 2 } else { 1 });
    eventually("the broker back in every ISR, caught up", Duration::from_secs(60), || {
        let address = address.clone();
        async move {
            for partition in 0..partitions {
                let (_, _, isr) = partition_view(&address, topic, partition).await?;
                if !isr.contains(&broker) {
                    return Err(format!("{topic}-{partition}: isr {isr:?}"));
                }
            }
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_with_an_empty_data_directory_never_leads_and_no_acknowledged_record_is_lost() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("w", 3, 3)).await.expect("create");
    let producer = acks_all_producer(&bootstrap).await;
    let acknowledged = send_acked(&producer, "w", 3, 0, 3000).await;
    producer.close().await;
    let (leader, epoch, isr) = partition_view(&bootstrap, "w", 0).await.expect("describe");
    assert_eq!(isr.len(), 3, "every replica in sync before the fault");

    // The leader of w-0 loses its disk and is back at once, well within
    // its session (800 ms): the controller never sees it die.
    cluster.broker(leader).kill_and_lose_disk();
    cluster.broker(leader).restart().await;
    let survivor = if leader == 1 { 2 } else { 1 };
    let (new_leader, new_epoch, new_isr) = eventually("w-0 led by another replica", Duration::from_secs(20), || {
        let address = cluster.address(survivor);
        async move {
            let view = partition_view(&address, "w", 0).await?;
            if view.0 != leader && view.0 != 0 {
                Ok(view)
            } else {
                Err(format!("{view:?}"))
            }
        }
    })
    .await;
    println!("w-0: leader {leader} at epoch {epoch} lost its disk; now {new_leader} at {new_epoch}, isr {new_isr:?}");
    assert!(new_epoch > epoch, "the new leader leads at a new epoch");

    let seen = read_all(&bootstrap, "w", &acknowledged).await;
    assert_none_lost(&acknowledged, &seen);

    // The wiped broker catches up as a follower and is back in every ISR,
    // its directory now of this cluster.
    wait_back_in_every_isr(&cluster, "w", 3, leader).await;
    let identity = std::fs::read_to_string(cluster.broker(leader).dir().join("meta.properties")).expect("identity");
    let cluster_id = admin.describe_cluster().await.expect("describe cluster").cluster_id;
    assert!(!cluster_id.is_empty() && identity.contains(&format!("cluster.id={cluster_id}")), "{identity}");
    let log = cluster.broker(leader).log();
    assert!(log.contains("a new data directory"), "the broker says its directory is new:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_on_one_broker_under_acks_all_load_loses_nothing() {
    let mut cluster = TestCluster::start_with_env(3, &[("BROOK_FAULT_NOTE_SYNCED", "1")]).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("p", 3, 3).config("min.insync.replicas", "2")).await.expect("create");
    let producer = Arc::new(acks_all_producer(&bootstrap).await);
    // Load: numbered records, acks=all, until told to stop (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut acknowledged, mut failed, mut next) = (BTreeMap::new(), 0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && next < 200_000 && Instant::now() < deadline {
                let mut deliveries = Vec::new();
                for index in next..next + 100 {
                    let record = ProducerRecord::new("p", index.to_string()).partition(index % 3);
                    deliveries.push((index, producer.send(record).await.expect("send")));
                }
                next += 100;
                for (index, delivery) in deliveries {
                    match delivery.await {
                        Ok(metadata) => {
                            acknowledged.insert((metadata.partition, metadata.offset.expect("offset").0), index);
                        }
                        Err(_) => failed += 1,
                    }
                }
            }
            (acknowledged, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The leader of p-0 loses power: what it had not fsynced is gone (the
    // default flush policy fsyncs nothing on the append path), and it is
    // back within its session.
    let (leader, _, _) = partition_view(&bootstrap, "p", 0).await.expect("describe");
    let dropped = cluster.broker(leader).kill_and_lose_unsynced();
    cluster.broker(leader).restart().await;
    println!("broker {leader} lost {dropped} unsynced bytes and restarted");
    assert!(dropped > 0, "the power loss dropped data");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, failed) = load.await.expect("load");
    println!("{} acknowledged, {failed} failed sends", acknowledged.len());
    assert!(acknowledged.len() > 1000, "the load ran: {} acknowledged", acknowledged.len());

    let seen = read_all(&bootstrap, "p", &acknowledged).await;
    assert_none_lost(&acknowledged, &seen);
    wait_back_in_every_isr(&cluster, "p", 3, leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_in_sync_replica_back_without_its_data_leaves_its_partition_offline_until_an_unclean_election() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    // One replica: its broker is the partition's only in-sync replica.
    admin.create_topic(NewTopic::new("solo", 1, 1)).await.expect("create");
    let producer = acks_all_producer(&bootstrap).await;
    send_acked(&producer, "solo", 1, 0, 100).await;
    producer.close().await;
    let (owner, _, _) = partition_view(&bootstrap, "solo", 0).await.expect("describe");
    let other = if owner == 1 { 2 } else { 1 };

    cluster.broker(owner).kill_and_lose_disk();
    cluster.broker(owner).restart().await;
    eventually("solo-0 offline, saying why", Duration::from_secs(20), || {
        let address = cluster.address(other);
        async move {
            let admin = Admin::connect(&address).await.map_err(|e| e.to_string())?;
            let described = admin.describe_topic("solo").await.map_err(|e| e.to_string())?;
            let partition = &described.partitions[0];
            if partition.leader == 0 && partition.offline_reason.contains("came back without its data") {
                Ok(())
            } else {
                Err(format!("{partition:?}"))
            }
        }
    })
    .await;
    // `brook cluster health` names it and fails.
    let health = Command::new(BROOK)
        .args(["cluster", "health"])
        .env("BROOK_BOOTSTRAP", &bootstrap)
        .env_remove("RUST_LOG")
        .output()
        .expect("brook cluster health");
    let said = String::from_utf8_lossy(&health.stdout);
    assert!(!health.status.success(), "health passed: {said}");
    assert!(
        said.contains(&format!(
            "solo-0 has no leader: its last in-sync replica, broker {owner}, came back without its data"
        )),
        "{said}"
    );
    // The broker stays up.
    let producer = acks_all_producer(&bootstrap).await;
    assert!(cluster.broker(owner).is_running());

    // Unclean election, asked for, elects the empty replica: the loss is
    // accepted, and the partition takes writes again.
    let unclean = BTreeMap::from([("unclean.leader.election.enable".to_string(), "true".to_string())]);
    admin.alter_topic_config("solo", unclean, Vec::new()).await.expect("allow unclean");
    eventually("solo-0 led again", Duration::from_secs(20), || {
        let address = cluster.address(other);
        async move {
            let (leader, _, _) = partition_view(&address, "solo", 0).await?;
            if leader == owner {
                Ok(())
            } else {
                Err(format!("leader {leader}"))
            }
        }
    })
    .await;
    let landed = send_acked(&producer, "solo", 1, 100, 10).await;
    assert_eq!(landed.keys().next(), Some(&(0, 0)), "the empty log starts again at offset 0");
}

/// `topic`-0's offline reason, as `address` describes it ("" while led).
async fn offline_reason(address: &str, topic: &str) -> Result<(u32, String), String> {
    let admin = Admin::connect(address).await.map_err(|e| e.to_string())?;
    let described = admin.describe_topic(topic).await.map_err(|e| e.to_string())?;
    let partition = &described.partitions[0];
    Ok((partition.leader, partition.offline_reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_in_sync_replica_leads_again_after_a_kill_but_not_after_a_power_loss() {
    let mut cluster = TestCluster::start_with_env(3, &[("BROOK_FAULT_NOTE_SYNCED", "1")]).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("solo", 1, 1)).await.expect("create");
    let producer = acks_all_producer(&bootstrap).await;
    let acknowledged = send_acked(&producer, "solo", 1, 0, 100).await;
    producer.close().await;
    let (owner, epoch, _) = partition_view(&bootstrap, "solo", 0).await.expect("describe");
    let other = cluster.address(if owner == 1 { 2 } else { 1 });

    // kill -9 on the same boot: the page cache kept every write, so the
    // only in-sync replica leads again, at a new epoch, with everything.
    cluster.broker(owner).kill();
    cluster.broker(owner).restart().await;
    eventually("solo-0 led again by its only replica", Duration::from_secs(20), || {
        let address = other.clone();
        async move {
            let (leader, new_epoch, _) = partition_view(&address, "solo", 0).await?;
            if leader == owner && new_epoch > epoch {
                Ok(())
            } else {
                Err(format!("leader {leader} at {new_epoch}"))
            }
        }
    })
    .await;
    let seen = read_all(&bootstrap, "solo", &acknowledged).await;
    assert_none_lost(&acknowledged, &seen);
    // More records, which nothing fsyncs (opening after the kill synced
    // what the log held then).
    let producer = acks_all_producer(&bootstrap).await;
    send_acked(&producer, "solo", 1, 100, 100).await;
    producer.close().await;

    // A power loss: the machine boots again (another boot id) and what was
    // not fsynced is gone. The replica may lack acknowledged records, so
    // it does not lead; the partition says why.
    let dropped = cluster.broker(owner).kill_and_lose_unsynced();
    assert!(dropped > 0, "the power loss dropped data");
    cluster.broker(owner).set_env("BROOK_FAULT_BOOT_ID", "another-boot");
    cluster.broker(owner).restart().await;
    let (leader, reason) = eventually("solo-0 offline after the power loss", Duration::from_secs(20), || {
        let address = other.clone();
        async move {
            let (leader, reason) = offline_reason(&address, "solo").await?;
            if leader == 0 && !reason.is_empty() {
                Ok((leader, reason))
            } else {
                Err(format!("leader {leader}"))
            }
        }
    })
    .await;
    assert_eq!(leader, 0);
    assert!(reason.contains(&format!("broker {owner}, came back without its data")), "{reason}");
    let log = cluster.broker(owner).log();
    assert!(log.contains("the machine restarted since it was last closed uncleanly"), "the broker says why:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_broker_is_refused_at_start() {
    let mut broker = Broker::start().await;
    broker.kill();
    let dir = broker.dir().to_path_buf();
    let output = Command::new(BROOK)
        .args(["serve", "--id", "7", "--listen", &format!("127.0.0.1:{}", harness::free_port()), "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run brook serve");
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "it started: {said}");
    assert!(said.contains("belongs to broker 1") && said.contains("not to broker 7"), "{said}");
    // Its own broker id still starts on it, with its topics.
    broker.restart().await;
    assert!(broker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused_when_the_broker_registers() {
    // Two single-broker clusters, both broker 1: each directory names its own cluster.
    let mut ours = Broker::start().await;
    let mut theirs = Broker::start().await;
    let identity = |broker: &Broker| std::fs::read_to_string(broker.dir().join("meta.properties")).expect("identity");
    for broker in [&ours, &theirs] {
        eventually("the cluster id written into the directory", Duration::from_secs(10), || {
            let written = identity(broker);
            async move {
                if written.contains("cluster.id=") {
                    Ok(())
                } else {
                    Err(written)
                }
            }
        })
        .await;
    }
    ours.kill();
    theirs.kill();
    let (our_identity, their_identity) = (identity(&ours), identity(&theirs));
    assert!(our_identity.contains("cluster.id=") && their_identity.contains("cluster.id="), "{our_identity}");
    assert_ne!(our_identity, their_identity);
    // Our broker's metadata with the other cluster's identity file: a
    // directory put together from two clusters.
    std::fs::write(ours.dir().join("meta.properties"), &their_identity).expect("copy the identity");
    let output = Command::new(BROOK)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", harness::free_port()), "--data-dir"])
        .arg(ours.dir())
        .env_remove("RUST_LOG")
        .output()
        .expect("run brook serve");
    let said = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "it started: {said}");
    assert!(said.contains("data directory belongs to cluster"), "{said}");
    // Put back, the directory is ours again.
    std::fs::write(ours.dir().join("meta.properties"), &our_identity).expect("restore the identity");
    ours.restart().await;
    assert!(ours.is_running());
}
