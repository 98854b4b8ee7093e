use brook_record::{BatchBuilder, NewRecord};

use super::*;

fn batch(records: usize) -> Bytes {
    let mut builder = BatchBuilder::new(1024);
    for _ in 0..records {
        builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(b"v"), headers: &[] });
    }
    builder.finish()
}

/// Ten records from producer 1 at epoch 0, from `sequence` on.
fn producer_batch(sequence: i32) -> Bytes {
    let mut builder = BatchBuilder::new(1024).with_producer(1, 0, sequence);
    for _ in 0..10 {
        builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(b"v"), headers: &[] });
    }
    builder.finish()
}

fn ids(raw: &[u32]) -> Vec<BrokerId> {
    raw.iter().copied().map(BrokerId).collect()
}

fn leader(epoch: u32, isr: &[u32]) -> Role {
    leader_at(epoch, isr, 0)
}

/// Following broker 2 at `epoch`, with `isr` at partition epoch 1.
fn following_broker_2(epoch: u32, isr: &[u32]) -> Role {
    Role {
        broker_id: BrokerId(1),
        leader: Some(BrokerId(2)),
        leader_epoch: LeaderEpoch(epoch),
        isr: ids(isr),
        partition_epoch: 1,
        unavailable: Vec::new(),
    }
}

/// Leading at `epoch`, with `isr` at partition epoch `partition_epoch`.
fn leader_at(epoch: u32, isr: &[u32], partition_epoch: u32) -> Role {
    Role {
        broker_id: BrokerId(1),
        leader: Some(BrokerId(1)),
        leader_epoch: LeaderEpoch(epoch),
        isr: ids(isr),
        partition_epoch,
        unavailable: Vec::new(),
    }
}

fn open(dir: &tempfile::TempDir, role: Role) -> Arc<Replica> {
    let appended = Arc::new(watch::channel(0).0);
    let partition = TopicPartition::new("t", 0);
    let replica =
        Replica::open(partition, TopicId::random(), dir.path().join("t-0"), LogConfig::default(), role, appended);
    Arc::new(replica.expect("open"))
}

fn fetch(replica: &Replica, offset: u64) -> PartitionFetch {
    PartitionFetch {
        partition: replica.topic_partition().clone(),
        topic_id: replica.topic_id(),
        fetch_offset: Offset(offset),
        leader_epoch: replica.role_epoch(),
    }
}

#[tokio::test]
async fn an_acks_all_wait_fails_when_leadership_moves_even_if_the_new_leaders_hw_passes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(1, &[1, 2]));
    let (info, epoch) = replica.append(batch(3)).await.expect("append");
    assert_eq!((info.last_offset, epoch), (Offset(2), LeaderEpoch(1)));
    let waiting = {
        let replica = Arc::clone(&replica);
        tokio::spawn(async move {
            replica.wait_for_high_watermark(Offset(3), LeaderEpoch(1), 1, Duration::from_secs(10)).await
        })
    };
    tokio::task::yield_now().await;
    // Broker 2 takes over at epoch 2 and this replica follows it; the
    // new leader's HW passes offset 3, but its records there are its own.
    let follower = following_broker_2(2, &[2]);
    replica.set_role(follower);
    replica.set_follower_high_watermark(Offset(10));
    assert_eq!(replica.high_watermark(), Offset(3));
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("answered").expect("joined");
    assert!(matches!(answer, Err(ReplicaError::LeadershipChanged { leader_epoch: LeaderEpoch(1), .. })), "{answer:?}");
}

#[tokio::test]
async fn a_follower_proposed_into_the_isr_holds_the_hw_until_the_metadata_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(0, &[1]));
    replica.set_role(leader(0, &[1]));
    replica.append(batch(10)).await.expect("append");
    assert_eq!(replica.high_watermark(), Offset(10), "alone in the ISR");
    let (_, proposal) =
        replica.serve_follower_fetch(BrokerId(2), 1, &fetch(&replica, 10), 1 << 20).await.expect("fetch");
    assert_eq!(proposal.expect("caught up: propose it").isr, ids(&[1, 2]));
    let (_, again) = replica.serve_follower_fetch(BrokerId(2), 1, &fetch(&replica, 10), 1 << 20).await.expect("fetch");
    assert!(again.is_none(), "one change in flight");
    replica.append(batch(5)).await.expect("append");
    assert_eq!(replica.high_watermark(), Offset(10), "the joining follower counts at once");
    replica.serve_follower_fetch(BrokerId(2), 1, &fetch(&replica, 15), 1 << 20).await.expect("fetch");
    assert_eq!(replica.high_watermark(), Offset(15));
    // Committed (at partition epoch 1); this broker's metadata still
    // shows epoch 0.
    replica.isr_change_settled(LeaderEpoch(0), Some(IsrChangeOutcome::Committed));
    replica.set_role(leader(0, &[1]));
    replica.append(batch(5)).await.expect("append");
    assert_eq!(replica.high_watermark(), Offset(15), "still counted");
    // Partition epoch 2 applied: broker 2 joined and already left again
    // (it died). Now the ISR alone decides.
    replica.set_role(leader_at(0, &[1], 2));
    assert_eq!(replica.high_watermark(), Offset(20));
}

