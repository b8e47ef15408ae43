//! The store lease a runtime takes: a second runtime on the same store is refused (or waits and
//! takes over), a runtime whose lease was taken over is fenced and stops accepting writes with
//! nothing of it interleaved in the log, a clean shutdown hands the lease back, and a store
//! without leases keeps working unfenced.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{MemoryStorage, Storage, StorageError};
use txn::{LeaseConfig, LeaseStatus, Runtime, RuntimeConfig, TxnError};

/// A lease held under `holder` that renews so rarely that no renewal happens during a test,
/// unless `ttl` is short.
fn lease(holder: &str, ttl: Duration) -> LeaseConfig {
    LeaseConfig {
        holder: holder.to_string(),
        ttl,
        renew_every: ttl / 2,
        wait_for_lease: None,
    }
}

/// Starts the fixture's application on a new handle on `store`, holding `lease`.
async fn start(
    fx: &Fixture,
    store: &MemoryStorage,
    lease: LeaseConfig,
) -> Result<Runtime<ChainApp>, TxnError> {
    let config = RuntimeConfig {
        lease: Some(lease),
        ..RuntimeConfig::with_storage(Arc::new(store.clone()))
    };
    Runtime::start(fx.app.clone(), config).await
}

fn bump(key: u64) -> Ev {
    op0(key, OpKind::Add(1))
}

/// Adds one to each of `keys` in service 0, each in its own committed transaction.
async fn bump_keys(fx: &Fixture, client: &txn::Client<ChainApp>, keys: std::ops::Range<u64>) {
    for key in keys {
        let outcome = client.submit_raw(fx.services[0], &key, bump(key)).await;
        assert!(outcome.unwrap().committed(), "bump of key {key}");
    }
}

const LONG: Duration = Duration::from_secs(600);

// Goal: while one runtime holds the store's lease, a second runtime on the same store does not
// start, and its error names the holder and how long the lease still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_is_refused_while_the_lease_runs() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let first = start(&fx, &store, lease("first", LONG)).await.unwrap();
    assert_eq!(first.stats().lease_status(), LeaseStatus::Held { term: 1 });
    let second = start(&fx, &store, lease("second", LONG)).await;
    match second {
        Err(TxnError::LeaseHeld {
            holder,
            term,
            remaining_ms,
        }) => {
            assert_eq!((holder.as_str(), term), ("first", 1));
            assert!(remaining_ms > 0 && remaining_ms <= LONG.as_millis() as u64);
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second runtime started while the first held the lease"),
    }
    first.shutdown().await;
}

// Goal: a standby configured to wait takes the lease once the dead holder's lease runs out,
// and recovers everything the holder acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_standby_takes_over_after_the_lease_runs_out() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let ttl = Duration::from_millis(300);
    let first = start(&fx, &store, lease("first", ttl)).await.unwrap();
    let client = first.client();
    bump_keys(&fx, &client, 0..10u64).await;
    // The holder dies: it stops renewing, and hands nothing back.
    drop(client);
    drop(first);
    let mut standby = lease("standby", ttl);
    standby.wait_for_lease = Some(Duration::from_secs(30));
    let second = start(&fx, &store, standby)
        .await
        .expect("the standby takes over once the lease runs out");
    assert_eq!(second.stats().lease_status(), LeaseStatus::Held { term: 2 });
    let client = second.client();
    for key in 0..10u64 {
        let read = client
            .submit_raw(fx.services[0], &key, read0(key))
            .await
            .unwrap();
        assert_eq!(
            read.result,
            Ok(Some(vec![1])),
            "key {key} after the take-over"
        );
    }
    second.shutdown().await;
}

