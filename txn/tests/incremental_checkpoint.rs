//! A checkpoint larger than what a partition copies between two epochs is copied over several
//! epochs, at a bounded pace, and rows changed meanwhile still go into it as they were at its
//! epoch: recovering from it and replaying the log after it gives exactly the acknowledged
//! state.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::limits::{
    CHECKPOINT_COPY_ROWS_PER_EPOCH, CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN,
    CHECKPOINT_COPY_SPREAD_EPOCHS,
};
use txn::storage::MemoryStorage;
use txn::{App, AppBuilder, AppDef, RecoverFrom, Runtime, RuntimeConfig, ServiceRef, Table};

/// Rows loaded into each of the two tables: the checkpoint after the load holds them all, more
/// than three copy steps' worth.
const ROWS: u64 = 3 * CHECKPOINT_COPY_ROWS_PER_EPOCH as u64 + 500;

/// Most rows the partition may copy in one step: its pace over the two tables' rows, within
/// the floor and the ceiling of a step.
const PACE_MAX: u64 = {
    let pace = (2 * ROWS).div_ceil(CHECKPOINT_COPY_SPREAD_EPOCHS as u64);
    let floor = CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN as u64;
    if pace > floor { pace } else { floor }
};

/// Epochs between checkpoints: the test ends before a second one falls due (the copy takes
/// fewer epochs than the interval), so recovery loads the one copied while the rows changed.
const EVERY: u64 = 2 * (2 * ROWS).div_ceil(PACE_MAX) + 20;

struct KvApp;

impl App for KvApp {
    type Event = Ev;
    type Output = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Sets rows `0..n` of both tables to `value`, in one step.
    Fill { n: u64, value: i64 },
    /// Adds `delta` to row `key` of both tables (a missing row counts as 0).
    Add { key: u64, delta: i64 },
    /// Deletes row `key` of both tables.
    Delete { key: u64 },
}

struct Kv {
    app: Arc<AppDef<KvApp>>,
    svc: ServiceRef,
    /// A hashed and an ordered table: their rows are stored apart.
    tables: [Table<u64, i64>; 2],
}

fn build() -> Kv {
    let mut b = AppBuilder::<KvApp>::new();
    let svc = b.service("kv", 1);
    let tables = [
        b.table::<u64, i64>(svc, "hashed"),
        b.ordered_table::<u64, i64>(svc, "ordered"),
    ];
    b.handler(svc, move |ctx, ev| {
        for table in tables {
            match ev {
                Ev::Fill { n, value } => {
                    for key in 0..*n {
                        ctx.put(table, key, *value)?;
                    }
                }
                Ev::Add { key, delta } => {
                    let value = ctx.get(table, key)?.unwrap_or(0);
                    ctx.put(table, *key, value + delta)?;
                }
                Ev::Delete { key } => ctx.delete(table, key)?,
            }
        }
        Ok(())
    });
    Kv {
        app: b.build().expect("valid test app"),
        svc,
        tables,
    }
}

/// The same changes on a plain map.
fn apply(model: &mut BTreeMap<u64, i64>, ev: &Ev) {
    match ev {
        Ev::Fill { n, value } => model.extend((0..*n).map(|key| (key, *value))),
        Ev::Add { key, delta } => *model.entry(*key).or_insert(0) += delta,
        Ev::Delete { key } => drop(model.remove(key)),
    }
}

/// The changes made, one epoch each, while the checkpoint is copied: the copier takes the most
/// recently listed keys first, so the low keys are changed before it reaches them (updates,
/// deletes, a delete then a re-insert) and keys missing at the checkpoint are inserted.
fn changes_while_copying() -> Vec<Ev> {
    let mut changes = Vec::new();
    for round in 0..3 {
        changes.push(Ev::Add {
            key: round,
            delta: 10,
        });
        changes.push(Ev::Delete { key: 100 + round });
        changes.push(Ev::Add {
            key: ROWS + round,
            delta: 7,
        });
    }
    changes.push(Ev::Add { key: 101, delta: 3 });
    changes
}

// Goal: the checkpoint after a load of 2 × ROWS rows is copied in several between-epoch steps,
// and recovery from it (log truncated below it) plus replay of the changes made while it was
// copied gives the acknowledged state, in both the hashed and the ordered table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_copied_over_several_epochs_holds_its_epochs_rows() {
    let kv = build();
    let memory = MemoryStorage::new();
    let config = || RuntimeConfig {
        storage: Arc::new(memory.clone()),
        checkpoint_every_epochs: EVERY,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(kv.app.clone(), config()).await.unwrap();
    let client = rt.client();
    let mut model = BTreeMap::new();
    let mut submit = async |ev: Ev| {
        // One request at a time: one epoch each.
        apply(&mut model, &ev);
        let outcome = client.submit_raw(kv.svc, &0u64, ev).await.unwrap();
        assert!(outcome.committed(), "{outcome:?}");
    };
    submit(Ev::Fill { n: ROWS, value: 1 }).await;
    // Up to the epoch the checkpoint falls due at: it begins after that epoch has run.
    for _ in 1..EVERY {
        submit(Ev::Add { key: 0, delta: 0 }).await;
    }
    for ev in changes_while_copying() {
        submit(ev).await;
    }
    // Each epoch is one copy step: run epochs until the checkpoint is written (bounded, so a
    // copy that never ends fails instead of hanging).
    for _ in 0..EVERY {
        if rt.stats().snapshot().checkpoints_completed > 0 {
            break;
        }
        submit(Ev::Add { key: 0, delta: 0 }).await;
    }
    let stats = rt.stats().snapshot();
    rt.shutdown().await;
    assert_eq!(stats.checkpoints_completed, 1, "{stats:?}");
    // Copying at the most a step may (CHECKPOINT_COPY_ROWS_PER_EPOCH rows) would take only
    // a few steps; at its pace the copy is spread over many more, so no epoch pays for much of
    // it.
    let steps_needed = (2 * ROWS).div_ceil(PACE_MAX);
    assert!(
        steps_needed > 2 * (2 * ROWS).div_ceil(CHECKPOINT_COPY_ROWS_PER_EPOCH as u64),
        "the test's checkpoint is too small to tell the pace from the ceiling"
    );
    assert!(
        stats.checkpoint_copy_steps >= steps_needed,
        "the checkpoint was copied in {} steps, expected at least {steps_needed}: more than \
         {PACE_MAX} rows in one step",
        stats.checkpoint_copy_steps
    );

    let config = RuntimeConfig {
        recover_from: RecoverFrom::LatestCheckpoint,
        ..config()
    };
    let rt = Runtime::start(kv.app.clone(), config).await.unwrap();
    let report = rt.recovery_report().clone();
    assert_eq!(report.checkpoint_epoch, Some(EVERY), "{report:?}");
    assert!(report.epochs_replayed >= changes_while_copying().len() as u64);
    for table in kv.tables {
        let rows = rt
            .client()
            .query(&[kv.svc], move |view| {
                let mut rows: Vec<(u64, i64)> = view.iter(table).map(|(k, v)| (*k, *v)).collect();
                rows.sort();
                rows
            })
            .await
            .unwrap();
        let expected: Vec<(u64, i64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert!(
            rows[0] == expected,
            "recovered rows differ from the acknowledged ones"
        );
    }
    rt.shutdown().await;
}
