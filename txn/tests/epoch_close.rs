//! When the sequencer closes an epoch: by time (`epoch_duration`), by size (`epoch_txns_max`),
//! once it holds `epoch_split_txns` requests and half of all outstanding, or, once it holds
//! `epoch_quiet_close_txns` requests and as many as the epoch before it, as soon as the
//! submission queue goes quiet — so that under load the partitions do not sit idle waiting for
//! the timer.
//!
//! The tokio clock is paused: it moves only when every task waits for a timer, so an epoch that
//! waited for its timer shows as at least `epoch_duration` of tokio time, and one that closed on
//! a quiet queue as less.

use crate::common::*;
use std::time::Duration;
use txn::{Request, Runtime, RuntimeConfig};

const EPOCH_DURATION: Duration = Duration::from_millis(10);

/// A runtime closing early at `quiet_close` requests (0: never), never by a split.
async fn runtime(fx: &Fixture, quiet_close: usize) -> Runtime<ChainApp> {
    split_runtime(fx, quiet_close, 0, EPOCH_DURATION).await
}

/// A runtime closing early on a quiet queue at `quiet_close` requests and by a split at
/// `split` (0: never), with epochs of `epoch_duration`.
async fn split_runtime(
    fx: &Fixture,
    quiet_close: usize,
    split: usize,
    epoch_duration: Duration,
) -> Runtime<ChainApp> {
    let config = RuntimeConfig {
        epoch_duration,
        epoch_quiet_close_txns: quiet_close,
        epoch_split_txns: split,
        // The lease renews on a timer, which the paused clock would jump to.
        lease: None,
        ..RuntimeConfig::in_memory()
    };
    Runtime::start(fx.app.clone(), config).await.unwrap()
}

/// A write of 1 to `key`, routed to its partition.
fn write_of(fx: &Fixture, key: u64) -> Request<ChainApp> {
    let ev = op0(key, OpKind::Add(1));
    let (service, key) = fx.first_target(&ev);
    Request::raw(service, service.partition_of(&key), ev)
}

/// Submits `n` single-key writes as one batch and returns how much tokio time passed until
/// every outcome was in; the batch must be one epoch.
async fn tokio_time_to_outcomes(rt: &Runtime<ChainApp>, fx: &Fixture, n: u64) -> Duration {
    let batch: Vec<Request<ChainApp>> = (0..n).map(|key| write_of(fx, key)).collect();
    let started = tokio::time::Instant::now();
    let outcomes = rt.client().submit_many(batch).await;
    let waited = started.elapsed();
    let epochs: Vec<u64> = outcomes
        .iter()
        .map(|o| o.as_ref().expect("sequenced").tid.epoch())
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    for outcome in outcomes {
        let outcome = outcome.expect("sequenced");
        assert!(outcome.result.is_ok(), "{outcome:?}");
    }
    waited
}

// Goal: an epoch holding at least `epoch_quiet_close_txns` requests closes as soon as nothing
// more arrives, without waiting out `epoch_duration`.
#[tokio::test(start_paused = true)]
async fn a_full_enough_epoch_closes_when_the_queue_goes_quiet() {
    let fx = build(1, 4);
    let rt = runtime(&fx, 8).await;
    let waited = tokio_time_to_outcomes(&rt, &fx, 8).await;
    assert!(
        waited < EPOCH_DURATION,
        "the epoch waited {waited:?} for its timer"
    );
    rt.shutdown().await;
}

// Goal: below `epoch_quiet_close_txns` requests, or with it off, an epoch still collects
// requests for its whole `epoch_duration` (the quiet close only cuts waits under load).
#[tokio::test(start_paused = true)]
async fn a_small_epoch_or_one_without_quiet_close_waits_for_its_timer() {
    let fx = build(1, 4);
    for (n, quiet_close) in [(8, 9), (8, 0)] {
        let rt = runtime(&fx, quiet_close).await;
        let waited = tokio_time_to_outcomes(&rt, &fx, n).await;
        assert!(
            waited >= EPOCH_DURATION,
            "{n} requests, quiet close at {quiet_close}: the epoch closed after {waited:?}"
        );
        rt.shutdown().await;
    }
}

// Goal: an epoch closes early only once it holds as many requests as the epoch before it, so
// the clients of a closed loop coming back are not split over two epochs (and two log writes).
#[tokio::test(start_paused = true)]
async fn an_epoch_smaller_than_the_last_waits_for_its_timer() {
    let fx = build(1, 4);
    let rt = runtime(&fx, 2).await;
    let first = tokio_time_to_outcomes(&rt, &fx, 8).await;
    assert!(first < EPOCH_DURATION, "8 ≥ 2 closes early: {first:?}");
    let second = tokio_time_to_outcomes(&rt, &fx, 4).await;
    assert!(
        second >= EPOCH_DURATION,
        "4 after an epoch of 8 waits for the timer: {second:?}"
    );
    rt.shutdown().await;
}

/// Submits `n` single-key writes, each on its own (as `n` closed-loop clients would), all queued
/// before the sequencer looks, and returns how many went into each epoch, in epoch order.
async fn epoch_sizes_of_separate_submissions(
    rt: &Runtime<ChainApp>,
    fx: &Fixture,
    n: u64,
) -> Vec<usize> {
    let submissions: Vec<_> = (0..n)
        .map(|key| {
            let (client, request) = (rt.client(), write_of(fx, key));
            tokio::spawn(async move { client.submit_request(request).await })
        })
        .collect();
    let mut per_epoch = std::collections::BTreeMap::<u64, usize>::new();
    for submission in submissions {
        let outcome = submission.await.unwrap().expect("sequenced");
        assert!(outcome.result.is_ok(), "{outcome:?}");
        *per_epoch.entry(outcome.tid.epoch()).or_default() += 1;
    }
    per_epoch.into_values().collect()
}

// Goal: an epoch holding `epoch_split_txns` requests closes once it holds as many as are still
// outstanding elsewhere (here: queued) and those are as many as the floor too, so 16 waiting
// clients split into two epochs of 8; without the split, or with a floor above 8 (neither half
// would reach it), they all go into one.
#[tokio::test(start_paused = true)]
async fn an_epoch_holding_half_the_outstanding_requests_closes() {
    let fx = build(1, 4);
    for (split, expected) in [
        (4, vec![8, 8]),
        (8, vec![8, 8]),
        (9, vec![16]),
        (0, vec![16]),
    ] {
        let rt = split_runtime(&fx, 4, split, EPOCH_DURATION).await;
        let sizes = epoch_sizes_of_separate_submissions(&rt, &fx, 16).await;
        assert_eq!(sizes, expected, "split at {split}");
        rt.shutdown().await;
    }
}

// Goal: after a turn longer than `EPOCH_SPLIT_TURNS_MAX` epoch durations the next epoch does
// not split (its clients' round trip is a small share of such a cycle). With epochs of 1 µs any
// real turn is that long, so only the first epoch, after no turn at all, splits. (No bound on
// a real turn is asserted the other way: on a slow machine it would be flaky.)
#[tokio::test(start_paused = true)]
async fn after_a_long_turn_an_epoch_does_not_split() {
    let fx = build(1, 4);
    let rt = split_runtime(&fx, 4, 4, Duration::from_micros(1)).await;
    let first = epoch_sizes_of_separate_submissions(&rt, &fx, 16).await;
    assert_eq!(first, vec![8, 8], "the first epoch follows no turn");
    let second = epoch_sizes_of_separate_submissions(&rt, &fx, 16).await;
    assert_eq!(second, vec![16], "after a long turn");
    rt.shutdown().await;
}
