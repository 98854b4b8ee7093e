//! What one connection may hold of the broker, on both listeners: a
//! permit of `max_connections`, a deadline for its first request, an idle
//! timeout, a bounded number of concurrent streams, a share of one memory
//! budget for request bodies, and a short grace at shutdown.
//!
//! Why each (Kafka learnt them one outage at a time):
//! - **First request within 10 s** (`HANDSHAKE_DEADLINE`): a socket that
//!   never sends the HTTP/2 preface, or never a request, would keep its
//!   permit for ever; 1,000 of them on the internal listener (no secret is
//!   needed to open one) cut the controller off from every broker.
//! - **Idle timeout** (`connections_max_idle_ms`, Kafka's
//!   `connections.max.idle.ms`, 10 min): a connection with no request in
//!   flight and none for that long is closed. TCP keep-alives (probes after
//!   30 s of silence, 3 more 10 s apart) and HTTP/2 pings on open streams
//!   find a peer that vanished without a FIN.
//! - **Shutdown**: hyper's graceful shutdown waits for every connection to
//!   finish; one that never completed its handshake never does. A
//!   connection with nothing in flight closes `SHUTDOWN_GRACE` after the
//!   stop (a SIGTERMed broker with one silent client socket open used to
//!   run on for ever).
//! - **Request memory** (`request_memory_budget_bytes`, Kafka's
//!   `queued.max.request.bytes`): each request's gRPC message states its
//!   length in its first five bytes; the whole length is reserved from one
//!   budget shared by every connection before any more of its body is read
//!   (all or nothing, so requests never deadlock holding halves). A request
//!   larger than the budget is refused at once; one that waits longer than
//!   `BUDGET_WAIT` is refused with RESOURCE_EXHAUSTED; one whose body has
//!   not all arrived `request_body_timeout_ms` after its reservation (a
//!   body that never ends) is refused with DEADLINE_EXCEEDED, and its room
//!   given back. Bodies not yet read wait in HTTP/2 flow control: at most
//!   the connection window per connection. (Only a call's first message
//!   is reserved: every Brook call sends one.)
//!
//! How a connection learns whether it is idle: tonic hands every request
//! the connection's [`ConnectionInfo`]; [`ActivityLayer`] counts requests
//! in flight on it, and the connection's own read side closes it when its
//! watchdog finds it idle past a deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::body::Body;

/// How long a new connection has to make its first request.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection with nothing in flight stays open once the
/// broker is stopping.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The most streams (calls) one HTTP/2 connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// How long a request may wait for room in the memory budget.
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);
/// TCP keep-alive: probes after this much silence, then every
/// `KEEPALIVE_INTERVAL`, `KEEPALIVE_RETRIES` times.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
/// HTTP/2 pings while streams are open, and how long an answer may take.
pub const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses after a failed accept, doubling up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The limits of one listener's connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Cancelled when the broker stops serving.
    pub shutdown: CancellationToken,
}

/// The listener's accepted connections, at most `max_connections` open at
/// once (mini-redis's `MAX_CONNECTIONS`): a connection holds a permit until
/// it closes, and the next accept waits for a free one.
#[derive(Debug)]
pub struct LimitedIncoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
}

impl LimitedIncoming {
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> LimitedIncoming {
        LimitedIncoming { listener, permits: Arc::new(Semaphore::new(limits.max_connections.max(1))), limits }
    }

    /// The accepted connections. A failed accept (out of file descriptors,
    /// say) is logged and retried after a pause, as mini-redis does, rather
    /// than handed to the server, which would stop serving.
    pub fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<LimitedConnection>> {
        futures::stream::unfold(self, |incoming| async move {
            let permit = Arc::clone(&incoming.permits).acquire_owned().await.ok()?;
            let mut backoff = ACCEPT_BACKOFF_MIN;
            let stream = loop {
                match incoming.listener.accept().await {
                    Ok((stream, _)) => break stream,
                    Err(error) => {
                        tracing::warn!(%error, ?backoff, "accepting a connection failed; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                }
            };
            let connection = LimitedConnection::new(stream, permit, &incoming.limits);
            Some((Ok(connection), incoming))
        })
    }
}

/// What a connection's requests tell it: how many are in flight, how many
/// there were, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `opened` that the last request ended.
    last_request_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_request_end_ms: AtomicU64::new(0),
        }
    }

