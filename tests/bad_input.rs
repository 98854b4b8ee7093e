//! Bad input from the network, straight over gRPC: each call gets the
//! specific status, code name and message; the broker stays up and what it
//! stored is untouched.

use crate::harness;

use brook_client::proto::admin_client::AdminClient;
use brook_client::proto::records_client::RecordsClient;
use brook_client::proto::{
    Acks, CreateTopicRequest, FetchRequest, ListTopicsRequest, PartitionBatches, ProduceManyRequest, ProduceRequest,
};
use brook_client::ErrorCode;
use brook_record::{BatchBuilder, NewRecord};
use bytes::Bytes;
use harness::Broker;
use tonic::transport::Channel;
use tonic::Code;

fn batch(values: &[&[u8]]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(256);
    for value in values {
        builder.push(&NewRecord { timestamp_ms: 1_700_000_000_000, key: None, value: Some(value), headers: &[] });
    }
    builder.finish().to_vec()
}

fn expect_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    error_name: &str,
    message: &str,
) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    let name = status.metadata().get("brook-error").and_then(|v| v.to_str().ok());
    assert_eq!(name, Some(error_name), "{status:?}");
    assert!(status.message().contains(message), "message {:?} lacks {message:?}", status.message());
}

fn produce(topic: &str, partition: u32, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Acks::All as i32,
        timeout_ms: 0,
        records: Bytes::from(records),
        batches: Vec::new(),
    }
}

fn fetch(topic: &str, partition: u32, offset: i64) -> FetchRequest {
    FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
        min_bytes: 0,
        current_leader_epoch: None,
    }
}

fn create(name: &str, partitions: u32) -> CreateTopicRequest {
    CreateTopicRequest { name: name.into(), partitions, replication_factor: 1, configs: Default::default() }
}

