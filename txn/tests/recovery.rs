//! Durability at the runtime level: restart from checkpoint + log replay rebuilds the exact
//! state, and a storage failure stops acknowledgements without losing acknowledged work.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use txn::storage::{FaultyStorage, MemoryStorage, Storage};
use txn::{Runtime, RuntimeConfig, TxnError};

async fn run_workload(rt: &Runtime<ChainApp>, fx: &Fixture, seed: u64, n: usize) -> usize {
    let client = rt.client();
    let mut rng = rng(seed);
    let mut committed = 0;
    for _ in 0..n {
        let ev = random_chain(&mut rng, 3, 40, 4);
        let (svc, key) = fx.first_target(&ev);
        committed += usize::from(client.submit_raw(svc, &key, ev).await.unwrap().committed());
    }
    committed
}

// Goal: restarting from the latest checkpoint plus the log after it yields the identical state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint_and_log_rebuilds_identical_state() {
    let seed = seed("checkpoint-restart");
    let fx = build(3, 4);
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 7,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let committed = run_workload(&rt, &fx, seed, 300).await;
    let before = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let report = rt.recovery_report().clone();
    let after = rt.client().state_hash().await.unwrap();
    assert_eq!(after, before, "seed {seed}: recovered state differs");
    let ckpt = report.checkpoint_epoch.expect("a checkpoint was written");
    assert!(report.rows_loaded > 0, "{report:?}");
    assert!(
        report.epochs_replayed < 7 + 2,
        "only the log after the checkpoint is replayed: {report:?}"
    );
    let first_logged = {
        let mut first = None;
        storage
            .read_epochs(0, &mut |e, _| {
                first.get_or_insert(e);
                Ok(())
            })
            .unwrap();
        first
    };
    assert!(
        first_logged.is_none_or(|e| e > ckpt),
        "the log below the checkpoint is truncated (first logged {first_logged:?}, checkpoint {ckpt})"
    );
    // The restarted runtime continues where the old one stopped.
    assert!(run_workload(&rt, &fx, seed ^ 1, 20).await > 0);
    rt.shutdown().await;
    eprintln!("checkpoint-restart: {committed} committed, {report:?}");
}

