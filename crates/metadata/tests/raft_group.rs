//! Three real openraft nodes with sled storage, in one process, joined by
//! an in-memory network (a unit-level test: the tonic transport between
//! broker processes is the cluster issue's next step). Shows that the log
//! store and state machine elect, replicate, fail over, survive restarts
//! and refuse what the state machine refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook_metadata::{
    assign_replicas, BrokerId, ClusterState, Command, CommandError, CommandV1, DirectoryId, Incarnation, LogStore,
    NodeId, Raft, StateMachineStore, TypeConfig,
};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use tokio::sync::watch;

/// The running nodes, by id; a node missing here is down.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

impl Router {
    fn get(&self, id: NodeId) -> Option<Raft> {
        self.nodes.lock().expect("router lock").get(&id).cloned()
    }
}

struct Connection {
    target: NodeId,
    router: Router,
}

fn unreachable<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!("node {target} is down"))))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { target, router: self.clone() }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.get(self.target).ok_or_else(|| unreachable(self.target))?;
        raft.append_entries(rpc).await.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let raft = self.router.get(self.target).ok_or_else(|| unreachable(self.target))?;
        raft.install_snapshot(rpc).await.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.get(self.target).ok_or_else(|| unreachable(self.target))?;
        raft.vote(rpc).await.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

struct Node {
    raft: Raft,
    state: watch::Receiver<Arc<ClusterState>>,
}

fn config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Compact often, so snapshots are exercised.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 5,
        ..openraft::Config::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

async fn start(id: NodeId, dir: &std::path::Path, router: &Router) -> Node {
    let db = sled::open(dir.join(format!("node-{id}"))).expect("open sled");
    let log_store = LogStore::open(&db).expect("log store");
    let state_machine = StateMachineStore::open(&db).expect("state machine");
    let state = state_machine.subscribe();
    let raft = Raft::new(id, config(), router.clone(), log_store, state_machine).await.expect("raft");
    router.nodes.lock().expect("router lock").insert(id, raft.clone());
    Node { raft, state }
}

async fn stop(id: NodeId, node: Node, router: &Router) {
    router.nodes.lock().expect("router lock").remove(&id);
    node.raft.shutdown().await.expect("shutdown");
}

async fn leader_of(nodes: &BTreeMap<NodeId, Node>) -> NodeId {
    let any = nodes.values().next().expect("a node");
    let metrics = any
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|metrics| metrics.current_leader.is_some_and(|leader| nodes.contains_key(&leader)), "a live leader")
        .await
        .expect("a leader is elected");
    metrics.current_leader.expect("checked above")
}

async fn propose(nodes: &BTreeMap<NodeId, Node>, command: CommandV1) -> Result<brook_metadata::Outcome, CommandError> {
    let leader = leader_of(nodes).await;
    let response = nodes[&leader].raft.client_write(Command::V1(command)).await.expect("committed");
    response.data
}

async fn wait_for_state(node: &mut Node, what: &str, condition: impl Fn(&ClusterState) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), node.state.wait_for(|state| condition(state)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("state machine alive");
}

fn create_topic(name: &str, brokers: &[u32]) -> CommandV1 {
    CommandV1::CreateTopic {
        name: name.into(),
        topic_id: brook_record::TopicId::random(),
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignments: assign_replicas(&brokers.iter().copied().map(BrokerId).collect::<Vec<_>>(), 6, 3, 0)
            .expect("assignment"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_fail_over_and_remember() {
    let dir = tempfile::tempdir().expect("temp dir");
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, dir.path(), &router).await);
    }
    let members: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 9091 + id)))).collect();
    nodes[&1].raft.initialize(members.clone()).await.expect("initialize");
    // Starting the same cluster twice never forms a second one.
    assert!(nodes[&1].raft.initialize(members).await.is_err());

    for id in 1..=3u32 {
        propose(
            &nodes,
            CommandV1::register(
                BrokerId(id),
                format!("127.0.0.1:{}", 9091 + id),
                Incarnation::random(),
                DirectoryId::random(),
            ),
        )
        .await
        .expect("register");
    }
    propose(&nodes, create_topic("orders", &[1, 2, 3])).await.expect("create");
    for node in nodes.values_mut() {
        wait_for_state(node, "the topic on every node", |state| state.topics.contains_key("orders")).await;
    }
    let states: BTreeSet<String> =
        nodes.values().map(|node| serde_json::to_string(&**node.state.borrow()).expect("json")).collect();
    assert_eq!(states.len(), 1, "every node holds the same state");

    // The state machine's refusals come back to the proposer, replicated.
    assert_eq!(
        propose(&nodes, create_topic("orders", &[1, 2, 3])).await,
        Err(CommandError::TopicAlreadyExists { topic: "orders".into() })
    );

    // Kill the leader: the others elect a new one and keep working.
    let old_leader = leader_of(&nodes).await;
    let killed = nodes.remove(&old_leader).expect("leader node");
    stop(old_leader, killed, &router).await;
    let new_leader = leader_of(&nodes).await;
    assert_ne!(new_leader, old_leader);
    propose(&nodes, CommandV1::SetBrokerAlive { broker_id: BrokerId(old_leader as u32), alive: false })
        .await
        .expect("expire");
    propose(&nodes, create_topic("payments", &[1, 2, 3])).await.expect("create through the survivors");
    // Enough commands for a snapshot and a purge, so the restarted node
    // catches up from a snapshot plus log.
    for round in 0..30 {
        let offsets = vec![brook_metadata::OffsetCommit {
            topic: "orders".into(),
            partition: 0,
            offset: round,
            metadata: String::new(),
            topic_id: None,
        }];
        propose(&nodes, CommandV1::CommitOffsets { group: "g".into(), offsets }).await.expect("commit");
    }

    // Restart the killed node on its own data: it rejoins and catches up.
    let mut restarted = start(old_leader, dir.path(), &router).await;
    assert!(restarted.state.borrow().topics.contains_key("orders"), "it remembers what it had applied");
    wait_for_state(&mut restarted, "the restarted node to catch up", |state| {
        state.topics.contains_key("payments") && state.offsets.get("g").is_some_and(|g| g["orders"][&0].offset == 29)
    })
    .await;
    nodes.insert(old_leader, restarted);

    // Stop everything, start everything: the state is all still there.
    let expected = nodes[&new_leader].state.borrow().clone();
    for (id, node) in std::mem::take(&mut nodes) {
        stop(id, node, &router).await;
    }
    for id in 1..=3 {
        nodes.insert(id, start(id, dir.path(), &router).await);
    }
    leader_of(&nodes).await;
    for node in nodes.values_mut() {
        assert_eq!(**node.state.borrow(), *expected, "state survives a full restart");
    }

    // Without a majority, a proposal fails (or times out) instead of
    // hanging or committing.
    let survivor = nodes.remove(&1).expect("node 1");
    for (id, node) in std::mem::take(&mut nodes) {
        stop(id, node, &router).await;
    }
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        survivor.raft.client_write(Command::V1(CommandV1::DeleteTopic { name: "orders".into() })),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "nothing commits without a majority");
    assert!(survivor.state.borrow().topics.contains_key("orders"));
}
