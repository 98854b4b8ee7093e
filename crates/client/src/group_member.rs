//! A consumer's membership in its group (KIP-848's member side): a task
//! that heartbeats the coordinator with what the consumer still owns and
//! hands the answered assignment to the consumer, which applies it in
//! `poll` (revoking first: commit, stop; then starting what is new) and
//! heartbeats again at once so the partitions it gave up reach their new
//! owners without waiting an interval.
//!
//! Fencing: a heartbeat refused with UNKNOWN_MEMBER_ID or
//! FENCED_MEMBER_EPOCH (the session expired: the consumer was paused, or
//! cut off) means the partitions are someone else's already. The member
//! marks them lost (the consumer drops them without committing) and joins
//! again at epoch 0. A consumer that has not heard from the coordinator
//! for a whole session returns no records until it has, so a member that
//! wakes up after its session ended does not process what it lost.

use brook_record::ErrorCode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_proto::v1::groups_client::GroupsClient;
use brook_proto::v1::{ConsumerGroupHeartbeatRequest, LeaveGroupRequest, TopicPartition as WireTopicPartition};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::consumer::TopicPartition;
use crate::error::ClientError;

/// The pause after a failed heartbeat.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What the group protocol needs from the consumer's configuration.
#[derive(Debug, Clone)]
pub(crate) struct MemberConfig {
    pub group_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout: Duration,
    /// A consumer that does not poll for this long leaves the group
    /// (Kafka's `max.poll.interval.ms`), and joins again when it polls.
    pub max_poll_interval: Duration,
    pub assignor: String,
    pub client_id: String,
}

/// What the heartbeat task and the consumer share.
#[derive(Debug)]
pub(crate) struct MemberState {
    pub member_epoch: u32,
    /// The latest assignment answered; `None` before the first answer
    /// (and after being fenced, until the next one).
    pub assignment: Option<BTreeSet<TopicPartition>>,
    /// Bumped with every new assignment.
    pub version: u64,
    /// What the consumer consumes now (it sets this after applying an
    /// assignment).
    pub owned: BTreeSet<TopicPartition>,
    /// Set when the member was fenced: the consumer drops everything it
    /// owned without committing.
    pub lost: bool,
    /// When the coordinator last answered.
    pub last_answer: Option<Instant>,
    pub last_error: Option<ClientError>,
    /// When the consumer last polled (see `MemberConfig::max_poll_interval`).
    pub last_poll: Instant,
    /// The member left because the consumer stopped polling; it joins
    /// again once the consumer polls.
    pub left_idle: bool,
}

