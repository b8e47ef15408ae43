//! Randomized careless handlers against a reference model: chains of ordinary reads and
//! writes mixed with handlers that drop errors, panic, emit without bound, write oversized
//! values or loop on reads, submitted concurrently over many epochs with conflicts. A plain
//! `BTreeMap` model, sharing no execution code with the runtime, applies in the reported
//! serial order exactly the writes each transaction meant: every committed transaction must be
//! applied whole (with the reads the model predicts), every other not at all, and the runtime
//! must keep serving throughout. Replaying the log after a restart rebuilds the same state.
//!
//! `TXN_TEST_SEED=<n>` replays a workload; `VMSDB_SLOW_TESTS=1` runs many more rounds.

use crate::common;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinSet;
use txn::storage::MemoryStorage;
use txn::{
    AbortReason, App, AppBuilder, AppDef, Fallback, LimitKind, Outcome, Runtime, RuntimeConfig,
    ServiceRef, Table, TxnLimits,
};

struct CarelessApp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    /// Reads the key (-1 when missing) into the output.
    Read,
    /// Writes the value, checking the result.
    Write(i64),
    /// Writes a valid value and drops the result.
    CarelessWrite(i64),
    /// Writes a value the table's check rejects and drops the error.
    BadValue,
    /// Writes a key of another partition and drops the error.
    Foreign(u64),
    Panic,
    /// Emits two events that each emit two more, without end.
    SpreadForever,
    /// Emits this many events in one step.
    EmitLoop(u32),
    /// Writes a blob of this many bytes and drops the error.
    Oversized(usize),
    /// Reads the key this many times, dropping every error.
    ReadLoop(u32),
    UserAbort,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Op {
    /// The key the op works on; the op runs in the partition that owns it.
    key: u64,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Chain {
        ops: Vec<Op>,
        idx: usize,
        reads: Vec<i64>,
    },
    Spread,
    Sink,
}

impl App for CarelessApp {
    type Event = Ev;
    type Output = Vec<i64>;
}

const N_PARTITIONS: u32 = 4;
const N_KEYS: u64 = 24;
const LIMITS: TxnLimits = TxnLimits {
    steps_max: 200,
    emitted_events_max: 400,
    bytes_written_max: 32 << 10,
    work_max: 2_000,
};
const PANIC_MESSAGE: &str = "careless handler panics";

struct Fx {
    app: Arc<AppDef<CarelessApp>>,
    svc: ServiceRef,
    kv: Table<u64, i64>,
    blob: Table<u64, String>,
}

fn build() -> Fx {
    let mut b = AppBuilder::<CarelessApp>::new();
    let svc = b.service("s", N_PARTITIONS);
    let kv = b.ordered_table::<u64, i64>(svc, "kv");
    b.check(kv, "non_negative", |v| *v >= 0);
    let blob = b.table::<u64, String>(svc, "blob");
    b.txn_limits(LIMITS);
    b.handler(svc, move |ctx, ev| {
        let here = ctx.partition();
        let Ev::Chain { ops, idx, reads } = ev else {
            if *ev == Ev::Spread {
                ctx.emit_to_partition_raw(svc, (here + 1) % N_PARTITIONS, Ev::Spread);
                ctx.emit_to_partition_raw(svc, (here + 3) % N_PARTITIONS, Ev::Spread);
            }
            return Ok(());
        };
        let op = &ops[*idx];
        let mut reads = reads.clone();
        match &op.kind {
            Kind::Read => reads.push(ctx.get(kv, &op.key)?.unwrap_or(-1)),
            Kind::Write(v) => ctx.put(kv, op.key, *v)?,
            Kind::CarelessWrite(v) => {
                let _ = ctx.put(kv, op.key, *v);
            }
            Kind::BadValue => {
                let _ = ctx.put(kv, op.key, -1);
            }
            Kind::Foreign(key) => {
                let _ = ctx.put(kv, *key, 1);
            }
            Kind::Panic => panic!("{PANIC_MESSAGE}"),
            Kind::SpreadForever => {
                ctx.emit_to_partition_raw(svc, (here + 1) % N_PARTITIONS, Ev::Spread);
                ctx.emit_to_partition_raw(svc, (here + 2) % N_PARTITIONS, Ev::Spread);
            }
            Kind::EmitLoop(n) => {
                for _ in 0..*n {
                    ctx.emit_to_partition_raw(svc, here, Ev::Sink);
                }
            }
            Kind::Oversized(len) => {
                let _ = ctx.put(blob, op.key, "z".repeat(*len));
            }
            Kind::ReadLoop(n) => {
                for _ in 0..*n {
                    let _ = ctx.get(kv, &op.key);
                }
            }
            Kind::UserAbort => return Err(ctx.abort("the handler said no")),
        }
        // Whatever happened above, a careless handler carries on.
        match ops.get(idx + 1) {
            Some(next) => ctx.emit_raw(
                svc,
                &next.key,
                Ev::Chain {
                    ops: ops.clone(),
                    idx: idx + 1,
                    reads,
                },
            ),
            None => ctx.set_output(reads),
        }
        Ok(())
    });
    Fx {
        app: b.build().expect("valid app"),
        svc,
        kv,
        blob,
    }
}

