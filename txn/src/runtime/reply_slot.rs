//! Reusable one-shot reply slots: where the outcome of a request submitted alone is handed to
//! its waiting caller. The client handles of a runtime keep the slots their callers finished
//! with and hand them out again, so a steady stream of submissions allocates no channel per
//! request.

use crate::limits::REPLY_SLOTS_POOLED_MAX;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// One reply's place: the value once sent, and the caller to wake.
pub(super) struct ReplySlot<T> {
    state: parking_lot::Mutex<SlotState<T>>,
}

struct SlotState<T> {
    value: Option<T>,
    /// The caller waiting for the value, woken when it arrives or the sender is dropped.
    waker: Option<Waker>,
    /// Whether the sender sent or was dropped: no value can come any more.
    sender_done: bool,
}

impl<T> ReplySlot<T> {
    fn new() -> Self {
        ReplySlot {
            state: parking_lot::Mutex::new(SlotState {
                value: None,
                waker: None,
                sender_done: false,
            }),
        }
    }

    /// Waits for the value; `None` if the sender was dropped without sending.
    pub(super) async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.state.lock();
            if let Some(value) = state.value.take() {
                return Poll::Ready(Some(value));
            }
            if state.sender_done {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// The sending half of a slot. Dropped without sending, it wakes the caller with no value (as
/// a dropped channel sender does).
pub(super) struct SlotSender<T> {
    slot: Option<Arc<ReplySlot<T>>>,
}

impl<T> SlotSender<T> {
    /// Hands `value` to the caller (a caller that stopped waiting is not an error).
    pub(super) fn send(mut self, value: T) {
        self.finish(Some(value));
    }

    fn finish(&mut self, value: Option<T>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let waker = {
            let mut state = slot.state.lock();
            state.value = value;
            state.sender_done = true;
            state.waker.take()
        };
        // Let go of the slot before waking, so the woken caller usually holds the only
        // reference and can keep the slot for its next request.
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for SlotSender<T> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The free slots of a runtime's client handles, at most `REPLY_SLOTS_POOLED_MAX`.
pub(super) struct ReplySlots<T> {
    free: parking_lot::Mutex<Vec<Arc<ReplySlot<T>>>>,
}

impl<T> Default for ReplySlots<T> {
    fn default() -> Self {
        ReplySlots {
            free: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl<T> ReplySlots<T> {
    /// An empty slot (a kept one if any) and its sender.
    pub(super) fn take(&self) -> (SlotSender<T>, Arc<ReplySlot<T>>) {
        // A kept slot was reset when it was given back, and nobody else can refer to it.
        let kept = self.free.lock().pop();
        let slot = kept.unwrap_or_else(|| Arc::new(ReplySlot::new()));
        let sender = SlotSender {
            slot: Some(slot.clone()),
        };
        (sender, slot)
    }

    /// Keeps `slot`, emptied by its caller, for a later request, unless its sender still holds
    /// it or enough are kept. It is reset here, while it is known to be unshared, so that
    /// `take` only has to pop it.
    pub(super) fn give_back(&self, mut slot: Arc<ReplySlot<T>>) {
        let Some(unshared) = Arc::get_mut(&mut slot) else {
            return;
        };
        let state = unshared.state.get_mut();
        state.sender_done = false;
        state.waker = None;
        debug_assert!(state.value.is_none(), "a kept reply slot is empty");
        let mut free = self.free.lock();
        if free.len() < REPLY_SLOTS_POOLED_MAX {
            free.push(slot);
        }
    }
}
