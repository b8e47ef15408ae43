//! The ordered fallback (`Fallback::Ordered`): a transaction whose re-execution leaves its
//! first-pass partitions goes to the tail pass (`SerialPos::pass` 2) and the history still
//! equals its serial replay; fallback transactions on disjoint partitions run at the same time.

use crate::common::{Recorded, assert_matches_serial_replay};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use txn::{App, AppBuilder, AppDef, Fallback, Runtime, RuntimeConfig, SerialHints, ServiceRef};

struct FlipApp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    /// Increments the counter and sends a hit to the sink partition of the value it read's
    /// parity: which partition the chain reaches depends on what it read.
    Bump,
    /// Counts a hit in row `key` for the counter value `seen`; outputs `seen`.
    Hit { seen: u64, key: u64 },
    /// Writes `key`, then waits (up to a deadline) until every expected `Meet` has started.
    Meet { key: u64 },
}

impl App for FlipApp {
    type Event = Ev;
    type Output = u64;
}

/// How many `Meet` steps are running, and the condition they wait on.
#[derive(Default)]
struct Gate {
    started: Mutex<u32>,
    all_in: Condvar,
}

/// The longest a `Meet` waits for the other one: only a failure takes this long.
const MEET_DEADLINE: Duration = Duration::from_secs(5);

impl Gate {
    /// Registers one arrival and waits until `expected` have arrived; whether they all did.
    fn meet(&self, expected: u32) -> bool {
        let mut started = self.started.lock().unwrap();
        *started += 1;
        self.all_in.notify_all();
        let (started, _) = self
            .all_in
            .wait_timeout_while(started, MEET_DEADLINE, |n| *n < expected)
            .unwrap();
        *started >= expected
    }

    fn reset(&self) {
        *self.started.lock().unwrap() = 0;
    }
}

struct Fixture {
    app: Arc<AppDef<FlipApp>>,
    counter: ServiceRef,
    gated: ServiceRef,
    gate: Arc<Gate>,
}

/// A key `service` places in each of its partitions 0 and 1.
fn key_per_partition(service: ServiceRef) -> [u64; 2] {
    let first = |p: u32| (0u64..).find(|k| service.partition_of(k) == p).unwrap();
    [first(0), first(1)]
}

fn build() -> Fixture {
    let mut b = AppBuilder::<FlipApp>::new();
    let counter = b.service("counter", 1);
    let sink = b.service("sink", 2);
    let gated = b.service("gated", 2);
    let count = b.table::<u64, i64>(counter, "count");
    let hits = b.table::<u64, i64>(sink, "hits");
    let met = b.table::<u64, i64>(gated, "met");
    let sink_keys = key_per_partition(sink);
    b.handler(counter, move |ctx, ev| {
        let seen = ctx.get(count, &0)?.unwrap_or(0);
        ctx.put(count, 0, seen + 1)?;
        if *ev == Ev::Bump {
            let seen = seen as u64;
            let key = sink_keys[(seen % 2) as usize];
            ctx.emit_raw(sink, &key, Ev::Hit { seen, key });
        }
        Ok(())
    });
    b.handler(sink, move |ctx, ev| {
        if let Ev::Hit { seen, key } = ev {
            let n = ctx.get(hits, key)?.unwrap_or(0);
            ctx.put(hits, *key, n + 1)?;
            ctx.set_output(*seen);
        }
        Ok(())
    });
    let gate = Arc::new(Gate::default());
    let waiting = gate.clone();
    b.handler(gated, move |ctx, ev| {
        if let Ev::Meet { key } = ev {
            ctx.put(met, *key, 1)?;
            ctx.set_output(u64::from(waiting.meet(2)));
        }
        Ok(())
    });
    Fixture {
        app: b.build().expect("valid test app"),
        counter,
        gated,
        gate,
    }
}

/// Two requests per epoch, so that the two submitted together share one.
fn config(serial_hints: SerialHints) -> RuntimeConfig {
    RuntimeConfig {
        fallback: Fallback::Ordered,
        serial_hints,
        epoch_txns_max: 2,
        epoch_duration: Duration::from_millis(10),
        ..RuntimeConfig::in_memory()
    }
}

// Goal: the loser of two bumps of one epoch read the counter's old value in the first pass (and
// reached sink partition 0); re-run, it reads the new value and emits to the other sink
// partition, outside its footprint, so it is discarded and re-run in the tail pass: its
// outcome reports pass 2, and the whole history equals its serial replay in reported order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_leaving_its_footprint_runs_in_the_tail_pass() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), config(SerialHints::Off))
        .await
        .unwrap();
    let client = rt.client();
    let mut history: Vec<Recorded<FlipApp>> = Vec::new();
    for _ in 0..6 {
        let (a, b) = tokio::join!(
            client.submit_to_raw(fx.counter, 0, Ev::Bump),
            client.submit_to_raw(fx.counter, 0, Ev::Bump)
        );
        for outcome in [a.unwrap(), b.unwrap()] {
            history.push(Recorded {
                pos: outcome.serial_pos.expect("a bump settles"),
                service: fx.counter,
                partition: 0,
                event: Ev::Bump,
                result: outcome.result,
            });
        }
    }
    let n_tail = history.iter().filter(|r| r.pos.pass == 2).count();
    let n_paired = history
        .chunks(2)
        .filter(|pair| pair[0].pos.epoch == pair[1].pos.epoch)
        .count();
    assert!(n_paired > 0, "no two bumps shared an epoch");
    // Every shared epoch has exactly one loser, and it always leaves its footprint.
    assert_eq!(n_tail, n_paired, "one tail-pass run per shared epoch");
    assert!(history.iter().all(|r| r.result.is_ok()));
    let hash = client.state_hash().await.unwrap();
    let stats = rt.stats().snapshot();
    rt.shutdown().await;
    assert_eq!(stats.fallback as usize, n_paired);
    let committed = assert_matches_serial_replay(fx.app.clone(), history, hash, 0);
    assert_eq!(committed, 12);
}

// Goal: two fallback transactions on different partitions run at the same time. Each one's
// handler waits until both have started, so run one after the other the first gives up at the
// deadline and outputs 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disjoint_fallback_transactions_run_concurrently() {
    let fx = build();
    // Every request is hinted, so both go straight to the fallback.
    let hints = SerialHints::Sample { every: 1 };
    let rt = Runtime::start(fx.app.clone(), config(hints)).await.unwrap();
    let client = rt.client();
    let mut met_in_one_epoch = false;
    let [k0, k1] = key_per_partition(fx.gated);
    for _attempt in 0..5 {
        fx.gate.reset();
        let (a, b) = tokio::join!(
            client.submit_to_raw(fx.gated, 0, Ev::Meet { key: k0 }),
            client.submit_to_raw(fx.gated, 1, Ev::Meet { key: k1 })
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let (pa, pb) = (a.serial_pos.unwrap(), b.serial_pos.unwrap());
        if pa.epoch != pb.epoch {
            // Not batched together: a lone request cannot meet anyone; try again.
            continue;
        }
        assert_eq!((pa.pass, pb.pass), (1, 1), "both ran in the fallback");
        assert_eq!(
            (a.result, b.result),
            (Ok(Some(1)), Ok(Some(1))),
            "both handlers were running at the same time"
        );
        met_in_one_epoch = true;
        break;
    }
    let stats = rt.stats().snapshot();
    rt.shutdown().await;
    assert!(met_in_one_epoch, "the two requests never shared an epoch");
    assert!(stats.serial_hinted >= 2);
}
