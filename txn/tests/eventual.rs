//! The `eventual` baseline runs the same application without the transaction layer: chains
//! complete and report their outcome, but an abort late in a chain leaves the earlier steps'
//! writes behind — the anomaly the consistency checkers are meant to count.

use crate::common::*;
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
    let out = rt.submit_raw(fx.services[0], &1u64, chain).await.unwrap();
    assert_eq!(out, Ok(Some(vec![0, 0, 0])));
    let read = Ev::chain(vec![op(0, 1, OpKind::Read), op(1, 2, OpKind::Read)]);
    assert_eq!(
        rt.submit_raw(fx.services[0], &1u64, read).await.unwrap(),
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
    let out = rt.submit_raw(fx.services[0], &1u64, chain).await.unwrap();
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
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(seen, vec![5, 7], "the partial chain stays applied");
    rt.stop();
}

// ---------------------------------------------------------------------------------------------
// The durable mode (`EventualRuntime::start_durable`): each step's writes are in the log before
// its events are delivered and before its client hears back, written in group commits.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use txn::TxnError;
use txn::eventual::EventualLogRecord;
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{FaultyStorage, MemoryStorage, Storage, StorageError};

const N_PARTS: u32 = 4;

/// What the log holds for one row: the batch it first appeared in and its latest value.
#[derive(Clone, Copy, Debug)]
struct Logged {
    first_batch: u64,
    value: Option<i64>,
}

/// A `MemoryStorage` whose appends take `delay` (an fsync) and which records, once an append has
/// returned, every row it made durable, keyed by `(service index, key)` of the chain app.
struct ObservedStorage {
    inner: MemoryStorage,
    delay: Duration,
    appends: AtomicU64,
    durable: Mutex<HashMap<(u32, u64), Logged>>,
}

impl ObservedStorage {
    fn new(delay: Duration) -> Arc<Delegating<Self>> {
        Arc::new(Delegating(ObservedStorage {
            inner: MemoryStorage::new(),
            delay,
            appends: AtomicU64::new(0),
            durable: Mutex::new(HashMap::new()),
        }))
    }

    fn logged(&self, svc: u32, key: u64) -> Option<Logged> {
        self.durable.lock().get(&(svc, key)).copied()
    }

    /// The last durable value of every row, as a recovery would rebuild it.
    fn rows(&self) -> HashMap<(u32, u64), Option<i64>> {
        self.durable
            .lock()
            .iter()
            .map(|(k, l)| (*k, l.value))
            .collect()
    }
}

fn record_rows(
    durable: &mut HashMap<(u32, u64), Logged>,
    bytes: &[u8],
    epoch: u64,
) -> Result<(), String> {
    let record = EventualLogRecord::decode(bytes)?;
    assert_eq!(record.batch, epoch, "a record carries its batch number");
    for (key, value) in record.rows {
        let (gp, table, key) = EventualLogRecord::split_key(&key).ok_or("short row key")?;
        assert_eq!(table, 0, "the chain app has one table per service");
        let key: u64 = rmp_serde::from_slice(key).map_err(|e| e.to_string())?;
        let value: Option<i64> = value
            .map(|v| rmp_serde::from_slice(&v))
            .transpose()
            .map_err(|e| e.to_string())?;
        durable
            .entry((gp / N_PARTS, key))
            .and_modify(|l| l.value = value)
            .or_insert(Logged {
                first_batch: record.batch,
                value,
            });
    }
    Ok(())
}

impl Delegate for ObservedStorage {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn name(&self) -> &'static str {
        "observed"
    }
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        Delegate::append_epochs(self, &[(epoch, batch)])
    }
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        // A model of fsync latency, not a wait for anything: the write is "in flight" for
        // `delay`, so anything released meanwhile is released early, and the checks (made when
        // a reply arrives) hold whatever the timing.
        std::thread::sleep(self.delay);
        self.inner.append_epochs(epochs)?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        let mut durable = self.durable.lock();
        for (epoch, bytes) in epochs {
            record_rows(&mut durable, bytes, *epoch).expect("a decodable eventual record");
        }
        Ok(())
    }
}

