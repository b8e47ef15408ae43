//! Where a request's outcome goes: to its own caller ([`TxnReply::One`]), or into its place in
//! a batch submitted with `Client::submit_many` ([`TxnReply::InBatch`]), whose caller is woken
//! once, when the last outcome of the batch is in.
//!
//! A batch costs three allocations whatever its size: the list of its admitted requests (handed
//! to the sequencer), its shared outcome state and the outcome list, which becomes the list the
//! caller gets back. Each place holds its caller's final answer (a request refused on admission
//! gets its error at once, a settled one what `Client::submit_with_id` would have returned).

use super::reply_slot::SlotSender;
use crate::app::App;
use crate::error::TxnError;
use crate::ids::RequestId;
use crate::outcome::Outcome;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// The outcome handed to a request's caller (before the client's `OutcomeUnknown` mapping).
pub(super) type TxnOutcome<A> = Result<Outcome<<A as App>::Output>, TxnError>;

/// Where the outcome of one sequenced request goes.
pub(super) enum TxnReply<A: App> {
    /// A request submitted alone: its caller waits on this slot.
    One(SlotSender<TxnOutcome<A>>),
    /// A request of a batch: its outcome fills its place in the batch.
    InBatch(BatchSlot<A>),
}

impl<A: App> TxnReply<A> {
    /// Hands `outcome` to the caller (a caller that stopped waiting is not an error).
    pub(super) fn send(self, outcome: TxnOutcome<A>) {
        match self {
            TxnReply::One(reply) => reply.send(outcome),
            TxnReply::InBatch(slot) => slot.fill(outcome),
        }
    }
}

/// The outcomes of one batch, filled in as they settle.
struct BatchState<A: App> {
    /// Every request's final answer by place, `None` until it is in.
    outcomes: Vec<Option<TxnOutcome<A>>>,
    /// Places of sequenced requests not filled yet.
    remaining: usize,
    /// The caller waiting for the whole batch, woken by the fill that completes it.
    waker: Option<Waker>,
}

/// The caller's side of a batch: its places are given out while the requests are admitted,
/// then [`BatchReplies::outcomes`] waits for all of them.
pub(super) struct BatchReplies<A: App> {
    state: Arc<parking_lot::Mutex<BatchState<A>>>,
}

impl<A: App> BatchReplies<A> {
    /// A batch with room for `n_requests` places.
    pub(super) fn with_capacity(n_requests: usize) -> Self {
        BatchReplies {
            state: Arc::new(parking_lot::Mutex::new(BatchState {
                outcomes: Vec::with_capacity(n_requests),
                remaining: 0,
                waker: None,
            })),
        }
    }

    /// The next place, for a request sent under `id`: its reply fills it.
    pub(super) fn place(&self, id: RequestId) -> TxnReply<A> {
        let mut state = self.state.lock();
        let place = state.outcomes.len();
        state.outcomes.push(None);
        state.remaining += 1;
        TxnReply::InBatch(BatchSlot {
            batch: self.state.clone(),
            place,
            id,
            filled: false,
        })
    }

    /// The next place, for a request refused on admission with `error`: filled at once.
    pub(super) fn refused(&self, error: TxnError) {
        self.state.lock().outcomes.push(Some(Err(error)));
    }

    /// Every place's answer, in place order, once the last one is in.
    pub(super) async fn outcomes(self) -> Vec<TxnOutcome<A>> {
        let outcomes = poll_fn(|cx| {
            let mut state = self.state.lock();
            if state.remaining == 0 {
                return Poll::Ready(std::mem::take(&mut state.outcomes));
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await;
        // Same layout in and out: the list is converted in place, without a new allocation.
        outcomes
            .into_iter()
            .map(|o| o.expect("every place of a batch is filled"))
            .collect()
    }
}

/// One request's place in a batch. Dropped without an outcome (the runtime stopped before the
/// request settled), it fills its place with `TxnError::Stopped`, so the batch always completes.
pub(super) struct BatchSlot<A: App> {
    batch: Arc<parking_lot::Mutex<BatchState<A>>>,
    place: usize,
    /// The id the request was sent under: an error after it was accepted names it.
    id: RequestId,
    filled: bool,
}

impl<A: App> BatchSlot<A> {
    fn fill(mut self, outcome: TxnOutcome<A>) {
        self.filled = true;
        self.put(super::client::outcome_for(self.id, outcome));
    }

    /// Fills the place of a request the runtime never accepted (it had stopped): plain
    /// `TxnError::Stopped`, since the request cannot be in the log.
    pub(super) fn unsent(mut self) {
        self.filled = true;
        self.put(Err(TxnError::Stopped));
    }

    fn put(&self, answer: TxnOutcome<A>) {
        let waker = {
            let mut state = self.batch.lock();
            state.outcomes[self.place] = Some(answer);
            state.remaining -= 1;
            if state.remaining > 0 {
                return;
            }
            state.waker.take()
        };
        // Woken outside the lock: the caller takes it at once.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<A: App> Drop for BatchSlot<A> {
    fn drop(&mut self) {
        if !self.filled {
            self.put(super::client::outcome_for(self.id, Err(TxnError::Stopped)));
        }
    }
}
