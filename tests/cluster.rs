//! Three real `brook serve --peers` processes: the metadata group agrees
//! on topics, moves leadership off killed brokers, keeps working through
//! a controller kill, and remembers everything across restarts.
//!
//! Timing: the waits below poll with generous limits (this 2-core machine
//! is shared with the test's own load); each test prints how long the
//! cluster actually took, which the "within one second" and
//! "session timeout plus one second" refer to.

use crate::harness;

use brook_client::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook_client::proto::TopicDescription;
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use harness::{eventually, TestCluster};

/// One partition as described: (partition, leader, epoch, replicas, isr).
type PartitionLayout = (u32, u32, u32, Vec<u32>, Vec<u32>);

fn layout(topic: &TopicDescription) -> Vec<PartitionLayout> {
    topic
        .partitions
        .iter()
        .map(|p| (p.partition, p.leader, p.leader_epoch, p.replicas.clone(), p.isr.clone()))
        .collect()
}

async fn describe(address: &str, topic: &str) -> Result<TopicDescription, String> {
    let admin = Admin::connect(address).await.map_err(|error| error.to_string())?;
    admin.describe_topic(topic).await.map_err(|error| error.to_string())
}

async fn controller_seen_by(address: &str) -> Result<u32, String> {
    let admin = Admin::connect(address).await.map_err(|error| error.to_string())?;
    let cluster = admin.describe_cluster().await.map_err(|error| error.to_string())?;
    (cluster.controller_id != 0).then_some(cluster.controller_id).ok_or_else(|| "no controller yet".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_on_one_broker_is_described_identically_by_all_and_load_moves_no_leader() {
    let cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.address(1)).await.expect("admin");
    let created = admin.create_topic(NewTopic::new("orders", 6, 3)).await.expect("create through broker 1");
    let started = Instant::now();
    for id in [2, 3] {
        let address = cluster.address(id);
        let expected = layout(&created);
        eventually("the same topic on every broker", Duration::from_secs(10), || {
            let (address, expected) = (address.clone(), expected.clone());
            async move {
                let seen = layout(&describe(&address, "orders").await?);
                if seen == expected {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            }
        })
        .await;
    }
    println!("brokers 2 and 3 described the new topic {:?} after broker 1 created it", started.elapsed());
    let leaders: Vec<u32> = created.partitions.iter().map(|p| p.leader).collect();
    for id in 1..=3 {
        assert_eq!(leaders.iter().filter(|leader| **leader == id).count(), 2, "leaders spread evenly: {leaders:?}");
    }

    // Full produce load for a while, no kills: no broker is declared dead,
    // no leader moves.
    let config = ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() };
    let producer = Producer::connect(&cluster.bootstrap(), config).await.expect("producer");
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < 2_000_000 {
        let delivery = producer.send(ProducerRecord::new("orders", vec![b'x'; 100]).partition((sent % 6) as u32)).await;
        delivery.expect("send");
        sent += 1;
    }
    producer.close().await;
    let after = describe(&cluster.address(2), "orders").await.expect("describe");
    assert_eq!(layout(&after), layout(&created), "no leader moved under load ({sent} records sent)");
    let brokers = Admin::connect(&cluster.address(3)).await.expect("admin").describe_cluster().await.expect("cluster");
    assert!(brokers.brokers.iter().all(|broker| broker.alive), "{brokers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_survives_controller_and_leader_kills_and_remembers_everything() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new("orders", 3, 3)).await.expect("create");

    // A producer keeps sending (acks=1) through everything that follows;
    // every send must succeed: failover shows up as latency only.
    let producer = Producer::connect(&bootstrap, ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let stop_sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop_sending);
        async move {
            let mut deliveries = Vec::new();
            let mut index = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && index < 100_000 {
                let record = ProducerRecord::new("orders", index.to_string()).partition(index % 3);
                deliveries.push(producer.send(record).await.expect("send"));
                index += 1;
                if index % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            producer.close().await;
            let mut acknowledged = 0;
            for delivery in deliveries {
                delivery.await.expect("every send during the failover is acknowledged");
                acknowledged += 1;
            }
            acknowledged
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill -9 the controller: another is elected, admin keeps working.
    let first = cluster.address(1);
    let controller = eventually("a controller", Duration::from_secs(10), || controller_seen_by(&first)).await;
    cluster.broker(controller).kill();
    let survivor = if controller == 1 { 2 } else { 1 };
    let started = Instant::now();
    let new_controller = eventually("a new controller", Duration::from_secs(15), || {
        let address = cluster.address(survivor);
        async move {
            let seen = controller_seen_by(&address).await?;
            if seen != controller {
                Ok(seen)
            } else {
                Err(format!("still {seen}"))
            }
        }
    })
    .await;
    println!("controller {controller} killed; broker {new_controller} took over after {:?}", started.elapsed());
    let survivors = Admin::connect(&cluster.address(survivor)).await.expect("admin");
    survivors.create_topic(NewTopic::new("after", 2, 2)).await.expect("create through the survivors");
    survivors.delete_topic("after").await.expect("delete through the survivors");

    // The killed broker led one partition: it moves to an ISR member.
    let started = Instant::now();
    let moved = eventually("its partition to get a new leader", Duration::from_secs(15), || {
        let address = cluster.address(survivor);
        async move {
            let topic = describe(&address, "orders").await?;
            let layout = layout(&topic);
            let ok = layout
                .iter()
                .all(|(_, leader, _, _, isr)| *leader != controller && *leader != 0 && !isr.contains(&controller));
            if ok {
                Ok(layout)
            } else {
                Err(format!("{layout:?}"))
            }
        }
    })
    .await;
    println!("partitions led elsewhere {:?} after the kill: {moved:?}", started.elapsed());
    assert!(moved.iter().any(|(_, _, epoch, _, _)| *epoch == 1), "the moved partition is at epoch 1: {moved:?}");

    // The producer's sends went to the new leaders by themselves.
    stop_sending.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = sending.await.expect("sending task");
    println!("{acknowledged} records sent across the failover, all acknowledged");
    assert!(acknowledged > 0);

    // The killed broker comes back and rejoins.
    cluster.broker(controller).restart().await;
    eventually("the restarted broker to be alive", Duration::from_secs(15), || {
        let address = cluster.address(controller);
        async move {
            let admin = Admin::connect(&address).await.map_err(|e| e.to_string())?;
            let brokers = admin.describe_cluster().await.map_err(|e| e.to_string())?.brokers;
            if brokers.iter().all(|broker| broker.alive) && brokers.len() == 3 {
                Ok(())
            } else {
                Err(format!("{brokers:?}"))
            }
        }
    })
    .await;
    assert!(describe(&cluster.address(controller), "orders").await.is_ok(), "it knows the topics");

    // Commit a group offset, stop all three, start all three.
    let group =
        Consumer::connect(&bootstrap, ConsumerConfig { group_id: Some("audit".into()), ..ConsumerConfig::default() })
            .await
            .expect("consumer");
    let commits = BTreeMap::from([(TopicPartition::new("orders", 1), Offset(42))]);
    group.commit_offsets(commits.clone()).await.expect("commit");
    let before = layout(&describe(&cluster.address(1), "orders").await.expect("describe"));
    for id in 1..=3 {
        cluster.broker(id).kill();
    }
    for id in 1..=3 {
        cluster.broker(id).restart().await;
    }
    let after = eventually("the topic after a full restart", Duration::from_secs(15), || {
        let address = cluster.address(2);
        async move { describe(&address, "orders").await }
    })
    .await;
    let assignments = |layout: &[PartitionLayout]| layout.iter().map(|p| p.3.clone()).collect::<Vec<_>>();
    assert_eq!(assignments(&layout(&after)), assignments(&before), "assignments survive");
    let group =
        Consumer::connect(&bootstrap, ConsumerConfig { group_id: Some("audit".into()), ..ConsumerConfig::default() })
            .await
            .expect("consumer");
    let committed = eventually("the committed offset after a full restart", Duration::from_secs(15), || {
        let (group, wanted) = (&group, commits.keys().cloned().collect::<Vec<_>>());
        async move { group.committed(&wanted).await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(committed, commits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_calls_in_a_cluster_get_clear_errors_even_without_a_majority() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.address(1)).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 3)).await.expect("create");

    let too_many = admin.create_topic(NewTopic::new("wide", 1, 4)).await.expect_err("RF 4 on 3 brokers");
    assert_eq!(too_many.code_name(), Some(ErrorCode::InvalidReplicationFactor.name()), "{too_many}");
    assert!(too_many.to_string().contains("replication factor 4 is invalid"), "{too_many}");
    let existing = admin.create_topic(NewTopic::new("t", 1, 3)).await.expect_err("exists");
    assert_eq!(existing.code_name(), Some(ErrorCode::TopicAlreadyExists.name()));
    let missing = admin.delete_topic("nope").await.expect_err("missing");
    assert_eq!(missing.code_name(), Some(ErrorCode::UnknownTopicOrPartition.name()));

    // Two of three down: no majority. A clear "unavailable", not a hang.
    cluster.broker(2).kill();
    cluster.broker(3).kill();
    let started = Instant::now();
    let refused = admin.create_topic(NewTopic::new("later", 1, 1)).await.expect_err("no majority");
    assert_eq!(refused.code_name(), Some(ErrorCode::BrokerNotAvailable.name()), "{refused}");
    assert!(refused.to_string().contains("no metadata controller"), "{refused}");
    println!("without a majority the create failed after {:?}: {refused}", started.elapsed());
    assert!(cluster.broker(1).is_running(), "the broker stays up");
}

/// Three consecutive free loopback ports, for `brook dev --base-port`,
/// the three 100 above them (its brokers' Kafka listeners) and the three
/// 1000 above them (their internal listeners).
fn consecutive_free_ports() -> u16 {
    for _ in 0..100 {
        let base = harness::free_port();
        let free = [1, 2, 100, 101, 102, 1000, 1001, 1002].iter().all(|offset| {
            base.checked_add(*offset).is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if free && base < u16::MAX - 3 {
            return base;
        }
    }
    panic!("no three consecutive free ports found");
}

/// Stops `brook dev` like Ctrl-C would, even if the test fails midway.
struct DevGuard(std::process::Child);

impl Drop for DevGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Starts `brook dev` on free ports; returns it once it printed how to
/// reach the cluster, with its first port and what it printed.
async fn start_dev(dir: &tempfile::TempDir) -> (DevGuard, u16, String) {
    use std::io::BufRead;

    let base = consecutive_free_ports();
    let log = std::fs::File::create(dir.path().join("dev.log")).expect("log file");
    let child = std::process::Command::new(harness::BROOK)
        .args(["dev", "--base-port", &base.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start brook dev");
    let mut dev = DevGuard(child);
    let stdout = dev.0.stdout.take().expect("stdout");
    let printed = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops the cluster") {
                break;
            }
        }
        printed
    });
    let printed =
        tokio::time::timeout(Duration::from_secs(60), printed).await.expect("brook dev got ready").expect("reader");
    (dev, base, printed)
}

/// Sends `signal` (`-INT`, `-TERM`) to `brook dev`; it must exit cleanly
/// and take its brokers down with it.
async fn stop_dev(dev: DevGuard, signal: &str, base: u16) {
    let pid = dev.0.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    let status = tokio::task::spawn_blocking(move || {
        let mut dev = dev;
        let status = dev.0.wait();
        std::mem::forget(dev);
        status
    })
    .await
    .expect("wait task")
    .expect("brook dev exits");
    assert!(status.success(), "brook dev exits cleanly on {signal}: {status}");
    eventually("the brokers to stop", Duration::from_secs(20), || async {
        let listening =
            (0..3).filter(|offset| std::net::TcpStream::connect(("127.0.0.1", base + offset)).is_ok()).count();
        if listening == 0 {
            Ok(())
        } else {
            Err(format!("{listening} still listening"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brook_dev_runs_a_cluster_that_cluster_info_shows_and_ctrl_c_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (dev, base, printed) = start_dev(&dir).await;
    let bootstrap = format!("127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}", base + 1, base + 2);
    assert!(printed.contains(&format!("export BROOK_BOOTSTRAP={bootstrap}")), "{printed}");

    let run = |args: &[&str]| {
        std::process::Command::new(harness::BROOK)
            .args(["--bootstrap", &bootstrap])
            .args(args)
            .output()
            .expect("run brook")
    };
    let created = run(&["topic", "create", "demo", "--partitions", "3", "--replication-factor", "3"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let info = run(&["cluster", "info"]);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    for expected in ["broker 1\t", "broker 2\t", "broker 3\t", "(controller)", "demo-0\tleader=", "demo-2\tleader="] {
        assert!(info.contains(expected), "{expected:?} missing from:\n{info}");
    }
    assert_eq!(info.matches("\talive").count(), 3, "{info}");
    stop_dev(dev, "-INT", base).await;
}

/// `kill`, a service manager or a script stop `brook dev` with SIGTERM: its
/// brokers must not outlive it (they did, listening on, until this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brook_dev_stops_its_brokers_on_sigterm_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (dev, base, _) = start_dev(&dir).await;
    stop_dev(dev, "-TERM", base).await;
}

/// `brook bench ... --json` against the cluster `brook dev` runs, as the
/// benchmarks in BENCHMARKS.md are taken: RF 3, acks=all, then a consume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brook_bench_runs_against_brook_dev_with_json_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (dev, base, _) = start_dev(&dir).await;
    let bootstrap = format!("127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}", base + 1, base + 2);
    let bench = |args: &[&str]| -> serde_json::Value {
        let output = std::process::Command::new(harness::BROOK)
            .args(["--bootstrap", &bootstrap, "bench"])
            .args(args)
            .arg("--json")
            .output()
            .expect("run brook bench");
        assert!(output.status.success(), "brook bench {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
    };
    let produced = bench(&[
        "produce",
        "--topic",
        "d",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--acks",
        "all",
        "--records",
        "20000",
    ]);
    assert_eq!(produced["records"], 20000, "{produced}");
    assert_eq!(produced["setup"]["brokers"], 3, "{produced}");
    assert_eq!(produced["setup"]["replication_factor"], 3, "{produced}");
    assert_eq!(produced["setup"]["acks"], "all", "{produced}");
    assert!(produced["latency_ms_p99"].as_f64().is_some_and(|p99| p99 > 0.0), "{produced}");
    let consumed = bench(&["consume", "--topic", "d", "--records", "20000"]);
    assert_eq!(consumed["records"], 20000, "{consumed}");
    assert!(consumed["records_per_sec"].as_f64().is_some_and(|rate| rate > 0.0), "{consumed}");
    stop_dev(dev, "-TERM", base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_created_without_settings_take_the_clusters_defaults() {
    let mut cluster =
        TestCluster::start_with(3, &["--default-replication-factor", "3", "--default-min-insync-replicas", "2"]).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    let defaulted = admin.create_topic(NewTopic::new("defaults", 2, 0)).await.expect("create with defaults");
    assert_eq!(defaulted.replication_factor, 3);
    assert_eq!(defaulted.configs.get("min.insync.replicas").map(String::as_str), Some("2"));
    assert!(defaulted.partitions.iter().all(|partition| partition.replicas.len() == 3));

    // A smaller explicit factor caps the default min.insync.replicas, so
    // acks=all still works; an explicit config is kept as given.
    let single = admin.create_topic(NewTopic::new("single", 1, 1)).await.expect("create RF 1");
    assert_eq!(single.configs.get("min.insync.replicas").map(String::as_str), Some("1"));
    let explicit = NewTopic::new("explicit", 1, 3).config("min.insync.replicas", "3");
    let explicit = admin.create_topic(explicit).await.expect("create with config");
    assert_eq!(explicit.configs.get("min.insync.replicas").map(String::as_str), Some("3"));

    // The CLI leaves the factor to the cluster unless told.
    let created = cluster
        .broker(2)
        .command()
        .args(["topic", "create", "cli-defaults", "--partitions", "2"])
        .output()
        .expect("run brook topic create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let printed = String::from_utf8_lossy(&created.stdout);
    assert!(printed.contains("replication factor 3"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_controller_but_still_fetching_costs_the_metadata_next_to_nothing() {
    let cluster = TestCluster::start_proxied(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let controller = admin.describe_cluster().await.expect("cluster").controller_id;
    admin.create_topic(NewTopic::new("m", 6, 3)).await.expect("create");
    // A broker that is not the controller: cut off from it only, it is
    // declared dead, but keeps fetching (caught up) from the third broker.
    let follower = (1..=3).find(|id| *id != controller).expect("another broker");
    cluster.cut_between(follower, controller);
    let controller_admin = Admin::connect(&cluster.address(controller)).await.expect("admin");
    eventually("the cut-off broker declared dead", Duration::from_secs(10), || {
        let admin = &controller_admin;
        async move {
            let brokers = admin.describe_cluster().await.map_err(|e| e.to_string())?.brokers;
            match brokers.iter().find(|broker| broker.id == follower) {
                Some(broker) if !broker.alive => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let index = || async { controller_admin.describe_cluster().await.expect("cluster").metadata_index };
    let before = index().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = index().await - before;
    // Each proposal to bring it back would be one entry, refused: one per
    // fetch (about ten a second per partition) before the leaders knew
    // not to propose a broker the metadata shows dead.
    assert!(written <= 5, "{written} metadata entries in 5 s while the cut lasted");

    // Healed, it comes back alive and into every ISR.
    cluster.heal_links();
    eventually("every ISR whole again", Duration::from_secs(20), || {
        let admin = &controller_admin;
        async move {
            let topic = admin.describe_topic("m").await.map_err(|e| e.to_string())?;
            let partial: Vec<_> = topic.partitions.iter().filter(|p| p.isr.len() != 3).map(|p| p.partition).collect();
            if partial.is_empty() {
                Ok(())
            } else {
                Err(format!("partitions {partial:?} lack a member"))
            }
        }
    })
    .await;
}