#[tokio::test]
async fn a_refused_expansion_stops_counting_the_follower() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(0, &[1]));
    replica.append(batch(4)).await.expect("append");
    let (_, proposal) =
        replica.serve_follower_fetch(BrokerId(2), 1, &fetch(&replica, 4), 1 << 20).await.expect("fetch");
    assert!(proposal.is_some(), "propose");
    replica.append(batch(4)).await.expect("append");
    assert_eq!(replica.high_watermark(), Offset(4));
    replica.isr_change_settled(LeaderEpoch(0), Some(IsrChangeOutcome::Refused));
    assert_eq!(replica.high_watermark(), Offset(8));
}

#[tokio::test]
async fn a_follower_of_another_topic_id_or_epoch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(3, &[1, 2]));
    let mut other_topic = fetch(&replica, 0);
    other_topic.topic_id = TopicId::random();
    let refused = replica.serve_follower_fetch(BrokerId(2), 1, &other_topic, 1024).await;
    assert!(matches!(refused, Err(ReplicaError::UnknownTopicId { .. })), "{refused:?}");
    let mut old_epoch = fetch(&replica, 0);
    old_epoch.leader_epoch = LeaderEpoch(2);
    let refused = replica.serve_follower_fetch(BrokerId(2), 1, &old_epoch, 1024).await;
    assert!(
        matches!(
            refused,
            Err(ReplicaError::FencedLeaderEpoch { requested: LeaderEpoch(2), current: LeaderEpoch(3), .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_demoted_leader_appends_nothing_even_at_its_successors_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(4, &[1, 2]));
    replica.append(batch(2)).await.expect("append while leading");
    // Broker 2 leads at epoch 5 now; a produce admitted just before
    // the change reaches the append after it.
    let follower = following_broker_2(5, &[2]);
    replica.set_role(follower);
    let refused = replica.append(batch(3)).await;
    assert!(
        matches!(refused, Err(ReplicaError::NotLeader { leader: Some(BrokerId(2)), leader_epoch: LeaderEpoch(5), .. })),
        "{refused:?}"
    );
    assert_eq!(replica.log_end_offset(), Offset(2), "nothing appended");
    assert_eq!(replica.latest_epoch(), Some(LeaderEpoch(4)), "and nothing stamped with the successor's epoch");
}

#[tokio::test]
async fn a_caught_up_follower_on_a_broker_not_alive_is_not_proposed_into_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut role = leader(0, &[1]);
    role.unavailable = ids(&[2]);
    let replica = open(&dir, role.clone());
    replica.append(batch(2)).await.expect("append");
    let fetch = |epoch| PartitionFetch {
        partition: TopicPartition::new("t", 0),
        topic_id: replica.topic_id(),
        fetch_offset: Offset(2),
        leader_epoch: LeaderEpoch(epoch),
    };
    // Cut off from the controller, broker 2 still fetches, caught up,
    // fetch after fetch: no proposal (each would be a metadata entry
    // the controller refuses).
    for _ in 0..10 {
        let (_, proposal) = replica.serve_follower_fetch(BrokerId(2), 1, &fetch(0), 1 << 20).await.expect("served");
        assert_eq!(proposal, None);
    }
    // Alive again in the metadata: proposed at its next fetch.
    role.unavailable.clear();
    replica.set_role(role);
    let (_, proposal) = replica.serve_follower_fetch(BrokerId(2), 1, &fetch(0), 1 << 20).await.expect("served");
    assert_eq!(proposal.map(|proposal| proposal.isr), Some(ids(&[1, 2])));
}

#[tokio::test]
async fn epoch_lookups_do_not_wait_on_a_writer_stuck_in_an_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(2, &[1]));
    replica.append(batch(2)).await.expect("append");
    // The writer busy for as long as the test likes (a slow disk's
    // fsync under flush.policy=always holds the log's lock).
    let _writer = replica.log.lock().expect("not poisoned");
    let (answers, answered) = std::sync::mpsc::channel();
    let looking = Arc::clone(&replica);
    std::thread::spawn(move || {
        let _ = answers.send((looking.latest_epoch(), looking.epoch_end(LeaderEpoch(2))));
    });
    let (latest, end) = answered.recv_timeout(Duration::from_secs(10)).expect("answered while the writer is busy");
    assert_eq!(latest, Some(LeaderEpoch(2)));
    assert_eq!(end, LeaderEpochEnd { epoch: Some(LeaderEpoch(2)), end_offset: Offset(2) });
}

