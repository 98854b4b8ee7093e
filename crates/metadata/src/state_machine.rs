//! The state machine (openraft's `RaftStateMachine`): applies committed
//! commands to the [`ClusterState`], keeps it in sled with the last applied
//! log id and membership, builds and installs snapshots, and publishes each
//! new state on a `watch` so the broker can react without reaching in.
//!
//! Tree `state_machine`, key `current`: JSON of the applied state as of
//! the last snapshot built or installed; keys `snapshot.meta` (JSON) and
//! `snapshot.data` (the bytes as sent, the same JSON as `current`): that
//! snapshot. (Key `snapshot`, the whole snapshot as one JSON value, its
//! bytes as an array of numbers, is what earlier versions wrote: still
//! read.)
//!
//! Damage: if `current` cannot be read, the snapshot's copy serves (the
//! Raft log holds every entry after it); if there is no snapshot, the log
//! was never purged and openraft re-applies it all onto an empty state. If
//! both are unreadable the broker refuses to start and says so: the
//! purged entries are nowhere else on this broker (see `docs/operations.md`
//! on the metadata directory for what an operator does).
//!
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
const SNAPSHOT_META: &[u8] = b"snapshot.meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot.data";
/// The whole snapshot as one JSON value (versions before `snapshot.data`).
const SNAPSHOT_JSON: &[u8] = b"snapshot";

impl StateMachineStore {
    /// Opens the state machine kept in `db`, at the state it last applied
    /// (see the module doc for damage).
    pub fn open(db: &sled::Db) -> Result<StateMachineStore, crate::MetadataError> {
        let storage = |error: sled::Error| crate::MetadataError::Storage(error.to_string());
        let tree = db.open_tree("state_machine").map_err(storage)?;
        let current = tree.get(CURRENT).map_err(storage)?;
        let applied = match current.as_deref().map(serde_json::from_slice::<Applied>) {
            None => Applied::default(),
            Some(Ok(applied)) => applied,
            Some(Err(error)) => {
                let snapshot = read_snapshot(&tree).map_err(|error| crate::MetadataError::Storage(error.to_string()));
                match snapshot? {
                    None => {
                        // No snapshot was ever taken, so nothing was purged:
                        // openraft re-applies the whole log.
                        tracing::error!(%error, "metadata state is unreadable; rebuilding it from the Raft log");
                        Applied::default()
                    }
                    Some(stored) => match serde_json::from_slice::<Applied>(&stored.data) {
                        Ok(applied) => {
                            tracing::error!(%error, "metadata state is unreadable; starting from its last snapshot");
                            applied
                        }
                        Err(snapshot_error) => {
                            return Err(crate::MetadataError::Storage(format!(
                                "the metadata state ({error}) and its snapshot ({snapshot_error}) are both \
                                 unreadable, and the Raft log no longer holds the entries the snapshot covered"
                            )))
                        }
                    },
                }
            }
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
        // Both durable before openraft may purge the logs it covers.
        write_snapshot(&self.tree, &meta, &data).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
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
        let started = std::time::Instant::now();
        let applied: Applied =
            serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut state = applied.state;
        state.applied_index = meta.last_log_id.map_or(0, |id| id.index);
        self.applied = Applied { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        write_snapshot(&self.tree, meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let data_len = data.len();
        self.persist().await?;
        self.publish();
        tracing::info!(
            bytes = data_len,
            last_log_index = meta.last_log_id.map_or(0, |id| id.index),
            took_ms = started.elapsed().as_millis() as u64,
            "installed a metadata snapshot from the controller"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(stored) = read_snapshot(&self.tree).map_err(|e| StorageIOError::read_snapshot(None, &e))? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

/// Why a stored snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
enum SnapshotStoreError {
    #[error("metadata snapshot store: {0}")]
    Sled(#[from] sled::Error),
    #[error("metadata snapshot is unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

/// Stores a snapshot: its meta as JSON, its data as the bytes they are
/// (not a JSON array of numbers: 3-4 bytes per byte), in one batch.
fn write_snapshot(
    tree: &sled::Tree,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    data: &[u8],
) -> Result<(), SnapshotStoreError> {
    let mut batch = sled::Batch::default();
    batch.insert(SNAPSHOT_META, serde_json::to_vec(meta)?);
    batch.insert(SNAPSHOT_DATA, data);
    batch.remove(SNAPSHOT_JSON);
    tree.apply_batch(batch)?;
    Ok(())
}

/// The stored snapshot, in either layout; `None` if there is none.
fn read_snapshot(tree: &sled::Tree) -> Result<Option<StoredSnapshot>, SnapshotStoreError> {
    if let (Some(meta), Some(data)) = (tree.get(SNAPSHOT_META)?, tree.get(SNAPSHOT_DATA)?) {
        return Ok(Some(StoredSnapshot { meta: serde_json::from_slice(&meta)?, data: data.to_vec() }));
    }
    match tree.get(SNAPSHOT_JSON)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}
