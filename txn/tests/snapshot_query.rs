//! Cross-service snapshot queries: while writers move amounts between two services, every
//! query summing both services sees the invariant total — never a half-applied transfer.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use txn::{Runtime, RuntimeConfig};

// Goal: a cross-service query never sees a half-applied transaction while writers run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_never_sees_half_applied_transfers() {
    let seed = seed("snapshot-query");
    let fx = Arc::new(build(3, 4));
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for c in 0..6u64 {
        let client = rt.client();
        let fx = fx.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = rng(seed.wrapping_add(c));
            let mut committed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let amount = rng.random_range(1..=50);
                let (a, b) = (rng.random_range(0..32u64), rng.random_range(0..32u64));
                // Withdraw from s0, deposit into s1; a third of them abort in s2 after both.
                let mut ops = vec![
                    Op {
                        svc: 0,
                        key: a,
                        kind: OpKind::Add(-amount),
                    },
                    Op {
                        svc: 1,
                        key: b,
                        kind: OpKind::Add(amount),
                    },
                ];
                if rng.random_range(0..3) == 0 {
                    ops.push(Op {
                        svc: 2,
                        key: a,
                        kind: OpKind::Abort,
                    });
                }
                let outcome = client
                    .submit_raw(fx.services[0], &a, Ev::chain(ops))
                    .await
                    .unwrap();
                committed += u32::from(outcome.committed());
            }
            committed
        }));
    }
    let client = rt.client();
    let (s0, s1, t0, t1) = (fx.services[0], fx.services[1], fx.tables[0], fx.tables[1]);
    let mut n_queries = 0;
    let mut nonzero_seen = false;
    for _ in 0..200 {
        let sums = client
            .query(&[s0, s1], move |v| {
                v.iter(t0).map(|(_, x)| *x).sum::<i64>() + v.iter(t1).map(|(_, x)| *x).sum::<i64>()
            })
            .await
            .unwrap();
        let per_service_s0: i64 = sums[..4].iter().sum();
        nonzero_seen |= per_service_s0 != 0;
        assert_eq!(
            sums.iter().sum::<i64>(),
            0,
            "seed {seed}: a query saw a half-applied transfer"
        );
        n_queries += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    rt.shutdown().await;
    eprintln!(
        "snapshot-query: {n_queries} queries over {committed} committed transfers, all consistent"
    );
    assert!(
        committed > 0 && nonzero_seen,
        "the writers must actually have moved money during the queries"
    );
}

// Goal: a query can target chosen partitions, answers in the caller's order, refuses unknown
// partitions, and outcomes carry their epoch's logged timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_at_targets_partitions_in_callers_order() {
    let fx = build(2, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    let mut last_ts = 0;
    for key in 0..16u64 {
        let ev = Ev::chain(vec![Op {
            svc: 0,
            key,
            kind: OpKind::Add(key as i64),
        }]);
        let out = c.submit_raw(s0, &key, ev).await.unwrap();
        assert!(
            out.timestamp_ms >= last_ts && out.timestamp_ms > 0,
            "{out:?}"
        );
        last_ts = out.timestamp_ms;
    }
    let t0 = fx.tables[0];
    let per_partition = c.query(&[s0], move |v| v.len(t0)).await.unwrap();
    let picked = c
        .query_at(&[(s0, 3), (s0, 1)], move |v| (v.partition(), v.len(t0)))
        .await
        .unwrap();
    assert_eq!(picked, vec![(3, per_partition[3]), (1, per_partition[1])]);
    let err = c.query_at(&[(s0, 4)], |_| ()).await.unwrap_err();
    assert!(
        err.to_string().contains("partition 4 does not exist"),
        "{err}"
    );
    rt.shutdown().await;
}
