//! The follower side of replication: one fetcher per other broker pulls,
//! for every partition that broker leads and this one hosts, the batches
//! past this replica's log end, appends them as they are, and takes the
//! leader's HW. After a leader change, before fetching, a follower asks the
//! leader where its own latest epoch ends and cuts what diverged (over as
//! many rounds as the leader lacks its epochs). Fetches carry the epoch the
//! follower believes current, and a poll in flight is dropped when what the
//! follower follows from that leader changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brook_proto::internal::replication_client::ReplicationClient;
use brook_proto::internal::{EpochEndOffsetRequest, PartitionFetch, ReplicaFetchRequest};
use brook_record::Offset;
use brook_replication::{truncation_step, LeaderEpochEnd, TruncationStep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use crate::partition::Partition;
use crate::topics::TopicRegistry;

/// How long the leader may hold a fetch with nothing to send. Session 9
/// saw acks=all tails that followed this wait (p99 400 ms at 500 ms); the
/// cause was a poll in flight that did not carry a partition just moved to
/// its leader, fixed by dropping such polls (see `fetch_from`). 100 ms
/// costs an idle follower-leader pair ten wake-ups a second.
const FETCH_MAX_WAIT_MS: u32 = 100;
/// Bytes per partition per fetch.
const FETCH_MAX_BYTES: u32 = 4 << 20;
/// Pause after a failed fetch (leader unreachable, moving).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Pause when the leader refused every partition of a fetch.
const REFUSED_BACKOFF: Duration = Duration::from_millis(20);
/// How often an idle fetcher (nothing to follow) looks again.
const IDLE_RECHECK: Duration = Duration::from_millis(200);

/// Starts a fetcher for every other broker of `peers`.
pub fn spawn_fetchers(
    tasks: &TaskTracker,
    registry: Arc<TopicRegistry>,
    peers: &BTreeMap<u32, String>,
    shutdown: CancellationToken,
) {
    let me = registry.broker_id();
    for (&leader, address) in peers.iter().filter(|(id, _)| **id != me) {
        let (registry, address, shutdown) = (Arc::clone(&registry), address.clone(), shutdown.clone());
        tasks.spawn(async move { fetch_from(registry, leader, address, shutdown).await });
    }
}

fn connect(address: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(crate::server::MAX_FRAME_BYTES)
        .connect_lazy())
}