#[derive(Debug)]
pub(crate) struct Membership {
    pub member_id: String,
    pub config: MemberConfig,
    pub state: Arc<Mutex<MemberState>>,
    /// Wakes the task for an immediate heartbeat.
    pub wake: Arc<Notify>,
    /// Notified after every heartbeat answer.
    pub answered: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<MemberState>) -> std::sync::MutexGuard<'_, MemberState> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Membership {
    /// Joins the group and keeps heartbeating until dropped or left.
    pub fn join(cluster: Arc<Cluster>, config: MemberConfig) -> Membership {
        let member_id = uuid::Uuid::new_v4().simple().to_string();
        let state = Arc::new(Mutex::new(MemberState {
            member_epoch: 0,
            assignment: None,
            version: 0,
            owned: BTreeSet::new(),
            lost: false,
            last_answer: None,
            last_error: None,
            last_poll: Instant::now(),
            left_idle: false,
        }));
        let (wake, answered) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let heartbeats = Heartbeats {
            cluster,
            member_id: member_id.clone(),
            config: config.clone(),
            state: Arc::clone(&state),
            wake: Arc::clone(&wake),
            answered: Arc::clone(&answered),
        };
        let task = tokio::spawn(heartbeats.run());
        tracing::info!(group = %config.group_id, member = %member_id, topics = ?config.topics, "joining the group");
        Membership { member_id, config, state, wake, answered, task }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemberState> {
        lock(&self.state)
    }

    /// The member epoch commits carry.
    pub fn epoch(&self) -> u32 {
        self.lock().member_epoch
    }

    /// Whether the coordinator answered within the session timeout: if
    /// not, the session may have ended and the partitions moved on.
    pub fn session_current(&self) -> bool {
        self.lock().last_answer.is_some_and(|last| last.elapsed() < self.config.session_timeout)
    }

    /// Asks for a heartbeat now and waits (at most `timeout`) for its answer.
    pub async fn heartbeat_now(&self, timeout: Duration) {
        let answered = Arc::clone(&self.answered);
        let notified = answered.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.wake.notify_one();
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    /// Notes a poll: a member that left for not polling joins again.
    pub fn polled(&self) {
        let mut state = self.lock();
        state.last_poll = Instant::now();
        if std::mem::take(&mut state.left_idle) {
            drop(state);
            tracing::info!(group = %self.config.group_id, member = %self.member_id, "polling again: joining the group again");
            self.wake.notify_one();
        }
    }

    /// Leaves the group (its partitions go to the others at once) and
    /// stops heartbeating.
    pub async fn leave(self, cluster: &Cluster) -> Result<(), ClientError> {
        self.task.abort();
        leave_group(cluster, &self.config, &self.member_id).await
    }
}

async fn leave_group(cluster: &Cluster, config: &MemberConfig, member_id: &str) -> Result<(), ClientError> {
    let request = LeaveGroupRequest { group_id: config.group_id.clone(), member_id: member_id.to_string() };
    let result = cluster
        .with_coordinator(config.session_timeout, |channel| {
            let request = request.clone();
            async move {
                GroupsClient::new(channel).leave_group(request).await?;
                Ok(())
            }
        })
        .await;
    match result {
        // Already gone (its session ended): nothing to leave.
        Err(error) if error.error_code() == Some(ErrorCode::UnknownMemberId) => Ok(()),
        other => other,
    }
}

struct Heartbeats {
    cluster: Arc<Cluster>,
    member_id: String,
    config: MemberConfig,
    state: Arc<Mutex<MemberState>>,
    wake: Arc<Notify>,
    answered: Arc<Notify>,
}

impl Heartbeats {
    async fn run(self) {
        loop {
            if self.idle_past_poll_interval().await {
                // Not a member until the consumer polls again.
                self.answered.notify_waiters();
                self.wake.notified().await;
                continue;
            }
            let pause = match self.heartbeat().await {
                Ok(interval) => interval,
                Err(error)
                    if matches!(
                        error.error_code(),
                        Some(ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
                    ) =>
                {
                    tracing::warn!(group = %self.config.group_id, member = %self.member_id, %error, "fenced: the partitions are lost; joining again");
                    let mut state = lock(&self.state);
                    state.member_epoch = 0;
                    state.lost = true;
                    state.assignment = None;
                    state.owned.clear();
                    state.version += 1;
                    Duration::ZERO
                }
                Err(error) => {
                    tracing::debug!(group = %self.config.group_id, %error, "heartbeat failed; trying again");
                    lock(&self.state).last_error = Some(error);
                    RETRY_PAUSE
                }
            };
            self.answered.notify_waiters();
            let _ = tokio::time::timeout(pause, self.wake.notified()).await;
        }
    }

    /// Whether the consumer stopped polling for `max_poll_interval`: then
    /// this member leaves the group (its partitions go to members that do
    /// poll) and counts as fenced, as Kafka's consumer does.
    async fn idle_past_poll_interval(&self) -> bool {
        let (idle, left, joined) = {
            let state = lock(&self.state);
            (state.last_poll.elapsed() > self.config.max_poll_interval, state.left_idle, state.member_epoch > 0)
        };
        if !idle {
            return false;
        }
        if left {
            return true;
        }
        tracing::warn!(group = %self.config.group_id, member = %self.member_id, interval = ?self.config.max_poll_interval, "the consumer did not poll within max_poll_interval: leaving the group");
        if joined {
            if let Err(error) = leave_group(&self.cluster, &self.config, &self.member_id).await {
                tracing::warn!(group = %self.config.group_id, %error, "could not leave; the session will end it");
            }
        }
        let mut state = lock(&self.state);
        state.left_idle = true;
        state.member_epoch = 0;
        state.lost = true;
        state.assignment = None;
        state.owned.clear();
        state.version += 1;
        true
    }

    /// One heartbeat; the interval the coordinator asks for.
    async fn heartbeat(&self) -> Result<Duration, ClientError> {
        let (member_epoch, owned) = {
            let state = lock(&self.state);
            (state.member_epoch, state.owned.clone())
        };
        let request = ConsumerGroupHeartbeatRequest {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            member_epoch,
            subscribed_topics: self.config.topics.iter().cloned().collect(),
            owned: owned
                .iter()
                .map(|tp| WireTopicPartition { topic: tp.topic.to_string(), partition: tp.partition })
                .collect(),
            assignor: self.config.assignor.clone(),
            session_timeout_ms: u32::try_from(self.config.session_timeout.as_millis()).unwrap_or(u32::MAX),
            client_id: self.config.client_id.clone(),
        };
        // A heartbeat answered after the session is over is of no use.
        let patience = self.config.session_timeout / 2;
        let sent_at = Instant::now();
        let answer = self
            .cluster
            .with_coordinator(patience, |channel| {
                let request = request.clone();
                async move { Ok(GroupsClient::new(channel).consumer_group_heartbeat(request).await?.into_inner()) }
            })
            .await?;
        let assignment: BTreeSet<TopicPartition> =
            answer.assignment.into_iter().map(|tp| TopicPartition::new(tp.topic, tp.partition)).collect();
        let mut state = lock(&self.state);
        if state.member_epoch != answer.member_epoch || state.assignment.as_ref() != Some(&assignment) {
            tracing::debug!(group = %self.config.group_id, epoch = answer.member_epoch, ?assignment, "assignment");
            state.version += 1;
        }
        state.member_epoch = answer.member_epoch;
        state.assignment = Some(assignment);
        state.last_answer = Some(sent_at);
        state.last_error = None;
        Ok(Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(50))))
    }
}
