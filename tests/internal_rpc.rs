//! What brokers ask of each other is not open to anyone: the client port
//! serves none of it, and the internal listener refuses every call that
//! lacks the cluster secret. Forged calls (a Raft vote, a proposal, a
//! heartbeat, a replica fetch) change nothing; and even a proposal that
//! carries the secret is checked by the state machine as the admin path
//! checks it.

use crate::harness;

use std::time::Duration;

use brook_client::{Admin, NewTopic};
use brook_metadata::{BrokerId, Command, CommandV1};
use brook_proto::internal::metadata_forwarding_client::MetadataForwardingClient;
use brook_proto::internal::raft_transport_client::RaftTransportClient;
use brook_proto::internal::replication_client::ReplicationClient;
use brook_proto::internal::{PartitionFetch, Payload, ReplicaFetchRequest};
use brook_record::TopicId;
use harness::{eventually, TestCluster};
use tonic::transport::Channel;
use tonic::Code;

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}")).expect("uri").connect().await.expect("connect")
}

/// A call as a stranger makes it: with `secret` in the header, if any.
fn call<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request.metadata_mut().insert(brook_proto::CLUSTER_SECRET_KEY, secret.parse().expect("ascii"));
    }
    request
}

fn payload(json: Vec<u8>) -> Payload {
    Payload { json: json.into(), ..Payload::default() }
}

