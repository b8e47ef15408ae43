//! The per-row cost of an epoch, counted rather than timed: on a hashed table a
//! read-modify-write of a row that exists probes the rows' hash index once in the whole epoch
//! (the read; the write, decide and commit reach the row through the access); on an ordered
//! table the tree is searched once per read and once per committed write, as a single thread
//! writing in place searches it (a blind write, a write after a read, a read alone: no search
//! more). Epochs that mix updates, deletes (which move rows inside a hashed table), inserts
//! and aborts still leave exactly the rows a plain model says, in both kinds of table.
//! Probes and searches are counted in debug builds only.

use crate::common;

use std::collections::BTreeMap;
use std::ops::Bound;
use txn::Field;
use txn::bench_api::{BenchTable, SeqSet};

/// A 16-byte row, as the ledger's accounts: the key again and a balance.
type Row = (u64, i64);

/// A hash table holding rows `0..n` with balance 0, loaded in one epoch, its dirty rows cleared.
fn loaded_table(n: u64) -> BenchTable<u64, Row> {
    loaded_table_of_kind(n, false)
}

/// `loaded_table`, hashed or (`ordered`) ordered.
fn loaded_table_of_kind(n: u64, ordered: bool) -> BenchTable<u64, Row> {
    let mut table = BenchTable::new(ordered);
    for key in 0..n {
        table.write(key as u32, key, Some((key, 0)));
    }
    table.commit(&SeqSet::with_len(n as usize));
    table.clear_dirty();
    table
}

#[test]
fn a_read_modify_write_probes_the_rows_once_per_epoch() {
    let n_rows = 1_000u64;
    let n_txns = 200u64;
    let mut table = loaded_table(n_rows);
    let before = table.row_probes().expect("a debug build counts probes");
    // Transaction `seq` reads row `5 * seq` and writes it back incremented, as a transfer step.
    for seq in 0..n_txns {
        let key = 5 * seq;
        let (id, balance) = table.get(seq as u32, &key).expect("loaded row");
        table.write(seq as u32, key, Some((id, balance + 1)));
    }
    let none = SeqSet::with_len(n_txns as usize);
    let mut conflicts = SeqSet::with_len(n_txns as usize);
    table.decide(&none, &mut conflicts);
    assert_eq!(conflicts.count(), 0, "distinct rows conflict with nothing");
    table.commit(&conflicts);
    let probes = table.row_probes().expect("a debug build counts probes") - before;
    assert_eq!(
        probes, n_txns,
        "an epoch of {n_txns} read-modify-writes of existing rows probed the index {probes} \
         times: one per row is the budget (the read; write, decide and commit reuse its access)"
    );
    // The writes landed: a read-only epoch sees every row, incremented where written.
    for key in 0..n_rows {
        let expected = i64::from(key % 5 == 0 && key / 5 < n_txns);
        assert_eq!(table.get(0, &key), Some((key, expected)), "row {key}");
    }
    table.commit(&SeqSet::with_len(1));
}

/// The balance of a row, for deltas.
const BALANCE: Field<Row> = Field::new("balance", |row: &Row| row.1, |row: &mut Row| &mut row.1);

// Goal: a transaction running alone (the serial pass, `SerialExecutor`) changes an existing
// row by deltas in place: one probe of the rows for all the deltas of an `add_all`, not a read
// and a write per delta; the change is undone if the transaction aborts, and a delta that
// fails leaves the row as it was.
#[test]
fn deltas_of_a_transaction_running_alone_probe_the_row_once() {
    let mut table = loaded_table(10);
    table.set_solo(true);
    let before = table.row_probes().expect("a debug build counts probes");
    assert!(table.add_all(0, &3, &[(BALANCE, 5), (BALANCE, 2), (BALANCE, -1)]));
    let probes = table.row_probes().expect("a debug build counts probes") - before;
    assert_eq!(
        probes, 1,
        "three deltas on one row alone probed the rows {probes} times"
    );
    assert!(table.add_all(0, &3, &[(BALANCE, 10)]));
    table.commit_all(true);
    table.set_solo(false);
    assert_eq!(table.get(0, &3), Some((3, 16)));
    table.commit(&SeqSet::with_len(1));
    // Undone when the transaction aborts.
    table.set_solo(true);
    assert!(table.add_all(0, &3, &[(BALANCE, 100)]));
    assert!(table.add_all(0, &4, &[(BALANCE, 1)]));
    table.commit_all(false);
    table.set_solo(false);
    // A failing delta (overflow) changes nothing, the deltas before it in the call included.
    table.set_solo(true);
    assert!(!table.add_all(0, &3, &[(BALANCE, 1), (BALANCE, i64::MAX)]));
    assert!(!table.add_all(0, &99, &[(BALANCE, 1)]), "no row 99");
    table.commit_all(true);
    table.set_solo(false);
    assert_eq!(table.get(0, &3), Some((3, 16)));
    assert_eq!(table.get(0, &4), Some((4, 0)));
    assert_eq!(table.get(0, &99), None);
    table.commit(&SeqSet::with_len(1));
}

