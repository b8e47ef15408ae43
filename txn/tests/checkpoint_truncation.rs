//! The log truncation after a checkpoint removes the covered log in bounded steps, so an epoch
//! waiting to be logged never waits behind the removal of thousands of epochs of records; and a
//! runtime stopped to be replaced abandons the checkpoint it is writing.

use crate::common::*;
use std::sync::Arc;

use parking_lot::Mutex;
use txn::limits::CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP;
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{MemoryStorage, Storage, StorageError};
use txn::{Runtime, RuntimeConfig};

/// Epochs between checkpoints: several truncation steps' worth.
const EVERY: u64 = 3 * CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP + 10;
/// Requests of the run, one epoch each: two checkpoints and their truncations.
const RUN_EPOCHS: u64 = 2 * EVERY + 40;

/// A `MemoryStorage` that records the epoch below which each truncation removed the log, the
/// checkpoint chunks written and completions, and the thread (name, nice value) each truncation
/// and chunk write ran on; with `gate`, its first checkpoint chunk write waits until the test
/// opens the gate; with `shared_writer`, its checkpoints do not have their own writer (as on
/// FoundationDB and the in-memory store).
#[derive(Default)]
struct RecordedTruncations {
    inner: MemoryStorage,
    belows: Mutex<Vec<u64>>,
    chunks: Mutex<Vec<u64>>,
    completed: Mutex<Vec<u64>>,
    gate: Option<Gate>,
    shared_writer: bool,
    truncating_threads: Mutex<Vec<(String, i32)>>,
    chunk_threads: Mutex<Vec<(String, i32)>>,
}

/// The calling thread's name and nice value (Linux: each thread has its own).
fn this_thread() -> (String, i32) {
    let name = std::thread::current().name().unwrap_or("").to_string();
    (name, own_nice())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn own_nice() -> i32 {
    // SAFETY: reads the calling thread's nice value (`who` 0: the caller); no memory is
    // handed over.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(not(target_os = "linux"))]
fn own_nice() -> i32 {
    0
}

/// Holds the first checkpoint chunk write: `entered` once it waits, until `open`.
#[derive(Default)]
struct Gate {
    entered: std::sync::atomic::AtomicBool,
    open: Mutex<bool>,
    opened: parking_lot::Condvar,
}

impl Delegate for RecordedTruncations {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn name(&self) -> &'static str {
        "recorded-truncations"
    }
    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        self.chunk_threads.lock().push(this_thread());
        let first = {
            let mut chunks = self.chunks.lock();
            chunks.push(checkpoint_epoch);
            chunks.len() == 1
        };
        if let (true, Some(gate)) = (first, &self.gate) {
            let mut open = gate.open.lock();
            gate.entered
                .store(true, std::sync::atomic::Ordering::Release);
            while !*open {
                gate.opened.wait(&mut open);
            }
        }
        self.inner.write_checkpoint_rows(checkpoint_epoch, rows)
    }
    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        self.completed.lock().push(checkpoint_epoch);
        self.inner.complete_checkpoint(checkpoint_epoch)
    }
    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        self.truncating_threads.lock().push(this_thread());
        self.belows.lock().push(epoch);
        self.inner.truncate_log_below(epoch)
    }
    fn checkpoints_have_own_writer(&self) -> bool {
        // By default as the embedded store: the checkpoint's writes do not take the log's
        // turn, its truncations must.
        !self.shared_writer
    }
}

