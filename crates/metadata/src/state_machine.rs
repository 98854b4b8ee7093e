//! The state machine (openraft's `RaftStateMachine`): applies committed
//! commands to the [`ClusterState`], keeps it in sled with the last applied
//! log id and membership, builds and installs snapshots, and publishes each
//! new state on a `watch` so the broker can react without reaching in.
//!
//! Tree `state_machine`, key `current`: JSON of the applied state as of
//! the last snapshot built or installed, key `snapshot`: that snapshot.
//! Applying an entry writes nothing: the Raft log (durable, with its
//! committed log id) holds every entry since the last snapshot, and after
//! a restart openraft applies them again onto `current`, so an entry costs
//! the state machine what it changes in memory, not a rewrite and an fsync
//! of the whole state. Logs are purged only up to a snapshot, which is
//! flushed (with `current`) before openraft learns of it.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster_state::ClusterState;
use crate::command::{CommandResult, Outcome};
use crate::raft_types::{NodeId, StorageResult, TypeConfig};

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// What is persisted, and what a snapshot carries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    state: ClusterState,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug)]
pub struct StateMachineStore {
    db: sled::Db,
    tree: sled::Tree,
    applied: Applied,
    published: watch::Sender<Arc<ClusterState>>,
    snapshots_built: u64,
}

const CURRENT: &[u8] = b"current";
const SNAPSHOT: &[u8] = b"snapshot";

impl StateMachineStore {
    /// Opens the state machine kept in `db`, at the state it last applied.
    pub fn open(db: &sled::Db) -> Result<StateMachineStore, sled::Error> {
        let tree = db.open_tree("state_machine")?;
        let applied = match tree.get(CURRENT)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                // The log still holds every command since the last purge;
                // openraft re-applies them onto an empty state.
                tracing::error!(%error, "metadata state is unreadable; rebuilding it from the Raft log");
                Applied::default()
            }),
            None => Applied::default(),
        };
        let (published, _) = watch::channel(Arc::new(applied.state.clone()));
        Ok(StateMachineStore { db: db.clone(), tree, applied, published, snapshots_built: 0 })
    }

    /// A receiver that sees every new state, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.published.subscribe()
    }

    async fn persist(&self) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&self.applied).map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.tree.insert(CURRENT, bytes).map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.db.flush_async().await.map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(())
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.applied.state.clone()));
    }
}

/// Builds a snapshot from a copy of the applied state.
#[derive(Debug)]
pub struct SnapshotBuilder {
    applied: Applied,
    tree: sled::Tree,
    snapshot_id: String,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = serde_json::to_vec(&self.applied).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let bytes = serde_json::to_vec(&stored).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        // Both durable before openraft may purge the logs it covers.
        self.tree.insert(SNAPSHOT, bytes).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.tree.insert(CURRENT, data.clone()).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.tree.flush_async().await.map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.applied.last_applied = Some(entry.log_id);
            self.applied.state.applied_index = entry.log_id.index;
            let result = match entry.payload {
                EntryPayload::Blank => Ok(Outcome::Done),
                EntryPayload::Normal(command) => {
                    let result = self.applied.state.apply(&command);
                    tracing::debug!(index = entry.log_id.index, ?command, ?result, "applied metadata command");
                    result
                }
                EntryPayload::Membership(membership) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Outcome::Done)
                }
            };
            results.push(result);
        }
        self.publish();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let last =
            self.applied.last_applied.map_or_else(|| "none".to_string(), |id| format!("{}-{}", id.leader_id, id.index));
        SnapshotBuilder {
            applied: self.applied.clone(),
            tree: self.tree.clone(),
            snapshot_id: format!("{last}-{}", self.snapshots_built),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied =
            serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut state = applied.state;
        state.applied_index = meta.last_log_id.map_or(0, |id| id.index);
        self.applied = Applied { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let bytes =
            serde_json::to_vec(&stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.tree.insert(SNAPSHOT, bytes).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.persist().await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(bytes) = self.tree.get(SNAPSHOT).map_err(|e| StorageIOError::read_snapshot(None, &e))? else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
