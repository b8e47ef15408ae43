//! The submit path: admitting requests, handing them to the sequencer and waking their callers,
//! one `Client::submit_request` per request against one `Client::submit_many` per group of
//! requests, through a whole in-memory runtime.
//!
//! Every measured iteration submits `BURST` single-row transactions on distinct keys at once
//! and waits for all their outcomes; time / `BURST` is the cost per request, the epochs'
//! execution included (the same in both), so the difference is what the submit path saves.
//!
//! Wall time on a shared machine varies with its load; the bench also prints the process's CPU
//! time per request of each case (user plus system, read from `/proc/self/stat`, all threads:
//! caller, sequencer, partitions, reply stage), which depends much less on what else runs.
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

/// The process's user plus system CPU time so far, in clock ticks (Linux; 0 elsewhere).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name may hold spaces: fields are counted after its closing parenthesis,
    // where utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after_name.split_whitespace().skip(11);
    let mut tick = || {
        fields
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick() + tick()
}

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU time and requests of one case over all its timed iterations (warm-up included).
#[derive(Default)]
struct CpuPerRequest {
    ticks: u64,
    requests: u64,
}

impl CpuPerRequest {
    fn micros(&self) -> f64 {
        self.ticks as f64 / TICKS_PER_S * 1e6 / self.requests.max(1) as f64
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
    let mut cpu: [CpuPerRequest; 1 + GROUP_SIZES.len()] = Default::default();
    let mut timed = |size: Option<usize>, iters: u64| {
        let mut total = Duration::ZERO;
        let case = size.map_or(0, |s| {
            1 + GROUP_SIZES.iter().position(|g| *g == s).unwrap_or(0)
        });
        let ticks_before = cpu_ticks();
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
        cpu[case].ticks += cpu_ticks() - ticks_before;
        cpu[case].requests += iters * BURST as u64;
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
    let names = std::iter::once("submit_request".to_string())
        .chain(GROUP_SIZES.iter().map(|s| format!("submit_many/{s}")));
    for (name, case) in names.zip(&cpu) {
        println!(
            "submit/{name}: process CPU {:.2} µs per request ({} requests)",
            case.micros(),
            case.requests
        );
    }
}

criterion_group!(benches, submit);
criterion_main!(benches);
