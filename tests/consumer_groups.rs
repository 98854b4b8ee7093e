//! Consumer groups on three real brokers: members share a topic's
//! partitions, a joiner takes only what must move (the others keep
//! consuming), a killed or paused member's partitions go to the others
//! within its session, a zombie's commit is refused, every record is
//! processed (duplicates only after a dead member's last commit, and
//! counted), the group outlives its coordinator, and the operator's view
//! (describe, lag, reset, delete) is exact.

use crate::harness;
use crate::harness::error_name;

use brook_client::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_client::proto::groups_client::GroupsClient;
use brook_client::proto::{
    CommitOffsetsRequest, ConsumerGroupHeartbeatRequest, GroupDescription, OffsetCommit, TopicPartition as WireTp,
};
use brook_client::{
    Admin, Consumer, ConsumerConfig, ConsumerEvent, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use harness::{eventually, KillOnDrop, TestCluster, BROOK};

/// What one in-process member saw.
#[derive(Debug, Default)]
struct MemberLog {
    member_id: Option<String>,
    events: Vec<(Instant, ConsumerEvent)>,
    records: Vec<(u32, u64)>,
    errors: Vec<String>,
}

/// A group member running in a task until stopped.
struct Member {
    log: Arc<Mutex<MemberLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    async fn start(bootstrap: &str, group: &str, topic: &str, session: Duration) -> Member {
        let config = ConsumerConfig {
            group_id: Some(group.into()),
            auto_offset_reset: OffsetReset::Earliest,
            session_timeout: session,
            auto_commit_interval: Duration::from_millis(200),
            client_id: "consumer-groups-test".into(),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::connect(bootstrap, config).await.expect("consumer");
        consumer.subscribe(&[topic]).await.expect("subscribe");
        let log = Arc::new(Mutex::new(MemberLog {
            member_id: consumer.member_id().map(str::to_string),
            ..MemberLog::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_log, task_stop) = (Arc::clone(&log), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            while !task_stop.load(Ordering::Relaxed) {
                let polled = consumer.poll(Duration::from_millis(100)).await;
                let mut log = task_log.lock().expect("log");
                match polled {
                    Ok(records) => log.records.extend(records.iter().map(|r| (r.partition, r.offset.0))),
                    Err(error) => log.errors.push(error.to_string()),
                }
                for event in consumer.take_events() {
                    log.events.push((Instant::now(), event));
                }
            }
            consumer.close().await.expect("close");
        });
        Member { log, stop, task }
    }

    fn member_id(&self) -> String {
        self.log.lock().expect("log").member_id.clone().expect("a group member")
    }

    async fn stop(self) -> MemberLog {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("member task");
        Arc::try_unwrap(self.log).expect("the task is done").into_inner().expect("log")
    }
}

async fn create_topic(bootstrap: &str, name: &str, partitions: u32, replication_factor: u32) {
    let admin = Admin::connect(bootstrap).await.expect("admin");
    admin.create_topic(NewTopic::new(name, partitions, replication_factor)).await.expect("create topic");
}

async fn produce(bootstrap: &str, topic: &str, from: u32, count: u32) {
    let producer = Producer::connect(bootstrap, ProducerConfig::default()).await.expect("producer");
    for index in from..from + count {
        producer.send(ProducerRecord::new(topic, format!("r-{index}")).key(format!("k{index}"))).await.expect("send");
    }
    producer.close().await;
}

async fn describe(bootstrap: &str, group: &str) -> Result<GroupDescription, String> {
    let admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    admin.describe_group(group).await.map_err(|e| e.to_string())
}

/// member id -> the partitions it is assigned.
fn owners(group: &GroupDescription) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    group
        .members
        .iter()
        .map(|member| {
            let owned = member.assigned.iter().map(|tp| TopicPartition::new(tp.topic.as_str(), tp.partition)).collect();
            (member.member_id.clone(), owned)
        })
        .collect()
}

/// Waits until the group is Stable with `members` members whose sorted
/// partition counts are `shares`; returns the description.
async fn wait_stable(bootstrap: &str, group: &str, shares: &[usize], limit: Duration) -> GroupDescription {
    let wanted = shares.to_vec();
    eventually(&format!("group {group} stable with shares {shares:?}"), limit, || async {
        let described = describe(bootstrap, group).await?;
        let mut counts: Vec<usize> = owners(&described).values().map(BTreeSet::len).collect();
        counts.sort_unstable();
        if described.state == "Stable" && counts == wanted {
            Ok(described)
        } else {
            Err(format!("{} {counts:?}", described.state))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_and_a_fourth_takes_only_what_must_move() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "orders", 6, 2).await;
    produce(&bootstrap, "orders", 0, 300).await;
    let session = Duration::from_secs(10);
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::start(&bootstrap, "billing", "orders", session).await);
    }
    let before = owners(&wait_stable(&bootstrap, "billing", &[2, 2, 2], Duration::from_secs(20)).await);

    let joined_at = Instant::now();
    members.push(Member::start(&bootstrap, "billing", "orders", session).await);
    let after = owners(&wait_stable(&bootstrap, "billing", &[1, 1, 2, 2], Duration::from_secs(20)).await);
    eprintln!("rebalance after a member joined: stable in {} ms", joined_at.elapsed().as_millis());

    let moved: BTreeSet<TopicPartition> =
        before.iter().flat_map(|(id, owned)| owned.difference(&after[id]).cloned().collect::<Vec<_>>()).collect();
    assert_eq!(moved.len(), 1, "6 over 4 members (2, 2, 1, 1) moves one partition: {before:?} -> {after:?}");
    // A member logs its events after its poll returns, which may be just
    // after the group turned stable: read the logs once every member stopped.
    let ids: Vec<String> = members.iter().map(Member::member_id).collect();
    let mut logs = Vec::new();
    for member in members {
        logs.push(member.stop().await);
    }
    let revoked_since_join = |log: &MemberLog| -> BTreeSet<TopicPartition> {
        log.events
            .iter()
            .filter(|(at, _)| *at >= joined_at)
            .filter_map(|(_, event)| match event {
                ConsumerEvent::Revoked(partitions) | ConsumerEvent::Lost(partitions) => Some(partitions.clone()),
                ConsumerEvent::Assigned(_) => None,
            })
            .flatten()
            .collect()
    };
    for (id, log) in ids.iter().zip(&logs).take(3) {
        let revoked = revoked_since_join(log);
        let kept = &after[id];
        assert!(revoked.is_subset(&moved), "only moved partitions are revoked: {revoked:?} (moved {moved:?})");
        assert!(revoked.is_disjoint(kept), "a partition that stayed was never revoked: {revoked:?} {kept:?}");
    }
    let untouched = logs[..3].iter().filter(|log| revoked_since_join(log).is_empty()).count();
    assert_eq!(untouched, 2, "the members that kept both their partitions were never paused");
    // Every record was read once: nothing was lost or read twice in the move.
    let mut read = BTreeMap::new();
    for log in &logs {
        for (partition, offset) in &log.records {
            *read.entry((*partition, *offset)).or_insert(0) += 1;
        }
    }
    assert_eq!(read.len(), 300, "every record read");
    assert!(read.values().all(|count| *count == 1), "no record read twice while partitions moved");
}

/// A `brook consume --group` process writing `partition:offset\tvalue`
/// lines to a file.
struct ConsumerProcess {
    child: KillOnDrop,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl ConsumerProcess {
    fn start(bootstrap: &str, group: &str, topic: &str, session_ms: u32, extra: &[&str]) -> ConsumerProcess {
        let (out, err) = (tempfile::NamedTempFile::new().expect("out"), tempfile::NamedTempFile::new().expect("err"));
        let session = session_ms.to_string();
        let mut args = vec!["consume", topic, "--group", group, "--print-offset", "--from-beginning"];
        args.extend(["--session-timeout-ms", &session]);
        args.extend_from_slice(extra);
        let child = Command::new(BROOK)
            .args(&args)
            .env("BROOK_BOOTSTRAP", bootstrap)
            .env("RUST_LOG", "warn,brook_client=info")
            .stdin(Stdio::null())
            .stdout(File::create(out.path()).expect("stdout file"))
            .stderr(File::create(err.path()).expect("stderr file"))
            .spawn()
            .expect("start brook consume");
        ConsumerProcess { child: KillOnDrop(child), out, err }
    }

    /// (partition, offset) of every line printed so far, in order.
    fn lines(&self) -> Vec<(u32, u64)> {
        read_lines(self.out.path())
    }

    /// The member id it logged when it joined.
    fn member_id(&self) -> String {
        let stderr = self.stderr();
        let start = stderr.find("member=").expect("the consumer logs its member id") + "member=".len();
        stderr[start..].split_whitespace().next().expect("an id").to_string()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.0.id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    }
}

fn read_lines(path: &Path) -> Vec<(u32, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (position, _) = line.split_once('\t')?;
            let (partition, offset) = position.split_once(':')?;
            Some((partition.parse().ok()?, offset.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_loses_its_partitions_within_its_session_and_no_record_is_left_unprocessed() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "jobs", 6, 2).await;
    produce(&bootstrap, "jobs", 0, 600).await;
    let session_ms = 2_000;
    let mut processes: Vec<ConsumerProcess> =
        (0..3).map(|_| ConsumerProcess::start(&bootstrap, "workers", "jobs", session_ms, &[])).collect();
    let stable = wait_stable(&bootstrap, "workers", &[2, 2, 2], Duration::from_secs(20)).await;
    eventually("the first 600 records processed", Duration::from_secs(20), || async {
        let seen: BTreeSet<(u32, u64)> = processes.iter().flat_map(ConsumerProcess::lines).collect();
        if seen.len() >= 600 {
            Ok(())
        } else {
            Err(format!("{} processed", seen.len()))
        }
    })
    .await;

    // Kill one member mid-stream: which partitions are its?
    let victim = processes.remove(0);
    let victim_id = victim.member_id();
    let victim_partitions: BTreeSet<u32> = owners(&stable)[&victim_id].iter().map(|tp| tp.partition).collect();
    let producing = tokio::spawn({
        let bootstrap = bootstrap.clone();
        async move { produce(&bootstrap, "jobs", 600, 600).await }
    });
    let killed_at = Instant::now();
    drop(victim.child);
    let (victim_out, _) = (victim.out, victim.err);
    let reassigned = eventually("the killed member's partitions owned by the others", Duration::from_secs(10), || {
        let bootstrap = bootstrap.clone();
        async move {
            let described = describe(&bootstrap, "workers").await?;
            let owned: usize = owners(&described).values().map(BTreeSet::len).sum();
            if described.members.len() == 2 && owned == 6 {
                Ok(killed_at.elapsed())
            } else {
                Err(format!("{} members, {owned} partitions owned", described.members.len()))
            }
        }
    })
    .await;
    eprintln!(
        "a killed member's partitions were owned by the others {} ms after kill -9 (session {session_ms} ms)",
        reassigned.as_millis()
    );
    producing.await.expect("producer");

    eventually("all 1200 records processed", Duration::from_secs(30), || async {
        let mut seen: BTreeSet<(u32, u64)> = processes.iter().flat_map(ConsumerProcess::lines).collect();
        seen.extend(read_lines(victim_out.path()));
        if seen.len() >= 1200 {
            Ok(())
        } else {
            Err(format!("{} processed", seen.len()))
        }
    })
    .await;
    // Every produced record was processed by some member (at-least-once),
    // each member read each partition in order, and the only records read
    // twice are the dead member's partitions' records after its last commit.
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let described = admin.describe_group("workers").await.expect("describe");
    let end_offsets: BTreeMap<u32, i64> = described.partitions.iter().map(|p| (p.partition, p.end_offset)).collect();
    assert_eq!(end_offsets.values().sum::<i64>(), 1200);
    let mut counts: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let mut outputs: Vec<Vec<(u32, u64)>> = processes.iter().map(ConsumerProcess::lines).collect();
    outputs.push(read_lines(victim_out.path()));
    for output in &outputs {
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for &(partition, offset) in output {
            if let Some(previous) = last.insert(partition, offset) {
                assert!(offset > previous, "partition {partition} read out of order: {previous} then {offset}");
            }
            *counts.entry((partition, offset)).or_insert(0) += 1;
        }
    }
    for (partition, end) in &end_offsets {
        for offset in 0..*end as u64 {
            assert!(counts.contains_key(&(*partition, offset)), "record {partition}:{offset} was never processed");
        }
    }
    let duplicates: Vec<&(u32, u64)> = counts.iter().filter(|(_, count)| **count > 1).map(|(at, _)| at).collect();
    eprintln!("records processed twice after the kill: {}", duplicates.len());
    for (partition, _) in &duplicates {
        assert!(victim_partitions.contains(partition), "a duplicate outside the dead member's partitions");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_session_is_fenced_and_does_not_process_what_it_lost() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "single", 1, 2).await;
    produce(&bootstrap, "single", 0, 50).await;
    let paused = ConsumerProcess::start(&bootstrap, "zombies", "single", 2_000, &[]);
    wait_stable(&bootstrap, "zombies", &[1], Duration::from_secs(20)).await;
    eventually("the first member read 50 records", Duration::from_secs(20), || async {
        let read = paused.lines().len();
        if read >= 50 {
            Ok(())
        } else {
            Err(format!("{read}"))
        }
    })
    .await;
    let other = ConsumerProcess::start(&bootstrap, "zombies", "single", 2_000, &[]);
    let described = wait_stable(&bootstrap, "zombies", &[0, 1], Duration::from_secs(20)).await;
    let zombie = described.members.iter().find(|member| !member.assigned.is_empty()).expect("the owner").clone();

    paused.signal("-STOP");
    let lines_when_paused = paused.lines().len();
    eventually("the other member owns the partition", Duration::from_secs(10), || async {
        let described = describe(&bootstrap, "zombies").await?;
        let owned = owners(&described);
        if described.members.len() == 1 && owned.values().any(|owned| owned.len() == 1) {
            Ok(())
        } else {
            Err(format!("{owned:?}"))
        }
    })
    .await;
    // The zombie's commit, at the epoch it last had, is refused.
    let controller = Admin::connect(&bootstrap).await.expect("admin").describe_cluster().await.expect("cluster");
    let coordinator = controller.brokers.iter().find(|b| b.id == controller.controller_id).expect("controller");
    let mut groups = GroupsClient::connect(format!("http://{}", coordinator.address)).await.expect("connect");
    let refused = groups
        .commit_offsets(CommitOffsetsRequest {
            group_id: "zombies".into(),
            offsets: vec![OffsetCommit { topic: "single".into(), partition: 0, offset: 50, metadata: String::new() }],
            member_id: zombie.member_id.clone(),
            member_epoch: zombie.member_epoch,
        })
        .await
        .expect_err("a zombie's commit");
    assert_eq!(error_name(&refused), ErrorCode::UnknownMemberId.name(), "{refused:?}");

    produce(&bootstrap, "single", 50, 50).await;
    eventually("the other member read the new records", Duration::from_secs(20), || async {
        let read: BTreeSet<u64> = other.lines().into_iter().map(|(_, offset)| offset).collect();
        if read.contains(&99) {
            Ok(())
        } else {
            Err(format!("{} read", read.len()))
        }
    })
    .await;
    paused.signal("-CONT");
    eventually("the resumed member sees it was fenced and joins again", Duration::from_secs(10), || async {
        let described = describe(&bootstrap, "zombies").await?;
        let rejoined = described.members.iter().any(|m| m.member_id == zombie.member_id);
        if paused.stderr().contains("lost") && rejoined && described.state == "Stable" {
            Ok(())
        } else {
            Err(format!("{} members; stderr: {}", described.members.len(), paused.stderr()))
        }
    })
    .await;
    let described = describe(&bootstrap, "zombies").await.expect("describe");
    let rejoined = described.members.iter().find(|m| m.member_id == zombie.member_id).expect("rejoined");
    assert!(rejoined.assigned.is_empty(), "the partition stays with the member that took it over");
    assert!(rejoined.member_epoch > zombie.member_epoch, "it came back at a new epoch: {rejoined:?}");
    assert_eq!(paused.lines().len(), lines_when_paused, "the fenced member processed nothing it had lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_outlives_its_coordinator_with_the_same_members_and_its_offsets() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "ledger", 4, 3).await;
    produce(&bootstrap, "ledger", 0, 400).await;
    let session = Duration::from_secs(6);
    let members = vec![
        Member::start(&bootstrap, "auditors", "ledger", session).await,
        Member::start(&bootstrap, "auditors", "ledger", session).await,
    ];
    wait_stable(&bootstrap, "auditors", &[2, 2], Duration::from_secs(20)).await;
    let committed_before = eventually("400 records committed", Duration::from_secs(20), || async {
        let described = describe(&bootstrap, "auditors").await?;
        let committed: i64 = described.partitions.iter().map(|p| p.committed_offset.max(0)).sum();
        if committed == 400 {
            Ok(described)
        } else {
            Err(format!("{committed} committed"))
        }
    })
    .await;
    let member_ids: BTreeSet<String> = committed_before.members.iter().map(|m| m.member_id.clone()).collect();

    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let controller = admin.describe_cluster().await.expect("cluster").controller_id;
    let killed_at = Instant::now();
    cluster.broker(controller).kill();
    let survivors: String =
        (1..=3).filter(|id| *id != controller).map(|id| cluster.address(id)).collect::<Vec<_>>().join(",");
    produce(&survivors, "ledger", 400, 400).await;
    let resumed = eventually("800 records committed after the coordinator died", Duration::from_secs(30), || {
        let survivors = survivors.clone();
        async move {
            let described = describe(&survivors, "auditors").await?;
            let committed: i64 = described.partitions.iter().map(|p| p.committed_offset.max(0)).sum();
            assert!(committed >= 400, "committed offsets went back after the failover: {described:?}");
            if committed == 800 {
                Ok((killed_at.elapsed(), described))
            } else {
                Err(format!("{committed} committed"))
            }
        }
    })
    .await;
    eprintln!("coordinator killed: every offset committed again {} ms later", resumed.0.as_millis());
    let after: BTreeSet<String> = resumed.1.members.iter().map(|m| m.member_id.clone()).collect();
    assert_eq!(after, member_ids, "the same members go on");
    for member in members {
        let log = member.stop().await;
        assert!(
            !log.events.iter().any(|(_, event)| matches!(event, ConsumerEvent::Lost(_))),
            "no member lost its partitions: {:?}",
            log.events
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_exact_lag_and_reset_and_delete_wait_for_an_empty_group() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "audit", 2, 2).await;
    produce(&bootstrap, "audit", 0, 100).await;
    let brook = |args: &[&str]| {
        Command::new(BROOK)
            .args(args)
            .env("BROOK_BOOTSTRAP", &bootstrap)
            .env_remove("RUST_LOG")
            .output()
            .expect("brook")
    };
    let consumed = brook(&["consume", "audit", "--group", "ops", "--from-beginning", "--max-messages", "30"]);
    assert!(consumed.status.success(), "{}", String::from_utf8_lossy(&consumed.stderr));
    assert_eq!(String::from_utf8_lossy(&consumed.stdout).lines().count(), 30);

    let described = brook(&["group", "describe", "ops"]);
    assert!(described.status.success(), "{}", String::from_utf8_lossy(&described.stderr));
    let text = String::from_utf8_lossy(&described.stdout).to_string();
    let mut committed_total = 0;
    let mut end_total = 0;
    for line in text.lines().filter(|line| line.starts_with("audit\t")) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (committed, end, lag): (i64, i64, i64) =
            (fields[3].parse().expect("committed"), fields[4].parse().expect("end"), fields[5].parse().expect("lag"));
        assert_eq!(lag, end - committed, "{line}");
        committed_total += committed;
        end_total += end;
    }
    assert_eq!((committed_total, end_total), (30, 100), "{text}");
    let listed = brook(&["group", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ops\tstate=Empty\tmembers=0"));

    // A live member: reset and delete are refused.
    let member = Member::start(&bootstrap, "ops", "audit", Duration::from_secs(10)).await;
    wait_stable(&bootstrap, "ops", &[2], Duration::from_secs(20)).await;
    for args in
        [&["group", "reset-offsets", "ops", "--topic", "audit", "--to-earliest"][..], &["group", "delete", "ops"]]
    {
        let refused = brook(args);
        assert!(!refused.status.success(), "{args:?} with a live member");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("live member"),
            "{args:?}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    member.stop().await;

    let reset = brook(&["group", "reset-offsets", "ops", "--topic", "audit", "--to-offset", "7"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let after = admin.describe_group("ops").await.expect("describe");
    assert!(after.partitions.iter().all(|p| p.committed_offset == 7), "{after:?}");
    let future = brook(&["group", "reset-offsets", "ops", "--topic", "audit", "--to-datetime", "2100-01-01T00:00:00Z"]);
    assert!(future.status.success(), "{}", String::from_utf8_lossy(&future.stderr));
    let after = admin.describe_group("ops").await.expect("describe");
    assert!(after.partitions.iter().all(|p| p.lag == 0), "a time past every record is the end: {after:?}");
    let bad = brook(&["group", "reset-offsets", "ops", "--topic", "audit", "--to-datetime", "yesterday"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    let deleted = brook(&["group", "delete", "ops"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let gone = brook(&["group", "describe", "ops"]);
    assert!(!gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_clear_errors_and_the_broker_stays_up() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "t", 1, 1).await;
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    let info = admin.describe_cluster().await.expect("cluster");
    let address_of = |id: u32| info.brokers.iter().find(|b| b.id == id).expect("broker").address.clone();
    let controller = address_of(info.controller_id);
    let other = address_of(info.brokers.iter().map(|b| b.id).find(|id| *id != info.controller_id).expect("another"));
    let join = ConsumerGroupHeartbeatRequest {
        group_id: "g".into(),
        member_id: "m1".into(),
        member_epoch: 0,
        subscribed_topics: vec!["t".into()],
        owned: Vec::new(),
        assignor: String::new(),
        session_timeout_ms: 5_000,
        client_id: "test".into(),
    };
    let mut at_controller = GroupsClient::connect(format!("http://{controller}")).await.expect("connect");
    let mut at_other = GroupsClient::connect(format!("http://{other}")).await.expect("connect");

    let not_coordinator = at_other.consumer_group_heartbeat(join.clone()).await.expect_err("not the coordinator");
    assert_eq!(error_name(&not_coordinator), ErrorCode::NotCoordinator.name());
    assert!(not_coordinator.message().contains(&format!("broker {} does", info.controller_id)), "{not_coordinator:?}");

    let cases: Vec<(ConsumerGroupHeartbeatRequest, &str, &str)> = vec![
        (
            ConsumerGroupHeartbeatRequest { member_id: String::new(), ..join.clone() },
            ErrorCode::InvalidRequest.name(),
            "member id",
        ),
        (
            ConsumerGroupHeartbeatRequest { group_id: String::new(), ..join.clone() },
            ErrorCode::InvalidRequest.name(),
            "group id",
        ),
        (
            ConsumerGroupHeartbeatRequest { session_timeout_ms: 10, ..join.clone() },
            ErrorCode::InvalidRequest.name(),
            "session timeout",
        ),
        (
            ConsumerGroupHeartbeatRequest { assignor: "fancy".into(), ..join.clone() },
            ErrorCode::InvalidRequest.name(),
            "assignor",
        ),
        (
            ConsumerGroupHeartbeatRequest { subscribed_topics: vec![], ..join.clone() },
            ErrorCode::InvalidRequest.name(),
            "subscribed",
        ),
        (
            ConsumerGroupHeartbeatRequest { subscribed_topics: vec!["bad name!".into()], ..join.clone() },
            ErrorCode::InvalidTopic.name(),
            "bad name",
        ),
        (
            ConsumerGroupHeartbeatRequest { member_epoch: 3, ..join.clone() },
            ErrorCode::UnknownMemberId.name(),
            "not in group",
        ),
    ];
    for (request, name, words) in cases {
        let refused = at_controller.consumer_group_heartbeat(request.clone()).await.expect_err("refused");
        assert_eq!(error_name(&refused), name, "{request:?}: {refused:?}");
        assert!(refused.message().contains(words), "{request:?}: {}", refused.message());
    }
    let joined = at_controller.consumer_group_heartbeat(join.clone()).await.expect("join").into_inner();
    assert_eq!(joined.assignment, vec![WireTp { topic: "t".into(), partition: 0 }]);
    let fenced = at_controller
        .consumer_group_heartbeat(ConsumerGroupHeartbeatRequest {
            member_epoch: joined.member_epoch + 7,
            ..join.clone()
        })
        .await
        .expect_err("a future epoch");
    assert_eq!(error_name(&fenced), ErrorCode::FencedMemberEpoch.name());
    let commit = |member_id: &str, offset: i64| CommitOffsetsRequest {
        group_id: "g".into(),
        offsets: vec![OffsetCommit { topic: "t".into(), partition: 0, offset, metadata: String::new() }],
        member_id: member_id.into(),
        member_epoch: joined.member_epoch,
    };
    let stranger = at_controller.commit_offsets(commit("m2", 1)).await.expect_err("not a member");
    assert_eq!(error_name(&stranger), ErrorCode::UnknownMemberId.name());
    let outsider = at_controller.commit_offsets(commit("", 1)).await.expect_err("outside the protocol");
    assert_eq!(error_name(&outsider), ErrorCode::NonEmptyGroup.name());
    let negative = at_controller.commit_offsets(commit("m1", -5)).await.expect_err("negative");
    assert_eq!(error_name(&negative), ErrorCode::InvalidRequest.name());
    at_controller.commit_offsets(commit("m1", 1)).await.expect("the member commits");
    // Still up and answering.
    assert!(admin.list_groups().await.expect("list").iter().any(|group| group.group_id == "g"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_is_a_stream_of_records_and_auto_commits_what_it_yielded() {
    use tokio_stream::StreamExt;

    let broker = harness::Broker::start().await;
    create_topic(&broker.address, "stream", 2, 1).await;
    produce(&broker.address, "stream", 0, 100).await;
    let config = ConsumerConfig {
        group_id: Some("streamers".into()),
        auto_offset_reset: OffsetReset::Earliest,
        auto_commit_interval: Duration::from_millis(100),
        max_poll_records: 10,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["stream"]).await.expect("subscribe");
    let stream = consumer.into_stream(Duration::from_millis(200));
    tokio::pin!(stream);
    let mut seen = BTreeSet::new();
    while seen.len() < 100 {
        let record = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a record in time")
            .expect("the stream goes on")
            .expect("a record");
        assert!(seen.insert((record.partition, record.offset.0)), "each record once");
    }
    // Auto-commit runs inside the next poll, once everything yielded so
    // far was taken: the group's offsets reach the end.
    let committed = eventually("auto-commit of everything yielded", Duration::from_secs(10), || {
        let address = broker.address.clone();
        async move {
            let described = describe(&address, "streamers").await?;
            let committed: i64 = described.partitions.iter().map(|p| p.committed_offset.max(0)).sum();
            if committed == 100 {
                Ok(committed)
            } else {
                Err(format!("{committed} committed"))
            }
        }
    });
    // The stream is polled while waiting, so auto-commit can run.
    tokio::select! {
        committed = committed => assert_eq!(committed, 100),
        _ = stream.next() => panic!("no record beyond the 100 produced"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_with_sigterm_commits_and_leaves_at_once() {
    let broker = harness::Broker::start().await;
    create_topic(&broker.address, "leaving", 1, 1).await;
    produce(&broker.address, "leaving", 0, 20).await;
    // Kafka's default 45 s session: only a leave frees the partition soon.
    let mut process = ConsumerProcess::start(&broker.address, "leavers", "leaving", 45_000, &[]);
    wait_stable(&broker.address, "leavers", &[1], Duration::from_secs(20)).await;
    eventually("20 records printed", Duration::from_secs(20), || async {
        let printed = process.lines().len();
        if printed == 20 {
            Ok(())
        } else {
            Err(format!("{printed}"))
        }
    })
    .await;
    process.signal("-TERM");
    let described = eventually("the member left", Duration::from_secs(10), || async {
        let described = describe(&broker.address, "leavers").await?;
        if described.members.is_empty() {
            Ok(described)
        } else {
            Err(format!("{} members", described.members.len()))
        }
    })
    .await;
    assert_eq!(described.partitions[0].committed_offset, 20, "what was printed is committed");
    let status = process.child.0.wait().expect("wait");
    assert!(status.success(), "exit status {status}; stderr: {}", process.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_leaves_and_its_partitions_go_to_one_that_polls() {
    let broker = harness::Broker::start().await;
    create_topic(&broker.address, "slow", 2, 1).await;
    let config = ConsumerConfig {
        group_id: Some("pollers".into()),
        session_timeout: Duration::from_secs(30),
        max_poll_interval: Duration::from_millis(1_500),
        ..ConsumerConfig::default()
    };
    let mut stuck = Consumer::connect(&broker.address, config.clone()).await.expect("consumer");
    stuck.subscribe(&["slow"]).await.expect("subscribe");
    let busy = Member::start(&broker.address, "pollers", "slow", Duration::from_secs(30)).await;
    let started = Instant::now();
    while stuck.assignment().len() != 1 {
        assert!(started.elapsed() < Duration::from_secs(20), "the two members share the partitions");
        stuck.poll(Duration::from_millis(100)).await.expect("poll");
    }
    stuck.take_events();
    // It stops polling (its heartbeats go on): past max_poll_interval it
    // leaves, long before its 30 s session would end.
    let described = wait_stable(&broker.address, "pollers", &[2], Duration::from_secs(10)).await;
    assert_eq!(described.members[0].member_id, busy.member_id(), "the member that polls has both");
    // Polling again: what it had is lost (not committed), and it joins again.
    let started = Instant::now();
    let mut events = Vec::new();
    while !events.iter().any(|event| matches!(event, ConsumerEvent::Assigned(_))) {
        assert!(started.elapsed() < Duration::from_secs(20), "it joins again: {events:?}");
        stuck.poll(Duration::from_millis(100)).await.expect("poll");
        events.extend(stuck.take_events());
    }
    assert!(matches!(events.first(), Some(ConsumerEvent::Lost(lost)) if lost.len() == 1), "{events:?}");
    wait_stable(&broker.address, "pollers", &[1, 1], Duration::from_secs(10)).await;
    busy.stop().await;
}
