//! A seeded simulation of replication and the controller.
//!
//! Three brokers' replicas of one partition (real [`Replica`]s over real
//! logs in a temp dir, their I/O on the caller's thread) and the
//! controller's real state machine (`brook_metadata::ClusterState`); between
//! them everything travels as a message a seeded scheduler delivers, holds
//! back (delay, reordering) or loses: replica fetches and epoch queries
//! (through [`LeaderClient`], driving [`fetch_round`]), ISR proposals and
//! their answers, the metadata reaching each broker, produce requests
//! (admitted, then appended later, as a broker does), a consumer's fetches.
//! Meanwhile it crashes and restarts brokers (each restart registers a new
//! incarnation), pauses them (past their session), cuts a broker off from
//! the controller only, cuts single directions between brokers, and
//! restarts a broker at once without its data: its directory gone (a
//! replaced disk, under a new directory id) or its newest segment cut
//! short (a power loss), on a minority only (while another in-sync
//! replica holds every acknowledged record). Time is tokio's paused clock, moved 5 ms a
//! step; nothing else moves it, so a seed replays exactly.
//!
//! Then the network heals and the checks run:
//! - every acknowledged record is in the final log, at its offset;
//! - when it was acknowledged, min.insync.replicas replicas held it (or
//!   held it until a data-loss fault since its append took their copy:
//!   the leader counts a follower's fetches until its metadata shows the
//!   restart);
//! - the replicas are byte-for-byte identical;
//! - the consumer saw every acknowledged record below its position, and
//!   nothing the log no longer holds.
//!
//! A failing seed prints itself and how to replay it:
//! `BROOK_SIM_SEED=<seed> cargo test -p brook-replication simulation -- --nocapture`.
//! `BROOK_SIM_SEEDS=<n>` runs more seeds than the default.
//!
//! [`OldLogic`] puts back, in the simulation's front end (the broker's and
//! controller's side), the checks as they were before findings 1, 2, 4 and
//! 6 of the safety work were fixed (as of `3195d9f`); the tests below show
//! the simulation catches each.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use brook_metadata::{
    BrokerEpoch, ClusterState, Command, CommandError, CommandResult, CommandV1, DirectoryId, Incarnation,
    PartitionRecord,
};
use brook_record::{stamp_batch, BatchBuilder, Batches, BrokerId, NewRecord, Offset, TopicId, TopicPartition};
use brook_storage::LogConfig;
use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::error::ReplicaError;
use crate::isr::IsrChangeOutcome;
use crate::network::{
    EpochEndQuery, FetchedPartition, IsrProposal, LeaderClient, LeaderRefusal, NetworkError, ReplicaFetchRequest,
    ReplicatedData,
};
use crate::replica::Replica;
use crate::role::Role;
use crate::truncation::LeaderEpochEnd;
use crate::{fetch_round, LeaderEpoch};

const NODES: usize = 3;
const MIN_INSYNC: u32 = 2;
const TOPIC: &str = "t";
/// Sim time per step.
const STEP: Duration = Duration::from_millis(5);
/// `replica.lag.time.max.ms`, in sim time.
const LAG_MAX: Duration = Duration::from_millis(150);
/// Steps with faults, then at most this many to heal.
const FAULT_STEPS: usize = 1000;
const HEAL_STEPS: usize = 4000;
/// Steps between a leader's attempts at one expansion (its 200 ms retry).
const RETRY_STEPS: u64 = 40;
/// Seeds in the default run.
const DEFAULT_SEEDS: u64 = 5000;

fn broker(node: usize) -> BrokerId {
    BrokerId(node as u32 + 1)
}

fn node_of(broker: BrokerId) -> usize {
    broker.0 as usize - 1
}

/// The checks as they were before the fixes, put back one at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OldLogic {
    /// Finding 1: leadership checked when a produce is admitted, the
    /// append later stamped with whatever epoch the replica holds then, as
    /// a follower too.
    append_after_demotion: bool,
    /// Finding 2: acks=all answered once the HW passes, whatever the
    /// ISR's size by then.
    ack_below_min_insync: bool,
    /// Finding 4: the controller checks only the leader epoch of an ISR
    /// change, so a repeated expansion applies again.
    unversioned_isr: bool,
    /// Finding 6: a consumer fetch between the HW and the LEO is out of
    /// range, and the consumer resets to the latest offset.
    out_of_range_above_hw: bool,
}

/// How often each kind of event comes, and how lossy the network is: drawn
/// per seed, so seeds differ in character (a slow controller link, a
/// stormy network, a quiet one) and not only in order.
struct Profile {
    /// Weights of produce, append, follower message, ISR proposal, lag
    /// check, metadata, consume, checkpoint, liveness, fault.
    weights: [u64; 10],
    /// Percent of follower messages lost.
    message_loss: u64,
    /// Percent of ISR proposals, and of their answers, lost.
    proposal_loss: u64,
}

impl Profile {
    fn draw(rng: &mut Rng) -> Profile {
        let ranges = [(5, 20), (5, 20), (10, 40), (1, 10), (1, 5), (2, 12), (3, 10), (1, 3), (1, 8), (2, 12)];
        let weights = ranges.map(|(low, high)| low + rng.next() % (high - low + 1));
        Profile { weights, message_loss: rng.next() % 25, proposal_loss: rng.next() % 50 }
    }

    /// Which kind of event comes next.
    fn pick(&self, rng: &mut Rng) -> usize {
        let total: u64 = self.weights.iter().sum();
        let mut roll = rng.next() % total;
        for (kind, weight) in self.weights.iter().enumerate() {
            if roll < *weight {
                return kind;
            }
            roll -= weight;
        }
        self.weights.len() - 1
    }
}

/// splitmix64: small, seedable, good enough to pick events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A 128-bit id (an incarnation or a directory).
    fn id(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.next() % 100 < chance
    }
}

