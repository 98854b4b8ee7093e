//! A prototype consumer fetch outside gRPC, off unless `sendfile_listen`
//! is set: it answers with the log's bytes sent by `sendfile(2)` straight
//! from the page cache to the socket, so the fetch path has no user-space
//! copy at all. It exists to measure what gRPC's copies cost consumers
//! (BENCHMARKS.md); it is not a supported API.
//!
//! Protocol, on a plain TCP connection, any number of exchanges:
//! - request: `u32` length of the rest, then `u16` topic length, the topic
//!   (UTF-8), `u32` partition, `i64` offset, `u32` max bytes (all big
//!   endian);
//! - answer: `u8` status (0 ok, 1 error), then on success `i64` next
//!   offset, `i64` high watermark, `u64` byte count and that many bytes of
//!   whole batches; on error `u32` length and a UTF-8 message.
//!
//! Same rules as a gRPC fetch: only the partition's leader answers, only
//! below the HW. Caveat of the prototype: a `sendfile` of pages not in the
//! page cache waits for the disk on an async worker.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::topics::TopicRegistry;

/// The largest request frame accepted (a topic name is at most 249 bytes).
const MAX_REQUEST_BYTES: u32 = 1024;

/// Accepts connections on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<TopicRegistry>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (registry, shutdown) = (Arc::clone(&registry), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        result = connection(stream, registry) => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "sendfile connection ended");
                            }
                        }
                        () = shutdown.cancelled() => {}
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "sendfile listener could not accept"),
        }
    }
}

/// One fetch request as it came.
struct Request {
    topic: String,
    partition: u32,
    offset: i64,
    max_bytes: u32,
}

fn parse(frame: &[u8]) -> Result<Request, String> {
    let take = |at: usize, len: usize| frame.get(at..at + len).ok_or_else(|| "request frame too short".to_string());
    let topic_len = usize::from(u16::from_be_bytes(take(0, 2)?.try_into().map_err(|_| "topic length")?));
    let topic = std::str::from_utf8(take(2, topic_len)?).map_err(|_| "topic is not UTF-8".to_string())?;
    let rest = 2 + topic_len;
    let partition = u32::from_be_bytes(take(rest, 4)?.try_into().map_err(|_| "partition")?);
    let offset = i64::from_be_bytes(take(rest + 4, 8)?.try_into().map_err(|_| "offset")?);
    let max_bytes = u32::from_be_bytes(take(rest + 12, 4)?.try_into().map_err(|_| "max bytes")?);
    Ok(Request { topic: topic.to_string(), partition, offset, max_bytes })
}

async fn connection(mut stream: TcpStream, registry: Arc<TopicRegistry>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let length = match stream.read_u32().await {
            Ok(length) => length,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        };
        if length > MAX_REQUEST_BYTES {
            return refuse(&mut stream, &format!("request of {length} bytes; at most {MAX_REQUEST_BYTES}")).await;
        }
        let mut frame = vec![0u8; length as usize];
        stream.read_exact(&mut frame).await?;
        let request = match parse(&frame) {
            Ok(request) => request,
            Err(message) => return refuse(&mut stream, &message).await,
        };
        match fetch(&registry, &request).await {
            Ok((read, high_watermark)) => {
                let mut header = Vec::with_capacity(25);
                header.push(0u8);
                header.extend_from_slice(&i64::try_from(read.next_offset.0).unwrap_or(i64::MAX).to_be_bytes());
                header.extend_from_slice(&i64::try_from(high_watermark.0).unwrap_or(i64::MAX).to_be_bytes());
                header.extend_from_slice(&read.total_bytes().to_be_bytes());
                stream.write_all(&header).await?;
                for range in &read.ranges {
                    send_range(&stream, range.file(), range.position(), range.length()).await?;
                }
            }
            Err(error) => {
                let message = error.to_string();
                let mut answer = vec![1u8];
                answer.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
                answer.extend_from_slice(message.as_bytes());
                stream.write_all(&answer).await?;
            }
        }
    }
}

/// Answers a malformed request with an error and ends the connection.
async fn refuse(stream: &mut TcpStream, message: &str) -> io::Result<()> {
    let mut answer = vec![1u8];
    answer.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    answer.extend_from_slice(message.as_bytes());
    stream.write_all(&answer).await
}

#[tracing::instrument(skip_all, fields(topic = %request.topic, partition = request.partition, offset = request.offset))]
async fn fetch(
    registry: &TopicRegistry,
    request: &Request,
) -> Result<(brook_storage::LogRead, brook_record::Offset), BrokerError> {
    let partition = registry.partition(&request.topic, request.partition)?;
    partition.read_ranges(request.offset, u64::from(request.max_bytes.max(1))).await
}

/// `sendfile`s `length` bytes of `file` from `position` to the socket,
/// waiting whenever the socket buffer is full.
async fn send_range(stream: &TcpStream, file: &std::fs::File, position: u64, length: u64) -> io::Result<()> {
    let (mut offset, end) = (position, position + length);
    while offset < end {
        stream.writable().await?;
        let remaining = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream.as_fd(), file, Some(&mut offset), remaining).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "sendfile sent nothing")),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