/// A key owned by another partition than `key`'s.
fn foreign_to(svc: ServiceRef, key: u64) -> u64 {
    let home = svc.partition_of(&key);
    (0u64..)
        .find(|k| svc.partition_of(k) != home)
        .expect("there are other partitions")
}

/// A chain of 1..=5 ops over a few keys; about a third of the chains carry one careless op
/// that must abort them.
fn random_chain(rng: &mut ChaCha8Rng, svc: ServiceRef) -> Vec<Op> {
    let n_ops = rng.random_range(1..=5);
    let mut ops: Vec<Op> = (0..n_ops)
        .map(|_| {
            let key = rng.random_range(0..N_KEYS);
            let kind = match rng.random_range(0..3) {
                0 => Kind::Read,
                1 => Kind::Write(rng.random_range(0..1_000)),
                _ => Kind::CarelessWrite(rng.random_range(0..1_000)),
            };
            Op { key, kind }
        })
        .collect();
    if rng.random_bool(0.35) {
        let key = rng.random_range(0..N_KEYS);
        let kind = match rng.random_range(0..8) {
            0 => Kind::BadValue,
            1 => Kind::Foreign(foreign_to(svc, key)),
            2 => Kind::Panic,
            3 => Kind::SpreadForever,
            4 => Kind::EmitLoop(rng.random_range(500..5_000)),
            5 => Kind::Oversized(rng.random_range(40_000..100_000)),
            6 => Kind::ReadLoop(rng.random_range(3_000..10_000)),
            _ => Kind::UserAbort,
        };
        let at = rng.random_range(0..=ops.len());
        ops.insert(at, Op { key, kind });
    }
    ops
}

/// What the model expects of a chain: the abort its careless op must cause, if any.
fn expected_abort(ops: &[Op]) -> Option<fn(&AbortReason) -> bool> {
    fn limit(reason: &AbortReason, kind: LimitKind) -> bool {
        matches!(reason, AbortReason::LimitExceeded { limit, max }
            if *limit == kind && *max == LIMITS.max(kind))
    }
    ops.iter()
        .find_map(|op| -> Option<fn(&AbortReason) -> bool> {
            match op.kind {
                Kind::Read | Kind::Write(_) | Kind::CarelessWrite(_) => None,
                Kind::BadValue => Some(|r| matches!(r, AbortReason::Constraint { .. })),
                Kind::Foreign(_) => Some(|r| matches!(r, AbortReason::WrongPartition { .. })),
                Kind::Panic => Some(|r| matches!(r, AbortReason::HandlerPanicked { .. })),
                Kind::SpreadForever => Some(|r| limit(r, LimitKind::Steps)),
                Kind::EmitLoop(_) => Some(|r| limit(r, LimitKind::EmittedEvents)),
                Kind::Oversized(_) => Some(|r| limit(r, LimitKind::BytesWritten)),
                Kind::ReadLoop(_) => Some(|r| limit(r, LimitKind::Work)),
                Kind::UserAbort => Some(|r| matches!(r, AbortReason::User { .. })),
            }
        })
}

/// The reference model: applies a committed chain's writes to `model` in op order and returns
/// the reads it makes, as the chain's output.
fn apply_to_model(model: &mut BTreeMap<u64, i64>, ops: &[Op]) -> Vec<i64> {
    let mut reads = Vec::new();
    for op in ops {
        match op.kind {
            Kind::Read => reads.push(model.get(&op.key).copied().unwrap_or(-1)),
            Kind::Write(v) | Kind::CarelessWrite(v) => {
                model.insert(op.key, v);
            }
            _ => unreachable!("a chain with a careless op never commits in the model"),
        }
    }
    reads
}

