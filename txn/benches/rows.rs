//! The per-row hot paths of a hash table's committed rows, at 10,000 and 1,000,000 rows of 16
//! bytes (a `u64` key and a 16-byte row, as the ledger's accounts): `TableState::get` (a read
//! recorded for conflict detection), `TableState::write` (a buffered write), both as a
//! transaction step does them (`execute`: each transaction reads its row, then writes it back),
//! `decide` and `commit` (applying the write in place and marking the row dirty), through
//! `txn::bench_api`.
//!
//! Every measured batch is one epoch of `BATCH_ROWS` single-row transactions on distinct
//! pseudo-random keys; the parts of the epoch not being measured run untimed, so each benchmark
//! times one phase. Throughput is in rows: time / `BATCH_ROWS` is the cost per row.
//!
//! `rows_prefetch` times the `execute` phase with the committed rows prefetched ahead of the
//! transactions (`BenchTable::prefetch_row`): before transaction `i` runs, the index bucket of
//! transaction `i + 2d`'s row and the entry of transaction `i + d`'s row start loading, so the
//! two cache misses of a row far out of the caches overlap with other rows' work instead of
//! stalling one after another (`d = 0`: no prefetch, the same as `execute`).
//!
//! Run: `cargo bench -p txn --bench rows -- --warm-up-time 1 --measurement-time 3`
//!
//! For counting cycles with `perf stat` over a fixed amount of work, the bench binary also takes
//! `--fixed-epochs <epochs> <distance>`: it loads the 1,000,000-row table, then runs `epochs`
//! epochs (`execute`, `decide`, `commit`) with prefetch distance `distance`, and nothing else.
//! Its cost per row is `(cycles(epochs) - cycles(0)) / (epochs * 4,096)`:
//! `perf stat -e cycles:u,instructions:u target/release/deps/rows-* --fixed-epochs 2000 8`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::time::{Duration, Instant};
use txn::bench_api::{BenchTable, SeqSet};

/// Table sizes measured, in rows.
const TABLE_ROWS: [u64; 2] = [10_000, 1_000_000];

/// Rows (one per transaction) in each measured epoch.
const BATCH_ROWS: usize = 4_096;

/// A 16-byte row: the account id again (as the ledger's rows carry their key) and a balance.
type Row = (u64, i64);

/// A table holding rows `0..n`, loaded through the write and commit paths in epochs of
/// `BATCH_ROWS` rows, with the load's dirty rows cleared (as after a checkpoint).
fn loaded_table(n: u64) -> BenchTable<u64, Row> {
    let mut table = BenchTable::new(false);
    let none = SeqSet::with_len(BATCH_ROWS);
    let mut next = 0;
    while next < n {
        for seq in 0..BATCH_ROWS as u32 {
            if next < n {
                table.write(seq, next, Some((next, 1_000)));
                next += 1;
            }
        }
        table.commit(&none);
    }
    table.clear_dirty();
    table
}

/// Distinct pseudo-random keys below `n` for one epoch (a fixed xorshift stream, so every
/// run and both sides of a comparison draw the same keys).
struct Keys {
    state: u64,
    n: u64,
}

impl Keys {
    fn batch(&mut self) -> Vec<u64> {
        let mut keys = Vec::with_capacity(BATCH_ROWS);
        let mut seen = std::collections::HashSet::new();
        while keys.len() < BATCH_ROWS.min(self.n as usize) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let key = self.state % self.n;
            if seen.insert(key) {
                keys.push(key);
            }
        }
        keys
    }
}

/// Which phase of the epoch is timed.
#[derive(Clone, Copy)]
enum Phase {
    Get,
    Write,
    /// Each transaction's `get` then its `write` of the same row, as a ledger or YCSB-T step.
    Execute,
    /// `Execute` with the rows prefetched this many transactions ahead.
    ExecutePrefetched(usize),
    Decide,
    Commit,
}

/// Each transaction reads its row and writes it back at once; the time taken.
fn execute(table: &mut BenchTable<u64, Row>, keys: &[u64]) -> Duration {
    let start = Instant::now();
    for (seq, key) in keys.iter().enumerate() {
        let (id, balance) = table.get(seq as u32, key).expect("loaded row");
        table.write(seq as u32, *key, Some((id, balance + 1)));
    }
    start.elapsed()
}

/// `execute` with the rows prefetched `distance` transactions ahead (see the module comment);
/// the keys' hashes are computed in the timed part, as a partition would from its steps' hints.
fn execute_prefetched(table: &mut BenchTable<u64, Row>, keys: &[u64], distance: usize) -> Duration {
    let start = Instant::now();
    let hashes: Vec<u64> = keys.iter().map(BenchTable::<u64, Row>::row_hash).collect();
    for hash in hashes.iter().take(2 * distance) {
        table.prefetch_row(*hash, false);
    }
    for hash in hashes.iter().take(distance) {
        table.prefetch_row(*hash, true);
    }
    for (seq, key) in keys.iter().enumerate() {
        if let Some(hash) = hashes.get(seq + 2 * distance) {
            table.prefetch_row(*hash, false);
        }
        if let Some(hash) = hashes.get(seq + distance) {
            table.prefetch_row(*hash, true);
        }
        let (id, balance) = table.get(seq as u32, key).expect("loaded row");
        table.write(seq as u32, *key, Some((id, balance + 1)));
    }
    start.elapsed()
}

