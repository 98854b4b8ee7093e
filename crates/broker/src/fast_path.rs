//! `Records/Produce`, `Records/Fetch` and the internal
//! `Replication/Fetch` without tonic's copies of the records they carry.
//!
//! tonic's server copies every DATA frame of a request into one buffer
//! before it decodes the message, and encodes every answer into one buffer
//! before it sends it: every produced byte is copied once more than the
//! append needs, every fetched byte once more than the read. A
//! [`FastPathLayer`] sits in front of a server's routes and takes only
//! plain (uncompressed) gRPC calls to these methods ([`RecordsPath`] on
//! the client listener, [`ReplicaFetchPath`] on the internal one):
//!
//! - `Produce`: it keeps the request's frames as they came, decodes the
//!   message with prost over them (a batch that lies within one frame
//!   becomes a slice of it, one that straddles two is copied);
//! - `Fetch` and `Replication/Fetch`: it answers with the encoded small
//!   fields and the records as they were read (`MessagePieces`; records
//!   under 64 KiB are copied, a frame costing more);
//!
//! and hands each call to the same handler tonic calls ([`Records`],
//! [`Replication`]), so validation, spans, metrics and errors are the same;
//! a replica fetch is refused without the cluster secret before its body
//! is read, as the internal interceptor refuses it. Everything else, and
//! any call a path does not recognise exactly, goes on to tonic unchanged.
//!
//! The answer is what tonic writes for a unary call: the message, then
//! `grpc-status: 0` in the trailers, or a trailers-only status. Limits are
//! tonic's too: a request over the broker's `max_request_bytes` is refused
//! with OUT_OF_RANGE before it is read whole, a body that is not exactly
//! one gRPC message with INTERNAL, an answer over the limit with
//! OUT_OF_RANGE.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use brook_metadata::ClusterSecret;
use brook_proto::internal::replication_server::Replication;
use brook_proto::internal::{PartitionData, ReplicaFetchRequest, ReplicaFetchResponse};
use brook_proto::v1::records_server::Records;
use brook_proto::v1::{FetchRequest, FetchResponse, ProduceRequest};
use brook_proto::{Frames, MessagePieces, MessagePrefix};
use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame};
use prost::Message;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::internal_auth::lacks_cluster_secret;
use crate::service::records::RecordsService;
use crate::service::replication::ReplicationService;

pub const PRODUCE_PATH: &str = "/brook.v1.Records/Produce";
pub const FETCH_PATH: &str = "/brook.v1.Records/Fetch";
pub const REPLICA_FETCH_PATH: &str = "/brook.internal.v1.Replication/Fetch";
/// Field numbers (proto/brook/v1/records.proto, internal.proto):
/// `FetchResponse.records`, `ReplicaFetchResponse.partitions`,
/// `PartitionData.records`.
const FETCH_RECORDS: u32 = 1;
const REPLICA_FETCH_PARTITIONS: u32 = 1;
const PARTITION_RECORDS: u32 = 3;

/// An answer on its way: the message's pieces, or a status.
type Answering = Pin<Box<dyn Future<Output = Result<Vec<Bytes>, Status>> + Send>>;

/// What a fast path takes: the calls it answers itself, and how.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Whether this path answers `request` (else the routes behind do).
    fn takes(&self, request: &http::Request<Body>) -> bool;

    /// The answer to a request it takes.
    fn answer(&self, request: http::Request<Body>) -> Answering;
}

/// A layer in front of a server's routes that answers what its handler
/// takes and passes everything else on (see the module docs).
#[derive(Debug, Clone)]
pub struct FastPathLayer<H>(H);