/// The broker answers and still holds exactly the two good records.
async fn still_serving(records: &mut RecordsClient<Channel>, admin: &mut AdminClient<Channel>) {
    assert!(admin.list_topics(ListTopicsRequest {}).await.is_ok(), "the broker answers");
    let fetched = records.fetch(fetch("t", 0, 0)).await.expect("fetch").into_inner();
    assert_eq!(fetched.high_watermark, 2, "nothing was appended by bad input");
    let values: Vec<Vec<u8>> = brook_record::Batches::new(&fetched.records)
        .flat_map(|batch| {
            batch
                .expect("valid")
                .records()
                .map(|r| r.expect("record").value.unwrap_or_default().to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(values, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_status_and_harms_nothing() {
    let broker = Broker::start().await;
    let channel =
        Channel::from_shared(format!("http://{}", broker.address)).expect("uri").connect().await.expect("connect");
    let mut admin = AdminClient::new(channel.clone());
    let mut records = RecordsClient::new(channel);
    admin.create_topic(create("t", 2)).await.expect("create t");
    let mut small = create("small", 1);
    small.configs.insert("max.message.bytes".into(), "1000".into());
    admin.create_topic(small).await.expect("create small");
    records.produce(produce("t", 0, batch(&[b"one", b"two"]))).await.expect("a good batch");
    still_serving(&mut records, &mut admin).await;

    // Topics and partitions that do not exist.
    expect_status(
        records.produce(produce("nope", 0, batch(&[b"x"]))).await,
        Code::NotFound,
        ErrorCode::UnknownTopicOrPartition.name(),
        "topic 'nope' does not exist",
    );
    expect_status(
        records.fetch(fetch("t", 5, 0)).await,
        Code::NotFound,
        ErrorCode::UnknownTopicOrPartition.name(),
        "topic 't' has 2 partitions; partition 5 does not exist",
    );
    still_serving(&mut records, &mut admin).await;

    // A leader epoch the broker has not heard of (KIP-320): refused before
    // the read, retriable; the broker's own epoch (0) is served.
    let mut ahead = fetch("t", 0, 0);
    ahead.current_leader_epoch = Some(7);
    expect_status(
        records.fetch(ahead).await,
        Code::Unavailable,
        ErrorCode::UnknownLeaderEpoch.name(),
        "the leader epoch 7 the request names is newer than this broker's 0",
    );
    let mut current = fetch("t", 0, 0);
    current.current_leader_epoch = Some(0);
    assert_eq!(records.fetch(current).await.expect("the current epoch is served").into_inner().high_watermark, 2);
    still_serving(&mut records, &mut admin).await;

    // Topic names and topic creation.
    for name in ["", &"n".repeat(250), "a/b", "caf\u{e9}", ".."] {
        expect_status(
            admin.create_topic(create(name, 1)).await,
            Code::InvalidArgument,
            ErrorCode::InvalidTopic.name(),
            "invalid topic name",
        );
    }
    expect_status(
        admin.create_topic(create("t", 1)).await,
        Code::AlreadyExists,
        ErrorCode::TopicAlreadyExists.name(),
        "topic 't' already exists",
    );
    expect_status(
        admin.create_topic(create("zero", 0)).await,
        Code::InvalidArgument,
        ErrorCode::InvalidPartitions.name(),
        "invalid partition count 0",
    );
    still_serving(&mut records, &mut admin).await;

    // Batches: wrong CRC, truncated, oversized, garbage, empty.
    let mut wrong_crc = batch(&[b"three"]);
    let last = wrong_crc.len() - 1;
    wrong_crc[last] ^= 0x40;
    expect_status(
        records.produce(produce("t", 0, wrong_crc)).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "CRC mismatch",
    );
    let whole = batch(&[b"three"]);
    expect_status(
        records.produce(produce("t", 0, whole[..whole.len() - 2].to_vec())).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "truncated",
    );
    let big = vec![7u8; 2000];
    expect_status(
        records.produce(produce("small", 0, batch(&[&big]))).await,
        Code::InvalidArgument,
        ErrorCode::RecordTooLarge.name(),
        "over the limit of 1000 bytes",
    );
    expect_status(
        records.produce(produce("t", 0, vec![0xde; 300])).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "invalid",
    );
    expect_status(
        records.produce(produce("t", 0, Vec::new())).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "at least one record batch",
    );
    // A good batch followed by a bad one: nothing of the request is stored.
    let mut mixed = batch(&[b"three"]);
    mixed.extend_from_slice(&[1, 2, 3]);
    expect_status(
        records.produce(produce("t", 0, mixed)).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "batch 1 of the append",
    );
    // The same as separate pieces: a bad piece refuses the whole request;
    // and a request may not set both forms.
    let mut pieces = produce("t", 0, Vec::new());
    pieces.batches = vec![Bytes::from(batch(&[b"three"])), Bytes::from_static(&[1, 2, 3])];
    expect_status(
        records.produce(pieces).await,
        Code::InvalidArgument,
        ErrorCode::CorruptRecord.name(),
        "batch 1 of the append",
    );
    let mut both = produce("t", 0, batch(&[b"three"]));
    both.batches = vec![Bytes::from(batch(&[b"four"]))];
    expect_status(records.produce(both).await, Code::InvalidArgument, ErrorCode::InvalidRequest.name(), "not both");
    still_serving(&mut records, &mut admin).await;

    // Several partitions in one request: each answered on its own, a bad
    // one refuses only itself.
    let part = |topic: &str, partition: u32, batch: Vec<u8>| PartitionBatches {
        topic: topic.into(),
        partition,
        batches: vec![Bytes::from(batch)],
    };
    let many = |partitions| ProduceManyRequest { acks: Acks::All as i32, timeout_ms: 0, partitions };
    let mut wrong_crc = batch(&[b"three"]);
    let last = wrong_crc.len() - 1;
    wrong_crc[last] ^= 0x40;
    let answer = records
        .produce_many(many(vec![
            part("t", 1, batch(&[b"m1", b"m2"])),
            part("t", 0, wrong_crc),
            part("nope", 0, batch(&[b"x"])),
            part("t", 9, batch(&[b"x"])),
        ]))
        .await
        .expect("answered partition by partition")
        .into_inner();
    let outcomes: Vec<(&str, u32, &str)> = answer
        .partitions
        .iter()
        .map(|result| (result.topic.as_str(), result.partition, result.error_name.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("t", 1, ""),
            ("t", 0, ErrorCode::CorruptRecord.name()),
            ("nope", 0, ErrorCode::UnknownTopicOrPartition.name()),
            ("t", 9, ErrorCode::UnknownTopicOrPartition.name())
        ]
    );
    assert_eq!((answer.partitions[0].base_offset, answer.partitions[0].last_offset), (0, 1));
    assert_eq!(answer.partitions[1].status_code, Code::InvalidArgument as i32);
    assert!(answer.partitions[1].error_message.contains("CRC mismatch"), "{:?}", answer.partitions[1]);
    assert!(answer.partitions[2].error_message.contains("topic 'nope' does not exist"));
    // The request's own faults refuse all of it.
    expect_status(
        records.produce_many(many(Vec::new())).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest.name(),
        "at least one partition",
    );
    expect_status(
        records.produce_many(many(vec![part("t", 1, batch(&[b"m3"])), part("t", 1, batch(&[b"m4"]))])).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest.name(),
        "partition t-1 appears twice",
    );
    let other = records.fetch(fetch("t", 1, 0)).await.expect("fetch t-1").into_inner();
    assert_eq!(other.high_watermark, 2, "only the good partition of the first request was appended");
    still_serving(&mut records, &mut admin).await;

    // Fetch offsets outside the log.
    expect_status(
        records.fetch(fetch("t", 0, -1)).await,
        Code::InvalidArgument,
        ErrorCode::InvalidRequest.name(),
        "fetch offset -1 is negative",
    );
    expect_status(
        records.fetch(fetch("t", 0, 3)).await,
        Code::OutOfRange,
        ErrorCode::OffsetOutOfRange.name(),
        "valid offsets are 0..=2",
    );
    expect_status(
        records.fetch(fetch("t", 0, i64::MAX)).await,
        Code::OutOfRange,
        ErrorCode::OffsetOutOfRange.name(),
        "out of range",
    );
    let at_end = records.fetch(fetch("t", 0, 2)).await.expect("fetching at the end is fine").into_inner();
    assert!(at_end.records.is_empty());
    still_serving(&mut records, &mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_for_one_to_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("brook.toml");
    std::fs::write(&config, "max_connections = 3\n").expect("write config");
    let broker = Broker::start_with(&["--config", config.to_str().expect("utf-8 path")]).await;
    // The harness's readiness check has closed its connection; three idle
    // ones take every place.
    let idle: Vec<std::net::TcpStream> =
        (0..3).map(|_| std::net::TcpStream::connect(&broker.address).expect("connect")).collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let waiting = {
        let address = broker.address.clone();
        tokio::spawn(async move {
            let admin = brook_client::Admin::connect(&address).await.map_err(|error| error.to_string())?;
            admin.list_topics().await.map_err(|error| error.to_string())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a fourth connection is not served while three are open");
    drop(idle);
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await;
    let topics = answered.expect("served once the others closed").expect("joined").expect("an answer");
    assert!(topics.is_empty());
}

/// Sends a request body as it is, whatever it holds.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Produce bodies that are not what they claim, through the broker's own
/// produce path (it decodes `Produce` over the request's frames, without
/// tonic): a precise status each, nothing appended, the broker up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_body_that_is_no_request_is_refused_precisely() {
    let broker = Broker::start_with(&["--max-request-bytes", "65536"]).await;
    let channel =
        Channel::from_shared(format!("http://{}", broker.address)).expect("uri").connect().await.expect("connect");
    let mut admin = AdminClient::new(channel.clone());
    let mut records = RecordsClient::new(channel.clone());
    admin.create_topic(create("t", 2)).await.expect("create t");
    records.produce(produce("t", 0, batch(&[b"one", b"two"]))).await.expect("a good batch");
    let raw = |body: Vec<u8>| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.expect("ready");
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/brook.v1.Records/Produce");
            grpc.unary(tonic::Request::new(body), path, RawCodec).await
        }
    };

    let garbage = raw(vec![0xff; 16]).await.expect_err("not protobuf");
    assert_eq!(garbage.code(), Code::Internal, "{garbage:?}");
    assert!(garbage.message().contains("failed to decode Protobuf message"), "{garbage:?}");
    still_serving(&mut records, &mut admin).await;

    // A well-formed request over the broker's max_request_bytes.
    use prost::Message;
    let large = produce("t", 0, batch(&[&[b'v'; 70_000][..]])).encode_to_vec();
    let refused = raw(large).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("the limit is: 65536 bytes"), "{refused:?}");
    still_serving(&mut records, &mut admin).await;

    // The same path takes a good request sent this way.
    let good = raw(produce("t", 1, batch(&[b"three"])).encode_to_vec()).await.expect("a good request, raw");
    let answer = brook_client::proto::ProduceResponse::decode(good.into_inner()).expect("a produce answer");
    assert_eq!(answer.base_offset, 0);
    still_serving(&mut records, &mut admin).await;
}