// Goal: with checkpoints every 202 epochs (memory storage, so both complete at once), each truncation of the log removes at most
// CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP epochs' records, the steps follow one another without a
// gap, and together they remove everything the checkpoints cover (one call per checkpoint,
// removing 202 epochs at once, fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_truncation_after_a_checkpoint_goes_in_bounded_steps() {
    let fx = build(1, 2);
    let (counters, table) = (fx.services[0], fx.tables[0]);
    let storage = Arc::new(Delegating(RecordedTruncations::default()));
    let config = RuntimeConfig {
        storage: storage.clone(),
        checkpoint_every_epochs: EVERY,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    for _ in 0..RUN_EPOCHS {
        // One request at a time: one epoch each.
        let bump = Ev::chain(vec![Op {
            svc: 0,
            key: 0,
            kind: OpKind::Add(1),
        }]);
        let outcome = rt.client().submit_raw(counters, &0u64, bump).await.unwrap();
        assert!(outcome.committed());
    }
    // Shutting down joins the checkpoint thread, after its last checkpoint and truncation.
    let counts = rt
        .client()
        .query(&[counters], move |view| view.get(table, &0).copied())
        .await
        .unwrap();
    assert_eq!(counts.into_iter().flatten().sum::<i64>() as u64, RUN_EPOCHS);
    rt.shutdown().await;
    let belows = storage.belows.lock().clone();
    let covered = storage.inner.latest_checkpoint_epoch().unwrap().unwrap();
    assert!(
        covered >= 2 * EVERY,
        "two checkpoints were taken: {covered}"
    );
    assert_eq!(
        belows.last().copied(),
        Some(covered + 1),
        "the log below the latest checkpoint was removed: {belows:?}"
    );
    let mut previous = 1;
    for &below in &belows {
        assert!(
            below > previous && below - previous <= CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP,
            "a truncation step removed epochs {previous}..{below}, more than \
             {CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP}: {belows:?}"
        );
        previous = below;
    }
    let mut first_logged = None;
    storage
        .inner
        .read_epochs(0, &mut |epoch, _| {
            first_logged.get_or_insert(epoch);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        first_logged,
        Some(covered + 1),
        "the log starts after the checkpoint"
    );
}

/// Runs `epochs` one-request epochs on `storage` with `config`'s other settings, checkpointing
/// every `EVERY` epochs, and shuts down (which joins the checkpoint thread after its last
/// checkpoint and truncation).
async fn run_epochs(
    storage: Arc<Delegating<RecordedTruncations>>,
    config: RuntimeConfig,
    epochs: u64,
) {
    let fx = build(1, 2);
    let counters = fx.services[0];
    let config = RuntimeConfig {
        storage,
        checkpoint_every_epochs: EVERY,
        ..config
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    for _ in 0..epochs {
        let outcome = rt
            .client()
            .submit_raw(counters, &0u64, bump(0))
            .await
            .unwrap();
        assert!(outcome.committed());
    }
    rt.shutdown().await;
}

/// Checks that a checkpoint was written and every chunk of it on the checkpoint thread at nice
/// `want`.
fn assert_chunks_written_at(storage: &RecordedTruncations, want: i32) {
    let chunks = storage.chunk_threads.lock().clone();
    assert!(!chunks.is_empty(), "a checkpoint was written");
    for (name, got) in &chunks {
        assert_eq!(name, "vmsdb-checkpoint");
        assert_eq!(*got, want, "a chunk written at nice {got}, not {want}");
    }
}

/// The nice value the runtime's threads start with: the process's (the test thread's).
fn base_nice() -> i32 {
    this_thread().1
}

// Goal: on a store whose checkpoints have their own writer, the checkpoint thread writes its
// chunks at the configured priority (the default, `CHECKPOINT_NICE_DEFAULT` steps lower than
// the process, and an explicit 3), and the log's truncation after the checkpoint never runs on
// it: it runs on a thread of the process's priority, so the niced thread never holds the log
// appender's turn. Fails if the thread keeps its priority, or if it truncates the log itself.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_thread_runs_niced_and_leaves_the_log_to_a_normal_thread() {
    let base = base_nice();
    assert!(base < 19, "the tests run at nice {base}: nothing to lower");
    let default = RuntimeConfig::in_memory();
    assert_eq!(
        default.checkpoint_nice,
        txn::limits::CHECKPOINT_NICE_DEFAULT
    );
    for nice in [None, Some(3u8)] {
        let storage = Arc::new(Delegating(RecordedTruncations::default()));
        let mut config = RuntimeConfig::in_memory();
        if let Some(nice) = nice {
            config.checkpoint_nice = nice;
        }
        let steps = i32::from(config.checkpoint_nice);
        run_epochs(storage.clone(), config, EVERY + 10).await;
        let want = (base + steps).min(19);
        assert_chunks_written_at(&storage, want);
        let truncations = storage.truncating_threads.lock().clone();
        assert!(!truncations.is_empty(), "the log was truncated");
        for (name, got) in &truncations {
            assert_ne!(
                name, "vmsdb-checkpoint",
                "the niced thread truncated the log"
            );
            assert_eq!(*got, base, "{nice:?}: the log truncated at nice {got}");
        }
    }
}

// Goal: on a store whose checkpoints share the log's writer (FoundationDB, memory: every
// chunk write takes the log appender's turn), the checkpoint thread keeps the process's
// priority whatever `checkpoint_nice` says, so it never holds the log's turn at a low priority.
// Fails if the priority is lowered regardless of the store.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_thread_keeps_its_priority_where_checkpoints_share_the_log_writer() {
    let base = base_nice();
    // At 19 a lowered thread could not be told from one that kept its priority.
    assert!(
        base < 19,
        "the tests run at nice {base}: nothing could be lowered"
    );
    let storage = Arc::new(Delegating(RecordedTruncations {
        shared_writer: true,
        ..Default::default()
    }));
    let config = RuntimeConfig {
        checkpoint_nice: 19,
        ..RuntimeConfig::in_memory()
    };
    run_epochs(storage.clone(), config, EVERY + 10).await;
    assert_chunks_written_at(&storage, base);
    assert!(!storage.truncating_threads.lock().is_empty());
}