    fn started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn ended(&self) {
        let elapsed = self.opened.elapsed().as_millis() as u64;
        self.last_request_end_ms.fetch_max(elapsed, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What tonic gives every request of a connection (see [`ActivityLayer`]).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// An accepted connection, the permit it holds while open, and the
/// watchdog that closes it when it has been idle too long (checked on its
/// read side, which the HTTP/2 connection always polls). The Kafka
/// listener splits it: the read half keeps the permit and the watchdog,
/// the write half is the socket's own (for `sendfile`).
pub struct LimitedConnection<S = TcpStream> {
    stream: S,
    peer: Option<std::net::SocketAddr>,
    _permit: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    watchdog: Pin<Box<Sleep>>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    stopping_since: Option<Instant>,
}

/// What the watchdog decided.
enum Watch {
    Close(&'static str),
    CheckAgainAt(Instant),
}

impl LimitedConnection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: &ConnectionLimits) -> LimitedConnection {
        // Nagle off: without it a small fetch or produce answer waits for
        // the peer's delayed ACK (~40 ms). A connection already gone fails
        // these; serving it then fails as harmlessly.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not turn Nagle off on a new connection");
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "could not turn TCP keep-alive on for a new connection");
        }
        let activity = Arc::new(Activity::new());
        LimitedConnection {
            peer: stream.peer_addr().ok(),
            stream,
            _permit: permit,
            watchdog: Box::pin(tokio::time::sleep_until(activity.opened + HANDSHAKE_DEADLINE)),
            activity,
            idle_timeout: limits.idle_timeout,
            shutdown: Box::pin(limits.shutdown.clone().cancelled_owned()),
            stopping_since: None,
        }
    }

    /// The read half (with the permit and the watchdog) and the write
    /// half.
    pub fn into_split(self) -> (LimitedConnection<tokio::net::tcp::OwnedReadHalf>, tokio::net::tcp::OwnedWriteHalf) {
        let (read, write) = self.stream.into_split();
        let reader = LimitedConnection {
            stream: read,
            peer: self.peer,
            _permit: self._permit,
            activity: self.activity,
            idle_timeout: self.idle_timeout,
            watchdog: self.watchdog,
            shutdown: self.shutdown,
            stopping_since: self.stopping_since,
        };
        (reader, write)
    }
}

impl<S> LimitedConnection<S> {
    fn watch(&self, now: Instant) -> Watch {
        let activity = &self.activity;
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: nothing to decide until it is not; look again later.
            return Watch::CheckAgainAt(now + HANDSHAKE_DEADLINE.min(self.idle_timeout));
        }
        if let Some(since) = self.stopping_since {
            let close_at = since + SHUTDOWN_GRACE;
            return if now >= close_at {
                Watch::Close("idle while the broker stops")
            } else {
                Watch::CheckAgainAt(close_at)
            };
        }
        if activity.requests.load(Ordering::Relaxed) == 0 {
            let close_at = activity.opened + HANDSHAKE_DEADLINE;
            return if now >= close_at {
                Watch::Close("no request within the handshake deadline")
            } else {
                Watch::CheckAgainAt(close_at)
            };
        }
        let last = activity.opened + Duration::from_millis(activity.last_request_end_ms.load(Ordering::Relaxed));
        let close_at = last + self.idle_timeout;
        if now >= close_at {
            Watch::Close("idle past connections_max_idle_ms")
        } else {
            Watch::CheckAgainAt(close_at)
        }
    }

    /// Polls the stop signal and the watchdog; an error closes the
    /// connection.
    fn poll_watchdog(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        if self.stopping_since.is_none() && self.shutdown.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            self.stopping_since = Some(now);
            self.watchdog.as_mut().reset(now + SHUTDOWN_GRACE);
        }
        while self.watchdog.as_mut().poll(cx).is_ready() {
            match self.watch(Instant::now()) {
                Watch::Close(reason) => {
                    tracing::debug!(peer = ?self.peer, reason, "closing a connection");
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, reason));
                }
                Watch::CheckAgainAt(at) => self.watchdog.as_mut().reset(at),
            }
        }
        Ok(())
    }
}

impl<S> LimitedConnection<S> {
    /// The peer's address, for logs.
    pub fn peer(&self) -> String {
        self.peer.map_or_else(|| "unknown".to_string(), |peer| peer.to_string())
    }

