//! Merge-able deltas (`TxnCtx::add`, `TxnCtx::add_bounded`): randomized concurrent histories
//! of deltas, bounded decrements, plain reads, writes and deletes over a few hot rows, checked
//! against a `BTreeMap` model that shares no code with the runtime (applied in the reported
//! serial order), replayed on `SerialExecutor` (same outcomes, same state hash), and compared
//! with the same workload written as plain read-modify-writes, which must lose more conflicts.

use crate::common::{Recorded, assert_matches_serial_replay, copy_of_log, rng, seed};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::storage::MemoryStorage;
use txn::{
    AbortReason, App, AppBuilder, AppDef, Client, Fallback, Field, Runtime, RuntimeConfig,
    ServiceRef, Table,
};

/// Clients and requests each, over `N_KEYS` rows: contended enough for plain
/// read-modify-writes to lose conflicts in most epochs.
const N_CLIENTS: u64 = 8;
const N_REQUESTS_PER_CLIENT: usize = 120;
const N_KEYS: u64 = 6;
const N_PARTITIONS: u32 = 2;
/// The stock every row starts with (and a plain write resets it to).
const STOCK_START: i64 = 40;

struct MergeApp;

impl App for MergeApp {
    type Event = Ev;
    type Output = Vec<i64>;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    plain: i64,
    hits: i64,
    stock: i64,
}

/// How the handler implements `Add` and `Take`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Mode {
    /// With `add` / `add_bounded`.
    Merge,
    /// With `get` and `put` (and a business abort for the bound).
    ReadModifyWrite,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OpKind {
    /// `hits += delta`.
    Add(i64),
    /// `hits += delta` and `plain += delta`, in one `add_all`.
    AddPair(i64),
    /// `stock -= amount`, refused if stock would go below zero.
    Take(i64),
    /// Pushes `plain`, `hits`, `stock` (or one `-1` if the row is missing).
    Read,
    /// Replaces the row with `{ plain: value, hits: 0, stock: STOCK_START }`.
    Write(i64),
    Delete,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Op {
    key: u64,
    kind: OpKind,
}

/// A transaction: the ops run as a chain of steps, each in the partition of its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ev {
    mode: Mode,
    ops: Vec<Op>,
    idx: usize,
    reads: Vec<i64>,
}

struct Fixture {
    app: Arc<AppDef<MergeApp>>,
    service: ServiceRef,
    table: Table<u64, Counter>,
}

const HITS: Field<Counter> = txn::field!(Counter, hits);
const STOCK: Field<Counter> = txn::field!(Counter, stock);
const PLAIN: Field<Counter> = txn::field!(Counter, plain);

fn build() -> Fixture {
    let mut b = AppBuilder::<MergeApp>::new();
    let service = b.service("counters", N_PARTITIONS);
    let table = b.table::<u64, Counter>(service, "rows");
    b.handler(service, move |ctx, ev| {
        let op = &ev.ops[ev.idx];
        let mut reads = ev.reads.clone();
        match (&op.kind, ev.mode) {
            (OpKind::Add(delta), Mode::Merge) => ctx.add(table, &op.key, HITS, *delta)?,
            (OpKind::AddPair(delta), Mode::Merge) => {
                ctx.add_all(table, &op.key, &[(HITS, *delta), (PLAIN, *delta)])?
            }
            (OpKind::Take(amount), Mode::Merge) => {
                ctx.add_bounded(table, &op.key, STOCK, -amount, 0)?
            }
            (OpKind::Add(delta), Mode::ReadModifyWrite) => {
                let Some(mut row) = ctx.get(table, &op.key)? else {
                    return Err(ctx.abort("missing"));
                };
                row.hits += delta;
                ctx.put(table, op.key, row)?;
            }
            (OpKind::AddPair(delta), Mode::ReadModifyWrite) => {
                let Some(mut row) = ctx.get(table, &op.key)? else {
                    return Err(ctx.abort("missing"));
                };
                row.hits += delta;
                row.plain += delta;
                ctx.put(table, op.key, row)?;
            }
            (OpKind::Take(amount), Mode::ReadModifyWrite) => {
                let Some(mut row) = ctx.get(table, &op.key)? else {
                    return Err(ctx.abort("missing"));
                };
                if row.stock < *amount {
                    return Err(ctx.abort("out of stock"));
                }
                row.stock -= amount;
                ctx.put(table, op.key, row)?;
            }
            (OpKind::Read, _) => match ctx.get(table, &op.key)? {
                Some(row) => reads.extend([row.plain, row.hits, row.stock]),
                None => reads.push(-1),
            },
            (OpKind::Write(value), _) => {
                let row = Counter {
                    plain: *value,
                    hits: 0,
                    stock: STOCK_START,
                };
                ctx.put(table, op.key, row)?;
            }
            (OpKind::Delete, _) => ctx.delete(table, &op.key)?,
        }
        if ev.idx + 1 < ev.ops.len() {
            let next = Ev {
                idx: ev.idx + 1,
                reads,
                ..ev.clone()
            };
            ctx.emit_raw(service, &ev.ops[ev.idx + 1].key, next);
        } else {
            ctx.set_output(reads);
        }
        Ok(())
    });
    Fixture {
        app: b.build().expect("valid test app"),
        service,
        table,
    }
}

