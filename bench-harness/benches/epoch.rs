//! One whole epoch end to end through `Runtime`: the per-epoch overhead of the pipeline.
//!
//! The ledger app (`services::ledger`, 2 services × 4 partitions) runs on a `Runtime` with
//! `MemoryStorage` and the default checkpointing, serial fallback and serial hints, on a
//! 2-worker tokio runtime; 100,000 accounts and entries are opened first (untimed). An
//! iteration submits 1,000 4-row transfers (accounts and entries uniform) at once and awaits
//! every outcome. The runtime closes an epoch at `epoch_txns_max = 1,000` requests (the epoch
//! timer is set to its maximum, 10 ms, and closing on a quiet queue is off, so that it does not
//! close earlier), so an iteration is
//! exactly one epoch: sequence, log (memory), 4 waves of execution, decide, commit, serial
//! fallback of any conflict losers, and replies. The number of epochs and of conflict losers
//! per epoch is printed to stderr at the end.
//!
//! Throughput is in transactions: time / 1,000 is the cost per transaction, time itself the
//! cost of an epoch of 1,000.
//!
//! Run: `cargo bench -p bench-harness --bench epoch -- --warm-up-time 1 --measurement-time 3`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use services::ledger::{Ledger, LedgerConfig, Transfer};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use txn::storage::MemoryStorage;
use txn::{Runtime, RuntimeConfig};

const N_TXNS: usize = 1_000;
const N_ACCOUNTS: u64 = 100_000;
const INITIAL_BALANCE: i64 = 1_000_000_000;

fn epoch(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ledger = Ledger::new(LedgerConfig::default()).expect("the ledger app builds");
    let runtime = tokio.block_on(async {
        let config = RuntimeConfig {
            epoch_duration: Duration::from_micros(txn::limits::EPOCH_DURATION_US_MAX),
            epoch_txns_max: N_TXNS,
            // Only size closes an epoch here, not a quiet queue between two submissions.
            epoch_quiet_close_txns: 0,
            storage: Arc::new(MemoryStorage::new()),
            ..RuntimeConfig::in_memory()
        };
        let runtime = Runtime::start(ledger.app().clone(), config)
            .await
            .expect("runtime starts");
        let loader = ledger.clone();
        let report =
            services::load::submit_all(&runtime.client(), N_ACCOUNTS as usize, N_TXNS, move |i| {
                loader.initial_deposit(i as u64, INITIAL_BALANCE)
            })
            .await
            .expect("load");
        assert_eq!(report.n_committed, N_ACCOUNTS, "every account opens");
        runtime
    });
    let client = runtime.client();
    let mut rng = StdRng::seed_from_u64(1);
    let stats = runtime.stats();
    let epochs_before = stats.epochs.load(Ordering::Relaxed);
    let conflicts_before = stats.conflicts.load(Ordering::Relaxed);
    let mut n_iterations = 0u64;

    let mut group = c.benchmark_group("epoch");
    group.throughput(Throughput::Elements(N_TXNS as u64));
    group.bench_function("ledger_transfers_1000_memory_storage", |b| {
        b.iter_batched(
            || {
                (0..N_TXNS)
                    .map(|_| {
                        ledger.transfer(Transfer {
                            src_account: rng.random_range(0..N_ACCOUNTS),
                            src_entry: rng.random_range(0..N_ACCOUNTS),
                            dst_account: rng.random_range(0..N_ACCOUNTS),
                            dst_entry: rng.random_range(0..N_ACCOUNTS),
                            amount: 1,
                        })
                    })
                    .collect::<Vec<_>>()
            },
            |requests| {
                n_iterations += 1;
                tokio.block_on(async {
                    let outcomes = futures::future::join_all(
                        requests.into_iter().map(|r| client.submit_request(r)),
                    )
                    .await;
                    for outcome in outcomes {
                        assert!(outcome.expect("submitted").committed(), "transfer commits");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Each iteration should have been exactly one epoch.
    let epochs = stats.epochs.load(Ordering::Relaxed) - epochs_before;
    let conflicts = stats.conflicts.load(Ordering::Relaxed) - conflicts_before;
    eprintln!(
        "epoch bench: {n_iterations} iterations ran as {epochs} epochs; {:.2} conflict losers \
         (re-run by the serial fallback) per epoch",
        conflicts as f64 / epochs.max(1) as f64
    );
    tokio.block_on(runtime.shutdown());
}

criterion_group!(benches, epoch);
criterion_main!(benches);