    /// What this connection's requests report (see [`Activity`]).
    pub fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }
}

impl brook_kafka::RequestActivity for Activity {
    fn request_started(&self) {
        self.started();
    }

    fn request_ended(&self) {
        self.ended();
    }
}

impl<S> std::fmt::Debug for LimitedConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedConnection").field("peer", &self.peer).finish()
    }
}

impl tonic::transport::server::Connected for LimitedConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo { tcp: self.stream.connect_info(), activity: Arc::clone(&self.activity) }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedConnection<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.poll_watchdog(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts each request in flight on its connection (see the module doc),
/// and makes each request's body reserve its length from the memory
/// budget before it is read.
#[derive(Debug, Clone)]
pub struct ActivityLayer {
    budget: Arc<RequestBudget>,
}

impl ActivityLayer {
    pub fn new(budget: Arc<RequestBudget>) -> ActivityLayer {
        ActivityLayer { budget }
    }
}

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;

    fn layer(&self, inner: S) -> ActivityService<S> {
        ActivityService { inner, budget: Arc::clone(&self.budget) }
    }
}

#[derive(Debug, Clone)]
pub struct ActivityService<S> {
    inner: S,
    budget: Arc<RequestBudget>,
}

impl<S> tower::Service<http::Request<Body>> for ActivityService<S>
where
    S: tower::Service<http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let activity = request.extensions().get::<ConnectionInfo>().map(|info| Arc::clone(&info.activity));
        let in_flight = activity.map(InFlight::new);
        let (parts, body) = request.into_parts();
        let body = Body::new(BudgetedBody::new(body, Arc::clone(&self.budget)));
        let answer = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.started();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The memory every connection's request bodies share (Kafka's
/// `queued.max.request.bytes`).
#[derive(Debug)]
pub struct RequestBudget {
    bytes: usize,
    permits: Arc<Semaphore>,
    /// How long a request may wait for room ([`BUDGET_WAIT`]).
    wait: Duration,
    /// How long its body may take to arrive once it has room.
    body_timeout: Duration,
}

impl RequestBudget {
    pub fn new(bytes: usize, body_timeout: Duration) -> RequestBudget {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        RequestBudget { bytes, permits: Arc::new(Semaphore::new(bytes)), wait: BUDGET_WAIT, body_timeout }
    }

    /// Room for a request of `bytes`, held until the permit drops; waits
    /// for room as a gRPC body does, then refuses (the message says why).
    pub async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, String> {
        if bytes > self.bytes {
            return Err(format!(
                "a request of {bytes} bytes is larger than the broker's request memory budget \
                 (request_memory_budget_bytes = {})",
                self.bytes
            ));
        }
        let wanted = u32::try_from(bytes).map_err(|_| format!("a request of {bytes} bytes"))?;
        match tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err("the broker is stopping".to_string()),
            Err(_) => Err(format!(
                "no room for a request of {bytes} bytes in the request memory budget within {:?}",
                self.wait
            )),
        }
    }

    /// Bytes reserved right now (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.bytes - self.permits.available_permits()
    }
}

/// The gRPC message prefix: a compression flag and a 4-byte length.
const MESSAGE_PREFIX_BYTES: usize = 5;

/// The first `MESSAGE_PREFIX_BYTES` of `frames`, once they hold as many.
fn message_prefix(frames: &std::collections::VecDeque<Bytes>) -> Option<[u8; MESSAGE_PREFIX_BYTES]> {
    let mut prefix = [0u8; MESSAGE_PREFIX_BYTES];
    let mut filled = 0;
    for byte in frames.iter().flat_map(|frame| frame.iter()).take(MESSAGE_PREFIX_BYTES) {
        prefix[filled] = *byte;
        filled += 1;
    }
    (filled == MESSAGE_PREFIX_BYTES).then_some(prefix)
}

/// A request body that reserves its message's length from the budget once
/// its first five bytes say it, and holds the reservation until the
/// request is done with it (dropped).
struct BudgetedBody {
    inner: Body,
    budget: Arc<RequestBudget>,
    /// Frames read before the reservation was made, as they came (not
    /// copied: a produce's first frame is usually all of its records).
    held: std::collections::VecDeque<Bytes>,
    state: Reservation,
}

