//! Fail-safe transaction core: a careless handler can neither half-commit a transaction (by
//! dropping an error) nor take the process down (by emitting, writing or working without
//! bound), and a transaction's output follows one rule on every path that can run it.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use txn::limits::TXN_STEPS_MAX_DEFAULT;
use txn::{
    AbortReason, App, AppBuilder, AppDef, LimitKind, Outcome, Runtime, RuntimeConfig,
    SerialExecutor, SerialHints, ServiceRef, Table, TxnLimits,
};

struct FsApp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    /// Writes `good`, then tries `bad` and drops the error.
    CarelessPut {
        good: (u64, i64),
        bad: (u64, i64),
    },
    /// Writes `good` and a blob, then an ordinary write without checking the second result.
    Write {
        key: u64,
        value: i64,
    },
    /// Emits two `Spread` events every step, forever.
    Spread,
    /// Emits `count` `Noop` events in one step, ignoring everything.
    EmitLoop {
        count: u32,
    },
    /// Writes a blob of `len` bytes and drops the error.
    PutBig {
        key: u64,
        len: usize,
    },
    /// Emits an event carrying `len` bytes.
    EmitBig {
        len: usize,
    },
    /// Reads `key` `times` times, dropping every error.
    ReadMany {
        key: u64,
        times: u32,
    },
    /// Writes every key of `keys` (all of the running partition).
    Seed {
        keys: Vec<u64>,
    },
    /// Scans the whole kv table of the running partition.
    ScanAll,
    /// Reads and writes `key`, then emits `Leaf { tag: 1 }` to the last partition and
    /// `Leaf { tag: 2 }` to partition 0, in that order.
    Fork {
        key: u64,
        tail: bool,
    },
    /// Sets output `tag`; with `tail`, emits one more event (that sets no output).
    Leaf {
        tag: i64,
        tail: bool,
    },
    Payload(String),
    Noop,
}

impl App for FsApp {
    type Event = Ev;
    type Output = i64;
}

const N_PARTITIONS: u32 = 4;

struct Fx {
    app: Arc<AppDef<FsApp>>,
    svc: ServiceRef,
    kv: Table<u64, i64>,
}

fn build(limits: Option<TxnLimits>) -> Fx {
    let mut b = AppBuilder::<FsApp>::new();
    let svc = b.service("s", N_PARTITIONS);
    let kv = b.ordered_table::<u64, i64>(svc, "kv");
    b.check(kv, "non_negative", |v| *v >= 0);
    let blob = b.table::<u64, String>(svc, "blob");
    if let Some(limits) = limits {
        b.txn_limits(limits);
    }
    b.handler(svc, move |ctx, ev| {
        let here = ctx.partition();
        match ev {
            Ev::CarelessPut { good, bad } => {
                ctx.put(kv, good.0, good.1)?;
                let _ = ctx.put(kv, bad.0, bad.1);
                ctx.set_output(good.1);
            }
            Ev::Write { key, value } => {
                ctx.put(kv, *key, *value)?;
                ctx.set_output(*value);
            }
            Ev::Spread => {
                ctx.emit_to_partition_raw(svc, (here + 1) % N_PARTITIONS, Ev::Spread);
                ctx.emit_to_partition_raw(svc, (here + 2) % N_PARTITIONS, Ev::Spread);
            }
            Ev::EmitLoop { count } => {
                for _ in 0..*count {
                    ctx.emit_to_partition_raw(svc, 0, Ev::Noop);
                }
            }
            Ev::PutBig { key, len } => {
                let _ = ctx.put(blob, *key, "x".repeat(*len));
            }
            Ev::EmitBig { len } => ctx.emit_to_partition_raw(svc, 0, Ev::Payload("y".repeat(*len))),
            Ev::ReadMany { key, times } => {
                for _ in 0..*times {
                    let _ = ctx.get(kv, key);
                }
            }
            Ev::Seed { keys } => {
                for k in keys {
                    ctx.put(kv, *k, 1)?;
                }
            }
            Ev::ScanAll => {
                let rows = ctx.scan(kv, ..)?;
                ctx.set_output(rows.len() as i64);
            }
            Ev::Fork { key, tail } => {
                let seen = ctx.get(kv, key)?.unwrap_or(0);
                ctx.put(kv, *key, seen + 1)?;
                let tail = *tail;
                ctx.emit_to_partition_raw(svc, N_PARTITIONS - 1, Ev::Leaf { tag: 1, tail });
                ctx.emit_to_partition_raw(
                    svc,
                    0,
                    Ev::Leaf {
                        tag: 2,
                        tail: false,
                    },
                );
            }
            Ev::Leaf { tag, tail } => {
                ctx.set_output(*tag);
                if *tail {
                    ctx.emit_to_partition_raw(svc, 0, Ev::Noop);
                }
            }
            Ev::Payload(_) | Ev::Noop => {}
        }
        Ok(())
    });
    Fx {
        app: b.build().expect("valid app"),
        svc,
        kv,
    }
}