fn random_ops(rng: &mut impl Rng) -> Vec<Op> {
    let n_ops = rng.random_range(1..=3);
    (0..n_ops)
        .map(|_| {
            let kind = match rng.random_range(0..100) {
                0..33 => OpKind::Add(rng.random_range(-5..=10)),
                33..45 => OpKind::AddPair(rng.random_range(-5..=10)),
                45..75 => OpKind::Take(rng.random_range(1..=4)),
                75..88 => OpKind::Read,
                88..97 => OpKind::Write(rng.random_range(0..1000)),
                _ => OpKind::Delete,
            };
            Op {
                key: rng.random_range(0..N_KEYS),
                kind,
            }
        })
        .collect()
}

/// The application's meaning, written out directly on a `BTreeMap`: each transaction runs
/// alone on a copy that is kept only if it commits.
struct Model {
    rows: BTreeMap<u64, Counter>,
}

impl Model {
    fn apply(&mut self, ev: &Ev) -> Result<Option<Vec<i64>>, AbortReason> {
        let mut rows = self.rows.clone();
        let mut reads = Vec::new();
        for op in &ev.ops {
            let missing = || AbortReason::MissingRow {
                service: "counters".into(),
                table: "rows".into(),
                key: op.key.to_string(),
            };
            match &op.kind {
                OpKind::Add(delta) => rows.get_mut(&op.key).ok_or_else(missing)?.hits += delta,
                OpKind::AddPair(delta) => {
                    let row = rows.get_mut(&op.key).ok_or_else(missing)?;
                    row.hits += delta;
                    row.plain += delta;
                }
                OpKind::Take(amount) => {
                    let row = rows.get_mut(&op.key).ok_or_else(missing)?;
                    if row.stock - amount < 0 {
                        return Err(AbortReason::Constraint {
                            service: "counters".into(),
                            table: "rows".into(),
                            message: format!(
                                "stock = {} + {} would go below its minimum 0 for key {}",
                                row.stock, -amount, op.key
                            ),
                        });
                    }
                    row.stock -= amount;
                }
                OpKind::Read => match rows.get(&op.key) {
                    Some(row) => reads.extend([row.plain, row.hits, row.stock]),
                    None => reads.push(-1),
                },
                OpKind::Write(value) => {
                    let row = Counter {
                        plain: *value,
                        hits: 0,
                        stock: STOCK_START,
                    };
                    rows.insert(op.key, row);
                }
                OpKind::Delete => {
                    rows.remove(&op.key);
                }
            }
        }
        self.rows = rows;
        Ok(Some(reads))
    }
}

/// What one run produced.
struct Run {
    history: Vec<Recorded<MergeApp>>,
    final_hash: u64,
    final_rows: BTreeMap<u64, Counter>,
    conflicts: u64,
    committed: u64,
}

/// A runtime on `storage` with the given fallback.
fn config(storage: &MemoryStorage, fallback: Fallback) -> RuntimeConfig {
    RuntimeConfig {
        storage: Arc::new(storage.clone()),
        fallback,
        ..RuntimeConfig::in_memory()
    }
}