impl<H, S> tower::Layer<S> for FastPathLayer<H>
where
    H: Clone,
{
    type Service = FastPath<S, H>;

    fn layer(&self, inner: S) -> FastPath<S, H> {
        FastPath { inner, handler: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct FastPath<S, H> {
    inner: S,
    handler: H,
}

impl<S, H> tower::Service<http::Request<Body>> for FastPath<S, H>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    H: Handler,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.handler.takes(&request) {
            return Box::pin(self.inner.call(request));
        }
        let answering = self.handler.answer(request);
        Box::pin(async move { Ok(answer(answering.await)) })
    }
}

/// The client routes' fast path: `Produce` and `Fetch`.
#[derive(Debug, Clone)]
pub struct RecordsPath {
    records: Arc<RecordsService>,
    /// The largest message accepted or answered (the broker's
    /// `max_request_bytes`).
    limit: usize,
}

impl RecordsPath {
    pub fn layer(records: Arc<RecordsService>, limit: usize) -> FastPathLayer<RecordsPath> {
        FastPathLayer(RecordsPath { records, limit })
    }
}

impl Handler for RecordsPath {
    fn takes(&self, request: &http::Request<Body>) -> bool {
        is_plain_call(request, PRODUCE_PATH) || is_plain_call(request, FETCH_PATH)
    }

    fn answer(&self, request: http::Request<Body>) -> Answering {
        let (records, limit) = (Arc::clone(&self.records), self.limit);
        if request.uri().path() == PRODUCE_PATH {
            Box::pin(async move { produce(&records, request, limit).await })
        } else {
            Box::pin(async move { fetch(&records, request, limit).await })
        }
    }
}

/// The internal routes' fast path: a follower's replica fetch, answered
/// with its records as they were read. The cluster secret is checked
/// first, from the headers, as the internal services' interceptor checks
/// it.
#[derive(Debug, Clone)]
pub struct ReplicaFetchPath {
    replication: Arc<ReplicationService>,
    secret: ClusterSecret,
    /// The largest request accepted (`max_request_bytes`) and answer sent.
    request_limit: usize,
    answer_limit: usize,
}

impl ReplicaFetchPath {
    pub fn layer(
        replication: Arc<ReplicationService>,
        secret: ClusterSecret,
        request_limit: usize,
        answer_limit: usize,
    ) -> FastPathLayer<ReplicaFetchPath> {
        FastPathLayer(ReplicaFetchPath { replication, secret, request_limit, answer_limit })
    }
}

impl Handler for ReplicaFetchPath {
    fn takes(&self, request: &http::Request<Body>) -> bool {
        is_plain_call(request, REPLICA_FETCH_PATH)
    }

    fn answer(&self, request: http::Request<Body>) -> Answering {
        let path = self.clone();
        Box::pin(async move { replica_fetch(&path, request).await })
    }
}

/// Checks the secret, then runs the replica fetch handler and answers with
/// its records as they were read.
async fn replica_fetch(path: &ReplicaFetchPath, request: http::Request<Body>) -> Result<Vec<Bytes>, Status> {
    let headers = MetadataMap::from_headers(request.headers().clone());
    if !path.secret.admits(&tonic::Request::from_parts(headers, http::Extensions::default(), ())) {
        return Err(lacks_cluster_secret());
    }
    let request = decoded::<ReplicaFetchRequest>(request, path.request_limit).await?;
    let response = Replication::fetch(&*path.replication, request).await?.into_inner();
    within_limit(replica_fetch_pieces(response), path.answer_limit)
}

/// A replica fetch answer as pieces: per partition, its small fields, then
/// its records (sent as they are when large).
fn replica_fetch_pieces(response: ReplicaFetchResponse) -> MessagePieces {
    // Each partition without its records, the records, and the length of
    // the partition's message with them.
    let partitions: Vec<(PartitionData, Bytes, usize)> = response
        .partitions
        .into_iter()
        .map(|mut data| {
            let records = std::mem::take(&mut data.records);
            let records_len = if records.is_empty() {
                0
            } else {
                MessagePieces::length_delimited_len(PARTITION_RECORDS, records.len())
            };
            let len = data.encoded_len() + records_len;
            (data, records, len)
        })
        .collect();
    let len =
        partitions.iter().map(|(_, _, len)| MessagePieces::length_delimited_len(REPLICA_FETCH_PARTITIONS, *len)).sum();
    let mut pieces =
        MessagePieces::new(len, MessagePieces::referenced_bytes(partitions.iter().map(|(_, records, _)| records)));
    for (data, records, len) in &partitions {
        pieces.put_length_delimited_key(REPLICA_FETCH_PARTITIONS, *len);
        pieces.put_message(data);
        if !records.is_empty() {
            pieces.put_bytes_field(PARTITION_RECORDS, records);
        }
    }
    pieces
}

/// A plain gRPC call to `path`: POST, `application/grpc` (or `+proto`),
/// no message compression. Anything else is tonic's to answer.
fn is_plain_call(request: &http::Request<Body>, path: &str) -> bool {
    let headers = request.headers();
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let identity = headers.get("grpc-encoding").is_none_or(|value| value == "identity");
    request.method() == http::Method::POST
        && request.uri().path() == path
        && matches!(content_type, Some("application/grpc" | "application/grpc+proto"))
        && identity
}

/// The request's message, decoded over the frames it came in, with its
/// headers and extensions as tonic hands them to a handler.
async fn decoded<M: Message + Default>(
    request: http::Request<Body>,
    limit: usize,
) -> Result<tonic::Request<M>, Status> {
    let (parts, body) = request.into_parts();
    let frames = read_frames(body, limit).await?;
    let message =
        M::decode(frames).map_err(|error| Status::internal(format!("failed to decode Protobuf message: {error}")))?;
    Ok(tonic::Request::from_parts(MetadataMap::from_headers(parts.headers), parts.extensions, message))
}

/// Runs the produce handler on the request decoded over its frames.
async fn produce(records: &RecordsService, request: http::Request<Body>, limit: usize) -> Result<Vec<Bytes>, Status> {
    let request = decoded::<ProduceRequest>(request, limit).await?;
    let response = Records::produce(records, request).await?.into_inner();
    let mut pieces = MessagePieces::new(response.encoded_len(), 0);
    pieces.put_message(&response);
    within_limit(pieces, limit)
}

/// Runs the fetch handler and answers with its records as they were read.
async fn fetch(records: &RecordsService, request: http::Request<Body>, limit: usize) -> Result<Vec<Bytes>, Status> {
    let request = decoded::<FetchRequest>(request, limit).await?;
    let response = Records::fetch(records, request).await?.into_inner();
    within_limit(fetch_pieces(response), limit)
}

/// A fetch answer as pieces: the small fields, then the records (sent as
/// they are when large).
fn fetch_pieces(mut response: FetchResponse) -> MessagePieces {
    let fetched = std::mem::take(&mut response.records);
    let records_len =
        if fetched.is_empty() { 0 } else { MessagePieces::length_delimited_len(FETCH_RECORDS, fetched.len()) };
    let mut pieces =
        MessagePieces::new(response.encoded_len() + records_len, MessagePieces::referenced_bytes([&fetched]));
    pieces.put_message(&response);
    if !fetched.is_empty() {
        pieces.put_bytes_field(FETCH_RECORDS, &fetched);
    }
    pieces
}

/// The finished pieces; refused as tonic refuses an answer over its limit.
fn within_limit(pieces: MessagePieces, limit: usize) -> Result<Vec<Bytes>, Status> {
    let (pieces, written) = pieces.finish();
    let len = written - MessagePrefix::BYTES;
    if len > limit {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {limit} bytes"
        )));
    }
    Ok(pieces)
}

