//! Replies ahead of the epoch's end (`RuntimeConfig::early_replies`): a transaction the serial
//! pass has run is answered while the pass still runs later ones, and answering early changes
//! no outcome, no serial position and no state, live or replayed from the log.

use crate::common;

use crate::common::*;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;
use txn::storage::{MemoryStorage, Storage};
use txn::{App, AppBuilder, AppDef, Request, Runtime, RuntimeConfig, SerialHints, ServiceRef};

struct GateApp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    /// Writes row `key`.
    Bump { key: u64 },
    /// Waits (up to `OPEN_DEADLINE`) until the test opens the gate; outputs 1 if it was opened.
    Wait,
}

impl App for GateApp {
    type Event = Ev;
    type Output = u64;
}

/// Opened by the test once the earlier transactions' replies are in.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

/// The longest a `Wait` waits for the gate: only a failure takes this long.
const OPEN_DEADLINE: Duration = Duration::from_secs(5);

impl Gate {
    fn wait_open(&self) -> bool {
        let open = self.open.lock().unwrap();
        let (open, _) = self
            .opened
            .wait_timeout_while(open, OPEN_DEADLINE, |open| !*open)
            .unwrap();
        *open
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

struct Fixture {
    app: Arc<AppDef<GateApp>>,
    cells: ServiceRef,
    gate: Arc<Gate>,
}

fn build() -> Fixture {
    let mut b = AppBuilder::<GateApp>::new();
    let cells = b.service("cells", 1);
    let rows = b.table::<u64, i64>(cells, "rows");
    let gate = Arc::new(Gate::default());
    let waiting = gate.clone();
    b.handler(cells, move |ctx, ev| {
        match ev {
            Ev::Bump { key } => ctx.put(rows, *key, 1)?,
            Ev::Wait => ctx.set_output(u64::from(waiting.wait_open())),
        }
        Ok(())
    });
    Fixture {
        app: b.build().expect("valid test app"),
        cells,
        gate,
    }
}

/// Polls `future` once, so that a submission's request is in the sequencer's queue before the
/// next one is made.
fn enqueue<F: Future>(future: &mut Pin<Box<F>>) {
    let _ = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
}

/// One try: `SERIAL_PASS_SETTLE_TXNS` bumps and a `Wait` behind them, all sent to the serial
/// pass; the gate opens once the bumps' replies are in. Returns whether all shared one epoch and
/// what the `Wait` output.
async fn bumps_then_wait(fx: &Fixture, early_replies: bool) -> (bool, u64) {
    let n_bumps = txn::limits::SERIAL_PASS_SETTLE_TXNS;
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            serial_hints: SerialHints::Sample { every: 1 },
            epoch_txns_max: n_bumps + 1,
            epoch_duration: Duration::from_micros(txn::limits::EPOCH_DURATION_US_MAX),
            epoch_quiet_close_txns: 0,
            early_replies,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    let client = rt.client();
    fx.gate.set(false);
    let bumps: Vec<Request<GateApp>> = (0..n_bumps as u64)
        .map(|key| Request::raw(fx.cells, 0, Ev::Bump { key }))
        .collect();
    let mut bumps = Box::pin(client.submit_many(bumps));
    enqueue(&mut bumps);
    let mut wait = Box::pin(client.submit_request(Request::raw(fx.cells, 0, Ev::Wait)));
    enqueue(&mut wait);
    let bumped = bumps.await;
    fx.gate.set(true);
    let waited = wait.await.unwrap();
    let epoch_of = |o: &txn::Outcome<u64>| o.serial_pos.expect("final").epoch;
    let wait_epoch = epoch_of(&waited);
    let mut one_epoch = true;
    for outcome in bumped {
        let outcome = outcome.unwrap();
        assert!(outcome.result.is_ok());
        assert_eq!(outcome.serial_pos.unwrap().pass, 1, "hinted: serial pass");
        one_epoch &= epoch_of(&outcome) == wait_epoch;
    }
    rt.shutdown().await;
    (one_epoch, waited.result.unwrap().unwrap_or(0))
}

// Goal: the serial pass's first `SERIAL_PASS_SETTLE_TXNS` transactions are answered while the
// pass still runs the next one: that one waits for their replies, which never come before it
// ends if replies wait for the epoch's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_pass_replies_leave_while_the_pass_runs() {
    let fx = build();
    // The timer could split the submissions over two epochs on a loaded machine; then the try
    // says nothing and is made again.
    for _ in 0..5 {
        let (one_epoch, opened) = bumps_then_wait(&fx, true).await;
        if one_epoch {
            assert_eq!(
                opened, 1,
                "the Wait ran to its deadline: the earlier replies waited for the pass's end"
            );
            return;
        }
    }
    panic!("the bumps and the Wait never shared an epoch in 5 tries");
}

/// Runs `requests` as one batch (cut into epochs by size, so the same epochs every run) on a
/// runtime with `early_replies`, on `storage`; returns the history and the state hash.
async fn run_batch(
    fx: &Arc<common::Fixture>,
    requests: &[txn::Request<ChainApp>],
    storage: MemoryStorage,
    early_replies: bool,
) -> (Vec<Recorded<ChainApp>>, u64) {
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(storage),
            epoch_txns_max: 150,
            early_replies,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    let client = rt.client();
    let outcomes = client.submit_many(requests.iter().cloned()).await;
    let mut history = Vec::new();
    for (request, outcome) in requests.iter().zip(outcomes) {
        let outcome = outcome.unwrap();
        let (service, partition, event) = request.clone().into_parts();
        history.push(Recorded {
            pos: outcome
                .serial_pos
                .expect("no transaction exhausts its retries"),
            service,
            partition,
            event,
            result: outcome.result,
        });
    }
    let hash = client.state_hash().await.unwrap();
    rt.shutdown().await;
    (history, hash)
}

// Goal: on a contended random workload (most transactions in the serial pass), answering early
// gives every request the same outcome and serial position as answering at the epoch's end,
// the history equals its serial replay, and replaying the log gives the same state hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_replies_change_no_outcome_and_replay_agrees() {
    let seed = seed("serial-pass-replies");
    let fx = Arc::new(common::build(3, 2));
    let mut rng = rng(seed);
    let requests: Vec<txn::Request<ChainApp>> = (0..900)
        .map(|_| {
            let ev = random_chain(&mut rng, 3, 6, 4);
            let (svc, key) = fx.first_target(&ev);
            Request::raw(svc, svc.partition_of(&key), ev)
        })
        .collect();
    let storage = MemoryStorage::new();
    let (early, early_hash) = run_batch(&fx, &requests, storage.clone(), true).await;
    let (late, late_hash) = run_batch(&fx, &requests, MemoryStorage::new(), false).await;
    let n_serial = early.iter().filter(|r| r.pos.pass == 1).count();
    assert!(
        n_serial * 2 > early.len(),
        "seed {seed}: contended, most run serially ({n_serial} of {})",
        early.len()
    );
    for (i, (e, l)) in early.iter().zip(&late).enumerate() {
        assert_eq!(
            (e.pos, &e.result),
            (l.pos, &l.result),
            "seed {seed}: request #{i} ends differently with early replies"
        );
    }
    assert_eq!(early_hash, late_hash, "seed {seed}: state differs");
    assert_matches_serial_replay(fx.app.clone(), early, early_hash, seed);
    let (_, replayed_hash) = run_batch(&fx, &[], copy_of_log(&storage), true).await;
    assert_eq!(
        replayed_hash, early_hash,
        "seed {seed}: replay of the log gives another state"
    );
    assert!(
        storage.last_epoch().unwrap().unwrap_or(0) >= 6,
        "seed {seed}: several epochs"
    );
}
