//! Producer ids for idempotent producers (Kafka's `ProducerIdManager`):
//! a producer without a key takes the next id of a block this broker
//! took from the metadata group (one Raft entry per thousand producers);
//! a keyed producer's id and epoch are decided by the metadata group
//! itself, so a restart under the same key anywhere gets the next epoch.

use brook_metadata::{Command, CommandV1, MetadataNode, Outcome};
use brook_record::BrokerId;

use crate::error::BrokerError;

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
