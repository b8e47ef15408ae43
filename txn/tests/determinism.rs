//! Determinism: the same logged input batches, replayed on runtimes with different worker
//! counts (so different thread interleavings of the partition actors), produce the identical
//! state hash as the original run.

use crate::common::*;
use std::sync::Arc;
use txn::storage::{MemoryStorage, Storage};
use txn::{Fallback, Runtime, RuntimeConfig};

async fn original_run(
    fx: Arc<Fixture>,
    storage: MemoryStorage,
    seed: u64,
    fallback: Fallback,
) -> u64 {
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(storage),
            fallback,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for c in 0..6u64 {
        let client = rt.client();
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(seed.wrapping_add(c));
            for _ in 0..120 {
                let ev = random_chain(&mut rng, 3, 20, 5);
                let (svc, key) = fx.first_target(&ev);
                client.submit_raw(svc, &key, ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    hash
}

fn replay_with_workers(
    fx: Arc<Fixture>,
    storage: MemoryStorage,
    workers: usize,
    fallback: Fallback,
) -> u64 {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    tokio_rt.block_on(async move {
        let rt = Runtime::start(
            fx.app.clone(),
            RuntimeConfig {
                storage: Arc::new(storage),
                fallback,
                ..RuntimeConfig::in_memory()
            },
        )
        .await
        .unwrap();
        let hash = rt.client().state_hash().await.unwrap();
        rt.shutdown().await;
        hash
    })
}

fn check(fallback: Fallback, name: &str) {
    let seed = seed(name);
    let fx = Arc::new(build(3, 5));
    let storage = MemoryStorage::new();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let original = tokio_rt.block_on(original_run(fx.clone(), storage.clone(), seed, fallback));
    drop(tokio_rt);
    let n_epochs = storage.last_epoch().unwrap().unwrap_or(0);
    assert!(
        n_epochs > 5,
        "the run should span many epochs, got {n_epochs}"
    );
    for workers in [1, 2, 4] {
        // Each replay gets its own copy of the log: a replay must not append to it.
        let copy = copy_of_log(&storage);
        let replayed = replay_with_workers(fx.clone(), copy, workers, fallback);
        assert_eq!(
            replayed, original,
            "seed {seed}: replay of {n_epochs} epochs with {workers} workers diverged"
        );
    }
    eprintln!(
        "{name}: {n_epochs} epochs replayed with 1, 2 and 4 workers, identical state hash {original:#x}"
    );
}

// Goal: identical state hash from the same input batches whatever the worker count (serial fallback).
#[test]
fn same_log_same_state_across_worker_counts_serial_fallback() {
    check(Fallback::Serial, "determinism-serial");
}

// Goal: identical state hash from the same input batches whatever the worker count (next-epoch retries).
#[test]
fn same_log_same_state_across_worker_counts_next_epoch() {
    check(Fallback::NextEpoch, "determinism-next-epoch");
}

// Goal: identical state hash from the same input batches whatever the worker count (ordered
// fallback: its rounds run on the partition actors, in parallel).
#[test]
fn same_log_same_state_across_worker_counts_ordered_fallback() {
    check(Fallback::Ordered, "determinism-ordered");
}