async fn run_history(fx: &Arc<Fixture>, mode: Mode, seed: u64, config: RuntimeConfig) -> Run {
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let client = rt.client();
    let mut history = Vec::new();
    // Every row exists before the concurrent clients start.
    for key in 0..N_KEYS {
        let ops = vec![Op {
            key,
            kind: OpKind::Write(0),
        }];
        history.push(submit(&client, fx, mode, ops).await);
    }
    let mut tasks = Vec::new();
    for c in 0..N_CLIENTS {
        let (client, fx) = (rt.client(), fx.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(seed.wrapping_add(c));
            let mut records = Vec::new();
            for _ in 0..N_REQUESTS_PER_CLIENT {
                let ops = random_ops(&mut rng);
                records.push(submit(&client, &fx, mode, ops).await);
            }
            records
        }));
    }
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let final_hash = client.state_hash().await.unwrap();
    let table = fx.table;
    let final_rows = client
        .query(&[fx.service], move |view| {
            view.iter(table)
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let stats = rt.stats().snapshot();
    rt.shutdown().await;
    Run {
        history,
        final_hash,
        final_rows,
        conflicts: stats.conflicts,
        committed: stats.committed,
    }
}

/// A runtime with `config` whose row 0 exists, and a client of it.
async fn start_with_row_0(
    fx: &Arc<Fixture>,
    config: RuntimeConfig,
) -> (Runtime<MergeApp>, Client<MergeApp>) {
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let client = rt.client();
    let create = vec![Op {
        key: 0,
        kind: OpKind::Write(0),
    }];
    submit(&client, fx, Mode::Merge, create)
        .await
        .result
        .unwrap();
    (rt, client)
}

/// The state hash of a runtime recovered from a copy of `storage`'s log: recovery re-runs
/// every epoch through the parallel pass, its decide phase and the serial pass.
async fn restart_from_copy_of_log(fx: &Fixture, storage: &MemoryStorage) -> u64 {
    let config = RuntimeConfig {
        storage: Arc::new(copy_of_log(storage)),
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    hash
}

async fn submit(
    client: &Client<MergeApp>,
    fx: &Fixture,
    mode: Mode,
    ops: Vec<Op>,
) -> Recorded<MergeApp> {
    let key = ops[0].key;
    let event = Ev {
        mode,
        ops,
        idx: 0,
        reads: Vec::new(),
    };
    let outcome = client
        .submit_raw(fx.service, &key, event.clone())
        .await
        .unwrap();
    Recorded {
        pos: outcome
            .serial_pos
            .expect("the serial fallback settles everyone"),
        service: fx.service,
        partition: fx.service.partition_of(&key),
        event,
        result: outcome.result,
    }
}

/// Applies the history in serial order to the model; asserts every outcome, the bound and the
/// final rows. Returns how many transactions committed.
fn assert_matches_model(run: &mut Run, seed: u64) -> usize {
    run.history.sort_by_key(|r| r.pos);
    let mut model = Model {
        rows: BTreeMap::new(),
    };
    let mut n_committed = 0;
    for (i, r) in run.history.iter().enumerate() {
        let expected = model.apply(&r.event);
        assert_eq!(
            r.result, expected,
            "seed {seed}: request #{i} at {:?} ({:?}) diverges from the model",
            r.pos, r.event
        );
        n_committed += usize::from(expected.is_ok());
        assert!(
            model.rows.values().all(|row| row.stock >= 0),
            "seed {seed}: the model broke its own bound"
        );
    }
    assert_eq!(run.final_rows, model.rows, "seed {seed}: final rows");
    assert!(
        run.final_rows.values().all(|row| row.stock >= 0),
        "seed {seed}: stock below its bound"
    );
    n_committed
}

// Goal: deltas and bounded decrements interleaved with plain reads, writes and deletes are
// serializable (every read and abort as the model says, final rows equal), replay on
// `SerialExecutor` and recovery from the log give the same state hash, the bound holds, and
// deltas commit in parallel: the same workload written as read-modify-writes loses more
// conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_deltas_are_serializable_and_commit_in_parallel() {
    let seed = seed("merge-ops");
    let fx = Arc::new(build());
    let storage = MemoryStorage::new();
    let merge_config = config(&storage, Fallback::Serial);
    let mut merge = run_history(&fx, Mode::Merge, seed, merge_config).await;
    let n_committed = assert_matches_model(&mut merge, seed);
    assert_eq!(
        merge.committed, n_committed as u64,
        "seed {seed}: committed"
    );
    let history = std::mem::take(&mut merge.history);
    let n_history = history.len();
    let replayed = assert_matches_serial_replay(fx.app.clone(), history, merge.final_hash, seed);
    assert_eq!(replayed, n_committed);

    let restarted = restart_from_copy_of_log(&fx, &storage).await;
    assert_eq!(
        restarted, merge.final_hash,
        "seed {seed}: recovery replaying the log diverged"
    );

    let rmw_config = config(&MemoryStorage::new(), Fallback::Serial);
    let mut rmw = run_history(&fx, Mode::ReadModifyWrite, seed, rmw_config).await;
    let history = std::mem::take(&mut rmw.history);
    assert_matches_serial_replay(fx.app.clone(), history, rmw.final_hash, seed);
    eprintln!(
        "merge-ops: {n_history} transactions, {n_committed} committed; conflict losers: {} with \
         deltas, {} with read-modify-writes",
        merge.conflicts, rmw.conflicts
    );
    assert!(
        rmw.conflicts > 0,
        "seed {seed}: the read-modify-writes never conflicted, so nothing was compared"
    );
    assert!(
        merge.conflicts * 3 < rmw.conflicts * 2,
        "seed {seed}: deltas lost {} conflicts, read-modify-writes {}: deltas did not commit \
         in parallel",
        merge.conflicts,
        rmw.conflicts
    );
}

// Goal: with conflict losers retried in the next epoch (new, lowest TIDs) instead of the serial
// pass, deltas stay serializable and replay to the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_deltas_are_serializable_with_next_epoch_retries() {
    let seed = seed("merge-ops-next-epoch");
    let fx = Arc::new(build());
    let storage = MemoryStorage::new();
    let next_epoch = config(&storage, Fallback::NextEpoch);
    let mut run = run_history(&fx, Mode::Merge, seed, next_epoch).await;
    let n_committed = assert_matches_model(&mut run, seed);
    let history = std::mem::take(&mut run.history);
    let replayed = assert_matches_serial_replay(fx.app.clone(), history, run.final_hash, seed);
    assert_eq!(replayed, n_committed);
    let restarted = restart_from_copy_of_log(&fx, &storage).await;
    assert_eq!(restarted, run.final_hash, "seed {seed}: recovery diverged");
    assert!(run.conflicts > 0, "seed {seed}: nothing was retried");
}