/// Where a follower's message in flight is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Gate {
    #[default]
    Idle,
    Waiting,
    Delivered,
    Lost,
}

/// A change a leader asked the controller for, until it has its answer.
struct PendingProposal {
    leader: usize,
    /// The leader's replica as it was (gone once it crashed).
    replica: Weak<Replica>,
    proposal: IsrProposal,
    /// An expansion is proposed again until answered; a shrink is not.
    expansion: bool,
    /// The step before which it is not proposed (again): a leader waits
    /// `EXPANSION_RETRY` between attempts.
    not_before: u64,
    /// Each broker's incarnation when the proposal was built.
    incarnations: [u64; NODES],
}

/// What the follower-side clients reach: the brokers as the network sees
/// them.
#[derive(Default)]
struct Net {
    /// Each broker's replica while it runs (`None`: crashed).
    replicas: [Option<Arc<Replica>>; NODES],
    paused: [bool; NODES],
    /// `cut[a][b]`: what `a` sends `b` is lost.
    cut: [[bool; NODES]; NODES],
    /// Each broker's one follower message in flight.
    gates: [Gate; NODES],
    proposals: Vec<PendingProposal>,
    /// Bumped each time the controller sees a broker die or return.
    incarnations: [u64; NODES],
    /// Each broker's broker epoch (its registration's), which its fetches
    /// carry.
    broker_epochs: [u64; NODES],
}

type Shared = Arc<Mutex<Net>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Net> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A follower's way to its leader, each message held until the scheduler
/// delivers or loses it.
struct SimLeader {
    me: usize,
    leader: usize,
    shared: Shared,
}

impl SimLeader {
    fn passage(&self) -> impl Future<Output = Result<(), NetworkError>> + Send + '_ {
        std::future::poll_fn(move |_| {
            let mut net = lock(&self.shared);
            let gate = &mut net.gates[self.me];
            match *gate {
                Gate::Idle => {
                    *gate = Gate::Waiting;
                    Poll::Pending
                }
                Gate::Waiting => Poll::Pending,
                Gate::Delivered => {
                    *gate = Gate::Idle;
                    Poll::Ready(Ok(()))
                }
                Gate::Lost => {
                    *gate = Gate::Idle;
                    Poll::Ready(Err(NetworkError("lost on the way".into())))
                }
            }
        })
    }

    /// The leader's replica, when the request reaches a running leader.
    fn reach(&self) -> Result<Arc<Replica>, NetworkError> {
        let net = lock(&self.shared);
        if net.paused[self.leader] || net.cut[self.me][self.leader] {
            return Err(NetworkError("the leader does not answer".into()));
        }
        net.replicas[self.leader].clone().ok_or_else(|| NetworkError("the leader is down".into()))
    }

    fn answer_arrives(&self) -> Result<(), NetworkError> {
        if lock(&self.shared).cut[self.leader][self.me] {
            return Err(NetworkError("the answer was lost".into()));
        }
        Ok(())
    }
}

fn refusal(error: &ReplicaError) -> LeaderRefusal {
    let log_start_offset = match error {
        ReplicaError::OffsetOutOfRange { log_start_offset, .. } => Some(*log_start_offset),
        _ => None,
    };
    LeaderRefusal { code_name: error.code_name().into(), message: error.to_string(), log_start_offset }
}

impl LeaderClient for SimLeader {
    async fn fetch(&self, request: ReplicaFetchRequest) -> Result<Vec<FetchedPartition>, NetworkError> {
        self.passage().await?;
        let leader = self.reach()?;
        let mut answers = Vec::new();
        let follower_epoch = lock(&self.shared).broker_epochs[self.me];
        for fetch in &request.partitions {
            let max_bytes = u64::from(request.max_bytes_per_partition);
            let outcome = match leader.serve_follower_fetch(request.follower, follower_epoch, fetch, max_bytes).await {
                Ok((read, proposal)) => {
                    if let Some(proposal) = proposal {
                        let replica = Arc::downgrade(&leader);
                        let pending = PendingProposal {
                            leader: self.leader,
                            replica,
                            proposal,
                            expansion: true,
                            not_before: 0,
                            incarnations: lock(&self.shared).incarnations,
                        };
                        lock(&self.shared).proposals.push(pending);
                    }
                    Ok(ReplicatedData {
                        records: read.records,
                        high_watermark: leader.high_watermark(),
                        log_start_offset: read.log_start_offset,
                    })
                }
                Err(error) => Err(refusal(&error)),
            };
            answers.push(FetchedPartition { partition: fetch.partition.clone(), outcome });
        }
        drop(leader);
        self.passage().await?;
        self.answer_arrives()?;
        Ok(answers)
    }

    async fn epoch_end_offset(&self, query: EpochEndQuery) -> Result<LeaderEpochEnd, NetworkError> {
        self.passage().await?;
        let leader = self.reach()?;
        let answer =
            leader.check_follower(query.topic_id, query.current_leader_epoch).map(|()| leader.epoch_end(query.epoch));
        drop(leader);
        self.passage().await?;
        self.answer_arrives()?;
        answer.map_err(|error| NetworkError(error.to_string()))
    }
}

type Task<T> = Pin<Box<dyn Future<Output = T>>>;

fn poll_once<T>(task: &mut Task<T>) -> Poll<T> {
    task.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// A broker as the simulation runs it.
struct Node {
    dir: PathBuf,
    /// Its data directory's id: a new one when its disk is replaced.
    directory: DirectoryId,
    appended: Arc<watch::Sender<u64>>,
    /// The metadata this broker has applied.
    view: ClusterState,
    /// A crashed broker's replica, kept only to read its files for the
    /// checks (dropped before the broker restarts).
    crashed: Option<Arc<Replica>>,
    /// Its follower round in flight.
    round: Option<Task<()>>,
    /// Produce requests admitted, not yet appended.
    admitted: VecDeque<Vec<String>>,
    cut_from_controller: bool,
}

/// What a data-loss fault takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Disk,
    Tail,
}