async fn fetch_from(registry: Arc<TopicRegistry>, leader: u32, address: String, shutdown: CancellationToken) {
    let client = match connect(&address) {
        Ok(channel) => ReplicationClient::new(channel).max_decoding_message_size(256 << 20),
        Err(error) => {
            tracing::error!(leader, %address, %error, "cannot reach a peer for replication");
            return;
        }
    };
    let me = registry.broker_id();
    let mut changes = registry.watch_changes();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        changes.borrow_and_update();
        let followed = registry.followed_from(leader);
        let pause = if followed.is_empty() {
            Some(IDLE_RECHECK)
        } else {
            // A long-poll in flight is abandoned when what this broker
            // follows from `leader` changes (a partition moved here, an
            // epoch moved on): the new set is fetched at once, not after
            // the poll's wait.
            let fetch = fetch_once(&client, me, &followed);
            tokio::pin!(fetch);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut fetch => break Some(outcome),
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !same_partitions(&registry.followed_from(leader), &followed) {
                            break None;
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            };
            match outcome {
                None | Some(Ok(FetchOutcome::Progress)) => None,
                // Every partition refused (leadership or epoch moving, one
                // side's metadata behind): a short pause, not a spin.
                Some(Ok(FetchOutcome::AllRefused)) => Some(REFUSED_BACKOFF),
                Some(Err(reason)) => {
                    tracing::debug!(leader, %reason, "replica fetch failed; retrying");
                    Some(RETRY_BACKOFF)
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

/// Whether two lists of followed partitions are the same partitions at the
/// same epochs.
fn same_partitions(now: &[(Arc<Partition>, u32)], before: &[(Arc<Partition>, u32)]) -> bool {
    now.len() == before.len()
        && now.iter().zip(before).all(|((a, epoch_a), (b, epoch_b))| Arc::ptr_eq(a, b) && epoch_a == epoch_b)
}

/// How a fetch went, when it got an answer.
enum FetchOutcome {
    Progress,
    AllRefused,
}

/// Verifies (truncates) what needs it, then one fetch for all partitions.
async fn fetch_once(
    client: &ReplicationClient<Channel>,
    me: u32,
    followed: &[(Arc<Partition>, u32)],
) -> Result<FetchOutcome, String> {
    for (partition, epoch) in followed {
        if partition.needs_verification() {
            verify(client, partition, *epoch).await?;
            partition.mark_verified(*epoch);
        }
    }
    let request = ReplicaFetchRequest {
        follower_id: me,
        max_wait_ms: FETCH_MAX_WAIT_MS,
        max_bytes: FETCH_MAX_BYTES,
        partitions: followed
            .iter()
            .map(|(partition, epoch)| PartitionFetch {
                topic: partition.topic().to_string(),
                partition: partition.partition(),
                fetch_offset: i64::try_from(partition.log_end_offset().0).unwrap_or(i64::MAX),
                leader_epoch: *epoch,
                topic_id: partition.topic_id().as_bytes().to_vec().into(),
            })
            .collect(),
    };
    let mut call = tonic::Request::new(request);
    call.set_timeout(Duration::from_millis(u64::from(FETCH_MAX_WAIT_MS)) + Duration::from_secs(5));
    let response = client.clone().fetch(call).await.map_err(|status| status.message().to_string())?.into_inner();
    let refused = response.partitions.iter().filter(|data| !data.error.is_empty()).count();
    let outcome = if refused > 0 && refused == response.partitions.len() {
        FetchOutcome::AllRefused
    } else {
        FetchOutcome::Progress
    };
    for data in response.partitions {
        let Some((partition, _)) = followed
            .iter()
            .find(|(partition, _)| partition.topic() == data.topic && partition.partition() == data.partition)
        else {
            continue;
        };
        if !data.error.is_empty() {
            // NOT_LEADER and the like: the metadata will catch up.
            tracing::debug!(topic = %data.topic, partition = data.partition, error = %data.error, "replica fetch refused");
            continue;
        }
        if !data.records.is_empty() {
            if let Err(error) = partition.append_replicated(data.records).await {
                tracing::warn!(topic = %data.topic, partition = data.partition, %error, "replicated batches refused; checking the log against the leader again");
                partition.mark_unverified();
                continue;
            }
        }
        if let Ok(high_watermark) = u64::try_from(data.high_watermark) {
            partition.set_follower_high_watermark(Offset(high_watermark));
        }
    }
    Ok(outcome)
}

/// The most rounds of asking the leader one verification may take: each
/// round cuts at least one epoch off this log, and logs hold few epochs.
const MAX_VERIFY_ROUNDS: usize = 64;

/// Brings this log in line with the leader at `current_epoch` before it
/// fetches: asks where this log's latest epoch ends on the leader and cuts
/// what the leader does not have (see `brook_replication::truncation_step`).
async fn verify(
    client: &ReplicationClient<Channel>,
    partition: &Arc<Partition>,
    current_epoch: u32,
) -> Result<(), String> {
    for _ in 0..MAX_VERIFY_ROUNDS {
        let Some(latest) = partition.latest_epoch() else {
            return Ok(());
        };
        let request = EpochEndOffsetRequest {
            topic: partition.topic().to_string(),
            partition: partition.partition(),
            leader_epoch: latest,
            current_leader_epoch: current_epoch,
            topic_id: partition.topic_id().as_bytes().to_vec().into(),
        };
        let answer =
            client.clone().epoch_end_offset(request).await.map_err(|status| status.message().to_string())?.into_inner();
        if !answer.error.is_empty() {
            return Err(format!("epoch end offset refused: {}", answer.error));
        }
        let leader = LeaderEpochEnd {
            epoch: u32::try_from(answer.leader_epoch).ok(),
            end_offset: Offset(u64::try_from(answer.end_offset).map_err(|_| "negative end offset".to_string())?),
        };
        let own_end = match leader.epoch {
            Some(epoch) => partition.end_offset_for_epoch(epoch).map_or(partition.log_start_offset(), |(_, end)| end),
            None => partition.log_start_offset(),
        };
        match truncation_step(latest, partition.log_end_offset(), leader, own_end) {
            TruncationStep::Done(cut) => {
                if let Some(cut) = cut {
                    partition.truncate_to(cut).await.map_err(|error| error.to_string())?;
                }
                return Ok(());
            }
            TruncationStep::CutAndAskAgain(cut) => {
                tracing::info!(topic = partition.topic(), partition = partition.partition(), latest, leader_epoch = ?leader.epoch, %cut, "the leader never saw this log's latest epoch; cutting it");
                partition.truncate_to(cut).await.map_err(|error| error.to_string())?;
            }
        }
    }
    Err(format!("the log still disagrees with the leader after {MAX_VERIFY_ROUNDS} rounds"))
}

/// How often a leader looks for lagging followers.
const LAG_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The leader's ISR duty: followers that stay behind longer than
/// `replica_lag_max` are proposed out of the ISR (through the controller),
/// so acks=all does not wait for a replica that is alive but not keeping up.
pub async fn shrink_lagging_isrs(
    registry: Arc<TopicRegistry>,
    metadata: brook_metadata::MetadataNode,
    replica_lag_max: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(LAG_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for topic in registry.list() {
            for (_, partition) in topic.hosted() {
                let Some((role, lagging)) = partition.lagging_followers(replica_lag_max) else { continue };
                let isr: Vec<u32> = role.isr.iter().copied().filter(|member| !lagging.contains(member)).collect();
                let command = brook_metadata::CommandV1::ChangeIsr {
                    topic: partition.topic().to_string(),
                    partition: partition.partition(),
                    leader_epoch: role.leader_epoch,
                    isr,
                };
                // A shrink needs no bookkeeping: until it shows in this
                // broker's metadata, the HW keeps counting the larger ISR.
                match metadata.propose(brook_metadata::Command::V1(command)).await {
                    Ok(Ok(_)) => tracing::info!(
                        topic = partition.topic(),
                        partition = partition.partition(),
                        ?lagging,
                        "lagging followers left the ISR"
                    ),
                    Ok(Err(refused)) => tracing::debug!(%refused, "ISR shrink refused"),
                    Err(error) => tracing::warn!(%error, "could not propose an ISR shrink"),
                }
                partition.isr_change_settled(role.leader_epoch, None, None);
            }
        }
    }
}
