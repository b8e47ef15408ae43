//! Limited scans (`scan_limit`, `scan_first`): they merge the transaction's own writes, and
//! they conflict only with writes up to the last row they returned. With many scans in one
//! epoch, each conflicts with exactly the lower-TID writes inside its own range.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use txn::bench_api::{BenchTable, SeqSet};
use txn::storage::MemoryStorage;
use txn::{
    App, AppBuilder, Client, Outcome, Runtime, RuntimeConfig, SerialHints, ServiceRef, TxnError,
};

struct Queue;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    Insert(u64),
    /// Inserts `insert`, deletes `delete`, then returns the first `limit` keys of 0..1000.
    WriteThenScan {
        insert: u64,
        delete: u64,
        limit: usize,
    },
    /// Returns the first key of 0..1000.
    First,
    /// Scans `lo..hi`, or `lo..=hi` when `inclusive`, and returns the keys it saw.
    Scan {
        lo: u64,
        hi: u64,
        inclusive: bool,
    },
}

impl App for Queue {
    type Event = Ev;
    type Output = Vec<u64>;
}

fn app() -> (Arc<txn::AppDef<Queue>>, ServiceRef) {
    let mut b = AppBuilder::<Queue>::new();
    let q = b.service("queue", 1);
    let rows = b.ordered_table::<u64, u64>(q, "rows");
    b.handler(q, move |ctx, ev| {
        match ev {
            Ev::Insert(k) => ctx.put(rows, *k, *k)?,
            Ev::WriteThenScan {
                insert,
                delete,
                limit,
            } => {
                ctx.put(rows, *insert, *insert)?;
                ctx.delete(rows, delete)?;
                let keys = ctx.scan_limit(rows, 0..1000, *limit)?;
                ctx.set_output(keys.into_iter().map(|(k, _)| k).collect());
            }
            Ev::First => {
                let first = ctx.scan_first(rows, 0..1000)?;
                ctx.set_output(first.into_iter().map(|(k, _)| k).collect());
            }
            Ev::Scan { lo, hi, inclusive } => {
                let rows = if *inclusive {
                    ctx.scan(rows, *lo..=*hi)?
                } else {
                    ctx.scan(rows, *lo..*hi)?
                };
                ctx.set_output(rows.into_iter().map(|(k, _)| k).collect());
            }
        }
        Ok(())
    });
    (b.build().unwrap(), q)
}

async fn start() -> (Runtime<Queue>, ServiceRef) {
    let (app, q) = app();
    let config = RuntimeConfig {
        storage: Arc::new(MemoryStorage::new()),
        epoch_duration: Duration::from_millis(10),
        serial_hints: SerialHints::Off,
        ..RuntimeConfig::in_memory()
    };
    (Runtime::start(app, config).await.unwrap(), q)
}