/// An acks=all produce waiting for the HW.
struct Waiter {
    node: usize,
    base: Offset,
    values: Vec<String>,
    wait: Task<Result<(), ReplicaError>>,
    /// The step the leader appended the batch at.
    appended_at: u64,
}

#[derive(Default)]
struct Consumer {
    /// The leader and epoch its metadata names.
    leader: Option<usize>,
    epoch: Option<LeaderEpoch>,
    position: u64,
    resetting: bool,
    seen: BTreeSet<(u64, String)>,
}

/// One seed's run.
struct Sim {
    seed: u64,
    rng: Rng,
    profile: Profile,
    old: OldLogic,
    shared: Shared,
    controller: ClusterState,
    topic_id: TopicId,
    nodes: Vec<Node>,
    waiters: Vec<Waiter>,
    acked: BTreeMap<u64, String>,
    consumer: Consumer,
    next_value: u64,
    healing: bool,
    steps: u64,
    /// Prints every event (a replayed seed).
    verbose: bool,
    violations: Vec<String>,
    /// Restarts without the data so far: (disks lost, tails lost).
    data_losses: (usize, usize),
    /// The step each broker last lost its data at (disk or tail).
    lost_data_at: [Option<u64>; NODES],
    /// What happened, hashed: equal for two runs of one seed.
    trace: DefaultHasher,
    _dir: tempfile::TempDir,
}

/// What one seed's run found.
#[derive(Debug)]
struct Outcome {
    seed: u64,
    violations: Vec<String>,
    acknowledged: usize,
    digest: u64,
    /// Restarts without the data: (disks lost, tails lost).
    data_losses: (usize, usize),
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let in_memory = if shm.is_dir() { tempfile::tempdir_in(shm).ok() } else { None };
    in_memory.unwrap_or_else(|| tempfile::tempdir().expect("a temp dir"))
}

fn log_config() -> LogConfig {
    LogConfig { segment_bytes: 16 << 10, index_interval_bytes: 256, ..LogConfig::default() }
}

fn batch(values: &[String]) -> Bytes {
    let mut builder = BatchBuilder::new(256);
    for value in values {
        builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(value.as_bytes()), headers: &[] });
    }
    builder.finish()
}

/// Every record in `bytes`, by offset.
fn records(bytes: &[u8]) -> BTreeMap<u64, String> {
    let mut found = BTreeMap::new();
    for batch in Batches::new(bytes) {
        let Ok(batch) = batch else { break };
        for record in batch.records().flatten() {
            let value = String::from_utf8_lossy(record.value.unwrap_or_default()).into_owned();
            found.insert(record.offset.0, value);
        }
    }
    found
}

impl Sim {
    fn new(seed: u64, old: OldLogic) -> Sim {
        let dir = scratch_dir();
        let topic_id = TopicId::from_slice(&[7; 16]).expect("16 bytes");
        let mut controller = ClusterState::default();
        let mut rng = Rng(seed);
        let directories: Vec<DirectoryId> = (0..NODES).map(|_| DirectoryId::from_u128(rng.id())).collect();
        for (node, directory) in directories.iter().enumerate() {
            let incarnation = Incarnation::from_u128(rng.id());
            let register = CommandV1::register(broker(node), format!("node-{node}"), incarnation, *directory);
            controller.apply(&Command::V1(register)).expect("registered");
        }
        let create = CommandV1::CreateTopic {
            name: TOPIC.into(),
            topic_id,
            replication_factor: NODES as u32,
            configs: BTreeMap::new(),
            assignments: vec![(0..NODES).map(broker).collect()],
        };
        controller.apply(&Command::V1(create)).expect("created");
        let shared = Shared::default();
        let nodes = (0..NODES)
            .map(|node| Node {
                dir: dir.path().join(format!("node-{node}")),
                directory: directories[node],
                appended: Arc::new(watch::channel(0).0),
                view: controller.clone(),
                crashed: None,
                round: None,
                admitted: VecDeque::new(),
                cut_from_controller: false,
            })
            .collect();
        let profile = Profile::draw(&mut rng);
        let mut sim = Sim {
            seed,
            rng,
            profile,
            old,
            shared,
            controller,
            topic_id,
            nodes,
            waiters: Vec::new(),
            acked: BTreeMap::new(),
            consumer: Consumer::default(),
            next_value: 0,
            healing: false,
            steps: 0,
            verbose: std::env::var("BROOK_SIM_SEED").is_ok(),
            violations: Vec::new(),
            data_losses: (0, 0),
            lost_data_at: [None; NODES],
            trace: DefaultHasher::new(),
            _dir: dir,
        };
        sim.note_broker_epochs();
        for node in 0..NODES {
            sim.open(node);
        }
        sim
    }

