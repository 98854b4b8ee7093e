//! A prototype transport outside gRPC, off unless `raw_listen` is set. It
//! exists to measure what gRPC costs (BENCHMARKS.md), not as a supported
//! API:
//! - a consumer fetch answered with the log's bytes sent by `sendfile(2)`
//!   straight from the page cache to the socket: no user-space copy;
//! - a produce whose batches are read from the socket once, into the
//!   buffer that is then written to the log: no HTTP/2 framing, no
//!   protobuf, no copy into a decode buffer. Requests on one connection are
//!   read ahead while earlier ones are appended, and answered in order, so
//!   a producer can keep several in flight without reordering (TCP keeps
//!   them in order; this side appends them in order).
//!
//! Protocol, on a plain TCP connection, any number of exchanges, all
//! integers big endian:
//! - request: `u32` length of the rest, `u8` kind, then
//!   - kind 0, fetch: `u16` topic length, the topic (UTF-8), `u32`
//!     partition, `i64` offset, `u32` max bytes;
//!   - kind 1, produce: `u16` topic length, the topic, `u32` partition,
//!     `u8` acks (the `brook.v1.Acks` number: 1 none, 2 leader, 3 all),
//!     then whole record batches to the end of the frame;
//! - answer: `u8` status (0 ok, 1 error); on error `u32` length and a
//!   UTF-8 message; on success, to a fetch, `i64` next offset, `i64` high
//!   watermark, `u64` byte count and that many bytes of whole batches; to a
//!   produce, `i64` base offset and `i64` last offset (-1 with acks none).
//!
//! Same rules as gRPC (the produce goes through the same handler): only the
//! partition's leader answers, a fetch reads only below the HW. A frame
//! that cannot be parsed is answered with an error and ends the
//! connection; a request the broker refuses (unknown topic, corrupt batch,
//! not the leader) is answered with an error and the connection goes on.
//! Caveat of the prototype: a `sendfile` of pages not in the page cache
//! waits for the disk on an async worker.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use brook_proto::v1::ProduceRequest;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;
use crate::service::records::RecordsService;

const FETCH: u8 = 0;
const PRODUCE: u8 = 1;
/// The largest fetch frame accepted (a topic name is at most 249 bytes).
const MAX_FETCH_FRAME_BYTES: u32 = 1024;
/// Room for a produce frame's header on top of its batches.
const PRODUCE_HEADER_ROOM: u32 = 1024;
/// Requests read ahead of the one being answered.
const READ_AHEAD: usize = 4;

/// Accepts connections on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, records: Arc<RecordsService>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (records, shutdown) = (Arc::clone(&records), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        result = connection(stream, records) => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "raw connection ended");
                            }
                        }
                        () = shutdown.cancelled() => {}
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "raw listener could not accept"),
        }
    }
}

/// One request as it came.
#[derive(Debug)]
enum Request {
    Fetch { topic: String, partition: u32, offset: i64, max_bytes: u32 },
    Produce { topic: String, partition: u32, acks: u8, batches: Bytes },
}

/// Reads the topic and partition that both kinds start with; returns them
/// and the rest of the frame.
fn topic_and_partition(frame: &mut Bytes) -> Result<(String, u32), String> {
    let too_short = || "request frame too short".to_string();
    if frame.remaining() < 2 {
        return Err(too_short());
    }
    let topic_len = usize::from(frame.get_u16());
    if frame.remaining() < topic_len + 4 {
        return Err(too_short());
    }
    let topic = std::str::from_utf8(&frame[..topic_len]).map_err(|_| "topic is not UTF-8".to_string())?.to_string();
    frame.advance(topic_len);
    Ok((topic, frame.get_u32()))
}

fn parse(kind: u8, mut frame: Bytes) -> Result<Request, String> {
    let (topic, partition) = topic_and_partition(&mut frame)?;
    match kind {
        FETCH => {
            if frame.remaining() < 12 {
                return Err("request frame too short".to_string());
            }
            Ok(Request::Fetch { topic, partition, offset: frame.get_i64(), max_bytes: frame.get_u32() })
        }
        _ => {
            if frame.remaining() < 1 {
                return Err("request frame too short".to_string());
            }
            let acks = frame.get_u8();
            if frame.is_empty() {
                return Err("a produce request carries at least one batch".to_string());
            }
            Ok(Request::Produce { topic, partition, acks, batches: frame })
        }
    }
}

/// Reads the next frame. `Ok(None)` at a clean end of the connection;
/// `Ok(Some(Err(_)))` for a frame that cannot be taken (answered, then the
/// connection ends).
async fn read_request(reader: &mut OwnedReadHalf, max_batch_bytes: u32) -> io::Result<Option<Result<Request, String>>> {
    let length = match reader.read_u32().await {
        Ok(length) => length,
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    };
    if length == 0 {
        return Ok(Some(Err("empty request frame".to_string())));
    }
    let kind = reader.read_u8().await?;
    let limit = match kind {
        FETCH => MAX_FETCH_FRAME_BYTES,
        PRODUCE => max_batch_bytes.saturating_add(PRODUCE_HEADER_ROOM),
        other => return Ok(Some(Err(format!("unknown request kind {other}; 0 is fetch, 1 is produce")))),
    };
    if length > limit {
        return Ok(Some(Err(format!("request of {length} bytes; at most {limit} for this kind"))));
    }
    // Read straight into the buffer the batches will be written from: the
    // only user-space copy on this path.
    let wanted = length as usize - 1;
    let mut frame = BytesMut::with_capacity(wanted);
    while frame.len() < wanted {
        let room = (wanted - frame.len()) as u64;
        if (&mut *reader).take(room).read_buf(&mut frame).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame"));
        }
    }
    Ok(Some(parse(kind, frame.freeze())))
}

