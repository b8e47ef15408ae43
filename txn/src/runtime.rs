//! The embedded runtime: sequencer, epoch driver, durability thread and reply stage.
//!
//! ```text
//!  clients ──submit──▶ [sequencer task] ──Arc<EpochEnv>──▶ [durability thread] ─ append_epoch ─▶ Storage
//!                          │   run_epoch (waves, decide, commit, fallback)         │ durable epoch (watch)
//!                          ▼                                                      ▼
//!                     [partition actors]                    [reply stage] waits for "durable ≥ e", then replies
//! ```
//!
//! The sequencer closes an epoch when `epoch_duration` has passed since its first request or
//! `epoch_txns_max` requests are in, hands the batch to the durability thread (one durable write
//! per epoch) and executes it while the write is in flight. Replies of epoch `e` are released
//! only once epoch `e` is durable; if storage fails, they get [`TxnError::Storage`] instead and
//! the runtime stops accepting requests.

use crate::app::{App, AppDef, ServiceRef};
use crate::dedup::{DEDUP_GP, Dedup};
use crate::epoch::{EpochStats, Fallback, QueryJob, SerialPos, TxnResult, run_epoch, run_phase};
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, RequestId, Seq, Tid};
use crate::limits;
use crate::partition::{
    CheckpointRow, DeferredRows, EpochEnv, Job, OutboxMsg, PartitionState, Request,
    SharedPartition, load_checkpoint_row,
};
use crate::predict::{Predictor, SerialHints};
use crate::query::{QueryFn, QueryResult, ReadView};
use crate::storage::{MemoryStorage, Storage};
use crate::sync::DurableWatermark;
use crate::transport::PartitionActors;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Where transactional-outbox messages go (see `TxnCtx::outbox`).
///
/// `deliver` is called for every message of a committed transaction, after its epoch is
/// durable, in serial order, from the runtime's reply stage: it must not block for long (hand
/// the message to a queue). After a restart, messages of the epochs replayed from the log are
/// delivered again with the same TIDs: delivery is at-least-once, and a sink that ignores
/// `(tid, index)` pairs it has already seen gets each message exactly once.
pub trait OutboxSink: Send + Sync + 'static {
    /// Delivers message number `index` (within its transaction) of transaction `tid`.
    fn deliver(&self, tid: Tid, index: u32, topic: &str, payload: &[u8]);
}

/// How a runtime runs.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// How long an epoch collects requests after its first one (at most
    /// [`limits::EPOCH_DURATION_US_MAX`]).
    pub epoch_duration: Duration,
    /// Most transactions in one epoch.
    pub epoch_txns_max: usize,
    /// What happens to conflict losers.
    pub fallback: Fallback,
    /// Where the epoch log and checkpoints go.
    pub storage: Arc<dyn Storage>,
    /// Epochs between incremental checkpoints, counted from the last *completed* one, so
    /// recovery replays about this many epochs at most however often the process restarts
    /// (0: never checkpoint; recovery replays the log).
    pub checkpoint_every_epochs: u64,
    /// Whether a completed checkpoint truncates the log below it. Off keeps the whole log, so a
    /// crash-free replay from epoch 1 can be compared with checkpoint-based recovery.
    pub truncate_log_after_checkpoint: bool,
    /// Where recovery starts.
    pub recover_from: RecoverFrom,
    /// How many idempotent requests' outcomes are remembered for exactly-once resubmission.
    pub dedup_window_max: usize,
    /// Where outbox messages are delivered (`None`: they are dropped).
    pub outbox: Option<Arc<dyn OutboxSink>>,
    /// Which transactions skip the parallel pass because they would likely lose a conflict
    /// (see [`SerialHints`]); only with `Fallback::Serial`.
    pub serial_hints: SerialHints,
}

/// Where recovery starts at `Runtime::start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoverFrom {
    /// The latest complete checkpoint, then the log after it (the normal case).
    LatestCheckpoint,
    /// Ignore checkpoints and replay the whole log from its first epoch (needs a log that was
    /// never truncated; used to check recovery against a crash-free replay).
    LogStart,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            epoch_duration: Duration::from_micros(limits::EPOCH_DURATION_US_DEFAULT),
            epoch_txns_max: limits::EPOCH_TXNS_MAX_DEFAULT,
            fallback: Fallback::Serial,
            storage: Arc::new(MemoryStorage::new()),
            checkpoint_every_epochs: limits::CHECKPOINT_EVERY_EPOCHS_DEFAULT,
            truncate_log_after_checkpoint: true,
            recover_from: RecoverFrom::LatestCheckpoint,
            dedup_window_max: limits::DEDUP_WINDOW_MAX_DEFAULT,
            outbox: None,
            serial_hints: SerialHints::DEFAULT,
        }
    }
}

/// The committed or aborted result of one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome<O> {
    /// The TID it last ran under.
    pub tid: Tid,
    /// The output set by its handlers, or why it aborted.
    pub result: Result<Option<O>, AbortReason>,
    /// Where it stands in the equivalent serial order: committed transactions, and transactions
    /// a handler aborted (on a consistent snapshot, so a serial replay at this position aborts
    /// too). `None` only when it gave up after too many conflict retries.
    pub serial_pos: Option<SerialPos>,
    /// How many times it lost a conflict and was retried in a later epoch.
    pub retries: u32,
    /// The logged timestamp of the epoch it ran in (what `TxnCtx::now_ms` returned), so a
    /// replay can reproduce time-dependent rows.
    #[serde(default)]
    pub timestamp_ms: u64,
}

impl<O> Outcome<O> {
    /// Whether the transaction committed.
    pub fn committed(&self) -> bool {
        self.result.is_ok()
    }
}

type TxnReply<A> = oneshot::Sender<Result<Outcome<<A as App>::Output>, TxnError>>;
type QueryReply = oneshot::Sender<QueryResult>;

enum Submission<A: App> {
    Txn {
        request: Request<A::Event>,
        reply: TxnReply<A>,
    },
    Query {
        targets: Vec<GlobalPartition>,
        f: QueryFn,
        reply: QueryReply,
    },
    /// Finish what is queued and stop; later submissions get `TxnError::Stopped`.
    Stop,
}

