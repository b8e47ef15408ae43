//! Checkpoints fall due by epochs since the last *completed* checkpoint, so recovery stays
//! bounded however often the process restarts, even when restarts keep killing checkpoints.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{MemoryStorage, Storage, StorageError};
use txn::{ClusterPlacement, LoopbackLink, Runtime, RuntimeConfig};

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

/// How long completing a checkpoint takes in [`SlowWrites`].
const WRITE: Duration = Duration::from_millis(200);

/// A `MemoryStorage` in which completing a checkpoint takes `WRITE`; it notes when each
/// completion began and ended.
struct SlowWrites {
    inner: MemoryStorage,
    writes: Mutex<Vec<(Instant, Instant)>>,
}

impl Delegate for SlowWrites {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn name(&self) -> &'static str {
        "slow-writes"
    }
    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let began = Instant::now();
        std::thread::sleep(WRITE);
        self.inner.complete_checkpoint(checkpoint_epoch)?;
        self.writes.lock().push((began, Instant::now()));
        Ok(())
    }
    fn checkpoints_have_own_writer(&self) -> bool {
        // Appends go on while a checkpoint completes.
        true
    }
}

/// Runs single-request epochs, a checkpoint falling due every 2 epochs, until 4 checkpoints
/// are complete; returns the pauses between one checkpoint's end and the next one's start.
/// With `cluster`, the runtime is a cluster's (every partition on its own node).
async fn pauses_between_checkpoints(rest_factor: u32, cluster: bool) -> Vec<Duration> {
    let fx = build(1, 2);
    let storage = Arc::new(Delegating(SlowWrites {
        inner: MemoryStorage::new(),
        writes: Mutex::new(Vec::new()),
    }));
    let mut config = RuntimeConfig {
        storage: storage.clone(),
        checkpoint_every_epochs: 2,
        checkpoint_rest_factor: rest_factor,
        ..RuntimeConfig::in_memory()
    };
    if cluster {
        let owners = vec!["a".to_string(); fx.app.n_partitions_total() as usize];
        config = config.cluster(ClusterPlacement::new(
            "a",
            owners,
            Arc::new(LoopbackLink::new()),
        ));
    }
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(120);
    while storage.writes.lock().len() < 4 {
        assert!(Instant::now() < give_up, "4 checkpoints did not complete");
        let outcome = rt
            .client()
            .submit_raw(fx.services[0], &0u64, bump())
            .await
            .unwrap();
        assert!(outcome.committed());
    }
    rt.shutdown().await;
    let writes = storage.writes.lock();
    writes.windows(2).map(|w| w[1].0 - w[0].1).collect()
}

// Goal: with the duty-cycle bound, a checkpoint whose write takes WRITE is followed by at
// least 2 × WRITE without one, however many epochs fall due meanwhile (without it the next
// begins about one epoch after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_checkpoints_rest_between_writes() {
    let pauses = pauses_between_checkpoints(2, false).await;
    for pause in &pauses {
        assert!(
            *pause >= 2 * WRITE,
            "a checkpoint began {pause:?} after the one before completed (< 2 × {WRITE:?}): {pauses:?}"
        );
    }
}

// Goal: the bound off (0) keeps the old schedule: by epochs alone, checkpoints back to back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_factor_zero_checkpoints_by_epochs_alone() {
    let pauses = pauses_between_checkpoints(0, false).await;
    let shortest = pauses.iter().min().copied().unwrap();
    assert!(
        shortest < 2 * WRITE,
        "without the bound a checkpoint waited {shortest:?} after the one before: {pauses:?}"
    );
}

// Goal: a cluster runtime ignores the bound (its failover replays the log since the latest
// checkpoint): checkpoints by epochs alone even with the factor set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_checkpoints_by_epochs_alone() {
    let pauses = pauses_between_checkpoints(2, true).await;
    let shortest = pauses.iter().min().copied().unwrap();
    assert!(
        shortest < 2 * WRITE,
        "a cluster's checkpoint waited {shortest:?} after the one before: {pauses:?}"
    );
}
