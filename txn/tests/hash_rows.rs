//! A hash table's rows through inserts, deletes and re-inserts, with checkpoints larger than
//! one checkpoint chunk (`limits::CHECKPOINT_CHUNK_ROWS_MAX`), and a restart from them: every
//! row reads back as a plain model says, before and after the restart.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use txn::limits::CHECKPOINT_CHUNK_ROWS_MAX;
use txn::storage::MemoryStorage;
use txn::{App, AppBuilder, AppDef, Client, Runtime, RuntimeConfig, ServiceRef};

struct KvApp;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Sets every key in `keys` to `value` (`None` deletes it).
    Set { keys: Vec<u64>, value: Option<i64> },
    /// Reads every key in `keys`.
    Get { keys: Vec<u64> },
}

impl App for KvApp {
    type Event = Ev;
    type Output = Vec<Option<i64>>;
}

/// One partition, so one table's checkpoint rows are all in one partition.
fn app() -> (Arc<AppDef<KvApp>>, ServiceRef) {
    let mut b = AppBuilder::<KvApp>::new();
    let svc = b.service("kv", 1);
    let rows = b.table::<u64, i64>(svc, "rows");
    b.handler(svc, move |ctx, ev| {
        match ev {
            Ev::Set { keys, value } => {
                for key in keys {
                    match value {
                        Some(v) => ctx.put(rows, *key, *v)?,
                        None => ctx.delete(rows, key)?,
                    }
                }
            }
            Ev::Get { keys } => {
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    values.push(ctx.get(rows, key)?);
                }
                ctx.set_output(values);
            }
        }
        Ok(())
    });
    (b.build().expect("valid test app"), svc)
}

/// Submits one `Set` and applies it to `model`.
async fn set(
    client: &Client<KvApp>,
    svc: ServiceRef,
    model: &mut BTreeMap<u64, i64>,
    keys: Vec<u64>,
    value: Option<i64>,
) {
    for key in &keys {
        match value {
            Some(v) => model.insert(*key, v),
            None => model.remove(key),
        };
    }
    let outcome = client
        .submit_raw(svc, &0u64, Ev::Set { keys, value })
        .await
        .expect("submitted");
    assert!(outcome.committed(), "{outcome:?}");
}

/// Asserts that every key below `n_keys` reads as `model` says.
async fn assert_rows(
    client: &Client<KvApp>,
    svc: ServiceRef,
    model: &BTreeMap<u64, i64>,
    n_keys: u64,
    when: &str,
) {
    let keys: Vec<u64> = (0..n_keys).collect();
    let outcome = client
        .submit_raw(svc, &0u64, Ev::Get { keys: keys.clone() })
        .await
        .expect("submitted");
    let read = outcome.result.expect("a read commits").expect("an output");
    for (key, value) in keys.iter().zip(read) {
        assert_eq!(value, model.get(key).copied(), "key {key} {when}");
    }
}

// Goal: deleting rows of a hash table (which moves others inside it) and inserting them again,
// in amounts that span several checkpoint chunks, loses, duplicates or resurrects no row, live
// or after a restart from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_rows_survive_deletes_reinserts_and_chunked_checkpoints() {
    let n_keys = 3 * CHECKPOINT_CHUNK_ROWS_MAX as u64;
    let (app, svc) = app();
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 2,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(app.clone(), config.clone()).await.unwrap();
    let client = rt.client();
    let mut model = BTreeMap::new();
    let all: Vec<u64> = (0..n_keys).collect();
    set(&client, svc, &mut model, all.clone(), Some(1)).await;
    // Delete a third of the rows (the first, the last and rows in between), then insert some
    // of them again in the same checkpoint interval, and change others.
    let thirds: Vec<u64> = all.iter().copied().filter(|k| k % 3 == 0).collect();
    set(&client, svc, &mut model, thirds, None).await;
    set(&client, svc, &mut model, vec![n_keys - 1, 1], None).await;
    let sevenths: Vec<u64> = all.iter().copied().filter(|k| k % 7 == 0).collect();
    set(&client, svc, &mut model, sevenths, Some(2)).await;
    set(
        &client,
        svc,
        &mut model,
        all[..n_keys as usize / 2].to_vec(),
        Some(3),
    )
    .await;
    set(
        &client,
        svc,
        &mut model,
        all.iter().copied().filter(|k| k % 5 == 0).collect(),
        None,
    )
    .await;
    // A checkpoint is copied a bounded number of rows per epoch: run empty epochs until one
    // is written (bounded, so a copy that never ends fails instead of hanging).
    for _ in 0..1_000 {
        if rt.stats().checkpoints_completed.load(Ordering::Relaxed) > 0 {
            break;
        }
        set(&client, svc, &mut model, Vec::new(), Some(1)).await;
    }
    assert_rows(&client, svc, &model, n_keys, "live").await;
    let before = client.state_hash().await.unwrap();
    assert!(rt.stats().checkpoints_completed.load(Ordering::Relaxed) > 0);
    rt.shutdown().await;

    let rt = Runtime::start(app, config).await.unwrap();
    let report = rt.recovery_report().clone();
    assert!(
        report.rows_loaded > CHECKPOINT_CHUNK_ROWS_MAX,
        "the checkpoint spans several chunks: {report:?}"
    );
    let client = rt.client();
    assert_eq!(client.state_hash().await.unwrap(), before, "{report:?}");
    assert_rows(&client, svc, &model, n_keys, "after the restart").await;
    rt.shutdown().await;
}