/// One operation of a random transaction.
#[derive(Clone, Copy, Debug)]
enum Op {
    Read(u64),
    Put(u64, i64),
    Delete(u64),
    ReadModifyWrite(u64, i64),
}

/// Runs one epoch of `txns` against `table`, checking each read against `model` (the committed
/// rows) and the transaction's own writes, then decides, aborts the transactions in
/// `user_aborted` and the conflict losers, commits, and applies the survivors' writes to `model`.
fn run_epoch(
    table: &mut BenchTable<u64, Row>,
    model: &mut BTreeMap<u64, Row>,
    txns: &[Vec<Op>],
    user_aborted: &SeqSet,
) {
    let mut own_writes: Vec<BTreeMap<u64, Option<Row>>> = vec![BTreeMap::new(); txns.len()];
    for (seq, ops) in txns.iter().enumerate() {
        let own = &mut own_writes[seq];
        let seq = seq as u32;
        for op in ops {
            let expected = |key: &u64| own.get(key).copied().unwrap_or(model.get(key).copied());
            match *op {
                Op::Read(key) => assert_eq!(table.get(seq, &key), expected(&key), "read {key}"),
                Op::Put(key, value) => {
                    table.write(seq, key, Some((key, value)));
                    own.insert(key, Some((key, value)));
                }
                Op::Delete(key) => {
                    table.write(seq, key, None);
                    own.insert(key, None);
                }
                Op::ReadModifyWrite(key, delta) => {
                    let read = table.get(seq, &key);
                    assert_eq!(read, expected(&key), "read-modify-write {key}");
                    let row = (key, read.map_or(0, |(_, v)| v) + delta);
                    table.write(seq, key, Some(row));
                    own.insert(key, Some(row));
                }
            }
        }
    }
    let mut aborted = SeqSet::with_len(txns.len());
    table.decide(user_aborted, &mut aborted);
    for seq in 0..txns.len() as u32 {
        if user_aborted.contains(seq) {
            aborted.insert(seq);
        }
    }
    table.commit(&aborted);
    // The decide phase lets at most one writer of a row commit, so the order is immaterial.
    for (seq, own) in own_writes.into_iter().enumerate() {
        if aborted.contains(seq as u32) {
            continue;
        }
        for (key, row) in own {
            match row {
                Some(row) => model.insert(key, row),
                None => model.remove(&key),
            };
        }
    }
}

/// A random operation on keys `0..n_keys`.
fn random_op(rng: &mut impl rand::Rng, n_keys: u64) -> Op {
    let key = rng.random_range(0..n_keys);
    match rng.random_range(0..4) {
        0 => Op::Read(key),
        1 => Op::Put(key, rng.random_range(-100..100)),
        2 => Op::Delete(key),
        _ => Op::ReadModifyWrite(key, rng.random_range(-100..100)),
    }
}

#[test]
fn epochs_of_updates_deletes_and_inserts_leave_the_rows_the_model_has() {
    epochs_leave_the_rows_the_model_has(
        "epochs_of_updates_deletes_and_inserts_leave_the_rows_the_model_has",
        false,
    );
}

