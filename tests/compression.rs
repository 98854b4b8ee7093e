//! Compressed batches from an implementation none of us wrote: the
//! `kafka-protocol` crate's record encoder builds gzip, snappy, lz4 and
//! zstd batches; a real broker stores them as sent, and Brook's consumer
//! reads every record back. A batch naming a codec Kafka does not have is
//! refused with the codec named. A topic whose `compression.type` names a
//! codec stores every batch in it. Idempotent batches that kafka-protocol
//! encodes (its producer id, epoch and sequences) are deduplicated and
//! checked for gaps like the Brook producer's.

use crate::harness;

use std::time::Duration;

use brook_client::proto::{Acks, ProduceRequest};
use brook_client::{Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset};
use bytes::{Bytes, BytesMut};
use harness::Broker;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// `count` records numbered from `first` (key `key-N`), as kafka-protocol's
/// `Record`s without a producer id.
fn kafka_records(first: i64, count: i64) -> Vec<Record> {
    (first..first + count)
        .map(|index| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index - first,
            // kafka-protocol starts a new batch where offset - sequence
            // changes: keep it constant, so each call makes one batch.
            sequence: (index - first) as i32,
            timestamp: 1_700_000_000_000 + index,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::from(format!("value {index} {}", "abc".repeat(40)))),
            headers: Default::default(),
            delete_horizon: Default::default(),
        })
        .collect()
}

/// `records` as one batch, by kafka-protocol's encoder.
fn kafka_encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buffer, records, &options).expect("kafka-protocol encodes");
    buffer.freeze()
}

fn kafka_batch(compression: Compression, first: i64, count: i64) -> Bytes {
    kafka_encode(&kafka_records(first, count), compression)
}

