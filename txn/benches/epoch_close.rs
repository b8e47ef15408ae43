//! Closing epochs under closed-loop load: `CLIENTS` clients, each with one single-row write in
//! flight and submitting its next one when the outcome arrives, through a whole in-memory
//! runtime, with the epoch closing only by time (`epoch_quiet_close_txns = 0`, the old
//! behaviour) against closing as soon as the submission queue goes quiet once it holds 256.
//!
//! Every measured iteration runs `ROUNDS` requests per client; time / (`CLIENTS` × `ROUNDS`) is
//! the wall time per transaction. Between two epochs every client waits for a reply, so what an
//! epoch waits for its timer after the last client resubmitted is idle time for every core.
//!
//! Run: `cargo bench -p txn --bench epoch_close -- --warm-up-time 1 --measurement-time 5`

mod common;

use common::{Counters, app, time_rounds, two_worker_tokio};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use txn::{Client, Request, Runtime, RuntimeConfig, ServiceRef};

/// Closed-loop clients.
const CLIENTS: u64 = 1_024;

/// Requests each client runs one after another in a measured iteration.
const ROUNDS: u64 = 8;

/// `epoch_quiet_close_txns` settings compared: off, and the default.
const QUIET_CLOSE: [usize; 2] = [0, txn::limits::EPOCH_QUIET_CLOSE_TXNS_DEFAULT];

/// One client's closed loop: `ROUNDS` writes of its own keys, one at a time.
async fn client_loop(client: &Client<Counters>, service: ServiceRef, idx: u64, round: u64) {
    for r in 0..ROUNDS {
        let key = ((round * ROUNDS + r) * CLIENTS) + idx;
        let request = Request::raw(service, service.partition_of(&key), key);
        let outcome = client.submit_request(request).await.expect("an outcome");
        outcome.result.expect("commits");
    }
}

fn epoch_close(c: &mut Criterion) {
    let tokio = two_worker_tokio();
    let (app, service) = app(4);
    let mut group = c.benchmark_group("epoch_close");
    group.throughput(Throughput::Elements(CLIENTS * ROUNDS));
    for quiet_close in QUIET_CLOSE {
        let config = RuntimeConfig {
            epoch_quiet_close_txns: quiet_close,
            ..RuntimeConfig::in_memory()
        };
        let rt = tokio
            .block_on(Runtime::start(app.clone(), config))
            .expect("the runtime starts");
        let client = rt.client();
        let mut round = 0u64;
        let mut timed = |iters: u64| {
            time_rounds(&tokio, iters, || {
                round += 1;
                futures::future::join_all(
                    (0..CLIENTS).map(|idx| client_loop(&client, service, idx, round)),
                )
            })
        };
        group.bench_with_input(
            BenchmarkId::new("quiet_close_txns", quiet_close),
            &quiet_close,
            |b, _| b.iter_custom(&mut timed),
        );
        tokio.block_on(rt.shutdown());
    }
    group.finish();
}

criterion_group!(benches, epoch_close);
criterion_main!(benches);