/// Every transaction reads its row, then every transaction writes it back; the time `phase`
/// took, if it is one of the two.
fn get_then_write(
    table: &mut BenchTable<u64, Row>,
    keys: &[u64],
    phase: Phase,
) -> Option<Duration> {
    let start = Instant::now();
    let mut reads = Vec::with_capacity(keys.len());
    for (seq, key) in keys.iter().enumerate() {
        reads.push(table.get(seq as u32, key));
    }
    let timed = matches!(phase, Phase::Get).then(|| start.elapsed());
    let start = Instant::now();
    for (seq, (key, row)) in keys.iter().zip(reads).enumerate() {
        let (id, balance) = row.expect("loaded row");
        table.write(seq as u32, *key, Some((id, balance + 1)));
    }
    timed.or(matches!(phase, Phase::Write).then(|| start.elapsed()))
}

/// Runs one epoch of read-modify-write transactions on `keys`, timing `phase` only.
fn epoch(table: &mut BenchTable<u64, Row>, keys: &[u64], phase: Phase) -> Duration {
    let none = SeqSet::with_len(keys.len());
    let mut timed = match phase {
        Phase::Execute => Some(execute(table, keys)),
        Phase::ExecutePrefetched(distance) => Some(execute_prefetched(table, keys, distance)),
        _ => get_then_write(table, keys, phase),
    };
    let start = Instant::now();
    let mut conflicts = SeqSet::with_len(keys.len());
    table.decide(&none, &mut conflicts);
    timed = timed.or(matches!(phase, Phase::Decide).then(|| start.elapsed()));
    let start = Instant::now();
    table.commit(&conflicts);
    let timed = timed.unwrap_or_else(|| start.elapsed());
    table.clear_dirty();
    timed
}

/// Times each of `phases` on each table size, in criterion group `group`.
fn bench_phases(c: &mut Criterion, group: &str, phases: &[(String, Phase)]) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    for n in TABLE_ROWS {
        let mut table = loaded_table(n);
        let mut keys = Keys {
            state: 0x9e37_79b9_7f4a_7c15,
            n,
        };
        for (name, phase) in phases {
            group.bench_function(BenchmarkId::new(name.as_str(), n), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| epoch(&mut table, &keys.batch(), *phase))
                        .sum()
                })
            });
        }
    }
    group.finish();
}

fn rows(c: &mut Criterion) {
    let phases = [
        ("get", Phase::Get),
        ("write", Phase::Write),
        ("execute", Phase::Execute),
        ("decide", Phase::Decide),
        ("commit", Phase::Commit),
    ];
    let phases: Vec<(String, Phase)> = phases.map(|(n, p)| (n.to_string(), p)).into();
    bench_phases(c, "rows", &phases);
}

/// Prefetch distances compared by `rows_prefetch` (0: none).
const DISTANCES: [usize; 4] = [0, 4, 8, 16];

fn rows_prefetch(c: &mut Criterion) {
    let phases: Vec<(String, Phase)> = DISTANCES
        .iter()
        .map(|d| (format!("execute_ahead_{d}"), Phase::ExecutePrefetched(*d)))
        .collect();
    bench_phases(c, "rows_prefetch", &phases);
}

/// `--fixed-epochs <epochs> <distance>`: a fixed amount of work for `perf stat` (see the module
/// comment). The keys of every epoch are drawn before the first, so that drawing them is part
/// of the fixed setup cost rather than of each epoch.
fn fixed_epochs(epochs: usize, distance: usize) {
    let n = 1_000_000;
    let mut table = loaded_table(n);
    let mut keys = Keys {
        state: 0x9e37_79b9_7f4a_7c15,
        n,
    };
    // 256 distinct batches cover the whole table; longer runs reuse them in turn.
    let batches: Vec<Vec<u64>> = (0..epochs.min(256)).map(|_| keys.batch()).collect();
    let mut total = Duration::ZERO;
    for e in 0..epochs {
        total += epoch(
            &mut table,
            &batches[e % batches.len()],
            Phase::ExecutePrefetched(distance),
        );
    }
    let rows = (epochs * BATCH_ROWS).max(1) as f64;
    println!(
        "{epochs} epochs, distance {distance}: execute {:.1} ns/row (wall clock)",
        total.as_nanos() as f64 / rows
    );
}

criterion_group!(benches, rows, rows_prefetch);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--fixed-epochs") {
        let number = |i: usize| -> usize {
            args.get(at + i)
                .and_then(|a| a.parse().ok())
                .expect("--fixed-epochs <epochs> <distance>")
        };
        fixed_epochs(number(1), number(2));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
