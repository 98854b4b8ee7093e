//! One partition replica on this broker: its log, its role (leader or
//! follower, at which epoch), its ISR as a leader counts it, the high
//! watermark (HW) and the watch that wakes waiting fetches and acks=all
//! produces.
//!
//! Threads: the log's writer sits behind a `std::sync::Mutex` that is only
//! ever locked on the blocking pool (`spawn_blocking`) or for an in-memory
//! lookup, so file I/O never runs on an async worker and no lock is held
//! across an `.await`. Reads go through the log's lock-free `LogReader`,
//! also on the blocking pool.
//!
//! The HW: on the leader, the lowest LEO over the maximal ISR
//! ([`crate::IsrState::maximal`]), moved by its own appends and by
//! followers' fetches; on a follower, the leader's HW as of its last fetch,
//! capped at its own LEO. Alone in its ISR (a single node, RF 1), a
//! leader's HW is its LEO. An acks=all wait counts only while this replica
//! still leads at the epoch it appended under: after a leader change the
//! HW it holds is the new leader's, over records that may differ. The HW is
//! checkpointed beside the log whenever it moved (the broker asks every
//! 500 ms) and at close; a restarted replica starts from that checkpoint
//! (never from its log end, which may hold records no other replica has),
//! so a restart never exposes records above the HW.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use brook_record::{BrokerId, LeaderEpoch, Offset, TopicId, TopicPartition};
use brook_storage::{AppendInfo, LogConfig, LogReader, PartitionLog, StorageError};
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::ReplicaError;
use crate::high_watermark::LeaderProgress;
use crate::isr::{caught_up, IsrChangeOutcome, IsrState};
use crate::network::{IsrProposal, PartitionFetch};
use crate::role::Role;
use crate::truncation::LeaderEpochEnd;

/// The time a follower's progress is measured in: tokio's clock (the
/// system's, unless a test or the simulation paused it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The replica's replication state, changed under one lock.
#[derive(Debug)]
struct ReplicaState {
    role: Role,
    /// Leader side: the ISR with its change in flight.
    isr: IsrState,
    /// Leader side: followers' progress.
    progress: LeaderProgress,
    /// Follower side: the leader epoch up to which this log was checked
    /// against the leader (truncated where it diverged); `None`: not yet.
    verified_epoch: Option<LeaderEpoch>,
}

