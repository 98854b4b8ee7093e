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

mod harness;

use std::time::Duration;

use brook_client::proto::{Acks, ProduceRequest};
use brook_client::{Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset};
use bytes::{Bytes, BytesMut};
use harness::Broker;
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
        assert_eq!(name, "CORRUPT_RECORD", "{what}: {status:?}");
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
