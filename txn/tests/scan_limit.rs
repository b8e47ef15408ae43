//! Limited scans (`scan_limit`, `scan_first`): they merge the transaction's own writes, and
//! they conflict only with writes up to the last row they returned.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use txn::storage::MemoryStorage;
use txn::{App, AppBuilder, Runtime, RuntimeConfig, SerialHints, ServiceRef};

struct Queue;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    Insert(u64),
    /// Inserts `insert`, deletes `delete`, then returns the first `limit` keys of 0..1000.
    WriteThenScan {
        insert: u64,
        delete: u64,
        limit: usize,
    },
    /// Returns the first key of 0..1000.
    First,
}

impl App for Queue {
    type Event = Ev;
    type Output = Vec<u64>;
}

fn app() -> (Arc<txn::AppDef<Queue>>, ServiceRef) {
    let mut b = AppBuilder::<Queue>::new();
    let q = b.service("queue", 1);
    let rows = b.ordered_table::<u64, u64>(q, "rows");
    b.handler(q, move |ctx, ev| {
        match ev {
            Ev::Insert(k) => ctx.put(rows, *k, *k)?,
            Ev::WriteThenScan {
                insert,
                delete,
                limit,
            } => {
                ctx.put(rows, *insert, *insert)?;
                ctx.delete(rows, delete)?;
                let keys = ctx.scan_limit(rows, 0..1000, *limit)?;
                ctx.set_output(keys.into_iter().map(|(k, _)| k).collect());
            }
            Ev::First => {
                let first = ctx.scan_first(rows, 0..1000)?;
                ctx.set_output(first.into_iter().map(|(k, _)| k).collect());
            }
        }
        Ok(())
    });
    (b.build().unwrap(), q)
}

async fn start() -> (Runtime<Queue>, ServiceRef) {
    let (app, q) = app();
    let config = RuntimeConfig {
        storage: Arc::new(MemoryStorage::new()),
        epoch_duration: Duration::from_millis(10),
        serial_hints: SerialHints::Off,
        ..RuntimeConfig::in_memory()
    };
    (Runtime::start(app, config).await.unwrap(), q)
}

// Goal: a limited scan sees the transaction's own inserts and not its own deletes, in key
// order, and stops at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_scan_merges_own_writes_in_key_order() {
    let (rt, q) = start().await;
    let c = rt.client();
    for k in [10u64, 20, 30, 40] {
        assert!(
            c.submit_raw(q, &0u64, Ev::Insert(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let ev = Ev::WriteThenScan {
        insert: 15,
        delete: 20,
        limit: 3,
    };
    let out = c.submit_raw(q, &0u64, ev).await.unwrap();
    assert_eq!(out.result.unwrap(), Some(vec![10, 15, 30]));
    rt.shutdown().await;
}

/// Runs `Insert(insert)` and then `First` in the same epoch (the insert with the lower TID)
/// over committed rows {10, 20}; returns what `First` saw and whether it had to be re-run.
async fn insert_then_first(insert: u64) -> (Vec<u64>, bool) {
    let (rt, q) = start().await;
    let c = rt.client();
    for k in [10u64, 20] {
        assert!(
            c.submit_raw(q, &0u64, Ev::Insert(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let (ins, first) = tokio::join!(
        c.submit_raw(q, &0u64, Ev::Insert(insert)),
        c.submit_raw(q, &0u64, Ev::First)
    );
    let (ins, first) = (ins.unwrap(), first.unwrap());
    rt.shutdown().await;
    assert_eq!(ins.tid.epoch(), first.tid.epoch(), "one epoch");
    assert!(ins.tid < first.tid, "the insert has the lower TID");
    let rerun = first.serial_pos.expect("committed").pass > 0;
    (first.result.unwrap().unwrap(), rerun)
}

// Goal: a lower-TID insert behind the first row does not disturb `scan_first` (it commits in
// the parallel pass and sees 10); one before it does (it is re-run and sees the new head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_first_conflicts_only_with_writes_up_to_the_head() {
    let (seen, rerun) = insert_then_first(15).await;
    assert_eq!(seen, vec![10]);
    assert!(
        !rerun,
        "an insert behind the head must not make scan_first stale"
    );

    let (seen, rerun) = insert_then_first(5).await;
    assert_eq!(seen, vec![5], "the serial order puts the insert first");
    assert!(rerun, "an insert before the head makes scan_first stale");
}