/// Records read for a consumer or a follower.
#[derive(Debug)]
pub struct FetchedRecords {
    pub records: Bytes,
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

/// Records read for a transport that sends them from the segment files
/// (`sendfile`): whole batches as file ranges, nothing copied.
#[derive(Debug)]
pub struct FetchedRanges {
    pub ranges: Vec<brook_storage::FileRange>,
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

impl FetchedRanges {
    pub fn byte_count(&self) -> u64 {
        self.ranges.iter().map(|range| range.length()).sum()
    }
}

/// A partition replica hosted on this broker.
#[derive(Debug)]
pub struct Replica {
    partition: TopicPartition,
    topic_id: TopicId,
    dir: PathBuf,
    /// `None` once closed (shutdown, topic deletion, moved away).
    log: Mutex<Option<PartitionLog>>,
    reader: LogReader,
    high_watermark: watch::Sender<Offset>,
    /// Kafka's `leaderIsrUpdateLock`: a leader's append holds it shared
    /// from the leadership check to the end of the write, a role change
    /// holds it exclusively. So a batch is stamped with the epoch of a
    /// leadership this replica holds for the whole append, and a replica
    /// that was demoted appends nothing after: the role change waits for
    /// appends in flight, and appends after it see the new role. Taken only
    /// on the blocking pool (appends, and the reconciler's role changes).
    leadership: RwLock<()>,
    state: Mutex<ReplicaState>,
    /// Bumped on every append on this broker: replica fetches wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// The HW last written to the checkpoint file.
    checkpointed: Mutex<Option<Offset>>,
    /// When a write to this replica's files last failed (a full or failing
    /// disk): the broker gives up its leaderships while it is recent.
    storage_failed_at: Mutex<Option<Instant>>,
    /// File I/O on the caller's thread instead of the blocking pool: for
    /// deterministic simulations, never in a broker (see
    /// [`Replica::with_io_on_caller`]).
    io_on_caller: bool,
}

impl Replica {
    /// Opens (recovering if needed) the log in `dir`. Blocking.
    pub fn open(
        partition: TopicPartition,
        topic_id: TopicId,
        dir: PathBuf,
        config: LogConfig,
        role: Role,
        appended: Arc<watch::Sender<u64>>,
    ) -> Result<Replica, ReplicaError> {
        let log =
            PartitionLog::open(dir.clone(), config).map_err(|error| ReplicaError::from_storage(&partition, error))?;
        for truncation in log.truncations_on_open() {
            tracing::warn!(%partition, ?truncation, "recovery cut a damaged log tail");
        }
        let reader = log.reader();
        // Without a checkpoint, nothing is known to be committed: the HW
        // starts at the log start and rises as the ISR reports (a leader
        // alone in its ISR, below, commits everything at once).
        let start_high_watermark = log.checkpointed_high_watermark().unwrap_or_else(|| log.log_start_offset());
        let replica = Replica {
            partition,
            topic_id,
            dir,
            log: Mutex::new(Some(log)),
            reader,
            high_watermark: watch::channel(start_high_watermark).0,
            leadership: RwLock::new(()),
            state: Mutex::new(ReplicaState {
                isr: IsrState::new(role.isr.clone(), role.partition_epoch),
                role,
                progress: LeaderProgress::new(start_high_watermark),
                verified_epoch: None,
            }),
            appended,
            checkpointed: Mutex::new(None),
            storage_failed_at: Mutex::new(None),
            io_on_caller: false,
        };
        replica.refresh_leader_high_watermark();
        Ok(replica)
    }

    /// Runs this replica's file I/O on the calling thread rather than on
    /// tokio's blocking pool, so that every async method completes in the
    /// poll that starts it. For a deterministic simulation that drives the
    /// replica from one thread; a broker never does this (its async
    /// workers must not block on files).
    pub fn with_io_on_caller(mut self) -> Replica {
        self.io_on_caller = true;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the cluster's decision for this partition.
    ///
    /// Only a change of leadership takes the leadership lock (appends check
    /// the leadership and stamp its epoch; an ISR change alone leaves both
    /// as they are), so the reconciler's pass over every replica on every
    /// metadata change does not stop their appends. One reconciler calls
    /// this at a time.
    pub fn set_role(&self, role: Role) {
        let leadership_changes = self.state().role.leadership_differs(&role);
        let _leadership =
            leadership_changes.then(|| self.leadership.write().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut state = self.state();
        debug_assert!(role.leader_epoch >= state.role.leader_epoch, "a replica's epoch never goes back");
        let leadership_changed = state.role.leadership_differs(&role);
        debug_assert_eq!(leadership_changed, leadership_changes, "roles are set by one reconciler at a time");
        if leadership_changed {
            state.progress = LeaderProgress::new(*self.high_watermark.borrow());
            state.verified_epoch = None;
            // Proposals made at the old epoch are refused by the controller.
            state.isr.reset(role.isr.clone(), role.partition_epoch);
        } else {
            state.isr.update_committed(role.isr.clone(), role.partition_epoch);
        }
        state.role = role;
        drop(state);
        if leadership_changed {
            // Wake acks=all waits so they see they lost (or cannot use) the
            // leadership, at the epoch, they appended under.
            self.high_watermark.send_modify(|_| {});
        }
        self.refresh_leader_high_watermark();
    }

    /// Whether this replica leads at `leader_epoch` right now.
    pub fn leads_at(&self, leader_epoch: LeaderEpoch) -> bool {
        let state = self.state();
        state.role.leads() && state.role.leader_epoch == leader_epoch
    }

    /// The leader epoch of this replica's role as last set.
    pub fn role_epoch(&self) -> LeaderEpoch {
        self.state().role.leader_epoch
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.partition
    }

    pub fn topic(&self) -> &str {
        &self.partition.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition.partition
    }

    pub fn topic_id(&self) -> TopicId {
        self.topic_id
    }

    /// Where the log's files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn high_watermark(&self) -> Offset {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.reader.log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.reader.log_end_offset()
    }

    /// Bytes of the partition's segment files.
    pub fn size_bytes(&self) -> u64 {
        self.reader.size_bytes()
    }

    /// A receiver that wakes when the HW moves: what long-poll fetches wait on.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    fn storage_error(&self, error: StorageError) -> ReplicaError {
        let error = ReplicaError::from_storage(&self.partition, error);
        if matches!(error, ReplicaError::Storage { .. }) {
            *self.storage_failed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        }
        error
    }

