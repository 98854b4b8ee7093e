//! Three metadata nodes in one process, each serving the internal gRPC
//! services on its own loopback port (the transport brokers use): commands
//! proposed on any node reach the controller, every node applies them, a
//! killed controller is replaced, and without a majority a proposal fails
//! with a clear error instead of hanging.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brook_metadata::{
    assign_replicas, BrokerId, BrokerRegistration, ClusterState, Command, CommandV1, DirectoryId, Incarnation,
    MetadataConfig, MetadataError, MetadataNode, NodeId,
};
use tokio::sync::oneshot;

struct Running {
    node: MetadataNode,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
    duties: Option<tokio_util::sync::CancellationToken>,
}

async fn start(id: NodeId, peers: &BTreeMap<NodeId, String>, dir: &std::path::Path) -> Running {
    let listener = tokio::net::TcpListener::bind(&peers[&id]).await.expect("bind");
    let mut config = MetadataConfig::new(id, peers.clone(), dir.join(format!("node-{id}")));
    config.propose_timeout = Duration::from_secs(3);
    let node = MetadataNode::start(config).await.expect("start metadata node");
    let (raft, forwarding) = node.services();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(forwarding)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("serve");
    });
    Running { node, stop: Some(stop), served, duties: None }
}

/// Also registers the node as a broker and runs its heartbeats (and the
/// controller's liveness duty when it leads).
async fn start_with_duties(id: NodeId, peers: &BTreeMap<NodeId, String>, dir: &std::path::Path) -> Running {
    let mut running = start(id, peers, dir).await;
    let token = tokio_util::sync::CancellationToken::new();
    let (node, address, duties) = (running.node.clone(), peers[&id].clone(), token.clone());
    let registration = BrokerRegistration {
        broker_id: BrokerId(id as u32),
        address,
        incarnation: Incarnation::random(),
        directory_id: DirectoryId::random(),
        cluster_id: None,
        lost_replicas: Vec::new(),
        kafka_address: String::new(),
    };
    tokio::spawn(async move { node.run_broker_duties(registration, duties).await });
    running.duties = Some(token);
    running
}

async fn kill(mut running: Running) {
    if let Some(duties) = running.duties.take() {
        duties.cancel();
    }
    running.node.shutdown().await;
    if let Some(stop) = running.stop.take() {
        let _ = stop.send(());
    }
    running.served.abort();
    let _ = running.served.await;
}

async fn wait_for(node: &MetadataNode, what: &str, condition: impl Fn(&ClusterState) -> bool) {
    let mut state = node.state();
    tokio::time::timeout(Duration::from_secs(10), state.wait_for(|state| condition(state)))
        .await
        .unwrap_or_else(|_| panic!("node {} timed out waiting for {what}", node.node_id()))
        .expect("state");
}

