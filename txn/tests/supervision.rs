//! Supervision: a panic outside any handler (here in the decide phase, which formats a hot
//! key's `Debug` text for conflict attribution) loses its partition's state, which its actor
//! owns alone. The runtime must then stop accepting writes with an error (never hang), keep
//! every acknowledged transaction in the log, and recover it all on restart.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use txn::{
    App, AppBuilder, AppDef, Runtime, RuntimeConfig, SerialHints, ServiceRef, Table, TxnError,
};

/// Set while a `Fuse` key's `Debug` must panic; the first panic clears it, so a restarted
/// runtime replays the same log without the bug.
static ARMED: AtomicBool = AtomicBool::new(false);

/// A key whose `Debug` text panics once while armed: user code the decide phase runs outside
/// any handler.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Fuse(u64);

impl std::fmt::Debug for Fuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if ARMED.swap(false, Ordering::AcqRel) {
            panic!("the Debug text of key {} blew its fuse", self.0);
        }
        write!(f, "Fuse({})", self.0)
    }
}

struct FuseApp;

impl App for FuseApp {
    /// Increment the row of this key.
    type Event = u64;
    type Output = ();
}

fn build() -> (Arc<AppDef<FuseApp>>, ServiceRef, Table<Fuse, i64>) {
    let mut b = AppBuilder::<FuseApp>::new();
    let s = b.service("counters", 1);
    let table = b.table::<Fuse, i64>(s, "kv");
    b.handler(s, move |ctx, key| {
        let key = Fuse(*key);
        let value = ctx.get(table, &key)?.unwrap_or(0);
        ctx.put(table, key, value + 1)?;
        Ok(())
    });
    (b.build().expect("valid app"), s, table)
}

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        // Long epochs and no hints: concurrent increments of one key meet in the parallel pass,
        // where the decide phase attributes the loss to the key.
        epoch_duration: Duration::from_millis(5),
        serial_hints: SerialHints::Off,
        ..RuntimeConfig::durable(dir).expect("open the store")
    }
}

/// Submits `n` increments of `key` at once; returns how many were acknowledged as committed
/// and how many failed with an error (every submission must end one way or the other).
async fn increments(rt: &Runtime<FuseApp>, s: ServiceRef, key: u64, n: u64) -> (u64, u64) {
    let client = rt.client();
    let submissions: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.submit_raw(s, &key, key).await })
        })
        .collect();
    let (mut committed, mut failed) = (0, 0);
    for submission in submissions {
        match submission.await.expect("the submitting task ends") {
            Ok(outcome) => {
                assert!(outcome.committed(), "{outcome:?}");
                committed += 1;
            }
            // Accepted, maybe logged: the caller may resubmit it by id.
            Err(TxnError::OutcomeUnknown { .. }) => failed += 1,
            Err(e) => panic!("an accepted request failed with {e:?}"),
        }
    }
    (committed, failed)
}

async fn value_of(rt: &Runtime<FuseApp>, s: ServiceRef, table: Table<Fuse, i64>, key: u64) -> i64 {
    let values = rt
        .client()
        .query(&[s], move |view| view.get(table, &Fuse(key)).copied())
        .await
        .expect("the query runs");
    values.into_iter().flatten().sum()
}

// Goal: a panic outside any handler fails the epoch with an error instead of a hang, later
// writes are refused, and a restart recovers every acknowledged transaction from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_outside_handlers_stops_writes_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (app, s, table) = build();
    let rt = Runtime::start(app.clone(), config(dir.path()))
        .await
        .unwrap();
    // Acknowledged before the bug: one at a time, so they never conflict.
    for _ in 0..10 {
        let outcome = rt.client().submit_raw(s, &1u64, 1u64).await.unwrap();
        assert!(outcome.committed(), "{outcome:?}");
    }

    ARMED.store(true, Ordering::Release);
    // Whether two increments share an epoch depends on timing; the rounds stop at the first
    // conflict, which blows the fuse in the decide phase.
    let mut acknowledged = 0;
    let mut failed = 0;
    for _ in 0..50 {
        let (c, f) = increments(&rt, s, 7, 64).await;
        (acknowledged, failed) = (acknowledged + c, failed + f);
        if !ARMED.load(Ordering::Acquire) {
            break;
        }
    }
    assert!(
        !ARMED.load(Ordering::Acquire),
        "no conflict in 50 rounds of 64 concurrent increments"
    );
    assert!(
        failed > 0,
        "the epoch that panicked answered no one with an error"
    );

    // The partition's state is lost: writes are refused with an error, not left waiting.
    let refused = rt.client().submit_raw(s, &1u64, 1u64).await;
    assert!(
        matches!(refused, Err(TxnError::OutcomeUnknown { .. })),
        "{refused:?}"
    );
    rt.shutdown().await;

    // The log holds every acknowledged transaction (and maybe some whose outcome was unknown).
    let rt = Runtime::start(app, config(dir.path())).await.unwrap();
    assert_eq!(value_of(&rt, s, table, 1).await, 10);
    let seven = value_of(&rt, s, table, 7).await;
    assert!(
        seven >= acknowledged as i64 && seven <= (acknowledged + failed) as i64,
        "key 7 holds {seven}, {acknowledged} acknowledged, {failed} failed"
    );
    rt.shutdown().await;
}
