//! The bytes-written limit counts each write, delta, delete and emitted event by its rmp-serde
//! size, exactly: a transaction whose writes come to the limit commits, and one byte less
//! aborts it at the very operation that crosses it, on `SerialExecutor` and on the runtime
//! alike. The sizes are rmp-serde's own encodings, computed here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::{
    AbortReason, App, AppBuilder, AppDef, Field, LimitKind, Runtime, RuntimeConfig, SerialExecutor,
    ServiceRef, Table, TxnLimits,
};

struct LimitApp;

/// A row with fields of many encodings (strings, lists, options, an enum, wide integers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Rec {
    name: String,
    tags: Vec<u32>,
    price: i64,
    note: Option<String>,
    kind: Kind,
    attrs: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Wrapped(u8),
    Pair(i16, String),
    Named { x: u64, y: Option<i32> },
}

const PRICE: Field<Rec> = txn::field!(Rec, price);

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Op {
    Put(u64, Rec),
    Add(u64, i64),
    Delete(u64),
    Emit(Box<Ev>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    /// Runs the operations in order; the first one that fails ends the step with a business
    /// abort naming its index (an emit past a limit fails silently and poisons the transaction).
    Run(Vec<Op>),
    /// What an emitted event carries; it does nothing.
    Note { text: String, values: Vec<i64> },
}

impl App for LimitApp {
    type Event = Ev;
    type Output = u32;
}

fn build(bytes_written_max: u64) -> (Arc<AppDef<LimitApp>>, ServiceRef) {
    build_with(TxnLimits {
        bytes_written_max,
        ..TxnLimits::default()
    })
}

fn build_with(limits: TxnLimits) -> (Arc<AppDef<LimitApp>>, ServiceRef) {
    let mut b = AppBuilder::<LimitApp>::new();
    let svc = b.service("s", 1);
    let recs: Table<u64, Rec> = b.table(svc, "recs");
    b.txn_limits(limits);
    b.handler(svc, move |ctx, ev| {
        let Ev::Run(ops) = ev else { return Ok(()) };
        for (i, op) in ops.iter().enumerate() {
            let done = match op {
                Op::Put(key, rec) => ctx.put(recs, *key, rec.clone()),
                Op::Add(key, delta) => ctx.add(recs, key, PRICE, *delta),
                Op::Delete(key) => ctx.delete(recs, key),
                Op::Emit(event) => {
                    ctx.emit_to_partition_raw(svc, 0, (**event).clone());
                    Ok(())
                }
            };
            if let Err(e) = done {
                return Err(ctx.abort_with("stopped", format!("op {i}: {:?}", e.0)));
            }
        }
        ctx.set_output(ops.len() as u32);
        Ok(())
    });
    (b.build().expect("valid app"), svc)
}

fn rec(i: u64, name_len: usize, tags: usize, kind: Kind) -> Rec {
    Rec {
        name: "n".repeat(name_len),
        tags: (0..tags as u32).map(|t| t * 1_000).collect(),
        price: 1 << (i % 40),
        note: i.is_multiple_of(2).then(|| "é".repeat(i as usize * 7)),
        kind,
        attrs: (0..i).map(|a| (format!("a{a}"), a << 20)).collect(),
    }
}

/// A transaction whose operations cross every header width rmp-serde has for strings, lists,
/// maps and integers.
fn ops() -> Vec<Op> {
    vec![
        Op::Put(1, rec(1, 31, 15, Kind::Plain)),
        Op::Put(1 << 33, rec(2, 32, 16, Kind::Wrapped(200))),
        Op::Put(255, rec(3, 255, 0, Kind::Pair(-129, "p".repeat(40)))),
        Op::Add(1, -70_000),
        Op::Put(
            65_536,
            rec(
                4,
                256,
                70,
                Kind::Named {
                    x: u64::MAX,
                    y: Some(-33),
                },
            ),
        ),
        Op::Emit(Box::new(Ev::Note {
            text: "t".repeat(300),
            values: vec![-1, 127, 128, -32_769, i64::MIN],
        })),
        Op::Delete(255),
        Op::Add(65_536, i64::from(i32::MAX) + 1),
        Op::Put(7, rec(17, 0, 3, Kind::Named { x: 5, y: None })),
        Op::Emit(Box::new(Ev::Note {
            text: String::new(),
            values: Vec::new(),
        })),
    ]
}

fn size<T: Serialize>(value: &T) -> u64 {
    rmp_serde::to_vec(value).expect("encodes").len() as u64
}

/// What each operation charges to the bytes-written limit.
fn charge(op: &Op) -> u64 {
    match op {
        Op::Put(key, rec) => size(key) + size(rec),
        Op::Add(key, delta) => size(key) + size(delta),
        Op::Delete(key) => size(key),
        Op::Emit(event) => size(&**event),
    }
}

/// How the transaction ends when the limit falls inside operation `i` (its first byte past the
/// limit is in it): a failing write returns the error to the handler, which stops there; a
/// failing emit returns nothing but poisons the transaction, so the next write fails with the
/// same error (and the handler stops there), or, with none left, the transaction aborts with
/// the limit itself.
fn stopped_at(ops: &[Op], i: usize, max: u64) -> AbortReason {
    stopped_by(ops, i, LimitKind::BytesWritten, max)
}

/// Like [`stopped_at`], for any limit.
fn stopped_by(ops: &[Op], i: usize, limit: LimitKind, max: u64) -> AbortReason {
    let exceeded = AbortReason::LimitExceeded { limit, max };
    match (i..ops.len()).find(|&j| !matches!(ops[j], Op::Emit(_))) {
        None => exceeded,
        Some(j) => AbortReason::User {
            service: "s".into(),
            kind: "stopped".into(),
            message: format!("op {j}: {exceeded:?}"),
        },
    }
}

// Goal: the limit is crossed at exactly the byte rmp-serde's encodings say: at the limit the
// transaction commits, one byte under it the operation that crosses it fails, for every
// operation of a transaction of puts, deltas, deletes and emits, on `SerialExecutor`.
#[test]
fn the_bytes_written_limit_is_crossed_at_the_exact_operation() {
    let ops = ops();
    let (_, svc) = build(1);
    let mut total = 0;
    for (i, op) in ops.iter().enumerate() {
        total += charge(op);
        // At exactly the bytes so far, the first `i + 1` operations commit.
        let (app, _) = build(total);
        let mut exec = SerialExecutor::new(app);
        let prefix = Ev::Run(ops[..=i].to_vec());
        assert_eq!(
            exec.run_keyed_raw(svc, &0u64, prefix, 0),
            Ok(Some(i as u32 + 1)),
            "op {i} at the limit"
        );
        // One byte less, the same operations stop at operation `i`...
        let (app, _) = build(total - 1);
        let mut exec = SerialExecutor::new(app.clone());
        let prefix = Ev::Run(ops[..=i].to_vec());
        assert_eq!(
            exec.run_keyed_raw(svc, &0u64, prefix, 0),
            Err(stopped_at(&ops[..=i], i, total - 1)),
            "op {i} one byte past the limit"
        );
        // ... and so does the whole transaction.
        let mut exec = SerialExecutor::new(app);
        let whole = Ev::Run(ops.clone());
        assert_eq!(
            exec.run_keyed_raw(svc, &0u64, whole, 0),
            Err(stopped_at(&ops, i, total - 1)),
            "op {i} one byte past the limit, in the whole transaction"
        );
    }
}

// Goal: the runtime (its parallel pass and its serial pass alike) decides the same at the
// boundary as `SerialExecutor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_crosses_the_limit_where_the_serial_executor_does() {
    let ops = ops();
    let total: u64 = ops.iter().map(charge).sum();
    let last = ops.len() - 1;
    for (max, expected) in [
        (total, Ok(Some(ops.len() as u32))),
        (total - 1, Err(stopped_at(&ops, last, total - 1))),
        (
            total - charge(&ops[last]),
            Err(stopped_at(&ops, last, total - charge(&ops[last]))),
        ),
        (
            total - charge(&ops[last]) - 1,
            Err(stopped_at(&ops, last - 1, total - charge(&ops[last]) - 1)),
        ),
    ] {
        let (app, svc) = build(max);
        let rt = Runtime::start(app, RuntimeConfig::in_memory())
            .await
            .unwrap();
        let outcome = rt
            .client()
            .submit_raw(svc, &0u64, Ev::Run(ops.clone()))
            .await
            .unwrap();
        assert_eq!(outcome.result, expected, "limit {max}");
        rt.shutdown().await;
    }
}