/// Counters of a running runtime.
#[derive(Default)]
pub struct RuntimeStats {
    pub epochs: AtomicU64,
    pub committed: AtomicU64,
    pub user_aborted: AtomicU64,
    pub conflicts: AtomicU64,
    pub fallback: AtomicU64,
    /// Transactions a serial hint sent straight to the serial pass (counted in `fallback` too).
    pub serial_hinted: AtomicU64,
    /// Checkpoints handed to storage / completed; `started > completed` means one is being
    /// written right now.
    pub checkpoints_started: AtomicU64,
    pub checkpoints_completed: AtomicU64,
    /// Durable log writes, the epoch records they held, their encoded bytes, and the time
    /// spent writing them (including the fsync).
    pub log_appends: AtomicU64,
    pub log_epochs: AtomicU64,
    pub log_bytes: AtomicU64,
    pub log_append_nanos: AtomicU64,
    /// Rows and wall time of the last completed checkpoint.
    pub last_checkpoint_rows: AtomicU64,
    pub last_checkpoint_micros: AtomicU64,
}

impl RuntimeStats {
    fn add(&self, s: &EpochStats) {
        self.epochs.fetch_add(1, Ordering::Relaxed);
        self.committed
            .fetch_add(s.n_committed as u64, Ordering::Relaxed);
        self.user_aborted
            .fetch_add(s.n_user_aborted as u64, Ordering::Relaxed);
        self.conflicts
            .fetch_add(s.n_conflicts as u64, Ordering::Relaxed);
        self.fallback
            .fetch_add(s.n_fallback as u64, Ordering::Relaxed);
        self.serial_hinted
            .fetch_add(s.n_serial_hinted as u64, Ordering::Relaxed);
    }
}

/// Every [`RuntimeStats`] counter at one moment, by name ([`RuntimeStats::snapshot`]). Each
/// counter is read on its own, so counters bumped together may be caught between two bumps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub epochs: u64,
    pub committed: u64,
    pub user_aborted: u64,
    /// Conflict losers of the parallel pass.
    pub conflicts: u64,
    /// Runs in the serial pass (conflict losers and hinted transactions).
    pub fallback: u64,
    pub serial_hinted: u64,
    pub checkpoints_started: u64,
    pub checkpoints_completed: u64,
    pub log_appends: u64,
    pub log_epochs: u64,
    pub log_bytes: u64,
    pub log_append_nanos: u64,
    /// Levels, not counts: the last completed checkpoint's rows and wall time.
    pub last_checkpoint_rows: u64,
    pub last_checkpoint_micros: u64,
}

impl StatsSnapshot {
    /// What the counters grew by since `earlier` (an older snapshot of the same runtime); the
    /// last-checkpoint levels are this snapshot's.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            epochs: self.epochs - earlier.epochs,
            committed: self.committed - earlier.committed,
            user_aborted: self.user_aborted - earlier.user_aborted,
            conflicts: self.conflicts - earlier.conflicts,
            fallback: self.fallback - earlier.fallback,
            serial_hinted: self.serial_hinted - earlier.serial_hinted,
            checkpoints_started: self.checkpoints_started - earlier.checkpoints_started,
            checkpoints_completed: self.checkpoints_completed - earlier.checkpoints_completed,
            log_appends: self.log_appends - earlier.log_appends,
            log_epochs: self.log_epochs - earlier.log_epochs,
            log_bytes: self.log_bytes - earlier.log_bytes,
            log_append_nanos: self.log_append_nanos - earlier.log_append_nanos,
            last_checkpoint_rows: self.last_checkpoint_rows,
            last_checkpoint_micros: self.last_checkpoint_micros,
        }
    }
}

impl RuntimeStats {
    /// Every counter now, by name.
    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            epochs: read(&self.epochs),
            committed: read(&self.committed),
            user_aborted: read(&self.user_aborted),
            conflicts: read(&self.conflicts),
            fallback: read(&self.fallback),
            serial_hinted: read(&self.serial_hinted),
            checkpoints_started: read(&self.checkpoints_started),
            checkpoints_completed: read(&self.checkpoints_completed),
            log_appends: read(&self.log_appends),
            log_epochs: read(&self.log_epochs),
            log_bytes: read(&self.log_bytes),
            log_append_nanos: read(&self.log_append_nanos),
            last_checkpoint_rows: read(&self.last_checkpoint_rows),
            last_checkpoint_micros: read(&self.last_checkpoint_micros),
        }
    }
}

/// Turns at writing the store, shared by the log appender and the checkpoint writer so that
/// neither starves the other (many engines, redb among them, let one writer in at a time and
/// do not queue fairly).
type WriterTurn = parking_lot::Mutex<()>;

/// What the durability thread is asked to persist, in order.
enum LogItem<A: App> {
    Epoch(Arc<EpochEnv<A>>),
    /// The rows changed since the previous checkpoint, as of the end of `epoch`.
    Checkpoint {
        epoch: u64,
        rows: Vec<DeferredRows>,
    },
}

/// What recovery did at start-up.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Epoch of the checkpoint loaded, if any.
    pub checkpoint_epoch: Option<u64>,
    /// Rows loaded from it.
    pub rows_loaded: usize,
    /// Logged epochs replayed after it.
    pub epochs_replayed: u64,
    /// The last epoch recovered (checkpoint or replayed); the next epoch is one more.
    pub last_epoch: u64,
    /// The logged timestamp of the last replayed epoch (0 if none): epoch timestamps never go
    /// backwards across a restart.
    pub last_timestamp_ms: u64,
    /// Outcomes of idempotent requests remembered after recovery (the dedup window).
    pub dedup_window_entries: usize,
    /// Wall time of the whole recovery.
    pub duration: Duration,
}

/// The on-log form of an epoch: everything replay needs.
#[derive(Serialize)]
pub(crate) struct EpochRecordRef<'a, E> {
    pub(crate) epoch: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) requests: &'a [Request<E>],
    pub(crate) fallback: Fallback,
    pub(crate) serial: &'a [Seq],
}

