//! A rolling restart: each broker of three, in turn, stopped with SIGTERM
//! (its controlled shutdown hands its leaderships to other in-sync
//! replicas first) and started again, while a producer sends with
//! acks=all. No send fails, nothing is lost or written twice, and the
//! longest send-to-ack time is printed (BENCHMARKS.md records it beside
//! the crash failover gap).

use crate::harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use harness::{eventually, TestCluster};

/// Waits until every partition of `topic` has all `replicas` in its ISR.
async fn wait_full_isr(bootstrap: &str, topic: &str, replicas: usize) {
    eventually("every partition with a full ISR", Duration::from_secs(30), || async {
        let admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
        let described = admin.describe_topic(topic).await.map_err(|e| e.to_string())?;
        if described.partitions.iter().all(|p| p.isr.len() == replicas && p.leader != 0) {
            Ok(())
        } else {
            Err(format!("{:?}", described.partitions))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_acks_all_load_fails_no_send() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("rolling", 3, 3).config("min.insync.replicas", "2")).await.expect("create topic");
    wait_full_isr(&bootstrap, "rolling", 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (bootstrap, stop) = (bootstrap.clone(), Arc::clone(&stop));
        async move {
            let config = ProducerConfig { acks: Acks::All, linger: Duration::ZERO, ..ProducerConfig::default() };
            let producer = Producer::connect(&bootstrap, config).await.expect("producer");
            let (mut acked, mut failed, mut worst) = (0u64, Vec::new(), Duration::ZERO);
            let mut index = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let record = ProducerRecord::new("rolling", format!("r-{index}")).key(format!("k{index}"));
                let delivered = match producer.send(record).await {
                    Ok(delivery) => delivery.await,
                    Err(error) => Err(error),
                };
                match delivered {
                    Ok(_) => acked += 1,
                    Err(error) => failed.push(error.to_string()),
                }
                worst = worst.max(sent.elapsed());
                index += 1;
            }
            producer.close().await;
            (acked, failed, worst)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in 1..=3 {
        let started = Instant::now();
        let status = cluster.broker(id).terminate();
        assert!(status.success(), "broker {id} exited with {status}:\n{}", cluster.broker(id).log());
        let log = cluster.broker(id).log();
        assert!(log.contains("this broker leads nothing now"), "broker {id} handed its leaderships over:\n{log}");
        eprintln!("broker {id} stopped {} ms after SIGTERM", started.elapsed().as_millis());
        cluster.broker(id).restart().await;
        wait_full_isr(&bootstrap, "rolling", 3).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, failed, worst) = sending.await.expect("producer task");
    eprintln!("rolling restart of 3 brokers: {acked} records acked, longest send-to-ack {} ms", worst.as_millis());
    assert!(failed.is_empty(), "no send fails in a rolling restart: {failed:?}");
    assert!(acked > 0);

    // Every acked record is there once.
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).await.expect("consumer");
    consumer.subscribe(&["rolling"]).await.expect("subscribe");
    let mut values = std::collections::BTreeSet::new();
    let mut read = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < acked && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(500)).await.expect("poll") {
            values.insert(record.value.clone().expect("a value"));
            read += 1;
        }
    }
    assert_eq!(read, acked, "every acked record read, none twice");
    assert_eq!(values.len() as u64, acked, "no record written twice");
}
