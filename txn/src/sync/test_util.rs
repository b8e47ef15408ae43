//! Helpers for the unit tests of the `sync` primitives (plain `std`, no loom, no tokio).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Counts how often the waker it came with was woken.
#[derive(Clone)]
pub(super) struct WakeCount(Arc<Counter>);

impl WakeCount {
    pub(super) fn get(&self) -> usize {
        self.0.wakes.load(Ordering::SeqCst)
    }
}

struct Counter {
    wakes: AtomicUsize,
}

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that only counts its wake-ups.
pub(super) struct CountingWaker;

impl CountingWaker {
    #[allow(clippy::new_ret_no_self)]
    pub(super) fn new() -> (Waker, WakeCount) {
        let counter = Arc::new(Counter {
            wakes: AtomicUsize::new(0),
        });
        (Waker::from(counter.clone()), WakeCount(counter))
    }
}

struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Drives `fut` to completion on this thread, polling it again only after it was woken; panics
/// if a pending future is not woken within 10 s (a lost wake-up would otherwise hang the test
/// or, with a polling loop, go unnoticed).
pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let unpark = Arc::new(Unpark {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !unpark.woken.swap(false, Ordering::SeqCst) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "future not woken within 10 s (lost wake-up)"
            );
            thread::park_timeout(deadline - now);
        }
    }
}