    /// When a write to this replica's files last failed, if ever (bad
    /// input is not a failure; a full or failing disk is).
    pub fn storage_failed_at(&self) -> Option<Instant> {
        *self.storage_failed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a topic's changed config to its log (segment size,
    /// retention, flush policy, ...): from the next append and the next
    /// retention pass on. Blocking (it takes the log's lock).
    pub fn set_log_config(&self, config: brook_storage::LogConfig) -> Result<(), ReplicaError> {
        self.with_log(|log| log.set_config(config))
    }

    fn with_log<T>(&self, work: impl FnOnce(&mut PartitionLog) -> Result<T, StorageError>) -> Result<T, ReplicaError> {
        // A poisoned lock means an append panicked; the log itself is only
        // changed through its own methods, which keep it consistent.
        let mut guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = guard.as_mut().ok_or_else(|| ReplicaError::Closed { partition: self.partition.clone() })?;
        work(log).map_err(|error| self.storage_error(error))
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Replica) -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, ReplicaError> {
        if self.io_on_caller {
            return work(self);
        }
        let replica = Arc::clone(self);
        let closed = ReplicaError::Closed { partition: self.partition.clone() };
        tokio::task::spawn_blocking(move || work(&replica)).await.map_err(|_| closed)?
    }

    /// On the leader: the HW from the maximal ISR's progress.
    fn refresh_leader_high_watermark(&self) {
        let mut state = self.state();
        if !state.role.leads() {
            return;
        }
        let (me, members) = (state.role.broker_id, state.isr.maximal());
        let log_end = self.log_end_offset();
        let high_watermark = state.progress.update(me, log_end, &members);
        drop(state);
        debug_assert!(high_watermark <= log_end, "the HW never passes the leader's LEO");
        self.high_watermark.send_if_modified(|current| {
            let moved = high_watermark > *current;
            if moved {
                *current = high_watermark;
            }
            moved
        });
    }

    /// Validates, stamps and appends the batches in `records` (the leader's
    /// append), then moves the HW as far as the ISR allows. Returns where
    /// they went and the leader epoch they were stamped with.
    pub async fn append(self: &Arc<Self>, records: Bytes) -> Result<(AppendInfo, LeaderEpoch), ReplicaError> {
        self.append_pieces(vec![records]).await
    }

    /// `append` of batches that came as separate pieces, each holding whole
    /// batches: one append, in order, no copy of the pieces.
    pub async fn append_pieces(
        self: &Arc<Self>,
        pieces: Vec<Bytes>,
    ) -> Result<(AppendInfo, LeaderEpoch), ReplicaError> {
        self.blocking(move |replica| replica.append_pieces_blocking(pieces)).await
    }

    /// `append_pieces` for a request that may have overtaken an earlier one
    /// of the same idempotent producer (requests travel on separate HTTP/2
    /// streams and are appended by whichever blocking thread runs first):
    /// refused as out of order *ahead* of the sequence the log expects, it
    /// waits for the next append on this broker, up to `wait` in all, and
    /// tries again; any other outcome is returned as it is. Kafka gets this
    /// order from reading one connection's requests one at a time.
    pub async fn append_in_order(
        self: &Arc<Self>,
        pieces: Vec<Bytes>,
        wait: Duration,
    ) -> Result<(AppendInfo, LeaderEpoch), ReplicaError> {
        // Only a producer's batches can be out of order: others are appended
        // as they are, without the clone a retry would need (a clone makes
        // the buffer shared, and its batches are then stamped in copies).
        if !brook_record::carries_producer_id(&pieces) {
            return self.append_pieces(pieces).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut appended = self.appended.subscribe();
        loop {
            appended.borrow_and_update();
            match self.append_pieces(pieces.clone()).await {
                Err(error) if error.is_sequence_ahead() && tokio::time::Instant::now() < deadline => {
                    let _ = tokio::time::timeout_at(deadline, appended.changed()).await;
                }
                result => return result,
            }
        }
    }

    /// `append_pieces` for a caller already on the blocking pool (one task
    /// appending to several partitions). One buffer is stamped in place
    /// when it is ours alone; a shared one (a slice of the transport's
    /// buffer) and several pieces are written beside small stamped copies
    /// of their batch headers.
    /// Refused with NotLeader unless this replica leads now; the batches
    /// are stamped with the epoch it leads at, held for the whole append.
    pub fn append_pieces_blocking(&self, pieces: Vec<Bytes>) -> Result<(AppendInfo, LeaderEpoch), ReplicaError> {
        let _leadership = self.leadership.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let epoch = {
            let state = self.state();
            if !state.role.leads() {
                return Err(ReplicaError::NotLeader {
                    partition: self.partition.clone(),
                    leader: state.role.leader,
                    leader_epoch: state.role.leader_epoch,
                });
            }
            state.role.leader_epoch
        };
        let info = match <[Bytes; 1]>::try_from(pieces) {
            Ok([single]) => match single.try_into_mut() {
                Ok(mut buffer) => self.with_log(|log| log.append(&mut buffer, epoch))?,
                Err(shared) => self.with_log(|log| log.append_shared(&shared, epoch))?,
            },
            Err(pieces) => {
                let buffers: Vec<&[u8]> = pieces.iter().map(|piece| &piece[..]).collect();
                self.with_log(|log| log.append_shared_parts(&buffers, epoch))?
            }
        };
        self.appended.send_modify(|count| *count = count.wrapping_add(1));
        self.refresh_leader_high_watermark();
        Ok((info, epoch))
    }

    /// Waits until the HW reaches `target` (acks=all), at most `timeout`,
    /// for records appended while leading at `leader_epoch`. Answers
    /// LeadershipChanged if this replica stops leading at that epoch first:
    /// the HW it then holds is another leader's, whose log may hold other
    /// records at those offsets, so reaching it proves nothing about ours.
    ///
    /// When the HW reaches `target` while the ISR is smaller than
    /// `min_insync_replicas` (it shrank while the request waited), the
    /// records have fewer copies than promised: NotEnoughReplicasAfterAppend
    /// (retriable, as Kafka's `NOT_ENOUGH_REPLICAS_AFTER_APPEND`).
    pub async fn wait_for_high_watermark(
        &self,
        target: Offset,
        leader_epoch: LeaderEpoch,
        min_insync_replicas: u32,
        timeout: Duration,
    ) -> Result<(), ReplicaError> {
        let mut high_watermark = self.high_watermark.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                // The HW first, then the role: the HW seen was reached while
                // (at least) leading at this epoch, as roles never come back.
                let reached = *high_watermark.borrow_and_update() >= target;
                if !self.leads_at(leader_epoch) {
                    return Err(ReplicaError::LeadershipChanged {
                        partition: self.partition.clone(),
                        leader_epoch,
                        target,
                    });
                }
                if reached {
                    return self.check_min_insync(min_insync_replicas);
                }
                if high_watermark.changed().await.is_err() {
                    return Err(ReplicaError::Closed { partition: self.partition.clone() });
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(ReplicaError::RequestTimedOut {
                partition: self.partition.clone(),
                waited: timeout,
                high_watermark: self.high_watermark(),
                target,
            })
        })
    }

    /// Whether the ISR (as the metadata shows it) still has
    /// `min_insync_replicas` members.
    fn check_min_insync(&self, min_insync_replicas: u32) -> Result<(), ReplicaError> {
        let isr = self.state().role.isr.len() as u32;
        if isr >= min_insync_replicas {
            return Ok(());
        }
        Err(ReplicaError::NotEnoughReplicasAfterAppend { partition: self.partition.clone(), isr, min_insync_replicas })
    }

    /// Reads whole batches from `offset`, up to about `max_bytes`, below
    /// the HW (what consumers see).
    ///
    /// With `current_leader_epoch` (KIP-320: the epoch of the leadership
    /// the consumer's metadata names), a replica at another epoch refuses
    /// before it looks at the offset: an older one in the request is
    /// FencedLeaderEpoch (the consumer refreshes its metadata), a newer one
    /// UnknownLeaderEpoch (this broker has not heard of it: a deposed
    /// leader that does not know yet, whose log end may lie below what the
    /// consumer already read). So a consumer never takes a stale leader's
    /// out-of-range answer for its own and resets past records.
    pub async fn read(
        self: &Arc<Self>,
        offset: Offset,
        max_bytes: u64,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> Result<FetchedRecords, ReplicaError> {
        if let Some(requested) = current_leader_epoch {
            self.check_leader_epoch(requested)?;
        }
        let high_watermark = self.high_watermark();
        self.read_below(offset, max_bytes, high_watermark).await
    }

    /// [`Replica::read`], with the batches left in the segment files: the
    /// same checks and bounds, for a transport that sends them with
    /// `sendfile`. The ranges lie below the HW, which a truncation never
    /// cuts.
    pub async fn read_ranges(
        self: &Arc<Self>,
        offset: Offset,
        max_bytes: u64,
        current_leader_epoch: Option<LeaderEpoch>,
    ) -> Result<FetchedRanges, ReplicaError> {
        if let Some(requested) = current_leader_epoch {
            self.check_leader_epoch(requested)?;
        }
        let high_watermark = self.high_watermark();
        self.blocking(move |replica| {
            let read = replica.read_log(offset, max_bytes, high_watermark)?;
            Ok(FetchedRanges {
                ranges: read.ranges,
                next_offset: read.next_offset,
                high_watermark,
                log_start_offset: read.log_start_offset,
            })
        })
        .await
    }

    /// Whether a client's idea of the current leader epoch is this
    /// replica's (see [`Replica::read`]).
    pub fn check_leader_epoch(&self, requested: LeaderEpoch) -> Result<(), ReplicaError> {
        let current = self.role_epoch();
        let partition = self.partition.clone();
        match requested.cmp(&current) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(ReplicaError::FencedLeaderEpoch { partition, requested, current }),
            std::cmp::Ordering::Greater => Err(ReplicaError::UnknownLeaderEpoch { partition, requested, current }),
        }
    }

    /// Reads whole batches from `offset` up to the log end (what followers
    /// copy).
    pub(crate) async fn read_for_follower(
        self: &Arc<Self>,
        offset: Offset,
        max_bytes: u64,
    ) -> Result<FetchedRecords, ReplicaError> {
        let log_end = self.log_end_offset();
        self.read_below(offset, max_bytes, log_end).await
    }

    async fn read_below(
        self: &Arc<Self>,
        offset: Offset,
        max_bytes: u64,
        upto: Offset,
    ) -> Result<FetchedRecords, ReplicaError> {
        let high_watermark = self.high_watermark();
        self.blocking(move |replica| {
            let read = replica.read_log(offset, max_bytes, upto)?;
            let records = read.to_bytes().map_err(|error| replica.storage_error(error))?;
            Ok(FetchedRecords {
                records,
                next_offset: read.next_offset,
                high_watermark,
                log_start_offset: read.log_start_offset,
            })
        })
        .await
    }

    /// The log's read of whole batches from `offset` below `upto`; empty
    /// from `upto` to the log end. Blocking (index lookups).
    fn read_log(&self, offset: Offset, max_bytes: u64, upto: Offset) -> Result<brook_storage::LogRead, ReplicaError> {
        let read = match self.reader.read(offset, max_bytes, upto) {
            Ok(read) => read,
            Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) => {
                return Err(self.out_of_range(offset, log_start_offset, upto))
            }
            Err(error) => return Err(self.storage_error(error)),
        };
        // Between `upto` and the log end (a consumer ahead of the HW, as
        // after a failover to a leader whose HW is still catching up) is
        // not out of range: the answer is empty and the consumer waits, as
        // Kafka answers. Only offsets outside the log are out of range.
        Ok(read)
    }

