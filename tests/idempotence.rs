//! Idempotent producers against real brokers: a retried batch is answered
//! with the offsets it got the first time and written once, over a lost
//! answer, a leader failover and a kill -9; gaps and fenced epochs are
//! refused by name; keyed producers get the next epoch on restart.

use crate::harness;
use crate::harness::error_name;

use brook_client::ErrorCode;
use std::time::Duration;

use brook_client::proto::{Acks as WireAcks, InitProducerIdRequest, ProduceRequest, ProduceResponse};
use brook_client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use brook_record::{BatchBuilder, NewRecord};
use bytes::Bytes;
use harness::{eventually, free_port, http_get, records_client, Broker, LinkDirection, LinkProxy, TestCluster};

/// A batch of `count` records from producer `id` at `epoch`, starting at
/// `sequence`; values name the sequence.
fn batch(id: i64, epoch: i16, sequence: i32, count: i32) -> Bytes {
    let mut builder = BatchBuilder::new(1024).with_producer(id, epoch, sequence);
    for index in 0..count {
        let value = format!("seq-{}", sequence + index);
        builder.push(&NewRecord { timestamp_ms: 1, key: None, value: Some(value.as_bytes()), headers: &[] });
    }
    builder.finish()
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: WireAcks::All as i32,
        timeout_ms: 0,
        records,
        batches: Vec::new(),
    }
}

async fn send(address: &str, topic: &str, records: Bytes) -> Result<ProduceResponse, tonic::Status> {
    records_client(address).await.produce(produce(topic, records)).await.map(tonic::Response::into_inner)
}

async fn init(address: &str, key: &str) -> (i64, i16) {
    let answer = records_client(address)
        .await
        .init_producer_id(InitProducerIdRequest { producer_key: key.into() })
        .await
        .expect("init producer id")
        .into_inner();
    (answer.producer_id, answer.producer_epoch as i16)
}

/// `eventually`'s shape for a check that yields an `Option`.
fn seen<T>(value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| "not yet".to_string())
}

