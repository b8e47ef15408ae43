//! Runs a model under loom (`cfg(loom)`) or as a repeated real-thread test (otherwise), with
//! the same code: models use [`thread`], [`Arc`], the atomics and [`block_on`] from here.

#[cfg(loom)]
pub use loom::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};
#[cfg(not(loom))]
pub use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
pub const DEFAULT_MAX_PREEMPTIONS: usize = 2;

/// Real-thread runs of each model when `cfg(loom)` is off (override with
/// `VMSDB_MODEL_ITERATIONS`).
pub const DEFAULT_ITERATIONS: usize = 1000;

/// Checks `f` under loom: every interleaving within the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, default [`DEFAULT_MAX_PREEMPTIONS`]). Prints how many executions it
/// explored (visible with `-- --nocapture`).
#[cfg(loom)]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_MAX_PREEMPTIONS);
    }
    // Counted outside loom's view (a std atomic), to report how much was explored.
    let n_executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = n_executions.clone();
    let started = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "{}: {} executions explored (preemption bound {:?}) in {:.2?}",
        std::thread::current().name().unwrap_or("model"),
        n_executions.load(Ordering::Relaxed),
        builder.preemption_bound,
        started.elapsed()
    );
}

/// Runs `f` [`DEFAULT_ITERATIONS`] times on real threads; fails if the runs do not finish within
/// a minute (a lost wake-up or deadlock would otherwise hang `cargo test`).
#[cfg(not(loom))]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::mpsc;
    use std::time::Duration;

    let iterations = std::env::var("VMSDB_MODEL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let (done_tx, done_rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        for _ in 0..iterations {
            f();
        }
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("model did not finish {iterations} runs within 60 s: lost wake-up or deadlock")
        }
    }
}

/// Drives `fut` to completion on the current thread, polling it again only after it was woken.
///
/// The waker sets a flag under a [`Mutex`] and notifies a [`Condvar`], so this is the same code
/// with or without loom. A future that is pending and never woken sleeps forever: loom reports
/// that as a deadlock, and a real-thread run trips [`model`]'s watchdog. (loom's own `block_on`
/// needs its `futures` feature, one more crate; and loom 0.7.2 reports a deadlock for a wake flag
/// consumed with `swap` plus `thread::park`/`unpark`, whose synchronisation `std` leaves
/// undocumented.)
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    #[derive(Default)]
    struct Signal {
        woken: Mutex<bool>,
        wake_up: Condvar,
    }
    impl Wake for Signal {
        fn wake(self: std::sync::Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            *self.woken.lock().unwrap() = true;
            self.wake_up.notify_one();
        }
    }

    let mut fut = std::pin::pin!(fut);
    let signal = std::sync::Arc::new(Signal::default());
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        let mut woken = signal.woken.lock().unwrap();
        while !*woken {
            woken = signal.wake_up.wait(woken).unwrap();
        }
        *woken = false;
    }
}
