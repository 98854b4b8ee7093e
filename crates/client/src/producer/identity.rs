//! The idempotent producer's identity: its producer id and epoch, taken
//! once (`InitProducerId`, under the key if there is one) and renewed
//! after a gap (KIP-360's epoch bump), with every unsent batch renumbered.

use super::*;

/// The producer id and epoch batches are stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) producer_id: i64,
    pub(super) epoch: i16,
}

/// Asks a broker for a producer id and epoch (the next epoch under the
/// configured key), retrying while none can answer, up to `max_block`.
pub(super) async fn init_identity(shared: &Shared) -> Result<Identity, ClientError> {
    let config = &shared.config;
    let key = config.producer_key.clone().unwrap_or_default();
    let give_up_at = Instant::now() + config.max_block;
    loop {
        let result = shared
            .cluster
            .with_any_broker(|channel| {
                let request = InitProducerIdRequest { producer_key: key.clone() };
                async move {
                    RecordsClient::new(channel)
                        .init_producer_id(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(ClientError::from_status)
                }
            })
            .await;
        match result {
            Ok(answer) => {
                let epoch = i16::try_from(answer.producer_epoch).map_err(|_| {
                    ClientError::InvalidArgument(format!(
                        "the broker answered producer epoch {}",
                        answer.producer_epoch
                    ))
                })?;
                tracing::info!(producer_id = answer.producer_id, epoch, "idempotent producer");
                return Ok(Identity { producer_id: answer.producer_id, epoch });
            }
            Err(error)
                if (error.is_retriable()
                    || matches!(&error, ClientError::Broker { code: tonic::Code::Unavailable, .. }))
                    && Instant::now() + config.retry_backoff < give_up_at =>
            {
                tracing::debug!(%error, "no producer id yet; retrying");
                tokio::time::sleep(config.retry_backoff).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The first send of an idempotent producer waits for its producer id.
pub(super) async fn ensure_identity(shared: &Shared) -> Result<(), ClientError> {
    let _only_one = shared.identity_lock.lock().await;
    if shared.lock_accumulator().identity.is_some() {
        return Ok(());
    }
    let identity = init_identity(shared).await?;
    shared.lock_accumulator().identity = Some(identity);
    shared.identity_known.store(true, Ordering::Release);
    Ok(())
}

/// With no request in flight: a new identity, and every unsent batch
/// renumbered under it from sequence 0 per partition (Kafka's epoch bump
/// after a sequence gap, KIP-360). On failure, tried again on the
/// sender's next pass.
pub(super) async fn reset_identity(shared: &Shared) {
    let identity = match init_identity(shared).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(%error, "could not take a new producer id; trying again");
            tokio::time::sleep(shared.config.retry_backoff).await;
            return;
        }
    };
    let mut accumulator = shared.lock_accumulator();
    accumulator.identity = Some(identity);
    accumulator.reset_identity = false;
    let mut renumbered = 0usize;
    for topic in accumulator.topics.values_mut() {
        for queue in &mut topic.partitions {
            let mut sequence = 0;
            for batch in &mut queue.ready {
                if batch.sequence.is_some() {
                    batch.bytes =
                        Bytes::from(restamp_producer(&batch.bytes, identity.producer_id, identity.epoch, sequence));
                    batch.sequence = Some(sequence);
                    sequence = sequence_after(sequence, batch.records as i64);
                    renumbered += 1;
                }
            }
            queue.next_sequence = sequence;
        }
    }
    tracing::info!(
        producer_id = identity.producer_id,
        epoch = identity.epoch,
        renumbered,
        "new producer identity; unsent batches renumbered"
    );
}
