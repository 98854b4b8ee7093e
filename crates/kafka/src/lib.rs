//! # brook-kafka: Kafka's wire protocol in front of the broker core
//!
//! Owns the Kafka listener's side of a broker: reading size-prefixed
//! requests, negotiating versions (ApiVersions), decoding requests and
//! encoding responses with the `kafka-protocol` crate, and turning each
//! API into calls on the broker's [`Core`]. It owns no broker state: the
//! broker implements `Core` over the same admission, append, acks wait,
//! read and topic-proposal steps its gRPC services take, so both front
//! ends share one produce path and one fetch path, one idempotence check
//! and one KIP-320 epoch check, and the error vocabulary of
//! [`brook_record::ErrorCode`].
//!
//! Layout:
//! - `connection.rs`: framing, the request memory reservation, several
//!   requests in flight per connection, answers in request order;
//! - `api.rs`: the versions served, ApiVersions, dispatch, response frames;
//! - `fetch_frame.rs`: the Fetch response frame written around its
//!   records, which are sent from the segment files with `sendfile`;
//! - `metadata.rs`, `produce.rs`, `fetch.rs`, `offsets.rs`, `admin.rs`,
//!   `configs.rs`: one API family each;
//! - `core.rs`: the [`Core`] trait and the views it hands out.
//!
//! Invariants: answers leave in the order their requests came; a request
//! that does not frame or decode closes its connection before anything is
//! appended for it; records pass through as the client sent them (a slice
//! of the request frame) to the broker's validator, and go out to
//! consumers from the segment files without a copy in user space; a version is served
//! only if it is advertised, and one advertised but not servable (Produce
//! before v3) is answered UNSUPPORTED_VERSION, never a malformed answer.
//!
//! Never: depend on tonic or the broker crate (the broker depends on this
//! one); decode client record batches with the codec crate's decoder
//! (brook-record validates them); block an async worker on file I/O.

mod admin;
pub mod api;
mod configs;
pub mod connection;
pub mod core;
mod fetch;
pub mod fetch_frame;
mod metadata;
mod offsets;
mod produce;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::io::AsyncRead;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use crate::connection::ListenerConfig;
pub use crate::core::{
    Acks, BrokerView, ClusterView, Core, CoreError, Fetched, FileChunk, FileSource, NewTopic, OffsetQuery,
    PartitionRecords, PartitionView, Produced, Records, TopicView,
};

/// What a connection tells the broker of its requests, so the broker's
/// idle and first-request deadlines see a busy Kafka connection as busy.
pub trait RequestActivity: Send + Sync + 'static {
    fn request_started(&self);
    fn request_ended(&self);
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (Kafka closes the connection).
    #[error("{0}")]
    Frame(String),
    /// A response could not be encoded at the version asked (a bug).
    #[error("encoding a response: {0}")]
    Encode(String),
}

/// An accepted connection, split: the read side (under the broker's
/// connection limits), the socket's write half (fetch answers are sent
/// from files with `sendfile`), the peer for logs, and where its requests
/// are reported.
pub struct Accepted<R> {
    pub reader: R,
    pub writer: tokio::net::tcp::OwnedWriteHalf,
    pub peer: String,
    pub activity: Arc<dyn RequestActivity>,
}

impl<R> std::fmt::Debug for Accepted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// Serves every connection `incoming` yields until it ends (the broker
/// stops accepting) or `config.shutdown` is cancelled. Each connection is
/// a task on `tracker`, awaited by the broker at shutdown.
pub async fn serve<C, R, I>(incoming: I, core: Arc<C>, config: ListenerConfig, tracker: TaskTracker)
where
    C: Core,
    R: AsyncRead + Send + Unpin + 'static,
    I: Stream<Item = std::io::Result<Accepted<R>>>,
{
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            () = config.shutdown.cancelled() => None,
        };
        let Some(accepted) = next else { break };
        let Accepted { reader, writer, peer, activity } = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a Kafka connection failed");
                continue;
            }
        };
        let span = tracing::info_span!("kafka_connection", %peer);
        let serving = connection::serve_connection(reader, writer, Arc::clone(&core), activity, config.clone());
        tracker.spawn(serving.instrument(span));
    }
}
