//! What a client nobody controls may send, against a real broker: each
//! test crafts the input and checks that it is refused by name (or
//! skipped and reported), that the broker stays up and that its memory
//! does not follow what the input claims.
//!
//! Compressed batches whose header lies: xerial's snappy framing states
//! each block's length, and a 5-byte block `FF FF FF FF 0F` claims 4 GiB;
//! a zstd stream of 64 MiB of zeros weighs a few KiB. Decompression is
//! bounded by what the batch may hold (its record count times the topic's
//! `max.message.bytes`, and never more than 128 MiB), checked before
//! anything is allocated.
//!
//! Requests that become metadata commands: a 12 MB offset commit, a
//! heartbeat owning 60,000 partitions, 2,000 commits at once. Each is
//! refused by name at admission, or split under the metadata group's
//! 1 MiB limit on one entry, and the controller still fails over after.
//! A broker that restarts behind the metadata snapshot is sent a state of
//! many MiB in 1 MiB chunks (postcard-encoded, not JSON numbers).
//!
//! Connections that say nothing or never finish: 1,000 silent sockets on
//! the internal listener are closed after the 10 s handshake deadline, so
//! a restarted broker rejoins; a SIGTERMed broker with a silent client
//! socket open stops within the shutdown grace; 200 calls on one
//! connection whose 64 MiB bodies never end hold at most the request
//! memory budget, and are refused by name.
//!
//! Groups that tools create and forget: an empty group's offsets expire
//! after `offsets_retention_ms` unchanged; a group with members stays; a
//! group takes at most `group_max_size` members.
//!
//! A producer whose records carry old timestamps (a backfill, a replay, a
//! skewed clock): the leader forgets idle producers by its own clock, so
//! a retry whose first answer was lost is still recognised; and where the
//! leader has truly forgotten the producer, the client fails the retry as
//! of unknown outcome instead of writing it a second time.
//!
//! Producer keys that tools create and forget: a key neither initialised
//! nor used to append for `producer_key_expiration_ms` is forgotten; one
//! whose producer keeps appending keeps its id, so a new instance still
//! fences the old.

use crate::harness;
use crate::harness::error_name;

use brook_client::ErrorCode;
use std::time::Duration;

use brook_client::proto::{Acks, ProduceRequest};
use brook_client::{Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, ProducerRecord, TopicPartition};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use harness::{eventually, free_port, Broker, LinkDirection, LinkProxy, TestCluster};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// One record of `value`, as kafka-protocol's encoder builds its batch.
fn kafka_batch(value: Bytes, compression: Compression) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(value),
        headers: Default::default(),
        delete_horizon: Default::default(),
    };
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buffer, &[record], &options).expect("kafka-protocol encodes");
    buffer.freeze()
}