/// The HTTP answer to a unary call: its message's pieces and `grpc-status:
/// 0`, or the status alone.
fn answer(result: Result<Vec<Bytes>, Status>) -> http::Response<Body> {
    match result {
        Ok(pieces) => unary_answer(pieces),
        Err(status) => status.into_http(),
    }
}

/// The request body's frames holding one gRPC message (its 5-byte prefix
/// taken off), refused as soon as it can be told to be too large, or
/// compressed, or not exactly one message.
async fn read_frames(mut body: Body, limit: usize) -> Result<Frames, Status> {
    let mut frames = Frames::default();
    let mut expected: Option<usize> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else { continue };
        frames.push(data);
        // The prefix, taken once its five bytes are here.
        let prefix = if expected.is_none() { frames.take_prefix() } else { None };
        if let Some(MessagePrefix { compressed, len }) = prefix {
            if compressed {
                return Err(Status::unimplemented("compressed messages are not accepted: compression is not enabled"));
            }
            if len > limit {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
                )));
            }
            expected = Some(len);
        }
        if let Some(len) = expected {
            if frames.remaining() > len {
                return Err(Status::internal("a unary request carried more than one message"));
            }
        }
    }
    match expected {
        Some(len) if frames.remaining() == len => Ok(frames),
        Some(len) => Err(Status::internal(format!(
            "the request ended after {} of its message's {len} bytes",
            frames.remaining()
        ))),
        None => Err(Status::internal("the request carried no message")),
    }
}

/// A unary gRPC answer: the message's pieces (its prefix first), then
/// `grpc-status: 0`.
fn unary_answer(pieces: Vec<Bytes>) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = UnaryBody { pieces: pieces.into(), trailers: Some(trailers) };
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

/// The message's pieces as data frames, then the trailers.
#[derive(Debug)]
struct UnaryBody {
    pieces: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(piece) = self.pieces.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(pieces: &[&[u8]]) -> Frames {
        let mut frames = Frames::default();
        for piece in pieces {
            frames.push(Bytes::copy_from_slice(piece));
        }
        frames
    }

    #[test]
    fn a_request_decoded_over_frames_is_the_request_encoded() {
        let request = ProduceRequest {
            topic: "orders".into(),
            partition: 3,
            acks: 2,
            timeout_ms: 1000,
            records: Bytes::new(),
            batches: vec![Bytes::from(vec![7u8; 5000]), Bytes::from(vec![9u8; 20_000]), Bytes::from_static(b"x")],
        };
        let encoded = request.encode_to_vec();
        // Cut into frames at every size from 1 byte to whole.
        for cut in [1, 7, 100, 4096, 16_384, encoded.len()] {
            let pieces: Vec<&[u8]> = encoded.chunks(cut).collect();
            let decoded = ProduceRequest::decode(frames(&pieces)).expect("decodes");
            assert_eq!(decoded, request, "cut every {cut} bytes");
        }
    }