    fn out_of_range(&self, requested: Offset, log_start_offset: Offset, high_watermark: Offset) -> ReplicaError {
        ReplicaError::OffsetOutOfRange {
            partition: self.partition.clone(),
            requested,
            log_start_offset,
            high_watermark,
        }
    }

    /// Refuses a follower whose partition is another topic of the same name
    /// (deleted and created again), or whose idea of the leader epoch is
    /// not this leader's: its progress would be measured against another
    /// log.
    pub fn check_follower(&self, topic_id: TopicId, leader_epoch: LeaderEpoch) -> Result<(), ReplicaError> {
        if topic_id != self.topic_id {
            return Err(ReplicaError::UnknownTopicId {
                partition: self.partition.clone(),
                requested: topic_id,
                current: self.topic_id,
            });
        }
        let current = self.role_epoch();
        if leader_epoch != current {
            return Err(ReplicaError::FencedLeaderEpoch {
                partition: self.partition.clone(),
                requested: leader_epoch,
                current,
            });
        }
        Ok(())
    }

    /// Leader side: serves one partition of a replica fetch from
    /// `follower`, sent by its incarnation of epoch `follower_epoch` (the
    /// transport's to check against the metadata; carried into an
    /// expansion). Its fetch offset tells how far it is (which moves the
    /// HW); the answer is every batch from there up to the log end. When
    /// the follower is out of the ISR but has caught up, also the
    /// expansion to propose (at most one ISR change in flight).
    pub async fn serve_follower_fetch(
        self: &Arc<Self>,
        follower: BrokerId,
        follower_epoch: u64,
        fetch: &PartitionFetch,
        max_bytes: u64,
    ) -> Result<(FetchedRecords, Option<IsrProposal>), ReplicaError> {
        self.check_follower(fetch.topic_id, fetch.leader_epoch)?;
        let proposal = self.record_follower_fetch(follower, follower_epoch, fetch.fetch_offset);
        let fetched = self.read_for_follower(fetch.fetch_offset, max_bytes).await?;
        Ok((fetched, proposal))
    }

