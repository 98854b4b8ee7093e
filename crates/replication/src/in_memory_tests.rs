//! A leader and a follower driven through the crate's traits with
//! in-memory implementations: no network, no metadata group. The leader
//! client calls the leader replica directly; ISR proposals are recorded
//! and answered as committed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_record::{BatchBuilder, BrokerId, LeaderEpoch, NewRecord, Offset, TopicId, TopicPartition};
use brook_storage::LogConfig;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ReplicaError;
use crate::isr::IsrChangeOutcome;
use crate::network::{
    EpochEndQuery, FetchedPartition, HostedReplicas, IsrProposal, IsrProposer, LeaderClient, LeaderRefusal,
    NetworkError, ReplicaFetchRequest, ReplicatedData,
};
use crate::replica::Replica;
use crate::role::Role;
use crate::truncation::LeaderEpochEnd;
use crate::{propose_expansion, run_fetcher};

const LEADER: BrokerId = BrokerId(1);
const FOLLOWER: BrokerId = BrokerId(2);

fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(1024);
    for value in values {
        builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(value.as_bytes()), headers: &[] });
    }
    builder.finish()
}

fn role(me: BrokerId, leader: BrokerId, epoch: u32, isr: &[BrokerId]) -> Role {
    Role {
        broker_id: me,
        leader: Some(leader),
        leader_epoch: LeaderEpoch(epoch),
        isr: isr.to_vec(),
        partition_epoch: epoch,
        unavailable: Vec::new(),
    }
}

fn open(dir: &tempfile::TempDir, name: &str, topic_id: TopicId, role: Role) -> Arc<Replica> {
    let appended = Arc::new(watch::channel(0).0);
    let partition = TopicPartition::new("t", 0);
    let replica = Replica::open(partition, topic_id, dir.path().join(name), LogConfig::default(), role, appended);
    Arc::new(replica.expect("open"))
}

/// A leader (broker 1) and its follower (broker 2) of one new topic, at
/// `epoch` with `isr`.
fn open_pair(dir: &tempfile::TempDir, epoch: u32, isr: &[BrokerId]) -> (Arc<Replica>, Arc<Replica>) {
    let topic_id = TopicId::random();
    let leader = open(dir, "leader", topic_id, role(LEADER, LEADER, epoch, isr));
    let follower = open(dir, "follower", topic_id, role(FOLLOWER, LEADER, epoch, isr));
    (leader, follower)
}

/// Every byte a replica holds (to its LEO).
async fn log_bytes(replica: &Arc<Replica>) -> Bytes {
    log_bytes_from(replica, 0).await
}

/// Every byte a replica holds from `offset` to its LEO.
async fn log_bytes_from(replica: &Arc<Replica>, offset: u64) -> Bytes {
    replica.read_for_follower(Offset(offset), u64::MAX).await.expect("read").records
}

/// The leader as its followers reach it, without a network.
struct InMemoryLeader {
    replica: Arc<Replica>,
    proposer: Arc<RecordingProposer>,
}

impl LeaderClient for InMemoryLeader {
    async fn fetch(&self, request: ReplicaFetchRequest) -> Result<Vec<FetchedPartition>, NetworkError> {
        let mut answers = Vec::new();
        for fetch in &request.partitions {
            let outcome = match self.replica.serve_follower_fetch(request.follower, 1, fetch, 1 << 20).await {
                Ok((read, proposal)) => {
                    if let Some(proposal) = proposal {
                        let (replica, proposer) = (Arc::clone(&self.replica), Arc::clone(&self.proposer));
                        tokio::spawn(propose_expansion(replica, proposer, proposal, CancellationToken::new()));
                    }
                    Ok(ReplicatedData {
                        records: read.records,
                        high_watermark: self.replica.high_watermark(),
                        log_start_offset: read.log_start_offset,
                    })
                }
                Err(error) => {
                    let log_start_offset = match &error {
                        ReplicaError::OffsetOutOfRange { log_start_offset, .. } => Some(*log_start_offset),
                        _ => None,
                    };
                    Err(LeaderRefusal {
                        code_name: error.code_name().into(),
                        message: error.to_string(),
                        log_start_offset,
                    })
                }
            };
            answers.push(FetchedPartition { partition: fetch.partition.clone(), outcome });
        }
        if answers.iter().all(|answer| answer.outcome.as_ref().is_ok_and(|data| data.records.is_empty())) {
            // The long poll's wait, shortened: nothing new to send.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(answers)
    }

    async fn epoch_end_offset(&self, query: EpochEndQuery) -> Result<LeaderEpochEnd, NetworkError> {
        self.replica
            .check_follower(query.topic_id, query.current_leader_epoch)
            .map_err(|error| NetworkError(error.to_string()))?;
        Ok(self.replica.epoch_end(query.epoch))
    }
}

/// ISR proposals, recorded and committed at increasing indexes.
#[derive(Default)]
struct RecordingProposer {
    proposals: Mutex<Vec<IsrProposal>>,
}

impl IsrProposer for RecordingProposer {
    async fn propose(&self, proposal: IsrProposal) -> Option<IsrChangeOutcome> {
        let mut proposals = self.proposals.lock().expect("not poisoned");
        proposals.push(proposal);
        Some(IsrChangeOutcome::Committed)
    }
}

/// The follower broker's one hosted replica, followed from the leader.
struct Hosted {
    replica: Arc<Replica>,
    epoch: LeaderEpoch,
    changes: watch::Sender<u64>,
}

impl HostedReplicas for Hosted {
    fn followed_from(&self, leader: BrokerId) -> Vec<(Arc<Replica>, LeaderEpoch)> {
        if leader == LEADER {
            vec![(Arc::clone(&self.replica), self.epoch)]
        } else {
            Vec::new()
        }
    }