/// A batch of one record whose records area is `area` under `codec`, with
/// its length and CRC right: only what the area claims is false.
fn batch_with_area(codec: u8, area: &[u8]) -> Bytes {
    let mut batch = BytesMut::from(&kafka_batch(Bytes::from_static(b"x"), Compression::None)[..61]);
    batch.extend_from_slice(area);
    let length = (batch.len() - 12) as u32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[22] = (batch[22] & !0x07) | codec;
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

/// xerial's snappy framing with one block that claims 4 GiB.
fn snappy_block_claiming_4_gib() -> Bytes {
    let mut area = b"\x82SNAPPY\x00".to_vec();
    area.extend_from_slice(&1u32.to_be_bytes());
    area.extend_from_slice(&1u32.to_be_bytes());
    area.extend_from_slice(&5u32.to_be_bytes());
    area.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    batch_with_area(2, &area)
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::All as i32,
        timeout_ms: 0,
        records,
        batches: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_batch_that_lies_about_its_size_is_refused_by_a_recompressing_leader_without_allocating_it() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("lz", 1, 1).config("compression.type", "lz4")).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let peak_before = broker.peak_rss_bytes().expect("the broker's peak RSS");

    let zeros = kafka_batch(Bytes::from(vec![0u8; 64 << 20]), Compression::Zstd);
    println!("a zstd batch of one 64 MiB record of zeros: {} bytes", zeros.len());
    for (what, bomb) in [("snappy block claiming 4 GiB", snappy_block_claiming_4_gib()), ("zstd bomb", zeros)] {
        let status = records.produce(produce("lz", bomb)).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
        let name = status.metadata().get("brook-error").and_then(|value| value.to_str().ok()).unwrap_or_default();
        assert_eq!(name, ErrorCode::CorruptRecord.name(), "{what}: {status:?}");
        assert!(status.message().contains("decompress to more than 1048576 bytes"), "{what}: {status:?}");
    }
    let peak_after = broker.peak_rss_bytes().expect("the broker's peak RSS");
    println!("broker peak RSS {} MiB before, {} MiB after", peak_before >> 20, peak_after >> 20);
    assert!(peak_after < peak_before + (32 << 20), "the broker's peak RSS rose from {peak_before} to {peak_after}");

    // Nothing was stored, and an honest batch still is.
    let honest = records.produce(produce("lz", kafka_batch(Bytes::from_static(b"ok"), Compression::Snappy))).await;
    assert_eq!(honest.expect("an honest batch").into_inner().base_offset, 0, "the refused batches took no offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_skips_and_reports_a_stored_batch_that_lies_about_its_size_and_reads_on() {
    // A topic that stores batches as the producer sent them: the leader
    // never decompresses, so the lying batch is stored, as it was by
    // brokers before decompression was bounded.
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("p", 1, 1)).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let stored = records.produce(produce("p", snappy_block_claiming_4_gib())).await.expect("stored as sent");
    assert_eq!(stored.into_inner().base_offset, 0);
    for index in 0..5u8 {
        let batch = kafka_batch(Bytes::from(vec![b'a' + index; 100]), Compression::Lz4);
        records.produce(produce("p", batch)).await.expect("an honest batch");
    }

    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["p"]).await.expect("subscribe");
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read.len() < 5 && std::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.expect("poll goes on past the batch") {
            read.push((record.offset.0, record.value.expect("value")[0]));
        }
    }
    assert_eq!(read, vec![(1, b'a'), (2, b'b'), (3, b'c'), (4, b'd'), (5, b'e')], "offset 0 skipped, the rest read");
}

/// A broker behind a proxy that can hold its answers, forgetting idle
/// producers every 100 ms, with topic `topic` (one partition) made with
/// `configs`.
async fn broker_behind_proxy(topic: &str, configs: &[(&str, &str)]) -> (Broker, LinkProxy) {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = LinkProxy::in_front_of(address.clone()).await;
    let broker =
        Broker::start_at(address, &["--advertised-address", &proxy.address, "--log-maintenance-interval-ms", "100"])
            .await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    let mut new_topic = NewTopic::new(topic, 1, 1);
    for (key, value) in configs {
        new_topic = new_topic.config(*key, *value);
    }
    admin.create_topic(new_topic).await.expect("create");
    (broker, proxy)
}

