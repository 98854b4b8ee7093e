//! The standard gRPC services a broker serves beside Brook's own, so that
//! grpcurl-style tools and health checkers work.

use crate::harness;

use harness::Broker;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The services a broker lists through reflection, sorted: the same call
/// in each version's own generated types (`v1`, `v1alpha`).
macro_rules! listed_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut reflection = ServerReflectionClient::new($channel);
        let mut responses =
            reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
        let response = responses.message().await.expect("a response").expect("not empty");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer: {response:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
        names.sort();
        names
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let broker = Broker::start().await;
    let channel =
        Channel::from_shared(format!("http://{}", broker.address)).expect("uri").connect().await.expect("connect");

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "brook.v1.Records", "brook.v1.Admin"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.expect("health check");
        assert_eq!(response.into_inner().status, ServingStatus::Serving as i32, "{service:?}");
    }

    let names = listed_services!(v1, channel.clone());
    let expected = [
        "brook.v1.Admin",
        "brook.v1.Groups",
        "brook.v1.Metadata",
        "brook.v1.Records",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    assert_eq!(names, expected, "the client listener's services, and not the internal ones");
    // Older grpcurl, grpcui and Postman ask v1alpha: the same answer.
    assert_eq!(listed_services!(v1alpha, channel), names, "v1alpha lists what v1 lists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_the_metadata_caught_up() {
    // A cluster member alone: without a majority its metadata never
    // catches up, so it must not say it serves.
    let internal = format!("127.0.0.1:{}", harness::free_port());
    let peers = format!("1={internal},2=127.0.0.1:{},3=127.0.0.1:{}", harness::free_port(), harness::free_port());
    let address = format!("127.0.0.1:{}", harness::free_port());
    let args =
        ["--id", "1", "--peers", &peers, "--internal-listen", &internal, "--controlled-shutdown-timeout-ms", "300"];
    let lone =
        Broker::start_prepared(address, &args, &[("BROOK_CLUSTER_SECRET", "a-secret-of-enough-length")], |_| {}).await;
    let channel =
        Channel::from_shared(format!("http://{}", lone.address)).expect("uri").connect().await.expect("connect");
    let status = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(status.expect("health check").into_inner().status, ServingStatus::NotServing as i32);
    let health = lone.command().arg("health").output().expect("brook health");
    assert!(!health.status.success(), "brook health fails: {}", String::from_utf8_lossy(&health.stdout));
    assert!(String::from_utf8_lossy(&health.stderr).contains("not serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_passes_only_with_every_broker_up_and_every_isr_full() {
    let mut cluster = harness::TestCluster::start(3).await;
    let admin = brook_client::Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(brook_client::NewTopic::new("h", 2, 3)).await.expect("create");
    let cluster_health = |cluster: &harness::TestCluster| {
        let output = std::process::Command::new(harness::BROOK)
            .args(["cluster", "health"])
            .env("BROOK_BOOTSTRAP", cluster.address(1))
            .env_remove("RUST_LOG")
            .output()
            .expect("brook cluster health");
        (output.status.success(), String::from_utf8_lossy(&output.stdout).to_string())
    };
    harness::eventually("a healthy cluster", std::time::Duration::from_secs(20), || {
        let (healthy, text) = cluster_health(&cluster);
        async move {
            if healthy {
                Ok(())
            } else {
                Err(text)
            }
        }
    })
    .await;
    cluster.broker(3).kill();
    let text = harness::eventually("broker 3 reported down", std::time::Duration::from_secs(20), || {
        let (healthy, text) = cluster_health(&cluster);
        async move {
            if !healthy && text.contains("broker 3") {
                Ok(text)
            } else {
                Err(text)
            }
        }
    })
    .await;
    assert!(text.contains("is down"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_as_soon_as_a_broker_is_asked_to_stop() {
    let mut cluster = harness::TestCluster::start(3).await;
    let address = cluster.address(3);
    let channel = Channel::from_shared(format!("http://{address}")).expect("uri").connect().await.expect("connect");
    let mut health = HealthClient::new(channel);
    let status = |response: Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>| {
        response.ok().map(|response| response.into_inner().status)
    };
    let serving = status(health.check(HealthCheckRequest { service: String::new() }).await);
    assert_eq!(serving, Some(ServingStatus::Serving as i32), "a caught-up cluster member serves");
    // SIGTERM: it hands its leaderships over and keeps answering a moment
    // longer before it stops; from the signal on, it is not serving.
    cluster.broker(3).signal("-TERM");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let answer = status(health.check(HealthCheckRequest { service: String::new() }).await);
        seen.push(answer);
        if answer.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(seen.contains(&Some(ServingStatus::NotServing as i32)), "NOT_SERVING while stopping: {seen:?}");
    let after_not_serving = seen.iter().skip_while(|answer| **answer != Some(ServingStatus::NotServing as i32));
    assert!(
        after_not_serving.clone().all(|answer| *answer != Some(ServingStatus::Serving as i32)),
        "never serving again once stopping: {seen:?}"
    );
}
