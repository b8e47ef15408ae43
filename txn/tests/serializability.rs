//! Randomized serializability: concurrent clients run random multi-service chains (reads,
//! writes, scans, deletes, conditional and unconditional aborts) over a small, contended key
//! space; the recorded history is replayed one transaction at a time in the reported serial
//! order, and every read, every abort and the final state must match.

mod common;

use common::*;
use std::sync::Arc;
use txn::{Fallback, Runtime, RuntimeConfig, SerialHints};

async fn run_and_check(fallback: Fallback, serial_hints: SerialHints, test: &str) {
    let seed = seed(test);
    let fx = Arc::new(build(3, 4));
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            fallback,
            serial_hints,
            ..RuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    let n_clients = 8;
    let n_per_client = 150;
    let mut tasks = Vec::new();
    for c in 0..n_clients {
        let client = rt.client();
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(seed.wrapping_add(c));
            let mut records = Vec::new();
            for _ in 0..n_per_client {
                let ev = random_chain(&mut rng, 3, 24, 5);
                let (svc, key) = fx.first_target(&ev);
                let outcome = client.submit(svc, &key, ev.clone()).await.unwrap();
                records.push(Recorded::<ChainApp> {
                    pos: outcome
                        .serial_pos
                        .expect("no transaction exhausts its retries"),
                    service: svc,
                    partition: svc.partition_of(&key),
                    event: ev,
                    result: outcome.result,
                });
            }
            records
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let client = rt.client();
    let final_hash = client.state_hash().await.unwrap();
    let stats = rt.stats();
    let conflicts = stats.conflicts.load(std::sync::atomic::Ordering::Relaxed);
    let epochs = stats.epochs.load(std::sync::atomic::Ordering::Relaxed);
    let hinted = stats
        .serial_hinted
        .load(std::sync::atomic::Ordering::Relaxed);
    rt.shutdown().await;

    let n_history = history.len();
    let n_committed = assert_matches_serial_replay(fx.app.clone(), history, final_hash, seed);
    eprintln!(
        "{test}: {n_history} transactions ({n_committed} committed) in {epochs} epochs, {conflicts} conflict losers, {hinted} sent straight to the serial pass, history serializable"
    );
    if let SerialHints::Sample { .. } = serial_hints {
        assert!(hinted > 0, "the sampled hints must have been used");
    }
    assert!(
        n_committed > n_history / 4,
        "the workload should mostly commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_serial_fallback() {
    run_and_check(Fallback::Serial, SerialHints::DEFAULT, "serial-fallback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_next_epoch_retries() {
    run_and_check(Fallback::NextEpoch, SerialHints::DEFAULT, "next-epoch").await;
}

// Goal: transactions sent straight to the serial pass (every third one, whatever the
// contention) take their reported place in the serial order: the replay still matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_serial_hints() {
    let hints = SerialHints::Sample { every: 3 };
    run_and_check(Fallback::Serial, hints, "serial-hints").await;
}