// Goal: escrow. More concurrent bounded decrements than the stock holds: exactly as many
// commit as there is stock, the rest abort on the bound, the stock ends at zero, and only the
// decrements that could break the bound lose a conflict (read-modify-writes of one row in one
// epoch would all but one lose).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_decrements_commit_by_escrow_and_never_break_the_bound() {
    const N_TAKES: usize = STOCK_START as usize + 5;
    let fx = Arc::new(build());
    let config = RuntimeConfig {
        epoch_txns_max: N_TAKES,
        epoch_duration: std::time::Duration::from_micros(txn::limits::EPOCH_DURATION_US_MAX),
        ..RuntimeConfig::in_memory()
    };
    let (rt, client) = start_with_row_0(&fx, config).await;
    let before = rt.stats().snapshot();
    let mut takes = tokio::task::JoinSet::new();
    for _ in 0..N_TAKES {
        let (client, fx) = (rt.client(), fx.clone());
        let ops = vec![Op {
            key: 0,
            kind: OpKind::Take(1),
        }];
        takes.spawn(async move { submit(&client, &fx, Mode::Merge, ops).await });
    }
    let outcomes = takes.join_all().await;
    let n_committed = outcomes.iter().filter(|r| r.result.is_ok()).count();
    assert_eq!(n_committed, STOCK_START as usize);
    for r in outcomes.iter().filter(|r| r.result.is_err()) {
        assert!(
            matches!(&r.result, Err(AbortReason::Constraint { message, .. })
                if message.contains("below its minimum 0")),
            "{:?}",
            r.result
        );
    }
    let stats = rt.stats().snapshot();
    assert!(
        stats.conflicts - before.conflicts <= (N_TAKES - n_committed) as u64,
        "{} conflict losers for {} decrements past the stock",
        stats.conflicts - before.conflicts,
        N_TAKES - n_committed
    );
    let read = vec![Op {
        key: 0,
        kind: OpKind::Read,
    }];
    let reads = submit(&client, &fx, Mode::Merge, read).await.result;
    assert_eq!(reads, Ok(Some(vec![0, 0, 0])));
    rt.shutdown().await;
}