// Goal: once another handle takes the lease over, the deposed runtime's next append is
// refused by the store, the request's outcome is unknown, the runtime accepts no more writes,
// its stats say which term fenced it, and nothing it sequenced after the take-over is in the
// log, while the new holder's appends are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_runtime_is_fenced_and_writes_nothing() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let rt = start(&fx, &store, lease("old", LONG)).await.unwrap();
    let client = rt.client();
    bump_keys(&fx, &client, 0..5u64).await;
    // Steal it: end the running lease under its holder's name, then take it with a new term.
    let thief = store.clone();
    thief.acquire_lease("old", Duration::ZERO).unwrap();
    assert_eq!(thief.acquire_lease("thief", LONG).unwrap(), 2);
    let last_before = store.last_epoch().unwrap().expect("epochs were logged");
    thief
        .append_epoch(last_before + 1, b"the new holder's epoch")
        .unwrap();

    for key in 0..5u64 {
        let result = client.submit_raw(fx.services[0], &key, bump(key)).await;
        let Err(TxnError::OutcomeUnknown { cause, .. }) = result else {
            panic!("submission {key} after the take-over: {result:?}");
        };
        let TxnError::Storage(message) = *cause else {
            panic!("submission {key}: cause {cause:?}");
        };
        assert!(
            message.contains("term 2"),
            "the error names the new term: {message}"
        );
    }
    assert_eq!(
        rt.stats().lease_status(),
        LeaseStatus::Fenced { by_term: 2 }
    );
    assert_eq!(rt.stats().lease_status().to_string(), "fenced by term 2");
    let mut logged = Vec::new();
    store
        .read_epochs(last_before + 1, &mut |epoch, batch| {
            logged.push((epoch, batch.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        logged,
        vec![(last_before + 1, b"the new holder's epoch".to_vec())],
        "only the new holder wrote after the take-over"
    );
    rt.shutdown().await;
    // The deposed runtime did not hand back a lease it no longer held.
    match store.clone().acquire_lease("someone", LONG) {
        Err(StorageError::LeaseHeld { holder, term, .. }) => {
            assert_eq!((holder.as_str(), term), ("thief", 2));
        }
        other => panic!("the thief's lease after the old runtime stopped: {other:?}"),
    }
}

// Goal: a clean shutdown hands the lease back, so the next runtime starts at once instead of
// waiting for the lease to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_hands_the_lease_back() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let first = start(&fx, &store, lease("first", LONG)).await.unwrap();
    first.shutdown().await;
    let second = start(&fx, &store, lease("second", LONG))
        .await
        .expect("the lease was handed back at shutdown");
    assert_eq!(second.stats().lease_status(), LeaseStatus::Held { term: 2 });
    second.shutdown().await;
}

// Goal: a runtime that took the lease but failed to start (here its recovery meets a damaged
// log record) hands the lease back, so another runtime need not wait for it to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_fails_to_start_hands_the_lease_back() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let first = start(&fx, &store, lease("first", LONG)).await.unwrap();
    bump_keys(&fx, &first.client(), 0..3u64).await;
    first.shutdown().await;
    assert!(store.corrupt_log_record(1), "epoch 1 is logged");
    match start(&fx, &store, lease("failing", LONG)).await {
        Err(TxnError::Recovery(_)) => {}
        Err(other) => panic!("refused for another reason than recovery: {other}"),
        Ok(_) => panic!("a runtime started on a damaged log"),
    }
    let term = store
        .acquire_lease("next", LONG)
        .expect("the failed runtime handed its lease back");
    assert_eq!(term, 3, "taken from `failing`, which held term 2");
}

/// A memory store seen through a wrapper: without a lease (the trait's default), or with a
/// first log read (recovery's) that takes `delay`, after which another holder tries to take
/// the lease; what it got is kept in `intruder`.
struct Wrapped {
    inner: MemoryStorage,
    leases: bool,
    delay: Option<Duration>,
    slowed: std::sync::atomic::AtomicBool,
    intruder: std::sync::Mutex<Option<Result<u64, StorageError>>>,
}

impl Wrapped {
    fn without_lease(inner: MemoryStorage) -> Self {
        Self::new(inner, false, None)
    }

