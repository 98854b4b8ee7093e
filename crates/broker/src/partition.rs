//! One partition replica on this broker: its log, its role (leader or
//! follower, at which epoch, with which ISR), the high watermark (HW) and
//! the watch that wakes waiting fetches and acks=all produces.
//!
//! The log's writer sits behind a `std::sync::Mutex` that is only ever
//! locked inside `spawn_blocking`, so file I/O never runs on an async
//! worker and no lock is held across an `.await`. Reads go through the
//! log's lock-free `LogReader`, also on the blocking pool.
//!
//! The HW: on the leader, the lowest LEO over the ISR and the followers
//! proposed into it whose addition this broker's metadata does not show
//! yet (`brook-replication`), moved by its own appends and by followers'
//! fetches; on a follower, the leader's HW as of its last fetch, capped at
//! its own LEO. Alone in its ISR (a single node, RF 1), a leader's HW is
//! its LEO. An acks=all wait counts only while this replica still leads at
//! the epoch it appended under: after a leader change the HW it holds is
//! the new leader's, over records that may differ. The HW is
//! checkpointed beside the log whenever it moved (checked every 500 ms)
//! and at close; a restarted replica starts from that checkpoint (never
//! from its log end, which may hold records no other replica has), so a
//! restart never exposes records above the HW.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_record::{LeaderEpoch, Offset, TopicId};
use brook_replication::LeaderProgress;
use brook_storage::{AppendInfo, LogConfig, LogReader, PartitionLog, StorageError};
use bytes::Bytes;
use tokio::sync::watch;

use crate::error::BrokerError;

/// This replica's place in its partition, as the cluster decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// This broker.
    pub broker_id: u32,
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    pub isr: Vec<u32>,
}

impl Role {
    pub fn leads(&self) -> bool {
        self.leader == Some(self.broker_id)
    }
}

#[derive(Debug)]
struct Replication {
    role: Role,
    /// Leader side: followers' progress.
    progress: LeaderProgress,
    /// Follower side: the leader epoch up to which this log was checked
    /// against the leader (truncated where it diverged); `None`: not yet.
    verified_epoch: Option<u32>,
    /// Leader side: an ISR change was proposed and has no answer yet.
    isr_change_in_flight: bool,
    /// Leader side: followers proposed into the ISR, with the metadata log
    /// index their addition committed at (`None`: not known yet). The HW
    /// counts them as ISR members (Kafka's "maximal ISR") until this
    /// broker's metadata has applied that index: the controller may already
    /// list them, so it may elect them, so they must never lack an
    /// acknowledged record.
    joining: BTreeMap<u32, Option<u64>>,
    /// The metadata log index the current role was read at.
    applied_index: u64,
}

impl Replication {
    /// The members whose progress bounds the HW: the ISR and the joining.
    fn high_watermark_members(&self) -> Vec<u32> {
        let mut members = self.role.isr.clone();
        members.extend(self.joining.keys().filter(|member| !self.role.isr.contains(member)));
        members
    }

    /// Forgets joining members whose addition this broker's metadata now
    /// reflects (the ISR in `role` is then the whole truth about them).
    fn settle_joining(&mut self) {
        let applied = self.applied_index;
        self.joining.retain(|_, committed_at| committed_at.is_none_or(|index| index > applied));
    }
}

/// How a proposed ISR change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsrChangeOutcome {
    /// Committed at this metadata log index.
    Committed(u64),
    /// The controller refused it: it never takes effect.
    Refused,
}

#[derive(Debug)]
pub struct Partition {
    topic: String,
    topic_id: TopicId,
    partition: u32,
    /// The log's directory.
    dir: std::path::PathBuf,
    /// `None` once closed (shutdown or topic deletion).
    log: Mutex<Option<PartitionLog>>,
    reader: LogReader,
    high_watermark: watch::Sender<Offset>,
    /// The epoch this broker stamps into batches while it leads.
    leader_epoch: AtomicU32,
    replication: Mutex<Replication>,
    /// Bumped on every append on this broker: replica fetches wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// The HW last written to the checkpoint file.
    checkpointed: Mutex<Option<Offset>>,
}