// Goal: a delta never creates a row: on a missing row it aborts naming the row, alone and in
// the parallel pass alike.
#[tokio::test]
async fn a_delta_on_a_missing_row_aborts_naming_it() {
    let fx = Arc::new(build());
    let ev = Ev {
        mode: Mode::Merge,
        ops: vec![Op {
            key: 3,
            kind: OpKind::Add(1),
        }],
        idx: 0,
        reads: Vec::new(),
    };
    let expected = Err(AbortReason::MissingRow {
        service: "counters".into(),
        table: "rows".into(),
        key: "3".into(),
    });
    let mut serial = txn::SerialExecutor::new(fx.app.clone());
    let partition = fx.service.partition_of(&3u64);
    assert_eq!(
        serial.run_raw(fx.service, partition, ev.clone(), 0),
        expected
    );
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let outcome = rt.client().submit_raw(fx.service, &3u64, ev).await.unwrap();
    assert_eq!(outcome.result, expected);
    rt.shutdown().await;
}

// Goal: on a table with a row check a delta is a read-modify-write, so the check sees the new
// row: a delta that breaks it aborts naming the check, one that keeps it commits.
#[tokio::test]
async fn a_delta_on_a_checked_table_runs_the_check() {
    struct CheckedApp;
    impl App for CheckedApp {
        type Event = i64;
        type Output = i64;
    }
    let mut b = AppBuilder::<CheckedApp>::new();
    let service = b.service("stock", 1);
    let table = b.table::<u64, Counter>(service, "rows");
    b.check(table, "hits_at_most_10", |row: &Counter| row.hits <= 10);
    b.handler(service, move |ctx, delta| {
        if ctx.get(table, &0)?.is_none() {
            let row = Counter {
                plain: 0,
                hits: 0,
                stock: 0,
            };
            ctx.put(table, 0, row)?;
        }
        ctx.add(table, &0, HITS, *delta)?;
        let hits = ctx.get(table, &0)?.expect("written above").hits;
        ctx.set_output(hits);
        Ok(())
    });
    let app = b.build().expect("valid app");
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let submit = |delta: i64| client.submit_raw(service, &0u64, delta);
    assert_eq!(submit(7).await.unwrap().result, Ok(Some(7)));
    let refused = submit(4).await.unwrap().result;
    assert!(
        matches!(&refused, Err(AbortReason::Constraint { message, .. })
            if message.contains("hits_at_most_10")),
        "{refused:?}"
    );
    assert_eq!(submit(3).await.unwrap().result, Ok(Some(10)));
    rt.shutdown().await;
}

// Goal: a transaction that aborts on its own (here on a missing row) after a bounded delta
// that would have broken its bound reports the bound, as the serial order says: the decide
// phase checks its delta too instead of trusting its abort.
#[tokio::test]
async fn an_abort_after_a_failing_bounded_delta_reports_the_bound() {
    let fx = Arc::new(build());
    let (rt, client) = start_with_row_0(&fx, RuntimeConfig::in_memory()).await;
    let ops = vec![
        Op {
            key: 0,
            kind: OpKind::Take(STOCK_START + 1),
        },
        Op {
            key: 5,
            kind: OpKind::Add(1),
        },
    ];
    let result = submit(&client, &fx, Mode::Merge, ops).await.result;
    assert!(
        matches!(&result, Err(AbortReason::Constraint { message, .. })
            if message.contains("stock = 40 + -41 would go below its minimum 0 for key 0")),
        "{result:?}"
    );
    rt.shutdown().await;
}

/// A row as a `CheckedApp` handler creates it: stock full, nothing else counted.
fn full_row() -> Counter {
    Counter {
        plain: 0,
        hits: 0,
        stock: STOCK_START,
    }
}

