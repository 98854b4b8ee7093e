//! The Prometheus endpoint of a real broker: request counts, bytes and
//! per-partition offsets after some traffic; a clear 404 elsewhere.

use crate::harness;

use brook_client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
use harness::{free_port, http_get, Broker};

fn value_of(text: &str, series: &str) -> f64 {
    let line =
        text.lines().find(|line| line.starts_with(series)).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    line.rsplit(' ').next().and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_bytes_and_partition_offsets() {
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start_with(&["--metrics-listen", &metrics_address]).await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("m", 2, 1)).await.expect("create");
    // A long linger: both partitions' batches are sealed together by
    // `close`, and go in one request (ProduceMany), counted once as such
    // and once per partition as `produce`.
    let config = ProducerConfig { linger: std::time::Duration::from_secs(30), ..ProducerConfig::default() };
    let producer = Producer::connect(&broker.address, config).await.expect("producer");
    for index in 0..1000u32 {
        producer.send(ProducerRecord::new("m", index.to_string()).partition(index % 2)).await.expect("send");
    }
    producer.close().await;

    let response = tokio::task::spawn_blocking({
        let address = metrics_address.clone();
        move || http_get(&address, "/metrics")
    })
    .await
    .expect("task");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(value_of(&response, "brook_requests_total{api=\"produce\",outcome=\"ok\",broker=\"1\"}"), 2.0);
    assert_eq!(value_of(&response, "brook_requests_total{api=\"produce_many\",outcome=\"ok\",broker=\"1\"}"), 1.0);
    assert_eq!(value_of(&response, "brook_records_in_total{topic=\"m\",broker=\"1\"}"), 1000.0);
    assert!(value_of(&response, "brook_bytes_in_total{topic=\"m\",broker=\"1\"}") > 1000.0);
    assert_eq!(value_of(&response, "brook_log_end_offset{partition=\"0\",topic=\"m\",broker=\"1\"}"), 500.0);
    assert_eq!(value_of(&response, "brook_high_watermark{partition=\"1\",topic=\"m\",broker=\"1\"}"), 500.0);
    assert_eq!(value_of(&response, "brook_isr_size{partition=\"1\",topic=\"m\",broker=\"1\"}"), 1.0);
    assert!(value_of(&response, "brook_log_size_bytes{partition=\"0\",topic=\"m\",broker=\"1\"}") > 0.0);
    assert_eq!(value_of(&response, "brook_under_replicated_partitions{broker=\"1\"}"), 0.0);
    assert_eq!(value_of(&response, "brook_partitions{broker=\"1\"}"), 2.0);
    assert!(response.contains("brook_request_duration_seconds_bucket{api=\"produce\""));
    // Every call is timed, admin ones included; the standard process metrics.
    assert!(
        value_with(
            &response,
            "brook_rpc_duration_seconds_count",
            &["method=\"CreateTopic\"", "service=\"brook.v1.Admin\""]
        ) >= 1.0
    );
    assert!(value_of(&response, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(value_of(&response, "process_open_fds") > 0.0);

    let missing = tokio::task::spawn_blocking(move || http_get(&metrics_address, "/nope")).await.expect("task");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");
}

/// The value of the one series of `metric` whose labels include all of `labels`.
fn value_with(text: &str, metric: &str, labels: &[&str]) -> f64 {
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{metric}{{")) && labels.iter().all(|label| line.contains(label)))
        .unwrap_or_else(|| panic!("{metric} {labels:?} missing:\n{text}"));
    line.rsplit(' ').next().and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_group_lag_members_and_rebalances() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use brook_client::{Consumer, ConsumerConfig, Offset, TopicPartition};

    let metrics_address = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start_with(&["--metrics-listen", &metrics_address]).await;
    Admin::connect(&broker.address).await.expect("admin").create_topic(NewTopic::new("g", 2, 1)).await.expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig::default()).await.expect("producer");
    for index in 0..100u32 {
        producer.send(ProducerRecord::new("g", index.to_string()).partition(index % 2)).await.expect("send");
    }
    producer.close().await;
    let config = ConsumerConfig { group_id: Some("readers".into()), ..ConsumerConfig::default() };
    let mut outside = Consumer::connect(&broker.address, config.clone()).await.expect("consumer");
    outside.assign(vec![TopicPartition::new("g", 0), TopicPartition::new("g", 1)]).await.expect("assign");
    let commits =
        BTreeMap::from([(TopicPartition::new("g", 0), Offset(10)), (TopicPartition::new("g", 1), Offset(45))]);
    outside.commit_offsets(commits).await.expect("commit");
    let config = ConsumerConfig { enable_auto_commit: false, ..config };
    let mut member = Consumer::connect(&broker.address, config).await.expect("member");
    member.subscribe(&["g"]).await.expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while member.assignment().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the member got both partitions in time");
        member.poll(Duration::from_millis(100)).await.expect("poll");
    }

    let response = tokio::task::spawn_blocking(move || http_get(&metrics_address, "/metrics")).await.expect("task");
    let lag = |partition: &str| value_with(&response, "brook_consumer_group_lag", &["group=\"readers\"", partition]);
    assert_eq!(lag("partition=\"0\""), 40.0);
    assert_eq!(lag("partition=\"1\""), 5.0);
    assert_eq!(value_with(&response, "brook_consumer_group_members", &["group=\"readers\""]), 1.0);
    assert!(value_with(&response, "brook_consumer_group_epoch", &["group=\"readers\""]) >= 1.0);
    assert!(response.contains("brook_request_duration_seconds_bucket{api=\"consumer_group_heartbeat\""));
}