    /// Leader side: a follower fetched from `fetch_offset`. Updates the HW;
    /// when the follower is out of the ISR but has caught up, starts its
    /// expansion (counted by the HW from now on) and returns the proposal.
    fn record_follower_fetch(
        &self,
        follower: BrokerId,
        follower_epoch: u64,
        fetch_offset: Offset,
    ) -> Option<IsrProposal> {
        let proposal = {
            let mut state = self.state();
            let log_end = self.log_end_offset();
            state.progress.record_fetch(follower, fetch_offset, log_end, now());
            let eligible = !state.role.unavailable.contains(&follower);
            if state.role.leads() && eligible && caught_up(fetch_offset, log_end) {
                let joining = Some((follower, follower_epoch));
                state.isr.start_expand(follower).map(|isr| self.proposal(&state.role, isr, joining))
            } else {
                None
            }
        };
        self.refresh_leader_high_watermark();
        proposal
    }

    fn proposal(&self, role: &Role, isr: Vec<BrokerId>, joining: Option<(BrokerId, u64)>) -> IsrProposal {
        IsrProposal {
            partition: self.partition.clone(),
            topic_id: self.topic_id,
            leader_epoch: role.leader_epoch,
            partition_epoch: role.partition_epoch,
            isr,
            joining,
        }
    }

