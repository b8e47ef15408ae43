//! [`PhaseBarrier`]: the epoch driver's "every partition has answered this phase" barrier.

use super::shim::{Arc, Condvar, Mutex, lock, wait};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Collects exactly one result from each of `n_slots` partitions for one phase of an epoch and hands
/// them to the driver in slot order.
///
/// [`PhaseBarrier::new`] returns the barrier (kept by the driver) and one [`Depositor`] per
/// slot (sent to the partitions with their phase job, typically slot `i` = the `i`-th partition
/// the driver dispatched to).
///
/// # Contract
/// - **Exactly once.** A depositor is consumed by [`Depositor::deposit`], so a slot can not be
///   filled twice, and every slot has exactly one depositor.
/// - **Release only when complete.** [`PhaseBarrier::wait`] / [`PhaseBarrier::wait_blocking`]
///   return `Ok(results)` only once every slot was deposited, with `results[i]` the value of slot
///   `i` — the order never depends on which partition answered first.
/// - **No hang on a dead partition.** Dropping a [`Depositor`] without depositing (its job was
///   dropped because the actor stopped, panicked, or the dispatch failed) *abandons* its slot and
///   wakes the driver at once with [`Abandoned`] naming the slot; the driver does not wait for
///   the other partitions. If several slots are abandoned, it names the lowest one abandoned by
///   the time it looked. Values deposited into a failed barrier are dropped with it.
/// - **Happens-before.** Everything a partition did before `deposit` (applying writes, filling
///   the value) happens-before the driver's wait returns.
/// - One waiter: the wait consumes the barrier. Deposits may come from any thread; the async
///   wait works with any executor.
///
/// # Synchronisation
/// All state (the slots, the count of missing slots, the lowest abandoned slot and the
/// driver's waker) sits behind one mutex. A depositor updates it under the lock and, if it
/// completed or failed the barrier, takes the waker out and — after unlocking — notifies the
/// condition variable and wakes the waker. The driver checks and registers its waker (or goes to
/// sleep on the condvar, which releases the lock atomically) under the same lock. So either the
/// driver's check sees the final deposit, or the final depositor's critical section comes after
/// the driver's and finds its waker / wakes its condvar: no lost wake-up. The mutex's
/// release/acquire pairs give the happens-before edge. There is one lock round trip per
/// partition per phase, never per operation, and each critical section is a few instructions.
pub struct PhaseBarrier<T> {
    shared: Arc<Shared<T>>,
}

/// The right — and duty — to fill one slot of a [`PhaseBarrier`].
///
/// Consumed by [`deposit`](Depositor::deposit). Dropping it unused abandons the slot (see
/// [`PhaseBarrier`]), which is how a partition that died mid-phase is reported.
pub struct Depositor<T> {
    /// `None` once deposited.
    shared: Option<Arc<Shared<T>>>,
    slot_idx: usize,
}

/// The future returned by [`PhaseBarrier::wait`].
///
/// Resolves to the results in slot order, or to [`Abandoned`] as soon as a slot is abandoned.
/// Must not be polled again after it returned `Ready`.
#[must_use = "futures do nothing unless polled"]
pub struct BarrierWait<T> {
    /// `None` once it returned `Ready`.
    shared: Option<Arc<Shared<T>>>,
}

/// A [`Depositor`] was dropped without depositing: the partition holding slot `slot_idx` stopped
/// before answering the phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Abandoned {
    /// The abandoned slot (index into the depositors returned by [`PhaseBarrier::new`]).
    pub slot_idx: usize,
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "phase barrier slot {} was dropped without a result (its partition stopped)",
            self.slot_idx
        )
    }
}

impl std::error::Error for Abandoned {}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Notified when the barrier completes or fails, for [`PhaseBarrier::wait_blocking`].
    done: Condvar,
}

struct State<T> {
    /// `slots[i]` is `Some` once slot `i` was deposited.
    slots: Vec<Option<T>>,
    /// Slots neither deposited nor abandoned.
    missing: usize,
    /// The lowest abandoned slot index, if any.
    abandoned: Option<usize>,
    /// The async waiter, if it is parked.
    waker: Option<Waker>,
}

