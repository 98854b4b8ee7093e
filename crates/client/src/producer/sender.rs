//! The sender (Kafka's `Sender`): takes sealed batches that are ready,
//! groups them by leader into `Produce`/`ProduceMany` requests, sends them
//! with retries, and completes each record's delivery.

use super::*;

/// The sender task: seals lingering batches, dispatches ready ones, sleeps
/// until the next linger deadline or a wake-up.
pub(super) async fn run_sender(shared: Arc<Shared>) {
    loop {
        let closing = shared.closed.load(Ordering::Acquire);
        let reset_due = shared.lock_accumulator().reset_identity;
        if reset_due && shared.in_flight.available_permits() == shared.config.max_in_flight.max(1) {
            reset_identity(&shared).await;
        }
        let (requests, next_deadline) = collect_ready(&shared, closing);
        for group in group_by_leader(&shared, requests) {
            let Ok(permit) = Arc::clone(&shared.in_flight).acquire_owned().await else { return };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                match group {
                    Send::One((topic, partition, batches)) => {
                        send_batches(&shared, topic, partition, batches, None).await;
                    }
                    Send::Many(address, requests) => send_many(&shared, &address, requests).await,
                }
                drop(permit);
                // A new identity waits for every request to finish: the
                // sender looks again once this one's permit is back.
                if shared.lock_accumulator().reset_identity {
                    shared.wake.notify_one();
                }
            });
        }
        if closing && *shared.outstanding.borrow() == 0 {
            return;
        }
        match next_deadline {
            Some(deadline) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

pub(super) type Request = (Arc<str>, u32, Vec<SealedBatch>);

/// What one request carries: one partition's batches (`Produce`), or
/// several partitions' led by the broker at this address (`ProduceMany`).
pub(super) enum Send {
    One(Request),
    Many(String, Vec<Request>),
}

pub(super) fn request_bytes((_, _, batches): &Request) -> usize {
    batches.iter().map(|batch| batch.bytes.len()).sum()
}

/// Groups the partitions ready now by their cached leader, in requests of
/// at most `max_request_bytes` (a partition whose leader is unknown or
/// possibly stale goes alone: its own send asks the brokers, so this
/// never waits on the network). acks=0 keeps one request per partition.
pub(super) fn group_by_leader(shared: &Shared, requests: Vec<Request>) -> Vec<Send> {
    if requests.len() < 2 || shared.config.acks == Acks::None {
        return requests.into_iter().map(Send::One).collect();
    }
    let mut sends = Vec::new();
    let mut by_leader: std::collections::BTreeMap<String, Vec<Request>> = std::collections::BTreeMap::new();
    for request in requests {
        match shared.cluster.cached_leader_address(&request.0, request.1) {
            Some(address) => by_leader.entry(address).or_default().push(request),
            None => sends.push(Send::One(request)),
        }
    }
    for (address, requests) in by_leader {
        let mut chunk: Vec<Request> = Vec::new();
        let mut bytes = 0;
        for request in requests {
            let size = request_bytes(&request);
            if !chunk.is_empty() && bytes + size > shared.config.max_request_bytes {
                sends.push(chunk_send(&address, std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += size;
            chunk.push(request);
        }
        if !chunk.is_empty() {
            sends.push(chunk_send(&address, chunk));
        }
    }
    sends
}

pub(super) fn chunk_send(address: &str, mut chunk: Vec<Request>) -> Send {
    match chunk.len() {
        1 => Send::One(chunk.remove(0)),
        _ => Send::Many(address.to_string(), chunk),
    }
}

pub(super) fn collect_ready(shared: &Shared, closing: bool) -> (Vec<Request>, Option<Instant>) {
    let now = Instant::now();
    let mut accumulator = shared.lock_accumulator();
    let seal_all = closing || std::mem::take(&mut accumulator.flush_requested);
    let (identity, paused) = (accumulator.identity, accumulator.reset_identity);
    let per_partition = shared.config.in_flight_per_partition();
    let mut requests = Vec::new();
    let mut next_deadline: Option<Instant> = None;
    let queues = accumulator.topics.values_mut().flat_map(|topic| {
        topic.partitions.iter_mut().enumerate().map(|(partition, queue)| (&topic.name, partition as u32, queue))
    });
    for (topic, partition, queue) in queues {
        if let Some(open) = &queue.open {
            let deadline = open.created + shared.config.linger;
            if seal_all || deadline <= now {
                queue.seal(shared.config.compression, identity);
            } else {
                next_deadline = Some(next_deadline.map_or(deadline, |earliest| earliest.min(deadline)));
            }
        }
        if paused || queue.in_flight >= per_partition || queue.ready.is_empty() {
            continue;
        }
        let batches = take_ready(queue, shared.config.max_request_bytes);
        requests.push((Arc::clone(topic), partition, batches));
    }
    accumulator.sender_deadline = next_deadline;
    (requests, next_deadline)
}

/// The partition's oldest ready batches, up to `max_bytes` (at least one),
/// for its next request; marks the partition in flight.
pub(super) fn take_ready(queue: &mut PartitionQueue, max_bytes: usize) -> Vec<SealedBatch> {
    let mut bytes = 0;
    let mut batches = Vec::new();
    while let Some(batch) = queue.ready.front() {
        if !batches.is_empty() && bytes + batch.bytes.len() > max_bytes {
            break;
        }
        bytes += batch.bytes.len();
        batches.extend(queue.ready.pop_front());
    }
    queue.in_flight += 1;
    batches
}

/// Sends several partitions' batches in one `ProduceMany` request to the
/// broker at `address`; completes the partitions it appended and hands
/// each refused or unanswered one to `send_batches`, which retries it on
/// its own (each partition still has one request in flight at a time).
pub(super) async fn send_many(shared: &Shared, address: &str, requests: Vec<Request>) {
    let config = &shared.config;
    let request = ProduceManyRequest {
        acks: config.acks.wire(),
        timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        partitions: requests
            .iter()
            .map(|(topic, partition, batches)| PartitionBatches {
                topic: topic.to_string(),
                partition: *partition,
                batches: batches.iter().map(|batch| batch.bytes.clone()).collect(),
            })
            .collect(),
    };
    let attempt = async {
        let channel = shared.cluster.channel(address)?;
        records_call::produce_many(channel, &request, MAX_MESSAGE_BYTES).await.map_err(ClientError::from_status)
    };
    let answered = match tokio::time::timeout(config.request_timeout, attempt).await {
        Ok(Ok(response)) => {
            let matches =
                response.partitions.len() == requests.len()
                    && response.partitions.iter().zip(&requests).all(|(result, (topic, partition, _))| {
                        result.topic == **topic && result.partition == *partition
                    });
            if matches {
                Ok(response.partitions)
            } else {
                Err(None)
            }
        }
        // A broker without `ProduceMany`: each partition on its own, now.
        Ok(Err(error)) if matches!(&error, ClientError::Broker { code: tonic::Code::Unimplemented, .. }) => Err(None),
        Ok(Err(error)) => Err(Some(error)),
        Err(_) => Err(Some(timed_out(address, config.request_timeout))),
    };
    let mut retries = Vec::new();
    match answered {
        Ok(results) => {
            for (result, (topic, partition, batches)) in results.into_iter().zip(requests) {
                if result.error_name.is_empty() {
                    complete_partition(shared, &topic, partition, &batches, Ok(result.base_offset), false);
                    continue;
                }
                let error = ClientError::Broker {
                    code: tonic::Code::from_i32(result.status_code),
                    code_name: Some(result.error_name),
                    message: result.error_message,
                };
                // Judged there: retried, sent again later, or failed.
                retries.push(send_batches(shared, topic, partition, batches, Some(error)));
            }
        }
        Err(error) => {
            for (topic, partition, batches) in requests {
                retries.push(send_batches(shared, topic, partition, batches, error.clone()));
            }
        }
    }
    futures::future::join_all(retries).await;
}

/// Sends one partition's batches in one request, retrying what can be
/// retried, then completes their records and frees their memory; while
/// the partition has half a request's worth of sealed batches by then,
/// sends them next, from this same task (no hand-off through the sender
/// for a partition that keeps it busy). With `failed`, the first attempt was made elsewhere (in
/// a `ProduceMany`) and failed so: it is judged and backed off from before
/// trying again.
pub(super) async fn send_batches(
    shared: &Shared,
    topic: Arc<str>,
    partition: u32,
    batches: Vec<SealedBatch>,
    failed: Option<ClientError>,
) {
    let (mut batches, mut failed) = (batches, failed);
    loop {
        let result = match attempt_batches(shared, &topic, partition, &batches, failed.take()).await {
            Attempt::Done(result) => result,
            Attempt::SendAgain => return requeue(shared, &topic, partition, batches),
        };
        match complete_partition(shared, &topic, partition, &batches, result, true) {
            Some(next) => batches = next,
            None => return,
        }
    }
}

/// Whether a batch of the partition before `batches` is in flight (sealed,
/// not completed, not back in the ready queue), while no identity reset
/// is due (then every unsent batch is renumbered anyway).
pub(super) fn earlier_in_flight(shared: &Shared, topic: &str, partition: u32, batches: &[SealedBatch]) -> bool {
    let Some(first) = batches.first().map(|batch| batch.number) else { return false };
    let accumulator = shared.lock_accumulator();
    if accumulator.reset_identity {
        return false;
    }
    let Some(queue) = accumulator.topics.get(topic).and_then(|topic| topic.partitions.get(partition as usize)) else {
        return false;
    };
    queue.unresolved.range(..first).any(|number| !queue.ready.iter().any(|batch| batch.number == *number))
}

/// Puts a request's batches back in their partition's ready queue, in
/// order, to be renumbered under a new identity and sent again.
pub(super) fn requeue(shared: &Shared, topic: &str, partition: u32, batches: Vec<SealedBatch>) {
    let mut accumulator = shared.lock_accumulator();
    if accumulator.fenced.is_none() {
        accumulator.reset_identity = true;
    }
    if let Some(queue) =
        accumulator.topics.get_mut(topic).and_then(|topic| topic.partitions.get_mut(partition as usize))
    {
        queue.in_flight = queue.in_flight.saturating_sub(1);
        for batch in batches {
            let at = queue.ready.iter().position(|queued| queued.number > batch.number).unwrap_or(queue.ready.len());
            queue.ready.insert(at, batch);
        }
    }
    drop(accumulator);
    tracing::info!(
        topic,
        partition,
        "batches not appended under this producer epoch; sending them again under a new one"
    );
    shared.completions.send_modify(|count| *count = count.wrapping_add(1));
    shared.wake.notify_one();
}

/// One partition's request, with its retries: the offset of its first
/// record, or why it failed for good.
pub(super) async fn attempt_batches(
    shared: &Shared,
    topic: &Arc<str>,
    partition: u32,
    batches: &[SealedBatch],
    failed: Option<ClientError>,
) -> Attempt {
    let config = &shared.config;
    if let Some(fenced) = shared.lock_accumulator().fenced.clone() {
        return Attempt::Done(Err(fenced));
    }
    // The batches travel as separate pieces: no joining copy here.
    let pieces: Vec<Bytes> = batches.iter().map(|batch| batch.bytes.clone()).collect();
    if config.acks == Acks::None {
        // acks=0: the records count as sent once the request leaves.
        for batch in batches {
            batch.completion.complete(Ok(None));
        }
    }
    let oldest = batches.iter().map(|batch| batch.created).min().unwrap_or_else(Instant::now);
    let give_up_at = oldest + config.delivery_timeout;
    let request = ProduceRequest {
        topic: topic.to_string(),
        partition,
        acks: config.acks.wire(),
        timeout_ms: u32::try_from(config.request_timeout.as_millis()).unwrap_or(u32::MAX),
        records: Bytes::new(),
        batches: pieces,
    };
    let mut maybe_appended = failed.as_ref().is_some_and(may_have_appended);
    let mut failed = failed;
    let mut retried_now = false;
    // A leader that says it no longer leads has handed over (a controlled
    // shutdown, a failover), and one that stopped answering may have: the
    // first such failure is followed at once, with fresh metadata, and the
    // next ones after 5, 10, 20 ... ms up to `retry_backoff` (the metadata
    // asked may be a moment behind), not after a full backoff each (a
    // rolling restart's pause was the 100 ms backoff; BENCHMARKS.md).
    let mut redirects = 0u32;
    let result = loop {
        if let Some(error) = failed.take() {
            let verdict = judge(shared, topic, partition, batches, &error, retried_now, maybe_appended);
            let backoff = match verdict {
                Verdict::Fail => break Err(error),
                Verdict::FailUnknown => break Err(outcome_unknown(topic, partition, error)),
                Verdict::SendAgain => return Attempt::SendAgain,
                Verdict::Retry if error.error_code() == Some(ErrorCode::NotLeader) || error.is_unreachable() => {
                    redirects += 1;
                    redirect_backoff(redirects, config.retry_backoff)
                }
                Verdict::Retry => config.retry_backoff,
                Verdict::RetryNow => {
                    retried_now = true;
                    Duration::ZERO
                }
                Verdict::RetryAfterEarlier => Duration::ZERO,
            };
            if Instant::now() + backoff >= give_up_at {
                break Err(ClientError::Timeout {
                    after_ms: oldest.elapsed().as_millis(),
                    last_error: Arc::new(error),
                });
            }
            tracing::debug!(topic = &**topic, partition, %error, "produce failed; retrying");
            if matches!(verdict, Verdict::RetryAfterEarlier) {
                // Sent before an earlier request of the partition landed:
                // again as soon as that one completes.
                let mut completions = shared.completions.subscribe();
                while earlier_in_flight(shared, topic, partition, batches) && Instant::now() < give_up_at {
                    let _ = tokio::time::timeout(config.retry_backoff, completions.changed()).await;
                }
            } else if !matches!(verdict, Verdict::RetryNow) {
                shared.cluster.invalidate(topic);
                tokio::time::sleep(backoff).await;
            }
        }
        let attempt = async {
            let channel = shared.cluster.leader(topic, partition).await?;
            // The batches go out as they are, not copied into tonic's
            // encode buffer (see `records_call`).
            records_call::produce(channel, &request, MAX_MESSAGE_BYTES).await.map_err(ClientError::from_status)
        };
        let error = match tokio::time::timeout(config.request_timeout, attempt).await {
            Ok(Ok(response)) => break Ok(response.base_offset),
            Ok(Err(error)) => error,
            Err(_) => timed_out(&format!("{topic}-{partition}"), config.request_timeout),
        };
        maybe_appended |= may_have_appended(&error);
        failed = Some(error);
    };
    if let Err(error) = &result {
        tracing::warn!(topic = &**topic, partition, %error, batches = batches.len(), "produce failed");
    }
    Attempt::Done(result)
}

/// Completes a partition's batches with the request's outcome (offsets
/// counted on from `base`) and frees their memory. With `chain`, returns
/// the partition's next ready batches if they fill at least half a
/// request (it stays in flight, for the caller to send them); otherwise
/// lets the partition send again through the sender.
pub(super) fn complete_partition(
    shared: &Shared,
    topic: &str,
    partition: u32,
    batches: &[SealedBatch],
    result: Result<i64, ClientError>,
    chain: bool,
) -> Option<Vec<SealedBatch>> {
    let config = &shared.config;
    let mut base = result.as_ref().ok().and_then(|&base| u64::try_from(base).ok());
    let mut permits = 0;
    for batch in batches {
        permits += batch.permits;
        if config.acks != Acks::None {
            let outcome = match (&result, base) {
                (Ok(_), Some(offset)) => Ok(Some(Offset(offset))),
                (Ok(_), None) => Ok(None),
                (Err(error), _) => Err(error.clone()),
            };
            batch.completion.complete(outcome);
        }
        base = base.map(|offset| offset + batch.records);
    }
    shared.memory.add_permits(permits);
    let mut next = None;
    let mut accumulator = shared.lock_accumulator();
    if let Err(error) = &result {
        // An idempotent batch that failed for good leaves a gap in its
        // partition's sequence: later ones need a new identity.
        if batches.iter().any(|batch| batch.sequence.is_some()) && accumulator.fenced.is_none() {
            if error.error_code() == Some(ErrorCode::InvalidProducerEpoch) {
                accumulator.fenced = Some(error.clone());
            } else {
                accumulator.reset_identity = true;
            }
        }
    }
    let paused = accumulator.reset_identity;
    if let Some(topic) = accumulator.topics.get_mut(topic) {
        if let Some(queue) = topic.partitions.get_mut(partition as usize) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            for batch in batches {
                queue.unresolved.remove(&batch.number);
            }
            // Only a request's worth: smaller leftovers go back through the
            // sender, which may group them with other partitions'.
            let ready: usize = queue.ready.iter().map(|batch| batch.bytes.len()).sum();
            if chain && !paused && ready >= config.max_request_bytes / 2 {
                next = Some(take_ready(queue, config.max_request_bytes));
            }
        }
    }
    drop(accumulator);
    shared.completions.send_modify(|count| *count = count.wrapping_add(1));
    shared.outstanding.send_modify(|count| *count -= batches.len() as u64);
    if next.is_none() {
        shared.wake.notify_one();
    }
    next
}