async fn connection(stream: TcpStream, records: Arc<RecordsService>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let max_batch_bytes = u32::try_from(records.config.max_request_bytes).unwrap_or(u32::MAX);
    let (ahead, mut requests) = mpsc::channel(READ_AHEAD);
    let read_side = async move {
        while let Some(request) = read_request(&mut reader, max_batch_bytes).await? {
            let unusable = request.is_err();
            if ahead.send(request).await.is_err() || unusable {
                break;
            }
        }
        Ok::<(), io::Error>(())
    };
    let answer_side = async {
        while let Some(request) = requests.recv().await {
            match request {
                Ok(Request::Fetch { topic, partition, offset, max_bytes }) => {
                    fetch(&records, &mut writer, &topic, partition, offset, max_bytes).await?;
                }
                Ok(Request::Produce { topic, partition, acks, batches }) => {
                    let answer = match produce(&records, topic, partition, acks, batches).await {
                        Ok((base, last)) => {
                            let mut answer = vec![0u8];
                            answer.extend_from_slice(&base.to_be_bytes());
                            answer.extend_from_slice(&last.to_be_bytes());
                            answer
                        }
                        Err(error) => error_answer(&format!("{}: {error}", error.code_name())),
                    };
                    writer.write_all(&answer).await?;
                }
                Err(message) => {
                    writer.write_all(&error_answer(&message)).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    tokio::try_join!(read_side, answer_side).map(|_| ())
}

fn error_answer(message: &str) -> Vec<u8> {
    let mut answer = vec![1u8];
    answer.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    answer.extend_from_slice(message.as_bytes());
    answer
}

#[tracing::instrument(skip(records, batches), fields(bytes = batches.len()))]
async fn produce(
    records: &RecordsService,
    topic: String,
    partition: u32,
    acks: u8,
    batches: Bytes,
) -> Result<(i64, i64), BrokerError> {
    let request = ProduceRequest {
        topic,
        partition,
        acks: i32::from(acks),
        timeout_ms: 0,
        records: batches,
        batches: Vec::new(),
    };
    let answer = records.produce(request).await?;
    Ok((answer.base_offset, answer.last_offset))
}

#[tracing::instrument(skip(records, writer))]
async fn fetch(
    records: &RecordsService,
    writer: &mut OwnedWriteHalf,
    topic: &str,
    partition: u32,
    offset: i64,
    max_bytes: u32,
) -> io::Result<()> {
    let read = match records.registry.partition(topic, partition) {
        Ok(partition) => partition.read_ranges(offset, u64::from(max_bytes.max(1))).await,
        Err(error) => Err(error),
    };
    match read {
        Ok((read, high_watermark)) => {
            let mut header = Vec::with_capacity(25);
            header.push(0u8);
            header.extend_from_slice(&i64::try_from(read.next_offset.0).unwrap_or(i64::MAX).to_be_bytes());
            header.extend_from_slice(&i64::try_from(high_watermark.0).unwrap_or(i64::MAX).to_be_bytes());
            header.extend_from_slice(&read.total_bytes().to_be_bytes());
            writer.write_all(&header).await?;
            for range in &read.ranges {
                send_range(writer.as_ref(), range.file(), range.position(), range.length()).await?;
            }
            Ok(())
        }
        Err(error) => writer.write_all(&error_answer(&error.to_string())).await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, partition: u32, tail: &[u8]) -> Bytes {
        let mut frame = (topic.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(topic.as_bytes());
        frame.extend_from_slice(&partition.to_be_bytes());
        frame.extend_from_slice(tail);
        Bytes::from(frame)
    }

    #[test]
    fn a_produce_frame_keeps_its_batches_as_a_slice_of_the_frame() {
        let whole = frame("t", 3, &[2, 9, 9, 9]);
        let Ok(Request::Produce { topic, partition, acks, batches }) = parse(PRODUCE, whole.clone()) else {
            panic!("a produce request");
        };
        assert_eq!((topic.as_str(), partition, acks), ("t", 3, 2));
        assert_eq!(&batches[..], &[9, 9, 9]);
        assert_eq!(batches.as_ptr(), whole[whole.len() - 3..].as_ptr(), "no copy of the batches");
    }

    #[test]
    fn short_or_empty_frames_are_refused_with_a_reason() {
        let mut tail = 7i64.to_be_bytes().to_vec();
        tail.extend_from_slice(&100u32.to_be_bytes());
        assert!(matches!(
            parse(FETCH, frame("t", 0, &tail)),
            Ok(Request::Fetch { offset: 7, max_bytes: 100, partition: 0, .. })
        ));
        assert_eq!(parse(FETCH, frame("t", 0, &[1])).unwrap_err(), "request frame too short");
        assert_eq!(parse(PRODUCE, frame("t", 0, &[2])).unwrap_err(), "a produce request carries at least one batch");
        assert_eq!(parse(PRODUCE, Bytes::from_static(&[0, 9, b'x'])).unwrap_err(), "request frame too short");
        assert_eq!(parse(FETCH, Bytes::from_static(&[0, 1, 0xff, 0, 0, 0, 0])).unwrap_err(), "topic is not UTF-8");
    }
}
