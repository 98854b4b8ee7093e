//! The follower side of replication: one fetcher per leader broker pulls,
//! for every partition that broker leads and this one hosts, the batches
//! past this replica's log end, appends them as they are, and takes the
//! leader's HW. After a leader change, before fetching, a follower asks the
//! leader where its own latest epoch ends and cuts what diverged (over as
//! many rounds as the leader lacks its epochs). Fetches carry the epoch the
//! follower believes current, and a poll in flight is dropped when what the
//! follower follows from that leader changes.
//!
//! The leader is reached through [`LeaderClient`]; what to follow comes
//! from [`HostedReplicas`]. Neither knows the other: the broker implements
//! both.

use std::sync::Arc;
use std::time::Duration;

use brook_record::{BrokerId, LeaderEpoch};
use tokio_util::sync::CancellationToken;

use crate::network::{EpochEndQuery, HostedReplicas, LeaderClient, LeaderRefusal, PartitionFetch, ReplicaFetchRequest};
use crate::replica::Replica;
use crate::truncation::{truncation_step, TruncationStep};

/// How long the leader may hold a fetch with nothing to send: short, so a
/// poll that misses a partition just moved to its leader (dropped on the
/// change anyway, below) costs little; 100 ms costs an idle
/// follower-leader pair ten wake-ups a second.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(100);
/// Bytes per partition per fetch.
const FETCH_MAX_BYTES: u32 = 4 << 20;
/// Pause after failed fetches in a row (leader unreachable, moving): 5 ms
/// after the first, doubling up to this. The first failure is often a
/// connection to a leader that restarted since, which the retry opens
/// anew: a flat 100 ms there held acks=all sends for 100 ms after a
/// controlled shutdown (BENCHMARKS.md, rolling restart).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(5);
/// Pause when the leader refused every partition of a fetch.
const REFUSED_BACKOFF: Duration = Duration::from_millis(20);
/// How often an idle fetcher (nothing to follow) looks again.
const IDLE_RECHECK: Duration = Duration::from_millis(200);
/// The most rounds of asking the leader one verification may take: each
/// round cuts at least one epoch off this log, and logs hold few epochs.
const MAX_VERIFY_ROUNDS: usize = 64;

/// The replicas followed from one leader, each at the epoch it follows.
type Followed = Vec<(Arc<Replica>, LeaderEpoch)>;

