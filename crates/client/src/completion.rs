//! A batch's outcome, shared by the futures of all its records, with no
//! allocation per record: each `DeliveryFuture` holds an `Arc` to its
//! batch's completion and its index in the batch, and parks its waker in
//! the completion until the sender task fills in the outcome. Once set,
//! the outcome is read without a lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use brook_record::Offset;

use crate::error::ClientError;
use crate::record::RecordMetadata;

/// The base offset the batch got (`None` with acks=0), or why it failed.
pub(crate) type Outcome = Result<Option<Offset>, ClientError>;

/// Set once by the sender; read lock-free by every record's future once set.
#[derive(Debug, Default)]
pub(crate) struct BatchCompletion {
    /// The outcome, and when the sender learnt it.
    outcome: OnceLock<(Outcome, Instant)>,
    /// Futures waiting for the outcome.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchCompletion {
    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sender's side: completes the batch once; if dropped before that
/// (the producer went away mid-flight), the records fail with `Closed`
/// instead of waiting forever.
#[derive(Debug, Default)]
pub(crate) struct Completer(Arc<BatchCompletion>);

impl Completer {
    pub(crate) fn future(&self, partition: u32, index: u64) -> DeliveryFuture {
        DeliveryFuture { completion: Arc::clone(&self.0), partition, index, waker_slot: None }
    }

    /// Sets the outcome (the first one wins) and wakes every waiting record.
    pub(crate) fn complete(&self, outcome: Outcome) {
        if self.0.outcome.set((outcome, Instant::now())).is_err() {
            return;
        }
        let wakers = std::mem::take(&mut *self.0.wakers());
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.complete(Err(ClientError::Closed));
    }
}

/// Resolves to where one sent record landed, once it is acknowledged at
/// the producer's `acks` level.
#[derive(Debug)]
pub struct DeliveryFuture {
    completion: Arc<BatchCompletion>,
    partition: u32,
    index: u64,
    /// Where this future's waker sits in the completion's list.
    waker_slot: Option<usize>,
}

impl DeliveryFuture {
    /// When the record's batch was acknowledged (or failed), once it was:
    /// read by the producer as the answer arrived, once per batch, so a
    /// benchmark measures send-to-acknowledgement latency exactly however
    /// late it looks.
    pub fn completed_at(&self) -> Option<Instant> {
        self.completion.outcome.get().map(|(_, at)| *at)
    }

    fn ready(&self, (outcome, _): &(Outcome, Instant)) -> Result<RecordMetadata, ClientError> {
        match outcome {
            Ok(base) => Ok(RecordMetadata { partition: self.partition, offset: base.map(|b| b.plus(self.index)) }),
            Err(error) => Err(error.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(outcome) = self.completion.outcome.get() {
            return Poll::Ready(self.ready(outcome));
        }
        let completion = Arc::clone(&self.completion);
        let mut wakers = completion.wakers();
        // Checked again under the lock: `complete` sets the outcome before
        // it takes the wakers, so either it is visible now or our waker
        // is taken and woken.
        if let Some(outcome) = completion.outcome.get() {
            return Poll::Ready(self.ready(outcome));
        }
        match self.waker_slot {
            Some(slot) if slot < wakers.len() => {
                if !wakers[slot].will_wake(cx.waker()) {
                    wakers[slot] = cx.waker().clone();
                }
            }
            _ => {
                wakers.push(cx.waker().clone());
                self.waker_slot = Some(wakers.len() - 1);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_of_a_batch_learns_its_own_offset() {
        let completer = Completer::default();
        let futures: Vec<_> = (0..3).map(|index| completer.future(4, index)).collect();
        let waiting = tokio::spawn(async move {
            let mut offsets = Vec::new();
            for future in futures {
                offsets.push(future.await.expect("delivered").offset);
            }
            offsets
        });
        tokio::task::yield_now().await;
        completer.complete(Ok(Some(Offset(10))));
        completer.complete(Err(ClientError::Closed));
        let offsets = waiting.await.expect("task");
        assert_eq!(offsets, vec![Some(Offset(10)), Some(Offset(11)), Some(Offset(12))]);
    }

    #[tokio::test]
    async fn every_record_of_a_batch_carries_the_batchs_completion_time() {
        let completer = Completer::default();
        let (mut first, second) = (completer.future(0, 0), completer.future(0, 1));
        assert_eq!(first.completed_at(), None);
        let before = Instant::now();
        completer.complete(Ok(Some(Offset(0))));
        (&mut first).await.expect("delivered");
        let at = first.completed_at().expect("completed");
        assert!(at >= before);
        assert_eq!(second.completed_at(), Some(at), "one clock read per batch");
    }

    #[tokio::test]
    async fn a_batch_dropped_unsent_fails_its_records() {
        let completer = Completer::default();
        let future = completer.future(0, 0);
        drop(completer);
        assert!(matches!(future.await, Err(ClientError::Closed)));
    }
}