/// The `n`-th key (from 0) owned by `partition` of `svc`.
fn key_in(svc: ServiceRef, partition: u32, n: usize) -> u64 {
    (0u64..)
        .filter(|k| svc.partition_of(k) == partition)
        .nth(n)
        .expect("keys of every partition exist")
}

/// The committed kv value of `key`, by snapshot query.
async fn read(rt: &Runtime<FsApp>, fx: &Fx, key: u64) -> Option<i64> {
    let kv = fx.kv;
    let owner = fx.svc.partition_of(&key);
    let seen = rt
        .client()
        .query(&[fx.svc], move |v| {
            (v.partition() == owner).then(|| v.get(kv, &key).copied())
        })
        .await
        .unwrap();
    seen.into_iter().flatten().flatten().next()
}

/// Submits every event at once (each to the partition owning `key`), so they share epochs.
async fn submit_all(rt: &Runtime<FsApp>, fx: &Fx, events: Vec<(u64, Ev)>) -> Vec<Outcome<i64>> {
    let mut set = JoinSet::new();
    for (i, (key, ev)) in events.into_iter().enumerate() {
        let client = rt.client();
        let svc = fx.svc;
        set.spawn(async move { (i, client.submit_raw(svc, &key, ev).await.unwrap()) });
    }
    let mut outcomes: Vec<(usize, Outcome<i64>)> = set.join_all().await;
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

fn limit_of(result: &Result<Option<i64>, AbortReason>) -> Option<(LimitKind, u64)> {
    match result {
        Err(AbortReason::LimitExceeded { limit, max }) => Some((*limit, *max)),
        _ => None,
    }
}

// Goal: a handler that drops the error of a put violating a check, or of a put to another
// partition's key, and returns Ok, aborts whole: its other write is not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_error_aborts_the_whole_transaction() {
    let fx = build(None);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let good = key_in(fx.svc, 1, 0);
    let same_partition = key_in(fx.svc, 1, 1);
    let other_partition = key_in(fx.svc, 2, 0);
    let violating = Ev::CarelessPut {
        good: (good, 5),
        bad: (same_partition, -1),
    };
    let foreign = Ev::CarelessPut {
        good: (good, 6),
        bad: (other_partition, 1),
    };
    let client = rt.client();
    let outcome = client
        .submit_raw(fx.svc, &good, violating.clone())
        .await
        .unwrap();
    assert!(
        matches!(&outcome.result, Err(AbortReason::Constraint { message, .. }) if message.contains("non_negative")),
        "{:?}",
        outcome.result
    );
    let outcome = client
        .submit_raw(fx.svc, &good, foreign.clone())
        .await
        .unwrap();
    assert!(
        matches!(outcome.result, Err(AbortReason::WrongPartition { .. })),
        "{:?}",
        outcome.result
    );
    assert_eq!(read(&rt, &fx, good).await, None, "the good write was kept");

    let mut serial = SerialExecutor::new(fx.app.clone());
    let result = serial.run_keyed_raw(fx.svc, &good, violating, 0);
    assert!(
        matches!(result, Err(AbortReason::Constraint { .. })),
        "{result:?}"
    );
    let result = serial.run_keyed_raw(fx.svc, &good, foreign, 0);
    assert!(
        matches!(result, Err(AbortReason::WrongPartition { .. })),
        "{result:?}"
    );
    let kv = fx.kv;
    let kept = serial.query(&[fx.svc], move |v| v.get(kv, &good).copied());
    assert_eq!(kept.into_iter().flatten().next(), None);
    rt.shutdown().await;
}

// Goal: a transaction whose steps each emit two events is aborted by the steps limit, while
// the ordinary transactions of the same epochs commit and the runtime keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_two_per_step_is_stopped_by_the_steps_limit() {
    let fx = build(None);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    for round in 0..3u64 {
        let mut events: Vec<(u64, Ev)> = vec![(round, Ev::Spread), (round + 7, Ev::Spread)];
        events.extend((0..40).map(|i| {
            let key = 100 * round + i;
            let value = (round * 1000 + i) as i64;
            (key, Ev::Write { key, value })
        }));
        let outcomes = submit_all(&rt, &fx, events).await;
        for o in &outcomes[..2] {
            assert_eq!(
                limit_of(&o.result),
                Some((LimitKind::Steps, TXN_STEPS_MAX_DEFAULT)),
                "{:?}",
                o.result
            );
        }
        for o in &outcomes[2..] {
            assert!(o.committed(), "{:?}", o.result);
        }
    }
    for round in 0..3u64 {
        for i in 0..40 {
            let expected = (round * 1000 + i) as i64;
            assert_eq!(read(&rt, &fx, 100 * round + i).await, Some(expected));
        }
    }
    let client = rt.client();
    let alive = client.submit_raw(fx.svc, &9u64, Ev::Write { key: 9, value: 9 });
    assert!(alive.await.unwrap().committed());
    rt.shutdown().await;
}

