//! Provenance and time travel (`txn::history`): a row's versions and readers across many
//! epochs, the serial fallback and a restart, checked against the outcomes the live runtime
//! reported; as-of queries against snapshots taken live; a replayed transaction's steps and
//! abort reason; and what retention keeps.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::history::{Access, Change, History, HistoryError, ReplayOutcome};
use txn::storage::MemoryStorage;
use txn::{
    AbortReason, App, AppBuilder, AppDef, Client, Field, Outcome, Retention, Runtime,
    RuntimeConfig, SerialPos, ServiceRef, Table,
};

struct HistApp;

impl App for HistApp {
    type Event = Ev;
    type Output = i64;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    hits: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Op {
    /// Writes `value` (hits 0).
    Put(i64),
    /// Reads the row and outputs its value (-1 if missing).
    Read,
    /// Reads the row and writes value + 1: contended, so it loses conflicts.
    Increment,
    /// `hits += delta` (a merge-able delta).
    Hit(i64),
    /// Reads the row, then aborts with kind "refused".
    Refuse,
}

/// A chain of ops, each a step in the partition of its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ev {
    ops: Vec<(u64, Op)>,
    idx: usize,
}

const HITS: Field<Counter> = txn::field!(Counter, hits);

struct Fixture {
    app: Arc<AppDef<HistApp>>,
    service: ServiceRef,
    table: Table<u64, Counter>,
}

fn build() -> Fixture {
    let mut b = AppBuilder::<HistApp>::new();
    let service = b.service("accounts", 2);
    let table = b.table::<u64, Counter>(service, "rows");
    b.handler(service, move |ctx, ev| {
        let (key, op) = &ev.ops[ev.idx];
        match op {
            Op::Put(value) => ctx.put(
                table,
                *key,
                Counter {
                    value: *value,
                    hits: 0,
                },
            )?,
            Op::Read => {
                let value = ctx.get(table, key)?.map_or(-1, |row| row.value);
                ctx.set_output(value);
            }
            Op::Increment => {
                let row = ctx
                    .get(table, key)?
                    .unwrap_or(Counter { value: 0, hits: 0 });
                let value = row.value + 1;
                ctx.put(table, *key, Counter { value, ..row })?;
            }
            Op::Hit(delta) => ctx.add(table, key, HITS, *delta)?,
            Op::Refuse => {
                ctx.get(table, key)?;
                return Err(ctx.abort_with("refused", format!("key {key} refused")));
            }
        }
        if ev.idx + 1 < ev.ops.len() {
            let next = Ev {
                ops: ev.ops.clone(),
                idx: ev.idx + 1,
            };
            ctx.emit_raw(service, &ev.ops[ev.idx + 1].0, next);
        }
        Ok(())
    });
    Fixture {
        app: b.build().expect("valid test app"),
        service,
        table,
    }
}

fn config(storage: &Arc<MemoryStorage>, retention: Option<Retention>) -> RuntimeConfig {
    RuntimeConfig {
        checkpoint_every_epochs: 2,
        history_retention: retention,
        ..RuntimeConfig::with_storage(storage.clone())
    }
}

async fn start(
    f: &Fixture,
    storage: &Arc<MemoryStorage>,
    retention: Option<Retention>,
) -> Runtime<HistApp> {
    Runtime::start(f.app.clone(), config(storage, retention))
        .await
        .expect("runtime starts")
}

fn chain(ops: Vec<(u64, Op)>) -> Ev {
    Ev { ops, idx: 0 }
}

async fn submit(f: &Fixture, client: &Client<HistApp>, ev: Ev) -> Outcome<i64> {
    let key = ev.ops[0].0;
    client
        .submit_raw(f.service, &key, ev)
        .await
        .expect("submitted")
}