    /// Leader side: the answer to the ISR change proposed at `leader_epoch`
    /// (`None`: no definite answer). Ignored when this replica no longer
    /// leads at that epoch.
    pub fn isr_change_settled(&self, leader_epoch: LeaderEpoch, outcome: Option<IsrChangeOutcome>) {
        let mut state = self.state();
        if state.role.leader_epoch != leader_epoch || !state.role.leads() {
            return;
        }
        state.isr.settle(outcome);
        drop(state);
        self.refresh_leader_high_watermark();
    }

    /// Leader side: when ISR followers have not caught up for longer than
    /// `replica_lag_max`, the shrink to propose (at most one ISR change in
    /// flight).
    pub fn lagging_followers(&self, replica_lag_max: Duration) -> Option<IsrProposal> {
        let mut state = self.state();
        if !state.role.leads() || state.isr.pending().is_some() {
            return None;
        }
        let (me, committed) = (state.role.broker_id, state.isr.committed().to_vec());
        let lagging = state.progress.lagging(me, &committed, now(), replica_lag_max);
        let isr = state.isr.start_shrink(lagging)?;
        Some(self.proposal(&state.role, isr, None))
    }

    /// Follower side: appends batches fetched from the leader, as they are.
    pub async fn append_replicated(self: &Arc<Self>, records: Bytes) -> Result<AppendInfo, ReplicaError> {
        let info = self.blocking(move |replica| replica.with_log(|log| log.append_replicated(&records))).await?;
        self.appended.send_modify(|count| *count = count.wrapping_add(1));
        Ok(info)
    }