fn produce(records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: "z".into(),
        partition: 0,
        acks: Acks::All as i32,
        timeout_ms: 0,
        records,
        batches: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_by_kafka_protocol_are_stored_and_read_back() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("z", 1, 1)).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let codecs = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
    let mut sent = 0i64;
    for codec in codecs {
        let batch = kafka_batch(codec, sent, 50);
        let batches: Vec<_> = brook_record::Batches::new(&batch).collect();
        assert_eq!(batches.len(), 1, "{codec:?}: one batch of 50 records");
        let header = batches[0].as_ref().expect("valid").header;
        assert_eq!((header.records_count, header.compression()), (50, codec as u8), "{codec:?}");
        let answer = records.produce(produce(batch)).await.unwrap_or_else(|status| panic!("{codec:?}: {status:?}"));
        assert_eq!(answer.into_inner().base_offset, sent, "{codec:?}");
        sent += 50;
    }

    let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
    consumer.subscribe(&["z"]).await.expect("subscribe");
    let mut read = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read < sent && std::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
            assert_eq!(record.offset.0 as i64, read);
            assert_eq!(record.key.as_deref(), Some(format!("key-{read}").as_bytes()));
            let value = format!("value {read} {}", "abc".repeat(40));
            assert_eq!(record.value.as_deref(), Some(value.as_bytes()), "offset {read}");
            assert_eq!(record.timestamp_ms, 1_700_000_000_000 + read);
            read += 1;
        }
    }
    assert_eq!(read, sent, "every record of every codec read back");

    // Codec 5 is no Kafka codec: refused, and named (the CRC is redone so
    // only the codec is wrong).
    let mut bad = BytesMut::from(&kafka_batch(Compression::None, 0, 3)[..]);
    bad[22] |= 5;
    let end = 12 + u32::from_be_bytes([bad[8], bad[9], bad[10], bad[11]]) as usize;
    let crc = crc32c::crc32c(&bad[21..end]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let status = records.produce(produce(bad.freeze())).await.expect_err("codec 5 is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("compression codec 5"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brooks_producer_compresses_with_each_codec_and_kafka_protocol_reads_its_batches() {
    use brook_client::{Compression as Codec, Producer, ProducerConfig, ProducerRecord};
    use kafka_protocol::records::RecordBatchDecoder;

    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    let codecs = [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
    for codec in codecs {
        let topic = format!("c-{}", codec.name());
        admin.create_topic(NewTopic::new(&topic, 1, 1)).await.expect("create");
        let config = ProducerConfig { compression: codec, ..ProducerConfig::default() };
        let producer = Producer::connect(&broker.address, config).await.expect("producer");
        let mut deliveries = Vec::new();
        for index in 0..300 {
            let record = ProducerRecord::new(topic.as_str(), format!("{index} {}", "compressible ".repeat(20)))
                .key(format!("k{index}"));
            deliveries.push(producer.send(record).await.expect("send"));
        }
        for delivery in deliveries {
            delivery.await.expect("acknowledged");
        }
        producer.close().await;

        // The stored batches carry the codec, and kafka-protocol's decoder
        // reads every record of them.
        let mut records = harness::records_client(&broker.address).await;
        let mut decoded = Vec::new();
        let mut offset = 0i64;
        // A fetch returns a prefix (up to an index entry): fetch on.
        while offset < 300 {
            let fetch = brook_client::proto::FetchRequest {
                topic: topic.clone(),
                partition: 0,
                offset,
                max_bytes: 8 << 20,
                max_wait_ms: 0,
                min_bytes: 0,
                current_leader_epoch: None,
            };
            let response = records.fetch(fetch).await.expect("fetch").into_inner();
            assert!(response.next_offset > offset, "{codec:?}: no progress at {offset}");
            offset = response.next_offset;
            // One batch at a time (the decoder reads one record set a call).
            for batch in brook_record::Batches::new(&response.records) {
                let batch = batch.expect("valid");
                assert_eq!(batch.header.compression(), codec.codec(), "{codec:?}");
                let mut one = response.records.slice_ref(batch.bytes);
                let set = RecordBatchDecoder::decode(&mut one).unwrap_or_else(|error| panic!("{codec:?}: {error}"));
                decoded.extend(set.records);
            }
        }
        assert_eq!(decoded.len(), 300, "{codec:?}");
        for (index, record) in decoded.iter().enumerate() {
            assert_eq!(record.offset, index as i64);
            assert_eq!(record.key.as_deref(), Some(format!("k{index}").as_bytes()), "{codec:?}");
        }

        // And Brook's own consumer.
        let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
        let mut consumer = Consumer::connect(&broker.address, config).await.expect("consumer");
        consumer.subscribe(&[topic.as_str()]).await.expect("subscribe");
        let mut read = 0usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while read < 300 && std::time::Instant::now() < deadline {
            for record in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
                let value = format!("{read} {}", "compressible ".repeat(20));
                assert_eq!(record.value.as_deref(), Some(value.as_bytes()), "{codec:?}");
                read += 1;
            }
        }
        assert_eq!(read, 300, "{codec:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_names_a_codec_stores_every_batch_in_it() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    let refused = admin
        .create_topic(NewTopic::new("bad", 1, 1).config("compression.type", "brotli"))
        .await
        .expect_err("an unknown codec");
    assert!(refused.to_string().contains("compression.type"), "{refused}");
    let created =
        admin.create_topic(NewTopic::new("zt", 1, 1).config("compression.type", "zstd")).await.expect("create");
    assert_eq!(created.configs.get("compression.type").map(String::as_str), Some("zstd"));

    // Sent uncompressed and gzip-compressed (by kafka-protocol): stored as zstd.
    let mut records = harness::records_client(&broker.address).await;
    for (first, codec) in [(0, Compression::None), (50, Compression::Gzip)] {
        let mut request = produce(kafka_batch(codec, first, 50));
        request.topic = "zt".into();
        records.produce(request).await.unwrap_or_else(|status| panic!("{codec:?}: {status:?}"));
    }
    let fetched = records
        .fetch(brook_client::proto::FetchRequest {
            topic: "zt".into(),
            partition: 0,
            offset: 0,
            max_bytes: 8 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
            current_leader_epoch: None,
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut read = 0i64;
    for batch in brook_record::Batches::new(&fetched.records) {
        let batch = batch.expect("valid");
        assert_eq!(batch.header.compression(), brook_record::Compression::Zstd.codec(), "stored as zstd");
        let area = batch.decompressed(1 << 20).expect("decompress").expect("compressed");
        for record in batch.records_in(&area) {
            let record = record.expect("record");
            assert_eq!(record.key, Some(format!("key-{read}").as_bytes()));
            read += 1;
        }
    }
    assert_eq!(read, 100, "every record of both batches, in order");
}

/// A batch from an idempotent producer, encoded by kafka-protocol: its
/// producer id, epoch and base sequence sit where Kafka puts them.
fn kafka_idempotent_batch(producer_id: i64, first_sequence: i32, count: i32) -> Bytes {
    let mut records = kafka_records(0, i64::from(count));
    for record in &mut records {
        record.producer_id = producer_id;
        record.producer_epoch = 0;
        record.sequence += first_sequence;
    }
    kafka_encode(&records, Compression::Lz4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_batches_encoded_by_kafka_protocol_are_deduplicated() {
    let broker = Broker::start().await;
    let admin = Admin::connect(&broker.address).await.expect("admin");
    admin.create_topic(NewTopic::new("z", 1, 1)).await.expect("create");
    let mut records = harness::records_client(&broker.address).await;
    let id = records
        .init_producer_id(brook_client::proto::InitProducerIdRequest { producer_key: String::new() })
        .await
        .expect("producer id")
        .into_inner()
        .producer_id;
    let first = records.produce(produce(kafka_idempotent_batch(id, 0, 10))).await.expect("first").into_inner();
    let retry = records.produce(produce(kafka_idempotent_batch(id, 0, 10))).await.expect("retry").into_inner();
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));
    let next = records.produce(produce(kafka_idempotent_batch(id, 10, 5))).await.expect("next").into_inner();
    assert_eq!(next.base_offset, 10);
    let gap = records.produce(produce(kafka_idempotent_batch(id, 20, 1))).await.expect_err("a gap");
    assert_eq!(gap.code(), tonic::Code::FailedPrecondition, "{gap:?}");
    assert!(gap.message().contains("expected 15"), "{gap:?}");
}
