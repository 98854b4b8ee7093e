//! The Docker deployment, end to end: build the image (deploy/build.sh),
//! bring up deploy/compose.yaml under a project of its own on free ports,
//! and, from the host, create a topic, produce with acks=all through a
//! leader kill, a restart, and a network partition of one broker; the
//! checker then finds every acknowledged record, in order. Compose is torn
//! down with its volumes even when the test fails.
//!
//! Needs a Docker engine: `cargo test -p brook --test docker -- --ignored`.
//! Known to fail about one run in four (a reproducer; it failed every time
//! before a controller's liveness grace was tied to its Raft term): the
//! leader kill alone loses nothing, but after cutting a broker off the
//! network and healing it, acknowledged records of partition 0 can be found
//! overwritten by records whose sends had failed (e.g. sequence 2502
//! acknowledged at offset 667 while offset 667 holds 2001). `.ci/run` will
//! run this when an engine answers once fixed.

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

/// Tears the project down, volumes included, however the test ends.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose().args(["down", "-v", "--remove-orphans"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker; FAILS about 1 run in 4: after `partition 3` + `heal 3`, acknowledged records overwritten (see the closing note of session 9); not in .ci/run until fixed"]
async fn a_compose_cluster_survives_a_leader_kill_and_a_partition() {
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
    admin.create_topic(NewTopic::new("orders", 3, 3).config("min.insync.replicas", "2")).await.expect("create");

    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let mut checker = Checker::default();
    let mut next = send_numbered(&producer, &mut checker, 0, 2000).await;

    // Kill the container leading partition 0; sends resume by themselves.
    let leader = chaos("leader", &["orders", "0"]);
    chaos("kill", &[&leader]);
    let killed_at = Instant::now();
    next = send_numbered(&producer, &mut checker, next, 500).await;
    println!("500 acks=all sends completed {:?} after killing the leader {leader}", killed_at.elapsed());
    chaos("restart", &[&leader]);
    // Cut one broker off the network, keep sending, heal it.
    chaos("partition", &["3"]);
    next = send_numbered(&producer, &mut checker, next, 500).await;
    chaos("heal", &["3"]);
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
