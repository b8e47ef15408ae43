//! Where a request's outcome goes: to its own caller ([`TxnReply::One`]), or into its place in
//! a batch submitted with `Client::submit_many` ([`TxnReply::InBatch`]), whose caller is woken
//! once, when the last outcome of the batch is in.

use super::reply_slot::SlotSender;
use crate::app::App;
use crate::error::TxnError;
use crate::outcome::Outcome;
use std::sync::Arc;
use tokio::sync::oneshot;

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
struct BatchOutcomes<A: App> {
    outcomes: Vec<Option<TxnOutcome<A>>>,
    /// Places not filled yet.
    remaining: usize,
    /// Taken by the fill that completes the batch.
    done: Option<oneshot::Sender<Vec<Option<TxnOutcome<A>>>>>,
}

/// One request's place in a batch. Dropped without an outcome (the runtime stopped before the
/// request settled), it fills its place with `TxnError::Stopped`, so the batch always completes.
pub(super) struct BatchSlot<A: App> {
    batch: Arc<parking_lot::Mutex<BatchOutcomes<A>>>,
    index: usize,
    filled: bool,
}

impl<A: App> BatchSlot<A> {
    fn fill(mut self, outcome: TxnOutcome<A>) {
        self.filled = true;
        self.put(outcome);
    }

    fn put(&self, outcome: TxnOutcome<A>) {
        let mut batch = self.batch.lock();
        batch.outcomes[self.index] = Some(outcome);
        batch.remaining -= 1;
        if batch.remaining == 0
            && let Some(done) = batch.done.take()
        {
            let outcomes = std::mem::take(&mut batch.outcomes);
            // The caller may have stopped waiting; then nobody needs the outcomes.
            let _ = done.send(outcomes);
        }
    }
}

impl<A: App> Drop for BatchSlot<A> {
    fn drop(&mut self) {
        if !self.filled {
            self.put(Err(TxnError::Stopped));
        }
    }
}

/// Delivers the outcomes of a whole batch, in place order, once the last one is filled.
pub(super) type BatchDone<A> = oneshot::Receiver<Vec<Option<TxnOutcome<A>>>>;

/// The `n` reply places of a new batch, and the channel that delivers all their outcomes once
/// the last one is filled. `n` must be at least 1.
pub(super) fn batch_replies<A: App>(n: usize) -> (impl Iterator<Item = TxnReply<A>>, BatchDone<A>) {
    debug_assert!(n > 0, "an empty batch would never complete");
    let (done, rx) = oneshot::channel();
    let batch = Arc::new(parking_lot::Mutex::new(BatchOutcomes {
        outcomes: (0..n).map(|_| None).collect(),
        remaining: n,
        done: Some(done),
    }));
    let slots = (0..n).map(move |index| {
        TxnReply::InBatch(BatchSlot {
            batch: batch.clone(),
            index,
            filled: false,
        })
    });
    (slots, rx)
}