enum Reservation {
    /// Reading the prefix.
    Reading,
    /// Waiting for room, until the deadline.
    Waiting {
        wanted: usize,
        acquire: Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>,
        deadline: Pin<Box<Sleep>>,
    },
    /// Room reserved (or none needed): frames pass through. The permit is
    /// held until the body is dropped, or until the body has not ended by
    /// the deadline.
    Held(Option<(OwnedSemaphorePermit, Pin<Box<Sleep>>)>),
}

impl BudgetedBody {
    fn new(inner: Body, budget: Arc<RequestBudget>) -> BudgetedBody {
        BudgetedBody { inner, budget, held: std::collections::VecDeque::new(), state: Reservation::Reading }
    }

    fn refuse(message: String) -> tonic::Status {
        tonic::Status::resource_exhausted(message)
    }

    /// Starts reserving `wanted` bytes (the message and its prefix).
    fn reserve(&mut self, wanted: usize) -> Result<(), tonic::Status> {
        if wanted > self.budget.bytes {
            return Err(BudgetedBody::refuse(format!(
                "a request of {wanted} bytes is larger than the broker's request memory budget \
                 (request_memory_budget_bytes = {})",
                self.budget.bytes
            )));
        }
        let permits = Arc::clone(&self.budget.permits);
        let count = u32::try_from(wanted).unwrap_or(u32::MAX);
        self.state = Reservation::Waiting {
            wanted,
            acquire: Box::pin(permits.acquire_many_owned(count)),
            deadline: Box::pin(tokio::time::sleep(self.budget.wait)),
        };
        Ok(())
    }
}

