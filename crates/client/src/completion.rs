//! A batch's outcome, shared by the futures of all its records, with no
//! allocation per record: each `DeliveryFuture` holds an `Arc` to its
//! batch's completion and its index in the batch, and parks its waker in
//! the completion until the sender task fills in the outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use brook_record::Offset;

use crate::error::ClientError;
use crate::record::RecordMetadata;

/// The base offset the batch got (`None` with acks=0), or why it failed.
pub(crate) type Outcome = Result<Option<Offset>, ClientError>;

#[derive(Debug, Default)]
struct State {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
}

#[derive(Debug, Default)]
pub(crate) struct BatchCompletion {
    state: Mutex<State>,
}

impl BatchCompletion {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let wakers = {
            let mut state = self.0.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
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

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let completion = Arc::clone(&self.completion);
        let mut state = completion.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(match outcome {
                Ok(base) => Ok(RecordMetadata { partition: self.partition, offset: base.map(|b| b.plus(self.index)) }),
                Err(error) => Err(error.clone()),
            });
        }
        match self.waker_slot {
            Some(slot) if slot < state.wakers.len() => {
                if !state.wakers[slot].will_wake(cx.waker()) {
                    state.wakers[slot] = cx.waker().clone();
                }
            }
            _ => {
                state.wakers.push(cx.waker().clone());
                self.waker_slot = Some(state.wakers.len() - 1);
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
    async fn a_batch_dropped_unsent_fails_its_records() {
        let completer = Completer::default();
        let future = completer.future(0, 0);
        drop(completer);
        assert!(matches!(future.await, Err(ClientError::Closed)));
    }
}