// Goal: the emitted-events, bytes-written and work limits each abort only the transaction
// that exceeds them (with the limit named), on the runtime and on SerialExecutor alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_bytes_and_work_limits_abort_only_their_transaction() {
    let limits = TxnLimits {
        steps_max: 100_000,
        emitted_events_max: 100,
        bytes_written_max: 10_000,
        work_max: 1_000,
    };
    let fx = build(Some(limits));
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let seeded: Vec<u64> = (0..1_200).map(|n| key_in(fx.svc, 0, n)).collect();
    let seeds: Vec<(u64, Ev)> = seeded
        .chunks(400)
        .map(|keys| {
            (
                keys[0],
                Ev::Seed {
                    keys: keys.to_vec(),
                },
            )
        })
        .collect();
    let mut serial = SerialExecutor::new(fx.app.clone());
    for (key, seed) in &seeds {
        assert!(serial.run_keyed_raw(fx.svc, key, seed.clone(), 0).is_ok());
    }
    for o in submit_all(&rt, &fx, seeds).await {
        assert!(o.committed(), "{:?}", o.result);
    }
    let runaway = vec![
        (
            1,
            Ev::EmitLoop { count: 10_000 },
            LimitKind::EmittedEvents,
            100,
        ),
        (
            2,
            Ev::PutBig {
                key: 2,
                len: 20_000,
            },
            LimitKind::BytesWritten,
            10_000,
        ),
        (
            3,
            Ev::EmitBig { len: 20_000 },
            LimitKind::BytesWritten,
            10_000,
        ),
        (
            4,
            Ev::ReadMany {
                key: 4,
                times: 5_000,
            },
            LimitKind::Work,
            1_000,
        ),
        (seeded[0], Ev::ScanAll, LimitKind::Work, 1_000),
    ];
    let mut events: Vec<(u64, Ev)> = runaway.iter().map(|r| (r.0, r.1.clone())).collect();
    events.extend((0..30).map(|i| {
        (
            5_000 + i,
            Ev::Write {
                key: 5_000 + i,
                value: 1,
            },
        )
    }));
    let outcomes = submit_all(&rt, &fx, events).await;
    for ((key, ev, limit, max), o) in runaway.into_iter().zip(&outcomes) {
        assert_eq!(
            limit_of(&o.result),
            Some((limit, max)),
            "{ev:?}: {:?}",
            o.result
        );
        let result = serial.run_keyed_raw(fx.svc, &key, ev.clone(), 0);
        assert_eq!(
            limit_of(&result),
            Some((limit, max)),
            "serially, {ev:?}: {result:?}"
        );
    }
    for o in &outcomes[5..] {
        assert!(o.committed(), "{:?}", o.result);
    }
    assert_eq!(read(&rt, &fx, 5_029).await, Some(1));
    rt.shutdown().await;
}

// Goal: a transaction whose two parallel steps both set an output returns the output of the
// step emitted last, whether it ran in the parallel pass or lost a conflict and ran in the
// serial fallback, and on SerialExecutor; also when one of them emits one more step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_follows_one_rule_on_every_path() {
    let fx = build(None);
    let config = RuntimeConfig {
        // Two twins fill an epoch: they conflict on their key, so one runs in the fallback.
        epoch_txns_max: 2,
        epoch_duration: Duration::from_millis(10),
        serial_hints: SerialHints::Off,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let mut serial = SerialExecutor::new(fx.app.clone());
    for (key, tail) in [(11u64, false), (12, true), (13, false), (14, true)] {
        let fork = Ev::Fork { key, tail };
        let outcomes = submit_all(&rt, &fx, vec![(key, fork.clone()), (key, fork.clone())]).await;
        let mut passes: Vec<u8> = outcomes
            .iter()
            .map(|o| o.serial_pos.expect("decided").pass)
            .collect();
        passes.sort();
        assert_eq!(passes, vec![0, 1], "one twin runs in each pass");
        for o in &outcomes {
            assert_eq!(
                o.result,
                Ok(Some(2)),
                "tail {tail}, pass {:?}",
                o.serial_pos
            );
        }
        assert_eq!(serial.run_keyed_raw(fx.svc, &key, fork, 0), Ok(Some(2)));
    }
    rt.shutdown().await;
}