/// A fetch's answer.
#[derive(Debug)]
pub struct FetchedRecords {
    pub records: Bytes,
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

impl Partition {
    /// Opens (recovering if needed) the log in `dir`. Blocking.
    pub fn open(
        topic: &str,
        topic_id: TopicId,
        partition: u32,
        dir: std::path::PathBuf,
        config: LogConfig,
        role: Role,
        appended: Arc<watch::Sender<u64>>,
    ) -> Result<Partition, BrokerError> {
        let storage_error = |source| BrokerError::Storage { topic: topic.to_string(), partition, source };
        let log = PartitionLog::open(dir.clone(), config).map_err(storage_error)?;
        for truncation in log.truncations_on_open() {
            tracing::warn!(topic, partition, ?truncation, "recovery cut a damaged log tail");
        }
        let reader = log.reader();
        // Without a checkpoint, nothing is known to be committed: the HW
        // starts at the log start and rises as the ISR reports (a leader
        // alone in its ISR, below, commits everything at once).
        let start_high_watermark = log.checkpointed_high_watermark().unwrap_or_else(|| log.log_start_offset());
        let (high_watermark, _) = watch::channel(start_high_watermark);
        let partition = Partition {
            topic: topic.to_string(),
            topic_id,
            partition,
            dir,
            log: Mutex::new(Some(log)),
            reader,
            high_watermark,
            leader_epoch: AtomicU32::new(role.leader_epoch),
            replication: Mutex::new(Replication {
                role,
                progress: LeaderProgress::new(start_high_watermark),
                verified_epoch: None,
                isr_change_in_flight: false,
                joining: BTreeMap::new(),
                applied_index: 0,
            }),
            appended,
            checkpointed: Mutex::new(None),
        };
        // A leader alone in its ISR has everything committed at once.
        partition.refresh_leader_high_watermark();
        Ok(partition)
    }

    fn replication(&self) -> std::sync::MutexGuard<'_, Replication> {
        self.replication.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the cluster's decision for this partition, as read from the
    /// metadata at log index `applied_index`.
    pub fn set_role(&self, role: Role, applied_index: u64) {
        self.leader_epoch.fetch_max(role.leader_epoch, Ordering::AcqRel);
        let mut replication = self.replication();
        replication.applied_index = replication.applied_index.max(applied_index);
        if replication.role == role {
            replication.settle_joining();
            drop(replication);
            self.refresh_leader_high_watermark();
            return;
        }
        let leadership_changed =
            role.leads() != replication.role.leads() || replication.role.leader_epoch != role.leader_epoch;
        if leadership_changed {
            replication.progress = LeaderProgress::new(*self.high_watermark.borrow());
            replication.verified_epoch = None;
            // Proposals made at the old epoch are refused by the controller.
            replication.joining.clear();
            replication.isr_change_in_flight = false;
        }
        replication.role = role;
        replication.settle_joining();
        drop(replication);
        if leadership_changed {
            // Wake acks=all waits so they see they lost (or cannot use) the
            // leadership, at the epoch, they appended under.
            self.high_watermark.send_modify(|_| {});
        }
        self.refresh_leader_high_watermark();
    }

    /// Whether this replica leads at `leader_epoch` right now.
    pub fn leads_at(&self, leader_epoch: u32) -> bool {
        let replication = self.replication();
        replication.role.leads() && replication.role.leader_epoch == leader_epoch
    }

