//! The app the runtime benches share: one service whose handler writes the key it is sent.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use txn::{App, AppBuilder, AppDef, ServiceRef};

/// One service whose handler writes the key it is sent.
pub struct Counters;

impl App for Counters {
    type Event = u64;
    type Output = ();
}

/// The `Counters` app with `n_partitions` partitions, and its service.
pub fn app(n_partitions: u32) -> (Arc<AppDef<Counters>>, ServiceRef) {
    let mut b = AppBuilder::<Counters>::new();
    let service = b.service("counters", n_partitions);
    let table = b.table::<u64, i64>(service, "kv");
    b.handler(service, move |ctx, key| {
        ctx.put(table, *key, 1)?;
        Ok(())
    });
    (b.build().expect("a valid app"), service)
}

/// The tokio runtime the closed-loop benches run on: two workers, one per core of the machine
/// the numbers are taken on.
pub fn two_worker_tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The wall time of `iters` rounds, each `round()` run to completion on `tokio`.
#[allow(dead_code)]
pub fn time_rounds<F: Future>(
    tokio: &tokio::runtime::Runtime,
    iters: u64,
    mut round: impl FnMut() -> F,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        tokio.block_on(round());
        total += started.elapsed();
    }
    total
}
