//! [`DurableWatermark`]: hands "epoch `e` is durable" from the durability thread to the reply
//! stage.

use super::shim::{AtomicU64, Condvar, Mutex, Ordering, lock, wait};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
// The failure message is immutable once shared and its reference count takes part in no
// protocol, so it is a plain `std` `Arc` rather than one from the shim.
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Waker};

/// Set in `DurableWatermark::state` once the log failed; the low 63 bits hold the epoch.
const FAILED: u64 = 1 << 63;

/// The highest epoch a watermark can hold.
const EPOCH_MAX: u64 = FAILED - 1;

/// The highest durable epoch of the log, or the log's failure.
///
/// The durability thread calls [`advance(e)`](Self::advance) once epoch `e` is in the log (and
/// [`fail`](Self::fail) if the log can not be written); the reply stage waits with
/// [`wait(e)`](Self::wait) (async) or [`wait_blocking(e)`](Self::wait_blocking) before it
/// releases the replies of epoch `e`.
///
/// # Contract
/// - **Never early.** A wait for `e` returns `Ok(())` only after some `advance(d)` with
///   `d >= e` (or if the watermark started at `>= e`), and everything the durability thread did
///   before that `advance` (writing and syncing the log) happens-before the wait returns.
/// - **Never lost.** Every waiter whose epoch becomes durable, or that is waiting when the log
///   fails, is woken — async and blocking waiters alike, however many there are.
/// - **Monotonic.** The durable epoch never goes down: `advance` with an epoch at or below the
///   current one does nothing.
/// - **Failure is terminal.** After `fail(msg)` the durable epoch is frozen (later `advance`s are
///   ignored) and a wait for an epoch above it returns [`DurabilityFailed`] with the first
///   message. Epochs that were already durable still wait successfully: their results are safe
///   to release.
///
/// # Memory ordering and wake-ups
/// The durable epoch and the failed flag live in one `AtomicU64` (`FAILED | epoch`), so a reader
/// always sees a consistent pair. `advance` is one `fetch_max(Release)` — a no-op once `FAILED`
/// is set, since that makes the stored value larger than any epoch; readers load with `Acquire`,
/// which gives the "never early" happens-before edge. `fail` stores the message under the mutex,
/// then sets `FAILED` (`Release`), so a reader that sees the flag finds the message.
///
/// Waiters check the atomic first (no lock on the fast path). Otherwise they lock the mutex,
/// check again, and only then register their waker or sleep on the condition variable (which
/// releases the mutex atomically). `advance`/`fail` change the atomic *before* taking the same
/// mutex to collect the wakers and notify. So for any waiter, either its locked check comes after
/// the change (and sees it: the change happens-before the notifier's lock, which happens-before
/// the waiter's), or the notifier's locked section comes after the waiter registered (and
/// finds its waker, or wakes its condvar). The notifier always takes the lock, even when it
/// believes nobody waits: skipping it is exactly the classic lost wake-up.
///
/// One lock round trip per `advance` (per epoch), none per transaction. The async waiter list is
/// a `Vec` scanned linearly: built for a handful of waiters (the reply stage), not one per
/// client.
pub struct DurableWatermark {
    /// `FAILED | durable_epoch`.
    state: AtomicU64,
    waiters: Mutex<Waiters>,
    /// Notified on every change, for the blocking waiters.
    changed: Condvar,
}

struct Waiters {
    /// The first failure message, set before `FAILED`.
    failure: Option<StdArc<str>>,
    /// Parked async waiters.
    parked: Vec<Parked>,
    /// The id for the next async waiter that parks.
    next_id: u64,
}

struct Parked {
    id: u64,
    epoch: u64,
    waker: Waker,
}

/// The log failed before the awaited epoch became durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurabilityFailed {
    message: StdArc<str>,
}

impl DurabilityFailed {
    /// The message given to [`DurableWatermark::fail`].
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DurabilityFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the epoch log failed: {}", self.message)
    }
}

impl std::error::Error for DurabilityFailed {}

/// What the atomic says about an epoch.
enum Status {
    Durable,
    Failed,
    NotYet,
}