    /// The leader epoch of this replica's role as last set.
    pub fn role_epoch(&self) -> u32 {
        self.replication().role.leader_epoch
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn topic_id(&self) -> TopicId {
        self.topic_id
    }

    /// Where the log's files are.
    pub fn dir(&self) -> &std::path::Path {
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

    fn map_storage_error(&self, source: StorageError) -> BrokerError {
        let (topic, partition) = (self.topic.clone(), self.partition);
        match source {
            StorageError::InvalidBatch { source: brook_record::RecordError::TooLarge { .. }, .. } => {
                BrokerError::BatchTooLarge { topic, partition, source }
            }
            StorageError::InvalidBatch { .. } | StorageError::EmptyAppend => {
                BrokerError::InvalidBatch { topic, partition, source }
            }
            source => BrokerError::Storage { topic, partition, source },
        }
    }

    fn with_log<T>(&self, work: impl FnOnce(&mut PartitionLog) -> Result<T, StorageError>) -> Result<T, BrokerError> {
        // A poisoned lock means an append panicked; the log itself is only
        // changed through its own methods, which keep it consistent.
        let mut guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = guard.as_mut().ok_or(BrokerError::ShuttingDown)?;
        work(log).map_err(|error| self.map_storage_error(error))
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Partition) -> Result<T, BrokerError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let partition = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&partition)).await.map_err(|_| BrokerError::ShuttingDown)?
    }

    /// On the leader: the HW from the ISR's progress.
    fn refresh_leader_high_watermark(&self) {
        let mut replication = self.replication();
        if !replication.role.leads() {
            return;
        }
        let (me, members) = (replication.role.broker_id, replication.high_watermark_members());
        let high_watermark = replication.progress.update(me, self.log_end_offset(), &members);
        drop(replication);
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
    pub async fn append(self: &Arc<Self>, records: Bytes) -> Result<(AppendInfo, u32), BrokerError> {
        self.append_pieces(vec![records]).await
    }

    /// `append` of batches that came as separate pieces, each holding whole
    /// batches: one append, in order, no copy of the pieces.
    pub async fn append_pieces(self: &Arc<Self>, pieces: Vec<Bytes>) -> Result<(AppendInfo, u32), BrokerError> {
        self.blocking(move |partition| partition.append_pieces_blocking(pieces)).await
    }

    /// `append_pieces` for a caller already on the blocking pool (one task
    /// appending to several partitions). One buffer is stamped in place
    /// when it is ours alone; a shared one (a slice of the transport's
    /// buffer) and several pieces are written beside small stamped copies
    /// of their batch headers.
    pub fn append_pieces_blocking(&self, pieces: Vec<Bytes>) -> Result<(AppendInfo, u32), BrokerError> {
        let epoch = LeaderEpoch(self.leader_epoch.load(Ordering::Acquire));
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
        Ok((info, epoch.0))
    }

    /// Waits until the HW reaches `target` (acks=all), at most `timeout`,
    /// for records appended while leading at `leader_epoch`. Answers
    /// NOT_LEADER if this replica stops leading at that epoch first: the HW
    /// it then holds is another leader's, whose log may hold other records
    /// at those offsets, so reaching it proves nothing about ours.
    pub async fn wait_for_high_watermark(
        &self,
        target: Offset,
        leader_epoch: u32,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let mut high_watermark = self.high_watermark.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                // The HW first, then the role: the HW seen was reached while
                // (at least) leading at this epoch, as roles never come back.
                let reached = *high_watermark.borrow_and_update() >= target;
                if !self.leads_at(leader_epoch) {
                    return Err(BrokerError::LeadershipChanged {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        leader_epoch,
                        target,
                    });
                }
                if reached {
                    return Ok(());
                }
                if high_watermark.changed().await.is_err() {
                    return Err(BrokerError::ShuttingDown);
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            Err(BrokerError::RequestTimedOut {
                topic: self.topic.clone(),
                partition: self.partition,
                waited: timeout,
                high_watermark: self.high_watermark(),
                target,
            })
        })
    }

    /// Reads whole batches from `offset`, up to about `max_bytes`, below
    /// the HW (what consumers see).
    pub async fn read(self: &Arc<Self>, offset: i64, max_bytes: u64) -> Result<FetchedRecords, BrokerError> {
        let high_watermark = self.high_watermark();
        self.read_below(offset, max_bytes, high_watermark).await
    }

