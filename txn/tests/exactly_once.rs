//! Exactly-once: a resubmitted request id gets the original outcome and is never executed
//! again — concurrently, after the acknowledgement, and across restarts.

use crate::common::*;
use std::sync::Arc;
use txn::storage::MemoryStorage;
use txn::{Runtime, RuntimeConfig};

fn add(key: u64, d: i64) -> Ev {
    Ev::chain(vec![
        Op {
            svc: 0,
            key,
            kind: OpKind::Add(d),
        },
        Op {
            svc: 1,
            key,
            kind: OpKind::Read,
        },
    ])
}

// Goal: resubmitting an acknowledged id returns the original outcome without running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmission_returns_original_outcome_without_executing() {
    let fx = build(2, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    let first = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 10))
        .await
        .unwrap();
    assert_eq!(first.result, Ok(Some(vec![0, 0])));
    // Same id, same request: the original outcome, nothing executed.
    let again = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 10))
        .await
        .unwrap();
    assert_eq!(again, first);
    let now = c.submit_raw(s0, &5u64, read0(5)).await.unwrap();
    assert_eq!(now.result, Ok(Some(vec![10])), "the add ran exactly once");
    rt.shutdown().await;
}

// Goal: the same id submitted concurrently many times is executed once and all get one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_execute_once() {
    let fx = Arc::new(build(2, 4));
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = rt.client();
        let s0 = fx.services[0];
        tasks.push(tokio::spawn(async move {
            c.submit_with_id_raw(request_id(7), s0, &3u64, add(3, 1))
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert!(outcomes.iter().all(|o| *o == outcomes[0]), "{outcomes:?}");
    let now = rt
        .client()
        .submit_raw(fx.services[0], &3u64, read0(3))
        .await
        .unwrap();
    assert_eq!(now.result, Ok(Some(vec![1])));
    rt.shutdown().await;
}

// Goal: the dedup window survives a restart, both from a checkpoint and from log replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_window_survives_restart() {
    let fx = build(2, 4);
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 3,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    let mut originals = Vec::new();
    for seq in 0..12u64 {
        // Abort some (key 1 never reaches 1000), commit others.
        let ev = if seq % 3 == 0 {
            Ev::chain(vec![Op {
                svc: 0,
                key: 1,
                kind: OpKind::AddIfAtLeast {
                    delta: 1,
                    min: 1000,
                },
            }])
        } else {
            add(seq, 1)
        };
        let outcome = c
            .submit_with_id_raw(request_id(seq), s0, &seq, ev.clone())
            .await
            .unwrap();
        originals.push((ev, outcome));
    }
    let hash = c.state_hash().await.unwrap();
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let report = rt.recovery_report().clone();
    assert!(report.checkpoint_epoch.is_some(), "{report:?}");
    assert_eq!(report.dedup_window_entries, 12, "{report:?}");
    let c = rt.client();
    for (seq, (ev, original)) in originals.iter().enumerate() {
        let seq = seq as u64;
        let again = c
            .submit_with_id_raw(request_id(seq), s0, &seq, ev.clone())
            .await
            .unwrap();
        assert_eq!(&again, original, "request {seq} after restart");
    }
    assert_eq!(
        c.state_hash().await.unwrap(),
        hash,
        "no resubmission executed"
    );
    rt.shutdown().await;
}

// Goal: the window is bounded: past its size the oldest id is forgotten (and would run again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_is_bounded() {
    let fx = build(2, 4);
    let config = RuntimeConfig {
        dedup_window_max: 2,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    for seq in 0..3u64 {
        c.submit_with_id_raw(request_id(seq), s0, &9u64, add(9, 1))
            .await
            .unwrap();
    }
    // id 2 is remembered: no second execution.
    c.submit_with_id_raw(request_id(2), s0, &9u64, add(9, 1))
        .await
        .unwrap();
    assert_eq!(
        c.submit_raw(s0, &9u64, read0(9)).await.unwrap().result,
        Ok(Some(vec![3]))
    );
    // id 0 was forgotten: it runs again.
    c.submit_with_id_raw(request_id(0), s0, &9u64, add(9, 1))
        .await
        .unwrap();
    assert_eq!(
        c.submit_raw(s0, &9u64, read0(9)).await.unwrap().result,
        Ok(Some(vec![4]))
    );
    rt.shutdown().await;
}
