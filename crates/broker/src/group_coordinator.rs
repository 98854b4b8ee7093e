//! The consumer group coordinator: the controller's part in consumer
//! groups. The groups themselves (members, epochs, assignments, offsets)
//! live in the metadata group (`brook_metadata::consumer_group`), so the
//! coordinator keeps only what must not go through Raft:
//!
//! - **Sessions**: when each member was last heard. A member silent past
//!   its session timeout is removed (a `RemoveGroupMembers` proposal), and
//!   its partitions go to the others. A new controller starts every
//!   member's session afresh, and time the coordinator itself did not run
//!   (paused, starved) is no member's silence.
//! - **Heartbeats that change nothing** are answered from the applied
//!   state: the heartbeat is applied to a copy of the group, and only if
//!   the copy differs (a join, a confirmed revocation, a new assignment)
//!   is it proposed. A settled group costs no Raft entry.
//! - **Commit batching**: commits wait in a bounded queue and go to the
//!   metadata group together, one proposal at a time (so one member's
//!   commits apply in the order they arrived), each checked on its own;
//!   a proposal stops at 2,000 commits or just under the metadata group's
//!   1 MiB limit on one entry, whichever comes first.
//!
//! Why the controller: the group state is already on every broker, so the
//! coordinator only needs to be one agreed broker that proposes cheaply;
//! the Raft leader proposes without a forwarding hop, and its failover is
//! the metadata group's (about a second). The cost: every group's
//! heartbeats and commits meet on one broker (measured in BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook_metadata::group_assignment::Partition;
use brook_metadata::{Command, CommandV1, GroupCommit, GroupHeartbeat, MetadataNode, Outcome};
use brook_record::BrokerId;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;

/// How often the coordinator looks for expired sessions.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Commits waiting for a proposal, and the most one proposal carries: by
/// count, and by encoded size, well under the metadata group's limit on
/// one entry (a commit alone is at most `MAX_COMMIT_BYTES`, so one always
/// fits).
const COMMIT_QUEUE_LENGTH: usize = 10_000;
const MAX_COMMITS_PER_PROPOSAL: usize = 2_000;
const MAX_PROPOSAL_BYTES: usize = brook_metadata::MAX_COMMAND_BYTES - (64 << 10);
/// The largest one commit request may be, encoded (its offsets, topic
/// names and metadata): refused above this at admission.
pub const MAX_COMMIT_BYTES: usize = 512 << 10;
const _: () = assert!(MAX_COMMIT_BYTES <= MAX_PROPOSAL_BYTES);