#[tokio::test]
async fn a_consumer_naming_another_epoch_is_refused_before_the_offset_is_looked_at() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(3, &[1]));
    replica.append(batch(2)).await.expect("append");
    // Offset 9 is past the log end: without the epoch check a deposed
    // leader's answer would be OFFSET_OUT_OF_RANGE, and a consumer
    // would reset past records.
    let newer = replica.read(Offset(9), 1 << 20, Some(LeaderEpoch(4))).await;
    assert!(matches!(newer, Err(ReplicaError::UnknownLeaderEpoch { .. })), "{newer:?}");
    let older = replica.read(Offset(0), 1 << 20, Some(LeaderEpoch(2))).await;
    assert!(matches!(older, Err(ReplicaError::FencedLeaderEpoch { .. })), "{older:?}");
    let current = replica.read(Offset(0), 1 << 20, Some(LeaderEpoch(3))).await.expect("its own epoch");
    assert_eq!(current.next_offset, Offset(2));
}

#[tokio::test]
async fn acks_all_fails_when_the_isr_shrinks_below_min_insync_while_it_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(0, &[1, 2]));
    let (info, epoch) = replica.append(batch(3)).await.expect("append");
    let waiting = {
        let replica = Arc::clone(&replica);
        let target = info.last_offset.plus(1);
        tokio::spawn(async move { replica.wait_for_high_watermark(target, epoch, 2, Duration::from_secs(10)).await })
    };
    tokio::task::yield_now().await;
    // Broker 2 is dropped from the ISR: the HW reaches the LEO at once,
    // with one copy where two were promised.
    replica.set_role(leader_at(0, &[1], 1));
    assert_eq!(replica.high_watermark(), Offset(3));
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("answered").expect("joined");
    assert!(
        matches!(answer, Err(ReplicaError::NotEnoughReplicasAfterAppend { isr: 1, min_insync_replicas: 2, .. })),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_fetch_between_the_hw_and_the_log_end_is_empty_not_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = open(&dir, leader(0, &[1, 2]));
    replica.append(batch(5)).await.expect("append");
    assert_eq!(replica.high_watermark(), Offset(0), "the follower has nothing yet");
    // A consumer that read offsets 0..3 from the previous leader.
    let fetched = replica.read(Offset(3), 1 << 20, None).await.expect("not out of range");
    assert!(fetched.records.is_empty());
    assert_eq!(fetched.next_offset, Offset(3));
    let beyond = replica.read(Offset(6), 1 << 20, None).await;
    assert!(matches!(beyond, Err(ReplicaError::OffsetOutOfRange { .. })), "past the log end: {beyond:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_overtook_an_earlier_one_of_its_producer_waits_for_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let replica = open(&dir, leader(1, &[1]));
    let later = {
        let replica = Arc::clone(&replica);
        tokio::spawn(async move { replica.append_in_order(vec![producer_batch(10)], Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    replica.append(producer_batch(0)).await.expect("the earlier request");
    let (info, _) = later.await.expect("task").expect("the later request, once the earlier one is in");
    assert_eq!(info.base_offset, Offset(10));
    // A gap nothing fills: refused once the wait is over.
    let refused =
        replica.append_in_order(vec![producer_batch(30)], Duration::from_millis(50)).await.expect_err("a gap");
    assert!(refused.is_sequence_ahead(), "{refused}");
    assert_eq!(refused.error_code(), brook_record::ErrorCode::OutOfOrderSequenceNumber);
}