#[test]
fn epochs_on_an_ordered_table_leave_the_rows_the_model_has() {
    epochs_leave_the_rows_the_model_has(
        "epochs_on_an_ordered_table_leave_the_rows_the_model_has",
        true,
    );
}

/// 60 random epochs of reads, puts, deletes and read-modify-writes (some transactions abort)
/// on a hashed or an `ordered` table, checked against a model after each.
fn epochs_leave_the_rows_the_model_has(name: &str, ordered: bool) {
    use rand::Rng;
    let seed = common::seed(name);
    let mut rng = common::rng(seed);
    let n_keys = 300u64;
    let mut table = loaded_table_of_kind(n_keys / 2, ordered);
    let mut model: BTreeMap<u64, Row> = (0..n_keys / 2).map(|k| (k, (k, 0))).collect();
    for epoch in 0..60 {
        let n_txns = rng.random_range(1..80usize);
        let txns: Vec<Vec<Op>> = (0..n_txns)
            .map(|_| {
                let n_ops = rng.random_range(1..5);
                (0..n_ops).map(|_| random_op(&mut rng, n_keys)).collect()
            })
            .collect();
        let mut user_aborted = SeqSet::with_len(n_txns);
        for seq in 0..n_txns as u32 {
            if rng.random_bool(0.1) {
                user_aborted.insert(seq);
            }
        }
        run_epoch(&mut table, &mut model, &txns, &user_aborted);
        assert_eq!(table.len(), model.len(), "row count after epoch {epoch}");
        if ordered {
            let all = table.scan(0, (Bound::Unbounded, Bound::Unbounded), None);
            let expected: Vec<(u64, Row)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(all, expected, "the rows in key order after epoch {epoch}");
            table.commit(&SeqSet::with_len(1));
        }
    }
    let everything: Vec<Vec<Op>> = vec![(0..n_keys).map(Op::Read).collect()];
    run_epoch(&mut table, &mut model, &everything, &SeqSet::with_len(1));
}

// Goal: on an ordered table an epoch searches the tree no more often than a single thread
// writing in place would: once per read (the row's value) and once per committed write (the
// commit's insert or remove). A write finds its access by key, without the tree, and a read
// leaves nothing in the tree for the commit to clear.
#[test]
fn an_ordered_table_is_searched_once_per_read_and_once_per_committed_write() {
    let n_rows = 1_000u64;
    let mut table = loaded_table_of_kind(n_rows, true);
    let n = 100u64;
    let before = table.row_probes().expect("a debug build counts searches");
    // Per transaction: an insert of a new row (a blind write), a read then delete of an
    // existing row (the delivery of a seller's entry), a read alone, a blind delete (a queue's
    // head after its scan).
    for seq in 0..n {
        let s = seq as u32;
        table.write(s, n_rows + seq, Some((n_rows + seq, 1)));
        let key = 4 * seq;
        assert_eq!(table.get(s, &key), Some((key, 0)));
        table.write(s, key, None);
        assert_eq!(table.get(s, &(4 * seq + 1)), Some((4 * seq + 1, 0)));
        table.write(s, 4 * seq + 2, None);
    }
    let none = SeqSet::with_len(n as usize);
    let mut conflicts = SeqSet::with_len(n as usize);
    table.decide(&none, &mut conflicts);
    assert_eq!(conflicts.count(), 0, "distinct rows conflict with nothing");
    table.commit(&conflicts);
    let searches = table.row_probes().expect("a debug build counts searches") - before;
    // Reads: 2 per transaction; committed writes: 3 per transaction.
    assert_eq!(
        searches,
        5 * n,
        "{n} transactions of two reads and three writes searched the tree {searches} times: \
         one per read and one per committed write is the budget"
    );
    // The writes landed, in key order.
    let rows = table.scan(0, (Bound::Unbounded, Bound::Unbounded), None);
    let expected: Vec<(u64, Row)> = (0..n_rows + n)
        .filter(|k| *k >= n_rows || !(k % 4 == 0 || k % 4 == 2) || *k >= 4 * n)
        .map(|k| (k, (k, i64::from(k >= n_rows))))
        .collect();
    assert_eq!(rows, expected);
    table.commit(&SeqSet::with_len(1));
}
