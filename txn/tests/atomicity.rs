//! Atomicity across services: an abort anywhere in an event chain discards the transaction's
//! writes in every service it already ran in.

use crate::common::*;
use txn::{AbortReason, Runtime, RuntimeConfig};

fn op(svc: usize, key: u64, kind: OpKind) -> Op {
    Op { svc, key, kind }
}

// Goal: an abort in the third service of a chain leaves no trace in the first two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_in_third_service_leaves_no_trace_in_first_two() {
    let fx = build(3, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let seed_ops = Ev::chain(vec![op(0, 1, OpKind::Add(100)), op(1, 2, OpKind::Add(200))]);
    assert!(
        client
            .submit_raw(fx.services[0], &1u64, seed_ops)
            .await
            .unwrap()
            .committed()
    );

    let chain = Ev::chain(vec![
        op(0, 1, OpKind::Add(5)),
        op(1, 2, OpKind::Add(7)),
        op(2, 3, OpKind::Abort),
    ]);
    let outcome = client
        .submit_raw(fx.services[0], &1u64, chain)
        .await
        .unwrap();
    match &outcome.result {
        Err(AbortReason::User {
            service, message, ..
        }) => {
            assert_eq!(service, "s2", "the reason names the service that aborted");
            assert!(message.contains("always aborts"), "{message}");
        }
        other => panic!("expected a user abort from s2, got {other:?}"),
    }

    // A later transaction and a snapshot query both see the values from before the chain.
    let read = Ev::chain(vec![op(0, 1, OpKind::Read), op(1, 2, OpKind::Read)]);
    let outcome = client
        .submit_raw(fx.services[0], &1u64, read)
        .await
        .unwrap();
    assert_eq!(outcome.result, Ok(Some(vec![100, 200])));
    let (t0, t1) = (fx.tables[0], fx.tables[1]);
    let (s0, s1) = (fx.services[0], fx.services[1]);
    let seen = client
        .query(&[s0, s1], move |v| {
            if v.is(s0) {
                v.get(t0, &1).copied()
            } else {
                v.get(t1, &2).copied()
            }
        })
        .await
        .unwrap();
    let seen: Vec<i64> = seen.into_iter().flatten().collect();
    assert_eq!(seen, vec![100, 200]);
    rt.shutdown().await;
}

// Goal: a conditional abort late in a chain (data-dependent) also discards the earlier steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_precondition_late_in_chain_discards_earlier_steps() {
    let fx = build(3, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let chain = Ev::chain(vec![
        op(0, 10, OpKind::Add(1)),
        op(1, 11, OpKind::Delete),
        op(2, 12, OpKind::AddIfAtLeast { delta: -1, min: 1 }),
    ]);
    let outcome = client
        .submit_raw(fx.services[0], &10u64, chain)
        .await
        .unwrap();
    assert!(
        matches!(&outcome.result, Err(AbortReason::User { service, .. }) if service == "s2"),
        "{:?}",
        outcome.result
    );
    let hash_before = txn::SerialExecutor::new(fx.app.clone()).state_hash();
    assert_eq!(
        client.state_hash().await.unwrap(),
        hash_before,
        "state must still be empty"
    );
    rt.shutdown().await;
}

// Goal: touching a key of another partition aborts with a reason naming both partitions, and the runtime goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_partition_access_is_a_clear_abort() {
    let fx = build(2, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    // Route the first op to a partition that does not own key 1.
    let owner = fx.services[0].partition_of(&1u64);
    let other = (owner + 1) % 4;
    let ev = Ev::chain(vec![op(0, 1, OpKind::Add(1))]);
    let outcome = client
        .submit_to_raw(fx.services[0], other, ev)
        .await
        .unwrap();
    match outcome.result {
        Err(AbortReason::WrongPartition {
            running, owner: o, ..
        }) => {
            assert_eq!((running, o), (other, owner));
        }
        r => panic!("expected WrongPartition, got {r:?}"),
    }
    let ok = Ev::chain(vec![op(0, 1, OpKind::Add(1))]);
    assert!(
        client
            .submit_raw(fx.services[0], &1u64, ok)
            .await
            .unwrap()
            .committed()
    );
    rt.shutdown().await;
}

// Goal: a request to a partition that does not exist is refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_partition_is_a_clear_error() {
    let fx = build(1, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let ev = Ev::chain(vec![op(0, 1, OpKind::Read)]);
    let err = rt
        .client()
        .submit_to_raw(fx.services[0], 4, ev)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service \"s0\" has 4 partitions; partition 4 does not exist"
    );
    rt.shutdown().await;
}
