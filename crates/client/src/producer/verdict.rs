//! What a failed produce attempt means: retry, renumber, or fail (and
//! whether the batch may already be in the log).

use super::*;

/// The failure of batches the leader refused as of an unknown producer
/// after an attempt that may have been appended: whether they are in the log is
/// unknown (a consumer can tell).
pub(super) fn outcome_unknown(topic: &str, partition: u32, refusal: ClientError) -> ClientError {
    ClientError::Broker {
        code: tonic::Code::Aborted,
        code_name: Some(ErrorCode::UnknownProducerId.name().into()),
        message: format!(
            "{topic}-{partition}: the leader no longer knows this producer ({refusal}), and an earlier \
             attempt of these records got no answer, so they may or may not have been appended; they are \
             not sent again, which could write them twice"
        ),
    }
}

pub(super) fn timed_out(to: &str, after: Duration) -> ClientError {
    ClientError::Broker {
        code: tonic::Code::DeadlineExceeded,
        code_name: Some(ErrorCode::RequestTimedOut.name().into()),
        message: format!("produce to {to} got no answer within {after:?}"),
    }
}

/// A leader that has not applied a new topic yet answers "unknown topic"
/// for a moment (metadata propagates per broker): retried, within the
/// delivery timeout, as Kafka does.
pub(super) fn retriable_produce_error(error: &ClientError) -> bool {
    error.is_retriable() || error.error_code() == Some(ErrorCode::UnknownTopicOrPartition)
}

/// How one partition's request ended.
pub(super) enum Attempt {
    /// The offset of its first record, or why it failed for good.
    Done(Result<i64, ClientError>),
    /// Not appended, and it cannot be under this producer id and epoch
    /// (the leader lost the producer's sequence, or an earlier batch
    /// failed for good): sent again, renumbered, after a new identity.
    SendAgain,
}

/// What to do after a refused attempt.
pub(super) enum Verdict {
    Retry,
    /// Refused as out of order with nothing earlier in flight: the earlier
    /// request may have landed just after this one was refused; once,
    /// straight away, before concluding the leader lost the sequence.
    RetryNow,
    /// An earlier request of the partition is in flight and was not
    /// appended yet: retry as soon as it completes.
    RetryAfterEarlier,
    SendAgain,
    Fail,
    /// Refused, after an earlier attempt that may have been appended: its
    /// outcome cannot be known, so it fails (see `judge`).
    FailUnknown,
}

/// Whether an attempt that failed so may still have been appended: it got
/// no answer, or the leader appended and then timed out waiting for the
/// replicas. A named refusal (NOT_LEADER, out of order ...) or a
/// connection never made appended nothing.
pub(super) fn may_have_appended(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code_name: Some(_), .. } => {
            matches!(error.error_code(), Some(ErrorCode::RequestTimedOut | ErrorCode::NotEnoughReplicasAfterAppend))
        }
        ClientError::Broker { code_name: None, .. } | ClientError::Timeout { .. } => true,
        _ => false,
    }
}

/// The pause before the `attempt`-th retry after a leader moved or went
/// silent: none for the first, then doubling from 5 ms up to `cap`.
pub(super) fn redirect_backoff(attempt: u32, cap: Duration) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(5) * 2u32.saturating_pow(n.saturating_sub(2).min(16))).min(cap),
    }
}

pub(super) fn judge(
    shared: &Shared,
    topic: &str,
    partition: u32,
    batches: &[SealedBatch],
    error: &ClientError,
    retried_now: bool,
    maybe_appended: bool,
) -> Verdict {
    let idempotent = batches.first().is_some_and(|batch| batch.sequence.is_some());
    let unknown_producer = error.error_code() == Some(ErrorCode::UnknownProducerId);
    if idempotent && (unknown_producer || error.error_code() == Some(ErrorCode::OutOfOrderSequenceNumber)) {
        if earlier_in_flight(shared, topic, partition, batches) {
            return Verdict::RetryAfterEarlier;
        }
        if !retried_now {
            return Verdict::RetryNow;
        }
        // Out of order: the leader knows the producer and its log ends
        // before these sequences, so they are not in it (a leader that
        // lost them in an unclean election, say): renumbered, they are
        // written once. Unknown producer: the leader forgot the producer
        // (idle past its expiration), so if an earlier attempt went
        // unanswered the batches may be in the log already, and
        // renumbered they would be written twice. Kafka's KIP-360
        // producer bumps the epoch and sends them again; Brook fails them
        // instead, as delivered-or-not.
        return if unknown_producer && maybe_appended { Verdict::FailUnknown } else { Verdict::SendAgain };
    }
    if retriable_produce_error(error) {
        Verdict::Retry
    } else {
        Verdict::Fail
    }
}
