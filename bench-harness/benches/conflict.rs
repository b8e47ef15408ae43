//! Conflict detection: the Aria decide step of one partition over an epoch's access sets.
//!
//! An epoch of N transactions (1,000 and 10,000), each reading and then writing 4 distinct keys
//! of a 1,000,000-row table, keys drawn uniformly or Zipf θ = 0.99 (hot keys). Everything runs
//! on the production `TableState` (`txn/src/table.rs`) through `txn::bench_api`:
//!
//! - `conflict_decide/<dist>/<N>`: `TableState::decide` alone (the lowest writer of each row
//!   reserves it; later writers and readers lose) over the recorded accesses, plus the fresh
//!   conflict set `PartitionState::decide` allocates. The accesses are recorded once; decide
//!   does not change them.
//! - `conflict_record_decide/<dist>/<N>`: recording the accesses (`TableState::get` +
//!   `TableState::write` for every key: the reservations of the execute phase, without the
//!   handlers) and then deciding. Between iterations, untimed, every transaction is aborted to
//!   empty the access map (the rows do not change).
//!
//! Throughput is in transactions: time / N is the cost per transaction. The number of conflict
//! losers of each configuration is printed once to stderr.
//!
//! Run: `cargo bench -p bench-harness --bench conflict -- --warm-up-time 1 --measurement-time 3`

mod common;

use common::{Dist, EPOCH_SIZES, EpochGen, abort_all, decide, loaded_table, record};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use txn::bench_api::SeqSet;

fn conflict(c: &mut Criterion) {
    for dist in [Dist::Uniform, Dist::Hot] {
        for (i, &n) in EPOCH_SIZES.iter().enumerate() {
            let mut table = loaded_table();
            let mut epochs = EpochGen::new(dist, 42 + i as u64);
            let user_aborted = SeqSet::with_len(n);

            let epoch = epochs.epoch(n);
            record(&mut table, &epoch);
            let losers = decide(&table, &user_aborted).count();
            eprintln!(
                "conflict {}/{n}: {losers} of {n} transactions lose a conflict",
                dist.name()
            );

            let mut group = c.benchmark_group("conflict_decide");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(dist.name(), n), |b| {
                b.iter(|| black_box(decide(&table, &user_aborted)))
            });
            group.finish();
            abort_all(&mut table, n);

            let mut group = c.benchmark_group("conflict_record_decide");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(dist.name(), n), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let epoch = epochs.epoch(n);
                        let start = Instant::now();
                        record(&mut table, &epoch);
                        black_box(decide(&table, &user_aborted));
                        timed += start.elapsed();
                        abort_all(&mut table, n);
                    }
                    timed
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, conflict);
criterion_main!(benches);
