//! A replica's place in its partition, as the cluster decided.

use brook_record::{BrokerId, LeaderEpoch};

/// What the metadata says of one partition, from this broker's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// This broker.
    pub broker_id: BrokerId,
    /// `None` while no in-sync replica is alive.
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    /// The ISR as the metadata shows it.
    pub isr: Vec<BrokerId>,
    /// The version of `leader` and `isr` (Kafka's partition epoch): what
    /// an ISR change is built on.
    pub partition_epoch: u32,
    /// Replicas on brokers the metadata shows not alive: the controller
    /// refuses them in the ISR, so a leader does not propose them however
    /// caught up they are (one cut off from the controller but still
    /// fetching would otherwise cost a metadata entry per fetch; Kafka's
    /// KIP-841 keeps fenced brokers out of the ISR the same way).
    pub unavailable: Vec<BrokerId>,
}

impl Role {
    pub fn leads(&self) -> bool {
        self.leader == Some(self.broker_id)
    }

    /// Whether `other` is another leadership than this one: another leader
    /// or another epoch (a new epoch of the same leader included).
    pub fn leadership_differs(&self, other: &Role) -> bool {
        self.leads() != other.leads() || self.leader_epoch != other.leader_epoch
    }
}