/// An application declaring its deltas: `rows` bounds `stock` and `hits` below by 0 and takes
/// `hits` increments, `stock` deltas as `stock_usage` says and `plain` deltas of either sign;
/// `audited` has an opaque check. The handler adds `delta` to `stock` of row 0, unbounded.
fn declared_app(stock_usage: txn::DeltaUse) -> Result<Arc<AppDef<CheckedApp>>, txn::TxnError> {
    let mut b = AppBuilder::<CheckedApp>::new();
    let service = b.service("counters", 1);
    let rows = b.table::<u64, Counter>(service, "rows");
    let audited = b.table::<u64, Counter>(service, "audited");
    b.field_min(rows, STOCK, 0);
    b.field_min(rows, HITS, 0);
    b.delta_field(rows, HITS, txn::DeltaUse::Increments);
    b.delta_field(rows, STOCK, stock_usage);
    b.delta_field(rows, txn::field!(Counter, plain), txn::DeltaUse::Any);
    b.check(audited, "plain_is_even", |row: &Counter| row.plain % 2 == 0);
    b.delta_field(audited, HITS, txn::DeltaUse::Any);
    b.handler(service, move |ctx, delta| {
        if *delta == 0 {
            return ctx.put(rows, 0, full_row());
        }
        if *delta == i64::MIN {
            let row = Counter {
                plain: 0,
                hits: 0,
                stock: -1,
            };
            return ctx.put(rows, 1, row);
        }
        ctx.add(rows, &0, STOCK, *delta)?;
        let stock = ctx.get(rows, &0)?.expect("created first").stock;
        ctx.set_output(stock);
        Ok(())
    });
    b.build()
}

struct CheckedApp;

impl App for CheckedApp {
    type Event = i64;
    type Output = i64;
}

// Goal: the coordination report classifies each declared delta use against each invariant
// of its table: increments vs a lower bound confluent, bounded decrements escrow, anything vs
// an opaque check coordinated, a field without invariant confluent.
#[test]
fn the_coordination_report_classifies_declared_deltas() {
    use txn::{DeltaUse, Verdict};
    let app = declared_app(DeltaUse::BoundedDecrements).expect("a safe declaration builds");
    let entries = app.coordination_report();
    assert_eq!(
        entries[1].to_string(),
        "| counters.rows.stock | bounded decrements | stock >= 0 | escrow | a decrement commits \
         in parallel only if the bound holds with every lower-TID decrement applied; the others \
         run alone in the serial pass |"
    );
    let report: Vec<(String, &str, DeltaUse, String, Verdict)> = entries
        .into_iter()
        .map(|e| (e.table, e.field, e.operation, e.invariant, e.verdict))
        .collect();
    let row = |table: &str, field, operation, invariant: &str, verdict| {
        (
            table.to_string(),
            field,
            operation,
            invariant.to_string(),
            verdict,
        )
    };
    let opaque = "check \"plain_is_even\"";
    assert_eq!(
        report,
        vec![
            row(
                "rows",
                "hits",
                DeltaUse::Increments,
                "hits >= 0",
                Verdict::Confluent
            ),
            row(
                "rows",
                "stock",
                DeltaUse::BoundedDecrements,
                "stock >= 0",
                Verdict::Escrow
            ),
            row("rows", "plain", DeltaUse::Any, "none", Verdict::Confluent),
            row(
                "audited",
                "hits",
                DeltaUse::Any,
                opaque,
                Verdict::Coordinated
            ),
        ]
    );
}

// Goal: a delta use that could break a declared invariant without escrow is refused at build
// time, naming the table, the field, the use and the invariant.
#[test]
fn unbounded_decrements_of_a_bounded_field_are_refused_at_build_time() {
    let Err(txn::TxnError::InvalidApp(problems)) = declared_app(txn::DeltaUse::Any) else {
        panic!("unbounded decrements of a field with a minimum must be refused");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "counters.rows: deltas of either sign on field stock could break the invariant \
             stock >= 0"
        ),
        "{problems:?}"
    );
}

// Goal: a declared minimum holds for every delta on its field (even `add`, which names no
// bound) and for plain writes.
#[tokio::test]
async fn a_declared_minimum_bounds_every_delta_and_write() {
    let app = declared_app(txn::DeltaUse::BoundedDecrements).unwrap();
    let service = app.service("counters").unwrap();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let submit = |delta: i64| client.submit_raw(service, &0u64, delta);
    assert_eq!(submit(0).await.unwrap().result, Ok(None));
    assert_eq!(submit(-STOCK_START).await.unwrap().result, Ok(Some(0)));
    let refused = submit(-1).await.unwrap().result;
    assert!(
        matches!(&refused, Err(AbortReason::Constraint { message, .. })
            if message == "stock = 0 + -1 would go below its minimum 0 for key 0"),
        "{refused:?}"
    );
    let refused = submit(i64::MIN).await.unwrap().result;
    assert!(
        matches!(&refused, Err(AbortReason::Constraint { message, .. })
            if message.contains("stock >= 0")),
        "{refused:?}"
    );
    rt.shutdown().await;
}

