//! Partition replication across three real brokers: acks=all records
//! survive killing their leader, a restarted broker catches up and
//! re-enters the ISR, acks=all is refused below min.insync.replicas and
//! times out while followers stall; after an unclean election a consumer
//! notices the cut log and reads what the new leader wrote (KIP-320).

use crate::harness;

use brook_client::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use brook_client::proto::records_client::RecordsClient;
use brook_client::proto::{Acks as WireAcks, ProduceRequest};
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use brook_record::{BatchBuilder, NewRecord};
use harness::{eventually, partition_view, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_killing_their_leader_and_the_leader_catches_up_on_return() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("orders", 3, 3).config("min.insync.replicas", "2")).await.expect("create");

    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let mut acknowledged: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let send = |from: u32, to: u32| {
        let producer = &producer;
        async move {
            let mut deliveries = Vec::new();
            for index in from..to {
                let record = ProducerRecord::new("orders", index.to_string()).partition(index % 3);
                deliveries.push((index, producer.send(record).await.expect("send")));
            }
            let mut landed = Vec::new();
            for (index, delivery) in deliveries {
                let metadata = delivery.await.expect("acks=all send acknowledged");
                landed.push(((metadata.partition, metadata.offset.expect("offset").0), index));
            }
            landed
        }
    };
    acknowledged.extend(send(0, 3000).await);

    // Kill -9 the leader of partition 0 while its followers hold the records.
    let (leader, epoch, _) = partition_view(&cluster.address(1), "orders", 0).await.expect("describe");
    cluster.broker(leader).kill();
    let survivor = if leader == 1 { 2 } else { 1 };
    let started = Instant::now();
    eventually("partition 0 to get a new leader", Duration::from_secs(20), || {
        let address = cluster.address(survivor);
        async move {
            let (new_leader, new_epoch, isr) = partition_view(&address, "orders", 0).await?;
            if new_leader != leader && new_leader != 0 && new_epoch > epoch {
                Ok(())
            } else {
                Err(format!("{new_leader} {new_epoch} {isr:?}"))
            }
        }
    })
    .await;
    println!("partition 0 failed over {:?} after its leader {leader} was killed", started.elapsed());
    acknowledged.extend(send(3000, 4000).await);
    producer.close().await;

    // Every acknowledged record is there, at its offset, in order.
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).await.expect("consumer");
    consumer.subscribe(&["orders"]).await.expect("subscribe");
    let mut seen: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !acknowledged.keys().all(|key| seen.contains_key(key)) {
        assert!(Instant::now() < deadline, "consumed {} records; {} acknowledged", seen.len(), acknowledged.len());
        for record in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            let value: u32 = std::str::from_utf8(&record.value.expect("value")).expect("utf8").parse().expect("number");
            seen.insert((record.partition, record.offset.0), value);
        }
    }
    let lost: Vec<_> = acknowledged.iter().filter(|(key, index)| seen.get(key) != Some(index)).collect();
    assert!(lost.is_empty(), "acknowledged records lost or changed: {:?}", &lost[..lost.len().min(10)]);
    for partition in 0..3 {
        let indexes: Vec<u32> = seen.iter().filter(|((p, _), _)| *p == partition).map(|(_, index)| *index).collect();
        let mut sorted = indexes.clone();
        sorted.sort_unstable();
        assert_eq!(indexes, sorted, "partition {partition} keeps send order");
        let distinct: BTreeSet<u32> = indexes.iter().copied().collect();
        println!("partition {partition}: {} records, {} duplicates", indexes.len(), indexes.len() - distinct.len());
    }

    // The killed broker comes back, catches up and re-enters the ISR.
    cluster.broker(leader).restart().await;
    eventually("the restarted broker back in partition 0's ISR", Duration::from_secs(30), || {
        let address = cluster.address(survivor);
        async move {
            let (_, _, isr) = partition_view(&address, "orders", 0).await?;
            if isr.contains(&leader) {
                Ok(())
            } else {
                Err(format!("isr {isr:?}"))
            }
        }
    })
    .await;
}