    fn new(inner: MemoryStorage, leases: bool, delay: Option<Duration>) -> Self {
        Wrapped {
            inner,
            leases,
            delay,
            slowed: std::sync::atomic::AtomicBool::new(false),
            intruder: std::sync::Mutex::new(None),
        }
    }
}

impl Delegate for Wrapped {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn name(&self) -> &'static str {
        "wrapped"
    }
    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let first = !self.slowed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(delay) = self.delay.filter(|_| first) {
            // Fault injection, not synchronization: recovery is made longer than the lease.
            std::thread::sleep(delay);
            let attempt = self
                .inner
                .acquire_lease("intruder", Duration::from_secs(60));
            *self.intruder.lock().unwrap() = Some(attempt);
        }
        self.inner.read_epochs(from, visit)
    }
    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        if !self.leases {
            return Err(StorageError::LeaseUnsupported { backend: "wrapped" });
        }
        self.inner.acquire_lease(holder, ttl)
    }
}

// Goal: a store without leases (`LeaseUnsupported`) still runs the runtime, unfenced, and the
// stats say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_leases_runs_unfenced() {
    let fx = build(1, 2);
    let config = RuntimeConfig {
        lease: Some(lease("only", LONG)),
        ..RuntimeConfig::with_storage(Arc::new(Delegating(Wrapped::without_lease(
            MemoryStorage::new(),
        ))))
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    assert_eq!(rt.stats().lease_status(), LeaseStatus::Unfenced);
    let outcome = rt
        .client()
        .submit_raw(fx.services[0], &1u64, bump(1))
        .await
        .unwrap();
    assert!(outcome.committed());
    rt.shutdown().await;
}

// Goal: an embedded (redb) store reopened after its process went away is taken at once, with a
// newer term, although the previous holder's lease had not run out: redb locks its files for
// one process, so that holder cannot still be writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_is_taken_at_once_after_its_process_went_away() {
    let fx = build(1, 2);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = txn::storage::EmbeddedStorage::open(dir.path()).unwrap();
        // A holder from another process, whose lease would run for ten minutes.
        assert_eq!(store.acquire_lease("another-process", LONG).unwrap(), 1);
    }
    let config = RuntimeConfig {
        lease: Some(lease("restarted", LONG)),
        ..RuntimeConfig::durable(dir.path()).unwrap()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    assert_eq!(rt.stats().lease_status(), LeaseStatus::Held { term: 2 });
    rt.shutdown().await;
}

// Goal: a recovery that takes longer than the lease's length keeps the lease (it is renewed
// while recovery runs), so no other holder can take the store meanwhile, and the runtime
// accepts writes once it has started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_longer_than_the_lease_keeps_it() {
    let fx = build(1, 2);
    let store = MemoryStorage::new();
    let first = start(&fx, &store, lease("first", LONG)).await.unwrap();
    bump_keys(&fx, &first.client(), 0..3u64).await;
    first.shutdown().await;

    let ttl = Duration::from_secs(1);
    let slow = Arc::new(Delegating(Wrapped::new(store.clone(), true, Some(3 * ttl))));
    let config = RuntimeConfig {
        lease: Some(LeaseConfig {
            holder: "slow".into(),
            ttl,
            renew_every: ttl / 10,
            wait_for_lease: None,
        }),
        ..RuntimeConfig::with_storage(slow.clone())
    };
    let runtime = Runtime::start(fx.app.clone(), config)
        .await
        .expect("the runtime starts after its slow recovery");
    match slow.intruder.lock().unwrap().take() {
        Some(Err(StorageError::LeaseHeld { holder, .. })) => assert_eq!(holder, "slow"),
        other => panic!("another holder got the store during recovery: {other:?}"),
    }
    // `first` held term 1 and handed it back; `slow` took term 2 and kept it.
    assert_eq!(
        runtime.stats().lease_status(),
        LeaseStatus::Held { term: 2 }
    );
    bump_keys(&fx, &runtime.client(), 3..6u64).await;
    runtime.shutdown().await;
}