/// Follows every partition `leader` leads and this broker (`me`) hosts,
/// until `shutdown`.
pub async fn run_fetcher(
    me: BrokerId,
    leader: BrokerId,
    client: impl LeaderClient,
    replicas: Arc<impl HostedReplicas>,
    shutdown: CancellationToken,
) {
    let mut changes = replicas.watch_changes();
    let mut failures_in_a_row = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        changes.borrow_and_update();
        let followed = replicas.followed_from(leader);
        let pause = if followed.is_empty() {
            Some(IDLE_RECHECK)
        } else {
            // A long-poll in flight is abandoned when what this broker
            // follows from `leader` changes (a partition moved here, an
            // epoch moved on): the new set is fetched at once, not after
            // the poll's wait.
            let fetch = fetch_round(&client, me, &followed);
            tokio::pin!(fetch);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut fetch => break Some(outcome),
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !same_partitions(&replicas.followed_from(leader), &followed) {
                            break None;
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            };
            if !matches!(outcome, Some(Err(_))) {
                failures_in_a_row = 0;
            }
            match outcome {
                None | Some(Ok(FetchRound::Progress)) => None,
                // Every partition refused (leadership or epoch moving, one
                // side's metadata behind): a short pause, not a spin.
                Some(Ok(FetchRound::AllRefused)) => Some(REFUSED_BACKOFF),
                Some(Err(reason)) => {
                    tracing::debug!(%leader, %reason, "replica fetch failed; retrying");
                    failures_in_a_row += 1;
                    let doublings = failures_in_a_row.saturating_sub(1).min(16);
                    Some((FIRST_RETRY_BACKOFF * 2u32.pow(doublings)).min(RETRY_BACKOFF))
                }
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                // New metadata may be what we were waiting for.
                _ = changes.changed() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Whether two lists of followed partitions are the same replicas at the
/// same epochs.
fn same_partitions(now: &Followed, before: &Followed) -> bool {
    now.len() == before.len()
        && now.iter().zip(before).all(|((a, epoch_a), (b, epoch_b))| Arc::ptr_eq(a, b) && epoch_a == epoch_b)
}

/// How a fetch round went, when it got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRound {
    /// At least one partition was served.
    Progress,
    /// The leader refused every partition.
    AllRefused,
}

/// One round of following `followed` (the replicas this broker, `me`,
/// follows from one leader, each at the epoch it follows): verifies
/// (truncates) each log that needs it, then one fetch for all of them,
/// appending what came and taking the leader's HW. [`run_fetcher`] loops
/// over it; the simulation drives it one round at a time.
pub async fn fetch_round(
    client: &impl LeaderClient,
    me: BrokerId,
    followed: &[(Arc<Replica>, LeaderEpoch)],
) -> Result<FetchRound, String> {
    for (replica, epoch) in followed {
        if replica.needs_verification() {
            verify(client, replica, *epoch).await?;
            replica.mark_verified(*epoch);
        }
    }
    let request = ReplicaFetchRequest {
        follower: me,
        max_wait: FETCH_MAX_WAIT,
        max_bytes_per_partition: FETCH_MAX_BYTES,
        partitions: followed
            .iter()
            .map(|(replica, epoch)| PartitionFetch {
                partition: replica.topic_partition().clone(),
                topic_id: replica.topic_id(),
                fetch_offset: replica.log_end_offset(),
                leader_epoch: *epoch,
            })
            .collect(),
    };
    let answers = client.fetch(request).await.map_err(|error| error.to_string())?;
    let refused = answers.iter().filter(|answer| answer.outcome.is_err()).count();
    let outcome = if refused > 0 && refused == answers.len() { FetchRound::AllRefused } else { FetchRound::Progress };
    for answer in answers {
        let Some((replica, _)) = followed.iter().find(|(replica, _)| *replica.topic_partition() == answer.partition)
        else {
            continue;
        };
        let data = match answer.outcome {
            Ok(data) => data,
            Err(refusal) if refusal.error_code() == Some(brook_record::ErrorCode::OffsetOutOfRange) => {
                restart_or_recheck(replica, &refusal).await;
                continue;
            }
            Err(refusal) => {
                // NOT_LEADER and the like: the metadata will catch up.
                tracing::debug!(partition = %answer.partition, error = %refusal.code_name, "replica fetch refused");
                continue;
            }
        };
        if !data.records.is_empty() {
            if let Err(error) = replica.append_replicated(data.records).await {
                tracing::warn!(partition = %answer.partition, %error, "replicated batches refused; checking the log against the leader again");
                replica.mark_unverified();
                continue;
            }
        }
        replica.set_follower_high_watermark(data.high_watermark);
    }
    Ok(outcome)
}

/// The leader found this replica's fetch offset outside its log. Below the
/// leader's log start (its retention deleted what this replica lacks): the
/// log restarts there. Otherwise (past the leader's end: a log that was not
/// checked against this leader): check it again before the next fetch.
async fn restart_or_recheck(replica: &Arc<Replica>, refusal: &LeaderRefusal) {
    match refusal.log_start_offset {
        Some(leader_start) if replica.log_end_offset() < leader_start => {
            if let Err(error) = replica.truncate_fully_and_start_at(leader_start).await {
                tracing::warn!(partition = %replica.topic_partition(), %error, "could not restart the log at the leader's start");
            }
        }
        _ => replica.mark_unverified(),
    }
}

/// Brings this log in line with the leader at `current_epoch` before it
/// fetches: asks where this log's latest epoch ends on the leader and cuts
/// what the leader does not have (see [`truncation_step`]).
async fn verify(client: &impl LeaderClient, replica: &Arc<Replica>, current_epoch: LeaderEpoch) -> Result<(), String> {
    for _ in 0..MAX_VERIFY_ROUNDS {
        let Some(latest) = replica.latest_epoch() else {
            // No epoch to ask about (Kafka's fallback): what lies above the
            // checkpointed HW may be a deposed leader's, so it goes.
            let high_watermark = replica.high_watermark();
            if replica.log_end_offset() > high_watermark {
                replica.truncate_to(high_watermark).await.map_err(|error| error.to_string())?;
            }
            return Ok(());
        };
        let query = EpochEndQuery {
            partition: replica.topic_partition().clone(),
            topic_id: replica.topic_id(),
            epoch: latest,
            current_leader_epoch: current_epoch,
        };
        let leader = client.epoch_end_offset(query).await.map_err(|error| format!("epoch end offset: {error}"))?;
        let own_end = match leader.epoch {
            Some(epoch) => replica.end_offset_for_epoch(epoch).map_or(replica.log_start_offset(), |(_, end)| end),
            None => replica.log_start_offset(),
        };
        match truncation_step(latest, replica.log_end_offset(), leader, own_end) {
            TruncationStep::Done(cut) => {
                if let Some(cut) = cut {
                    replica.truncate_to(cut).await.map_err(|error| error.to_string())?;
                }
                return Ok(());
            }
            TruncationStep::CutAndAskAgain(cut) => {
                tracing::info!(partition = %replica.topic_partition(), %latest, leader_epoch = ?leader.epoch, %cut, "the leader never saw this log's latest epoch; cutting it");
                replica.truncate_to(cut).await.map_err(|error| error.to_string())?;
            }
        }
    }
    Err(format!("the log still disagrees with the leader after {MAX_VERIFY_ROUNDS} rounds"))
}