// Goal: a bounded delta that fails on the transaction's own view aborts at once, in the
// parallel pass too, so it needs no serial pass: with next-epoch retries a lone transaction
// would otherwise lose by escrow in every epoch. A later write of the same row does not hide
// the failed bound.
#[tokio::test]
async fn a_bounded_delta_failing_on_its_own_view_aborts_without_a_serial_pass() {
    let fx = Arc::new(build());
    let next_epoch = config(&MemoryStorage::new(), Fallback::NextEpoch);
    let (rt, client) = start_with_row_0(&fx, next_epoch).await;
    let take = Op {
        key: 0,
        kind: OpKind::Take(STOCK_START + 1),
    };
    let overwrite = Op {
        key: 0,
        kind: OpKind::Write(1),
    };
    for ops in [vec![take.clone()], vec![take, overwrite]] {
        let outcome = client
            .submit_raw(
                fx.service,
                &0u64,
                Ev {
                    mode: Mode::Merge,
                    ops,
                    idx: 0,
                    reads: Vec::new(),
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(&outcome.result, Err(AbortReason::Constraint { message, .. })
                if message.contains("stock = 40 + -41 would go below its minimum 0")),
            "{:?}",
            outcome.result
        );
        assert_eq!(
            outcome.retries, 0,
            "it failed on its own view, no retry needed"
        );
    }
    rt.shutdown().await;
}

// Goal: the deltas of one `add_all` see each other, in the parallel pass (the transaction's
// own view) and alone alike: a later delta of the call is checked against the row with the
// earlier ones applied, so two decrements that together break a declared minimum abort at
// once naming the second (no retry), and ones that keep it commit together.
#[tokio::test]
async fn the_deltas_of_one_add_all_see_each_other() {
    let mut b = AppBuilder::<CheckedApp>::new();
    let service = b.service("counters", 1);
    let rows = b.table::<u64, Counter>(service, "rows");
    b.field_min(rows, STOCK, 0);
    b.delta_field(rows, STOCK, txn::DeltaUse::BoundedDecrements);
    b.delta_field(rows, HITS, txn::DeltaUse::Increments);
    b.handler(service, move |ctx, take| {
        if *take == 0 {
            return ctx.put(rows, 0, full_row());
        }
        ctx.add_all(rows, &0, &[(STOCK, -take), (HITS, 1), (STOCK, -take)])?;
        let row = ctx.get(rows, &0)?.expect("created first");
        ctx.set_output(row.stock * 1000 + row.hits);
        Ok(())
    });
    let app = b.build().expect("valid app");
    let short = |stock: i64| {
        Err(AbortReason::Constraint {
            service: "counters".into(),
            table: "rows".into(),
            message: format!("stock = {stock} + -6 would go below its minimum 0 for key 0"),
        })
    };
    // Stock 40 − 2·15 = 10; 10 − 6 = 4 cannot give 6 more; 10 − 2·5 = 0.
    let expected = [Ok(None), Ok(Some(10_001)), short(4), Ok(Some(2))];
    let takes = [0, 15, 6, 5];
    let mut serial = txn::SerialExecutor::new(app.clone());
    for (take, expected) in takes.iter().zip(&expected) {
        assert_eq!(
            &serial.run_raw(service, 0, *take, 0),
            expected,
            "alone, take {take}"
        );
    }
    let next_epoch = config(&MemoryStorage::new(), Fallback::NextEpoch);
    let rt = Runtime::start(app, next_epoch).await.unwrap();
    let client = rt.client();
    for (take, expected) in takes.iter().zip(&expected) {
        let outcome = client.submit_raw(service, &0u64, *take).await.unwrap();
        assert_eq!(&outcome.result, expected, "in the runtime, take {take}");
        assert_eq!(outcome.retries, 0, "take {take} decided on its own view");
    }
    rt.shutdown().await;
}