    fn hosted(&self) -> Vec<Arc<Replica>> {
        vec![Arc::clone(&self.replica)]
    }

    fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Runs the follower's fetcher against `leader` until `done` holds (at
/// most 10 s), then stops it.
async fn follow_until(
    leader: &Arc<Replica>,
    follower: &Arc<Replica>,
    epoch: u32,
    proposer: &Arc<RecordingProposer>,
    done: impl Fn() -> bool,
) {
    let client = InMemoryLeader { replica: Arc::clone(leader), proposer: Arc::clone(proposer) };
    let hosted =
        Arc::new(Hosted { replica: Arc::clone(follower), epoch: LeaderEpoch(epoch), changes: watch::channel(0).0 });
    let shutdown = CancellationToken::new();
    let fetcher = tokio::spawn(run_fetcher(FOLLOWER, LEADER, client, hosted, shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "the follower did not get there within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    fetcher.await.expect("the fetcher stops on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_copies_the_leaders_batches_byte_for_byte_and_the_hw_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = open_pair(&dir, 0, &[LEADER, FOLLOWER]);
    leader.append(batch(&["a", "b", "c"])).await.expect("append");
    leader.append(batch(&["d"])).await.expect("append");
    assert_eq!(leader.high_watermark(), Offset(0), "the follower has nothing yet");

    let proposer = Arc::new(RecordingProposer::default());
    follow_until(&leader, &follower, 0, &proposer, || {
        leader.high_watermark() == Offset(4) && follower.high_watermark() == Offset(4)
    })
    .await;
    assert_eq!(follower.log_end_offset(), Offset(4));
    assert_eq!(log_bytes(&leader).await, log_bytes(&follower).await);
    assert!(proposer.proposals.lock().expect("not poisoned").is_empty(), "already in the ISR: nothing proposed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cuts_the_epoch_its_new_leader_never_saw_before_it_fetches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let both = [LEADER, FOLLOWER];
    // Both hold three records of epoch 0; then broker 2 led at epoch 1
    // and appended two records nobody copied; now broker 1 leads at
    // epoch 2 and appended four of its own.
    let (leader, follower) = open_pair(&dir, 0, &both);
    leader.append(batch(&["a", "b", "c"])).await.expect("append");
    follower.append_replicated(log_bytes(&leader).await).await.expect("replicate");
    follower.set_role(role(FOLLOWER, FOLLOWER, 1, &[FOLLOWER]));
    follower.append(batch(&["lost-1", "lost-2"])).await.expect("append as the old leader");
    leader.set_role(role(LEADER, LEADER, 2, &both));
    leader.append(batch(&["d", "e", "f", "g"])).await.expect("append");
    follower.set_role(role(FOLLOWER, LEADER, 2, &both));

    let proposer = Arc::new(RecordingProposer::default());
    follow_until(&leader, &follower, 2, &proposer, || follower.log_end_offset() == Offset(7)).await;
    assert_eq!(log_bytes(&leader).await, log_bytes(&follower).await, "no record of epoch 1 is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_follower_outside_the_isr_is_proposed_back_in_and_counted_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = open_pair(&dir, 3, &[LEADER]);
    leader.append(batch(&["a", "b"])).await.expect("append");
    assert_eq!(leader.high_watermark(), Offset(2), "alone in the ISR");

    let proposer = Arc::new(RecordingProposer::default());
    let proposed = || !proposer.proposals.lock().expect("not poisoned").is_empty();
    follow_until(&leader, &follower, 3, &proposer, proposed).await;
    let proposals = proposer.proposals.lock().expect("not poisoned").clone();
    assert_eq!(proposals.len(), 1, "one change in flight: {proposals:?}");
    assert_eq!((proposals[0].leader_epoch, proposals[0].isr.clone()), (LeaderEpoch(3), vec![LEADER, FOLLOWER]));
    assert_eq!(proposals[0].topic_id, leader.topic_id());
    // Counted from its proposal on: the stopped follower holds the HW.
    leader.append(batch(&["c"])).await.expect("append");
    assert_eq!(leader.high_watermark(), Offset(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_restarts_there_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leader, follower) = open_pair(&dir, 0, &[LEADER, FOLLOWER]);
    follower.append_replicated(batch(&["old"])).await.expect("the follower has offset 0");
    // The leader's retention deleted everything below 10.
    leader.truncate_fully_and_start_at(Offset(10)).await.expect("restart the leader's log");
    leader.append(batch(&["a", "b", "c"])).await.expect("append");

    let proposer = Arc::new(RecordingProposer::default());
    follow_until(&leader, &follower, 0, &proposer, || follower.log_end_offset() == Offset(13)).await;
    assert_eq!(follower.log_start_offset(), Offset(10));
    assert_eq!(log_bytes_from(&leader, 10).await, log_bytes_from(&follower, 10).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_a_recreated_topic_gets_nothing_from_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leader = open(&dir, "leader", TopicId::random(), role(LEADER, LEADER, 0, &[LEADER, FOLLOWER]));
    let stale = open(&dir, "follower", TopicId::random(), role(FOLLOWER, LEADER, 0, &[LEADER, FOLLOWER]));
    leader.append(batch(&["new"])).await.expect("append");
    let proposer = Arc::new(RecordingProposer::default());
    let started = tokio::time::Instant::now();
    follow_until(&leader, &stale, 0, &proposer, || started.elapsed() > Duration::from_millis(300)).await;
    assert_eq!(stale.log_end_offset(), Offset(0), "refused: UNKNOWN_TOPIC_ID");
    assert_eq!(leader.high_watermark(), Offset(0), "and its fetches do not move the new topic's HW");
}