    fn note(&mut self, event: &str, node: usize) {
        (event, node).hash(&mut self.trace);
        if self.verbose {
            let record = Self::partition(&self.controller);
            let brokers: Vec<String> = (0..NODES)
                .map(|node| match self.replica(node) {
                    Some(replica) => format!(
                        "{}:{}/{}@{}{}",
                        node + 1,
                        replica.log_end_offset(),
                        replica.high_watermark(),
                        replica.role_epoch().0,
                        if lock(&self.shared).paused[node] { "(paused)" } else { "" }
                    ),
                    None => format!("{}:down", node + 1),
                })
                .collect();
            println!(
                "{event} {} | controller leader {:?} epoch {} isr {:?} pe {} | {}",
                node + 1,
                record.leader.map(|leader| leader.0),
                record.leader_epoch.0,
                record.isr.iter().map(|member| member.0).collect::<Vec<_>>(),
                record.partition_epoch,
                brokers.join(" ")
            );
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn partition(state: &ClusterState) -> &PartitionRecord {
        &state.topics[TOPIC].partitions[0]
    }

    fn role(&self, node: usize) -> Role {
        let view = &self.nodes[node].view;
        let record = Self::partition(view);
        let alive = view.alive_brokers();
        Role {
            broker_id: broker(node),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            isr: record.isr.clone(),
            partition_epoch: record.partition_epoch,
            unavailable: record.replicas.iter().copied().filter(|replica| !alive.contains(replica)).collect(),
        }
    }

    fn replica(&self, node: usize) -> Option<Arc<Replica>> {
        lock(&self.shared).replicas[node].clone()
    }

    /// A running broker's replica (not crashed, not paused).
    fn running(&self, node: usize) -> Option<Arc<Replica>> {
        let net = lock(&self.shared);
        if net.paused[node] {
            return None;
        }
        net.replicas[node].clone()
    }

    fn open(&mut self, node: usize) {
        self.nodes[node].crashed = None;
        let role = self.role(node);
        let (dir, appended) = (self.nodes[node].dir.clone(), Arc::clone(&self.nodes[node].appended));
        let partition = TopicPartition::new(TOPIC, 0);
        let replica = Replica::open(partition, self.topic_id, dir, log_config(), role, appended)
            .expect("a replica opens")
            .with_io_on_caller();
        lock(&self.shared).replicas[node] = Some(Arc::new(replica));
    }

    fn command(&mut self, command: CommandV1) -> CommandResult {
        (format!("{command:?}")).hash(&mut self.trace);
        if let CommandV1::RegisterBroker { broker_id, .. } | CommandV1::SetBrokerAlive { broker_id, .. } = &command {
            lock(&self.shared).incarnations[node_of(*broker_id)] += 1;
        }
        let result = self.controller.apply(&Command::V1(command));
        self.note_broker_epochs();
        result
    }

    fn note_broker_epochs(&self) {
        let mut net = lock(&self.shared);
        for node in 0..NODES {
            net.broker_epochs[node] = self.controller.brokers[&broker(node)].broker_epoch.0;
        }
    }

    /// The controller's metadata reaches `node`, which follows it.
    fn deliver_metadata(&mut self, node: usize) {
        let Some(replica) = self.running(node) else { return };
        if self.nodes[node].cut_from_controller {
            return;
        }
        let before = self.role(node);
        self.nodes[node].view = self.controller.clone();
        let role = self.role(node);
        if (before.leader, before.leader_epoch) != (role.leader, role.leader_epoch) {
            // The fetcher drops its poll when whom it follows changes.
            self.nodes[node].round = None;
            lock(&self.shared).gates[node] = Gate::Idle;
        }
        replica.set_role(role);
    }

    fn believed_leader(&mut self) -> usize {
        match Self::partition(&self.controller).leader {
            Some(leader) if self.rng.percent(70) => node_of(leader),
            _ => self.rng.below(NODES),
        }
    }

    /// A client's produce reaches a broker, which admits it if it leads
    /// with enough in sync.
    fn produce(&mut self) {
        let node = self.believed_leader();
        let Some(replica) = self.running(node) else { return };
        let in_sync = Self::partition(&self.nodes[node].view).isr.len() as u32;
        if !replica.leads_at(replica.role_epoch()) || in_sync < MIN_INSYNC {
            return;
        }
        let count = 1 + self.rng.below(3);
        let values = (0..count)
            .map(|_| {
                self.next_value += 1;
                format!("v{}", self.next_value)
            })
            .collect();
        self.note("admit", node);
        self.nodes[node].admitted.push_back(values);
    }

    /// A broker appends the oldest produce it admitted.
    async fn append_admitted(&mut self, node: usize) {
        let Some(replica) = self.running(node) else { return };
        let Some(values) = self.nodes[node].admitted.pop_front() else { return };
        self.note("append", node);
        if self.old.append_after_demotion && !replica.leads_at(replica.role_epoch()) {
            let mut stamped = BytesMut::from(&batch(&values)[..]);
            stamp_batch(&mut stamped, replica.log_end_offset(), replica.role_epoch());
            let _ = replica.append_replicated(stamped.freeze()).await;
            return;
        }
        let Ok((info, epoch)) = replica.append(batch(&values)).await else { return };
        let min_insync = if self.old.ack_below_min_insync { 1 } else { MIN_INSYNC };
        let target = info.last_offset.plus(1);
        let wait = Box::pin(async move {
            replica.wait_for_high_watermark(target, epoch, min_insync, Duration::from_secs(3600)).await
        });
        self.waiters.push(Waiter { node, base: info.base_offset, values, wait, appended_at: self.steps });
    }

    /// Polls every acks=all wait of a running broker.
    async fn poll_waiters(&mut self) {
        let mut index = 0;
        while index < self.waiters.len() {
            let node = self.waiters[index].node;
            if self.running(node).is_none() {
                index += 1;
                continue;
            }
            match poll_once(&mut self.waiters[index].wait) {
                Poll::Pending => index += 1,
                Poll::Ready(result) => {
                    let waiter = self.waiters.remove(index);
                    if result.is_ok() {
                        self.acknowledge(waiter).await;
                    }
                }
            }
        }
    }

    async fn acknowledge(&mut self, waiter: Waiter) {
        self.note("ack", waiter.node);
        for (index, value) in waiter.values.iter().enumerate() {
            let offset = waiter.base.0 + index as u64;
            if let Some(earlier) = self.acked.insert(offset, value.clone()) {
                self.violation(format!("offset {offset} acknowledged twice: {earlier}, then {value}"));
            }
        }
        // Who holds the batch now, byte for byte.
        let Some(leader) = self.replica(waiter.node) else { return };
        let Some(acknowledged) = first_batch(&leader, waiter.base).await else {
            self.violation(format!("broker {} acknowledged offset {} it does not hold", waiter.node + 1, waiter.base));
            return;
        };
        // A broker whose data a fault took since the append counts: the
        // leader may have counted what it had fetched before (its restart
        // reaches the leader only with the metadata), so the copy existed
        // and is the one a minority's data loss may take; that no
        // acknowledged record is lost for it is the final check's.
        let mut copies = 0;
        for node in 0..NODES {
            if self.lost_data_at[node].is_some_and(|at| at >= waiter.appended_at) {
                copies += 1;
                continue;
            }
            let replica = self.replica(node).or_else(|| self.nodes[node].crashed.clone());
            if let Some(replica) = replica {
                if first_batch(&replica, waiter.base).await.as_ref() == Some(&acknowledged) {
                    copies += 1;
                }
            }
        }
        if copies < MIN_INSYNC {
            self.violation(format!(
                "{:?} acknowledged at offset {} with {copies} copies (min.insync.replicas {MIN_INSYNC})",
                waiter.values, waiter.base
            ));
        }
    }

    /// Moves a broker's follower round on by one message: starts a round
    /// if it follows someone and has none, else delivers (or loses) its
    /// message in flight.
    fn exchange(&mut self, node: usize) {
        let Some(replica) = self.running(node) else { return };
        if self.nodes[node].round.is_none() {
            let record = Self::partition(&self.nodes[node].view);
            let (Some(leader), epoch) = (record.leader, record.leader_epoch) else { return };
            if leader == broker(node) {
                return;
            }
            self.note("round", node);
            let client = SimLeader { me: node, leader: node_of(leader), shared: Arc::clone(&self.shared) };
            let followed = vec![(replica, epoch)];
            let me = broker(node);
            self.nodes[node].round = Some(Box::pin(async move {
                let _ = fetch_round(&client, me, &followed).await;
            }));
        } else {
            let lost = !self.healing && self.rng.percent(self.profile.message_loss);
            self.note(if lost { "lose" } else { "deliver" }, node);
            let mut net = lock(&self.shared);
            if net.gates[node] == Gate::Waiting {
                net.gates[node] = if lost { Gate::Lost } else { Gate::Delivered };
            }
        }
        if let Some(round) = self.nodes[node].round.as_mut() {
            if poll_once(round).is_ready() {
                self.nodes[node].round = None;
            }
        }
    }

    /// The controller receives (or not) one pending ISR proposal, and the
    /// leader its answer (or not).
    fn deliver_proposal(&mut self, index: usize) {
        let (leader, replica, proposal, expansion, incarnations) = {
            let net = lock(&self.shared);
            let Some(pending) = net.proposals.get(index) else { return };
            let replica = pending.replica.upgrade();
            (pending.leader, replica, pending.proposal.clone(), pending.expansion, pending.incarnations)
        };
        let current = self.replica(leader);
        let Some(replica) = replica.filter(|replica| current.as_ref().is_some_and(|now| Arc::ptr_eq(now, replica)))
        else {
            // The leader crashed: its proposing task died with it.
            lock(&self.shared).proposals.remove(index);
            return;
        };
        if lock(&self.shared).paused[leader] {
            return;
        }
        self.note("propose", leader);
        let cut = self.nodes[leader].cut_from_controller;
        let arrives = self.healing || (!cut && !self.rng.percent(self.profile.proposal_loss));
        let outcome = arrives.then(|| {
            // The old logic had neither the partition epoch nor the
            // joining member's broker epoch.
            let (partition_epoch, joining) = if self.old.unversioned_isr {
                (Self::partition(&self.controller).partition_epoch, None)
            } else {
                (proposal.partition_epoch, proposal.joining.map(|(member, epoch)| (member, BrokerEpoch(epoch))))
            };
            let change = CommandV1::ChangeIsr {
                topic: TOPIC.into(),
                topic_id: proposal.topic_id,
                partition: 0,
                leader_epoch: proposal.leader_epoch,
                partition_epoch,
                isr: proposal.isr.clone(),
                joining,
            };
            let before = Self::partition(&self.controller).isr.clone();
            let now = lock(&self.shared).incarnations;
            match self.command(change) {
                Ok(_) => {
                    // A member let in must be the replica the leader saw
                    // caught up, not one that died and returned since (it
                    // may lack what was acknowledged meanwhile: KIP-903).
                    let joined: Vec<BrokerId> = Self::partition(&self.controller)
                        .isr
                        .iter()
                        .filter(|member| !before.contains(member))
                        .copied()
                        .collect();
                    for member in joined {
                        let node = node_of(member);
                        if incarnations[node] != now[node] {
                            self.violation(format!(
                                "broker {member} joined the ISR on a proposal built before it died and returned (at step {})",
                                self.steps
                            ));
                        }
                    }
                    IsrChangeOutcome::Committed
                }
                Err(CommandError::StalePartitionEpoch { .. }) => IsrChangeOutcome::Stale,
                Err(_) => IsrChangeOutcome::Refused,
            }
        });
        let answer_lost = !self.healing && (cut || self.rng.percent(self.profile.proposal_loss));
        let outcome = outcome.filter(|_| !answer_lost);
        let epoch = proposal.leader_epoch;
        if !expansion || outcome.is_some() || !replica.leads_at(epoch) {
            replica.isr_change_settled(epoch, outcome);
            lock(&self.shared).proposals.remove(index);
        } else {
            lock(&self.shared).proposals[index].not_before = self.steps + RETRY_STEPS;
        }
    }

    fn check_lagging(&mut self, node: usize) {
        let Some(replica) = self.running(node) else { return };
        if let Some(proposal) = replica.lagging_followers(LAG_MAX) {
            self.note("shrink", node);
            let pending = PendingProposal {
                leader: node,
                replica: Arc::downgrade(&replica),
                proposal,
                expansion: false,
                not_before: 0,
                incarnations: lock(&self.shared).incarnations,
            };
            lock(&self.shared).proposals.push(pending);
        }
    }

    /// The consumer's next step: a metadata refresh now and then (from
    /// the controller's latest, or from a broker whose view may be behind;
    /// an older leader epoch than the one cached is ignored), then a fetch
    /// (or an offset reset) at the leader it knows, naming that
    /// leadership's epoch (KIP-320).
    async fn consume(&mut self) {
        if self.consumer.leader.is_none() || self.rng.percent(25) {
            let source = self.rng.below(NODES + 1);
            let view = if source == NODES { &self.controller } else { &self.nodes[source].view };
            let record = Self::partition(view);
            if self.consumer.epoch.is_none_or(|known| record.leader_epoch >= known) {
                self.consumer.leader = record.leader.map(node_of);
                self.consumer.epoch = Some(record.leader_epoch);
            }
        }
        let Some(node) = self.consumer.leader else { return };
        let Some(replica) = self.running(node) else { return };
        if !replica.leads_at(replica.role_epoch()) {
            // NOT_LEADER: look again.
            self.consumer.leader = None;
            return;
        }
        self.note("consume", node);
        let epoch = if self.old.out_of_range_above_hw { None } else { self.consumer.epoch };
        if let Some(Err(_)) = epoch.map(|epoch| replica.check_leader_epoch(epoch)) {
            // FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH: look again.
            self.consumer.leader = None;
            return;
        }
        if self.consumer.resetting {
            // auto.offset.reset=latest: the leader's HW.
            if self.verbose {
                println!("  consumer reset from {} to {}", self.consumer.position, replica.high_watermark());
            }
            self.consumer.position = replica.high_watermark().0;
            self.consumer.resetting = false;
            return;
        }
        let position = self.consumer.position;
        if self.old.out_of_range_above_hw && position > replica.high_watermark().0 {
            self.consumer.resetting = true;
            return;
        }
        match replica.read(Offset(position), 4096, epoch).await {
            Ok(read) => {
                for (offset, value) in records(&read.records).into_iter().filter(|(offset, _)| *offset >= position) {
                    if offset != self.consumer.position {
                        let expected = self.consumer.position;
                        self.violation(format!("the consumer got offset {offset} where it expected {expected}"));
                    }
                    self.consumer.seen.insert((offset, value));
                    self.consumer.position = offset + 1;
                }
            }
            Err(error @ ReplicaError::OffsetOutOfRange { .. }) => {
                if self.verbose {
                    println!("  consumer at {position}: {error}");
                }
                self.consumer.resetting = true;
            }
            Err(_) => self.consumer.leader = None,
        }
    }

    fn checkpoint(&mut self, node: usize) {
        if let Some(replica) = self.running(node) {
            let _ = replica.checkpoint_high_watermark();
        }
    }

    /// The controller notices a broker's session expire, or a broker
    /// come back.
    fn liveness(&mut self, node: usize) {
        let alive = self.controller.brokers[&broker(node)].alive;
        let heard = self.running(node).is_some() && !self.nodes[node].cut_from_controller;
        if alive != heard {
            let _ = self.command(CommandV1::SetBrokerAlive { broker_id: broker(node), alive: heard });
        }
    }

    fn crash(&mut self, node: usize) {
        let replica = {
            let mut net = lock(&self.shared);
            net.paused[node] = false;
            net.gates[node] = Gate::Idle;
            net.replicas[node].take()
        };
        let Some(replica) = replica else { return };
        self.note("crash", node);
        let state = &mut self.nodes[node];
        state.round = None;
        state.admitted.clear();
        self.waiters.retain(|waiter| waiter.node != node);
        self.nodes[node].crashed = Some(replica);
    }

    fn restart(&mut self, node: usize) {
        if self.replica(node).is_some() || self.nodes[node].cut_from_controller {
            return;
        }
        self.note("restart", node);
        let incarnation = Incarnation::from_u128(self.rng.id());
        let directory = self.nodes[node].directory;
        let _ = self.command(CommandV1::register(broker(node), format!("node-{node}"), incarnation, directory));
        self.nodes[node].view = self.controller.clone();
        self.open(node);
    }

    /// Data is lost only on a minority: while another in-sync replica holds
    /// every acknowledged record (every member of the ISR does, and a
    /// replica that lost data leaves it when it registers again). Losing
    /// every copy is no fault a cluster survives.
    fn may_lose_data(&self, node: usize) -> bool {
        Self::partition(&self.controller).isr.iter().any(|member| *member != broker(node))
    }

    /// A broker loses data: the disk (`Loss::Disk`: replaced, it restarts
    /// with an empty data directory under a new directory id) or what it
    /// had not flushed (`Loss::Tail`: a power loss cuts its newest segment
    /// short at a random point; the default flush policy flushes nothing
    /// on the append path). It restarts at once, within its session.
    fn lose_data(&mut self, node: usize, loss: Loss) {
        if self.nodes[node].cut_from_controller || !self.may_lose_data(node) {
            return;
        }
        self.crash(node);
        self.note(if loss == Loss::Disk { "lose disk" } else { "lose tail" }, node);
        self.lost_data_at[node] = Some(self.steps);
        self.nodes[node].crashed = None;
        let dir = self.nodes[node].dir.clone();
        match loss {
            Loss::Disk => {
                self.data_losses.0 += 1;
                let _ = std::fs::remove_dir_all(&dir);
                self.nodes[node].directory = DirectoryId::from_u128(self.rng.id());
            }
            Loss::Tail => {
                self.data_losses.1 += 1;
                let segments = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|entry| entry.path());
                let newest = segments.filter(|path| path.extension().is_some_and(|ext| ext == "log")).max();
                if let Some(segment) = newest {
                    let length = std::fs::metadata(&segment).map_or(0, |metadata| metadata.len());
                    let keep = self.rng.next() % (length + 1);
                    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&segment) {
                        let _ = file.set_len(keep);
                    }
                }
            }
        }
        self.restart(node);
    }