async fn wait_for_controller(nodes: &BTreeMap<NodeId, Running>) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let views: Vec<Option<NodeId>> = nodes.values().map(|running| running.node.controller()).collect();
        if let Some(Some(leader)) = views.first() {
            if nodes.contains_key(leader) && views.iter().all(|view| view == &Some(*leader)) {
                return *leader;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no agreed controller: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address nothing listens on, its port below Linux's
/// ephemeral range (32768-60999): a port from that range, released and
/// bound again later, may meanwhile be the local port of an outgoing
/// connection of the other test, and the bind fails (AddrInUse). Each call
/// in a process gets another port.
fn free_address() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(7919) % COUNT;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_any_node_commit_everywhere_and_survive_a_controller_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, free_address())).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, &peers, dir.path()).await);
    }
    let controller = wait_for_controller(&nodes).await;
    let follower = *nodes.keys().find(|id| **id != controller).expect("a follower");

    // Proposed on a follower: forwarded to the controller.
    for id in 1..=3u32 {
        let register = CommandV1::register(
            BrokerId(id),
            peers[&u64::from(id)].clone(),
            Incarnation::random(),
            DirectoryId::random(),
        );
        nodes[&follower].node.propose(Command::V1(register)).await.expect("proposed").expect("applied");
    }
    let create = CommandV1::CreateTopic {
        name: "orders".into(),
        topic_id: brook_record::TopicId::random(),
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignments: assign_replicas(&[BrokerId(1), BrokerId(2), BrokerId(3)], 3, 3, 0).expect("assign"),
    };
    nodes[&follower].node.propose(Command::V1(create.clone())).await.expect("proposed").expect("applied");
    for running in nodes.values() {
        wait_for(&running.node, "the topic", |state| state.topics.contains_key("orders")).await;
    }
    // A refusal comes back through forwarding too.
    let again = nodes[&follower].node.propose(Command::V1(create)).await.expect("proposed");
    assert!(again.is_err(), "creating an existing topic is refused: {again:?}");

    // Kill the controller: the survivors elect another and keep working.
    let killed = nodes.remove(&controller).expect("controller");
    kill(killed).await;
    let new_controller = wait_for_controller(&nodes).await;
    assert_ne!(new_controller, controller);
    let any = nodes.values().next().expect("a survivor");
    let delete = CommandV1::DeleteTopic { name: "orders".into() };
    any.node.propose(Command::V1(delete)).await.expect("proposed").expect("applied");
    for running in nodes.values() {
        wait_for(&running.node, "the deletion", |state| !state.topics.contains_key("orders")).await;
    }

    // Restart the killed node on its data: it rejoins and learns the news.
    let restarted = start(controller, &peers, dir.path()).await;
    wait_for(&restarted.node, "the restarted node to learn the deletion", |state| {
        !state.topics.contains_key("orders") && state.brokers.len() == 3
    })
    .await;
    nodes.insert(controller, restarted);

    // Two of three down: no majority, a clear error within the timeout.
    let keep = *nodes.keys().next().expect("a node");
    let survivor = nodes.remove(&keep).expect("node");
    for (_, running) in std::mem::take(&mut nodes) {
        kill(running).await;
    }
    let started = std::time::Instant::now();
    let refused = survivor.node.propose(Command::V1(CommandV1::DeleteTopic { name: "x".into() })).await;
    assert!(matches!(refused, Err(MetadataError::NoQuorum { voters: 3, .. })), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the error comes within the propose timeout, not a hang");
    let state: Arc<ClusterState> = survivor.node.state().borrow().clone();
    assert_eq!(state.brokers.len(), 3);
    kill(survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_declared_dead_and_loses_its_leaderships_then_comes_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, free_address())).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start_with_duties(id, &peers, dir.path()).await);
    }
    let controller = wait_for_controller(&nodes).await;
    for running in nodes.values() {
        wait_for(&running.node, "three live brokers", |state| state.alive_brokers().len() == 3).await;
    }
    let create = CommandV1::CreateTopic {
        name: "orders".into(),
        topic_id: brook_record::TopicId::random(),
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignments: assign_replicas(&[BrokerId(1), BrokerId(2), BrokerId(3)], 6, 3, 0).expect("assign"),
    };
    nodes[&controller].node.propose(Command::V1(create)).await.expect("proposed").expect("applied");

    // Kill a broker that is not the controller; it leads two partitions.
    let victim = *nodes.keys().find(|id| **id != controller).expect("a broker");
    let victim_id = BrokerId(victim as u32);
    kill(nodes.remove(&victim).expect("victim")).await;
    let survivor = nodes[&controller].node.clone();
    wait_for(&survivor, "the victim to be declared dead and its partitions led elsewhere", |state| {
        let dead = state.brokers.get(&victim_id).is_some_and(|broker| !broker.alive);
        let partitions = &state.topics["orders"].partitions;
        dead && partitions.iter().all(|partition| partition.leader.is_some() && partition.leader != Some(victim_id))
            && partitions.iter().all(|partition| !partition.isr.contains(&victim_id))
    })
    .await;
    let state = survivor.state().borrow().clone();
    let moved = state.topics["orders"]
        .partitions
        .iter()
        .filter(|partition| partition.leader_epoch == brook_record::LeaderEpoch(1))
        .count();
    assert_eq!(moved, 2, "exactly the victim's two partitions changed leader, at epoch 1");
    // The other broker stays alive: heartbeats, not load, decide.
    assert_eq!(state.alive_brokers().len(), 2);

    // It comes back: registered alive again.
    nodes.insert(victim, start_with_duties(victim, &peers, dir.path()).await);
    wait_for(&survivor, "the victim to be alive again", |state| state.brokers[&victim_id].alive).await;
    for (_, running) in std::mem::take(&mut nodes) {
        kill(running).await;
    }
}
