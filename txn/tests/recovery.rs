//! Durability at the runtime level: restart from checkpoint + log replay rebuilds the exact
//! state, and a storage failure stops acknowledgements without losing acknowledged work.

mod common;

use common::*;
use std::sync::Arc;
use txn::storage::{FaultyStorage, MemoryStorage, Storage};
use txn::{Runtime, RuntimeConfig, TxnError};

async fn run_workload(rt: &Runtime<ChainApp>, fx: &Fixture, seed: u64, n: usize) -> usize {
    let client = rt.client();
    let mut rng = rng(seed);
    let mut committed = 0;
    for _ in 0..n {
        let ev = random_chain(&mut rng, 3, 40, 4);
        let (svc, key) = fx.first_target(&ev);
        committed += usize::from(client.submit(svc, &key, ev).await.unwrap().committed());
    }
    committed
}

// Goal: restarting from the latest checkpoint plus the log after it yields the identical state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint_and_log_rebuilds_identical_state() {
    let seed = seed("checkpoint-restart");
    let fx = build(3, 4);
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 7,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let committed = run_workload(&rt, &fx, seed, 300).await;
    let before = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let report = rt.recovery_report().clone();
    let after = rt.client().state_hash().await.unwrap();
    assert_eq!(after, before, "seed {seed}: recovered state differs");
    let ckpt = report.checkpoint_epoch.expect("a checkpoint was written");
    assert!(report.rows_loaded > 0, "{report:?}");
    assert!(
        report.epochs_replayed < 7 + 2,
        "only the log after the checkpoint is replayed: {report:?}"
    );
    let first_logged = {
        let mut first = None;
        storage
            .read_epochs(0, &mut |e, _| {
                first.get_or_insert(e);
                Ok(())
            })
            .unwrap();
        first
    };
    assert!(
        first_logged.is_none_or(|e| e > ckpt),
        "the log below the checkpoint is truncated (first logged {first_logged:?}, checkpoint {ckpt})"
    );
    // The restarted runtime continues where the old one stopped.
    assert!(run_workload(&rt, &fx, seed ^ 1, 20).await > 0);
    rt.shutdown().await;
    eprintln!("checkpoint-restart: {committed} committed, {report:?}");
}

// Goal: when the log cannot be written, nothing more is acknowledged, and everything that was
// acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failure_stops_acks_and_loses_nothing_acknowledged() {
    let fx = build(2, 2);
    let memory = MemoryStorage::new();
    let faulty = Arc::new(FaultyStorage::new(memory.clone()));
    let config = RuntimeConfig {
        storage: faulty.clone(),
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let client = rt.client();
    let add = |k: u64| {
        Ev::chain(vec![Op {
            svc: 0,
            key: k,
            kind: OpKind::Add(1),
        }])
    };
    for k in 0..10 {
        assert!(
            client
                .submit(fx.services[0], &k, add(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let acked_hash = client.state_hash().await.unwrap();

    faulty.fail_all_appends();
    match client.submit(fx.services[0], &1u64, add(1)).await {
        Err(TxnError::Storage(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a storage error, got {other:?}"),
    }
    // The runtime refuses further writes rather than acknowledging them.
    assert!(matches!(
        client.submit(fx.services[0], &2u64, add(2)).await,
        Err(TxnError::Storage(_))
    ));
    rt.shutdown().await;

    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(memory),
            ..RuntimeConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rt.client().state_hash().await.unwrap(), acked_hash);
    rt.shutdown().await;
}