/// Every value of partition 0 of `topic`, read from the start.
async fn values(bootstrap: &str, topic: &str, expected: usize) -> Vec<String> {
    let mut consumer = Consumer::connect(
        bootstrap,
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    )
    .await
    .expect("consumer");
    consumer.assign(vec![TopicPartition::new(topic, 0)]).await.expect("assign");
    let mut values = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while values.len() < expected && tokio::time::Instant::now() < give_up {
        for record in consumer.poll(Duration::from_millis(300)).await.expect("poll") {
            values.push(String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    // Anything past what was expected would be a duplicate: look once more.
    for record in consumer.poll(Duration::from_millis(500)).await.expect("poll") {
        values.push(String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned());
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_answers_a_retry_with_its_offsets_and_refuses_gaps_and_fenced_epochs() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("ids", 1, 1)).await.expect("create");
    let (id, epoch) = init(&broker.address, "").await;
    let (other, _) = init(&broker.address, "").await;
    assert_ne!(id, other, "each producer without a key gets its own id");
    assert_eq!(epoch, 0);

    let first = send(&broker.address, "ids", batch(id, 0, 0, 3)).await.expect("first");
    assert!(!first.duplicate);
    let retry = send(&broker.address, "ids", batch(id, 0, 0, 3)).await.expect("retry");
    assert!(retry.duplicate, "the retry is recognised");
    assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));

    let gap = send(&broker.address, "ids", batch(id, 0, 5, 1)).await.expect_err("a gap");
    assert_eq!(error_name(&gap), ErrorCode::OutOfOrderSequenceNumber.name());
    assert_eq!(gap.code(), tonic::Code::FailedPrecondition);
    assert!(gap.message().contains("expected 3"), "{}", gap.message());

    // A keyed producer restarting: same id, next epoch; the old epoch is fenced.
    let (keyed, epoch_0) = init(&broker.address, "billing").await;
    send(&broker.address, "ids", batch(keyed, epoch_0, 0, 1)).await.expect("first life");
    let (same, epoch_1) = init(&broker.address, "billing").await;
    assert_eq!((same, epoch_1), (keyed, epoch_0 + 1));
    send(&broker.address, "ids", batch(keyed, epoch_1, 0, 1)).await.expect("second life");
    let fenced = send(&broker.address, "ids", batch(keyed, epoch_0, 1, 1)).await.expect_err("fenced");
    assert_eq!(error_name(&fenced), ErrorCode::InvalidProducerEpoch.name());

    let empty_key_too_long = records_client(&broker.address)
        .await
        .init_producer_id(InitProducerIdRequest { producer_key: "k".repeat(300) })
        .await
        .expect_err("a key past 255 bytes");
    assert_eq!(empty_key_too_long.code(), tonic::Code::InvalidArgument);
    assert!(empty_key_too_long.message().contains("producer key"), "{}", empty_key_too_long.message());

    let stored = values(&broker.address, "ids", 5).await;
    assert_eq!(stored, ["seq-0", "seq-1", "seq-2", "seq-0", "seq-0"], "each batch once");
}

async fn wait_for_leader_other_than(admin: &Admin, old: u32) -> u32 {
    eventually("a new leader", Duration::from_secs(30), || async move {
        let described = seen(admin.describe_topic("seq").await.ok())?;
        let partition = &described.partitions[0];
        seen((partition.leader != old && partition.leader != 0).then_some(partition.leader))
    })
    .await
}

async fn wait_for_full_isr(admin: &Admin) {
    eventually("every replica in the ISR", Duration::from_secs(30), || async move {
        seen((seen(admin.describe_topic("seq").await.ok())?.partitions[0].isr.len() == 3).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_survive_a_kill_9_and_a_leader_failover() {
    let mut cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    // Small segments: the state comes back from a roll's snapshot plus the
    // batches after it.
    let created = admin
        .create_topic(NewTopic::new("seq", 1, 3).config("min.insync.replicas", "2").config("segment.bytes", "2048"))
        .await
        .expect("create");
    let leader = created.partitions[0].leader;
    let (id, epoch) = init(&cluster.address(1), "").await;
    let mut answers = Vec::new();
    for sequence in (0..200).step_by(10) {
        let address = cluster.address(leader);
        answers.push(send(&address, "seq", batch(id, epoch, sequence, 10)).await.expect("append"));
    }

    cluster.broker(leader).kill();
    let new_leader = wait_for_leader_other_than(&admin, leader).await;
    // Retries of the last batches, sent to the new leader: duplicates.
    for (index, sequence) in [(19, 190), (18, 180)] {
        let retry =
            eventually("the new leader answers", Duration::from_secs(20), || {
                let address = cluster.address(new_leader);
                async move {
                    send(&address, "seq", batch(id, epoch, sequence, 10)).await.map_err(|status| status.to_string())
                }
            })
            .await;
        assert!(retry.duplicate, "batch {sequence} is known to the new leader");
        assert_eq!(retry.base_offset, answers[index].base_offset);
    }
    send(&cluster.address(new_leader), "seq", batch(id, epoch, 200, 10)).await.expect("the next batch");

    // Brokers killed with -9 recover the state from disk: kill leaders
    // until one of those leads (at most two rounds: the third broker, never
    // killed, may be chosen once).
    cluster.broker(leader).restart().await;
    let mut recovered = vec![leader];
    let mut current = new_leader;
    let final_leader = loop {
        wait_for_full_isr(&admin).await;
        cluster.broker(current).kill();
        let next = wait_for_leader_other_than(&admin, current).await;
        if recovered.contains(&next) {
            break next;
        }
        cluster.broker(current).restart().await;
        recovered.push(current);
        current = next;
    };
    let leader = final_leader;
    // acks=1: the answer need not wait for the restarted follower.
    let mut request = produce("seq", batch(id, epoch, 200, 10));
    request.acks = WireAcks::Leader as i32;
    let retry = records_client(&cluster.address(leader)).await.produce(request).await.expect("retry").into_inner();
    assert!(retry.duplicate, "the broker killed with -9 rebuilt the producer's state");
    assert_eq!(retry.base_offset, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_on_the_way_back_do_not_duplicate_or_reorder_the_producers_records() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = LinkProxy::in_front_of(address.clone()).await;
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let broker =
        Broker::start_at(address, &["--advertised-address", &proxy.address, "--metrics-listen", &metrics_address])
            .await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("lost", 1, 1)).await.expect("create");
    let producer = harness::retrying_producer(&proxy.address).await;
    let send_range = |from: usize, to: usize| {
        let producer = &producer;
        async move {
            let mut deliveries = Vec::new();
            for index in from..to {
                let record = ProducerRecord::new("lost", format!("seq-{index}").into_bytes()).partition(0);
                deliveries.push(producer.send(record).await.expect("send"));
            }
            deliveries
        }
    };
    for delivery in send_range(0, 100).await {
        delivery.await.expect("delivered");
    }
    // The broker appends what arrives, but its answers are held: requests
    // time out, the producer retries, and the retries reach the broker.
    proxy.cut(LinkDirection::Answers, true);
    let in_the_dark = send_range(100, 300).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    proxy.cut(LinkDirection::Answers, false);
    let mut offsets = Vec::new();
    for delivery in in_the_dark {
        offsets.push(delivery.await.expect("delivered after the cut").offset.expect("offset").0);
    }
    assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 1), "the offsets answered follow each other");
    for delivery in send_range(300, 400).await {
        delivery.await.expect("delivered");
    }
    let stored = values(&broker.address, "lost", 400).await;
    let expected: Vec<String> = (0..400).map(|index| format!("seq-{index}")).collect();
    assert_eq!(stored.len(), expected.len(), "each record once");
    assert_eq!(stored, expected, "in the order sent");
    // The retries reached the broker and were answered from the log.
    let metrics = tokio::task::spawn_blocking(move || http_get(&metrics_address, "/metrics")).await.expect("task");
    let duplicates: f64 = metrics
        .lines()
        .find(|line| line.starts_with("brook_duplicate_batches_total{topic=\"lost\""))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(duplicates > 0.0, "the cut made the producer retry batches the broker had appended:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_good_leaves_no_gap_that_stops_the_partition() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("gap", 1, 1).config("max.message.bytes", "2048")).await.expect("create");
    let producer = Producer::connect(&broker.address, ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })
        .await
        .expect("producer");
    let send = |value: Vec<u8>| {
        let producer = &producer;
        async move { producer.send(ProducerRecord::new("gap", value).partition(0)).await.expect("send").await }
    };
    for index in 0..3 {
        send(format!("before-{index}").into_bytes()).await.expect("delivered");
    }
    // Its own batch, over the topic's limit: refused for good, so its
    // sequence numbers never reach the log.
    let refused = send(vec![b'x'; 4096]).await.expect_err("too large for the topic");
    assert_eq!(refused.code_name(), Some(ErrorCode::RecordTooLarge.name()), "{refused}");
    // The next batches would follow the refused one's sequences: the
    // producer takes a new id and renumbers them, so they land.
    for index in 0..3 {
        send(format!("after-{index}").into_bytes()).await.expect("delivered after the refusal");
    }
    let stored = values(&broker.address, "gap", 6).await;
    assert_eq!(stored, ["before-0", "before-1", "before-2", "after-0", "after-1", "after-2"]);
    let ids_handed_out = broker.log().matches("producer id handed out").count();
    assert_eq!(ids_handed_out, 2, "the producer took a second id after the refusal");
}
