//! The consumer: assigned partitions, pipelined fetches, decoded records.
//!
//! Every assigned partition keeps one fetch in flight: as soon as a fetch
//! answers, the next one (from its `next_offset`) is sent, before the
//! records are handed to `poll`'s caller, so processing and the network
//! overlap and a caught-up consumer waits in the broker's long poll rather
//! than in round trips.
//!
//! Positions: `fetch_position` is the next offset to fetch; the consumed
//! position (what `commit` stores) is the offset after the last record
//! `poll` returned. With a `group_id`, a partition starts at the group's
//! committed offset, else at `auto_offset_reset`.
//!
//! Groups: with a `group_id`, `subscribe` joins the group
//! (`group_member.rs`): the coordinator shares the topics' partitions
//! among the members and moves them incrementally; `poll` applies each
//! new assignment (commit and stop what is revoked, then start what is
//! new; [`ConsumerEvent`]s tell the caller) and, with `enable_auto_commit`
//! (the default), commits the positions of the records earlier polls
//! returned every `auto_commit_interval`, on revocation and on `close`:
//! at-least-once for a caller that processes what `poll` returned before
//! it polls again. Without a `group_id`, `subscribe` takes every
//! partition; `assign` never joins a group (its commits are allowed only
//! while the group has no members).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use brook_proto::v1::groups_client::GroupsClient;
use brook_proto::v1::records_client::RecordsClient;
use brook_proto::v1::{
    CommitOffsetsRequest, FetchOffsetsRequest, FetchRequest, FetchResponse, ListOffsetsRequest, OffsetCommit,
    OffsetForLeaderEpochRequest, OffsetSpec, TopicPartition as WireTopicPartition,
};
mod fetch;

/// A topic and one of its partitions (the one type every crate shares).
pub use brook_record::TopicPartition;
use brook_record::{Batches, ErrorCode, Offset};
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::cluster::{Cluster, MAX_MESSAGE_BYTES};
use crate::error::ClientError;
use crate::group_member::{MemberConfig, Membership};
use crate::record::ConsumerRecord;
use crate::records_call;

/// How often a commit refused for a stale member epoch is tried again
/// (after the next heartbeat answer).
const STALE_EPOCH_RETRIES: u32 = 3;

/// What changed in a group member's partitions (see [`Consumer::take_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// New partitions to consume, from their committed offsets.
    Assigned(Vec<TopicPartition>),
    /// Given up (after committing, with auto-commit) for other members.
    Revoked(Vec<TopicPartition>),
    /// Taken away without a commit: this member's session had ended
    /// (it was paused or cut off); it joined again.
    Lost(Vec<TopicPartition>),
}

/// How long a consumer keeps asking for a partition's offsets while its
/// leader is unreachable or moving.
const LIST_OFFSETS_PATIENCE: Duration = Duration::from_secs(30);

/// Where a partition without a usable position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    Earliest,
    /// Kafka's default: only records produced from now on.
    #[default]
    Latest,
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Beginning,
    End,
    Offset(Offset),
    /// The first record at or after this time (ms); the end if none is.
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Committed offsets are kept under this id. Default none.
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    /// Per fetch request. Default 1 MiB.
    pub fetch_max_bytes: u32,
    /// How long the broker may hold a fetch waiting for data. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// Default 1 byte: answer as soon as anything is there.
    pub fetch_min_bytes: u32,
    /// The most records one `poll` returns. Default 10,000.
    pub max_poll_records: usize,
    /// Records buffered before fetching pauses. Default 100,000.
    pub max_buffered_records: usize,
    /// A group member not heard from for this long is removed and its
    /// partitions go to the others. Default 45 s (Kafka's); at least 1 s.
    pub session_timeout: Duration,
    /// Commit consumed positions every `auto_commit_interval`, on
    /// revocation and on `close`. Default on, with a `group_id`.
    pub enable_auto_commit: bool,
    /// Default 5 s.
    pub auto_commit_interval: Duration,
    /// The server-side assignor the group uses: "uniform" (default) or "range".
    pub group_assignor: String,
    /// Shown by `brook group describe`. Default "brook-client".
    pub client_id: String,
    /// A group member that does not poll for this long leaves the group,
    /// so its partitions go to members that do, and joins again at its
    /// next poll (Kafka's `max.poll.interval.ms`). Default 5 minutes.
    pub max_poll_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_bytes: 1 << 20,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            max_poll_records: 10_000,
            max_buffered_records: 100_000,
            session_timeout: Duration::from_secs(45),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            group_assignor: "uniform".to_string(),
            client_id: "brook-client".to_string(),
            max_poll_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct PartitionState {
    /// The topic name every record of this partition shares.
    topic: Arc<str>,
    /// `None` until resolved (committed offset or reset policy).
    fetch_position: Option<Offset>,
    consumed: Option<Offset>,
    in_flight: bool,
    /// Bumped by seeks, so answers to older fetches are dropped.
    generation: u64,
    /// The leader epoch of the last batch read (what a position check
    /// after a leader change asks about).
    fetched_epoch: Option<u32>,
    /// The leadership (epoch) the position was last checked against.
    checked_at: Option<u32>,
}

