//! `Produce`, `ProduceMany` and `Fetch` calls written and read by the
//! client itself, without tonic's copies of the records they carry.
//!
//! tonic's generated client encodes a request into one buffer before it
//! writes it, and joins an answer's frames into one buffer before it
//! decodes it. These calls write the same gRPC message as a list of pieces
//! instead (`brook_proto::MessagePieces`): the small encoded fields, and
//! each batch of 64 KiB or more as the `Bytes` the producer sealed, so
//! HTTP/2 sends it from where it is. Smaller batches are copied into the
//! running piece as tonic would: each piece becomes an HTTP/2 DATA frame
//! of its own, and a frame for every 16 KiB batch (plus one for the few
//! bytes of field header before it) cost the broker more than the copy
//! saved (measured: +0.25 s of broker CPU per GiB of 1 KiB records;
//! BENCHMARKS.md). Answers are decoded over the frames they came in
//! (`brook_proto::Frames`): fetched records that lie within one frame (the
//! client takes frames of up to 4 MiB) are a slice of it.
//!
//! What the broker receives is byte for byte what tonic would have sent
//! (unit tests check it), so the broker is unchanged. The answer is
//! decoded as tonic decodes one: a gRPC status in the headers
//! (trailers-only) or in the trailers, the one message otherwise.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use brook_proto::v1::{
    FetchRequest, FetchResponse, PartitionBatches, ProduceManyRequest, ProduceManyResponse, ProduceRequest,
    ProduceResponse,
};
use brook_proto::{Frames, MessagePieces, MessagePrefix};
use bytes::{Buf, Bytes};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::codegen::Service;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Field numbers of the repeated `bytes batches` fields and of the
/// partitions in `ProduceManyRequest` (proto/brook/v1/records.proto).
const PRODUCE_BATCHES: u32 = 6;
const PRODUCE_MANY_PARTITIONS: u32 = 3;
const PARTITION_BATCHES: u32 = 3;

/// Sends `request` to `channel` as `Records/Produce`.
pub(crate) async fn produce(
    channel: Channel,
    request: &ProduceRequest,
    max_response: usize,
) -> Result<ProduceResponse, Status> {
    call(channel, "/brook.v1.Records/Produce", produce_pieces(request), max_response).await
}

/// Sends `request` to `channel` as `Records/ProduceMany`.
pub(crate) async fn produce_many(
    channel: Channel,
    request: &ProduceManyRequest,
    max_response: usize,
) -> Result<ProduceManyResponse, Status> {
    call(channel, "/brook.v1.Records/ProduceMany", produce_many_pieces(request), max_response).await
}

/// Sends `request` to `channel` as `Records/Fetch`; the records in the
/// answer are a slice of the frame they came in when they lie within one
/// (no joining copy).
pub(crate) async fn fetch(
    channel: Channel,
    request: &FetchRequest,
    max_response: usize,
) -> Result<FetchResponse, Status> {
    let mut pieces = MessagePieces::new(request.encoded_len(), 0);
    pieces.put_message(request);
    call(channel, "/brook.v1.Records/Fetch", pieces.finish().0, max_response).await
}

fn produce_pieces(request: &ProduceRequest) -> Vec<Bytes> {
    // The fields but the batches (cloning the request would clone every
    // batch's handle too).
    let head = ProduceRequest {
        topic: request.topic.clone(),
        partition: request.partition,
        acks: request.acks,
        timeout_ms: request.timeout_ms,
        records: request.records.clone(),
        batches: Vec::new(),
    };
    let len = head.encoded_len()
        + request
            .batches
            .iter()
            .map(|batch| MessagePieces::length_delimited_len(PRODUCE_BATCHES, batch.len()))
            .sum::<usize>();
    let mut pieces = MessagePieces::new(len, MessagePieces::referenced_bytes(&request.batches));
    pieces.put_message(&head);
    for batch in &request.batches {
        pieces.put_bytes_field(PRODUCE_BATCHES, batch);
    }
    let (pieces, written) = pieces.finish();
    debug_assert_eq!(written, len + MessagePrefix::BYTES);
    pieces
}