    /// Reads whole batches from `offset` up to the log end (what followers
    /// copy).
    pub async fn read_for_follower(
        self: &Arc<Self>,
        offset: i64,
        max_bytes: u64,
    ) -> Result<FetchedRecords, BrokerError> {
        let log_end = self.log_end_offset();
        self.read_below(offset, max_bytes, log_end).await
    }

    async fn read_below(
        self: &Arc<Self>,
        offset: i64,
        max_bytes: u64,
        upto: Offset,
    ) -> Result<FetchedRecords, BrokerError> {
        let high_watermark = self.high_watermark();
        self.blocking(move |partition| {
            let read = partition.read_log(offset, max_bytes, upto)?;
            let records = read.to_bytes().map_err(|error| partition.map_storage_error(error))?;
            Ok(FetchedRecords {
                records,
                next_offset: read.next_offset,
                high_watermark,
                log_start_offset: read.log_start_offset,
            })
        })
        .await
    }

    /// The log's read of whole batches from `offset` below `upto`. Blocking
    /// (index lookups).
    fn read_log(&self, offset: i64, max_bytes: u64, upto: Offset) -> Result<brook_storage::LogRead, BrokerError> {
        let requested = u64::try_from(offset)
            .map_err(|_| BrokerError::InvalidRequest(format!("fetch offset {offset} is negative")))?;
        let read = match self.reader.read(Offset(requested), max_bytes, upto) {
            Ok(read) => read,
            Err(StorageError::OffsetOutOfRange { log_start_offset, .. }) => {
                return Err(self.out_of_range(offset, log_start_offset, upto))
            }
            Err(error) => return Err(self.map_storage_error(error)),
        };
        if Offset(requested) > upto {
            return Err(self.out_of_range(offset, read.log_start_offset, upto));
        }
        Ok(read)
    }

    fn out_of_range(&self, requested: i64, log_start_offset: Offset, high_watermark: Offset) -> BrokerError {
        BrokerError::OffsetOutOfRange {
            topic: self.topic.clone(),
            partition: self.partition,
            requested,
            log_start_offset,
            high_watermark,
        }
    }

    /// Leader side: a follower fetched from `fetch_offset`. Updates the HW;
    /// when the follower is out of the ISR but has caught up, marks it as
    /// joining and returns the role to propose adding it in (at most one
    /// ISR change in flight).
    pub fn record_follower_fetch(&self, follower: u32, fetch_offset: Offset) -> Option<Role> {
        let rejoin = {
            let mut replication = self.replication();
            let log_end = self.log_end_offset();
            replication.progress.record_fetch(follower, fetch_offset, log_end, Instant::now());
            let rejoin = replication.role.leads()
                && !replication.role.isr.contains(&follower)
                && !replication.isr_change_in_flight
                && brook_replication::caught_up(fetch_offset, log_end);
            if rejoin {
                replication.isr_change_in_flight = true;
                // Counted by the HW from now on: the controller may list it
                // as soon as the proposal commits.
                replication.joining.insert(follower, None);
            }
            rejoin.then(|| replication.role.clone())
        };
        self.refresh_leader_high_watermark();
        rejoin
    }

    /// Leader side: the answer to an ISR change proposed at `leader_epoch`
    /// (adding `joining`, if it was an expansion). `None`: no answer (the
    /// proposal may still commit); the caller proposes again.
    pub fn isr_change_settled(&self, leader_epoch: u32, joining: Option<u32>, outcome: Option<IsrChangeOutcome>) {
        let mut replication = self.replication();
        if replication.role.leader_epoch != leader_epoch || !replication.role.leads() {
            return;
        }
        replication.isr_change_in_flight = false;
        if let Some(member) = joining {
            match outcome {
                Some(IsrChangeOutcome::Committed(index)) => {
                    replication.joining.insert(member, Some(index));
                }
                Some(IsrChangeOutcome::Refused) => {
                    replication.joining.remove(&member);
                }
                None => {}
            }
        }
        replication.settle_joining();
        drop(replication);
        self.refresh_leader_high_watermark();
    }