// Goal: a limited scan sees the transaction's own inserts and not its own deletes, in key
// order, and stops at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_scan_merges_own_writes_in_key_order() {
    let (rt, q) = start().await;
    let c = rt.client();
    for k in [10u64, 20, 30, 40] {
        assert!(
            c.submit_raw(q, &0u64, Ev::Insert(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let ev = Ev::WriteThenScan {
        insert: 15,
        delete: 20,
        limit: 3,
    };
    let out = c.submit_raw(q, &0u64, ev).await.unwrap();
    assert_eq!(out.result.unwrap(), Some(vec![10, 15, 30]));
    rt.shutdown().await;
}

/// Runs `Insert(insert)` and then `First` in the same epoch (the insert with the lower TID)
/// over committed rows {10, 20}; returns what `First` saw and whether it had to be re-run.
async fn insert_then_first(insert: u64) -> (Vec<u64>, bool) {
    let (rt, q) = start().await;
    let c = rt.client();
    for k in [10u64, 20] {
        assert!(
            c.submit_raw(q, &0u64, Ev::Insert(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let (ins, first) = tokio::join!(
        c.submit_raw(q, &0u64, Ev::Insert(insert)),
        c.submit_raw(q, &0u64, Ev::First)
    );
    let (ins, first) = (ins.unwrap(), first.unwrap());
    rt.shutdown().await;
    assert_eq!(ins.tid.epoch(), first.tid.epoch(), "one epoch");
    assert!(ins.tid < first.tid, "the insert has the lower TID");
    let rerun = first.serial_pos.expect("committed").pass > 0;
    (first.result.unwrap().unwrap(), rerun)
}

// Goal: a lower-TID insert behind the first row does not disturb `scan_first` (it commits in
// the parallel pass and sees 10); one before it does (it is re-run and sees the new head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_first_conflicts_only_with_writes_up_to_the_head() {
    let (seen, rerun) = insert_then_first(15).await;
    assert_eq!(seen, vec![10]);
    assert!(
        !rerun,
        "an insert behind the head must not make scan_first stale"
    );

    let (seen, rerun) = insert_then_first(5).await;
    assert_eq!(seen, vec![5], "the serial order puts the insert first");
    assert!(rerun, "an insert before the head makes scan_first stale");
}

/// Submits `events` together, each sequenced after the one before it (the first poll of a
/// submission sequences it, and they are first polled in order), and waits for every outcome.
async fn submit_in_order(
    c: &Client<Queue>,
    q: ServiceRef,
    events: &[Ev],
) -> Vec<Outcome<Vec<u64>>> {
    type Submission<'a> =
        Pin<Box<dyn Future<Output = Result<Outcome<Vec<u64>>, TxnError>> + Send + 'a>>;
    let mut pending: Vec<Submission<'_>> = events
        .iter()
        .map(|ev| Box::pin(c.submit_raw(q, &0u64, ev.clone())) as Submission<'_>)
        .collect();
    let mut outcomes: Vec<Option<Outcome<Vec<u64>>>> = vec![None; events.len()];
    std::future::poll_fn(|cx| {
        for (future, outcome) in pending.iter_mut().zip(&mut outcomes) {
            if outcome.is_none()
                && let Poll::Ready(result) = future.as_mut().poll(cx)
            {
                *outcome = Some(result.unwrap());
            }
        }
        if outcomes.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outcomes.into_iter().map(Option::unwrap).collect()
}

/// Whether `key` lies in the range of scan `ev`.
fn in_range(ev: &Ev, key: u64) -> bool {
    match *ev {
        Ev::Scan { lo, hi, inclusive } => key >= lo && (key < hi || inclusive && key == hi),
        _ => false,
    }
}

// Goal: with eight inserts and eight scans in one epoch (inserts first, so with lower TIDs),
// exactly the scans whose range holds an inserted key run again, and every scan sees the keys
// of its range in the serial order; bounds that just touch an inserted key count only when
// inclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scan_conflicts_with_the_lower_writes_in_its_own_range() {
    let (rt, q) = start().await;
    let c = rt.client();
    let inserted: Vec<u64> = (0..8).map(|i| 100 * i + 50).collect();
    let mut events: Vec<Ev> = inserted.iter().map(|k| Ev::Insert(*k)).collect();
    // Ranges that hold an inserted key, miss it, or end exactly on it.
    let scans = [
        (0, 49, true),
        (0, 50, false),
        (0, 50, true),
        (140, 160, false),
        (160, 240, false),
        (250, 250, true),
        (251, 349, true),
        (300, 800, false),
    ];
    events.extend(scans.iter().map(|(lo, hi, inclusive)| Ev::Scan {
        lo: *lo,
        hi: *hi,
        inclusive: *inclusive,
    }));
    let outcomes = submit_in_order(&c, q, &events).await;
    rt.shutdown().await;
    let epoch = outcomes[0].tid.epoch();
    assert!(outcomes.iter().all(|o| o.tid.epoch() == epoch), "one epoch");
    let (mut reruns, mut stayed) = (0usize, 0usize);
    for (ev, out) in events.iter().zip(&outcomes).skip(inserted.len()) {
        let lower_inserts_inside = events
            .iter()
            .zip(&outcomes)
            .filter(|(e, o)| matches!(e, Ev::Insert(k) if in_range(ev, *k)) && o.tid < out.tid)
            .count();
        let rerun = out.serial_pos.expect("committed").pass > 0;
        assert_eq!(rerun, lower_inserts_inside > 0, "{ev:?}");
        if rerun {
            reruns += 1;
        } else {
            stayed += 1;
        }
        let expected: Vec<u64> = events
            .iter()
            .zip(&outcomes)
            .filter_map(|(e, o)| match e {
                Ev::Insert(k) if in_range(ev, *k) && o.serial_pos < out.serial_pos => Some(*k),
                _ => None,
            })
            .collect();
        assert_eq!(out.result.clone().unwrap(), Some(expected), "{ev:?}");
    }
    assert!(
        reruns >= 2 && stayed >= 2,
        "{reruns} scans ran again, {stayed} did not"
    );
}

/// An ordered table holding the even keys `0, 2, .., 98` (each with ten times its key),
/// committed.
fn evens() -> BenchTable<u64, u64> {
    let mut table = BenchTable::new(true);
    for key in (0..100).step_by(2) {
        table.write(0, key, Some(key * 10));
    }
    table.commit(&SeqSet::with_len(1));
    table
}

// Goal: a scan returns exactly the committed rows of its range up to its limit, whatever its
// bounds (included, excluded, none) and wherever they fall (on a row, between rows, before
// the first, past the last): the scan searches from the start bound alone and stops at the
// end bound itself.
#[test]
fn a_scan_returns_the_rows_of_its_range_up_to_its_limit() {
    let mut table = evens();
    let model: BTreeMap<u64, u64> = (0..100).step_by(2).map(|k| (k, k * 10)).collect();
    let bounds = |k| [Bound::Included(k), Bound::Excluded(k), Bound::Unbounded];
    let keys = [0, 1, 2, 50, 51, 98, 99, 120];
    let mut n_scans = 0;
    for (lo, hi) in keys.iter().flat_map(|l| keys.iter().map(move |h| (*l, *h))) {
        for (lo, hi) in bounds(lo)
            .into_iter()
            .flat_map(|l| bounds(hi).map(|h| (l, h)))
        {
            let inverted = match (lo, hi) {
                (Bound::Excluded(l), Bound::Excluded(h)) => l >= h,
                (
                    Bound::Included(l) | Bound::Excluded(l),
                    Bound::Included(h) | Bound::Excluded(h),
                ) => l > h,
                _ => false,
            };
            if inverted {
                continue;
            }
            for limit in [None, Some(1), Some(3)] {
                let expected: Vec<(u64, u64)> = model
                    .range((lo, hi))
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|(k, v)| (*k, *v))
                    .collect();
                let seq = n_scans % 64;
                let scanned = table.scan(seq, (lo, hi), limit);
                assert_eq!(scanned, expected, "{lo:?}..{hi:?} limit {limit:?}");
                n_scans += 1;
            }
        }
    }
    table.commit(&SeqSet::with_len(64));
}

// Goal: an inverted range is refused as `BTreeMap::range` refuses it (a handler panic, which
// aborts the transaction), not read as empty.
#[test]
#[should_panic(expected = "range start is greater than range end")]
fn a_scan_of_an_inverted_range_panics() {
    let mut table = evens();
    table.scan(1, (Bound::Included(10), Bound::Excluded(5)), None);
}

// Goal: a transaction running alone (the serial pass) conflicts with nothing, so its scans
// leave no record for a decide phase that never comes, and they still see its own writes.
#[test]
fn a_scan_of_a_transaction_running_alone_records_nothing() {
    let mut table = evens();
    let range = (Bound::Included(10), Bound::Excluded(20));
    table.set_solo(true);
    assert_eq!(table.scan(0, range, Some(2)), vec![(10, 100), (12, 120)]);
    assert!(!table.has_access(), "a scan alone left a record");
    table.write(0, 11, Some(7));
    assert_eq!(table.scan(0, range, Some(2)), vec![(10, 100), (11, 7)]);
    table.commit_all(false);
    table.set_solo(false);
    let after = table.scan(1, range, None);
    assert_eq!(
        after,
        vec![(10, 100), (12, 120), (14, 140), (16, 160), (18, 180)]
    );
    table.commit(&SeqSet::with_len(2));
}