/// Submits every chain at once, so they share epochs and conflict.
async fn submit_round(
    rt: &Runtime<CarelessApp>,
    svc: ServiceRef,
    chains: Vec<Vec<Op>>,
) -> Vec<(Vec<Op>, Outcome<Vec<i64>>)> {
    let mut set = JoinSet::new();
    for ops in chains {
        let client = rt.client();
        set.spawn(async move {
            let first = ops[0].key;
            let ev = Ev::Chain {
                ops: ops.clone(),
                idx: 0,
                reads: Vec::new(),
            };
            let outcome = client.submit_raw(svc, &first, ev).await;
            (ops, outcome.expect("the runtime answers every request"))
        });
    }
    set.join_all().await
}

/// Every committed kv row, and the number of blob rows.
async fn runtime_state(rt: &Runtime<CarelessApp>, fx: &Fx) -> (BTreeMap<u64, i64>, usize) {
    let (kv, blob) = (fx.kv, fx.blob);
    let parts = rt
        .client()
        .query(&[fx.svc], move |v| {
            let rows: Vec<(u64, i64)> = v.iter(kv).map(|(k, x)| (*k, *x)).collect();
            (rows, v.len(blob))
        })
        .await
        .unwrap();
    let n_blobs = parts.iter().map(|(_, n)| n).sum();
    (
        parts.into_iter().flat_map(|(rows, _)| rows).collect(),
        n_blobs,
    )
}

/// Silences the intended handler panics (the runtime contains them); others still print.
fn quiet_intended_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let intended = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m == PANIC_MESSAGE);
        if !intended {
            default(info);
        }
    }));
}

// Goal: under careless handlers, conflicts and many epochs, every committed transaction is
// applied whole, every aborted one not at all, each abort names the careless op's reason, and
// the runtime keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn careless_handlers_never_half_commit_or_stop_the_runtime() {
    let seed = common::seed("careless_handlers");
    let slow = std::env::var_os("VMSDB_SLOW_TESTS").is_some();
    let (n_rounds, per_round) = if slow { (60, 300) } else { (6, 120) };
    let mut rng = common::rng(seed);
    quiet_intended_panics();
    let fx = build();
    let fallbacks = [Fallback::Serial, Fallback::NextEpoch, Fallback::Ordered];
    let fallback = fallbacks[rng.random_range(0..fallbacks.len())];
    let config = RuntimeConfig {
        fallback,
        storage: Arc::new(MemoryStorage::new()),
        // Never checkpoint: the restart below replays every epoch.
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let mut history = Vec::new();
    for _ in 0..n_rounds {
        let chains = (0..per_round)
            .map(|_| random_chain(&mut rng, fx.svc))
            .collect();
        history.extend(submit_round(&rt, fx.svc, chains).await);
    }
    history.sort_by_key(|(_, o)| o.serial_pos.expect("every request is decided"));

    let mut model: BTreeMap<u64, i64> = BTreeMap::new();
    let (mut n_committed, mut n_aborted) = (0, 0);
    for (ops, outcome) in &history {
        let at = outcome.serial_pos;
        match expected_abort(ops) {
            Some(matches_reason) => {
                n_aborted += 1;
                let reason = outcome.result.as_ref().err();
                assert!(
                    reason.is_some_and(matches_reason),
                    "seed {seed}: {ops:?} at {at:?} ended {:?}",
                    outcome.result
                );
            }
            None => {
                n_committed += 1;
                let reads = apply_to_model(&mut model, ops);
                assert_eq!(
                    outcome.result,
                    Ok(Some(reads)),
                    "seed {seed}: {ops:?} at {at:?}"
                );
            }
        }
    }
    let (rows, n_blobs) = runtime_state(&rt, &fx).await;
    assert_eq!(
        rows, model,
        "seed {seed}: final state differs from the model"
    );
    assert_eq!(n_blobs, 0, "seed {seed}: an oversized blob was committed");
    assert!(
        n_committed > 0 && n_aborted > 0,
        "seed {seed}: a one-sided workload"
    );

    let alive = vec![vec![Op {
        key: 1,
        kind: Kind::Write(7),
    }]];
    let (_, outcome) = submit_round(&rt, fx.svc, alive).await.remove(0);
    assert!(outcome.committed(), "seed {seed}: {:?}", outcome.result);
    eprintln!("careless_handlers: {n_committed} committed, {n_aborted} aborted ({fallback:?})");
    let before = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let after = rt.client().state_hash().await.unwrap();
    assert_eq!(
        after, before,
        "seed {seed}: replaying the log rebuilt another state"
    );
    rt.shutdown().await;
}
