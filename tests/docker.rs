//! The Docker deployment, end to end: build the image (deploy/build.sh),
//! bring up deploy/compose.yaml under a project of its own on free ports,
//! and, from the host, create a topic, produce with acks=all through a
//! leader kill, a restart, and a network partition of one broker; the
//! checker then finds every acknowledged record, in order. Compose is torn
//! down with its volumes even when the test fails.
//!
//! Runs in the default `cargo test` when a Docker engine answers
//! (`docker version`) and Compose is installed; otherwise it prints one
//! line saying why and passes without checking anything. The image is a
//! release build, so a cold run adds a few minutes of compiling.

mod checker;
mod harness;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use checker::Checker;
use harness::eventually;

const PROJECT: &str = "brooke2e";

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> Command {
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|out| out.status.success());
    let mut command = if v2 {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    };
    command.arg("-f").arg(root().join("deploy/compose.yaml")).args(["-p", PROJECT]);
    command
}

fn chaos(script: &str, args: &[&str]) -> String {
    let output = Command::new(root().join("deploy/chaos").join(script))
        .args(args)
        .env("BROOK_PROJECT", PROJECT)
        .output()
        .expect("run a chaos script");
    assert!(output.status.success(), "{script} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Sends `count` numbered records from `from` with acks=all, spread over
/// the 3 partitions, and tells the checker what became of each.
async fn send_numbered(producer: &Producer, checker: &mut Checker, from: u64, count: u64) -> u64 {
    let mut deliveries = Vec::new();
    for sequence in from..from + count {
        let record = ProducerRecord::new("orders", sequence.to_string()).partition((sequence % 3) as u32);
        deliveries.push((sequence, producer.send(record).await.expect("send")));
    }
    for (sequence, delivery) in deliveries {
        match delivery.await {
            Ok(metadata) => {
                checker.acknowledged(metadata.partition, metadata.offset.expect("offset").0, sequence, Instant::now())
            }
            Err(_) => checker.failed(sequence),
        }
    }
    from + count
}

/// Why the Docker test cannot run here, if it cannot.
fn docker_missing() -> Option<String> {
    let engine = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    match engine {
        Err(error) => return Some(format!("no docker command ({error})")),
        Ok(output) if !output.status.success() => {
            return Some(format!(
                "no Docker engine answers: {}",
                String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("docker version failed")
            ))
        }
        Ok(_) => {}
    }
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|out| out.status.success());
    let v1 = Command::new("docker-compose").arg("version").output().is_ok_and(|out| out.status.success());
    (!v1 && !v2).then(|| "neither `docker compose` nor `docker-compose` is installed".to_string())
}

/// The ISR of each partition of `topic`, as the cluster describes it.
async fn isrs(bootstrap: &str, topic: &str) -> Result<Vec<Vec<u32>>, String> {
    let admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    let description = admin.describe_topic(topic).await.map_err(|e| e.to_string())?;
    Ok(description.partitions.iter().map(|partition| partition.isr.clone()).collect())
}

/// Waits until every partition of "orders" has all three brokers in sync
/// again: the node that came back has caught up.
async fn wait_full_isr(bootstrap: &str, what: &str) {
    let started = Instant::now();
    eventually(what, Duration::from_secs(60), || async {
        let isrs = isrs(bootstrap, "orders").await?;
        if isrs.iter().all(|isr| isr.len() == 3) {
            Ok(())
        } else {
            Err(format!("ISRs {isrs:?}"))
        }
    })
    .await;
    println!("{what}: {:?}", started.elapsed());
}

/// How soon after the leader's container is killed acks=all sends must
/// succeed again: detection (800 ms session), election, the client's
/// metadata refresh and retry backoff, with room for a slow machine.
const RESUME_BOUND: Duration = Duration::from_secs(15);

/// Tears the project down, volumes included, however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose().args(["down", "-v", "--remove-orphans"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_cluster_survives_a_leader_kill_and_a_partition() {
    if let Some(reason) = docker_missing() {
        println!("skipping the Docker end-to-end test: {reason}");
        return;
    }
    let built = Command::new(root().join("deploy/build.sh")).arg("brook:e2e").status().expect("run deploy/build.sh");
    assert!(built.success(), "deploy/build.sh failed");
    let ports: Vec<u16> = (0..3).map(|_| harness::free_port()).collect();
    let _down = Down;
    let up = compose()
        .args(["up", "-d"])
        .env("BROOK_IMAGE", "brook:e2e")
        .env("BROOK_PORT_1", ports[0].to_string())
        .env("BROOK_PORT_2", ports[1].to_string())
        .env("BROOK_PORT_3", ports[2].to_string())
        .status()
        .expect("compose up");
    assert!(up.success(), "compose up failed");
    let bootstrap: String = ports.iter().map(|port| format!("localhost:{port}")).collect::<Vec<_>>().join(",");
    let started = Instant::now();
    eventually("three healthy brokers that agree", Duration::from_secs(60), || {
        let bootstrap = bootstrap.clone();
        async move {
            let admin = Admin::connect(&bootstrap).await.map_err(|e| e.to_string())?;
            let cluster = admin.describe_cluster().await.map_err(|e| e.to_string())?;
            let alive = cluster.brokers.iter().filter(|broker| broker.alive).count();
            if alive == 3 && cluster.controller_id != 0 {
                Ok(())
            } else {
                Err(format!("{cluster:?}"))
            }
        }
    })
    .await;
    println!("compose up to a formed cluster: {:?}", started.elapsed());
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    // No settings given: the cluster's defaults (RF 3, min.insync.replicas 2).
    let orders = admin.create_topic(NewTopic::new("orders", 3, 0)).await.expect("create");
    assert_eq!(orders.replication_factor, 3);
    assert_eq!(orders.configs.get("min.insync.replicas").map(String::as_str), Some("2"));

    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let mut checker = Checker::default();
    let mut next = send_numbered(&producer, &mut checker, 0, 2000).await;

    // Kill the container leading partition 0; sends resume by themselves.
    let leader = chaos("leader", &["orders", "0"]);
    chaos("kill", &[&leader]);
    let killed_at = Instant::now();
    let acknowledged_before = checker.acknowledged_count();
    let resumed = send_numbered(&producer, &mut checker, next, 1).await;
    let resumed_after = killed_at.elapsed();
    println!("the first acks=all send after killing the leader {leader} succeeded after {resumed_after:?}");
    assert_eq!(checker.acknowledged_count(), acknowledged_before + 1, "the first send after the kill failed");
    assert!(resumed_after < RESUME_BOUND, "sends resumed after {resumed_after:?}, bound {RESUME_BOUND:?}");
    next = send_numbered(&producer, &mut checker, resumed, 500).await;
    println!("500 more acks=all sends completed {:?} after the kill", killed_at.elapsed());
    chaos("restart", &[&leader]);
    wait_full_isr(&bootstrap, "the restarted broker back in every ISR").await;
    // Cut one broker off the network, keep sending, heal it.
    chaos("partition", &["3"]);
    next = send_numbered(&producer, &mut checker, next, 500).await;
    chaos("heal", &["3"]);
    wait_full_isr(&bootstrap, "the healed broker back in every ISR").await;
    send_numbered(&producer, &mut checker, next, 500).await;
    producer.close().await;

    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).await.expect("consumer");
    consumer.subscribe(&["orders"]).await.expect("subscribe");
    let mut found: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !checker.all_found(&found) && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            let value = record.value.unwrap_or_default();
            found.insert(
                (record.partition, record.offset.0),
                std::str::from_utf8(&value).expect("utf8").parse().expect("number"),
            );
        }
    }
    let report = checker.report(&found);
    println!("docker: {report:?}");
    if report.lost > 0 {
        for (key, sequence) in checker.lost_examples(&found, 10) {
            println!("lost: acknowledged sequence {sequence} at {key:?}, found {:?} there", found.get(&key));
        }
    }
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.out_of_order, 0, "{report:?}");
}