fn produce_many_pieces(request: &ProduceManyRequest) -> Vec<Bytes> {
    let head = ProduceManyRequest { partitions: Vec::new(), ..*request };
    let referenced =
        MessagePieces::referenced_bytes(request.partitions.iter().flat_map(|partition| &partition.batches));
    let mut pieces = MessagePieces::new(request.encoded_len(), referenced);
    pieces.put_message(&head);
    for partition in &request.partitions {
        pieces.put_length_delimited_key(PRODUCE_MANY_PARTITIONS, partition.encoded_len());
        let head =
            PartitionBatches { topic: partition.topic.clone(), partition: partition.partition, batches: Vec::new() };
        pieces.put_message(&head);
        for batch in &partition.batches {
            pieces.put_bytes_field(PARTITION_BATCHES, batch);
        }
    }
    let (pieces, written) = pieces.finish();
    debug_assert_eq!(written, request.encoded_len() + MessagePrefix::BYTES);
    pieces
}

/// A request body of pieces, one DATA frame (or a few) each.
#[derive(Debug)]
struct PiecesBody(VecDeque<Bytes>);

impl http_body::Body for PiecesBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|piece| piece.len() as u64).sum())
    }
}

/// One unary gRPC call whose request is already encoded as `pieces`.
async fn call<R: Message + Default>(
    mut channel: Channel,
    path: &'static str,
    pieces: Vec<Bytes>,
    max_response: usize,
) -> Result<R, Status> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(PiecesBody(pieces.into())))
        .map_err(|error| Status::internal(format!("building the request failed: {error}")))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(|error| Status::from_error(error.into()))?;
    let response = channel.call(request).await.map_err(|error| Status::from_error(error.into()))?;
    if response.status() != http::StatusCode::OK {
        return Err(Status::new(
            Code::Unknown,
            format!("the broker answered HTTP {} instead of a gRPC response", response.status()),
        ));
    }
    // Trailers-only: a refusal (or an OK without a message).
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Err(if status.code() == Code::Ok {
            Status::internal("the broker's answer carried no message")
        } else {
            status
        });
    }
    let mut body = response.into_body();
    let mut frames = Frames::default();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                frames.push(data);
                if frames.remaining() > MessagePrefix::BYTES + max_response {
                    return Err(too_large(frames.remaining() - MessagePrefix::BYTES, max_response));
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    if let Some(status) = trailers.as_ref().and_then(Status::from_header_map) {
        if status.code() != Code::Ok {
            return Err(status);
        }
    }
    decode_message(frames, max_response)
}

fn too_large(len: usize, max_response: usize) -> Status {
    Status::out_of_range(format!("the broker's answer is {len} bytes, over the limit of {max_response}"))
}