/// The final value of `key` in every service, read from a runtime.
async fn read_all(
    rt: &EventualRuntime<ChainApp>,
    fx: &Fixture,
    keys: std::ops::Range<u64>,
) -> HashMap<(u32, u64), Option<i64>> {
    let mut out = HashMap::new();
    for (svc, (s, t)) in fx.services.iter().zip(&fx.tables).enumerate() {
        let (s, t) = (*s, *t);
        let keys = keys.clone();
        for part in rt
            .query(&[s], move |v| {
                keys.clone()
                    .filter(|k| s.partition_of(k) == v.partition())
                    .map(|k| (k, v.get(t, &k).copied()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap()
        {
            for (k, value) in part {
                out.insert((svc as u32, k), value);
            }
        }
    }
    out
}

// Goal: a client reply never arrives before the append holding its chain's writes has returned,
// and a step's events are not delivered before its own write is durable: each next step of a
// chain writes in a strictly later batch. The storage sleeps 5 ms per append before writing, so
// a reply or an event released early is caught while the write is still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_reply_and_events_wait_for_the_append() {
    let fx = build(3, N_PARTS);
    let storage = ObservedStorage::new(Duration::from_millis(5));
    let rt = Arc::new(EventualRuntime::start_durable(fx.app.clone(), storage.clone()).unwrap());
    let n_chains = 120u64;
    let mut tasks = Vec::new();
    for i in 0..n_chains {
        let (rt, storage, s0) = (rt.clone(), storage.clone(), fx.services[0]);
        tasks.push(tokio::spawn(async move {
            // Every chain writes its own key in each service, so each value ends at exactly 1.
            let chain = Ev::chain(vec![
                op(0, i, OpKind::Add(1)),
                op(1, i, OpKind::Add(1)),
                op(2, i, OpKind::Add(1)),
            ]);
            let out = rt.submit_raw(s0, &i, chain).await.unwrap();
            assert_eq!(out, Ok(Some(vec![0, 0, 0])), "chain {i}");
            // Checked the moment the reply is in: every write of the chain is durable already.
            let logged: Vec<Logged> = (0..3)
                .map(|svc| {
                    storage.logged(svc, i).unwrap_or_else(|| {
                        panic!("chain {i} answered before its write in s{svc} was durable")
                    })
                })
                .collect();
            for (svc, l) in logged.iter().enumerate() {
                assert_eq!(l.value, Some(1), "chain {i}, s{svc}");
            }
            for w in logged.windows(2) {
                assert!(
                    w[0].first_batch < w[1].first_batch,
                    "chain {i}: a step ran before the previous step's write was durable \
                     ({logged:?})"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = rt.durability_stats().expect("durable mode");
    assert_eq!(stats.steps, 3 * n_chains);
    assert_eq!(stats.appends, storage.appends.load(Ordering::SeqCst));
    Arc::try_unwrap(rt).ok().unwrap().shutdown().await;
}

// Goal: group commit. Many chains in flight at once share durable writes: far fewer appends than
// steps, and every step is still made durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_group_commit_shares_appends() {
    let fx = build(3, N_PARTS);
    let storage = ObservedStorage::new(Duration::from_millis(2));
    let rt = Arc::new(EventualRuntime::start_durable(fx.app.clone(), storage.clone()).unwrap());
    let seed = seed("durable_group_commit_shares_appends");
    let mut rng = rng(seed);
    let n_chains = 400u64;
    let mut tasks = Vec::new();
    for i in 0..n_chains {
        use rand::Rng;
        let ops: Vec<Op> = (0..3)
            .map(|svc| op(svc, rng.random_range(0..50), OpKind::Add(1)))
            .collect();
        let (rt, s0, k0) = (rt.clone(), fx.services[0], ops[0].key);
        tasks.push(tokio::spawn(async move {
            let out = rt.submit_raw(s0, &k0, Ev::chain(ops)).await.unwrap();
            assert!(out.is_ok(), "chain {i}: {out:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = rt.durability_stats().expect("durable mode");
    let appends = storage.appends.load(Ordering::SeqCst);
    eprintln!("{stats:?}");
    assert_eq!(stats.steps, 3 * n_chains);
    assert_eq!(
        stats.held_steps,
        3 * n_chains,
        "every step wrote, so every step waited"
    );
    assert_eq!(stats.appends, appends);
    assert!(
        appends * 10 <= stats.steps,
        "{appends} appends for {} steps: writes are not grouped",
        stats.steps
    );
    // Every increment is in the log: the durable rows sum to the number of steps per service.
    let rows = storage.rows();
    for svc in 0..3 {
        let sum: i64 = rows
            .iter()
            .filter(|((s, _), _)| *s == svc)
            .filter_map(|(_, v)| *v)
            .sum();
        assert_eq!(sum, n_chains as i64, "s{svc}");
    }
    Arc::try_unwrap(rt).ok().unwrap().shutdown().await;
}

/// Runs `n` transfers (s0 key a → s1 key b) after funding every s0 key with 100, concurrently.
async fn run_transfers(rt: Arc<EventualRuntime<ChainApp>>, fx: &Fixture, seed: u64, n: u64) {
    use rand::Rng;
    let n_keys = 40u64;
    let funding: Vec<_> = (0..n_keys)
        .map(|k| {
            let (rt, s0) = (rt.clone(), fx.services[0]);
            tokio::spawn(async move {
                let chain = Ev::chain(vec![op(0, k, OpKind::Add(100))]);
                assert!(rt.submit_raw(s0, &k, chain).await.unwrap().is_ok());
            })
        })
        .collect();
    for t in funding {
        t.await.unwrap();
    }
    let mut rng = rng(seed);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (a, b, x) = (
            rng.random_range(0..n_keys),
            rng.random_range(0..n_keys),
            rng.random_range(1..=10),
        );
        let (rt, s0) = (rt.clone(), fx.services[0]);
        tasks.push(tokio::spawn(async move {
            let chain = Ev::chain(vec![op(0, a, OpKind::Add(-x)), op(1, b, OpKind::Add(x))]);
            let out = rt.submit_raw(s0, &a, chain).await.unwrap();
            assert!(out.is_ok(), "{out:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// Goal: the durable mode changes when outputs leave, not what the baseline computes: transfers
// with no aborts conserve the total in both modes and end in the same state (additions commute),
// and the log holds exactly that state (last logged value of every row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_computes_what_memory_mode_computes() {
    let seed = seed("durable_mode_computes_what_memory_mode_computes");
    let n = 600;
    let fx = build(2, N_PARTS);
    let memory = Arc::new(EventualRuntime::start(fx.app.clone()));
    run_transfers(memory.clone(), &fx, seed, n).await;
    let storage = ObservedStorage::new(Duration::from_micros(300));
    let durable =
        Arc::new(EventualRuntime::start_durable(fx.app.clone(), storage.clone()).unwrap());
    run_transfers(durable.clone(), &fx, seed, n).await;

    let in_memory = read_all(&memory, &fx, 0..40).await;
    let in_durable = read_all(&durable, &fx, 0..40).await;
    let total: i64 = in_durable.values().flatten().sum();
    assert_eq!(total, 40 * 100, "transfers conserve the total");
    assert_eq!(in_durable, in_memory, "both modes end in the same state");
    let logged: HashMap<_, _> = storage
        .rows()
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .collect();
    let live: HashMap<_, _> = in_durable
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .collect();
    assert_eq!(logged, live, "the log holds the final state");
    assert!(memory.durability_stats().is_none());
    Arc::try_unwrap(durable).ok().unwrap().shutdown().await;
    Arc::try_unwrap(memory).ok().unwrap().stop();
}

// Goal: when the log cannot be written, nothing of the step gets out: its client gets
// `TxnError::Storage`, its events are never delivered (the next service's row stays unwritten),
// and later requests fail too, even read-only ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_append_failure_releases_nothing() {
    let fx = build(2, N_PARTS);
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.fail_all_appends();
    let rt = EventualRuntime::start_durable(fx.app.clone(), Arc::new(storage.clone())).unwrap();
    let chain = Ev::chain(vec![op(0, 7, OpKind::Add(5)), op(1, 8, OpKind::Add(5))]);
    let out = rt.submit_raw(fx.services[0], &7u64, chain).await;
    assert!(matches!(out, Err(TxnError::Storage(_))), "{out:?}");
    let (t1, s1) = (fx.tables[1], fx.services[1]);
    let seen: Vec<i64> = rt
        .query(&[s1], move |v| v.get(t1, &8).copied())
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert!(seen.is_empty(), "the emitted step never ran: {seen:?}");
    let read = Ev::chain(vec![op(0, 7, OpKind::Read)]);
    let out = rt.submit_raw(fx.services[0], &7u64, read).await;
    assert!(matches!(out, Err(TxnError::Storage(_))), "{out:?}");
    assert!(storage.inner().last_epoch().unwrap().is_none());
    rt.shutdown().await;
}