    fn fault(&mut self) {
        let node = self.rng.below(NODES);
        let kind = self.rng.below(18);
        self.note("fault", kind * NODES + node);
        match kind {
            0 | 1 => self.crash(node),
            2..=5 => self.restart(node),
            6 => lock(&self.shared).paused[node] = true,
            7..=9 => lock(&self.shared).paused[node] = false,
            10 => self.nodes[node].cut_from_controller = true,
            11 | 12 => self.nodes[node].cut_from_controller = false,
            13 | 14 => {
                let other = (node + 1 + self.rng.below(NODES - 1)) % NODES;
                let mut net = lock(&self.shared);
                net.cut[node][other] = !net.cut[node][other];
            }
            15 => lock(&self.shared).cut = Default::default(),
            16 => self.lose_data(node, Loss::Disk),
            _ => self.lose_data(node, Loss::Tail),
        }
    }

    async fn step(&mut self) {
        let node = self.rng.below(NODES);
        match self.profile.pick(&mut self.rng) {
            0 => self.produce(),
            1 => self.append_admitted(node).await,
            2 => self.exchange(node),
            3 => {
                let steps = self.steps;
                let due: Vec<usize> = {
                    let net = lock(&self.shared);
                    (0..net.proposals.len()).filter(|index| net.proposals[*index].not_before <= steps).collect()
                };
                if !due.is_empty() {
                    let index = due[self.rng.below(due.len())];
                    self.deliver_proposal(index);
                }
            }
            4 => self.check_lagging(node),
            5 => self.deliver_metadata(node),
            6 => self.consume().await,
            7 => self.checkpoint(node),
            8 => self.liveness(node),
            _ => self.fault(),
        }
        self.poll_waiters().await;
        self.steps += 1;
        tokio::time::advance(STEP).await;
    }

