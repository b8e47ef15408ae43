//! Randomized serializability: concurrent clients run random multi-service chains (reads,
//! writes, scans, deletes, conditional and unconditional aborts) over a small, contended key
//! space. The recorded history, in the reported serial order, is checked twice: against a plain
//! `BTreeMap` model that shares no execution code with the runtime (every read, output and abort,
//! and the final rows read back with a snapshot query), and by a replay on `SerialExecutor`
//! (every outcome and the final state hash). Each run also asserts that the contention it is
//! meant to exercise happened: conflict losers, and fallback runs or retries.

use crate::common::model::{Rows, assert_matches_model};
use crate::common::*;
use std::sync::Arc;
use txn::{Fallback, Runtime, RuntimeConfig, SerialHints};

/// Clients, and requests each: enough for every run to have conflict losers on 24 keys.
const N_CLIENTS: u64 = 8;
const N_REQUESTS_PER_CLIENT: usize = 150;

/// What one run produced: the history, how many requests were retried in a later epoch, and
/// the runtime's counters.
struct Run {
    history: Vec<Recorded<ChainApp>>,
    n_retried: usize,
    final_hash: u64,
    final_rows: Rows,
    epochs: u64,
    committed: u64,
    user_aborted: u64,
    conflicts: u64,
    fallback: u64,
    hinted: u64,
}

async fn run_and_check(fallback: Fallback, serial_hints: SerialHints, test: &str) {
    let seed = seed(test);
    let fx = Arc::new(build(3, 4));
    let mut run = run_history(&fx, fallback, serial_hints, seed).await;
    let n_history = run.history.len();
    let n_committed =
        assert_matches_model(fx.services.clone(), &mut run.history, &run.final_rows, seed);
    let n_fallback_pass = run.history.iter().filter(|r| r.pos.pass >= 1).count();
    let n_tail_pass = run.history.iter().filter(|r| r.pos.pass == 2).count();
    let replayed = assert_matches_serial_replay(fx.app.clone(), run.history, run.final_hash, seed);
    assert_eq!(replayed, n_committed);
    // The runtime's own counters tell the same story as the outcomes.
    assert_eq!(run.committed, n_committed as u64, "seed {seed}: committed");
    assert_eq!(
        run.user_aborted,
        (n_history - n_committed) as u64,
        "seed {seed}: aborted"
    );
    eprintln!(
        "{test}: {n_history} transactions ({n_committed} committed) in {} epochs, {} conflict \
         losers, {} fallback runs ({n_fallback_pass} outcomes from the fallback, \
         {n_tail_pass} of them from the ordered fallback's tail), {} sent straight to the \
         fallback, {} retried in a later epoch; matches the BTreeMap model and the serial \
         replay",
        run.epochs, run.conflicts, run.fallback, run.hinted, run.n_retried
    );
    assert!(
        run.conflicts > 0,
        "seed {seed}: no conflict loser, so nothing was tested"
    );
    match fallback {
        Fallback::Serial | Fallback::Ordered => {
            assert!(run.fallback > 0, "seed {seed}: the serial pass never ran");
            assert!(
                n_fallback_pass > 0,
                "seed {seed}: no outcome reports the serial pass"
            );
        }
        Fallback::NextEpoch => {
            assert!(run.n_retried > 0, "seed {seed}: no request was retried");
        }
    }
    if let SerialHints::Sample { .. } = serial_hints {
        assert!(run.hinted > 0, "the sampled hints must have been used");
    }
    assert!(
        n_committed > n_history / 4,
        "the workload should mostly commit"
    );
}

async fn run_history(
    fx: &Arc<Fixture>,
    fallback: Fallback,
    serial_hints: SerialHints,
    seed: u64,
) -> Run {
    let config = RuntimeConfig {
        fallback,
        serial_hints,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let mut tasks = Vec::new();
    for c in 0..N_CLIENTS {
        let (client, fx) = (rt.client(), fx.clone());
        let seed = seed.wrapping_add(c);
        let client = run_chain_client(client, fx, seed, N_REQUESTS_PER_CLIENT);
        tasks.push(tokio::spawn(client));
    }
    let (mut history, mut n_retried) = (Vec::new(), 0);
    for t in tasks {
        let (records, retried) = t.await.unwrap();
        history.extend(records);
        n_retried += retried;
    }
    let client = rt.client();
    let final_hash = client.state_hash().await.unwrap();
    let final_rows = read_all_rows(&client, fx).await;
    let stats = rt.stats().snapshot();
    let run = Run {
        history,
        n_retried,
        final_hash,
        final_rows,
        epochs: stats.epochs,
        committed: stats.committed,
        user_aborted: stats.user_aborted,
        conflicts: stats.conflicts,
        fallback: stats.fallback,
        hinted: stats.serial_hinted,
    };
    rt.shutdown().await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_serial_fallback() {
    run_and_check(Fallback::Serial, SerialHints::DEFAULT, "serial-fallback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_next_epoch_retries() {
    run_and_check(Fallback::NextEpoch, SerialHints::DEFAULT, "next-epoch").await;
}

// Goal: with the ordered fallback (losers run through the partitions, in parallel where their
// first-pass partitions are disjoint, mispredicted ones in the tail pass) every read, abort and
// the final state equal the serial order the outcomes report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_ordered_fallback() {
    run_and_check(Fallback::Ordered, SerialHints::DEFAULT, "ordered-fallback").await;
}

// Goal: the same with every third transaction hinted: a hinted chain is predicted to touch its
// target only, so a chain leaving it runs in the tail pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_ordered_fallback_and_hints() {
    let hints = SerialHints::Sample { every: 3 };
    run_and_check(Fallback::Ordered, hints, "ordered-hints").await;
}

// Goal: transactions sent straight to the serial pass (every third one, whatever the
// contention) take their reported place in the serial order: the model and the replay match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_is_serializable_with_serial_hints() {
    let hints = SerialHints::Sample { every: 3 };
    run_and_check(Fallback::Serial, hints, "serial-hints").await;
}