#[derive(Deserialize)]
struct EpochRecord<E> {
    epoch: u64,
    timestamp_ms: u64,
    requests: Vec<Request<E>>,
    fallback: Fallback,
    serial: Vec<Seq>,
}

/// A client handle: cheap to clone, usable from any task.
pub struct Client<A: App> {
    tx: mpsc::Sender<Submission<A>>,
    app: Arc<AppDef<A>>,
}

impl<A: App> Clone for Client<A> {
    fn clone(&self) -> Self {
        Client {
            tx: self.tx.clone(),
            app: self.app.clone(),
        }
    }
}

impl<A: App> Client<A> {
    /// Submits `event` to the partition of `service` owning `key` and waits for the durable
    /// outcome.
    pub async fn submit<K: Hash + ?Sized>(
        &self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        self.submit_to(service, service.partition_of(key), event)
            .await
    }

    /// Submits `event` to partition `partition` of `service`.
    pub async fn submit_to(
        &self,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        self.app.check_partition(service, partition)?;
        self.submit_request(Request {
            target: service.gp(partition),
            event,
            id: None,
            retries: 0,
        })
        .await
    }

    /// Submits an idempotent request: if a request with the same `id` was already submitted
    /// (and is still in the dedup window, which survives restarts), this returns that request's
    /// original outcome and nothing is executed again.
    pub async fn submit_with_id<K: Hash + ?Sized>(
        &self,
        id: RequestId,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        self.submit_request(Request {
            target: service.gp(service.partition_of(key)),
            event,
            id: Some(id),
            retries: 0,
        })
        .await
    }

    async fn submit_request(
        &self,
        request: Request<A::Event>,
    ) -> Result<Outcome<A::Output>, TxnError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission::Txn { request, reply })
            .await
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)?
    }

    /// Runs `f` on every partition of `services` at one consistent snapshot and returns the
    /// results in service, then partition order.
    pub async fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let targets = services
            .iter()
            .flat_map(|s| (0..s.n_partitions).map(move |p| s.gp(p)))
            .collect();
        self.query_targets(targets, f).await
    }

    /// Like [`Client::query`], but only on the listed `(service, partition)` pairs (e.g. the
    /// partitions owning the keys a lookup needs), still at one consistent snapshot. Results
    /// come in the order of `partitions`; an unknown partition is an error.
    pub async fn query_at<R: Send + 'static>(
        &self,
        partitions: &[(ServiceRef, u32)],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let mut targets = Vec::with_capacity(partitions.len());
        for (service, p) in partitions {
            targets.push(self.app.check_partition(*service, *p)?);
        }
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by_key(|i| targets[*i]);
        let mut sorted: Vec<GlobalPartition> = order.iter().map(|i| targets[*i]).collect();
        sorted.dedup();
        let parts = self.query_targets(sorted.clone(), f).await?;
        // Parts come back in partition order; hand them out in the caller's order.
        let mut parts: Vec<Option<R>> = parts.into_iter().map(Some).collect();
        let mut out: Vec<Option<R>> = (0..targets.len()).map(|_| None).collect();
        for i in order {
            let at = sorted.binary_search(&targets[i]).expect("target listed");
            out[i] = parts[at].take();
        }
        out.into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    TxnError::Actor("a partition was listed twice in query_at".to_string())
                })
            })
            .collect()
    }

    async fn query_targets<R: Send + 'static>(
        &self,
        targets: Vec<GlobalPartition>,
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let f: QueryFn = Arc::new(move |view| Box::new(f(view)) as Box<dyn Any + Send>);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission::Query { targets, f, reply })
            .await
            .map_err(|_| TxnError::Stopped)?;
        let parts = rx.await.map_err(|_| TxnError::Stopped)??;
        Ok(parts
            .into_iter()
            .map(|b| *b.downcast::<R>().expect("query result type"))
            .collect())
    }

    /// An order-independent hash of every committed row of every service, at one snapshot.
    pub async fn state_hash(&self) -> Result<u64, TxnError> {
        let services: Vec<ServiceRef> = self.app.services.iter().map(|s| s.service).collect();
        let hashes = self.query(&services, |view| view.state_hash()).await?;
        Ok(crate::serial::combine_hashes(hashes.into_iter()))
    }

    /// The application definition.
    pub fn app(&self) -> &Arc<AppDef<A>> {
        &self.app
    }
}

/// A running embedded vmsdb instance.
pub struct Runtime<A: App> {
    client: Client<A>,
    stats: Arc<RuntimeStats>,
    sequencer: tokio::task::JoinHandle<()>,
    replier: tokio::task::JoinHandle<()>,
    durability: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    actors: PartitionActors<A>,
    recovery: RecoveryReport,
}