impl DurableWatermark {
    /// A watermark at `durable_epoch` (the last epoch recovered from the log; 0 for an empty
    /// log).
    ///
    /// # Panics
    /// If `durable_epoch >= 2^63`.
    pub fn new(durable_epoch: u64) -> Self {
        assert!(
            durable_epoch <= EPOCH_MAX,
            "epoch {durable_epoch} out of range"
        );
        DurableWatermark {
            state: AtomicU64::new(durable_epoch),
            waiters: Mutex::new(Waiters {
                failure: None,
                parked: Vec::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Publishes that every epoch up to `epoch` is durable, and wakes the waiters it releases.
    /// Does nothing if the watermark is already at or past `epoch`, or failed.
    ///
    /// # Panics
    /// If `epoch >= 2^63`.
    pub fn advance(&self, epoch: u64) {
        assert!(epoch <= EPOCH_MAX, "epoch {epoch} out of range");
        let before = self.state.fetch_max(epoch, Ordering::Release);
        if before >= epoch {
            // Already durable, or failed (`FAILED | e` exceeds every epoch): nothing changed.
            return;
        }
        let woken = {
            let mut waiters = lock(&self.waiters);
            let mut woken = Vec::new();
            if waiters.parked.iter().any(|p| p.epoch <= epoch) {
                woken.extend(
                    waiters
                        .parked
                        .extract_if(.., |p| p.epoch <= epoch)
                        .map(|p| p.waker),
                );
            }
            woken
        };
        self.changed.notify_all();
        for waker in woken {
            waker.wake();
        }
    }

    /// Records that the log can not be made durable (the first message wins), freezes the
    /// durable epoch and wakes every waiter; those waiting for a later epoch get
    /// [`DurabilityFailed`].
    pub fn fail(&self, message: impl Into<String>) {
        let woken = {
            let mut waiters = lock(&self.waiters);
            if waiters.failure.is_none() {
                waiters.failure = Some(StdArc::from(message.into()));
            }
            self.state.fetch_or(FAILED, Ordering::Release);
            std::mem::take(&mut waiters.parked)
        };
        self.changed.notify_all();
        for parked in woken {
            parked.waker.wake();
        }
    }

    /// The highest durable epoch.
    pub fn durable_epoch(&self) -> u64 {
        self.state.load(Ordering::Acquire) & EPOCH_MAX
    }

    /// The failure, if [`fail`](Self::fail) was called.
    pub fn failure(&self) -> Option<DurabilityFailed> {
        if self.state.load(Ordering::Acquire) & FAILED == 0 {
            return None;
        }
        Some(failure_of(&lock(&self.waiters)))
    }

    /// Without waiting: `Some(Ok(()))` if `epoch` is durable, `Some(Err(_))` if the log failed
    /// before it became durable, `None` if neither is known yet.
    pub fn check(&self, epoch: u64) -> Option<Result<(), DurabilityFailed>> {
        match self.status(epoch) {
            Status::Durable => Some(Ok(())),
            Status::Failed => Some(Err(failure_of(&lock(&self.waiters)))),
            Status::NotYet => None,
        }
    }

    /// Waits asynchronously until `epoch` is durable (`Ok`) or the log failed before it was
    /// (`Err`).
    pub fn wait(&self, epoch: u64) -> DurableWait<'_> {
        DurableWait {
            watermark: self,
            epoch,
            id: None,
        }
    }

    /// Blocks the calling thread until `epoch` is durable (`Ok`) or the log failed before it
    /// was (`Err`). Do not call it on an async executor's thread; use [`wait`](Self::wait).
    pub fn wait_blocking(&self, epoch: u64) -> Result<(), DurabilityFailed> {
        if let Some(result) = self.check(epoch) {
            return result;
        }
        let mut waiters = lock(&self.waiters);
        loop {
            match self.status(epoch) {
                Status::Durable => return Ok(()),
                Status::Failed => return Err(failure_of(&waiters)),
                Status::NotYet => waiters = wait(&self.changed, waiters),
            }
        }
    }

    fn status(&self, epoch: u64) -> Status {
        let state = self.state.load(Ordering::Acquire);
        if state & EPOCH_MAX >= epoch {
            Status::Durable
        } else if state & FAILED != 0 {
            Status::Failed
        } else {
            Status::NotYet
        }
    }
}

/// The recorded failure; only called once `FAILED` was seen, which `fail` sets after the message.
fn failure_of(waiters: &Waiters) -> DurabilityFailed {
    DurabilityFailed {
        message: waiters
            .failure
            .clone()
            .unwrap_or_else(|| StdArc::from("unknown failure")),
    }
}

impl fmt::Debug for DurableWatermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableWatermark")
            .field("durable_epoch", &self.durable_epoch())
            .field("failure", &self.failure().map(|e| e.message))
            .finish()
    }
}

/// The future returned by [`DurableWatermark::wait`].
#[must_use = "futures do nothing unless polled"]
pub struct DurableWait<'a> {
    watermark: &'a DurableWatermark,
    epoch: u64,
    /// Set while this future has (or may have) a waker in the parked list.
    id: Option<u64>,
}

impl DurableWait<'_> {
    /// Removes this future's parked waker, if any.
    fn unpark(&mut self, waiters: &mut Waiters) {
        if let Some(id) = self.id.take() {
            waiters.parked.retain(|p| p.id != id);
        }
    }
}

