//! The gRPC services, one file per service and one handler per RPC. Each
//! handler validates its request, finds the partition in the registry, and
//! calls one method on it; errors become statuses in `error.rs`.

pub mod admin;
pub mod groups;
pub mod metadata;
pub mod records;

use std::sync::Arc;

use brook_proto::v1::BrokerInfo;

/// Who this broker is, as clients see it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub broker_id: u32,
    pub address: String,
    pub cluster_id: String,
}

impl NodeInfo {
    /// The cluster as far as one node knows it: itself.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        vec![BrokerInfo { id: self.broker_id, address: self.address.clone(), alive: true }]
    }
}

pub type Node = Arc<NodeInfo>;
