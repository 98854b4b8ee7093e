//! The standard gRPC services a broker serves beside Brook's own, so that
//! grpcurl-style tools and health checkers work.

mod harness;

use harness::Broker;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

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

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
    let response = responses.message().await.expect("a response").expect("not empty");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    names.sort();
    for expected in
        ["brook.v1.Admin", "brook.v1.Groups", "brook.v1.Metadata", "brook.v1.Records", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
}