    /// Every broker running and reachable, every message delivered, until
    /// the replicas agree and the consumer is at the HW.
    async fn heal(&mut self) -> bool {
        self.healing = true;
        {
            let mut net = lock(&self.shared);
            net.paused = [false; NODES];
            net.cut = Default::default();
        }
        for node in 0..NODES {
            self.nodes[node].cut_from_controller = false;
            self.restart(node);
            self.liveness(node);
        }
        for _ in 0..HEAL_STEPS {
            for node in 0..NODES {
                self.nodes[node].admitted.clear();
                self.deliver_metadata(node);
                self.exchange(node);
                self.check_lagging(node);
            }
            while !lock(&self.shared).proposals.is_empty() {
                self.deliver_proposal(0);
            }
            self.consume().await;
            self.poll_waiters().await;
            tokio::time::advance(STEP).await;
            if self.settled() {
                return true;
            }
        }
        false
    }

    /// One leader, everyone in sync with it and at its HW, the consumer too.
    fn settled(&self) -> bool {
        let record = Self::partition(&self.controller);
        let Some(leader) = record.leader.and_then(|leader| self.replica(node_of(leader))) else { return false };
        let end = leader.log_end_offset();
        record.isr.len() == NODES
            && leader.high_watermark() == end
            && self.consumer.position == end.0
            && (0..NODES).all(|node| {
                self.replica(node)
                    .is_some_and(|replica| replica.log_end_offset() == end && replica.high_watermark() == end)
            })
    }

