//! Batch submission (`Client::submit_many`, `submit_many_with_ids`): every request of a batch
//! gets exactly the outcome it would have had alone — commits, aborts, conflicts, admission
//! refusals, duplicates and refused ids within the batch — and a batch larger than an epoch is
//! spread over several without losing or reordering any request.

use crate::common::*;
use txn::{AbortReason, Request, Runtime, RuntimeConfig, TxnError};

fn add(key: u64, delta: i64) -> Ev {
    op0(key, OpKind::Add(delta))
}

fn request(fx: &Fixture, ev: Ev) -> Request<ChainApp> {
    let (service, key) = fx.first_target(&ev);
    Request::raw(service, service.partition_of(&key), ev)
}

async fn value_of(rt: &Runtime<ChainApp>, fx: &Fixture, key: u64) -> i64 {
    let outcome = rt.client().submit_request(request(fx, read0(key))).await;
    outcome
        .expect("a read commits")
        .result
        .expect("a read commits")
        .expect("an output")[0]
}

// Goal: each request of a batch gets its own outcome, in order: commits, a handler abort, two
// conflicting writes of one key (both commit, one after the other), an oversized event refused
// on admission while the rest of the batch runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_a_batch_gets_its_own_outcome() {
    let fx = build(1, 4);
    let config = RuntimeConfig {
        request_bytes_max: 1024,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let oversized = Ev::chain(
        (0..200)
            .map(|key| Op {
                svc: 0,
                key,
                kind: OpKind::Read,
            })
            .collect(),
    );
    let batch = vec![
        request(&fx, add(1, 5)),
        request(&fx, op0(2, OpKind::Abort)),
        request(&fx, add(3, 7)),
        request(&fx, oversized),
        request(&fx, add(3, 11)),
    ];
    let outcomes = rt.client().submit_many(batch).await;
    assert_eq!(outcomes.len(), 5);
    let outcome = |i: usize| outcomes[i].as_ref().expect("sequenced");
    assert_eq!(outcome(0).result, Ok(Some(vec![0])));
    assert!(
        matches!(outcome(1).result, Err(AbortReason::User { .. })),
        "{:?}",
        outcome(1)
    );
    assert!(
        matches!(outcomes[3], Err(TxnError::RequestTooLarge { .. })),
        "{:?}",
        outcomes[3]
    );
    // The two adds of key 3: the lower TID reads 0, the other reads its write.
    let reads: Vec<_> = [2, 4].map(|i| outcome(i).result.clone()).into();
    assert_eq!(reads, [Ok(Some(vec![0])), Ok(Some(vec![7]))]);
    assert!(outcome(2).tid < outcome(4).tid, "sequenced in batch order");
    assert_eq!(value_of(&rt, &fx, 1).await, 5);
    assert_eq!(
        value_of(&rt, &fx, 2).await,
        0,
        "the aborted request wrote nothing"
    );
    assert_eq!(value_of(&rt, &fx, 3).await, 18);
    rt.shutdown().await;
}

// Goal: ids in a batch are exactly-once, also against each other: a repeated id with the same
// request gets the first one's outcome and runs once, with another request it is refused; a
// second submission of the whole batch executes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_within_a_batch_are_exactly_once() {
    let fx = build(1, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let batch = || {
        vec![
            (request_id(1), request(&fx, add(10, 1))),
            (request_id(1), request(&fx, add(10, 1))),
            (request_id(2), request(&fx, add(11, 1))),
            (request_id(1), request(&fx, add(12, 1))),
            (request_id(3), request(&fx, op0(13, OpKind::Abort))),
        ]
    };
    let first = rt.client().submit_many_with_ids(batch()).await;
    let ok = |i: usize| first[i].as_ref().expect("an outcome").clone();
    assert_eq!(ok(0), ok(1), "a duplicate gets the first one's outcome");
    assert_eq!(ok(0).result, Ok(Some(vec![0])));
    assert_eq!(ok(2).result, Ok(Some(vec![0])));
    assert!(
        matches!(first[3], Err(TxnError::RequestIdReused { id }) if id == request_id(1)),
        "{:?}",
        first[3]
    );
    assert!(matches!(ok(4).result, Err(AbortReason::User { .. })));
    let again = rt.client().submit_many_with_ids(batch()).await;
    for i in [0, 1, 2, 4] {
        assert_eq!(
            again[i].as_ref().ok(),
            Some(&ok(i)),
            "request {i} resubmitted"
        );
    }
    assert!(matches!(again[3], Err(TxnError::RequestIdReused { .. })));
    assert_eq!(value_of(&rt, &fx, 10).await, 1, "id 1 ran once");
    assert_eq!(value_of(&rt, &fx, 11).await, 1, "id 2 ran once");
    assert_eq!(
        value_of(&rt, &fx, 12).await,
        0,
        "the refused request never ran"
    );
    rt.shutdown().await;
}

// Goal: a batch larger than `epoch_txns_max` is sequenced over several epochs, in order, every
// request exactly once, and a duplicate id in a later epoch gets the earlier outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_an_epoch_spans_epochs_in_order() {
    let fx = build(1, 4);
    let config = RuntimeConfig {
        epoch_txns_max: 4,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let mut batch: Vec<_> = (0..10u64)
        .map(|key| (request_id(100 + key), request(&fx, add(key, 1))))
        .collect();
    batch.push((request_id(100), request(&fx, add(0, 1))));
    let outcomes = rt.client().submit_many_with_ids(batch).await;
    let tids: Vec<_> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("an outcome").tid)
        .collect();
    assert!(tids[..10].windows(2).all(|w| w[0] < w[1]), "{tids:?}");
    let epochs: std::collections::BTreeSet<u64> = tids.iter().map(|t| t.epoch()).collect();
    assert!(epochs.len() >= 3, "10 requests at 4 per epoch: {tids:?}");
    assert_eq!(tids[10], tids[0], "the duplicate got the first outcome");
    for key in 0..10 {
        assert_eq!(value_of(&rt, &fx, key).await, 1, "key {key} added once");
    }
    rt.shutdown().await;
}