/// The one message of a unary answer's body, decoded over the frames it
/// came in (a large `bytes` field within one frame is a slice of it).
fn decode_message<R: Message + Default>(mut body: Frames, max_response: usize) -> Result<R, Status> {
    let Some(MessagePrefix { compressed, len }) = body.take_prefix() else {
        return Err(Status::internal(format!(
            "the broker's answer is {} bytes, shorter than a gRPC frame",
            body.remaining()
        )));
    };
    if compressed {
        return Err(Status::internal("the broker's answer is compressed, which was not asked for"));
    }
    if len > max_response {
        return Err(too_large(len, max_response));
    }
    if body.remaining() != len {
        return Err(Status::internal(format!(
            "the broker's answer holds {} bytes of a {len}-byte message",
            body.remaining()
        )));
    }
    R::decode(body).map_err(|error| Status::internal(format!("the broker's answer does not decode: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(pieces: Vec<Bytes>) -> Vec<u8> {
        pieces.concat()
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        [&MessagePrefix::uncompressed(body.len()).encode()[..], &body].concat()
    }

    fn batch(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn a_produce_request_in_pieces_is_what_prost_encodes() {
        for batches in [
            vec![],
            vec![batch(10, 1)],
            vec![batch(16_000, 2), batch(3, 3), batch(70_000, 4), batch(MessagePieces::COPY_BELOW, 5)],
        ] {
            let request = ProduceRequest {
                topic: "orders".into(),
                partition: 7,
                acks: 2,
                timeout_ms: 30_000,
                records: Bytes::new(),
                batches,
            };
            let pieces = produce_pieces(&request);
            assert_eq!(joined(pieces), framed(&request));
        }
    }

    #[test]
    fn large_batches_are_sent_as_they_are_and_small_ones_copied() {
        let big = batch(MessagePieces::COPY_BELOW, 9);
        let small = batch(16 << 10, 8);
        let request = ProduceRequest {
            topic: "t".into(),
            batches: vec![big.clone(), small.clone(), small.clone(), big.clone()],
            ..Default::default()
        };
        let pieces = produce_pieces(&request);
        let shared = pieces.iter().filter(|piece| piece.as_ptr() == big.as_ptr()).count();
        assert_eq!(shared, 2, "both large batches are the sealed buffers themselves");
        assert!(pieces.iter().all(|piece| piece.as_ptr() != small.as_ptr()), "small batches are copied");
        // The frame header, fields and big's field header; big; the two
        // small ones with their field headers and big's; big.
        assert_eq!(pieces.len(), 4);
    }

    #[test]
    fn a_produce_many_request_in_pieces_is_what_prost_encodes() {
        let request = ProduceManyRequest {
            acks: 1,
            timeout_ms: 5,
            partitions: vec![
                PartitionBatches { topic: "a".into(), partition: 0, batches: vec![batch(80_000, 1), batch(600, 2)] },
                PartitionBatches { topic: "b".repeat(300), partition: 300, batches: vec![] },
                PartitionBatches { topic: "c".into(), partition: 2, batches: vec![batch(100, 3)] },
            ],
        };
        assert_eq!(joined(produce_many_pieces(&request)), framed(&request));
        let empty = ProduceManyRequest::default();
        assert_eq!(joined(produce_many_pieces(&empty)), framed(&empty));
    }

    fn frames(body: &[u8]) -> Frames {
        let mut frames = Frames::default();
        frames.push(Bytes::copy_from_slice(body));
        frames
    }

    #[test]
    fn a_bad_answer_body_is_refused_by_what_is_wrong() {
        let short = decode_message::<ProduceResponse>(frames(&[0, 0]), 100).unwrap_err();
        assert!(short.message().contains("shorter than a gRPC frame"), "{short}");
        let compressed = decode_message::<ProduceResponse>(frames(&[1, 0, 0, 0, 0]), 100).unwrap_err();
        assert!(compressed.message().contains("compressed"), "{compressed}");
        let too_big = decode_message::<ProduceResponse>(frames(&[0, 0, 0, 1, 0]), 100).unwrap_err();
        assert_eq!(too_big.code(), Code::OutOfRange);
        let cut = decode_message::<ProduceResponse>(frames(&[0, 0, 0, 0, 9, 8]), 100).unwrap_err();
        assert!(cut.message().contains("holds 1 bytes of a 9-byte message"), "{cut}");
        let response = ProduceResponse { base_offset: 42, ..Default::default() };
        let decoded: ProduceResponse = decode_message(frames(&framed(&response)), 100).unwrap();
        assert_eq!(decoded, response);
    }

    #[test]
    fn fetched_records_within_one_frame_are_a_slice_of_it() {
        let response = FetchResponse {
            records: Bytes::from(vec![7u8; 100_000]),
            high_watermark: 5,
            log_start_offset: 0,
            next_offset: 5,
        };
        let body = Bytes::from(framed(&response));
        let mut split = Frames::default();
        split.push(body.slice(..3));
        split.push(body.slice(3..));
        let decoded: FetchResponse = decode_message(split, 1 << 20).unwrap();
        assert_eq!(decoded, response);
        let within = body.as_ptr_range().contains(&decoded.records.as_ptr());
        assert!(within, "the records are a slice of the frame, not a copy");
    }
}