impl<T> State<T> {
    /// The outcome if the barrier is complete or failed; `None` while still waiting.
    fn outcome(&mut self) -> Option<Result<Vec<T>, Abandoned>> {
        if let Some(slot_idx) = self.abandoned {
            return Some(Err(Abandoned { slot_idx }));
        }
        if self.missing == 0 {
            // Every slot is `Some` here (no slot was abandoned and none is missing).
            return Some(Ok(std::mem::take(&mut self.slots)
                .into_iter()
                .flatten()
                .collect()));
        }
        None
    }
}

impl<T> PhaseBarrier<T> {
    /// A barrier for `n_slots` slots, and its `n_slots` depositors
    /// (`depositors[i].slot_idx() == i`).
    ///
    /// With `n_slots == 0` the barrier is complete at once and yields an empty `Vec`.
    pub fn new(n_slots: usize) -> (PhaseBarrier<T>, Vec<Depositor<T>>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots: (0..n_slots).map(|_| None).collect(),
                missing: n_slots,
                abandoned: None,
                waker: None,
            }),
            done: Condvar::new(),
        });
        let depositors = (0..n_slots)
            .map(|slot_idx| Depositor {
                shared: Some(shared.clone()),
                slot_idx,
            })
            .collect();
        (PhaseBarrier { shared }, depositors)
    }

    /// The number of slots.
    pub fn n_slots(&self) -> usize {
        lock(&self.shared.state).slots.len()
    }

    /// Waits asynchronously until every slot was deposited (results in slot order) or one was
    /// abandoned.
    pub fn wait(self) -> BarrierWait<T> {
        BarrierWait {
            shared: Some(self.shared),
        }
    }

    /// Blocks the calling thread until every slot was deposited (results in slot order) or one
    /// was abandoned. Do not call it on an async executor's thread; use [`wait`](Self::wait).
    pub fn wait_blocking(self) -> Result<Vec<T>, Abandoned> {
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(outcome) = state.outcome() {
                return outcome;
            }
            state = wait(&self.shared.done, state);
        }
    }
}

impl<T> Future for BarrierWait<T> {
    type Output = Result<Vec<T>, Abandoned>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = {
            let shared = self
                .shared
                .as_ref()
                .expect("BarrierWait polled after it completed");
            let mut state = lock(&shared.state);
            match state.outcome() {
                Some(outcome) => outcome,
                None => {
                    // Registered under the lock the depositors take: the one that completes the
                    // barrier will find this waker.
                    match &mut state.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        self.shared = None;
        Poll::Ready(outcome)
    }
}

impl<T> Depositor<T> {
    /// The slot this depositor fills.
    pub fn slot_idx(&self) -> usize {
        self.slot_idx
    }

    /// Fills the slot with `value`, waking the driver if this was the last missing slot.
    pub fn deposit(mut self, value: T) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(self.slot_idx, Some(value));
        }
    }
}

impl<T> Drop for Depositor<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(self.slot_idx, None);
        }
    }
}

impl<T> Shared<T> {
    /// Deposits `value` into slot `slot_idx`, or abandons the slot if `value` is `None`, and
    /// wakes the waiter if that completed or failed the barrier.
    fn resolve(&self, slot_idx: usize, value: Option<T>) {
        let abandon = value.is_none();
        let waker = {
            let mut state = lock(&self.state);
            // Each slot has exactly one depositor, which resolves it exactly once.
            debug_assert!(state.missing > 0, "slot {slot_idx} resolved twice");
            state.missing -= 1;
            match value {
                Some(value) => {
                    if let Some(cell) = state.slots.get_mut(slot_idx) {
                        *cell = Some(value);
                    }
                }
                None => {
                    state.abandoned = Some(state.abandoned.map_or(slot_idx, |s| s.min(slot_idx)));
                }
            }
            if state.missing == 0 || abandon {
                state.waker.take()
            } else {
                return;
            }
        };
        // Outside the lock: the woken driver can take the lock at once, and a waker that runs
        // foreign code can not deadlock against us.
        self.done.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for PhaseBarrier<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("PhaseBarrier")
            .field("slots", &state.slots.len())
            .field("missing", &state.missing)
            .field("abandoned", &state.abandoned)
            .finish()
    }
}