/// Submits `events` at once, so they share an epoch and contend.
async fn submit_all(f: &Fixture, client: &Client<HistApp>, events: Vec<Ev>) -> Vec<Outcome<i64>> {
    let mut handles = Vec::new();
    for ev in events {
        let client = client.clone();
        let service = f.service;
        handles.push(tokio::spawn(async move {
            let key = ev.ops[0].0;
            client
                .submit_raw(service, &key, ev)
                .await
                .expect("submitted")
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("submit task"));
    }
    out
}

/// What key 7's history must be: the committed transactions touching it, in serial order.
struct Expected {
    /// (serial position, event, outcome) of every committed transaction that touched key 7.
    touching: Vec<(SerialPos, Ev)>,
}

impl Expected {
    fn record(&mut self, ev: &Ev, outcome: &Outcome<i64>) {
        if outcome.committed() && ev.ops.iter().any(|(k, _)| *k == 7) {
            let pos = outcome.serial_pos.expect("committed has a serial position");
            self.touching.push((pos, ev.clone()));
        }
    }
}

/// One round of traffic on keys 7 and 8: plain writes, reads, deltas, a contended burst of
/// increments (conflicts, so some commit in the serial fallback) and a refused chain.
async fn traffic(f: &Fixture, client: &Client<HistApp>, round: i64, expected: &mut Expected) {
    let mut events = vec![
        chain(vec![(7, Op::Put(100 * round))]),
        chain(vec![(8, Op::Read), (7, Op::Read)]),
        chain(vec![(7, Op::Hit(round))]),
        chain(vec![(8, Op::Put(round)), (7, Op::Refuse)]),
    ];
    for ev in events.drain(..) {
        let outcome = submit(f, client, ev.clone()).await;
        expected.record(&ev, &outcome);
    }
    let burst: Vec<Ev> = (0..6)
        .map(|i| chain(vec![(8 + i, Op::Read), (7, Op::Increment)]))
        .collect();
    let outcomes = submit_all(f, client, burst.clone()).await;
    for (ev, outcome) in burst.iter().zip(&outcomes) {
        expected.record(ev, outcome);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_history_lists_every_committed_write_and_its_readers_across_a_restart() {
    let f = build();
    let storage = Arc::new(MemoryStorage::new());
    let mut expected = Expected {
        touching: Vec::new(),
    };
    for incarnation in 0..2 {
        let rt = start(&f, &storage, Some(Retention::Everything)).await;
        let client = rt.client();
        for round in 1..=4 {
            traffic(&f, &client, incarnation * 10 + round, &mut expected).await;
        }
        rt.shutdown().await;
    }
    expected.touching.sort_by_key(|(pos, _)| *pos);

    let history = History::open(f.app.clone(), storage.clone()).expect("history opens");
    let row = history.row_history(f.table, &7).await.expect("row history");
    // Writers: every committed transaction whose ops write key 7, in serial order.
    let writers: Vec<SerialPos> = expected
        .touching
        .iter()
        .filter(|(_, ev)| {
            ev.ops
                .iter()
                .any(|(k, op)| *k == 7 && !matches!(op, Op::Read | Op::Refuse))
        })
        .map(|(pos, _)| *pos)
        .collect();
    let seen: Vec<SerialPos> = row
        .versions
        .iter()
        .map(|v| SerialPos {
            epoch: v.writer.epoch,
            pass: v.writer.pass,
            seq: v.writer.seq,
        })
        .collect();
    assert_eq!(
        seen, writers,
        "the row's versions are its committed writes in serial order"
    );
    assert!(
        row.versions.iter().any(|v| v.writer.pass == 1),
        "some writes committed in the serial fallback"
    );
    assert!(
        row.versions
            .iter()
            .any(|v| matches!(&v.change, Change::Delta { field, delta } if field == "hits" && *delta == 12)),
        "the deltas are listed"
    );
    check_readers(&expected, &row);
}

/// Every committed transaction that read key 7 is listed under the latest write before it in
/// serial order (or before the first write), and only there.
fn check_readers(expected: &Expected, row: &txn::history::RowHistory) {
    let mut latest_writer: Option<SerialPos> = None;
    let mut n_readers = 0;
    for (pos, ev) in &expected.touching {
        let reads = ev
            .ops
            .iter()
            .any(|(k, op)| *k == 7 && matches!(op, Op::Read | Op::Increment));
        if reads {
            n_readers += 1;
            let readers = match latest_writer {
                None => &row.read_before_first_write,
                Some(w) => {
                    let v = row
                        .versions
                        .iter()
                        .find(|v| {
                            (v.writer.epoch, v.writer.pass, v.writer.seq)
                                == (w.epoch, w.pass, w.seq)
                        })
                        .expect("the writer is a version");
                    &v.readers
                }
            };
            assert!(
                readers
                    .iter()
                    .any(|r| (r.epoch, r.pass, r.seq) == (pos.epoch, pos.pass, pos.seq)),
                "reader {pos:?} is listed under the version it read ({latest_writer:?})"
            );
        }
        if ev
            .ops
            .iter()
            .any(|(k, op)| *k == 7 && !matches!(op, Op::Read))
        {
            latest_writer = Some(*pos);
        }
    }
    let listed = row.read_before_first_write.len()
        + row.versions.iter().map(|v| v.readers.len()).sum::<usize>();
    assert_eq!(listed, n_readers, "no other readers are listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_as_of_matches_snapshots_taken_live() {
    let f = build();
    let storage = Arc::new(MemoryStorage::new());
    let rt = start(&f, &storage, Some(Retention::Everything)).await;
    let client = rt.client();
    let table = f.table;
    let snapshot = move |view: &txn::ReadView<'_>| {
        let mut rows: Vec<(u64, Counter)> =
            view.iter(table).map(|(k, v)| (*k, v.clone())).collect();
        rows.sort_by_key(|(k, _)| *k);
        rows
    };
    let mut live = Vec::new();
    let mut expected = Expected {
        touching: Vec::new(),
    };
    for round in 1..=5 {
        traffic(&f, &client, round, &mut expected).await;
        // Nothing else is in flight: the state seen now is the state as of the last epoch
        // that ran a transaction.
        let last = submit(&f, &client, chain(vec![(9, Op::Put(round))])).await;
        let rows = client.query(&[f.service], snapshot).await.expect("query");
        live.push((last.tid.epoch(), rows));
    }
    rt.shutdown().await;

    let history = History::open(f.app.clone(), storage.clone()).expect("history opens");
    for (epoch, rows) in &live {
        let past = history
            .query_as_of(*epoch, &[f.service], snapshot)
            .await
            .expect("as-of query");
        assert_eq!(&past, rows, "the state as of epoch {epoch}");
    }
    let empty = history
        .query_as_of(0, &[f.service], snapshot)
        .await
        .expect("epoch 0");
    assert!(
        empty.iter().all(Vec::is_empty),
        "nothing before the first epoch"
    );
    let last_epoch = history.last_epoch().expect("last epoch");
    match history
        .query_as_of(last_epoch + 1, &[f.service], snapshot)
        .await
    {
        Err(HistoryError::EpochOutside {
            epoch,
            last_epoch: last,
        }) => {
            assert_eq!((epoch, last), (last_epoch + 1, last_epoch));
        }
        other => panic!(
            "an epoch after the log is refused, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_tid_reproduces_each_step_and_the_abort_reason() {
    let f = build();
    let storage = Arc::new(MemoryStorage::new());
    let rt = start(&f, &storage, Some(Retention::Everything)).await;
    let client = rt.client();
    submit(&f, &client, chain(vec![(7, Op::Put(5))])).await;
    let refused = submit(&f, &client, chain(vec![(8, Op::Put(1)), (7, Op::Refuse)])).await;
    let read = submit(&f, &client, chain(vec![(7, Op::Read)])).await;
    rt.shutdown().await;
    let reason = refused.result.clone().expect_err("the chain is refused");
    assert!(matches!(&reason, AbortReason::User { kind, .. } if kind == "refused"));

    let history = History::open(f.app.clone(), storage.clone()).expect("history opens");
    let replay = history.replay_tid(refused.tid).await.expect("replay");
    assert_eq!(
        replay.outcome,
        ReplayOutcome::Aborted {
            pass: refused
                .serial_pos
                .expect("a handler abort has a position")
                .pass,
            reason: reason.clone()
        }
    );
    assert_eq!(replay.steps.len(), 2, "{replay:#?}");
    let (first, second) = (&replay.steps[0], &replay.steps[1]);
    assert_eq!((first.wave, second.wave), (0, 1));
    assert!(
        matches!(&first.accesses[0], Access::Write { table, key, value: Some(_) }
        if table == "accounts.rows" && *key == serde_json::json!(8))
    );
    assert!(matches!(&first.accesses[1], Access::Emit { service, .. } if service == "accounts"));
    assert!(
        matches!(&second.accesses[0], Access::Read { key, value: Some(v), .. }
        if *key == serde_json::json!(7) && v["value"] == 5)
    );
    assert_eq!(second.aborted.as_ref(), Some(&reason));

    let replay = history.replay_tid(read.tid).await.expect("replay");
    assert_eq!(
        replay.outcome,
        ReplayOutcome::Committed {
            pass: 0,
            output: Some(serde_json::json!(5))
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retention_the_log_is_truncated_and_history_refused() {
    let f = build();
    for retention in [None, Some(Retention::Everything)] {
        let storage = Arc::new(MemoryStorage::new());
        let rt = start(&f, &storage, retention).await;
        let client = rt.client();
        for round in 1..=6 {
            submit(&f, &client, chain(vec![(7, Op::Put(round))])).await;
        }
        rt.shutdown().await;
        let history = History::open(f.app.clone(), storage.clone()).expect("history opens");
        let result = history.row_history(f.table, &7).await;
        match retention {
            None => assert!(
                matches!(result, Err(HistoryError::NotRetained { first_logged_epoch }) if first_logged_epoch > 1),
                "a truncated log is refused clearly: {result:?}"
            ),
            Some(_) => {
                let row = result.expect("retained history");
                assert_eq!(row.versions.len(), 6);
                assert_eq!(
                    row.versions[5].change,
                    Change::Put {
                        value: serde_json::json!({"value": 6, "hits": 0})
                    }
                );
            }
        }
    }
}

/// The value of key 7 in a state, from an as-of query's per-partition results.
fn value_of_7(f: &Fixture) -> impl Fn(&txn::ReadView<'_>) -> Option<i64> + use<> {
    let table = f.table;
    move |view: &txn::ReadView<'_>| view.get(table, &7).map(|row| row.value)
}

/// Counts the records of a store's epoch log.
fn log_records(storage: &dyn txn::storage::Storage) -> usize {
    let mut n = 0;
    storage
        .read_epochs(0, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .expect("log reads");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_retention_keeps_its_window_across_truncation_and_restarts() {
    const WINDOW: u64 = 10;
    const CHECKPOINT_EVERY: u64 = 2;
    let f = build();
    let storage = Arc::new(MemoryStorage::new());
    let base = Arc::new(MemoryStorage::new());
    // (epoch, tid, value) of every committed write of key 7.
    let mut puts = Vec::new();
    // The first incarnation keeps no history: the next one builds its base from the checkpoint.
    for (incarnation, retention) in [
        None,
        Some(Retention::Epochs(WINDOW)),
        Some(Retention::Epochs(WINDOW)),
    ]
    .into_iter()
    .enumerate()
    {
        let config = RuntimeConfig {
            checkpoint_every_epochs: CHECKPOINT_EVERY,
            history_retention: retention,
            history_base: Some(base.clone()),
            ..RuntimeConfig::with_storage(storage.clone())
        };
        let rt = Runtime::start(f.app.clone(), config)
            .await
            .expect("runtime starts");
        let client = rt.client();
        if let Some(&(_, _, value)) = puts.last() {
            let recovered = client
                .query(&[f.service], value_of_7(&f))
                .await
                .expect("query");
            assert!(
                recovered.contains(&Some(value)),
                "restart {incarnation} recovers key 7"
            );
        }
        for round in 0..25 {
            let value = 100 * incarnation as i64 + round;
            let outcome = submit(&f, &client, chain(vec![(7, Op::Put(value))])).await;
            assert!(outcome.committed());
            puts.push((outcome.tid.epoch(), outcome.tid, value));
        }
        rt.shutdown().await;
        // Many checkpoints later, the log and the base hold about the window, not every epoch.
        let bound = (WINDOW + 4 * CHECKPOINT_EVERY + 2) as usize;
        if retention.is_some() {
            assert!(log_records(storage.as_ref()) <= bound, "the log is bounded");
            assert!(
                log_records(base.as_ref()) <= bound,
                "the base's deltas are bounded"
            );
        }
    }
    let history = History::open_with_base(f.app.clone(), storage.clone(), base.clone())
        .expect("history opens");
    let first = history
        .first_retained_epoch()
        .expect("first retained epoch");
    let last = history.last_epoch().expect("last epoch");
    assert!(first > 1, "the window moved past the start");
    assert!(
        last + 1 - first >= WINDOW && last + 1 - first <= WINDOW + 4 * CHECKPOINT_EVERY,
        "epochs {first}..={last} retained for a window of {WINDOW}"
    );
    // The row's history is exactly its writes inside the window.
    let row = history.row_history(f.table, &7).await.expect("row history");
    let written: Vec<_> = row.versions.iter().map(|v| v.writer.tid).collect();
    let expected: Vec<_> = puts.iter().filter(|p| p.0 >= first).map(|p| p.1).collect();
    assert_eq!(written, expected, "the versions inside the window");
    // As-of queries from the base's epoch on see what the clients wrote.
    for epoch in first - 1..=last {
        let want = puts.iter().rfind(|p| p.0 <= epoch).map(|p| p.2);
        let past = history
            .query_as_of(epoch, &[f.service], value_of_7(&f))
            .await
            .expect("as-of query inside the window");
        assert!(
            past.contains(&want),
            "key 7 as of epoch {epoch}: {past:?}, want {want:?}"
        );
    }
    // Older epochs are refused, naming the oldest retained one.
    let old = history
        .query_as_of(first - 2, &[f.service], value_of_7(&f))
        .await;
    assert!(
        matches!(old, Err(HistoryError::NotRetained { first_logged_epoch }) if first_logged_epoch == first),
        "an as-of query before the window is refused: {:?}",
        old.map(|_| ())
    );
    let old_tid = puts.iter().find(|p| p.0 < first).expect("an old write").1;
    let replay = history.replay_tid(old_tid).await;
    assert!(
        matches!(replay, Err(HistoryError::NotRetained { first_logged_epoch }) if first_logged_epoch == first),
        "a transaction before the window is refused: {:?}",
        replay.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_retention_in_a_data_directory_is_found_by_open_dir() {
    let f = build();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut puts = Vec::new();
    for _restart in 0..2 {
        // A checkpoint every epoch: each delta has exactly one record key, no padding.
        let config = RuntimeConfig {
            checkpoint_every_epochs: 1,
            ..RuntimeConfig::durable_with_history(dir.path(), Retention::Epochs(4))
                .expect("store opens")
        };
        let rt = Runtime::start(f.app.clone(), config)
            .await
            .expect("runtime starts");
        let client = rt.client();
        for value in 0..12 {
            let outcome = submit(&f, &client, chain(vec![(7, Op::Put(value))])).await;
            puts.push(outcome.tid);
        }
        rt.shutdown().await;
    }
    let history = History::open_dir(f.app.clone(), dir.path()).expect("history opens");
    let first = history
        .first_retained_epoch()
        .expect("first retained epoch");
    assert!(first > 1, "the window moved");
    let row = history.row_history(f.table, &7).await.expect("row history");
    let written: Vec<_> = row.versions.iter().map(|v| v.writer.tid).collect();
    let expected: Vec<_> = puts.into_iter().filter(|t| t.epoch() >= first).collect();
    assert_eq!(written, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_retention_without_a_base_store_is_refused() {
    let f = build();
    let config = RuntimeConfig {
        history_retention: Some(Retention::Epochs(5)),
        ..RuntimeConfig::in_memory()
    };
    let result = Runtime::start(f.app.clone(), config).await;
    let error = result.err().expect("refused").to_string();
    assert!(error.contains("history_base"), "{error}");
}