// Goal: each write and emit charges its limits in one order — a work unit first, then (an
// emit) the event, then its bytes — so a call that crosses several at once names the first,
// and one that crosses only the work limit stops exactly there.
#[test]
fn a_write_or_emit_charges_work_then_events_then_bytes() {
    let ops = ops();
    let (_, svc) = build(1);
    let run = |limits: TxnLimits| {
        let (app, _) = build_with(limits);
        SerialExecutor::new(app).run_keyed_raw(svc, &0u64, Ev::Run(ops.clone()), 0)
    };
    let mut bytes = 0;
    let mut emitted = 0;
    for (i, op) in ops.iter().enumerate() {
        bytes += charge(op);
        let is_emit = matches!(op, Op::Emit(_));
        emitted += u64::from(is_emit);
        // Every operation is one work unit: `i + 1` units reach op `i`, `i` stop there.
        let work_max = i as u64;
        assert_eq!(
            run(TxnLimits {
                work_max,
                ..TxnLimits::default()
            }),
            Err(stopped_by(&ops, i, LimitKind::Work, work_max)),
            "op {i} past the work limit"
        );
        // Past the work and bytes limits at once: the work limit is named.
        assert_eq!(
            run(TxnLimits {
                work_max,
                bytes_written_max: bytes - 1,
                ..TxnLimits::default()
            }),
            Err(stopped_by(&ops, i, LimitKind::Work, work_max)),
            "op {i} past the work and bytes limits"
        );
        if is_emit {
            // Past the events and bytes limits at once: the events limit is named.
            let events_max = emitted - 1;
            assert_eq!(
                run(TxnLimits {
                    emitted_events_max: events_max,
                    bytes_written_max: bytes - 1,
                    ..TxnLimits::default()
                }),
                Err(stopped_by(&ops, i, LimitKind::EmittedEvents, events_max)),
                "op {i} past the events and bytes limits"
            );
        }
    }
}