    /// Follower side: the leader's HW, capped at what this replica has.
    pub fn set_follower_high_watermark(&self, leader_high_watermark: Offset) {
        let high_watermark = leader_high_watermark.min(self.log_end_offset());
        self.high_watermark.send_if_modified(|current| {
            let changed = *current != high_watermark;
            *current = high_watermark;
            changed
        });
    }

    /// Follower side: whether this log still needs checking against the
    /// leader for the current epoch.
    pub fn needs_verification(&self) -> bool {
        let state = self.state();
        state.verified_epoch != Some(state.role.leader_epoch)
    }

    pub fn mark_verified(&self, leader_epoch: LeaderEpoch) {
        self.state().verified_epoch = Some(leader_epoch);
    }

    /// Forces a new check against the leader before the next fetch.
    pub fn mark_unverified(&self) {
        self.state().verified_epoch = None;
    }

    /// The newest leader epoch this log holds records of. Never waits on
    /// the log's writer (an append may be in an fsync): called on async
    /// workers.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.reader.latest_epoch()
    }

    /// Where `epoch` ends on this log, with the epoch found (the largest at
    /// or below it). Never waits on the log's writer.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.reader.end_offset_for_epoch(epoch)
    }

    /// Leader side: the answer to a follower's "where does `epoch` end on
    /// your log?" (the log start when this log knows no epoch at or below it).
    pub fn epoch_end(&self, epoch: LeaderEpoch) -> LeaderEpochEnd {
        match self.end_offset_for_epoch(epoch) {
            Some((found, end_offset)) => LeaderEpochEnd { epoch: Some(found), end_offset },
            None => LeaderEpochEnd { epoch: None, end_offset: self.log_start_offset() },
        }
    }