/// What a fetch task brought back.
#[derive(Debug)]
enum Fetched {
    Records(FetchResponse),
    /// The new leader's log ends the epoch of the last records read below
    /// the position: it was cut (an unclean election). Go on from here.
    Truncated {
        to: Offset,
    },
}

/// A fetch task's answer: the partition, the generation it was started
/// at, the leadership its position was checked against, and the outcome.
type FetchResult = (TopicPartition, u64, Option<u32>, Result<Fetched, ClientError>);

#[derive(Debug)]
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    buffered: VecDeque<ConsumerRecord>,
    fetches: JoinSet<FetchResult>,
    /// The next partition state's generation: unique over the consumer's
    /// life, so a fetch started for a partition it gave up and got back
    /// is not taken for the new one's.
    next_generation: u64,
    /// The group membership, after `subscribe` with a `group_id`.
    membership: Option<Membership>,
    /// The membership's assignment version last applied.
    applied_version: u64,
    events: VecDeque<ConsumerEvent>,
    last_auto_commit: tokio::time::Instant,
}

impl Consumer {
    pub fn new(cluster: Arc<Cluster>, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster,
            config,
            partitions: BTreeMap::new(),
            buffered: VecDeque::new(),
            fetches: JoinSet::new(),
            next_generation: 0,
            membership: None,
            applied_version: 0,
            events: VecDeque::new(),
            last_auto_commit: tokio::time::Instant::now(),
        }
    }

    fn new_partition_state(&mut self, tp: &TopicPartition) -> PartitionState {
        self.next_generation += 1;
        PartitionState {
            topic: Arc::clone(&tp.topic),
            fetch_position: None,
            consumed: None,
            in_flight: false,
            generation: self.next_generation,
            fetched_epoch: None,
            checked_at: None,
        }
    }

    pub async fn connect(bootstrap: &str, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        Ok(Consumer::new(Cluster::connect(bootstrap).await?, config))
    }

    /// Consumes exactly these partitions (replacing any earlier assignment).
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<(), ClientError> {
        for tp in &partitions {
            let count = self.cluster.partition_count(&tp.topic).await?;
            if tp.partition >= count {
                return Err(ClientError::Broker {
                    code: tonic::Code::NotFound,
                    code_name: Some(ErrorCode::UnknownTopicOrPartition.name().into()),
                    message: format!(
                        "topic '{}' has {count} partitions; partition {} does not exist",
                        tp.topic, tp.partition
                    ),
                });
            }
        }
        self.membership = None;
        self.fetches.abort_all();
        self.buffered.clear();
        self.partitions.clear();
        for tp in partitions {
            let state = self.new_partition_state(&tp);
            self.partitions.insert(tp, state);
        }
        Ok(())
    }

    /// With a `group_id`: joins the group, subscribed to `topics`; `poll`
    /// consumes what the coordinator assigns. Without: consumes every
    /// partition of `topics`.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        if let Some(group_id) = self.config.group_id.clone() {
            if topics.is_empty() {
                return Err(ClientError::InvalidArgument("subscribe to at least one topic".into()));
            }
            self.assign(Vec::new()).await?;
            let config = MemberConfig {
                group_id,
                topics: topics.iter().map(|topic| topic.to_string()).collect(),
                session_timeout: self.config.session_timeout,
                max_poll_interval: self.config.max_poll_interval,
                assignor: self.config.group_assignor.clone(),
                client_id: self.config.client_id.clone(),
            };
            self.membership = Some(Membership::join(Arc::clone(&self.cluster), config));
            self.applied_version = 0;
            return Ok(());
        }
        let mut partitions = Vec::new();
        for topic in topics {
            let count = self.cluster.partition_count(topic).await?;
            partitions.extend((0..count).map(|partition| TopicPartition::new(*topic, partition)));
        }
        self.assign(partitions).await
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The offset of the next record `poll` will return for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.partitions.get(tp).and_then(|state| state.consumed)
    }

    /// Moves `tp` to `to`; records buffered or in flight for it are dropped.
    pub async fn seek(&mut self, tp: &TopicPartition, to: Seek) -> Result<(), ClientError> {
        if !self.partitions.contains_key(tp) {
            return Err(ClientError::InvalidArgument(format!("{}-{} is not assigned", tp.topic, tp.partition)));
        }
        let offset = match to {
            Seek::Offset(offset) => offset,
            Seek::Beginning => self.list_offset(tp, OffsetSpec::Earliest, 0).await?,
            Seek::End => self.list_offset(tp, OffsetSpec::Latest, 0).await?,
            Seek::Timestamp(timestamp_ms) => match self.list_offset(tp, OffsetSpec::Timestamp, timestamp_ms).await {
                Ok(offset) => offset,
                Err(ClientError::InvalidArgument(_)) => self.list_offset(tp, OffsetSpec::Latest, 0).await?,
                Err(error) => return Err(error),
            },
        };
        self.buffered.retain(|record| !(*record.topic == *tp.topic && record.partition == tp.partition));
        let state = self.partitions.get_mut(tp).expect("checked above");
        state.fetch_position = Some(offset);
        state.consumed = Some(offset);
        state.in_flight = false;
        state.generation += 1;
        Ok(())
    }

    async fn list_offset(
        &self,
        tp: &TopicPartition,
        spec: OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<Offset, ClientError> {
        let request = ListOffsetsRequest {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            spec: spec as i32,
            timestamp_ms,
        };
        // A leader that just died or moved: ask again (refreshing the
        // metadata) until the cluster has settled, within a bound.
        let give_up_at = tokio::time::Instant::now() + LIST_OFFSETS_PATIENCE;
        let response = loop {
            let attempt = async {
                let mut client = RecordsClient::new(self.cluster.leader(&tp.topic, tp.partition).await?);
                Ok::<_, ClientError>(client.list_offsets(request.clone()).await?.into_inner())
            };
            match attempt.await {
                Err(error) if error.is_retriable() && tokio::time::Instant::now() < give_up_at => {
                    self.cluster.invalidate(&tp.topic);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                result => break result?,
            }
        };
        u64::try_from(response.offset)
            .map(Offset)
            .map_err(|_| ClientError::InvalidArgument(format!("no record at or after timestamp {timestamp_ms}")))
    }

    /// Gives every partition without a position one: the group's committed
    /// offset, else the reset policy.
    async fn resolve_positions(&mut self) -> Result<(), ClientError> {
        let unresolved: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.fetch_position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        let committed = match &self.config.group_id {
            Some(_) => self.committed(&unresolved).await?,
            None => BTreeMap::new(),
        };
        for tp in unresolved {
            let offset = match committed.get(&tp) {
                Some(&offset) => offset,
                None => {
                    let spec = match self.config.auto_offset_reset {
                        OffsetReset::Earliest => OffsetSpec::Earliest,
                        OffsetReset::Latest => OffsetSpec::Latest,
                    };
                    self.list_offset(&tp, spec, 0).await?
                }
            };
            if let Some(state) = self.partitions.get_mut(&tp) {
                state.fetch_position = Some(offset);
                state.consumed = Some(offset);
            }
        }
        Ok(())
    }

    /// Records fetched, up to `max_poll_records`, waiting at most `timeout`
    /// for some to arrive. An empty result means none came in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Waiting inside poll is polling (a long poll must not count
            // against max_poll_interval).
            if let Some(membership) = &self.membership {
                membership.polled();
            }
            self.follow_group().await?;
            let answered = self.membership.as_ref().map(|membership| Arc::clone(&membership.answered));
            if let Some(membership) = &self.membership {
                if !membership.session_current() {
                    // The session may be over and these partitions someone
                    // else's: nothing is returned until the coordinator
                    // has answered (and said whether they still are ours).
                    membership.heartbeat_now(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                    continue;
                }
            }
            self.resolve_positions().await?;
            self.auto_commit_if_due().await;
            self.start_fetches();
            if !self.buffered.is_empty() {
                return Ok(self.take_buffered());
            }
            // Wait for a fetch, or for a new assignment.
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, self.fetches.join_next()) => next,
                () = group_news_of(&answered) => continue,
            };
            let (tp, generation, checked, result) = match next {
                Err(_) => return Ok(Vec::new()),
                Ok(None) if self.membership.is_some() => {
                    // No partition yet: wait for the group to give some.
                    if tokio::time::timeout_at(deadline, group_news_of(&answered)).await.is_err() {
                        return Ok(Vec::new());
                    }
                    continue;
                }
                Ok(None) => return Ok(Vec::new()),
                Ok(Some(Err(join_error))) if join_error.is_cancelled() => continue,
                Ok(Some(Err(join_error))) => {
                    return Err(ClientError::InvalidArgument(format!("fetch task failed: {join_error}")))
                }
                Ok(Some(Ok(done))) => done,
            };
            self.complete_fetch(tp, generation, checked, result).await?;
        }
    }

    /// This consumer's member id in its group, after `subscribe` with a `group_id`.
    pub fn member_id(&self) -> Option<&str> {
        self.membership.as_ref().map(|membership| membership.member_id.as_str())
    }

    /// What changed in this member's partitions since last asked.
    pub fn take_events(&mut self) -> Vec<ConsumerEvent> {
        self.events.drain(..).collect()
    }

    /// The consumer as a stream of records (polling in rounds of
    /// `poll_timeout`). A round is polled only once every record of the
    /// previous one was taken, so auto-commit keeps at-least-once.
    pub fn into_stream(
        self,
        poll_timeout: Duration,
    ) -> impl futures::Stream<Item = Result<ConsumerRecord, ClientError>> {
        futures::stream::unfold((self, VecDeque::new()), move |(mut consumer, mut ready)| async move {
            loop {
                if let Some(record) = ready.pop_front() {
                    return Some((Ok(record), (consumer, ready)));
                }
                match consumer.poll(poll_timeout).await {
                    Ok(records) => ready.extend(records),
                    Err(error) => return Some((Err(error), (consumer, ready))),
                }
            }
        })
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions
    /// go to the other members at once rather than after the session.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = if self.auto_commits() && !self.partitions.is_empty() { self.commit().await } else { Ok(()) };
        if let Some(membership) = self.membership.take() {
            membership.leave(&self.cluster).await?;
        }
        committed
    }

    fn auto_commits(&self) -> bool {
        self.config.group_id.is_some() && self.config.enable_auto_commit
    }

    async fn auto_commit_if_due(&mut self) {
        if !self.auto_commits() || self.last_auto_commit.elapsed() < self.config.auto_commit_interval {
            return;
        }
        self.last_auto_commit = tokio::time::Instant::now();
        if let Err(error) = self.commit().await {
            tracing::warn!(%error, "auto-commit failed");
        }
    }

    /// Applies the group's latest answer: drops everything if this member
    /// was fenced, commits and stops revoked partitions, starts new ones,
    /// and tells the coordinator at once.
    async fn follow_group(&mut self) -> Result<(), ClientError> {
        let Some(membership) = &self.membership else { return Ok(()) };
        let (version, assignment, lost) = {
            let mut state = membership.lock();
            (state.version, state.assignment.clone(), std::mem::take(&mut state.lost))
        };
        if lost && !self.partitions.is_empty() {
            let dropped: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
            tracing::warn!(partitions = ?dropped, "partitions lost: this member's session had ended");
            self.drop_partitions(&dropped);
            self.events.push_back(ConsumerEvent::Lost(dropped));
        }
        if version == self.applied_version {
            return Ok(());
        }
        let Some(assignment) = assignment else {
            self.applied_version = version;
            return Ok(());
        };
        let current: std::collections::BTreeSet<TopicPartition> = self.partitions.keys().cloned().collect();
        let revoked: Vec<TopicPartition> = current.difference(&assignment).cloned().collect();
        if !revoked.is_empty() {
            if self.auto_commits() {
                let positions = revoked
                    .iter()
                    .filter_map(|tp| Some((tp.clone(), self.partitions.get(tp)?.consumed?)))
                    .collect::<BTreeMap<_, _>>();
                if let Err(error) = self.commit_offsets(positions).await {
                    tracing::warn!(%error, "commit on revocation failed");
                }
            }
            self.drop_partitions(&revoked);
            tracing::info!(partitions = ?revoked, "partitions revoked");
            self.events.push_back(ConsumerEvent::Revoked(revoked.clone()));
        }
        let added: Vec<TopicPartition> = assignment.difference(&current).cloned().collect();
        for tp in &added {
            let state = self.new_partition_state(tp);
            self.partitions.insert(tp.clone(), state);
        }
        if !added.is_empty() {
            tracing::info!(partitions = ?added, "partitions assigned");
            self.events.push_back(ConsumerEvent::Assigned(added.clone()));
        }
        self.applied_version = version;
        let membership = self.membership.as_ref().expect("checked above");
        membership.lock().owned = assignment;
        if !revoked.is_empty() || !added.is_empty() {
            membership.wake.notify_one();
        }
        Ok(())
    }

    fn drop_partitions(&mut self, dropped: &[TopicPartition]) {
        for tp in dropped {
            self.partitions.remove(tp);
        }
        self.buffered
            .retain(|record| !dropped.iter().any(|tp| *record.topic == *tp.topic && record.partition == tp.partition));
    }

    /// Stores the consumed positions of every assigned partition for the group.
    pub async fn commit(&self) -> Result<(), ClientError> {
        let offsets = self
            .partitions
            .iter()
            .filter_map(|(tp, state)| state.consumed.map(|offset| (tp.clone(), offset)))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits these positions for the group: as this member (with its
    /// epoch) after `subscribe`, else as a consumer outside the group
    /// protocol (refused while the group has members).
    pub async fn commit_offsets(&self, offsets: BTreeMap<TopicPartition, Offset>) -> Result<(), ClientError> {
        let group_id = self.group_id()?;
        let offsets: Vec<OffsetCommit> = offsets
            .into_iter()
            .map(|(tp, offset)| OffsetCommit {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                offset: i64::try_from(offset.0).unwrap_or(i64::MAX),
                metadata: String::new(),
            })
            .collect();
        let mut attempt = 0;
        loop {
            let (member_id, member_epoch) = match &self.membership {
                Some(membership) => (membership.member_id.clone(), membership.epoch()),
                None => (String::new(), 0),
            };
            let request =
                CommitOffsetsRequest { group_id: group_id.clone(), offsets: offsets.clone(), member_id, member_epoch };
            let result = self
                .cluster
                .with_coordinator(self.coordinator_patience(), |channel| {
                    let request = request.clone();
                    async move {
                        GroupsClient::new(channel).commit_offsets(request).await?;
                        Ok(())
                    }
                })
                .await;
            match (result, &self.membership) {
                // The member's epoch moved since: commit at the new one.
                (Err(error), Some(membership))
                    if error.error_code() == Some(ErrorCode::StaleMemberEpoch) && attempt < STALE_EPOCH_RETRIES =>
                {
                    attempt += 1;
                    membership.heartbeat_now(self.config.session_timeout).await;
                }
                (result, _) => return result,
            }
        }
    }

    /// How long group calls look for the coordinator (it may be moving).
    fn coordinator_patience(&self) -> Duration {
        self.config.session_timeout.max(Duration::from_secs(10))
    }

    /// The group's committed offsets for `partitions` (absent: none committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Offset>, ClientError> {
        let request = FetchOffsetsRequest {
            group_id: self.group_id()?,
            partitions: partitions
                .iter()
                .map(|tp| WireTopicPartition { topic: tp.topic.to_string(), partition: tp.partition })
                .collect(),
        };
        let response = self
            .cluster
            .with_coordinator(self.coordinator_patience(), |channel| {
                let request = request.clone();
                async move { Ok(GroupsClient::new(channel).fetch_offsets(request).await?.into_inner()) }
            })
            .await?;
        Ok(response
            .offsets
            .into_iter()
            .filter_map(|committed| {
                let offset = u64::try_from(committed.offset).ok()?;
                Some((TopicPartition::new(committed.topic, committed.partition), Offset(offset)))
            })
            .collect())
    }

    fn group_id(&self) -> Result<String, ClientError> {
        self.config
            .group_id
            .clone()
            .ok_or_else(|| ClientError::InvalidArgument("committing offsets needs a group_id".to_string()))
    }
}

/// Waits for a heartbeat answer (forever without a group).
async fn group_news_of(answered: &Option<Arc<tokio::sync::Notify>>) {
    match answered {
        Some(answered) => answered.notified().await,
        None => std::future::pending().await,
    }
}
