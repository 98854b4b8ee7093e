//! Producer ids for idempotent producers (Kafka's `ProducerIdManager`):
//! a producer without a key takes the next id of a block this broker
//! took from the metadata group (one Raft entry per thousand producers);
//! a keyed producer's id and epoch are decided by the metadata group
//! itself, so a restart under the same key anywhere gets the next epoch.
//! A key unused (not initialised, no append reported by any broker) for
//! `producer_key_expiration_ms` is forgotten ([`keep_producer_keys`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use brook_metadata::{Command, CommandV1, MetadataNode, Outcome};
use brook_record::BrokerId;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::replica_manager::ReplicaManager;

#[derive(Debug)]
pub struct ProducerIds {
    metadata: MetadataNode,
    broker_id: BrokerId,
    /// The ids left in this broker's block: `next..end`.
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn new(metadata: MetadataNode, broker_id: BrokerId) -> ProducerIds {
        ProducerIds { metadata, broker_id, block: tokio::sync::Mutex::new((0, 0)) }
    }

    /// A producer id and epoch: for `key`, the metadata group's next epoch
    /// under it; without, a fresh id at epoch 0.
    pub async fn init(&self, key: Option<String>) -> Result<(i64, i16), BrokerError> {
        if let Some(key) = key {
            return match self.metadata.propose(Command::V1(CommandV1::InitKeyedProducer { key })).await?? {
                Outcome::Producer { producer_id, producer_epoch } => Ok((producer_id, producer_epoch)),
                other => Err(unexpected(&other)),
            };
        }
        // Held across the proposal: one block request at a time; the others
        // wait for it rather than each taking a block.
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let command = CommandV1::AllocateProducerIds { broker_id: self.broker_id };
            match self.metadata.propose(Command::V1(command)).await?? {
                Outcome::ProducerIds { first, count } => *block = (first, first + i64::from(count)),
                other => return Err(unexpected(&other)),
            }
            tracing::info!(first = block.0, end = block.1, "took a block of producer ids");
        }
        let id = block.0;
        block.0 += 1;
        Ok((id, 0))
    }
}

fn unexpected(outcome: &Outcome) -> BrokerError {
    BrokerError::NoController(format!("the metadata group answered a producer-id request with {outcome:?}"))
}

/// How long a producer key outlives its last use, and how often brokers
/// report uses and the controller looks for expired keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyExpiry {
    /// Kafka's `transactional.id.expiration.ms`.
    pub expiration: Duration,
    pub check_interval: Duration,
}

/// Keeps keyed producers' ids for as long as they are used, and forgets
/// them after `expiry.expiration` without use (Kafka's
/// `transactional.id.expiration.ms`), until `shutdown`:
///
/// - every broker, every check interval, reports the keys whose ids
///   appended to any replica it hosts (leader or follower: a follower that
///   becomes leader has already reported what it replicated) since the
///   start of its previous report (`CommandV1::ProducerKeysActive`); the
///   first report after a start covers everything its logs remember;
/// - the controller, as often, proposes `CommandV1::ExpireProducerKeys`.
///
/// A key in use is so reported within two check intervals, far inside the
/// expiration (the configuration checks the interval is at most a quarter
/// of it), so a running producer's key is never forgotten and a new
/// instance under it always fences the old one.
pub async fn keep_producer_keys(
    metadata: MetadataNode,
    registry: Arc<ReplicaManager>,
    expiry: KeyExpiry,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(expiry.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_up_to = i64::MIN;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now_ms = wall_clock_ms();
        let registry = Arc::clone(&registry);
        let since = reported_up_to;
        let Ok(ids) = tokio::task::spawn_blocking(move || registry.producers_appended_since(since)).await else {
            continue;
        };
        if report_keys(&metadata, &ids).await {
            reported_up_to = now_ms;
        }
        if metadata.is_controller() {
            let expiration_ms = u64::try_from(expiry.expiration.as_millis()).unwrap_or(u64::MAX);
            match metadata.propose(Command::V1(CommandV1::ExpireProducerKeys { now_ms, expiration_ms })).await {
                Ok(Ok(Outcome::ProducerKeysExpired(0))) => {}
                Ok(Ok(Outcome::ProducerKeysExpired(count))) => {
                    tracing::info!(keys = count, ?expiry.expiration, "forgot producer keys unused for the expiration")
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a producer key expiry"),
                Err(error) => tracing::warn!(%error, "could not expire producer keys; trying at the next check"),
            }
        }
    }
}

/// Keys per `ProducerKeysActive`: at most 255 bytes each, so a report
/// stays far under the metadata command limit.
const KEYS_PER_REPORT: usize = 1_000;

/// Reports the keys of `ids` (those that are keyed) as used; whether every
/// report landed (if not, the next pass reports the same span again).
async fn report_keys(metadata: &MetadataNode, ids: &BTreeSet<i64>) -> bool {
    if ids.is_empty() {
        return true;
    }
    let keys: Vec<String> = {
        let state = metadata.state().borrow().clone();
        state.producer_ids.keyed.iter().filter(|(_, (id, _))| ids.contains(id)).map(|(key, _)| key.clone()).collect()
    };
    for chunk in keys.chunks(KEYS_PER_REPORT) {
        let command = Command::V1(CommandV1::ProducerKeysActive { keys: chunk.to_vec() });
        match metadata.propose(command).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "a producer key report was refused");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, "could not report producer keys in use; trying at the next check");
                return false;
            }
        }
    }
    if !keys.is_empty() {
        tracing::debug!(keys = keys.len(), "reported producer keys in use");
    }
    true
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as i64)
}
