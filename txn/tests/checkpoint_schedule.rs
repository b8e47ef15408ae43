//! Checkpoints fall due by epochs since the last *completed* checkpoint, so recovery stays
//! bounded however often the process restarts, even when restarts keep killing checkpoints.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{MemoryStorage, Storage, StorageError};
use txn::{Runtime, RuntimeConfig};

/// Epochs between checkpoints in these tests.
const EVERY: u64 = 10;
/// How many epochs a checkpoint takes to write: it completes only if the process lives until
/// `DURATION` epochs after its own are logged.
const DURATION: u64 = 3;
/// Requests per run, one epoch each (plus one epoch for the query that checks the recovered
/// state): fewer epochs than `EVERY`.
const RUN_EPOCHS: u64 = 6;

/// A process's view of a shared `MemoryStorage` in which writing a checkpoint takes `DURATION`
/// epochs, and which dies with the process: after `kill`, appends fail and a checkpoint not yet
/// done never completes.
struct SlowCheckpoints {
    inner: MemoryStorage,
    last_appended: AtomicU64,
    killed: AtomicBool,
    /// Wakes a waiting completion when an epoch is appended or the process is killed.
    changed: (Mutex<()>, Condvar),
}

impl SlowCheckpoints {
    fn new(inner: MemoryStorage) -> Self {
        let last = inner.last_epoch().unwrap().unwrap_or(0);
        Self {
            inner,
            last_appended: AtomicU64::new(last),
            killed: AtomicBool::new(false),
            changed: (Mutex::new(()), Condvar::new()),
        }
    }

    fn kill(&self) {
        let _guard = self.changed.0.lock();
        self.killed.store(true, Ordering::SeqCst);
        self.changed.1.notify_all();
    }

    fn killed_error(operation: &'static str) -> StorageError {
        StorageError::io("slow", operation, "the process was killed")
    }
}

impl Delegate for SlowCheckpoints {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn name(&self) -> &'static str {
        "slow-checkpoints"
    }
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        Delegate::append_epochs(self, &[(epoch, batch)])
    }
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        let _guard = self.changed.0.lock();
        if self.killed.load(Ordering::SeqCst) {
            return Err(Self::killed_error("append_epochs"));
        }
        self.inner.append_epochs(epochs)?;
        if let Some((last, _)) = epochs.last() {
            self.last_appended.store(*last, Ordering::SeqCst);
        }
        self.changed.1.notify_all();
        Ok(())
    }
    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let mut guard = self.changed.0.lock();
        let done = |s: &Self| s.last_appended.load(Ordering::SeqCst) >= checkpoint_epoch + DURATION;
        while !done(self) && !self.killed.load(Ordering::SeqCst) {
            self.changed.1.wait(&mut guard);
        }
        if done(self) {
            self.inner.complete_checkpoint(checkpoint_epoch)
        } else {
            Err(Self::killed_error("complete_checkpoint"))
        }
    }
    fn checkpoints_have_own_writer(&self) -> bool {
        // A completion waits for later appends, so it must not hold the appender's turn.
        true
    }
}

/// One increment of key 0 of service 0.
fn bump() -> Ev {
    Ev::chain(vec![Op {
        svc: 0,
        key: 0,
        kind: OpKind::Add(1),
    }])
}

// Goal: 30 runs of 7 epochs each (fewer than the 10 between checkpoints), each killed with its
// checkpoint lost unless 3 more epochs were logged after it: every recovery replays at most
// EVERY + DURATION epochs, and the recovered state is exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_stays_bounded_across_many_short_runs() {
    let fx = build(1, 2);
    let (app, counters, table) = (fx.app.clone(), fx.services[0], fx.tables[0]);
    let memory = MemoryStorage::new();
    let mut acknowledged = 0u64;
    let mut max_replayed = 0;
    for run in 0..30 {
        let storage = Arc::new(Delegating(SlowCheckpoints::new(memory.clone())));
        let config = RuntimeConfig {
            storage: storage.clone(),
            checkpoint_every_epochs: EVERY,
            ..RuntimeConfig::in_memory()
        };
        let rt = Runtime::start(app.clone(), config).await.unwrap();
        let report = rt.recovery_report().clone();
        max_replayed = max_replayed.max(report.epochs_replayed);
        assert!(
            report.epochs_replayed <= EVERY + DURATION,
            "run {run}: replayed {} epochs, more than {EVERY} + {DURATION}: {report:?}",
            report.epochs_replayed
        );
        let counts = rt
            .client()
            .query(&[counters], move |view| view.get(table, &0).copied())
            .await
            .unwrap();
        let recovered: i64 = counts.into_iter().flatten().sum();
        assert_eq!(recovered as u64, acknowledged, "run {run}: recovered state");
        for _ in 0..RUN_EPOCHS {
            // One request at a time: one epoch each.
            let outcome = rt
                .client()
                .submit_raw(counters, &0u64, bump())
                .await
                .unwrap();
            assert!(outcome.committed());
            acknowledged += 1;
        }
        storage.kill();
        rt.shutdown().await;
    }
    eprintln!("acknowledged {acknowledged}, at most {max_replayed} epochs replayed");
}
