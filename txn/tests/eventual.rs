//! The `eventual` baseline runs the same application without the transaction layer: chains
//! complete and report their outcome, but an abort late in a chain leaves the earlier steps'
//! writes behind — the anomaly the consistency checkers are meant to count.

mod common;

use common::*;
use txn::{AbortReason, EventualRuntime};

fn op(svc: usize, key: u64, kind: OpKind) -> Op {
    Op { svc, key, kind }
}

// Goal: a committed chain applies every step and returns its output, like the runtime does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_runs_whole_chains() {
    let fx = build(3, 4);
    let rt = EventualRuntime::start(fx.app.clone());
    let chain = Ev::chain(vec![
        op(0, 1, OpKind::Add(5)),
        op(1, 2, OpKind::Add(7)),
        op(2, 3, OpKind::Read),
    ]);
    let out = rt.submit(fx.services[0], &1u64, chain).await.unwrap();
    assert_eq!(out, Ok(Some(vec![0, 0, 0])));
    let read = Ev::chain(vec![op(0, 1, OpKind::Read), op(1, 2, OpKind::Read)]);
    assert_eq!(
        rt.submit(fx.services[0], &1u64, read).await.unwrap(),
        Ok(Some(vec![5, 7]))
    );
    rt.stop();
}

// Goal: without the transaction layer, an abort in the third service leaves the first two
// services' writes in place (the runtime's atomicity test shows the opposite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_abort_leaves_earlier_steps_applied() {
    let fx = build(3, 4);
    let rt = EventualRuntime::start(fx.app.clone());
    let chain = Ev::chain(vec![
        op(0, 1, OpKind::Add(5)),
        op(1, 2, OpKind::Add(7)),
        op(2, 3, OpKind::Abort),
    ]);
    let out = rt.submit(fx.services[0], &1u64, chain).await.unwrap();
    assert!(
        matches!(out, Err(AbortReason::User { ref service, .. }) if service == "s2"),
        "{out:?}"
    );
    let (t0, t1) = (fx.tables[0], fx.tables[1]);
    let (s0, s1) = (fx.services[0], fx.services[1]);
    let seen: Vec<i64> = rt
        .query(&[s0, s1], move |v| {
            if v.is(s0) {
                v.get(t0, &1).copied()
            } else {
                v.get(t1, &2).copied()
            }
        })
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(seen, vec![5, 7], "the partial chain stays applied");
    rt.stop();
}
