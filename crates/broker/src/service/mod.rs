//! The gRPC services, one file per service and one handler per RPC. Each
//! handler validates its request, finds the partition in the registry, and
//! calls one method on it; errors become statuses in `error.rs`.

pub mod admin;
pub mod groups;
pub mod metadata;
pub mod records;
pub mod replication;

use std::sync::Arc;

use brook_proto::v1::BrokerInfo;

/// Who this broker is, as clients see it, and how it sees the cluster.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub broker_id: brook_record::BrokerId,
    pub address: String,
    /// The metadata group (brokers, controller).
    pub metadata: brook_metadata::MetadataNode,
    /// What a topic created without them gets (see `BrokerConfig`).
    pub default_replication_factor: u32,
    pub default_min_insync_replicas: u32,
    /// The memory the request bodies of every connection share (see
    /// `connections.rs`).
    pub request_budget: Arc<crate::connections::RequestBudget>,
}

impl NodeInfo {
    /// The registered brokers.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.metadata
            .state()
            .borrow()
            .brokers
            .values()
            .map(|broker| BrokerInfo { id: broker.id.0, address: broker.address.clone(), alive: broker.alive })
            .collect()
    }

    /// The controller's broker id; 0 while none is elected.
    pub fn controller_id(&self) -> u32 {
        self.metadata.controller().and_then(|id| u32::try_from(id).ok()).unwrap_or(0)
    }
}

pub type Node = Arc<NodeInfo>;

/// A partition's offset by `spec`, from its replica here: the high
/// watermark, the log start, or the first record at or after
/// `timestamp_ms` below the HW (with its timestamp; -1 and -1 if none).
/// Shared by `ListOffsets` and the groups' describe and reset.
pub(crate) async fn offset_by_spec(
    replica: &Arc<brook_replication::Replica>,
    spec: brook_proto::v1::OffsetSpec,
    timestamp_ms: i64,
) -> Result<(i64, i64), crate::error::BrokerError> {
    use brook_proto::v1::OffsetSpec;
    Ok(match spec {
        OffsetSpec::Latest => (admin::wire_offset(replica.high_watermark()), -1),
        OffsetSpec::Earliest => (admin::wire_offset(replica.log_start_offset()), -1),
        OffsetSpec::Timestamp => match replica.offset_for_timestamp(timestamp_ms).await? {
            Some((offset, timestamp_ms)) => (admin::wire_offset(offset), timestamp_ms),
            None => (-1, -1),
        },
    })
}

/// A broker id on the wire; 0 for none (no leader).
pub(crate) fn wire_broker(id: Option<brook_record::BrokerId>) -> u32 {
    id.map_or(0, |id| id.0)
}

/// Broker ids on the wire.
pub(crate) fn wire_brokers(ids: &[brook_record::BrokerId]) -> Vec<u32> {
    ids.iter().map(|id| id.0).collect()
}