impl Future for DurableWait<'_> {
    type Output = Result<(), DurabilityFailed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let wm = this.watermark;
        if this.id.is_none() {
            // Fast path, no lock: most waits find their epoch durable already.
            if let Some(result) = wm.check(this.epoch) {
                return Poll::Ready(result);
            }
        }
        let mut waiters = lock(&wm.waiters);
        let result = match wm.status(this.epoch) {
            Status::Durable => Ok(()),
            Status::Failed => Err(failure_of(&waiters)),
            Status::NotYet => {
                // Checked and parked under the lock the notifiers take after changing the state.
                let parked = this
                    .id
                    .and_then(|id| waiters.parked.iter_mut().find(|p| p.id == id));
                match parked {
                    Some(p) => {
                        if !p.waker.will_wake(cx.waker()) {
                            p.waker = cx.waker().clone();
                        }
                    }
                    None => {
                        let id = waiters.next_id;
                        waiters.next_id += 1;
                        waiters.parked.push(Parked {
                            id,
                            epoch: this.epoch,
                            waker: cx.waker().clone(),
                        });
                        this.id = Some(id);
                    }
                }
                return Poll::Pending;
            }
        };
        this.unpark(&mut waiters);
        Poll::Ready(result)
    }
}

impl Drop for DurableWait<'_> {
    fn drop(&mut self) {
        if self.id.is_some() {
            let mut waiters = lock(&self.watermark.waiters);
            self.unpark(&mut waiters);
        }
    }
}

impl fmt::Debug for DurableWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableWait")
            .field("epoch", &self.epoch)
            .field("parked", &self.id.is_some())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::test_util::{CountingWaker, block_on};
    use std::sync::Arc;

    // Goal: the durable epoch only goes up, and only epochs at or below it are released.
    #[test]
    fn advance_is_monotonic_and_releases_only_durable_epochs() {
        let wm = DurableWatermark::new(3);
        assert_eq!(wm.durable_epoch(), 3);
        assert_eq!(wm.check(3), Some(Ok(())));
        assert_eq!(wm.check(4), None);
        wm.advance(5);
        wm.advance(4);
        assert_eq!(wm.durable_epoch(), 5, "advance never goes back");
        assert_eq!(wm.check(6), None);
        assert_eq!(wm.wait_blocking(5), Ok(()));
        assert_eq!(block_on(wm.wait(2)), Ok(()));
    }

    // Goal: after a failure the epoch is frozen, later epochs get the first message, earlier ones still release.
    #[test]
    fn failure_is_terminal_but_durable_epochs_still_release() {
        let wm = DurableWatermark::new(0);
        wm.advance(2);
        wm.fail("disk full");
        wm.fail("second failure");
        wm.advance(9);
        assert_eq!(wm.durable_epoch(), 2, "advance after a failure is ignored");
        assert_eq!(wm.wait_blocking(2), Ok(()));
        let err = block_on(wm.wait(3)).unwrap_err();
        assert_eq!(err.message(), "disk full", "the first failure wins");
        assert_eq!(err.to_string(), "the epoch log failed: disk full");
        assert_eq!(wm.failure(), Some(err));
    }

    // Goal: an advance wakes exactly the async waiters whose epoch it made durable.
    #[test]
    fn async_waiters_are_woken_only_when_their_epoch_is_durable() {
        let wm = DurableWatermark::new(0);
        let (waker, wakes) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(wm.wait(1));
        let mut second = Box::pin(wm.wait(2));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "a re-poll does not park twice"
        );
        assert_eq!(lock(&wm.waiters).parked.len(), 2);
        wm.advance(1);
        assert_eq!(wakes.get(), 1, "only the waiter for epoch 1 is woken");
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        wm.advance(2);
        assert_eq!(wakes.get(), 2);
        assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert!(lock(&wm.waiters).parked.is_empty());
    }

    // Goal: dropping a pending wait unparks its waker.
    #[test]
    fn a_dropped_wait_leaves_no_parked_waker() {
        let wm = DurableWatermark::new(0);
        let (waker, wakes) = CountingWaker::new();
        let mut fut = Box::pin(wm.wait(1));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(fut);
        assert!(lock(&wm.waiters).parked.is_empty());
        wm.advance(1);
        assert_eq!(wakes.get(), 0);
    }

    // Goal: a failure wakes a parked async waiter, which gets the message.
    #[test]
    fn failure_wakes_async_waiters() {
        let wm = DurableWatermark::new(0);
        let (waker, wakes) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(wm.wait(1));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        wm.fail("io error");
        assert_eq!(wakes.get(), 1);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(e.message(), "io error"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    // Goal: blocking and async waiters on many threads are all released by a run of advances.
    #[test]
    fn threads_waiting_on_many_epochs_are_all_released() {
        let wm = Arc::new(DurableWatermark::new(0));
        let waiters: Vec<_> = (1..=8u64)
            .map(|e| {
                let wm = wm.clone();
                std::thread::spawn(move || {
                    if e % 2 == 0 {
                        wm.wait_blocking(e)
                    } else {
                        block_on(wm.wait(e))
                    }
                    .map(|()| assert!(wm.durable_epoch() >= e))
                })
            })
            .collect();
        for e in 1..=8 {
            wm.advance(e);
        }
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(()));
        }
    }

    // Goal: an epoch that would collide with the failed flag is refused loudly.
    #[test]
    #[should_panic(expected = "out of range")]
    fn epochs_beyond_the_flag_bit_are_refused() {
        DurableWatermark::new(0).advance(FAILED);
    }
}