    /// Leader side: the ISR followers that have not caught up for longer
    /// than `replica_lag_max`, with the role to propose their removal in
    /// (at most one ISR change in flight).
    pub fn lagging_followers(&self, replica_lag_max: Duration) -> Option<(Role, Vec<u32>)> {
        let mut replication = self.replication();
        if !replication.role.leads() || replication.isr_change_in_flight {
            return None;
        }
        let role = replication.role.clone();
        let lagging = replication.progress.lagging(role.broker_id, &role.isr, Instant::now(), replica_lag_max);
        if lagging.is_empty() {
            return None;
        }
        replication.isr_change_in_flight = true;
        Some((role, lagging))
    }

    /// Follower side: appends batches fetched from the leader, as they are.
    pub async fn append_replicated(self: &Arc<Self>, records: Bytes) -> Result<AppendInfo, BrokerError> {
        let info = self.blocking(move |partition| partition.with_log(|log| log.append_replicated(&records))).await?;
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
        let replication = self.replication();
        replication.verified_epoch != Some(replication.role.leader_epoch)
    }

    /// The newest leader epoch this log holds records of.
    pub fn latest_epoch(&self) -> Option<u32> {
        let guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().and_then(|log| log.latest_epoch()).map(|epoch| epoch.0)
    }

    pub fn mark_verified(&self, leader_epoch: u32) {
        self.replication().verified_epoch = Some(leader_epoch);
    }

    /// Forces a new check against the leader before the next fetch.
    pub fn mark_unverified(&self) {
        self.replication().verified_epoch = None;
    }

    /// Follower side: cuts what diverged from the leader. Blocking I/O on
    /// the blocking pool.
    pub async fn truncate_to(self: &Arc<Self>, offset: Offset) -> Result<Offset, BrokerError> {
        let new_end = self.blocking(move |partition| partition.with_log(|log| log.truncate_to(offset))).await?;
        tracing::warn!(topic = %self.topic, partition = self.partition, log_end_offset = %new_end, "truncated a diverged log tail after a leader change");
        self.set_follower_high_watermark(self.high_watermark());
        Ok(new_end)
    }

