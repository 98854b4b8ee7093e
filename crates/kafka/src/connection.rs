//! One client connection: size-prefixed requests in, answers out in
//! request order.
//!
//! The reader reads a frame (its 4-byte size first, refused over
//! `max_request_bytes` before anything is allocated for it; the bytes
//! reserved from the broker's request memory budget until the request is
//! answered), decodes its header, and spawns the request's work as a task
//! of its own, so several requests of one connection are worked on at
//! once (a producer with five in flight). The writer takes those tasks in
//! the order the requests came and writes each answer as its task ends:
//! Kafka's clients match answers to requests by order as much as by
//! correlation id. A request that asks for no answer (produce with
//! acks=0) is skipped. What Kafka closes a connection for closes it here:
//! a frame over the limit, a header or body that does not decode, an API
//! key we do not know; nothing is appended for such a request.

use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{self, Answer};
use crate::core::FileChunk;
use crate::fetch_frame::Piece;
use crate::{Core, KafkaError, RequestActivity};

/// Requests of one connection worked on at once; the next is read when
/// the oldest is answered.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 32;

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The largest request frame (Kafka's `socket.request.max.bytes`,
    /// 100 MiB by default).
    pub max_request_bytes: usize,
    /// How long a request's bytes may take to arrive once its size is
    /// read (its memory is reserved meanwhile).
    pub body_timeout: std::time::Duration,
    /// Ends reading at shutdown; requests already read are answered.
    pub shutdown: CancellationToken,
}

/// A request's work, spawned: its answer's pieces, `None` when it gets
/// none, or the reason the connection closes (a body that does not
/// decode).
type Pending = tokio::task::JoinHandle<Result<Option<Vec<Piece>>, KafkaError>>;

/// How long a fetch answer waits for room in the socket before it looks
/// again (a lost wake-up costs no more than this).
const WRITABLE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves one connection until the client closes it, it breaks the
/// protocol, or the broker stops.
pub async fn serve_connection<C, R>(
    reader: R,
    writer: OwnedWriteHalf,
    core: Arc<C>,
    activity: Arc<dyn RequestActivity>,
    config: ListenerConfig,
) where
    C: Core,
    R: AsyncRead + Send + Unpin + 'static,
{
    let (pending_tx, pending_rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT_PER_CONNECTION);
    // Cancelled by the writer when a request breaks the protocol: the
    // reader stops too.
    let closing = config.shutdown.child_token();
    let writing = tokio::spawn(write_answers(writer, pending_rx, closing.clone()).in_current_span());
    let config = ListenerConfig { shutdown: closing, ..config };
    match read_requests(reader, core, &activity, &config, pending_tx).await {
        Ok(()) => tracing::debug!("client closed the connection"),
        Err(error) => tracing::info!(%error, "closing the connection"),
    }
    // The reader is done; the writer answers what was read, then ends.
    let _ = writing.await;
}

async fn read_requests<C: Core, R: AsyncRead + Unpin>(
    mut reader: R,
    core: Arc<C>,
    activity: &Arc<dyn RequestActivity>,
    config: &ListenerConfig,
    pending: mpsc::Sender<Pending>,
) -> Result<(), KafkaError> {
    loop {
        let size = tokio::select! {
            size = read_size(&mut reader) => size?,
            () = config.shutdown.cancelled() => return Ok(()),
        };
        let Some(size) = size else { return Ok(()) };
        if size < 8 || size > config.max_request_bytes {
            return Err(KafkaError::Frame(format!(
                "a request frame of {size} bytes (at least 8, at most socket.request.max.bytes = {})",
                config.max_request_bytes
            )));
        }
        let permit = core.reserve_request_memory(size).await.map_err(|refused| KafkaError::Frame(refused.message))?;
        let mut body = BytesMut::zeroed(size);
        tokio::time::timeout(config.body_timeout, reader.read_exact(&mut body)).await.map_err(|_| {
            KafkaError::Frame(format!("a request of {size} bytes did not arrive within {:?}", config.body_timeout))
        })??;
        let body = body.freeze();
        let request = decode_header(body)?;
        api::check_version(request.api_key, request.header.request_api_version)?;
        let span = tracing::info_span!(
            "kafka",
            api = ?request.api_key,
            version = request.header.request_api_version,
            correlation_id = request.header.correlation_id,
            client = request.header.client_id.as_deref().unwrap_or(""),
        );
        let (core, activity) = (Arc::clone(&core), Arc::clone(activity));
        activity.request_started();
        let work = tokio::spawn(
            async move {
                let answer = api::handle(&*core, request).await;
                drop(permit);
                activity.request_ended();
                match answer {
                    Ok(Answer::Respond(bytes)) => Ok(Some(vec![Piece::Bytes(bytes)])),
                    Ok(Answer::Pieces(pieces)) => Ok(Some(pieces)),
                    Ok(Answer::Silent) => Ok(None),
                    Err(error) => Err(error),
                }
            }
            .instrument(span),
        );
        if pending.send(work).await.is_err() {
            return Ok(());
        }
    }
}

