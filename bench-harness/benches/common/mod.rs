//! Shared set-up of the `conflict` and `commit` benches: a 1,000,000-row table and epochs of
//! read-modify-write transactions over it, built with the production `TableState` through
//! `txn::bench_api`.

use rand::SeedableRng;
use rand::rngs::StdRng;
use services::zipf::KeyDist;
use txn::bench_api::{BenchTable, SeqSet};

/// Rows in the table every epoch runs against.
pub const N_ROWS: u64 = 1_000_000;

/// Keys each transaction reads and then writes (a 4-row transfer's footprint).
pub const KEYS_PER_TXN: usize = 4;

/// Transactions per epoch measured.
pub const EPOCH_SIZES: [usize; 2] = [1_000, 10_000];

/// The accessed keys of each transaction of one epoch, in `seq` order.
pub type EpochKeys = Vec<[u64; KEYS_PER_TXN]>;

/// How transactions pick their keys.
#[derive(Clone, Copy)]
pub enum Dist {
    /// Uniform over all rows: almost no conflicts.
    Uniform,
    /// Zipf θ = 0.99 (YCSB's default skew): the hottest key is in ~7 % of draws, so most
    /// transactions of a large epoch share a row with a lower TID.
    Hot,
}

impl Dist {
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Hot => "zipf0.99",
        }
    }

    fn key_dist(self) -> KeyDist {
        match self {
            Dist::Uniform => KeyDist::uniform(N_ROWS),
            Dist::Hot => KeyDist::zipf(N_ROWS, 0.99),
        }
        .expect("valid key distribution")
    }
}

/// Draws the keys of epochs of `n` transactions, each with `KEYS_PER_TXN` distinct keys.
pub struct EpochGen {
    dist: KeyDist,
    rng: StdRng,
}

impl EpochGen {
    pub fn new(dist: Dist, seed: u64) -> Self {
        EpochGen {
            dist: dist.key_dist(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn epoch(&mut self, n: usize) -> EpochKeys {
        (0..n)
            .map(|_| {
                let mut keys = [0; KEYS_PER_TXN];
                self.dist.sample_distinct(&mut self.rng, &mut keys);
                keys
            })
            .collect()
    }
}

/// A hash table (as `AppBuilder::table` declares) holding rows `0..N_ROWS`, loaded through the
/// ordinary write + commit path in small epochs, with dirty-row tracking on and the load's dirty
/// rows cleared (as after the first checkpoint).
///
/// The epoch's access map keeps its capacity across epochs and `decide` walks all of it, so the
/// load uses small epochs (1,000 rows each): the map then grows to the size of the epochs being
/// measured, as in a steady run of such epochs. Build one table per measured epoch size.
pub fn loaded_table() -> BenchTable<u64, i64> {
    const LOAD_EPOCH_ROWS: u64 = 1_000;
    let mut table = BenchTable::new(false);
    let none_aborted = SeqSet::with_len(LOAD_EPOCH_ROWS as usize);
    for chunk in 0..N_ROWS / LOAD_EPOCH_ROWS {
        for (seq, k) in (chunk * LOAD_EPOCH_ROWS..(chunk + 1) * LOAD_EPOCH_ROWS).enumerate() {
            table.write(seq as u32, k, Some(0));
        }
        table.commit(&none_aborted);
    }
    table.clear_dirty();
    assert_eq!(table.len(), N_ROWS as usize);
    table
}

/// The execute phase's bookkeeping for one epoch: transaction `seq` reads each of its keys
/// (`TableState::get`, recorded as a reader) and writes it back incremented
/// (`TableState::write`, a buffered writer).
pub fn record(table: &mut BenchTable<u64, i64>, epoch: &EpochKeys) {
    for (seq, keys) in epoch.iter().enumerate() {
        let seq = seq as u32;
        for &k in keys {
            let v = table.get(seq, &k).unwrap_or(0);
            table.write(seq, k, Some(v + 1));
        }
    }
}

/// The decide phase of one partition (as `PartitionState::decide` runs it): a fresh conflict
/// set, filled by the table's `decide`.
pub fn decide(table: &BenchTable<u64, i64>, user_aborted: &SeqSet) -> SeqSet {
    let mut conflicts = SeqSet::with_len(user_aborted.capacity());
    table.decide(user_aborted, &mut conflicts);
    conflicts
}

/// Discards the epoch's buffered accesses without changing any row: a commit in which every
/// transaction aborted.
pub fn abort_all(table: &mut BenchTable<u64, i64>, n: usize) {
    let mut all = SeqSet::with_len(n);
    for seq in 0..n as u32 {
        all.insert(seq);
    }
    table.commit(&all);
    assert!(!table.has_access());
}
