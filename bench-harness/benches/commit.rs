//! Epoch commit: applying an epoch's surviving write sets to the committed rows.
//!
//! An epoch of N transactions (1,000 and 10,000), each reading and then writing 4 distinct
//! uniformly drawn keys of a 1,000,000-row hash table, is recorded and decided (untimed); the
//! timed part is the production `TableState::commit` (`txn/src/table.rs`, through
//! `txn::bench_api`): drain the epoch's access map, skip aborted writers, apply each surviving
//! write to the rows and mark it dirty for the next checkpoint.
//!
//! - `commit/dirty_tracking/<N>`: as in a runtime that checkpoints (the default); the dirty set
//!   is emptied between iterations, untimed, as a checkpoint would (it keeps its capacity).
//! - `commit/no_dirty_tracking/<N>`: as with `checkpoint_every_epochs == 0`.
//!
//! Throughput is in transactions (4 row writes each): time / N is the cost per transaction.
//!
//! Run: `cargo bench -p bench-harness --bench commit -- --warm-up-time 1 --measurement-time 3`

// Shared with `conflict.rs`, which uses the items this bench does not.
#[allow(dead_code)]
mod common;

use common::{Dist, EPOCH_SIZES, EpochGen, decide, loaded_table, record};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use txn::bench_api::SeqSet;

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit");
    // Each iteration also records and decides an epoch untimed, which takes longer than the
    // commit itself: fewer samples keep the wall time reasonable.
    group.sample_size(30);
    for (i, &n) in EPOCH_SIZES.iter().enumerate() {
        for track_dirty in [true, false] {
            let mut table = loaded_table();
            table.set_track_dirty(track_dirty);
            let mut epochs = EpochGen::new(Dist::Uniform, 7 + i as u64);
            let user_aborted = SeqSet::with_len(n);
            let name = if track_dirty {
                "dirty_tracking"
            } else {
                "no_dirty_tracking"
            };
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let epoch = epochs.epoch(n);
                        record(&mut table, &epoch);
                        let mut aborted = decide(&table, &user_aborted);
                        aborted.union_with(&user_aborted);
                        let start = Instant::now();
                        table.commit(&aborted);
                        timed += start.elapsed();
                        if track_dirty {
                            table.clear_dirty();
                        }
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