impl HttpBody for BudgetedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            match &mut self.state {
                Reservation::Held(reserved) => {
                    if let Some((permit, deadline)) = reserved {
                        if deadline.as_mut().poll(cx).is_ready() {
                            let (bytes, timeout) = (permit.num_permits(), self.budget.body_timeout);
                            self.state = Reservation::Held(None);
                            return Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                                "a request of {bytes} bytes had not all arrived {timeout:?} after it was given \
                                 room in the broker's request memory (request_body_timeout_ms)"
                            )))));
                        }
                    }
                    if let Some(held) = self.held.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(held))));
                    }
                    let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
                    if frame.is_none() {
                        // All of it arrived: no deadline any more (the
                        // room stays reserved until the request is done).
                        if let Reservation::Held(Some((_, deadline))) = &mut self.state {
                            deadline.as_mut().reset(Instant::now() + Duration::from_secs(365 * 24 * 3600));
                        }
                    }
                    return Poll::Ready(
                        frame.map(|frame| frame.map_err(|error| tonic::Status::from_error(error.into()))),
                    );
                }
                Reservation::Waiting { wanted, acquire, deadline } => {
                    if let Poll::Ready(permit) = acquire.as_mut().poll(cx) {
                        let permit = permit.map_err(|_| BudgetedBody::refuse("the broker is stopping".into()))?;
                        let body_deadline = Box::pin(tokio::time::sleep(self.budget.body_timeout));
                        self.state = Reservation::Held(Some((permit, body_deadline)));
                        continue;
                    }
                    if deadline.as_mut().poll(cx).is_ready() {
                        let (wanted, in_use) = (*wanted, self.budget.in_use());
                        // Out of the semaphore's queue at once: a refused
                        // request must not keep others waiting behind it.
                        self.state = Reservation::Held(None);
                        return Poll::Ready(Some(Err(BudgetedBody::refuse(format!(
                            "no room for a request of {wanted} bytes within {:?}: {in_use} of the broker's {} \
                             bytes of request memory are held by requests in progress",
                            self.budget.wait, self.budget.bytes
                        )))));
                    }
                    return Poll::Pending;
                }
                Reservation::Reading => {
                    if let Some(prefix) = message_prefix(&self.held) {
                        let mut length = &prefix[1..];
                        let length = length.get_u32() as usize;
                        self.reserve(MESSAGE_PREFIX_BYTES + length)?;
                        continue;
                    }
                    match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => self.held.push_back(data),
                            // Trailers before a whole prefix: nothing to
                            // reserve (not a gRPC message; the decoder
                            // says so).
                            Err(frame) => {
                                self.state = Reservation::Held(None);
                                if let Some(held) = self.held.pop_front() {
                                    return Poll::Ready(Some(Ok(Frame::data(held))));
                                }
                                return Poll::Ready(Some(Ok(frame)));
                            }
                        },
                        Some(Err(error)) => return Poll::Ready(Some(Err(tonic::Status::from_error(error.into())))),
                        None => {
                            // Ended before a whole prefix: pass on what came.
                            self.state = Reservation::Held(None);
                            continue;
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Reservation::Held(_)) && self.held.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use http_body_util::BodyExt;

    fn message(length: usize) -> Bytes {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[0]);
        bytes.extend_from_slice(&(length as u32).to_be_bytes());
        bytes.extend_from_slice(&vec![7u8; length]);
        bytes.freeze()
    }

    #[tokio::test]
    async fn a_body_reserves_its_length_until_dropped_and_passes_its_bytes_through() {
        let budget = Arc::new(RequestBudget::new(1000, Duration::from_secs(30)));
        let body = BudgetedBody::new(Body::new(http_body_util::Full::new(message(600))), Arc::clone(&budget));
        let mut body = Box::pin(body);
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            read.extend_from_slice(&frame.expect("a frame").into_data().expect("data"));
        }
        assert_eq!(read, message(600).to_vec());
        assert_eq!(budget.in_use(), 605, "held while the request holds its body");
        drop(body);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_prefix_split_across_frames_is_read_and_the_frames_pass_through_as_they_came() {
        let budget = Arc::new(RequestBudget::new(1000, Duration::from_secs(30)));
        let whole = message(300);
        let pieces = [whole.slice(..2), whole.slice(2..4), whole.slice(4..)];
        let frames = futures::stream::iter(pieces.clone().map(|piece| Ok::<_, tonic::Status>(Frame::data(piece))));
        let mut body =
            Box::pin(BudgetedBody::new(Body::new(http_body_util::StreamBody::new(frames)), Arc::clone(&budget)));
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            read.push(frame.expect("a frame").into_data().expect("data"));
        }
        assert_eq!(read, pieces.to_vec(), "no frame joined or copied");
        assert_eq!(budget.in_use(), 305);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_is_refused_at_once() {
        let budget = Arc::new(RequestBudget::new(1000, Duration::from_secs(30)));
        let mut body = Box::pin(BudgetedBody::new(Body::new(http_body_util::Full::new(message(2000))), budget));
        let error = body.frame().await.expect("a frame").expect_err("refused");
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(error.message().contains("larger than the broker's request memory budget"), "{error}");
    }

    #[tokio::test]
    async fn a_body_waits_for_room_and_is_refused_after_the_wait() {
        let budget = Arc::new(RequestBudget {
            wait: Duration::from_millis(50),
            ..RequestBudget::new(1000, Duration::from_secs(30))
        });
        let mut first =
            Box::pin(BudgetedBody::new(Body::new(http_body_util::Full::new(message(700))), Arc::clone(&budget)));
        first.frame().await.expect("a frame").expect("the first fits");
        let mut second =
            Box::pin(BudgetedBody::new(Body::new(http_body_util::Full::new(message(700))), Arc::clone(&budget)));
        let error = second.frame().await.expect("a frame").expect_err("no room");
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(error.message().contains("no room for a request of 705 bytes"), "{error}");
        drop(first);
        let mut third = Box::pin(BudgetedBody::new(Body::new(http_body_util::Full::new(message(700))), budget));
        third.frame().await.expect("a frame").expect("room again once the first is done");
    }
}

#[cfg(test)]
mod body_deadline_tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_that_never_ends_gives_its_room_back_at_the_deadline() {
        let budget = Arc::new(RequestBudget::new(1000, Duration::from_millis(50)));
        // A prefix claiming 600 bytes, 10 of them, and then nothing.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&600u32.to_be_bytes());
        prefix.extend_from_slice(&[1; 10]);
        sender.send(Ok(Frame::data(Bytes::from(prefix)))).await.expect("send");
        let frames = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|frame| (frame, receiver))
        });
        let stream = http_body_util::StreamBody::new(frames);
        let mut body = Box::pin(BudgetedBody::new(Body::new(stream), Arc::clone(&budget)));
        body.frame().await.expect("a frame").expect("the prefix and what followed");
        assert_eq!(budget.in_use(), 605);
        let error = body.frame().await.expect("a frame").expect_err("cut at the deadline");
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error}");
        assert_eq!(budget.in_use(), 0, "its room given back at once");
        drop(sender);
    }
}