// Goal: replay follows what the log says about each epoch (its fallback and its serial hints),
// not the restarted runtime's configuration: a log written with the serial fallback and every
// other transaction hinted, replayed by a runtime configured for next-epoch retries and no
// hints, rebuilds the identical state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_follows_the_logged_fallback_and_hints() {
    let seed = seed("replay-logged-mode");
    let fx = build(3, 4);
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 0,
        serial_hints: txn::SerialHints::Sample { every: 2 },
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    // Concurrent clients, so that epochs hold several transactions that conflict.
    let fx = Arc::new(fx);
    let tasks: Vec<_> = (0..8u64)
        .map(|c| {
            let (client, fx) = (rt.client(), fx.clone());
            tokio::spawn(async move {
                let mut rng = rng(seed.wrapping_add(c));
                for _ in 0..40 {
                    let ev = random_chain(&mut rng, 3, 12, 4);
                    let (svc, key) = fx.first_target(&ev);
                    client.submit_raw(svc, &key, ev).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let before = rt.client().state_hash().await.unwrap();
    let hinted = rt.stats().serial_hinted.load(Ordering::Relaxed);
    let conflicts = rt.stats().conflicts.load(Ordering::Relaxed);
    rt.shutdown().await;
    assert!(hinted > 0, "some transactions were hinted");
    assert!(conflicts > 0, "some transactions lost a conflict");

    let other = RuntimeConfig {
        fallback: txn::Fallback::NextEpoch,
        serial_hints: txn::SerialHints::Off,
        ..config
    };
    let rt = Runtime::start(fx.app.clone(), other).await.unwrap();
    let after = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    assert_eq!(
        after, before,
        "seed {seed}: replay diverged from the logged run"
    );
}

// Goal: when the log cannot be written, nothing more is acknowledged, and everything that was
// acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failure_stops_acks_and_loses_nothing_acknowledged() {
    let fx = build(2, 2);
    let memory = MemoryStorage::new();
    let faulty = Arc::new(FaultyStorage::new(memory.clone()));
    let config = RuntimeConfig {
        storage: faulty.clone(),
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let client = rt.client();
    let add = |k: u64| {
        Ev::chain(vec![Op {
            svc: 0,
            key: k,
            kind: OpKind::Add(1),
        }])
    };
    for k in 0..10 {
        assert!(
            client
                .submit_raw(fx.services[0], &k, add(k))
                .await
                .unwrap()
                .committed()
        );
    }
    let acked_hash = client.state_hash().await.unwrap();

    faulty.fail_all_appends();
    // The request may or may not be in the log: its outcome is unknown, with the storage error
    // as the cause.
    match client.submit_raw(fx.services[0], &1u64, add(1)).await {
        Err(TxnError::OutcomeUnknown { cause, .. }) => {
            assert!(matches!(*cause, TxnError::Storage(ref msg) if !msg.is_empty()))
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    // The runtime refuses further writes rather than acknowledging them.
    assert!(matches!(
        client.submit_raw(fx.services[0], &2u64, add(2)).await,
        Err(TxnError::OutcomeUnknown { cause, .. }) if matches!(*cause, TxnError::Storage(_))
    ));
    rt.shutdown().await;

    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(memory),
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    assert_eq!(rt.client().state_hash().await.unwrap(), acked_hash);
    rt.shutdown().await;
}

/// A store whose log writes wait while its gate is closed, like a disk that stalls, and which
/// remembers the most epochs one write carried.
struct GatedStorage {
    inner: MemoryStorage,
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    epochs_per_write_max: std::sync::atomic::AtomicUsize,
}

impl GatedStorage {
    fn new(inner: MemoryStorage) -> Self {
        Self {
            inner,
            closed: std::sync::Mutex::new(false),
            opened: std::sync::Condvar::new(),
            epochs_per_write_max: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl Storage for GatedStorage {
    fn name(&self) -> &'static str {
        "gated-memory"
    }
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), txn::storage::StorageError> {
        self.append_epochs(&[(epoch, batch)])
    }
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), txn::storage::StorageError> {
        let closed = self.closed.lock().unwrap();
        drop(self.opened.wait_while(closed, |closed| *closed).unwrap());
        self.epochs_per_write_max
            .fetch_max(epochs.len(), Ordering::SeqCst);
        self.inner.append_epochs(epochs)
    }
    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), txn::storage::StorageError>,
    ) -> Result<(), txn::storage::StorageError> {
        self.inner.read_epochs(from, visit)
    }
    fn last_epoch(&self) -> Result<Option<u64>, txn::storage::StorageError> {
        self.inner.last_epoch()
    }
    fn write_checkpoint_rows(
        &self,
        epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), txn::storage::StorageError> {
        self.inner.write_checkpoint_rows(epoch, rows)
    }
    fn complete_checkpoint(&self, epoch: u64) -> Result<(), txn::storage::StorageError> {
        self.inner.complete_checkpoint(epoch)
    }
    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), txn::storage::StorageError>,
    ) -> Result<Option<u64>, txn::storage::StorageError> {
        self.inner.read_latest_checkpoint(visit)
    }
    fn truncate_log_below(&self, epoch: u64) -> Result<(), txn::storage::StorageError> {
        self.inner.truncate_log_below(epoch)
    }
    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, txn::storage::StorageError> {
        self.inner.latest_checkpoint_epoch()
    }
    fn read_store_info(&self) -> Result<Option<Vec<u8>>, txn::storage::StorageError> {
        self.inner.read_store_info()
    }
    fn write_store_info(&self, info: &[u8]) -> Result<(), txn::storage::StorageError> {
        self.inner.write_store_info(info)
    }
}

// Goal: when the log is slower than execution, one durable write carries several epochs, and
// everything acknowledged is still recovered. The log stalls (its gate closed) until the
// sequencer has executed several epochs ahead of it; the next write must take them together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_log_group_commits_several_epochs_per_write() {
    let fx = Arc::new(build(2, 2));
    let memory = MemoryStorage::new();
    let storage = Arc::new(GatedStorage::new(memory.clone()));
    let config = RuntimeConfig {
        storage: storage.clone(),
        epoch_txns_max: 4,
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    storage.set_closed(true);
    let mut tasks = Vec::new();
    for k in 0..200u64 {
        let c = rt.client();
        let s0 = fx.services[0];
        tasks.push(tokio::spawn(async move {
            let ev = Ev::chain(vec![Op {
                svc: 0,
                key: k % 50,
                kind: OpKind::Add(1),
            }]);
            c.submit_raw(s0, &(k % 50), ev).await.unwrap().committed()
        }));
    }
    // Execution runs ahead of the stalled log (up to the in-flight bound): wait, bounded,
    // until three epochs have executed, then let the log go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rt.stats().epochs.load(Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "execution did not run ahead of a stalled log"
        );
        tokio::task::yield_now().await;
    }
    storage.set_closed(false);
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let hash = rt.client().state_hash().await.unwrap();
    let writes = rt
        .stats()
        .log_appends
        .load(std::sync::atomic::Ordering::Relaxed);
    let epochs = rt
        .stats()
        .log_epochs
        .load(std::sync::atomic::Ordering::Relaxed);
    rt.shutdown().await;
    assert!(
        epochs >= 50,
        "200 requests at 4 per epoch need at least 50 epochs, got {epochs}"
    );
    let grouped = storage.epochs_per_write_max.load(Ordering::SeqCst);
    assert!(
        grouped >= 2 && writes < epochs,
        "a stalled log must group epochs: at most {grouped} epochs per write ({epochs} epochs \
         in {writes} writes)"
    );
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(memory),
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    assert_eq!(rt.client().state_hash().await.unwrap(), hash);
    rt.shutdown().await;
}

// Goal: recovering from the log start when the log was truncated is refused with a clear error,
// not silently started from a partial state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_start_recovery_of_a_truncated_log_is_refused() {
    let fx = build(3, 2);
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage.clone()),
        checkpoint_every_epochs: 5,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    run_workload(&rt, &fx, 7, 40).await;
    rt.shutdown().await;
    let err = match Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            recover_from: txn::RecoverFrom::LogStart,
            ..config.clone()
        },
    )
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("a truncated log was replayed from its start"),
    };
    let msg = err.to_string();
    assert!(
        msg.contains("does not start at epoch 1") && msg.contains("no checkpoint"),
        "{msg}"
    );
    // Normal recovery (checkpoint + tail) still works and continues the epoch numbering.
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let last = rt.recovery_report().last_epoch;
    assert!(last >= 40, "{:?}", rt.recovery_report());
    assert!(run_workload(&rt, &fx, 8, 5).await > 0);
    rt.shutdown().await;
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(storage),
            checkpoint_every_epochs: 5,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    assert!(
        rt.recovery_report().last_epoch >= last + 5,
        "{:?}",
        rt.recovery_report()
    );
    rt.shutdown().await;
}