    /// Leader side: where `epoch` ends on this log (for a follower's
    /// truncation), with the epoch found.
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, Offset)> {
        let guard = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref()?.end_offset_for_epoch(LeaderEpoch(epoch)).map(|(epoch, end)| (epoch.0, end))
    }

    /// The first offset at or after `timestamp_ms` below the HW, with its
    /// timestamp.
    pub async fn offset_for_timestamp(
        self: &Arc<Self>,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, BrokerError> {
        let high_watermark = self.high_watermark();
        self.blocking(move |partition| {
            let found =
                partition.reader.offset_for_timestamp(timestamp_ms).map_err(|e| partition.map_storage_error(e))?;
            Ok(found.filter(|(offset, _)| *offset < high_watermark))
        })
        .await
    }

    /// Retention and time-based flushes. Blocking.
    pub fn maintain(&self, now_ms: i64) -> Result<(), BrokerError> {
        self.with_log(|log| {
            log.apply_retention(now_ms)?;
            log.flush_if_due()?;
            Ok(())
        })
    }

    /// Writes the HW to its checkpoint if it moved since the last one.
    /// Blocking (a small file write, no fsync).
    pub fn checkpoint_high_watermark(&self) -> Result<(), BrokerError> {
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
    pub fn close(&self) -> Result<(), BrokerError> {
        let high_watermark = self.high_watermark();
        let log = self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match log {
            Some(log) => {
                log.checkpoint_high_watermark(high_watermark).map_err(|error| self.map_storage_error(error))?;
                log.close().map_err(|error| self.map_storage_error(error))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use brook_record::{BatchBuilder, NewRecord};

    use super::*;

    fn batch(records: usize) -> Bytes {
        let mut builder = BatchBuilder::new(1024);
        for _ in 0..records {
            builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(b"v"), headers: &[] });
        }
        builder.finish()
    }

    fn leader(epoch: u32, isr: Vec<u32>) -> Role {
        Role { broker_id: 1, leader: Some(1), leader_epoch: epoch, isr }
    }

    fn open(dir: &tempfile::TempDir, role: Role) -> Arc<Partition> {
        let appended = Arc::new(watch::channel(0).0);
        let partition =
            Partition::open("t", TopicId::random(), 0, dir.path().join("t-0"), LogConfig::default(), role, appended);
        Arc::new(partition.expect("open"))
    }

    #[tokio::test]
    async fn an_acks_all_wait_fails_when_leadership_moves_even_if_the_new_leaders_hw_passes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(&dir, leader(1, vec![1, 2]));
        let (info, epoch) = partition.append(batch(3)).await.expect("append");
        assert_eq!((info.last_offset, epoch), (Offset(2), 1));
        let waiting = {
            let partition = Arc::clone(&partition);
            tokio::spawn(async move { partition.wait_for_high_watermark(Offset(3), 1, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        // Broker 2 takes over at epoch 2 and this replica follows it; the
        // new leader's HW passes offset 3, but its records there are its own.
        partition.set_role(Role { broker_id: 1, leader: Some(2), leader_epoch: 2, isr: vec![2] }, 9);
        partition.set_follower_high_watermark(Offset(10));
        assert_eq!(partition.high_watermark(), Offset(3));
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("answered").expect("joined");
        assert!(matches!(answer, Err(BrokerError::LeadershipChanged { leader_epoch: 1, .. })), "{answer:?}");
    }

    #[tokio::test]
    async fn a_follower_proposed_into_the_isr_holds_the_hw_until_the_metadata_shows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(&dir, leader(0, vec![1]));
        partition.set_role(leader(0, vec![1]), 1);
        partition.append(batch(10)).await.expect("append");
        assert_eq!(partition.high_watermark(), Offset(10), "alone in the ISR");
        let role = partition.record_follower_fetch(2, Offset(10)).expect("caught up: propose it");
        assert_eq!(role.isr, vec![1]);
        assert!(partition.record_follower_fetch(2, Offset(10)).is_none(), "one change in flight");
        partition.append(batch(5)).await.expect("append");
        assert_eq!(partition.high_watermark(), Offset(10), "the joining follower counts at once");
        partition.record_follower_fetch(2, Offset(15));
        assert_eq!(partition.high_watermark(), Offset(15));
        // Committed at index 7; this broker's metadata is still at 5.
        partition.isr_change_settled(0, Some(2), Some(IsrChangeOutcome::Committed(7)));
        partition.set_role(leader(0, vec![1]), 5);
        partition.append(batch(5)).await.expect("append");
        assert_eq!(partition.high_watermark(), Offset(15), "still counted");
        // Index 7 applied, and broker 2 already left again (it died): now
        // the ISR alone decides.
        partition.set_role(leader(0, vec![1]), 8);
        assert_eq!(partition.high_watermark(), Offset(20));
    }

    #[tokio::test]
    async fn a_refused_expansion_stops_counting_the_follower() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partition = open(&dir, leader(0, vec![1]));
        partition.append(batch(4)).await.expect("append");
        partition.record_follower_fetch(2, Offset(4)).expect("propose");
        partition.append(batch(4)).await.expect("append");
        assert_eq!(partition.high_watermark(), Offset(4));
        partition.isr_change_settled(0, Some(2), Some(IsrChangeOutcome::Refused));
        assert_eq!(partition.high_watermark(), Offset(8));
    }
}
