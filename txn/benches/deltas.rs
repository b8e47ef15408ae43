//! The per-row path of merge-able deltas (`TxnCtx::add`, `add_bounded`) through one epoch of a
//! hash table, through `txn::bench_api`: `TableState::add` (recording each delta in its row's
//! list), `decide` (the escrow walk of every row's deltas) and `commit` (applying them), as a
//! marketplace epoch does them.
//!
//! Every measured batch is one epoch of `BATCH_TXNS` transactions; each adds 1 to its own
//! `ROWS_PER_TXN` rows of a 10,000-row table (a checkout's stock rows and counters), then
//! seven times to one hot row shared by all (a seller's dashboard shard takes 7 deltas per
//! entry) and takes one unit of the hot row's stock by escrow. The parts of the epoch not
//! being measured run untimed, so each benchmark times one phase. Throughput is in
//! transactions: time / `BATCH_TXNS` is the cost per transaction.
//!
//! Run: `cargo bench -p txn --bench deltas -- --warm-up-time 1 --measurement-time 3`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use txn::Field;
use txn::bench_api::{BenchTable, SeqSet};

/// Rows of the table.
const TABLE_ROWS: u64 = 10_000;
/// Transactions in each measured epoch.
const BATCH_TXNS: u64 = 512;
/// Rows of its own each transaction adds to.
const ROWS_PER_TXN: u64 = 8;
/// The row every transaction adds to.
const HOT_ROW: u64 = 0;

/// A row: a counter and a stock level.
type Row = (i64, i64);

const HITS: Field<Row> = Field::new("hits", |row| row.0, |row| &mut row.0);
const STOCK: Field<Row> = Field::new("stock", |row| row.1, |row| &mut row.1);

/// A table holding rows `0..TABLE_ROWS`, with ample stock, and no rows dirty.
fn loaded_table() -> BenchTable<u64, Row> {
    let mut table = BenchTable::new(false);
    for key in 0..TABLE_ROWS {
        table.write(0, key, Some((0, i64::MAX / 2)));
    }
    table.commit(&SeqSet::with_len(1));
    table.clear_dirty();
    table
}

/// Which phase of the epoch is timed.
#[derive(Clone, Copy)]
enum Phase {
    Add,
    Decide,
    Commit,
}

/// Records every transaction's deltas of one epoch, the `epoch`-th (it picks their rows).
fn add_all(table: &mut BenchTable<u64, Row>, epoch: u64) {
    let n_cold = TABLE_ROWS - 1;
    for seq in 0..BATCH_TXNS {
        let first = (epoch * BATCH_TXNS + seq) * ROWS_PER_TXN;
        for i in 0..ROWS_PER_TXN {
            let key = 1 + (first + i) % n_cold;
            assert!(table.add(seq as u32, &key, HITS, 1, i64::MIN));
        }
        for _ in 0..7 {
            assert!(table.add(seq as u32, &HOT_ROW, HITS, 1, i64::MIN));
        }
        assert!(table.add(seq as u32, &HOT_ROW, STOCK, -1, 0));
    }
}

/// Runs the `epoch`-th epoch, timing `phase` only.
fn epoch(table: &mut BenchTable<u64, Row>, epoch: u64, phase: Phase) -> Duration {
    let start = Instant::now();
    add_all(table, epoch);
    let added = start.elapsed();
    let none = SeqSet::with_len(BATCH_TXNS as usize);
    let mut conflicts = SeqSet::with_len(BATCH_TXNS as usize);
    let start = Instant::now();
    table.decide(&none, &mut conflicts);
    let decided = start.elapsed();
    assert_eq!(
        conflicts.count(),
        0,
        "deltas with ample stock never conflict"
    );
    let start = Instant::now();
    table.commit(&conflicts);
    let committed = start.elapsed();
    table.clear_dirty();
    match phase {
        Phase::Add => added,
        Phase::Decide => decided,
        Phase::Commit => committed,
    }
}

fn deltas(c: &mut Criterion) {
    let mut group = c.benchmark_group("deltas");
    group.throughput(Throughput::Elements(BATCH_TXNS));
    let mut table = loaded_table();
    let mut n_epochs = 0u64;
    let phases = [
        ("add", Phase::Add),
        ("decide", Phase::Decide),
        ("commit", Phase::Commit),
    ];
    for (name, phase) in phases {
        group.bench_function(BenchmarkId::new(name, BATCH_TXNS), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n_epochs += 1;
                        epoch(&mut table, n_epochs, phase)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, deltas);
criterion_main!(benches);