    #[test]
    fn a_fetch_answer_in_pieces_decodes_to_itself_and_sends_large_records_as_read() {
        let records = Bytes::from(vec![5u8; 70_000]);
        for response in [
            FetchResponse { records: records.clone(), high_watermark: 9, log_start_offset: 2, next_offset: 7 },
            FetchResponse {
                records: Bytes::from_static(b"small"),
                high_watermark: 3,
                log_start_offset: 0,
                next_offset: 3,
            },
            FetchResponse::default(),
        ] {
            let pieces = within_limit(fetch_pieces(response.clone()), 1 << 20).expect("within the limit");
            let body: Vec<u8> = pieces.concat();
            let prefix = MessagePrefix::decode(body[..5].try_into().expect("5 bytes"));
            assert_eq!(prefix, MessagePrefix::uncompressed(body.len() - 5));
            assert_eq!(FetchResponse::decode(&body[5..]).expect("decodes"), response);
            let large = response.records.len() >= MessagePieces::COPY_BELOW;
            assert_eq!(pieces.len(), if large { 2 } else { 1 }, "small answers travel as one piece");
            if large {
                assert_eq!(
                    pieces.last().map(|piece| piece.as_ptr()),
                    Some(records.as_ptr()),
                    "the records, not a copy"
                );
            }
        }
        let too_large = within_limit(fetch_pieces(FetchResponse { records, ..Default::default() }), 1000);
        assert_eq!(too_large.expect_err("over the limit").code(), tonic::Code::OutOfRange);
    }

    #[test]
    fn a_replica_fetch_answer_in_pieces_decodes_to_itself() {
        let large = Bytes::from(vec![3u8; 100_000]);
        let partition = |topic: &str, records: Bytes, error: &str| PartitionData {
            topic: topic.into(),
            partition: 4,
            records,
            high_watermark: 10,
            log_start_offset: 1,
            error: error.into(),
            message: String::new(),
        };
        let response = ReplicaFetchResponse {
            partitions: vec![
                partition("a", large.clone(), ""),
                partition("b", Bytes::from_static(b"tiny"), ""),
                partition("c", Bytes::new(), brook_record::ErrorCode::NotLeader.name()),
            ],
        };
        let pieces = within_limit(replica_fetch_pieces(response.clone()), 1 << 20).expect("within the limit");
        let body: Vec<u8> = pieces.concat();
        assert_eq!(MessagePrefix::decode(body[..5].try_into().expect("5 bytes")).len, body.len() - 5);
        assert_eq!(ReplicaFetchResponse::decode(&body[5..]).expect("decodes"), response);
        assert!(pieces.iter().any(|piece| piece.as_ptr() == large.as_ptr()), "the large records are not copied");
        let empty = within_limit(replica_fetch_pieces(ReplicaFetchResponse::default()), 10).expect("empty");
        assert_eq!(empty.concat(), vec![0, 0, 0, 0, 0]);
    }

    async fn read(pieces: Vec<Vec<u8>>, limit: usize) -> Result<Frames, Status> {
        let chunks = pieces.into_iter().map(|piece| Ok::<_, Status>(Frame::data(Bytes::from(piece))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        read_frames(Body::new(body), limit).await
    }

    #[tokio::test]
    async fn a_body_that_is_not_one_plain_message_is_refused_by_what_is_wrong() {
        let message = |len: u32, body: &[u8]| {
            let mut framed = vec![0];
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(body);
            framed
        };
        let whole = read(vec![message(3, b"ab"), b"c".to_vec()], 100).await.expect("one message in two frames");
        assert_eq!(whole.remaining(), 3);
        let too_large = read(vec![message(101, b"")], 100).await.expect_err("over the limit");
        assert_eq!(too_large.code(), tonic::Code::OutOfRange);
        let compressed = read(vec![vec![1, 0, 0, 0, 1, 9]], 100).await.expect_err("compressed");
        assert_eq!(compressed.code(), tonic::Code::Unimplemented);
        let cut = read(vec![message(5, b"ab")], 100).await.expect_err("cut short");
        assert!(cut.message().contains("after 2 of its message's 5 bytes"), "{cut}");
        let two = read(vec![message(1, b"a"), message(1, b"b")], 100).await.expect_err("two messages");
        assert!(two.message().contains("more than one message"), "{two}");
        let empty = read(vec![], 100).await.expect_err("no message");
        assert!(empty.message().contains("no message"), "{empty}");
    }
}