fn one_batch() -> bytes::Bytes {
    let mut builder = BatchBuilder::new(128);
    builder.push(&NewRecord { timestamp_ms: 1_800_000_000_000, key: None, value: Some(b"v"), headers: &[] });
    builder.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_times_out_while_a_follower_stalls_and_is_refused_below_min_isr() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 3).config("min.insync.replicas", "3")).await.expect("create");
    let controller = admin.describe_cluster().await.expect("cluster").controller_id;
    let (leader, _, _) = partition_view(&cluster.address(1), "t", 0).await.expect("describe");
    // Stall a follower that is not the controller, so liveness still runs.
    let Some(stalled) = (1..=3).find(|id| *id != leader && *id != controller) else {
        panic!("with three brokers there is a plain follower");
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cluster.address(leader)))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut records = RecordsClient::new(channel);
    let produce = |timeout_ms: u32| ProduceRequest {
        topic: "t".into(),
        partition: 0,
        acks: WireAcks::All as i32,
        timeout_ms,
        records: one_batch(),
        batches: Vec::new(),
    };
    records.produce(produce(5000)).await.expect("acks=all with the whole ISR up");

    cluster.broker(stalled).pause();
    let timed_out = records.produce(produce(300)).await.expect_err("the stalled follower holds the HW");
    assert_eq!(timed_out.code(), tonic::Code::DeadlineExceeded, "{timed_out:?}");
    assert!(timed_out.message().contains("did not reach offset"), "{timed_out:?}");

    // Its session expires: it leaves the ISR, which is now below
    // min.insync.replicas = 3, so acks=all is refused up front.
    let refused = eventually("acks=all to be refused below min ISR", Duration::from_secs(20), || {
        let mut records = records.clone();
        let request = produce(300);
        async move {
            match records.produce(request).await {
                Err(status) if status.message().contains("not enough replicas") => Ok(status),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    let error_name = refused.metadata().get("brook-error").and_then(|value| value.to_str().ok()).map(str::to_string);
    assert_eq!(error_name.as_deref(), Some(ErrorCode::NotEnoughReplicas.name()));

    // Back from the stall: it catches up, rejoins, and acks=all works again.
    cluster.broker(stalled).resume();
    eventually("acks=all to succeed again", Duration::from_secs(30), || {
        let mut records = records.clone();
        let request = produce(1000);
        async move { records.produce(request).await.map(|_| ()).map_err(|status| status.message().to_string()) }
    })
    .await;
}

/// An old leader's acks=1 records that no follower copied are cut when it
/// comes back as a follower, and nothing else is: the new leader's log wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_leader_cuts_the_records_no_follower_copied() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let controller = admin.describe_cluster().await.expect("cluster").controller_id;
    // A topic whose leader is not the controller: the controller must
    // survive to move leadership (topic names spread leaders).
    let mut chosen = None;
    for attempt in 0..12 {
        let name = format!("diverge-{attempt}");
        let created = admin.create_topic(NewTopic::new(&name, 1, 3)).await.expect("create");
        if created.partitions[0].leader != controller {
            chosen = Some((name, created.partitions[0].leader));
            break;
        }
    }
    let (topic, old_leader) = chosen.expect("some topic led by a broker that is not the controller");
    let followers: Vec<u32> = (1..=3).filter(|id| *id != old_leader).collect();

    // Committed records: on every replica.
    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    for index in 0..100u32 {
        producer
            .send(ProducerRecord::new(topic.clone(), format!("committed-{index}")))
            .await
            .expect("send")
            .await
            .expect("acks=all");
    }
    producer.close().await;

    // Followers stall; the leader takes acks=1 records only it will hold.
    // (Replica fetches already parked at the leader end within their max
    // wait, 100 ms; after that no fetch can carry the new records out.)
    for follower in &followers {
        cluster.broker(*follower).pause();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cluster.address(old_leader)))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut records = RecordsClient::new(channel);
    let mut builder = BatchBuilder::new(256);
    for index in 0..10u32 {
        let value = format!("orphan-{index}");
        builder.push(&NewRecord {
            timestamp_ms: 1_800_000_000_000,
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
        });
    }
    let request = ProduceRequest {
        topic: topic.clone(),
        partition: 0,
        acks: WireAcks::Leader as i32,
        timeout_ms: 0,
        records: builder.finish(),
        batches: Vec::new(),
    };
    let orphaned = records.produce(request).await.expect("acks=1 on the old leader").into_inner();
    assert_eq!(orphaned.base_offset, 100);

    // The old leader dies; the followers come back and one takes over.
    cluster.broker(old_leader).kill();
    for follower in &followers {
        cluster.broker(*follower).resume();
    }
    let survivor = followers[0];
    eventually("a new leader for the partition", Duration::from_secs(30), || {
        let address = cluster.address(survivor);
        let topic = topic.clone();
        async move {
            let (leader, epoch, _) = partition_view(&address, &topic, 0).await?;
            if leader != old_leader && leader != 0 && epoch >= 1 {
                Ok(())
            } else {
                Err(format!("leader {leader} epoch {epoch}"))
            }
        }
    })
    .await;
    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    for index in 0..20u32 {
        producer
            .send(ProducerRecord::new(topic.clone(), format!("after-{index}")))
            .await
            .expect("send")
            .await
            .expect("acks=all");
    }
    producer.close().await;

    // The old leader returns as a follower: it cuts its orphans and copies
    // the new leader's records in their place.
    cluster.broker(old_leader).restart().await;
    let returned = cluster.address(old_leader);
    eventually("the old leader to hold the new leader's log", Duration::from_secs(30), || {
        let (returned, survivor, topic) = (returned.clone(), cluster.address(survivor), topic.clone());
        async move {
            let mine = Admin::connect(&returned)
                .await
                .map_err(|e| e.to_string())?
                .describe_topic(&topic)
                .await
                .map_err(|e| e.to_string())?;
            let theirs = Admin::connect(&survivor)
                .await
                .map_err(|e| e.to_string())?
                .describe_topic(&topic)
                .await
                .map_err(|e| e.to_string())?;
            let (mine, theirs) = (mine.partitions[0].log_end_offset, theirs.partitions[0].log_end_offset);
            if mine == theirs && mine == 120 {
                Ok(())
            } else {
                Err(format!("returned {mine}, leader {theirs}"))
            }
        }
    })
    .await;
    assert!(
        cluster.broker(old_leader).log().contains("truncated a diverged log tail"),
        "the old leader cut its orphans"
    );

    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).await.expect("consumer");
    consumer.subscribe(&[topic.as_str()]).await.expect("subscribe");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < 120 && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            values.push(String::from_utf8(record.value.expect("value").to_vec()).expect("utf8"));
        }
    }
    assert_eq!(values.len(), 120, "100 committed + 20 after the failover");
    assert!(values[..100].iter().all(|value| value.starts_with("committed-")));
    assert!(values[100..].iter().all(|value| value.starts_with("after-")), "no orphan survives: {:?}", &values[100..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_high_watermark_never_moves_backwards_across_restarts() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("hw", 1, 3)).await.expect("create");
    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for index in 0..500u32 {
        deliveries.push(producer.send(ProducerRecord::new("hw", index.to_string())).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("acks=all");
    }
    producer.close().await;

    // Every replica checkpoints the HW it has reached.
    for id in 1..=3 {
        let dir = cluster.broker(id).partition_dir("hw", 0).expect("a replica of hw-0");
        let checkpoint = dir.join("high-watermark-checkpoint");
        eventually("every replica's HW checkpoint at 500", Duration::from_secs(20), || {
            let checkpoint = checkpoint.clone();
            async move {
                let text = std::fs::read_to_string(&checkpoint).map_err(|e| e.to_string())?;
                if text.trim() == "500" {
                    Ok(())
                } else {
                    Err(text)
                }
            }
        })
        .await;
    }
    for id in 1..=3 {
        cluster.broker(id).kill();
    }
    for id in 1..=3 {
        cluster.broker(id).restart().await;
    }
    // The first answer of each broker after the restart already shows it.
    for id in 1..=3 {
        let described = eventually("the topic after the restart", Duration::from_secs(20), || {
            let address = cluster.address(id);
            async move {
                let admin = Admin::connect(&address).await.map_err(|e| e.to_string())?;
                admin.describe_topic("hw").await.map_err(|e| e.to_string())
            }
        })
        .await;
        let high_watermark = described.partitions[0].high_watermark;
        assert!(high_watermark >= 500, "broker {id}: HW {high_watermark} went back below 500 across the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_unclean_election_a_consumer_notices_the_cut_log_and_reads_the_new_records() {
    // Followers leave the ISR 300 ms after they stop keeping up.
    let config_dir = tempfile::tempdir().expect("tempdir");
    let config = config_dir.path().join("brook.toml");
    std::fs::write(&config, "replica_lag_max_ms = 300\n").expect("write config");
    let config = config.to_string_lossy().to_string();
    let mut cluster = TestCluster::start_proxied_with(3, &["--config", &config]).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let controller = admin.describe_cluster().await.expect("cluster").controller_id;
    let topic =
        NewTopic::new("u", 3, 2).config("unclean.leader.election.enable", "true").config("min.insync.replicas", "1");
    admin.create_topic(topic).await.expect("create");
    // A partition whose two replicas are not the controller: cutting them
    // apart leaves both in touch with it.
    let described = admin.describe_topic("u").await.expect("describe");
    let chosen = described.partitions.iter().find(|p| !p.replicas.contains(&controller)).expect("one avoids it");
    let (partition, leader) = (chosen.partition, chosen.leader);
    let follower = *chosen.replicas.iter().find(|id| **id != leader).expect("two replicas");

    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let send = |prefix: &'static str, count: u32| {
        let producer = &producer;
        async move {
            for index in 0..count {
                let record = ProducerRecord::new("u", format!("{prefix}-{index}")).partition(partition);
                producer.send(record).await.expect("send").await.expect("acknowledged");
            }
        }
    };
    send("both", 10).await;
    // The follower is cut off from the leader: it leaves the ISR, and the
    // leader acknowledges alone.
    cluster.cut_between(leader, follower);
    eventually("the ISR shrinks to the leader", Duration::from_secs(15), || {
        let bootstrap = bootstrap.clone();
        async move {
            let (_, _, isr) = partition_view(&bootstrap, "u", partition).await?;
            if isr == vec![leader] {
                Ok(())
            } else {
                Err(format!("isr {isr:?}"))
            }
        }
    })
    .await;
    send("leader-only", 10).await;

    // A consumer reads all 20 (reset policy: latest, so a reset would skip).
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Latest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).await.expect("consumer");
    let tp = brook_client::TopicPartition::new("u", partition);
    consumer.assign(vec![tp.clone()]).await.expect("assign");
    consumer.seek(&tp, brook_client::Seek::Beginning).await.expect("seek");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 20 && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
            seen.push(String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).to_string());
        }
    }
    assert_eq!(seen.len(), 20, "{seen:?}");

    // The leader dies; the follower, alive but out of the ISR, is elected
    // uncleanly without the last 10 records, and gets 5 new ones there.
    cluster.broker(leader).kill();
    cluster.heal_links();
    eventually("the follower leads", Duration::from_secs(15), || {
        let bootstrap = bootstrap.clone();
        async move {
            let (now, _, _) = partition_view(&bootstrap, "u", partition).await?;
            if now == follower {
                Ok(())
            } else {
                Err(format!("leader {now}"))
            }
        }
    })
    .await;
    send("new", 5).await;

    // The consumer, at offset 20, finds the new leader's log ends its
    // epoch at 10: it goes on from 10 and reads the new records.
    let mut new = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while new.len() < 5 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                for record in records {
                    let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).to_string();
                    if value.starts_with("new-") {
                        new.push(value);
                    }
                }
            }
            Err(error) => println!("poll: {error}; going on"),
        }
    }
    assert_eq!(new, (0..5).map(|index| format!("new-{index}")).collect::<Vec<_>>(), "the new leader's records");
}