    async fn check(&mut self) {
        let Some(leader) = Self::partition(&self.controller).leader else {
            return self.violation("no leader after healing".into());
        };
        let Some(leader_replica) = self.replica(node_of(leader)) else {
            return self.violation("the leader is down after healing".into());
        };
        let log = all_bytes(&leader_replica).await;
        for node in 0..NODES {
            let Some(replica) = self.replica(node) else { continue };
            let other = all_bytes(&replica).await;
            if other != log {
                let (ours, theirs) = (records(&log), records(&other));
                let differs = ours.iter().find(|(offset, value)| theirs.get(offset) != Some(value));
                self.violation(format!(
                    "broker {} differs from the leader {leader}: first at {:?} (it holds {:?})",
                    node + 1,
                    differs,
                    differs.and_then(|(offset, _)| theirs.get(offset))
                ));
            }
        }
        let kept = records(&log);
        let lost: Vec<String> = self
            .acked
            .iter()
            .filter(|(offset, value)| kept.get(offset) != Some(value))
            .map(|(offset, value)| format!("{value}@{offset} (now {:?})", kept.get(offset)))
            .collect();
        if !lost.is_empty() {
            self.violation(format!("{} acknowledged records lost: {}", lost.len(), lost.join(", ")));
        }
        let phantom: Vec<String> = self
            .consumer
            .seen
            .iter()
            .filter(|(offset, value)| kept.get(offset) != Some(value))
            .map(|(offset, value)| format!("{value}@{offset}"))
            .collect();
        if !phantom.is_empty() {
            self.violation(format!("the consumer saw records the log no longer holds: {}", phantom.join(", ")));
        }
        let position = self.consumer.position;
        let skipped: Vec<String> = self
            .acked
            .iter()
            .filter(|(offset, value)| {
                **offset < position && !self.consumer.seen.contains(&(**offset, (*value).clone()))
            })
            .map(|(offset, value)| format!("{value}@{offset}"))
            .collect();
        if !skipped.is_empty() {
            self.violation(format!("the consumer skipped acknowledged records: {}", skipped.join(", ")));
        }
        log.hash(&mut self.trace);
    }

    async fn run(mut self) -> Outcome {
        for _ in 0..FAULT_STEPS {
            self.step().await;
        }
        if !self.heal().await {
            let record = Self::partition(&self.controller).clone();
            let ends: Vec<_> = (0..NODES)
                .map(|node| self.replica(node).map(|replica| (replica.log_end_offset(), replica.high_watermark())))
                .collect();
            let position = self.consumer.position;
            self.violation(format!(
                "did not settle after healing: {record:?}, (LEO, HW) per broker {ends:?}, consumer at {position}"
            ));
        }
        self.check().await;
        // Drop every task before the replicas they hold.
        self.waiters.clear();
        for node in &mut self.nodes {
            node.round = None;
        }
        Outcome {
            seed: self.seed,
            violations: std::mem::take(&mut self.violations),
            acknowledged: self.acked.len(),
            digest: self.trace.finish(),
            data_losses: self.data_losses,
        }
    }
}