// Goal: a nice value past Linux's range is refused at start.
#[tokio::test]
async fn a_checkpoint_nice_past_19_is_refused() {
    let fx = build(1, 2);
    let config = RuntimeConfig {
        checkpoint_nice: txn::limits::CHECKPOINT_NICE_MAX + 1,
        ..RuntimeConfig::in_memory()
    };
    let err = Runtime::start(fx.app.clone(), config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("checkpoint_nice 20"), "{err}");
}

/// Rows the abandon test writes: more than one checkpoint chunk's worth.
const ABANDON_KEYS: u64 = 2 * txn::limits::CHECKPOINT_CHUNK_ROWS_MAX as u64 + 100;

/// Adds 1 to key `key` of the one counters service.
fn bump(key: u64) -> Ev {
    Ev::chain(vec![Op {
        svc: 0,
        key,
        kind: OpKind::Add(1),
    }])
}

// Goal: a runtime stopped to be replaced (`shutdown_keeping_lease`, a cluster's re-placement)
// while its checkpoint thread is inside the first chunk of a three-chunk checkpoint writes no
// further chunk and completes nothing, and a new runtime on the same store recovers every
// write from the log. Without the abandon, the stop writes the other chunks and completes the
// checkpoint first (with a large first checkpoint after a take-over, for tens of seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_replaced_keeping_the_lease_abandons_the_checkpoint_it_is_writing() {
    let fx = build(1, 2);
    let (counters, table) = (fx.services[0], fx.tables[0]);
    let storage = Arc::new(Delegating(RecordedTruncations {
        gate: Some(Gate::default()),
        ..Default::default()
    }));
    let gate = storage.gate.as_ref().unwrap();
    let config = RuntimeConfig {
        storage: storage.clone(),
        checkpoint_every_epochs: 8,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let client = rt.client();
    let writes = (0..ABANDON_KEYS).map(|key| {
        let client = client.clone();
        async move { client.submit_raw(counters, &key, bump(key)).await }
    });
    for outcome in futures::future::join_all(writes).await {
        assert!(outcome.unwrap().committed());
    }
    // Epochs drive the checkpoint's copy until its write reaches the gate.
    let mut extra = 0;
    while !gate.entered.load(std::sync::atomic::Ordering::Acquire) {
        assert!(extra < 10_000, "the checkpoint's write never began");
        let outcome = client.submit_raw(counters, &0u64, bump(0)).await.unwrap();
        assert!(outcome.committed());
        extra += 1;
    }
    // The stop's first poll marks the checkpoint abandoned; then the held chunk may finish.
    let mut stop = Box::pin(rt.shutdown_keeping_lease());
    assert!(futures::poll!(&mut stop).is_pending());
    *gate.open.lock() = true;
    gate.opened.notify_all();
    stop.await;
    let chunks = storage.chunks.lock().clone();
    assert_eq!(chunks.len(), 1, "chunks written after the stop: {chunks:?}");
    assert_eq!(
        *storage.completed.lock(),
        Vec::<u64>::new(),
        "a completed checkpoint"
    );
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    assert_eq!(rt.recovery_report().checkpoint_epoch, None);
    let counts = rt
        .client()
        .query(&[counters], move |view| {
            view.iter(table).map(|(_, v)| *v).sum::<i64>()
        })
        .await
        .unwrap();
    assert_eq!(counts.into_iter().sum::<i64>() as u64, ABANDON_KEYS + extra);
    rt.shutdown().await;
}
