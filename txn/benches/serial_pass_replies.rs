//! The contended path under closed-loop load: `CLIENTS` clients, each with one write of a hot
//! key in flight and submitting its next one when the outcome arrives, every transaction sent
//! to the one-thread serial pass (as under YCSB-T Zipf 0.99, where ~95 % run there), through a
//! whole in-memory runtime; outcomes held to the epoch's end (`early_replies: false`) against
//! answered while the serial pass runs (the default).
//!
//! Every measured iteration runs `ROUNDS` requests per client; time / (`CLIENTS` × `ROUNDS`) is
//! the wall time per transaction. With replies held, the clients' replies, their next requests
//! and the next epoch's gathering wait for the whole pass; answered early, they overlap it.
//!
//! Run: `cargo bench -p txn --bench serial_pass_replies -- --warm-up-time 1 --measurement-time 5`

mod common;

use common::{Counters, app, time_rounds, two_worker_tokio};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use txn::{Client, Request, Runtime, RuntimeConfig, SerialHints, ServiceRef};

/// Closed-loop clients.
const CLIENTS: u64 = 1_024;

/// Requests each client runs one after another in a measured iteration.
const ROUNDS: u64 = 8;

/// Distinct keys written: every epoch's transactions collide on them.
const HOT_KEYS: u64 = 64;

/// One client's closed loop: `ROUNDS` writes of hot keys, one at a time.
async fn client_loop(client: &Client<Counters>, service: ServiceRef, idx: u64) {
    for r in 0..ROUNDS {
        let key = (idx + r) % HOT_KEYS;
        let request = Request::raw(service, service.partition_of(&key), key);
        let outcome = client.submit_request(request).await.expect("an outcome");
        outcome.result.expect("commits");
    }
}

fn serial_pass_replies(c: &mut Criterion) {
    let tokio = two_worker_tokio();
    let (app, service) = app(4);
    let mut group = c.benchmark_group("serial_pass_replies");
    group.throughput(Throughput::Elements(CLIENTS * ROUNDS));
    for early_replies in [false, true] {
        let config = RuntimeConfig {
            serial_hints: SerialHints::Sample { every: 1 },
            early_replies,
            ..RuntimeConfig::in_memory()
        };
        let rt = tokio
            .block_on(Runtime::start(app.clone(), config))
            .expect("the runtime starts");
        let client = rt.client();
        let timed = |iters: u64| {
            time_rounds(&tokio, iters, || {
                futures::future::join_all(
                    (0..CLIENTS).map(|idx| client_loop(&client, service, idx)),
                )
            })
        };
        group.bench_with_input(
            BenchmarkId::new("early_replies", early_replies),
            &early_replies,
            |b, _| b.iter_custom(timed),
        );
        tokio.block_on(rt.shutdown());
    }
    group.finish();
}

criterion_group!(benches, serial_pass_replies);
criterion_main!(benches);
