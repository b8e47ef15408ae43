//! Transactional outbox: messages to external systems are delivered only for committed
//! transactions, after durability, with the TID as idempotency key — exactly once for a sink
//! that skips keys it has seen, across a restart.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use txn::storage::MemoryStorage;
use txn::{App, AppBuilder, OutboxSink, Runtime, RuntimeConfig, Tid};

struct Notify;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Writes `key`, queues a message, and asks the second service to confirm.
    Order {
        key: u64,
        fail_in_second: bool,
    },
    Confirm {
        key: u64,
        fail: bool,
    },
}

impl App for Notify {
    type Event = Ev;
    type Output = ();
}

/// Records every delivery; `distinct` is what an idempotent consumer would keep.
#[derive(Default)]
struct RecordingSink {
    deliveries: Mutex<Vec<(Tid, u32, String, u64)>>,
}

impl RecordingSink {
    fn distinct(&self) -> BTreeSet<(Tid, u32, String, u64)> {
        self.deliveries.lock().iter().cloned().collect()
    }
}

impl OutboxSink for RecordingSink {
    fn deliver(&self, tid: Tid, index: u32, topic: &str, payload: &[u8]) {
        let key: u64 = rmp_serde::from_slice(payload).expect("payload decodes");
        self.deliveries
            .lock()
            .push((tid, index, topic.to_string(), key));
    }
}

fn app() -> (Arc<txn::AppDef<Notify>>, txn::ServiceRef) {
    let mut b = AppBuilder::<Notify>::new();
    let orders = b.service("orders", 2);
    let confirmations = b.service("confirmations", 2);
    let rows = b.table::<u64, u64>(orders, "orders");
    b.handler(orders, move |ctx, ev| {
        let Ev::Order {
            key,
            fail_in_second,
        } = ev
        else {
            return Err(ctx.abort("orders only takes Order"));
        };
        ctx.put(rows, *key, *key)?;
        ctx.outbox("order-placed", key);
        ctx.emit_raw(
            confirmations,
            key,
            Ev::Confirm {
                key: *key,
                fail: *fail_in_second,
            },
        );
        Ok(())
    });
    b.handler(confirmations, |ctx, ev| {
        let Ev::Confirm { key, fail } = ev else {
            return Err(ctx.abort("confirmations only takes Confirm"));
        };
        ctx.outbox("order-confirmed", key);
        if *fail {
            return Err(ctx.abort("confirmation refused"));
        }
        Ok(())
    });
    (b.build().unwrap(), orders)
}

// Goal: committed transactions deliver all their messages once, aborted ones none, and after a
// restart the replayed deliveries repeat the same (TID, index) keys and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_delivers_committed_messages_exactly_once_across_restart() {
    let (app, orders) = app();
    let storage = MemoryStorage::new();
    let sink = Arc::new(RecordingSink::default());
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 0,
        outbox: Some(sink.clone()),
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(app.clone(), config.clone()).await.unwrap();
    let c = rt.client();
    let mut committed = Vec::new();
    for key in 0..20u64 {
        let fail = key % 4 == 0;
        let out = c
            .submit_raw(
                orders,
                &key,
                Ev::Order {
                    key,
                    fail_in_second: fail,
                },
            )
            .await
            .unwrap();
        assert_eq!(out.committed(), !fail);
        if !fail {
            committed.push((out.tid, key));
        }
        // The reply comes after delivery: the sink already has this transaction's messages.
        let n = sink
            .deliveries
            .lock()
            .iter()
            .filter(|d| d.0 == out.tid)
            .count();
        assert_eq!(n, if fail { 0 } else { 2 }, "key {key}");
    }
    rt.shutdown().await;
    let before = sink.distinct();
    assert_eq!(
        sink.deliveries.lock().len(),
        before.len(),
        "no duplicates without a restart"
    );
    let expected: BTreeSet<_> = committed
        .iter()
        .flat_map(|(tid, key)| {
            [
                (*tid, 0, "order-placed".to_string(), *key),
                (*tid, 1, "order-confirmed".to_string(), *key),
            ]
        })
        .collect();
    assert_eq!(before, expected);

    // Restart: the log is replayed (no checkpoint), so deliveries repeat with the same keys.
    let rt = Runtime::start(app, config).await.unwrap();
    rt.shutdown().await;
    assert!(
        sink.deliveries.lock().len() > before.len(),
        "replay re-delivers"
    );
    assert_eq!(
        sink.distinct(),
        expected,
        "an idempotent consumer sees each message once"
    );
}

// Goal: transactions that lose a conflict and commit in the serial fallback deliver their
// messages too. 64 concurrent orders of the same key land in one epoch; all but the first lose
// the write-write conflict and are re-run serially, and every committed one must deliver both
// of its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_delivers_messages_of_transactions_committed_by_the_fallback() {
    let (app, orders) = app();
    let sink = Arc::new(RecordingSink::default());
    let config = RuntimeConfig {
        storage: Arc::new(MemoryStorage::new()),
        epoch_duration: std::time::Duration::from_millis(10),
        outbox: Some(sink.clone()),
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(app, config).await.unwrap();
    let c = rt.client();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let ev = Ev::Order {
                    key: 7,
                    fail_in_second: i % 5 == 0,
                };
                c.submit_raw(orders, &7u64, ev).await.unwrap()
            })
        })
        .collect();
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.unwrap());
    }
    let conflicts = rt
        .stats()
        .conflicts
        .load(std::sync::atomic::Ordering::Relaxed);
    rt.shutdown().await;
    assert!(
        conflicts > 0,
        "the orders must conflict for this test to mean anything"
    );
    let delivered = sink.distinct();
    for out in &outs {
        let n = delivered.iter().filter(|d| d.0 == out.tid).count();
        assert_eq!(
            n,
            if out.committed() { 2 } else { 0 },
            "transaction {:?} (committed: {})",
            out.tid,
            out.committed()
        );
    }
}