impl<A: App> Runtime<A> {
    /// Starts a runtime for `app`: replays whatever the storage holds, then accepts requests.
    /// Must be called inside a multi-threaded tokio runtime.
    pub async fn start(app: Arc<AppDef<A>>, config: RuntimeConfig) -> Result<Self, TxnError> {
        if config.epoch_duration > Duration::from_micros(limits::EPOCH_DURATION_US_MAX) {
            return Err(TxnError::InvalidApp(vec![format!(
                "epoch_duration {:?} exceeds the maximum of {} µs",
                config.epoch_duration,
                limits::EPOCH_DURATION_US_MAX
            )]));
        }
        if let Some(why) = config.serial_hints.invalid() {
            return Err(TxnError::InvalidApp(vec![why]));
        }
        if config.epoch_txns_max == 0 || config.epoch_txns_max > limits::EPOCH_TXNS_MAX {
            return Err(TxnError::InvalidApp(vec![format!(
                "epoch_txns_max {} must be in 1..={}",
                config.epoch_txns_max,
                limits::EPOCH_TXNS_MAX
            )]));
        }
        // Before anything reads the store: refuse one written by another application or format.
        // Storage calls block, so they run on the blocking pool.
        let fingerprint = crate::fingerprint::Fingerprint::of(&app);
        let storage = config.storage.clone();
        tokio::task::spawn_blocking(move || {
            crate::fingerprint::check_store(&fingerprint, storage.as_ref())
        })
        .await
        .map_err(|e| TxnError::Storage(format!("the store check stopped: {e}")))??;
        let parts = PartitionState::all(&app);
        if config.checkpoint_every_epochs == 0 {
            for p in &parts {
                p.lock().set_track_dirty(false);
            }
        }
        let actors = PartitionActors::start(app.clone(), parts.clone())?;
        let (recovery, dedup) = recover(&app, &parts, &actors, &config).await?;
        let outbox_sink = config.outbox.clone();
        let serial_hints = config.serial_hints;
        let last_epoch = recovery.last_epoch;
        tracing::info!(
            checkpoint_epoch = ?recovery.checkpoint_epoch,
            rows_loaded = recovery.rows_loaded,
            epochs_replayed = recovery.epochs_replayed,
            seconds = recovery.duration.as_secs_f64(),
            "recovered"
        );

        let (tx, rx) = mpsc::channel(limits::SUBMIT_QUEUE_MAX);
        let (log_tx, log_rx) = mpsc::channel::<LogItem<A>>(limits::EPOCHS_IN_FLIGHT_MAX);
        let watermark = Arc::new(DurableWatermark::new(last_epoch));
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(RuntimeStats::default());

        let checkpoint_schedule = Arc::new(CheckpointSchedule {
            in_flight: AtomicBool::new(false),
            last_completed: AtomicU64::new(recovery.checkpoint_epoch.unwrap_or(0)),
        });
        let writer_turn: Arc<WriterTurn> = Arc::new(parking_lot::Mutex::new(()));
        let (ckpt_tx, ckpt_rx) = std::sync::mpsc::channel::<(u64, Vec<DeferredRows>)>();
        let checkpointer = std::thread::Builder::new()
            .name("vmsdb-checkpoint".into())
            .spawn({
                let storage = config.storage.clone();
                let watermark = watermark.clone();
                let truncate_log = config.truncate_log_after_checkpoint;
                let stats = stats.clone();
                let schedule = checkpoint_schedule.clone();
                // A store whose checkpoints have their own writer needs no turns: appends
                // never wait for a checkpoint there.
                let writer_turn = if storage.checkpoints_have_own_writer() {
                    Arc::new(parking_lot::Mutex::new(()))
                } else {
                    writer_turn.clone()
                };
                move || {
                    checkpoint_loop(
                        storage.as_ref(),
                        ckpt_rx,
                        &watermark,
                        truncate_log,
                        &stats,
                        &schedule,
                        &writer_turn,
                    )
                }
            })
            .map_err(|e| TxnError::Storage(format!("cannot start the checkpoint thread: {e}")))?;
        let storage = config.storage.clone();
        let durability = std::thread::Builder::new()
            .name("vmsdb-durability".into())
            .spawn({
                let watermark = watermark.clone();
                let stats = stats.clone();
                let writer_turn = writer_turn.clone();
                move || durability_loop(storage, log_rx, &watermark, ckpt_tx, &stats, &writer_turn)
            })
            .map_err(|e| TxnError::Storage(format!("cannot start the durability thread: {e}")))?;
        let sequencer = tokio::spawn(sequencer_loop(Sequencer {
            app: app.clone(),
            parts,
            actors: actors.clone(),
            config,
            rx,
            log_tx,
            reply_tx,
            durable: watermark.clone(),
            stats: stats.clone(),
            epoch: last_epoch,
            last_timestamp_ms: recovery.last_timestamp_ms,
            dedup,
            checkpoint_schedule,
            predictor: Predictor::new(serial_hints),
        }));
        let replier = tokio::spawn(reply_loop::<A>(reply_rx, watermark, outbox_sink));
        Ok(Runtime {
            client: Client { tx, app },
            stats,
            sequencer,
            replier,
            durability: Some(durability),
            checkpointer: Some(checkpointer),
            actors,
            recovery,
        })
    }