/// How often a member with this session timeout should heartbeat: a
/// ninth of it (Kafka: 5 s for 45 s), at least every 5 s and at most
/// every 100 ms, so that a missed heartbeat or two never ends a session.
pub fn heartbeat_interval(session_timeout_ms: u32) -> Duration {
    Duration::from_millis(u64::from(session_timeout_ms / 9)).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// A commit waiting for its proposal.
struct PendingCommit {
    commit: GroupCommit,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

#[derive(Debug, Default)]
struct Sessions {
    /// The Raft term these were recorded in: a new term (a new
    /// controller, or this one again after losing it) starts afresh.
    term: u64,
    last_heard: HashMap<(String, String), Instant>,
    last_check: Option<Instant>,
}

/// The coordinator's settings: how long an empty group's offsets are
/// kept (Kafka's `offsets.retention.minutes`), how often the controller
/// looks, and the most members a group may have (`group.max.size`).
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    pub retention: Duration,
    pub check_interval: Duration,
    pub max_size: u32,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    metadata: MetadataNode,
    settings: GroupSettings,
    sessions: Mutex<Sessions>,
    commits: mpsc::Sender<PendingCommit>,
    /// Taken by `run` (the batching task).
    queued: Mutex<Option<mpsc::Receiver<PendingCommit>>>,
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit").field("group", &self.commit.group).finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    pub fn new(metadata: MetadataNode, settings: GroupSettings) -> GroupCoordinator {
        let (commits, queued) = mpsc::channel(COMMIT_QUEUE_LENGTH);
        GroupCoordinator { metadata, settings, sessions: Mutex::default(), commits, queued: Mutex::new(Some(queued)) }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses unless this broker coordinates groups (it is the controller).
    pub fn check_coordinator(&self, group: &str) -> Result<(), BrokerError> {
        if self.metadata.is_controller() {
            return Ok(());
        }
        let coordinator = self.metadata.controller().and_then(|id| u32::try_from(id).ok()).map(BrokerId);
        let broker_id = BrokerId(u32::try_from(self.metadata.node_id()).unwrap_or(u32::MAX));
        Err(BrokerError::NotCoordinator { group: group.to_string(), broker_id, coordinator })
    }

    /// A member's heartbeat: its epoch and what it may own now.
    pub async fn heartbeat(&self, heartbeat: GroupHeartbeat) -> Result<(u32, BTreeSet<Partition>), BrokerError> {
        self.check_coordinator(&heartbeat.group)?;
        let heartbeat = GroupHeartbeat { max_size: Some(self.settings.max_size), ..heartbeat };
        let state = self.metadata.state().borrow().clone();
        let before = state.groups.get(&heartbeat.group).cloned().unwrap_or_default();
        let mut after = before.clone();
        let answer = after.heartbeat(&heartbeat, &state.topics)?;
        let answer = if after == before {
            answer
        } else {
            match self.metadata.propose(Command::V1(CommandV1::GroupHeartbeat(heartbeat.clone()))).await?? {
                Outcome::GroupMember { member_epoch, assigned } => (member_epoch, assigned),
                other => return Err(BrokerError::NoController(format!("unexpected answer to a heartbeat: {other:?}"))),
            }
        };
        self.sessions().last_heard.insert((heartbeat.group, heartbeat.member_id), Instant::now());
        Ok(answer)
    }

    /// A member leaves: its partitions go to the others at once.
    pub async fn leave(&self, group: String, member_id: String) -> Result<(), BrokerError> {
        self.check_coordinator(&group)?;
        let known =
            self.metadata.state().borrow().groups.get(&group).is_some_and(|g| g.members.contains_key(&member_id));
        if !known {
            return Err(brook_metadata::CommandError::UnknownMemberId { group, member_id }.into());
        }
        self.sessions().last_heard.remove(&(group.clone(), member_id.clone()));
        tracing::info!(%group, member = %member_id, "member left the group");
        self.metadata
            .propose(Command::V1(CommandV1::RemoveGroupMembers { group, member_ids: vec![member_id] }))
            .await??;
        Ok(())
    }

    /// Commits offsets through the batching queue.
    pub async fn commit(&self, commit: GroupCommit) -> Result<(), BrokerError> {
        self.check_coordinator(&commit.group)?;
        let (done, answer) = oneshot::channel();
        self.commits.send(PendingCommit { commit, done }).await.map_err(|_| BrokerError::ShuttingDown)?;
        answer.await.map_err(|_| BrokerError::ShuttingDown)?
    }

    /// The coordinator's duties until `shutdown`: commit batches and
    /// session expiry (both idle while this broker is not the controller).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(queued) = self.queued.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() else {
            tracing::error!("the group coordinator runs once");
            return;
        };
        tokio::join!(
            self.propose_commits(queued, shutdown.clone()),
            self.expire_sessions(shutdown.clone()),
            self.expire_groups(shutdown)
        );
    }

    /// On the controller, every `check_interval`: forgets groups with no
    /// members that nothing changed for the retention (see
    /// `CommandV1::ExpireGroups`; the time is this broker's clock, carried
    /// in the command).
    async fn expire_groups(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if !self.metadata.is_controller() {
                continue;
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as i64);
            let retention_ms = u64::try_from(self.settings.retention.as_millis()).unwrap_or(u64::MAX);
            match self.metadata.propose(Command::V1(CommandV1::ExpireGroups { now_ms, retention_ms })).await {
                Ok(Ok(Outcome::GroupsExpired(0))) => {}
                Ok(Ok(Outcome::GroupsExpired(count))) => {
                    tracing::info!(groups = count, ?self.settings.retention, "expired empty groups and their offsets")
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a group expiry"),
                Err(error) => tracing::warn!(%error, "could not expire groups; trying at the next check"),
            }
        }
    }

    async fn propose_commits(&self, mut queued: mpsc::Receiver<PendingCommit>, shutdown: CancellationToken) {
        // A commit that did not fit the last batch: the next one's first.
        let mut carried: Option<PendingCommit> = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => tokio::select! {
                    next = queued.recv() => match next { Some(first) => first, None => return },
                    () = shutdown.cancelled() => return,
                },
            };
            let mut bytes = first.commit.encoded_bytes_bound();
            let mut batch = vec![first];
            while batch.len() < MAX_COMMITS_PER_PROPOSAL {
                let Ok(next) = queued.try_recv() else { break };
                let next_bytes = next.commit.encoded_bytes_bound();
                if bytes + next_bytes > MAX_PROPOSAL_BYTES {
                    carried = Some(next);
                    break;
                }
                bytes += next_bytes;
                batch.push(next);
            }
            let commits = batch.iter().map(|pending| pending.commit.clone()).collect();
            let proposed = self.metadata.propose(Command::V1(CommandV1::CommitGroupOffsets { commits })).await;
            match proposed {
                Ok(Ok(Outcome::Committed(results))) if results.len() == batch.len() => {
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.done.send(result.map_err(BrokerError::from));
                    }
                }
                other => {
                    let reason = match other {
                        Err(error) => error.to_string(),
                        Ok(Err(error)) => error.to_string(),
                        Ok(Ok(outcome)) => format!("unexpected answer to a commit: {outcome:?}"),
                    };
                    for pending in batch {
                        let _ = pending.done.send(Err(BrokerError::NoController(reason.clone())));
                    }
                }
            }
        }
    }

    async fn expire_sessions(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SESSION_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            for (group, member_ids) in self.expired_members() {
                tracing::info!(%group, members = ?member_ids, "members missed their session timeout; their partitions go to the others");
                let removal = Command::V1(CommandV1::RemoveGroupMembers { group: group.clone(), member_ids });
                if let Err(error) = self.metadata.propose(removal).await {
                    tracing::warn!(%group, %error, "could not remove expired members; trying again");
                }
            }
        }
    }

    /// Members whose sessions have expired, per group (none unless this
    /// broker is the controller).
    fn expired_members(&self) -> BTreeMap<String, Vec<String>> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        if !self.metadata.is_controller() {
            sessions.last_heard.clear();
            sessions.last_check = None;
            return BTreeMap::new();
        }
        let term = self.metadata.term();
        // A new term, or a coordinator that did not run for a while (paused
        // or starved): nobody's silence can be told apart from its own, so
        // every session starts again now.
        let stalled = sessions.last_check.is_some_and(|last| now.duration_since(last) > SESSION_CHECK_INTERVAL * 5);
        if sessions.term != term || stalled {
            sessions.term = term;
            sessions.last_heard.clear();
        }
        sessions.last_check = Some(now);
        let state = self.metadata.state().borrow().clone();
        let mut expired: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut live = HashMap::new();
        for (group, members) in &state.groups {
            for (member_id, member) in &members.members {
                let key = (group.clone(), member_id.clone());
                let last = sessions.last_heard.get(&key).copied().unwrap_or(now);
                if now.duration_since(last) > Duration::from_millis(u64::from(member.session_timeout_ms)) {
                    expired.entry(group.clone()).or_default().push(member_id.clone());
                }
                // Kept until the removal is applied (a failed proposal is
                // tried again at the next check).
                live.insert(key, last);
            }
        }
        sessions.last_heard = live;
        expired
    }
}