/// Sends 400 records stamped `timestamp_ms`, the broker's answers held
/// for 4 s while records 100..300 go out; every delivery's outcome, in
/// order.
async fn send_through_a_lost_answer(
    proxy: &LinkProxy,
    topic: &str,
    timestamp_ms: i64,
) -> Vec<Result<u64, brook_client::ClientError>> {
    let producer = harness::retrying_producer(&proxy.address).await;
    let send_range = |from: usize, to: usize| {
        let producer = &producer;
        async move {
            let mut deliveries = Vec::new();
            for index in from..to {
                let mut record = ProducerRecord::new(topic, format!("seq-{index}").into_bytes()).partition(0);
                record.timestamp_ms = Some(timestamp_ms);
                deliveries.push(producer.send(record).await.expect("send"));
            }
            deliveries
        }
    };
    let mut outcomes = Vec::new();
    for delivery in send_range(0, 100).await {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    // The broker appends what arrives, but its answers are held: requests
    // time out and the producer retries batches the broker has appended.
    proxy.cut(LinkDirection::Answers, true);
    let in_the_dark = send_range(100, 300).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    proxy.cut(LinkDirection::Answers, false);
    for delivery in in_the_dark {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    for delivery in send_range(300, 400).await {
        outcomes.push(delivery.await.map(|delivered| delivered.offset.expect("offset").0));
    }
    outcomes
}

/// Every value stored in partition 0 of `topic`, read from the start
/// until nothing more comes.
async fn stored_values(bootstrap: &str, topic: &str) -> Vec<String> {
    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(bootstrap, config).await.expect("consumer");
    consumer.assign(vec![TopicPartition::new(topic, 0)]).await.expect("assign");
    let mut values = Vec::new();
    let mut quiet_polls = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while quiet_polls < 3 && std::time::Instant::now() < give_up {
        let records = consumer.poll(Duration::from_millis(300)).await.expect("poll");
        quiet_polls = if records.is_empty() { quiet_polls + 1 } else { 0 };
        for record in records {
            values.push(String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    values
}

fn two_days_ago_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    now as i64 - 48 * 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stamped_two_days_ago_and_a_lost_answer_are_each_written_once() {
    // The topic keeps idle producers for 24 h (the default); the records
    // say they were made 48 h ago. Measured by their timestamps, the
    // producer would be forgotten at every maintenance pass.
    let (broker, proxy) = broker_behind_proxy("backfill", &[]).await;
    let outcomes = send_through_a_lost_answer(&proxy, "backfill", two_days_ago_ms()).await;
    let offsets: Vec<u64> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| outcome.unwrap_or_else(|error| panic!("record {index} not delivered: {error}")))
        .collect();
    assert!(offsets.windows(2).all(|pair| pair[1] == pair[0] + 1), "the offsets answered follow each other");
    let stored = stored_values(&broker.address, "backfill").await;
    let expected: Vec<String> = (0..400).map(|index| format!("seq-{index}")).collect();
    assert_eq!(stored, expected, "each record once, in the order sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_the_leader_forgot_fails_as_unknown_and_is_never_written_twice() {
    // Idle producers forgotten after 500 ms on the broker's clock: the
    // broker forgets this one while its answers are held, so the retry of
    // an appended batch cannot be placed.
    let (broker, proxy) = broker_behind_proxy("forgetful", &[("producer.id.expiration.ms", "500")]).await;
    let outcomes = send_through_a_lost_answer(&proxy, "forgetful", two_days_ago_ms()).await;
    let stored = stored_values(&broker.address, "forgetful").await;
    let mut seen = std::collections::HashSet::new();
    for value in &stored {
        assert!(seen.insert(value.as_str()), "{value} was written twice: {stored:?}");
    }
    let mut unknown = 0;
    for (index, outcome) in outcomes.iter().enumerate() {
        let value = format!("seq-{index}");
        match outcome {
            Ok(_) => assert!(seen.contains(value.as_str()), "{value} was acknowledged but is not stored"),
            Err(error) => {
                assert!((100..300).contains(&index), "{value} failed outside the cut: {error}");
                assert!(error.to_string().contains("may or may not have been appended"), "{value}: {error}");
                unknown += 1;
            }
        }
    }
    println!("{unknown} records of unknown outcome, {} stored", stored.len());
    // Records sent after the cut are delivered: the producer went on
    // under a new epoch.
    assert!(outcomes[300..].iter().all(Result::is_ok), "the producer goes on after the refusal");
}

/// The controller's id and a groups client on it, as `address` sees it,
/// once that is a broker other than `not`.
async fn coordinator(
    address: &str,
    not: Option<u32>,
) -> (u32, brook_client::proto::groups_client::GroupsClient<tonic::transport::Channel>) {
    eventually("a controller that answers", Duration::from_secs(30), || async {
        let admin = Admin::connect(address).await.map_err(|e| e.to_string())?;
        let info = admin.describe_cluster().await.map_err(|e| e.to_string())?;
        let controller = info
            .brokers
            .iter()
            .find(|broker| broker.id == info.controller_id && broker.alive && Some(broker.id) != not)
            .ok_or_else(|| format!("{info:?}"))?;
        let client =
            brook_client::proto::groups_client::GroupsClient::connect(format!("http://{}", controller.address))
                .await
                .map_err(|e| e.to_string())?
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
        Ok((controller.id, client))
    })
    .await
}

/// A standalone commit to `group` of `offsets` (topic, partition) pairs,
/// each with `metadata_bytes` of metadata.
fn commit_request(
    group: &str,
    offsets: impl IntoIterator<Item = (String, u32)>,
    metadata_bytes: usize,
) -> brook_client::proto::CommitOffsetsRequest {
    brook_client::proto::CommitOffsetsRequest {
        group_id: group.into(),
        offsets: offsets
            .into_iter()
            .map(|(topic, partition)| brook_client::proto::OffsetCommit {
                topic,
                partition,
                offset: 1,
                metadata: "m".repeat(metadata_bytes),
            })
            .collect(),
        member_id: String::new(),
        member_epoch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_requests_are_refused_at_once_and_the_controller_still_fails_over() {
    let mut cluster = TestCluster::start(3).await;
    cluster.wait_all_alive().await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 3)).await.expect("create");
    let (controller, mut groups) = coordinator(&cluster.address(1), None).await;

    // One commit of 3,000 offsets with 4 KiB of metadata each: 12 MB.
    let started = std::time::Instant::now();
    let huge = commit_request("huge", (0..3000).map(|_| ("t".to_string(), 0)), 4096);
    let refused = groups.commit_offsets(huge).await.expect_err("a 12 MB commit");
    println!("12 MB commit refused in {:?}: {}", started.elapsed(), refused.message());
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(error_name(&refused), ErrorCode::MessageTooLarge.name(), "{refused:?}");
    assert!(refused.message().contains("a commit of 3000 offsets"), "{refused:?}");
    let metadata = commit_request("huge", [("t".to_string(), 0)], 4097);
    let refused = groups.commit_offsets(metadata).await.expect_err("4097 bytes of metadata");
    assert_eq!(error_name(&refused), ErrorCode::OffsetMetadataTooLarge.name(), "{refused:?}");

    // A join that claims to own 60,000 partitions.
    let heartbeat = brook_client::proto::ConsumerGroupHeartbeatRequest {
        group_id: "owners".into(),
        member_id: "m-1".into(),
        member_epoch: 0,
        subscribed_topics: vec!["t".into()],
        owned: (0..60_000)
            .map(|partition| brook_client::proto::TopicPartition { topic: "t".into(), partition })
            .collect(),
        ..Default::default()
    };
    let refused = groups.consumer_group_heartbeat(heartbeat).await.expect_err("60,000 owned partitions");
    assert_eq!(error_name(&refused), ErrorCode::MessageTooLarge.name(), "{refused:?}");

    // 2,000 commits of 4 KiB metadata at once: 8 MB if batched into one
    // entry; split, every one lands.
    let started = std::time::Instant::now();
    let mut commits = tokio::task::JoinSet::new();
    for index in 0..2000 {
        let mut groups = groups.clone();
        let request = commit_request(&format!("g-{index}"), [("t".to_string(), 0)], 4096);
        commits.spawn(async move { groups.commit_offsets(request).await });
    }
    let results = commits.join_all().await;
    let failed: Vec<_> = results.iter().filter_map(|result| result.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of 2000 commits failed, first: {:?}", failed.len(), failed.first());
    println!("2,000 commits of 4 KiB metadata in {:?}", started.elapsed());

    // The metadata group was never stalled: the controller fails over.
    cluster.broker(controller).kill();
    let survivor = (1..=3).find(|id| *id != controller).expect("a survivor");
    let (_, groups) = coordinator(&cluster.address(survivor), Some(controller)).await;
    let committed = eventually("a commit at the new coordinator", Duration::from_secs(20), || {
        let mut groups = groups.clone();
        async move {
            groups
                .commit_offsets(commit_request("after", [("t".to_string(), 0)], 16))
                .await
                .map_err(|status| status.to_string())
        }
    })
    .await;
    drop(committed);
    let fetched = groups
        .clone()
        .fetch_offsets(brook_client::proto::FetchOffsetsRequest {
            group_id: "g-1999".into(),
            partitions: vec![brook_client::proto::TopicPartition { topic: "t".into(), partition: 0 }],
        })
        .await
        .expect("fetch offsets")
        .into_inner();
    assert_eq!(fetched.offsets.len(), 1, "{fetched:?}");
    assert_eq!(fetched.offsets[0].metadata.len(), 4096, "the batched commits survived the failover");
}

/// Builds `state_mib` MiB of group offsets while broker `behind` is down,
/// then enough further entries that the controller drops the log it
/// missed, restarts it and waits until it installed the snapshot: the
/// snapshot's size and how long it took from the restart.
async fn snapshot_installed_on_a_broker_behind(state_mib: usize) -> (u64, Duration) {
    let mut cluster = TestCluster::start_with(3, &["--metadata-snapshot-after-entries", "20"]).await;
    cluster.wait_all_alive().await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("wide", 100, 1)).await.expect("create");
    let (controller, mut groups) = coordinator(&cluster.address(1), None).await;
    let behind = (1..=3).find(|id| *id != controller).expect("a follower");
    cluster.broker(behind).kill();

    // 100 offsets of 4 KiB each per group: about 400,000 bytes of state a
    // group (as JSON).
    let group_count = (state_mib << 20) / 400_000 + 1;
    for index in 0..group_count {
        let request = commit_request(&format!("big-{index}"), (0..100).map(|p| ("wide".to_string(), p)), 4096);
        groups.commit_offsets(request).await.expect("a big commit");
    }
    // Past the snapshot and the 100 entries kept after it.
    for index in 0..150 {
        let request = commit_request(&format!("small-{index}"), [("wide".to_string(), 0)], 8);
        groups.commit_offsets(request).await.expect("a small commit");
    }

    let restarted = std::time::Instant::now();
    cluster.broker(behind).restart().await;
    let broker = &cluster.brokers[behind as usize - 1];
    let line = eventually("the metadata snapshot installed", Duration::from_secs(120), || async {
        broker
            .log()
            .lines()
            .find(|line| line.contains("installed a metadata snapshot"))
            .map(str::to_string)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let took = restarted.elapsed();
    let bytes: u64 = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("bytes=")?.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line}"));
    println!("{line}");
    cluster.wait_all_alive().await;
    (bytes, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_behind_the_snapshot_installs_an_8_mib_metadata_state() {
    let (bytes, took) = snapshot_installed_on_a_broker_behind(8).await;
    println!("8 MiB target: a snapshot of {} MiB installed {took:?} after the restart", bytes >> 20);
    assert!(bytes >= 8 << 20, "the snapshot held {bytes} bytes");
}

/// The figure (BENCHMARKS.md): 50 MiB of state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute in a debug build; run with --ignored"]
async fn a_broker_behind_the_snapshot_installs_a_50_mib_metadata_state() {
    let (bytes, took) = snapshot_installed_on_a_broker_behind(50).await;
    println!("50 MiB target: a snapshot of {} MiB installed {took:?} after the restart", bytes >> 20);
    assert!(bytes >= 50 << 20, "the snapshot held {bytes} bytes");
}

/// Opens `count` TCP connections to `address` that never send a byte.
async fn silent_sockets(address: &str, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(tokio::net::TcpStream::connect(address).await.expect("connect a silent socket"));
    }
    sockets
}

/// How many of `sockets` the other end has closed (a read sees EOF or an
/// error at once).
async fn closed_by_peer(sockets: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for socket in sockets.iter_mut() {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(5), socket.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_sockets_on_each_internal_listener_do_not_keep_a_broker_out() {
    let mut cluster = TestCluster::start(3).await;
    cluster.wait_all_alive().await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin.create_topic(NewTopic::new("quiet", 1, 3)).await.expect("create");
    let (controller, _) = coordinator(&cluster.address(1), None).await;
    // A broker down long enough to leave the ISR: coming back, it needs
    // new connections to the controller (to register) and to the leader.
    let restarted = (1..=3).find(|id| *id != controller).expect("another broker");
    cluster.broker(restarted).kill();
    let controller_address = cluster.address(controller);
    let isr_of = |size: usize| {
        let address = controller_address.clone();
        async move {
            eventually(&format!("an ISR of {size}"), Duration::from_secs(60), || async {
                let (_, _, isr) = harness::partition_view(&address, "quiet", 0).await?;
                if isr.len() == size {
                    Ok(())
                } else {
                    Err(format!("ISR {isr:?}"))
                }
            })
            .await
        }
    };
    isr_of(2).await;
    // Every permit of the other brokers' internal listeners taken by
    // sockets that never speak (no secret is needed to open one).
    let mut sockets = Vec::new();
    for id in (1..=3).filter(|id| *id != restarted) {
        sockets.extend(silent_sockets(&cluster.internal_addresses[id as usize - 1], 1000).await);
    }
    let started = std::time::Instant::now();
    cluster.broker(restarted).restart().await;
    isr_of(3).await;
    println!("broker {restarted} rejoined {:?} after its restart, past 2,000 silent sockets", started.elapsed());
    cluster.wait_all_alive().await;
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    let mut closed = closed_by_peer(&mut sockets).await;
    while closed < 1980 && std::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(500)).await;
        closed = closed_by_peer(&mut sockets).await;
    }
    println!("{closed} of 2,000 silent sockets closed by the brokers");
    assert!(closed >= 1980, "only {closed} of the 2,000 silent sockets were closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stops_on_sigterm_though_a_client_socket_never_spoke() {
    let mut broker = Broker::start().await;
    let _silent = silent_sockets(&broker.address, 1).await;
    // And one that made a call and then went quiet.
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let started = std::time::Instant::now();
    let status = broker.terminate();
    let took = started.elapsed();
    println!("stopped {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", broker.log());
    assert!(broker.log().contains("logs closed cleanly"), "{}", broker.log());
    // Within the shutdown grace, well before the 10 s handshake deadline
    // would have closed the silent socket anyway.
    assert!(took < Duration::from_secs(8), "took {took:?} to stop");
}

/// A Produce call whose gRPC message claims `claimed` bytes, sends
/// `sent` of them in 1 MiB pieces and then never ends; the status it got.
async fn never_ending_produce(channel: tonic::transport::Channel, claimed: u32, sent: usize) -> tonic::Code {
    use http_body_util::BodyExt;
    use tower::Service;
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&claimed.to_be_bytes());
    let pieces = std::iter::once(Bytes::from(prefix)).chain((0..sent >> 20).map(|_| Bytes::from(vec![0u8; 1 << 20])));
    let frames =
        futures::stream::iter(pieces.map(|piece| Ok::<_, std::convert::Infallible>(http_body::Frame::data(piece))))
            .chain(futures::stream::pending());
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    let request = http::Request::builder()
        .method("POST")
        .uri("http://broker/brook.v1.Records/Produce")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("a request");
    let mut channel = channel;
    if std::future::poll_fn(|cx| channel.poll_ready(cx)).await.is_err() {
        return tonic::Code::Unavailable;
    }
    let response = match channel.call(request).await {
        Ok(response) => response,
        Err(_) => return tonic::Code::Unavailable,
    };
    let status_of = |headers: &http::HeaderMap| {
        headers.get("grpc-status").and_then(|value| value.to_str().ok()?.parse::<i32>().ok()).map(tonic::Code::from)
    };
    if let Some(code) = status_of(response.headers()) {
        return code;
    }
    match response.into_body().collect().await {
        Ok(collected) => collected.trailers().and_then(status_of).unwrap_or(tonic::Code::Unknown),
        Err(_) => tonic::Code::Unavailable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_never_ending_64_mib_bodies_on_one_connection_hold_at_most_the_budget() {
    let budget: u64 = 256 << 20;
    let mut broker = Broker::start_with(&[
        "--request-memory-budget-bytes",
        &budget.to_string(),
        "--request-body-timeout-ms",
        "3000",
    ])
    .await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("flood", 1, 1)).await.expect("create");
    let peak_before = broker.peak_rss_bytes().expect("the broker's peak RSS");
    // One HTTP/2 connection; 200 calls on it, each claiming 64 MiB and
    // sending 16 MiB of it.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.address))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        calls.spawn(never_ending_produce(channel.clone(), 64 << 20, 16 << 20));
    }
    let codes = tokio::time::timeout(Duration::from_secs(60), calls.join_all()).await.expect("every call answered");
    let peak_after = broker.peak_rss_bytes().expect("the broker's peak RSS");
    let count = |code| codes.iter().filter(|got| **got == code).count();
    let (exhausted, expired) = (count(tonic::Code::ResourceExhausted), count(tonic::Code::DeadlineExceeded));
    println!(
        "200 never-ending bodies: {exhausted} refused for want of room, {expired} cut at the body deadline, \
         others {:?}; broker peak RSS {} MiB before, {} MiB after (budget {} MiB)",
        codes
            .iter()
            .filter(|code| !matches!(code, tonic::Code::ResourceExhausted | tonic::Code::DeadlineExceeded))
            .collect::<Vec<_>>(),
        peak_before >> 20,
        peak_after >> 20,
        budget >> 20
    );
    assert_eq!(exhausted + expired, 200, "every call refused by name: {codes:?}");
    assert!(expired >= 4, "the calls given room were cut at the deadline");
    assert!(peak_after < peak_before + budget, "peak RSS rose from {peak_before} to {peak_after}");
    // The room is free again: an honest produce goes through.
    let mut records = harness::records_client(&broker.address).await;
    let honest = records.produce(produce("flood", kafka_batch(Bytes::from_static(b"ok"), Compression::None))).await;
    assert_eq!(honest.expect("an honest batch").into_inner().base_offset, 0);
    assert!(broker.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_groups_expire_after_the_offsets_retention_and_live_ones_stay() {
    let broker =
        Broker::start_with(&["--offsets-retention-ms", "2000", "--offsets-retention-check-interval-ms", "300"]).await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let (_, mut groups) = coordinator(&broker.address, None).await;
    // 200 groups made by standalone commits (tools with random group ids).
    for index in 0..200 {
        groups
            .commit_offsets(commit_request(&format!("tool-{index}"), [("t".to_string(), 0)], 8))
            .await
            .expect("commit");
    }
    // One group with a member.
    let join = brook_client::proto::ConsumerGroupHeartbeatRequest {
        group_id: "live".into(),
        member_id: "m-1".into(),
        member_epoch: 0,
        subscribed_topics: vec!["t".into()],
        ..Default::default()
    };
    groups.consumer_group_heartbeat(join).await.expect("join");
    let listed = groups.list_groups(brook_client::proto::ListGroupsRequest {}).await.expect("list").into_inner();
    assert_eq!(listed.groups.len(), 201);
    let started = std::time::Instant::now();
    let left = eventually("the empty groups expired", Duration::from_secs(30), || {
        let mut groups = groups.clone();
        async move {
            let listed =
                groups.list_groups(brook_client::proto::ListGroupsRequest {}).await.map_err(|e| e.to_string())?;
            let names: Vec<String> = listed.into_inner().groups.into_iter().map(|group| group.group_id).collect();
            if names.len() == 1 {
                Ok(names)
            } else {
                Err(format!("{} groups left", names.len()))
            }
        }
    })
    .await;
    println!("200 empty groups expired {:?} after their last commit (retention 2 s)", started.elapsed());
    assert_eq!(left, vec!["live".to_string()], "the group with a member stays");
    let fetched = groups
        .fetch_offsets(brook_client::proto::FetchOffsetsRequest {
            group_id: "tool-7".into(),
            partitions: vec![brook_client::proto::TopicPartition { topic: "t".into(), partition: 0 }],
        })
        .await
        .expect("fetch")
        .into_inner();
    assert!(fetched.offsets.iter().all(|offset| offset.offset < 0), "an expired group's offsets are gone: {fetched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_takes_at_most_group_max_size_members() {
    let broker = Broker::start_with(&["--group-max-size", "2"]).await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("t", 1, 1)).await.expect("create");
    let (_, mut groups) = coordinator(&broker.address, None).await;
    let join = |member: &str| brook_client::proto::ConsumerGroupHeartbeatRequest {
        group_id: "crowd".into(),
        member_id: member.into(),
        member_epoch: 0,
        subscribed_topics: vec!["t".into()],
        ..Default::default()
    };
    groups.consumer_group_heartbeat(join("m-1")).await.expect("the first joins");
    groups.consumer_group_heartbeat(join("m-2")).await.expect("the second joins");
    let refused = groups.consumer_group_heartbeat(join("m-3")).await.expect_err("the third");
    assert_eq!(error_name(&refused), ErrorCode::GroupMaxSizeReached.name(), "{refused:?}");
    assert!(refused.message().contains("group_max_size"), "{refused:?}");
    groups.consumer_group_heartbeat(join("m-1")).await.expect("a member joining again is no new member");
}

/// A producer id and epoch under `key`, as InitProducerId answers.
async fn init_keyed(address: &str, key: &str) -> (i64, u32) {
    let answer = harness::records_client(address)
        .await
        .init_producer_id(brook_client::proto::InitProducerIdRequest { producer_key: key.into() })
        .await
        .expect("init producer id")
        .into_inner();
    (answer.producer_id, answer.producer_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_producer_key_expires_and_one_in_use_keeps_its_id() {
    // Keys expire after 3 s unused; the broker reports the keys its
    // replicas saw append, and the controller looks for expired keys,
    // every 300 ms.
    let mut broker = Broker::start_with(&[
        "--producer-key-expiration-ms",
        "3000",
        "--producer-key-expiration-check-interval-ms",
        "300",
    ])
    .await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("keyed", 1, 1)).await.expect("create");
    let (dropped, _) = init_keyed(&broker.address, "dropped").await;
    let (kept, epoch) = init_keyed(&broker.address, "kept").await;
    assert_eq!(epoch, 0);
    // A producer under "kept" (epoch 1) appends every 200 ms for 8 s, well
    // past the expiration; nothing uses "dropped" meanwhile.
    let config = brook_client::ProducerConfig {
        producer_key: Some("kept".into()),
        linger: Duration::from_millis(1),
        ..brook_client::ProducerConfig::default()
    };
    let producer = brook_client::Producer::connect(&broker.address, config).await.expect("producer");
    let until = std::time::Instant::now() + Duration::from_secs(8);
    let mut sent = 0;
    while std::time::Instant::now() < until {
        let delivery = producer.send(ProducerRecord::new("keyed", format!("r-{sent}").into_bytes())).await;
        delivery.expect("send").await.expect("delivered");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The key in use is still known: a new instance under it takes the
    // same id at the next epoch, and its first append fences the running
    // producer.
    let config =
        brook_client::ProducerConfig { producer_key: Some("kept".into()), ..brook_client::ProducerConfig::default() };
    let successor = brook_client::Producer::connect(&broker.address, config).await.expect("successor");
    let record = ProducerRecord::new("keyed", b"successor".to_vec());
    successor.send(record).await.expect("send").await.expect("the successor appends");
    let fenced = producer.send(ProducerRecord::new("keyed", b"after".to_vec())).await.expect("send").await;
    assert!(fenced.is_err(), "the old instance is fenced: {fenced:?}");
    assert_eq!(init_keyed(&broker.address, "kept").await, (kept, 3), "a key in use keeps its id");
    // The unused key was forgotten: a producer under it starts afresh,
    // with an id never handed out before.
    let (renewed, epoch) = init_keyed(&broker.address, "dropped").await;
    assert!(renewed > kept.max(dropped) && epoch == 0, "an expired key starts afresh: got ({renewed}, {epoch})");
    println!("{sent} records under the kept key; the dropped key's id {dropped} became {renewed}");
    assert!(broker.is_running());
}