    /// What recovery did when this runtime started.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// A new client handle.
    pub fn client(&self) -> Client<A> {
        self.client.clone()
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// Stops accepting requests, finishes every sequenced epoch, waits for the log to be durable
    /// and stops the partition actors.
    pub async fn shutdown(mut self) {
        let _ = self.client.tx.send(Submission::Stop).await;
        let _ = self.sequencer.await;
        let _ = self.replier.await;
        // The durability thread ends when the sequencer's log sender is gone, and drops the
        // checkpoint sender, which ends the checkpoint thread after its last checkpoint.
        for thread in [self.durability.take(), self.checkpointer.take()]
            .into_iter()
            .flatten()
        {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.actors.stop().await;
    }
}

struct Sequencer<A: App> {
    app: Arc<AppDef<A>>,
    parts: Vec<SharedPartition<A>>,
    actors: PartitionActors<A>,
    config: RuntimeConfig,
    rx: mpsc::Receiver<Submission<A>>,
    log_tx: mpsc::Sender<LogItem<A>>,
    reply_tx: mpsc::UnboundedSender<ReplyBatch<A>>,
    durable: Arc<DurableWatermark>,
    stats: Arc<RuntimeStats>,
    epoch: u64,
    last_timestamp_ms: u64,
    dedup: Dedup<A::Output>,
    /// Whether a checkpoint is in flight and the epoch of the last completed one.
    checkpoint_schedule: Arc<CheckpointSchedule>,
    /// Decides the serial hints of each epoch from the conflicts of the previous ones.
    predictor: Predictor,
}

/// When the next checkpoint falls due: `checkpoint_every_epochs` after the last *completed*
/// one, so however often the process restarts or is killed mid-checkpoint, recovery replays at
/// most about that many epochs (a checkpoint that did not complete is due again at once).
struct CheckpointSchedule {
    /// Set while a checkpoint is queued or being written; a checkpoint that falls due then is
    /// skipped (its rows stay dirty and go into the next one), so writing never piles up.
    in_flight: AtomicBool,
    /// The epoch of the latest complete checkpoint (0: none), stored before `in_flight` is
    /// cleared.
    last_completed: AtomicU64,
}

impl CheckpointSchedule {
    /// Whether a checkpoint falls due at `epoch`.
    fn due(&self, epoch: u64, every: u64) -> bool {
        every > 0
            && !self.in_flight.load(Ordering::Acquire)
            && epoch
                >= self
                    .last_completed
                    .load(Ordering::Acquire)
                    .saturating_add(every)
    }
}

struct PendingTxn<A: App> {
    reply: TxnReply<A>,
    id: Option<RequestId>,
}

struct ReplyBatch<A: App> {
    epoch: u64,
    outbox: Vec<OutboxMsg>,
    txns: Vec<(TxnReply<A>, Outcome<A::Output>)>,
    queries: Vec<(QueryReply, QueryResult)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a sequenced request ended, decided identically live and on replay.
enum Settled<O> {
    Final(Outcome<O>),
    Retry,
}

fn settle<O>(
    epoch: u64,
    timestamp_ms: u64,
    seq: usize,
    result: TxnResult<O>,
    retries: u32,
) -> Settled<O> {
    let pos = |pass| SerialPos {
        epoch,
        pass,
        seq: seq as u32,
    };
    let (result, serial_pos) = match result {
        TxnResult::Committed { pass, output } => (Ok(output), Some(pos(pass))),
        TxnResult::Aborted { pass, reason } => (Err(reason), Some(pos(pass))),
        TxnResult::Retry if retries < limits::CONFLICT_RETRIES_MAX => return Settled::Retry,
        TxnResult::Retry => (Err(AbortReason::RetriesExhausted { retries }), None),
    };
    Settled::Final(Outcome {
        tid: Tid::new(epoch, seq as u32),
        result,
        serial_pos,
        retries,
        timestamp_ms,
    })
}

/// Requests of the epoch being gathered.
struct Gathered<A: App> {
    requests: Vec<Request<A::Event>>,
    pending: Vec<PendingTxn<A>>,
    queries: Vec<(QueryJob, QueryReply)>,
    /// Resubmissions answered from the dedup window.
    answered: Vec<(TxnReply<A>, Outcome<A::Output>)>,
    closed: bool,
}

impl<A: App> Gathered<A> {
    fn take(
        &mut self,
        sub: Submission<A>,
        dedup: &Dedup<A::Output>,
        inflight: &mut FxHashMap<RequestId, Vec<TxnReply<A>>>,
    ) {
        match sub {
            Submission::Txn { request, reply } => {
                if let Some(id) = request.id {
                    if let Some((_, outcome)) = dedup.lookup(&id) {
                        self.answered.push((reply, outcome.clone()));
                        return;
                    }
                    if let Some(waiters) = inflight.get_mut(&id) {
                        waiters.push(reply);
                        return;
                    }
                    inflight.insert(id, Vec::new());
                }
                self.pending.push(PendingTxn {
                    reply,
                    id: request.id,
                });
                self.requests.push(request);
            }
            Submission::Query { targets, f, reply } => {
                self.queries.push((QueryJob { targets, f }, reply));
            }
            Submission::Stop => self.closed = true,
        }
    }
}

async fn sequencer_loop<A: App>(mut s: Sequencer<A>) {
    let mut retry_queue: Vec<(Request<A::Event>, PendingTxn<A>)> = Vec::new();
    let mut inflight: FxHashMap<RequestId, Vec<TxnReply<A>>> = FxHashMap::default();
    let mut closed = false;
    let mut last_ts = s.last_timestamp_ms;
    loop {
        let mut g = Gathered {
            requests: Vec::new(),
            pending: Vec::new(),
            queries: Vec::new(),
            answered: Vec::new(),
            closed,
        };
        for (req, p) in retry_queue.drain(..) {
            g.requests.push(req);
            g.pending.push(p);
        }
        if g.requests.is_empty() {
            if g.closed {
                break;
            }
            match s.rx.recv().await {
                Some(sub) => g.take(sub, &s.dedup, &mut inflight),
                None => break,
            }
        }
        let deadline = tokio::time::Instant::now() + s.config.epoch_duration;
        while !g.closed && g.requests.len() < s.config.epoch_txns_max {
            match s.rx.try_recv() {
                Ok(sub) => g.take(sub, &s.dedup, &mut inflight),
                Err(mpsc::error::TryRecvError::Disconnected) => g.closed = true,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, s.rx.recv()).await {
                        Ok(Some(sub)) => g.take(sub, &s.dedup, &mut inflight),
                        Ok(None) => g.closed = true,
                        Err(_) => break,
                    }
                }
            }
        }
        closed = g.closed;
        let Gathered {
            requests,
            pending,
            queries,
            mut answered,
            ..
        } = g;

        let failure = s.durable.failure().map(|f| f.message().to_string());
        if let Some(failure) = failure {
            let replies = answered.into_iter().map(|(r, _)| r);
            fail_all(
                pending,
                replies,
                queries.into_iter().map(|(_, r)| r),
                &mut inflight,
                &failure,
            );
            continue;
        }
        if requests.is_empty() && queries.is_empty() {
            if !answered.is_empty() {
                // Duplicates only: answer once the last executed epoch is durable.
                let _ = s.reply_tx.send(ReplyBatch {
                    epoch: s.epoch,
                    outbox: Vec::new(),
                    txns: answered,
                    queries: Vec::new(),
                });
            }
            continue;
        }

        s.epoch += 1;
        last_ts = last_ts.max(now_ms());
        let serial = if s.config.fallback == Fallback::Serial {
            s.predictor.hints::<A>(&requests)
        } else {
            Vec::new()
        };
        let env = Arc::new(EpochEnv {
            epoch: s.epoch,
            timestamp_ms: last_ts,
            requests,
            serial,
            fallback: s.config.fallback,
        });
        let (jobs, query_replies): (Vec<QueryJob>, Vec<QueryReply>) = queries.into_iter().unzip();
        if s.log_tx.send(LogItem::Epoch(env.clone())).await.is_err() {
            let replies = answered.into_iter().map(|(r, _)| r);
            fail_all(
                pending,
                replies,
                query_replies,
                &mut inflight,
                "the durability thread stopped",
            );
            continue;
        }
        let outcome = match run_epoch(&s.app, &s.parts, &s.actors, env.clone(), jobs).await {
            Ok(o) => o,
            Err(e) => {
                // The epoch is (or will be) in the log and replay would apply it whole, while
                // here it may be half done: stop accepting writes, as for a storage failure.
                tracing::error!(epoch = s.epoch, error = %e, "epoch failed; refusing further writes");
                s.durable.fail(format!("epoch {} failed: {e}", s.epoch));
                let replies = answered.into_iter().map(|(r, _)| r);
                fail_all(
                    pending,
                    replies,
                    query_replies,
                    &mut inflight,
                    &e.to_string(),
                );
                continue;
            }
        };
        s.stats.add(&outcome.stats);
        s.predictor
            .observe::<A>(&env.requests, &env.serial, &outcome.results);
        let mut txns = Vec::with_capacity(pending.len() + answered.len());
        for (seq, (result, p)) in outcome.results.into_iter().zip(pending).enumerate() {
            let req = &env.requests[seq];
            match settle(s.epoch, env.timestamp_ms, seq, result, req.retries) {
                Settled::Retry => retry_queue.push((
                    Request {
                        target: req.target,
                        event: req.event.clone(),
                        id: req.id,
                        retries: req.retries + 1,
                    },
                    p,
                )),
                Settled::Final(outcome) => {
                    if let Some(id) = req.id {
                        s.dedup.record(id, s.epoch, outcome.clone());
                        for waiter in inflight.remove(&id).unwrap_or_default() {
                            txns.push((waiter, outcome.clone()));
                        }
                    }
                    txns.push((p.reply, outcome));
                }
            }
        }
        txns.append(&mut answered);
        let queries = query_replies
            .into_iter()
            .zip(outcome.query_results)
            .collect();
        let _ = s.reply_tx.send(ReplyBatch {
            epoch: s.epoch,
            outbox: outcome.outbox,
            txns,
            queries,
        });
        if s.checkpoint_schedule
            .due(s.epoch, s.config.checkpoint_every_epochs)
            && let Err(e) = checkpoint(&mut s).await
        {
            tracing::error!(epoch = s.epoch, error = %e, "checkpoint failed");
        }
    }
}

/// Collects the rows changed since the last checkpoint from every partition (one message each,
/// encoded in parallel by the partition actors) and queues them behind the epoch's log record.
async fn checkpoint<A: App>(s: &mut Sequencer<A>) -> Result<(), TxnError> {
    let all: Vec<GlobalPartition> = (0..s.app.n_global).collect();
    let parts = run_phase(&s.actors, &all, |_, reply| Job::Checkpoint { reply }).await?;
    let mut rows: Vec<DeferredRows> = parts.into_iter().flatten().collect();
    let dedup_rows = s.dedup.drain_checkpoint_rows();
    rows.push(Box::new(move |out: &mut Vec<CheckpointRow>| {
        out.extend(dedup_rows)
    }));
    s.checkpoint_schedule
        .in_flight
        .store(true, Ordering::Release);
    s.log_tx
        .send(LogItem::Checkpoint {
            epoch: s.epoch,
            rows,
        })
        .await
        .map_err(|_| TxnError::Storage("the durability thread stopped".into()))
}

fn fail_all<A: App>(
    pending: Vec<PendingTxn<A>>,
    answered: impl IntoIterator<Item = TxnReply<A>>,
    queries: impl IntoIterator<Item = QueryReply>,
    inflight: &mut FxHashMap<RequestId, Vec<TxnReply<A>>>,
    why: &str,
) {
    let error = || TxnError::Storage(why.to_string());
    for p in pending {
        for waiter in p.id.and_then(|id| inflight.remove(&id)).unwrap_or_default() {
            let _ = waiter.send(Err(error()));
        }
        let _ = p.reply.send(Err(error()));
    }
    for reply in answered {
        let _ = reply.send(Err(error()));
    }
    for reply in queries {
        let _ = reply.send(Err(error()));
    }
}

/// Hands an epoch's outbox messages (of committed transactions, in serial order) to the sink.
fn deliver_outbox(sink: &dyn OutboxSink, epoch: u64, messages: &[OutboxMsg]) {
    let mut index = 0u32;
    for (i, m) in messages.iter().enumerate() {
        index = if i > 0 && messages[i - 1].seq == m.seq {
            index + 1
        } else {
            0
        };
        sink.deliver(Tid::new(epoch, m.seq), index, &m.topic, &m.payload);
    }
}

/// Releases each epoch's replies once the durable watermark reaches it (the reply hand-off).
async fn reply_loop<A: App>(
    mut rx: mpsc::UnboundedReceiver<ReplyBatch<A>>,
    durable: Arc<DurableWatermark>,
    outbox: Option<Arc<dyn OutboxSink>>,
) {
    while let Some(batch) = rx.recv().await {
        match durable.wait(batch.epoch).await {
            Ok(()) => {
                if let Some(sink) = &outbox {
                    deliver_outbox(sink.as_ref(), batch.epoch, &batch.outbox);
                }
                for (reply, outcome) in batch.txns {
                    let _ = reply.send(Ok(outcome));
                }
                for (reply, result) in batch.queries {
                    let _ = reply.send(result);
                }
            }
            Err(failed) => {
                let why = failed.message().to_string();
                for (reply, _) in batch.txns {
                    let _ = reply.send(Err(TxnError::Storage(why.clone())));
                }
                for (reply, _) in batch.queries {
                    let _ = reply.send(Err(TxnError::Storage(why.clone())));
                }
            }
        }
    }
}

/// Appends epoch records and advances the watermark: every record queued when the thread comes
/// round is written in ONE durable write (group commit across epochs), so a slow fsync makes the
/// writes bigger, not the queue longer. Checkpoints are queued behind their epoch's record and
/// handed to the checkpoint thread, so a large checkpoint never holds up the log.
fn durability_loop<A: App>(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<LogItem<A>>,
    durable: &DurableWatermark,
    checkpoints: std::sync::mpsc::Sender<(u64, Vec<DeferredRows>)>,
    stats: &RuntimeStats,
    writer_turn: &WriterTurn,
) {
    let mut group: Vec<Arc<EpochEnv<A>>> = Vec::new();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut next = rx.blocking_recv();
    while let Some(item) = next.take() {
        let checkpoint = match item {
            LogItem::Epoch(env) => {
                group.push(env);
                // Take every epoch already queued, up to the first checkpoint item.
                loop {
                    match rx.try_recv() {
                        Ok(LogItem::Epoch(env)) => group.push(env),
                        Ok(LogItem::Checkpoint { epoch, rows }) => break Some((epoch, rows)),
                        Err(_) => break None,
                    }
                }
            }
            LogItem::Checkpoint { epoch, rows } => Some((epoch, rows)),
        };
        if !group.is_empty() && durable.failure().is_none() {
            let started = std::time::Instant::now();
            bufs.resize_with(group.len(), Vec::new);
            let encoded: Result<(), String> =
                group
                    .iter()
                    .zip(bufs.iter_mut())
                    .try_for_each(|(env, buf)| {
                        buf.clear();
                        let record = EpochRecordRef {
                            epoch: env.epoch,
                            timestamp_ms: env.timestamp_ms,
                            requests: &env.requests,
                            fallback: env.fallback,
                            serial: &env.serial,
                        };
                        rmp_serde::encode::write(buf, &record)
                            .map_err(|e| format!("epoch {} does not encode: {e}", env.epoch))
                    });
            let result = encoded.and_then(|()| {
                let batch: Vec<(u64, &[u8])> = group
                    .iter()
                    .zip(&bufs)
                    .map(|(env, buf)| (env.epoch, buf.as_slice()))
                    .collect();
                let _turn = writer_turn.lock();
                storage.append_epochs(&batch).map_err(|e| e.to_string())
            });
            let last = group.last().map_or(0, |env| env.epoch);
            stats.log_appends.fetch_add(1, Ordering::Relaxed);
            stats
                .log_epochs
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            let n_bytes: usize = bufs[..group.len()].iter().map(Vec::len).sum();
            stats.log_bytes.fetch_add(n_bytes as u64, Ordering::Relaxed);
            stats
                .log_append_nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            match result {
                Ok(()) => durable.advance(last),
                Err(e) => {
                    tracing::error!(epoch = last, error = %e, "epoch log append failed; refusing further writes");
                    durable.fail(e);
                }
            }
        }
        group.clear();
        if let Some(c) = checkpoint {
            // The epoch's own record is durable: it was queued, and so written, before this item.
            if durable.failure().is_none() {
                let _ = checkpoints.send(c);
            }
        }
        next = rx.blocking_recv();
    }
}

/// Writes checkpoints handed over by the durability thread, one at a time.
fn checkpoint_loop(
    storage: &dyn Storage,
    rx: std::sync::mpsc::Receiver<(u64, Vec<DeferredRows>)>,
    durable: &DurableWatermark,
    truncate_log: bool,
    stats: &RuntimeStats,
    schedule: &CheckpointSchedule,
    writer_turn: &WriterTurn,
) {
    while let Ok((epoch, deferred)) = rx.recv() {
        if durable.failure().is_none() {
            let mut rows = Vec::new();
            for d in deferred {
                d(&mut rows);
            }
            stats.checkpoints_started.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            match write_checkpoint(storage, epoch, &rows, truncate_log, writer_turn) {
                Ok(()) => {
                    let micros = started.elapsed().as_micros() as u64;
                    stats
                        .last_checkpoint_rows
                        .store(rows.len() as u64, Ordering::Relaxed);
                    stats
                        .last_checkpoint_micros
                        .store(micros, Ordering::Relaxed);
                    stats.checkpoints_completed.fetch_add(1, Ordering::Relaxed);
                    schedule.last_completed.store(epoch, Ordering::Release);
                }
                Err(e) => {
                    tracing::error!(epoch, error = %e, "checkpoint write failed; refusing further writes");
                    durable.fail(format!("checkpoint of epoch {epoch}: {e}"));
                }
            }
        }
        schedule.in_flight.store(false, Ordering::Release);
    }
}

/// Writes an incremental checkpoint in bounded chunks, completes it, then drops the log records
/// it covers.
fn write_checkpoint(
    storage: &dyn Storage,
    epoch: u64,
    rows: &[CheckpointRow],
    truncate_log: bool,
    writer_turn: &WriterTurn,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    // One chunk per turn, handed over fairly: a log append waiting for the store goes next, so
    // a large checkpoint delays epochs by at most one chunk write.
    let turn = |f: &mut dyn FnMut() -> Result<(), crate::storage::StorageError>| {
        let guard = writer_turn.lock();
        let result = f();
        parking_lot::MutexGuard::unlock_fair(guard);
        result.map_err(|e| e.to_string())
    };
    for chunk in rows.chunks(limits::CHECKPOINT_CHUNK_ROWS_MAX) {
        turn(&mut || storage.write_checkpoint_rows(epoch, chunk))?;
    }
    turn(&mut || storage.complete_checkpoint(epoch))?;
    if truncate_log {
        turn(&mut || storage.truncate_log_below(epoch + 1))?;
    }
    tracing::debug!(
        epoch,
        rows = rows.len(),
        seconds = started.elapsed().as_secs_f64(),
        "checkpoint written"
    );
    Ok(())
}

/// Loads the latest complete checkpoint into the partitions and the dedup window (nothing with
/// `RecoverFrom::LogStart`, after checking the log was kept whole). Blocking; returns the
/// checkpoint's epoch, the rows loaded and the loaded dedup window.
#[allow(clippy::type_complexity)]
fn load_checkpoint<A: App>(
    storage: &dyn Storage,
    parts: &[SharedPartition<A>],
    recover_from: RecoverFrom,
    mut dedup: Dedup<A::Output>,
) -> Result<(Option<u64>, usize, Dedup<A::Output>), TxnError> {
    let mut rows_loaded = 0usize;
    let checkpoint_epoch = match recover_from {
        RecoverFrom::LogStart => {
            // Replaying from the start needs a log kept whole: if a checkpoint exists, the log
            // must still begin at epoch 1 (checked by the replay for a non-empty log; an empty
            // log next to a checkpoint was certainly truncated).
            let checkpointed = storage
                .latest_checkpoint_epoch()
                .map_err(|e| TxnError::Recovery(format!("reading the latest checkpoint: {e}")))?
                .is_some();
            let log_empty = storage
                .last_epoch()
                .map_err(|e| TxnError::Recovery(format!("reading the log: {e}")))?
                .is_none();
            if checkpointed && log_empty {
                return Err(TxnError::Recovery(
                    "the epoch log does not start at epoch 1 and there is no checkpoint to start \
                     from: it is empty next to a checkpoint (truncated); RecoverFrom::LogStart \
                     needs a log kept whole"
                        .into(),
                ));
            }
            None
        }
        RecoverFrom::LatestCheckpoint => storage
            .read_latest_checkpoint(&mut |key, value| {
                rows_loaded += 1;
                let loaded = if key.starts_with(&DEDUP_GP.to_be_bytes()) && key.len() >= 6 {
                    dedup.load_row(&key[6..], value)
                } else {
                    load_checkpoint_row(parts, key, value)
                };
                loaded.map_err(crate::storage::StorageError::Visitor)
            })
            .map_err(|e| TxnError::Recovery(format!("loading the checkpoint: {e}")))?,
    };
    dedup.finish_load();
    Ok((checkpoint_epoch, rows_loaded, dedup))
}

/// Reads and decodes the log from epoch `from` on the blocking pool, handing records over a
/// bounded channel: replay holds at most `limits::RECOVERY_EPOCHS_READ_AHEAD_MAX` decoded epochs,
/// not the whole log tail. A read or decode error arrives as the last item; dropping the
/// receiver stops the reader.
fn stream_log<A: App>(
    storage: Arc<dyn Storage>,
    from: u64,
) -> mpsc::Receiver<Result<EpochRecord<A::Event>, TxnError>> {
    let (tx, rx) = mpsc::channel(limits::RECOVERY_EPOCHS_READ_AHEAD_MAX);
    tokio::task::spawn_blocking(move || {
        let result = storage.read_epochs(from, &mut |epoch, bytes| {
            let record: EpochRecord<A::Event> = rmp_serde::from_slice(bytes).map_err(|e| {
                crate::storage::StorageError::Visitor(format!("epoch {epoch} does not decode: {e}"))
            })?;
            tx.blocking_send(Ok(record)).map_err(|_| {
                crate::storage::StorageError::Visitor("recovery stopped reading".into())
            })
        });
        if let Err(e) = result {
            let why = format!("reading the epoch log from epoch {from}: {e}");
            let _ = tx.blocking_send(Err(TxnError::Recovery(why)));
        }
    });
    rx
}

/// Rebuilds the state from storage: the latest complete checkpoint, then a deterministic replay
/// of every logged epoch after it.
async fn recover<A: App>(
    app: &Arc<AppDef<A>>,
    parts: &[SharedPartition<A>],
    actors: &PartitionActors<A>,
    config: &RuntimeConfig,
) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
    let started = std::time::Instant::now();
    // Storage reads block: they run on the blocking pool, never on an async worker.
    let (checkpoint_epoch, rows_loaded, dedup) = {
        let storage = config.storage.clone();
        let (parts, recover_from) = (parts.to_vec(), config.recover_from);
        let dedup = Dedup::new(config.dedup_window_max);
        tokio::task::spawn_blocking(move || {
            load_checkpoint(storage.as_ref(), &parts, recover_from, dedup)
        })
        .await
        .map_err(|e| TxnError::Recovery(format!("the checkpoint loader stopped: {e}")))??
    };
    let mut dedup = dedup;
    let from = checkpoint_epoch.map_or(0, |c| c + 1);
    let mut records = stream_log::<A>(config.storage.clone(), from);
    // Epochs are numbered from 1; after a checkpoint of epoch c the log must go on at c + 1.
    let mut expected = from.max(1);
    let mut epochs_replayed = 0;
    let mut last_epoch = checkpoint_epoch.unwrap_or(0);
    let mut last_timestamp_ms = 0;
    while let Some(record) = records.recv().await {
        let record = record?;
        if record.epoch != expected {
            let why = if epochs_replayed > 0 {
                "the epoch log has a gap"
            } else if checkpoint_epoch.is_none() {
                "the epoch log does not start at epoch 1 and there is no checkpoint to start from \
                 (was it truncated? RecoverFrom::LogStart needs a log kept whole)"
            } else {
                "the epoch log does not continue the checkpoint"
            };
            return Err(TxnError::Recovery(format!(
                "{why}: expected epoch {expected}, found {}",
                record.epoch
            )));
        }
        expected = record.epoch + 1;
        last_epoch = record.epoch;
        last_timestamp_ms = record.timestamp_ms;
        // The record says how the epoch ran (its fallback, its serial hints): replay does the
        // same whatever this runtime's configuration is.
        let env = Arc::new(EpochEnv {
            epoch: record.epoch,
            timestamp_ms: record.timestamp_ms,
            requests: record.requests,
            serial: record.serial,
            fallback: record.fallback,
        });
        let outcome = run_epoch(app, parts, actors, env.clone(), Vec::new()).await?;
        if let Some(sink) = &config.outbox {
            // At-least-once: these epochs are durable, their messages may have been delivered
            // before the restart; the TID lets the sink tell.
            deliver_outbox(sink.as_ref(), env.epoch, &outcome.outbox);
        }
        for (seq, result) in outcome.results.into_iter().enumerate() {
            let req = &env.requests[seq];
            if let Some(id) = req.id
                && let Settled::Final(o) =
                    settle(env.epoch, env.timestamp_ms, seq, result, req.retries)
            {
                dedup.record(id, env.epoch, o);
            }
        }
        epochs_replayed += 1;
    }
    Ok((
        RecoveryReport {
            checkpoint_epoch,
            rows_loaded,
            epochs_replayed,
            last_epoch,
            last_timestamp_ms,
            dedup_window_entries: dedup.len(),
            duration: started.elapsed(),
        },
        dedup,
    ))
}