/// The first whole batch at or around `offset` in a replica's log.
async fn first_batch(replica: &Arc<Replica>, offset: Offset) -> Option<Bytes> {
    let read = replica.read_for_follower(offset, 1).await.ok()?;
    let first = Batches::new(&read.records).next()?.ok()?;
    Some(read.records.slice(..first.bytes.len()))
}

/// A replica's whole log (a read stops at a segment's end: reads follow
/// each other to the log end).
async fn all_bytes(replica: &Arc<Replica>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut offset = replica.log_start_offset();
    while offset < replica.log_end_offset() {
        let Ok(read) = replica.read_for_follower(offset, u64::MAX).await else { break };
        if read.next_offset <= offset {
            break;
        }
        bytes.extend_from_slice(&read.records);
        offset = read.next_offset;
    }
    bytes
}

fn run_seed(seed: u64, old: OldLogic) -> Outcome {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    runtime.block_on(Sim::new(seed, old).run())
}

/// Runs `seeds` on two threads; returns the failing outcomes, how many
/// records were acknowledged in all, and how many restarts without the
/// data there were (disks, tails).
fn run_seeds(
    seeds: impl Iterator<Item = u64> + Clone + Send,
    old: OldLogic,
    stop_at_first: bool,
) -> (Vec<Outcome>, usize, (usize, usize)) {
    let failed = Mutex::new(Vec::new());
    let acknowledged = std::sync::atomic::AtomicUsize::new(0);
    let (lost_disks, lost_tails) = (std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for lane in 0..2u64 {
            let seeds = seeds.clone();
            let (failed, acknowledged, stop, lost_disks, lost_tails) =
                (&failed, &acknowledged, &stop, &lost_disks, &lost_tails);
            scope.spawn(move || {
                for seed in seeds.filter(|seed| seed % 2 == lane) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let outcome = run_seed(seed, old);
                    acknowledged.fetch_add(outcome.acknowledged, std::sync::atomic::Ordering::Relaxed);
                    lost_disks.fetch_add(outcome.data_losses.0, std::sync::atomic::Ordering::Relaxed);
                    lost_tails.fetch_add(outcome.data_losses.1, std::sync::atomic::Ordering::Relaxed);
                    if !outcome.violations.is_empty() {
                        failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(outcome);
                        if stop_at_first {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    failed.sort_by_key(|outcome| outcome.seed);
    (failed, acknowledged.into_inner(), (lost_disks.into_inner(), lost_tails.into_inner()))
}

fn report(outcome: &Outcome) -> String {
    format!(
        "seed {} failed:\n  {}\n  replay: BROOK_SIM_SEED={} cargo test -p brook-replication simulation -- --nocapture",
        outcome.seed,
        outcome.violations.join("\n  "),
        outcome.seed
    )
}

#[test]
fn simulation_every_seed_keeps_every_acknowledged_record() {
    let seeds: Box<dyn Iterator<Item = u64> + Send> = match std::env::var("BROOK_SIM_SEED") {
        Ok(seed) => {
            let seed = seed.parse().expect("BROOK_SIM_SEED is a number");
            Box::new(std::iter::once(seed))
        }
        Err(_) => {
            let count = std::env::var("BROOK_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_SEEDS);
            Box::new(0..count)
        }
    };
    let seeds: Vec<u64> = seeds.collect();
    let started = std::time::Instant::now();
    let (failed, acknowledged, (lost_disks, lost_tails)) = run_seeds(seeds.iter().copied(), OldLogic::default(), false);
    println!(
        "simulation: {} seeds, {acknowledged} records acknowledged, {lost_disks} disks and {lost_tails} unflushed tails lost, {} failed, in {:.1?}",
        seeds.len(),
        failed.len(),
        started.elapsed()
    );
    let reports: Vec<String> = failed.iter().map(report).collect();
    assert!(failed.is_empty(), "{}", reports.join("\n"));
    assert!(acknowledged > seeds.len(), "the runs acknowledge records ({acknowledged} in all)");
    if seeds.len() >= 100 {
        assert!(lost_disks > 0 && lost_tails > 0, "the runs include restarts without the data");
    }
}

#[test]
fn simulation_a_seed_replays_exactly() {
    let first = run_seed(11, OldLogic::default());
    let second = run_seed(11, OldLogic::default());
    assert_eq!((first.digest, first.acknowledged), (second.digest, second.acknowledged));
    assert_ne!(first.digest, run_seed(12, OldLogic::default()).digest, "another seed, another run");
}

/// Runs seeds under `old` until one fails; at most `limit`.
fn finds(old: OldLogic, limit: u64) -> Outcome {
    let (failed, _, _) = run_seeds(0..limit, old, true);
    let first = failed.into_iter().next();
    let first = first.unwrap_or_else(|| panic!("no seed of {limit} found the old logic {old:?} out"));
    println!("{old:?} caught by {}", report(&first));
    first
}

#[test]
fn simulation_finds_a_demoted_leader_appending_at_its_successors_epoch() {
    finds(OldLogic { append_after_demotion: true, ..OldLogic::default() }, 3000);
}

#[test]
fn simulation_finds_acks_answered_below_min_insync() {
    finds(OldLogic { ack_below_min_insync: true, ..OldLogic::default() }, 3000);
}

#[test]
fn simulation_finds_an_unversioned_isr_change_bringing_back_a_stale_follower() {
    finds(OldLogic { unversioned_isr: true, ..OldLogic::default() }, 3000);
}

#[test]
fn simulation_finds_a_consumer_skipping_records_after_a_failover() {
    finds(OldLogic { out_of_range_above_hw: true, ..OldLogic::default() }, 10000);
}