fn vote() -> Payload {
    // A candidate from a far future term: if it were heard, the cluster
    // would elect anew.
    payload(br#"{"vote":{"leader_id":{"term":999999,"node_id":2},"committed":false},"last_log_id":null}"#.to_vec())
}

fn heartbeat(broker: u32) -> Payload {
    // As a broker's current incarnation would send it (its epoch cannot
    // be older than the state's): only the secret keeps it out.
    payload(serde_json::to_vec(&serde_json::json!({ "broker_id": broker, "broker_epoch": u64::MAX })).expect("json"))
}

fn forged_topic(name: &str) -> Payload {
    let command = Command::V1(CommandV1::CreateTopic {
        name: name.into(),
        topic_id: TopicId::random(),
        replication_factor: 1,
        configs: Default::default(),
        assignments: vec![vec![BrokerId(1)]],
    });
    payload(serde_json::to_vec(&command).expect("json"))
}

fn replica_fetch(topic_id: &[u8]) -> ReplicaFetchRequest {
    ReplicaFetchRequest {
        follower_id: 2,
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        broker_epoch: 0,
        partitions: vec![PartitionFetch {
            topic: "t".into(),
            partition: 0,
            // Far ahead: if it counted, the HW would jump past what was replicated.
            fetch_offset: 1_000_000,
            leader_epoch: 0,
            topic_id: topic_id.to_vec().into(),
        }],
    }
}

/// Waits (10 s at most) until the cluster declares `broker` dead.
async fn wait_declared_dead(admin: &Admin, broker: u32) {
    eventually("the broker declared dead", Duration::from_secs(10), || async move {
        let brokers = admin.describe_cluster().await.map_err(|e| e.to_string())?.brokers;
        match brokers.iter().find(|candidate| candidate.id == broker) {
            Some(found) if !found.alive => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, code: Code) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
        Ok(answer) => panic!("{what} was served: {answer:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_are_refused_on_the_client_port_and_without_the_secret() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 3)).await.expect("create t");
    let described = admin.describe_topic("t").await.expect("describe t");
    let leader = described.partitions[0].leader;
    // Whatever id: the call must not get as far as checking it.
    let topic_id = TopicId::random().as_bytes().to_vec();
    let epoch_before = described.partitions[0].leader_epoch;

    // The client port serves no internal service at all.
    for id in 1..=3 {
        let client_port = channel(&cluster.address(id)).await;
        let secret = Some(cluster.secret.as_str());
        assert_refused(
            "a Raft vote on the client port",
            RaftTransportClient::new(client_port.clone()).vote(call(vote(), secret)).await,
            Code::Unimplemented,
        );
        assert_refused(
            "a proposal on the client port",
            MetadataForwardingClient::new(client_port.clone()).propose(call(forged_topic("x"), secret)).await,
            Code::Unimplemented,
        );
        assert_refused(
            "a heartbeat on the client port",
            MetadataForwardingClient::new(client_port.clone()).heartbeat(call(heartbeat(id), secret)).await,
            Code::Unimplemented,
        );
        assert_refused(
            "a replica fetch on the client port",
            ReplicationClient::new(client_port).fetch(call(replica_fetch(&topic_id), secret)).await,
            Code::Unimplemented,
        );
    }

    // The internal listener, without the secret or with a wrong one.
    let internal = cluster.internal_addresses.clone();
    for address in &internal {
        let port = channel(address).await;
        for secret in [None, Some("not-the-cluster-secret")] {
            assert_refused(
                "a Raft vote without the secret",
                RaftTransportClient::new(port.clone()).vote(call(vote(), secret)).await,
                Code::Unauthenticated,
            );
            assert_refused(
                "a proposal without the secret",
                MetadataForwardingClient::new(port.clone()).propose(call(forged_topic("forged"), secret)).await,
                Code::Unauthenticated,
            );
            assert_refused(
                "a heartbeat without the secret",
                MetadataForwardingClient::new(port.clone()).heartbeat(call(heartbeat(3), secret)).await,
                Code::Unauthenticated,
            );
            assert_refused(
                "a replica fetch without the secret",
                ReplicationClient::new(port.clone()).fetch(call(replica_fetch(&topic_id), secret)).await,
                Code::Unauthenticated,
            );
        }
    }

    // Nothing moved: no election, no forged topic, the HW where it was.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = admin.describe_topic("t").await.expect("describe t");
    assert_eq!((after.partitions[0].leader, after.partitions[0].leader_epoch), (leader, epoch_before));
    let topics = admin.list_topics().await.expect("list");
    assert!(topics.iter().all(|topic| topic.name != "forged" && topic.name != "x"), "{topics:?}");

    // A stopped broker stays dead for all the heartbeats forged for it.
    cluster.broker(3).kill();
    wait_declared_dead(&admin, 3).await;
    for address in &internal[..2] {
        let port = channel(address).await;
        for _ in 0..20 {
            let _ = MetadataForwardingClient::new(port.clone()).heartbeat(call(heartbeat(3), None)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let brokers = admin.describe_cluster().await.expect("describe cluster").brokers;
    assert!(brokers.iter().any(|broker| broker.id == 3 && !broker.alive), "forged heartbeats revived it: {brokers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_replica_fetches_of_an_older_incarnation_are_refused_even_with_the_secret() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 3)).await.expect("create t");
    let described = admin.describe_topic("t").await.expect("describe t");
    let (leader, high_watermark) = (described.partitions[0].leader, described.partitions[0].high_watermark);
    // Whatever id: the incarnation is checked before any partition.
    let topic_id = TopicId::random().as_bytes().to_vec();
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let cluster_secret = cluster.secret.clone();
    let secret = Some(cluster_secret.as_str());

    // Epoch 0 was never given: every registered incarnation is newer. A
    // fetch far ahead from it would move the HW if it counted.
    let mut stale = replica_fetch(&topic_id);
    stale.follower_id = follower;
    let port = channel(&cluster.internal_addresses[leader as usize - 1]).await;
    match ReplicationClient::new(port).fetch(call(stale, secret)).await {
        Err(status) => {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains("restarted since"), "{status:?}");
        }
        Ok(answer) => panic!("a fetch of an old incarnation was served: {answer:?}"),
    }
    let after = admin.describe_topic("t").await.expect("describe t");
    assert_eq!(after.partitions[0].high_watermark, high_watermark, "the HW did not move");

    // A dead broker's old incarnation keeps nobody alive, whoever's secret
    // its heartbeats carry.
    cluster.broker(3).kill();
    wait_declared_dead(&admin, 3).await;
    let old = payload(serde_json::to_vec(&serde_json::json!({ "broker_id": 3, "broker_epoch": 0 })).expect("json"));
    for address in &cluster.internal_addresses[..2] {
        let port = channel(address).await;
        for _ in 0..20 {
            let _ = MetadataForwardingClient::new(port.clone()).heartbeat(call(old.clone(), secret)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let brokers = admin.describe_cluster().await.expect("describe cluster").brokers;
    assert!(brokers.iter().any(|broker| broker.id == 3 && !broker.alive), "old heartbeats revived it: {brokers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_with_the_secret_is_still_checked_like_an_admin_call() {
    let cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    let secret = Some(cluster.secret.as_str());
    for name in ["../escape", "a/b", "", ".."] {
        // Sent to a broker, which answers where the controller is; then to
        // the controller.
        let mut address = cluster.internal_addresses[0].clone();
        let mut text = String::new();
        for _ in 0..3 {
            let port = channel(&address).await;
            let answer = MetadataForwardingClient::new(port).propose(call(forged_topic(name), secret)).await;
            let reply = answer.expect("a proposal with the secret is heard").into_inner();
            text = String::from_utf8_lossy(&reply.json).to_string();
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            match value.pointer("/Err/ForwardTo/address").and_then(|address| address.as_str()) {
                Some(controller) => address = controller.to_string(),
                None => break,
            }
        }
        assert!(text.contains("InvalidTopicName"), "the name {name:?} was not refused as a name: {text}");
    }
    let topics = admin.list_topics().await.expect("list");
    assert!(topics.is_empty(), "no forged topic exists: {topics:?}");

    // A replica fetch naming one partition 10,000 times (about 300 KB of
    // request, which would ask for 10,000 answers of up to 4 MiB each) is
    // refused whole; the broker stays up.
    admin.create_topic(NewTopic::new("t", 1, 3)).await.expect("create t");
    let mut fetch = replica_fetch(TopicId::random().as_bytes());
    fetch.partitions = vec![fetch.partitions[0].clone(); 10_000];
    for address in &cluster.internal_addresses {
        let port = channel(address).await;
        let refused = ReplicationClient::new(port).fetch(call(fetch.clone(), secret)).await;
        match refused {
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains("appears twice"), "{status:?}");
            }
            Ok(answer) => panic!("served: {} partitions", answer.into_inner().partitions.len()),
        }
    }
    assert!(admin.list_topics().await.is_ok(), "the brokers answer");
}