    /// Follower side: cuts what diverged from the leader. Blocking I/O on
    /// the blocking pool.
    pub async fn truncate_to(self: &Arc<Self>, offset: Offset) -> Result<Offset, ReplicaError> {
        let new_end = self.blocking(move |replica| replica.with_log(|log| log.truncate_to(offset))).await?;
        tracing::warn!(partition = %self.partition, log_end_offset = %new_end, "truncated a diverged log tail after a leader change");
        self.set_follower_high_watermark(self.high_watermark());
        Ok(new_end)
    }

    /// Follower side: empties the log and restarts it at `offset`, the
    /// leader's log start, when everything this replica lacks is gone
    /// from the leader (Kafka's `truncateFullyAndStartAt`). Nothing below
    /// it exists any more, so the HW starts there too.
    pub async fn truncate_fully_and_start_at(self: &Arc<Self>, offset: Offset) -> Result<(), ReplicaError> {
        self.blocking(move |replica| replica.with_log(|log| log.truncate_fully_and_start_at(offset))).await?;
        self.high_watermark.send_replace(offset);
        tracing::warn!(partition = %self.partition, log_start_offset = %offset, "behind the leader's log start: restarted the log there");
        Ok(())
    }

    /// The first offset at or after `timestamp_ms` below the HW, with its
    /// timestamp.
    pub async fn offset_for_timestamp(
        self: &Arc<Self>,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, ReplicaError> {
        let high_watermark = self.high_watermark();
        self.blocking(move |replica| {
            let found = replica.reader.offset_for_timestamp(timestamp_ms).map_err(|e| replica.storage_error(e))?;
            Ok(found.filter(|(offset, _)| *offset < high_watermark))
        })
        .await
    }

    /// The idempotent producers that appended to this replica (as leader
    /// or follower) at or after `since_ms`, on this broker's clock.
    /// Blocking.
    pub fn producers_appended_since(&self, since_ms: i64) -> Result<Vec<i64>, ReplicaError> {
        self.with_log(|log| Ok(log.producers_appended_since(since_ms)))
    }

    /// Retention (never at or above the HW) and time-based flushes.
    /// Blocking.
    pub fn maintain(&self, now_ms: i64) -> Result<(), ReplicaError> {
        let high_watermark = self.high_watermark();
        self.with_log(|log| {
            log.apply_retention(now_ms, high_watermark)?;
            log.flush_if_due()?;
            Ok(())
        })
    }

    /// fsyncs the segments rolled since the last call, outside the log's
    /// lock so appends go on meanwhile, and moves the recovery point past
    /// them: a restart after kill -9 then reads through only the active
    /// segment, however much closed log the partition holds. Blocking.
    pub fn flush_rolled_segments(&self) -> Result<(), ReplicaError> {
        while let Some((pending, before)) =
            self.with_log(|log| Ok(log.sealed_flush().map(|p| (p, log.recovery_point()))))?
        {
            pending.run().map_err(|error| self.storage_error(error))?;
            let after = self.with_log(|log| log.finish_flush(&pending).map(|()| log.recovery_point()))?;
            if after <= before {
                // Cut or deleted meanwhile: the next pass looks again.
                break;
            }
        }
        Ok(())
    }

    /// Writes the HW to its checkpoint if it moved since the last one.
    /// Blocking (a small file write, no fsync).
    pub fn checkpoint_high_watermark(&self) -> Result<(), ReplicaError> {
        let high_watermark = self.high_watermark();
        let mut checkpointed = self.checkpointed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *checkpointed == Some(high_watermark) {
            return Ok(());
        }
        self.with_log(|log| log.checkpoint_high_watermark(high_watermark))?;
        *checkpointed = Some(high_watermark);
        Ok(())
    }

    /// Closes the log cleanly (HW checkpoint, flush, clean-shutdown
    /// marker). Blocking.
    pub fn close(&self) -> Result<(), ReplicaError> {
        let high_watermark = self.high_watermark();
        let log = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match log {
            Some(log) => {
                log.checkpoint_high_watermark(high_watermark).map_err(|error| self.storage_error(error))?;
                log.close().map_err(|error| self.storage_error(error))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
