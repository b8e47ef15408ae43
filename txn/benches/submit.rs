//! The submit path: admitting requests, handing them to the sequencer and waking their callers,
//! one `Client::submit_request` per request against one `Client::submit_many` per group of
//! requests, through a whole in-memory runtime.
//!
//! Every measured iteration submits `BURST` single-row transactions on distinct keys at once
//! and waits for all their outcomes; time / `BURST` is the cost per request, the epochs'
//! execution included (the same in both), so the difference is what the submit path saves.
//!
//! Run: `cargo bench -p txn --bench submit -- --warm-up-time 1 --measurement-time 3`

mod common;

use common::{Counters, app};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use txn::{Client, Request, Runtime, RuntimeConfig, ServiceRef};

/// Requests submitted at once in each measured iteration.
const BURST: usize = 4_096;

/// Requests per `submit_many` call.
const GROUP_SIZES: [usize; 2] = [64, 1_024];

fn requests(service: ServiceRef, round: u64) -> Vec<Request<Counters>> {
    (0..BURST as u64)
        .map(|i| {
            let key = round * BURST as u64 + i;
            Request::raw(service, service.partition_of(&key), key)
        })
        .collect()
}

async fn one_by_one(client: &Client<Counters>, requests: Vec<Request<Counters>>) {
    let submits = requests.into_iter().map(|r| client.submit_request(r));
    for outcome in futures::future::join_all(submits).await {
        outcome.expect("an outcome").result.expect("commits");
    }
}

async fn in_groups(client: &Client<Counters>, requests: Vec<Request<Counters>>, size: usize) {
    let mut requests = requests.into_iter();
    let mut groups = Vec::new();
    loop {
        let group: Vec<_> = requests.by_ref().take(size).collect();
        if group.is_empty() {
            break;
        }
        groups.push(client.submit_many(group));
    }
    for outcomes in futures::future::join_all(groups).await {
        for outcome in outcomes {
            outcome.expect("an outcome").result.expect("commits");
        }
    }
}

fn submit(c: &mut Criterion) {
    let tokio = common::two_worker_tokio();
    let (app, service) = app(2);
    let rt = tokio
        .block_on(Runtime::start(app, RuntimeConfig::in_memory()))
        .expect("the runtime starts");
    let client = rt.client();
    let mut group = c.benchmark_group("submit");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut round = 0u64;
    let mut timed = |size: Option<usize>, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            round += 1;
            let batch = requests(service, round);
            let started = Instant::now();
            tokio.block_on(async {
                match size {
                    None => one_by_one(&client, batch).await,
                    Some(size) => in_groups(&client, batch, size).await,
                }
            });
            total += started.elapsed();
        }
        total
    };
    group.bench_function("submit_request", |b| b.iter_custom(|n| timed(None, n)));
    for size in GROUP_SIZES {
        group.bench_with_input(BenchmarkId::new("submit_many", size), &size, |b, &size| {
            b.iter_custom(|n| timed(Some(size), n))
        });
    }
    group.finish();
    tokio.block_on(rt.shutdown());
}

criterion_group!(benches, submit);
criterion_main!(benches);