impl<T> fmt::Debug for Depositor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Depositor")
            .field("slot_idx", &self.slot_idx)
            .finish()
    }
}

impl<T> fmt::Debug for BarrierWait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWait")
            .field("completed", &self.shared.is_none())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::test_util::{CountingWaker, block_on};

    // Goal: results come back in slot order, whatever order the partitions deposit in.
    #[test]
    fn results_come_in_slot_order_whatever_the_arrival_order() {
        let (barrier, deps) = PhaseBarrier::new(4);
        let mut deps: Vec<_> = deps.into_iter().map(Some).collect();
        for slot in [2, 0, 3, 1] {
            let dep = deps[slot].take().unwrap();
            assert_eq!(dep.slot_idx(), slot);
            dep.deposit(slot * 10);
        }
        assert_eq!(barrier.wait_blocking(), Ok(vec![0, 10, 20, 30]));
    }

    // Goal: a phase with no partitions completes at once with no results.
    #[test]
    fn an_empty_barrier_is_complete_at_once() {
        let (barrier, deps) = PhaseBarrier::<u8>::new(0);
        assert!(deps.is_empty());
        assert_eq!(barrier.n_slots(), 0);
        assert_eq!(block_on(barrier.wait()), Ok(vec![]));
    }

    // Goal: the async driver stays pending until the last deposit, which wakes it exactly once.
    #[test]
    fn async_wait_is_pending_until_the_last_deposit_and_is_woken_once() {
        let (barrier, deps) = PhaseBarrier::new(2);
        let mut fut = Box::pin(barrier.wait());
        let (waker, wakes) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "a re-poll stays pending"
        );
        let mut deps = deps.into_iter();
        deps.next().unwrap().deposit("a");
        assert_eq!(wakes.get(), 0, "no wake-up before the barrier is complete");
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        deps.next().unwrap().deposit("b");
        assert_eq!(wakes.get(), 1);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(vec!["a", "b"])));
    }

    // Goal: a dropped depositor wakes the driver at once with an error naming its slot.
    #[test]
    fn a_dropped_depositor_fails_the_wait_at_once_naming_its_slot() {
        let (barrier, deps) = PhaseBarrier::<u32>::new(3);
        let mut fut = Box::pin(barrier.wait());
        let (waker, wakes) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let mut deps = deps.into_iter();
        let first = deps.next().unwrap();
        drop(deps.next()); // slot 1's partition died
        assert_eq!(
            wakes.get(),
            1,
            "the driver is woken without waiting for slots 0 and 2"
        );
        let err = match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => e,
            other => panic!("expected an abandoned slot, got {other:?}"),
        };
        assert_eq!(err, Abandoned { slot_idx: 1 });
        assert!(err.to_string().contains("slot 1"), "{err}");
        first.deposit(7); // a late deposit into a failed barrier is harmless
        drop(deps);
    }

    // Goal: with several abandoned slots, the lowest one is named.
    #[test]
    fn the_lowest_abandoned_slot_is_reported() {
        let (barrier, deps) = PhaseBarrier::<u32>::new(3);
        let mut deps: Vec<_> = deps.into_iter().map(Some).collect();
        drop(deps[2].take());
        drop(deps[0].take());
        assert_eq!(barrier.wait_blocking(), Err(Abandoned { slot_idx: 0 }));
    }

    // Goal: deposits racing from many threads always release a blocking driver with every result.
    #[test]
    fn deposits_from_many_threads_wake_a_blocking_driver() {
        for _ in 0..200 {
            let (barrier, deps) = PhaseBarrier::new(8);
            let threads: Vec<_> = deps
                .into_iter()
                .rev()
                .map(|d| {
                    let slot = d.slot_idx();
                    std::thread::spawn(move || d.deposit(slot))
                })
                .collect();
            assert_eq!(barrier.wait_blocking(), Ok((0..8).collect::<Vec<_>>()));
            for t in threads {
                t.join().unwrap();
            }
        }
    }
}
