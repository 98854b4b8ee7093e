//! A leader's ISR duties, through [`IsrProposer`]: proposing a caught-up
//! follower back in (until a definite answer, while still leading at that
//! epoch), and proposing followers that lag too long out, so acks=all
//! does not wait for a replica that is alive but not keeping up.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::network::{HostedReplicas, IsrProposal, IsrProposer};
use crate::replica::Replica;

/// Pause between proposals of an expansion that got no definite answer.
const EXPANSION_RETRY: Duration = Duration::from_millis(200);
/// How often a leader looks for lagging followers.
const LAG_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Proposes an expansion `replica` started (see
/// [`Replica::serve_follower_fetch`]) until it has a definite answer
/// (committed at some index, or refused), this replica no longer leads at
/// the proposal's epoch, or shutdown; then tells the replica. Meanwhile the
/// replica counts the follower in its HW.
pub async fn propose_expansion(
    replica: Arc<Replica>,
    proposer: Arc<impl IsrProposer>,
    proposal: IsrProposal,
    shutdown: CancellationToken,
) {
    let epoch = proposal.leader_epoch;
    loop {
        let outcome = proposer.propose(proposal.clone()).await;
        if outcome.is_some() || !replica.leads_at(epoch) || shutdown.is_cancelled() {
            tracing::info!(partition = %proposal.partition, isr = ?proposal.isr, ?outcome, "ISR expansion settled");
            replica.isr_change_settled(epoch, outcome);
            return;
        }
        tracing::warn!(partition = %proposal.partition, "ISR expansion unanswered; proposing again");
        tokio::select! {
            () = tokio::time::sleep(EXPANSION_RETRY) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Every `LAG_CHECK_INTERVAL`, proposes the followers that have not caught
/// up for longer than `replica_lag_max` (Kafka's
/// `replica.lag.time.max.ms`) out of the ISR of each partition led here,
/// until shutdown. A shrink needs no retry: until it shows in the
/// metadata, the HW keeps counting the larger ISR, and the next check
/// proposes it again.
pub async fn shrink_lagging_isrs(
    replicas: Arc<impl HostedReplicas>,
    proposer: Arc<impl IsrProposer>,
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
        for replica in replicas.hosted() {
            let Some(proposal) = replica.lagging_followers(replica_lag_max) else { continue };
            let epoch = proposal.leader_epoch;
            let (partition, isr) = (proposal.partition.clone(), proposal.isr.clone());
            let outcome = proposer.propose(proposal).await;
            tracing::info!(%partition, ?isr, ?outcome, "proposed lagging followers out of the ISR");
            replica.isr_change_settled(epoch, outcome);
        }
    }
}