/// A request whose header decoded; `body` is what follows the header.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// The header of a request frame. An API key we do not know, or a header
/// that does not decode, closes the connection, as in Kafka.
fn decode_header(mut body: Bytes) -> Result<Request, KafkaError> {
    let (key, version) = (i16::from_be_bytes([body[0], body[1]]), i16::from_be_bytes([body[2], body[3]]));
    let api_key = ApiKey::try_from(key).map_err(|()| KafkaError::Frame(format!("unknown API key {key}")))?;
    let known = api_key.valid_versions();
    let header_version = if api_key == ApiKey::ApiVersions && !(known.min..=known.max).contains(&version) {
        // An ApiVersions newer than we know is still answered (with the
        // versions we have); its header is read as the oldest.
        1
    } else {
        api_key.request_header_version(version)
    };
    let header = RequestHeader::decode(&mut body, header_version)
        .map_err(|error| KafkaError::Frame(format!("{api_key:?} v{version}: the request header: {error}")))?;
    Ok(Request { api_key, header, body: body.copy_to_bytes(body.remaining()) })
}

/// The next frame's size, or `None` when the client closed cleanly.
async fn read_size<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<usize>, KafkaError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = i32::from_be_bytes(size);
    usize::try_from(size).map(Some).map_err(|_| KafkaError::Frame(format!("a negative request size ({size})")))
}

async fn write_answers(mut writer: OwnedWriteHalf, mut pending: mpsc::Receiver<Pending>, closing: CancellationToken) {
    while let Some(work) = pending.recv().await {
        let answer = match work.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::info!(%error, "closing the connection");
                break;
            }
            Err(_) => break,
        };
        let Some(pieces) = answer else { continue };
        if let Err(error) = write_pieces(&mut writer, pieces).await {
            tracing::debug!(%error, "the answer could not be sent whole; closing the connection");
            break;
        }
    }
    closing.cancel();
    let _ = writer.shutdown().await;
}

/// An answer's pieces in order: bytes written as they are, file chunks
/// sent with `sendfile` from the segment file to the socket.
async fn write_pieces(writer: &mut OwnedWriteHalf, pieces: Vec<Piece>) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => writer.write_all(&bytes).await?,
            Piece::File(chunk) => send_file(writer, chunk).await?,
        }
    }
    Ok(())
}

/// Sends a file chunk with `sendfile(2)`: the kernel moves the page-cache
/// pages to the socket, nothing is copied in user space. The calls run on
/// the blocking pool (a page not in the page cache is read from disk
/// there, never on an async worker), each until the socket is full; the
/// wait for room is the runtime's. A chunk that comes up short (its
/// segment cut under it) ends the connection: its frame's length was
/// already sent.
async fn send_file(writer: &mut OwnedWriteHalf, chunk: FileChunk) -> std::io::Result<()> {
    let (mut position, end) = (chunk.position, chunk.position + chunk.length);
    while position < end {
        let socket = writer.as_ref().as_fd().try_clone_to_owned()?;
        let source = Arc::clone(&chunk.source);
        let sent = tokio::task::spawn_blocking(move || {
            let mut at = position;
            loop {
                let count = usize::try_from(end - at).unwrap_or(usize::MAX);
                match rustix::fs::sendfile(&socket, source.file(), Some(&mut at), count) {
                    Ok(0) if at < end => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the segment file ended before the fetched range did",
                        ))
                    }
                    Ok(_) if at < end => continue,
                    Ok(_) => return Ok(at),
                    Err(rustix::io::Errno::AGAIN) => return Ok(at),
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(error) => return Err(std::io::Error::from(error)),
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::other("the sendfile task stopped"))??;
        position = sent;
        if position < end {
            // The socket is full: forget the runtime's stale "writable"
            // (the send above was not the runtime's), then wait for room.
            let stream = writer.as_ref();
            let _ = stream.try_io(Interest::WRITABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
            let _ = tokio::time::timeout(WRITABLE_RECHECK, stream.writable()).await;
        }
    }
    Ok(())
}
