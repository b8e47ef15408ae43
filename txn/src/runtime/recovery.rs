//! Recovery at start-up: load the latest complete checkpoint (partition rows and the dedup
//! window), then replay every logged epoch after it deterministically.
//!
//! The partitions are owned by their actors, so the checkpoint reader (on the blocking pool)
//! cuts each partition's rows into chunks and the recovery task sends each chunk to its
//! partition as a `Job::Load`, several in flight at once.
//!
//! A cluster runtime (partitions spread over nodes) replays nothing through the network: it
//! recovers every partition on a private copy in its own process, the same code as in one
//! process, while the partitions' owners load the checkpoint; then it hands each owner the rows
//! the replay changed (`Job::Apply`, chunked) and checks that every owner's state hash equals
//! the private copy's.
//!
//! The driver's own partitions take the private copy's states (moved, not copied). A take-over
//! keeps the partitions whose owner is alive and unchanged on their node
//! (`PartitionHost::re_place`): recovery finds them by their state hash (not that of an empty
//! partition), loads no checkpoint into them, hands them only the rows of the log's last
//! epochs (and, after a checkpoint, those changed since it), and refuses to start if one of
//! them differs from the replay; the caller then places the partitions again keeping none.

use super::take_over::{Prepared, PreparedTakeOver};
use crate::app::{App, AppDef};
use crate::cluster_dispatch::DriverDispatch;
use crate::dedup::{DEDUP_GP, Dedup, WindowBounds, request_digest};
use crate::envelope::EpochEnv;
use crate::epoch::{Dispatch, TxnResult, run_epoch, run_phase};
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::limits;
use crate::partition::Job;
use crate::row_key::{CheckpointRow, DeferredRows, split_row_key};
use crate::runtime::config::{RecoverFrom, RuntimeConfig};
use crate::runtime::durability::EpochRecord;
use crate::runtime::reply::deliver_outbox;
use crate::runtime::sequencer::{Settled, settle};
use crate::storage::Storage;
use crate::sync::{BarrierWait, Depositor, PhaseBarrier};
use crate::transport::PartitionActors;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A chunk of one partition's checkpoint rows (full row keys), on its way to the partition.
type RowChunk = (GlobalPartition, Vec<(Vec<u8>, Vec<u8>)>);

/// Cuts checkpoint rows into per-partition chunks of `RECOVERY_LOAD_CHUNK_ROWS_MAX` rows and
/// hands each full chunk to the recovery task.
struct Chunker {
    chunks: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Per global partition: its rows are not sent (its owner has its state otherwise).
    skipped: Vec<bool>,
    tx: mpsc::Sender<RowChunk>,
}

impl Chunker {
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let Some((gp, _, _)) = split_row_key(key) else {
            return Err(format!(
                "checkpoint row key of {} bytes is too short",
                key.len()
            ));
        };
        let n_global = self.chunks.len();
        let chunk = self.chunks.get_mut(gp as usize).ok_or_else(|| {
            format!("checkpoint row of partition {gp}, but the application has {n_global}")
        })?;
        if self.skipped[gp as usize] {
            return Ok(());
        }
        chunk.push((key.to_vec(), value.to_vec()));
        if chunk.len() >= limits::RECOVERY_LOAD_CHUNK_ROWS_MAX {
            let rows = std::mem::take(chunk);
            self.tx
                .blocking_send((gp, rows))
                .map_err(|_| "recovery stopped loading".to_string())?;
        }
        Ok(())
    }

    /// Hands over the last, partial chunks.
    fn finish(mut self) -> Result<(), String> {
        for (gp, rows) in self.chunks.iter_mut().enumerate() {
            if !rows.is_empty() {
                self.tx
                    .blocking_send((gp as GlobalPartition, std::mem::take(rows)))
                    .map_err(|_| "recovery stopped loading".to_string())?;
            }
        }
        Ok(())
    }
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
    /// Partitions whose owner kept its state from the runtime before (a cluster's take-over):
    /// nothing was loaded into them.
    pub partitions_kept: usize,
    /// Whether the runtime before handed its state over (`Runtime::start_handed_over`):
    /// nothing was loaded or replayed.
    pub handed_over: bool,
    /// Partitions a hand-over moved to another owner, as rows.
    pub partitions_moved: usize,
    /// The rows it moved.
    pub rows_moved: usize,
    /// Of `epochs_replayed`, those a take-over replayed before it held the store's lease
    /// (`PreparedTakeOver`); `duration` counts from the lease, so without them.
    pub epochs_replayed_before_lease: u64,
}

/// Loads the latest complete checkpoint into the partitions and the dedup window (nothing with
/// `RecoverFrom::LogStart`, after checking the log was kept whole). Blocking; returns the
/// checkpoint's epoch, the rows loaded and the loaded dedup window.
#[allow(clippy::type_complexity)]
fn load_checkpoint<A: App>(
    storage: &dyn Storage,
    mut chunker: Chunker,
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
                    dedup.load_row(&key[4..], value)
                } else {
                    chunker.push(key, value)
                };
                loaded.map_err(crate::storage::StorageError::Visitor)
            })
            .map_err(|e| TxnError::Recovery(format!("loading the checkpoint: {e}")))?,
    };
    chunker
        .finish()
        .map_err(|e| TxnError::Recovery(format!("loading the checkpoint: {e}")))?;
    dedup.finish_load();
    Ok((checkpoint_epoch, rows_loaded, dedup))
}

/// Reads and decodes the log from epoch `from` on the blocking pool, handing records over a
/// bounded channel: replay holds at most `limits::RECOVERY_EPOCHS_READ_AHEAD_MAX` decoded epochs,
/// not the whole log tail. A read or decode error arrives as the last item; dropping the
/// receiver stops the reader.
pub(crate) fn stream_log<A: App>(
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
pub(crate) async fn recover<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    actors: &D,
    config: &RuntimeConfig,
) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
    let (report, dedup, _) = recover_splitting(app, actors, config, None).await?;
    Ok((report, dedup))
}

/// The rows a replay changed, per partition listed (`Job::Checkpoint`).
type ChangedRows = Vec<Vec<DeferredRows>>;

/// Where the log's tail starts, and the partitions whose rows changed before it are taken out
/// apart from the tail's.
type TailSplit = (u64, Vec<GlobalPartition>);

/// [`recover`], taking out of the partitions `split` lists the rows changed before its epoch
/// (`Job::Checkpoint`, just before replaying it; none if the log ends before it): those they
/// then still mark are the ones the log's tail changed.
async fn recover_splitting<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    actors: &D,
    config: &RuntimeConfig,
    split: Option<TailSplit>,
) -> Result<(RecoveryReport, Dedup<A::Output>, Option<ChangedRows>), TxnError> {
    let started = Instant::now();
    let mut replay = Replay::begin(app, actors, config).await?;
    let before_tail = replay.run(app, actors, config, None, split).await?;
    let (mut report, dedup) = replay.finish().await?;
    report.duration = started.elapsed();
    Ok((report, dedup, before_tail))
}

/// A replay under way: the checkpoint loaded, the log replayed up to some epoch. It can stop
/// and go on (a take-over replays most of the log before it holds the store's lease,
/// [`prepare_take_over`], and the rest after).
pub(crate) struct Replay<A: App> {
    checkpoint_epoch: Option<u64>,
    rows_loaded: usize,
    settler: Settler<A>,
    position: LogPosition,
    last_epoch: u64,
    last_timestamp_ms: u64,
    spent: ReplaySpent,
}

impl<A: App> Replay<A> {
    /// Loads the latest complete checkpoint into `actors` and the dedup window.
    pub(super) async fn begin<D: Dispatch<A>>(
        app: &Arc<AppDef<A>>,
        actors: &D,
        config: &RuntimeConfig,
    ) -> Result<Self, TxnError> {
        let (checkpoint_epoch, rows_loaded, dedup) =
            load_checkpoint_async(app, actors, config).await?;
        let from = checkpoint_epoch.map_or(0, |c| c + 1);
        Ok(Replay {
            checkpoint_epoch,
            rows_loaded,
            settler: Settler::<A>::start(dedup),
            position: LogPosition {
                // Epochs are numbered from 1; after a checkpoint of epoch c the log must go on
                // at c + 1.
                expected: from.max(1),
                checkpoint_epoch,
                epochs_replayed: 0,
            },
            last_epoch: checkpoint_epoch.unwrap_or(0),
            last_timestamp_ms: 0,
            spent: ReplaySpent::default(),
        })
    }

    /// Replays the logged epochs from the next one on, up to `until` (`None`: the log's end);
    /// with `split`, the rows its partitions changed before its epoch are taken out just
    /// before replaying it, and returned.
    pub(super) async fn run<D: Dispatch<A>>(
        &mut self,
        app: &Arc<AppDef<A>>,
        actors: &D,
        config: &RuntimeConfig,
        until: Option<u64>,
        split: Option<TailSplit>,
    ) -> Result<Option<ChangedRows>, TxnError> {
        let mut before_tail = None;
        let mut records = stream_log::<A>(config.storage.clone(), self.position.expected);
        let mut waited_from = Instant::now();
        while let Some(record) = records.recv().await {
            self.spent.log_wait += waited_from.elapsed();
            let record = record?;
            if until.is_some_and(|until| record.epoch > until) {
                break;
            }
            self.position.check_next(record.epoch)?;
            if let Some((tail_from, gps)) = &split
                && record.epoch >= *tail_from
                && before_tail.is_none()
            {
                let changed = run_phase(actors, gps, |_, reply| Job::Checkpoint { reply }).await?;
                before_tail = Some(changed);
            }
            self.last_epoch = record.epoch;
            self.last_timestamp_ms = record.timestamp_ms;
            let (settler, spent) = (&mut self.settler, &mut self.spent);
            replay_epoch(app, actors, config, record, settler, spent).await?;
            self.position.epochs_replayed += 1;
            waited_from = Instant::now();
        }
        Ok(before_tail)
    }

    /// The checkpoint it loaded.
    pub(super) fn checkpoint_epoch(&self) -> Option<u64> {
        self.checkpoint_epoch
    }

    /// The epochs it replayed so far.
    pub(super) fn epochs_replayed(&self) -> u64 {
        self.position.epochs_replayed
    }

    /// Waits for the settling of the last epochs: the report (its `duration` is the caller's
    /// to set) and the dedup window.
    pub(super) async fn finish(mut self) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
        let finishing = Instant::now();
        let (dedup, settling) = self.settler.finish().await?;
        (self.spent.settle_wait, self.spent.settle) = (finishing.elapsed(), settling);
        self.spent.log(self.position.epochs_replayed);
        let report = RecoveryReport {
            checkpoint_epoch: self.checkpoint_epoch,
            rows_loaded: self.rows_loaded,
            epochs_replayed: self.position.epochs_replayed,
            last_epoch: self.last_epoch,
            last_timestamp_ms: self.last_timestamp_ms,
            dedup_window_entries: dedup.len(),
            ..RecoveryReport::default()
        };
        Ok((report, dedup))
    }
}

/// Runs [`load_checkpoint`] on the blocking pool (storage reads block, and must never run on
/// an async worker) and sends the partitions their rows as it reads them, in chunks: at most
/// `RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX` chunks wait to be sent and as many to be loaded.
pub(crate) async fn load_checkpoint_async<A: App, D: Dispatch<A>>(
    app: &AppDef<A>,
    dispatch: &D,
    config: &RuntimeConfig,
) -> Result<(Option<u64>, usize, Dedup<A::Output>), TxnError> {
    let skipped = vec![false; app.n_global as usize];
    load_checkpoint_except(app, dispatch, config, skipped).await
}

/// [`load_checkpoint_async`] into every partition but those `skipped` names.
async fn load_checkpoint_except<A: App, D: Dispatch<A>>(
    app: &AppDef<A>,
    dispatch: &D,
    config: &RuntimeConfig,
    skipped: Vec<bool>,
) -> Result<(Option<u64>, usize, Dedup<A::Output>), TxnError> {
    let storage = config.storage.clone();
    let recover_from = config.recover_from;
    let dedup = Dedup::<A::Output>::new(WindowBounds {
        entries_max: config.dedup_window_max,
        bytes_max: config.dedup_window_bytes_max,
        generated_epochs: config.generated_id_window_epochs,
    });
    let (tx, mut rx) = mpsc::channel::<RowChunk>(limits::RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX);
    let chunker = Chunker {
        chunks: (0..app.n_global).map(|_| Vec::new()).collect(),
        skipped,
        tx,
    };
    let reader = tokio::task::spawn_blocking(move || {
        load_checkpoint::<A>(storage.as_ref(), chunker, recover_from, dedup)
    });
    let bytes_of = |(key, value): &(Vec<u8>, Vec<u8>)| key.len() + value.len();
    send_chunks(dispatch, &mut rx, bytes_of, |rows, reply| Job::Load {
        rows,
        reply,
    })
    .await?;
    reader
        .await
        .map_err(|e| TxnError::Recovery(format!("the checkpoint loader stopped: {e}")))?
}

/// Sends each chunk `rx` hands over to its partition as the job `make` builds, at most
/// `RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX` waiting to be done, and waits until all are done.
/// Chunks of distinct partitions go out together, one batch per node per [`Round`], so loading
/// another node's partitions costs a round trip per round, not per chunk.
async fn send_chunks<A: App, D: Dispatch<A>, R>(
    dispatch: &D,
    rx: &mut mpsc::Receiver<(GlobalPartition, Vec<R>)>,
    bytes_of: impl Fn(&R) -> usize,
    make: impl Fn(Vec<R>, Depositor<Result<(), String>>) -> Job<A>,
) -> Result<(), TxnError> {
    let mut loading: VecDeque<(GlobalPartition, BarrierWait<Result<(), String>>)> = VecDeque::new();
    let mut round = Round::default();
    while let Some((gp, rows)) = rx.recv().await {
        if round.partitions.contains(&gp) {
            round.flush(dispatch).await?;
        }
        round.bytes += rows.iter().map(&bytes_of).sum::<usize>();
        round.partitions.push(gp);
        let (barrier, mut reply) = PhaseBarrier::new(1);
        let reply = reply
            .pop()
            .expect("a barrier of one slot has one depositor");
        dispatch.dispatch(gp, make(rows, reply)).await?;
        loading.push_back((gp, barrier.wait()));
        if round.bytes >= limits::RECOVERY_LOAD_ROUND_BYTES_MAX || rx.is_empty() {
            round.flush(dispatch).await?;
        }
        if loading.len() > limits::RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX {
            // The oldest chunk may still be buffered: it must be sent before it is waited for.
            round.flush(dispatch).await?;
            let (gp, loaded) = loading.pop_front().expect("not empty");
            chunk_loaded(gp, loaded).await?;
        }
    }
    round.flush(dispatch).await?;
    for (gp, loaded) in loading {
        chunk_loaded(gp, loaded).await?;
    }
    Ok(())
}

/// The chunks dispatched since the last flush: of distinct partitions (a batch names each
/// partition once), and their bytes.
#[derive(Default)]
struct Round {
    partitions: Vec<GlobalPartition>,
    bytes: usize,
}

impl Round {
    /// Sends the round's chunks for other nodes (one batch per node) and starts a new round.
    async fn flush<A: App, D: Dispatch<A>>(&mut self, dispatch: &D) -> Result<(), TxnError> {
        if self.partitions.is_empty() {
            return Ok(());
        }
        self.partitions.clear();
        self.bytes = 0;
        dispatch.flush().await
    }
}

/// Waits until partition `gp` has loaded one chunk of checkpoint rows.
async fn chunk_loaded(
    gp: GlobalPartition,
    loaded: BarrierWait<Result<(), String>>,
) -> Result<(), TxnError> {
    let mut results = loaded.await.map_err(|_| {
        TxnError::Recovery(format!(
            "partition {gp} dropped its checkpoint rows (its actor stopped)"
        ))
    })?;
    results
        .pop()
        .expect("one slot")
        .map_err(|e| TxnError::Recovery(format!("loading rows into partition {gp}: {e}")))
}

/// Where replay stands in the log: the epoch it needs next, so a gap or a log that does not
/// continue the checkpoint is refused instead of replayed.
struct LogPosition {
    expected: u64,
    checkpoint_epoch: Option<u64>,
    epochs_replayed: u64,
}

impl LogPosition {
    /// Accepts `epoch` if it is the one expected next.
    fn check_next(&mut self, epoch: u64) -> Result<(), TxnError> {
        if epoch != self.expected {
            let why = if self.epochs_replayed > 0 {
                "the epoch log has a gap"
            } else if self.checkpoint_epoch.is_none() {
                "the epoch log does not start at epoch 1 and there is no checkpoint to start from \
                 (was it truncated? RecoverFrom::LogStart needs a log kept whole)"
            } else {
                "the epoch log does not continue the checkpoint"
            };
            return Err(TxnError::Recovery(format!(
                "{why}: expected epoch {}, found {epoch}",
                self.expected
            )));
        }
        self.expected = epoch + 1;
        Ok(())
    }
}

/// Replays one logged epoch: runs it as the record says, delivers its outbox again and hands
/// its results to the [`Settler`], which puts the final outcomes of requests with ids back into
/// the dedup window while the next epoch runs.
async fn replay_epoch<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    actors: &D,
    config: &RuntimeConfig,
    mut record: EpochRecord<A::Event>,
    settler: &mut Settler<A>,
    spent: &mut ReplaySpent,
) -> Result<(), TxnError> {
    let erase = std::mem::take(&mut record.erase);
    let env = record.into_env();
    let running = Instant::now();
    let outcome = run_epoch(app, actors, env.clone(), Vec::new()).await?;
    super::forget::erase_at_epoch_end(app, actors, &erase).await?;
    spent.run += running.elapsed();
    spent.txns += env.requests.len() as u64;
    if let Some(sink) = &config.outbox {
        // At-least-once: these epochs are durable, their messages may have been delivered
        // before the restart; the TID lets the sink tell.
        deliver_outbox(sink.as_ref(), env.epoch, &outcome.outbox);
    }
    settler.settle(env, outcome.results).await
}

/// One replayed epoch's requests and their results, on their way to the [`Settler`].
type Replayed<A> = (
    Arc<EpochEnv<<A as App>::Event>>,
    Vec<TxnResult<<A as App>::Output>>,
);

/// Settles replayed epochs into the dedup window on the blocking pool, in epoch order, so that
/// re-encoding each request for its digest and encoding its outcome overlap the next epochs'
/// runs instead of adding to them. At most `RECOVERY_EPOCHS_SETTLE_AHEAD_MAX` epochs wait.
struct Settler<A: App> {
    epochs: mpsc::Sender<Replayed<A>>,
    settled: tokio::task::JoinHandle<Result<SettledWindow<A>, TxnError>>,
}

/// The dedup window after the replay, and the time spent settling into it.
type SettledWindow<A> = (Dedup<<A as App>::Output>, Duration);

impl<A: App> Settler<A> {
    /// Starts settling into `dedup` (the window loaded with the checkpoint).
    fn start(mut dedup: Dedup<A::Output>) -> Self {
        let (epochs, mut rx) =
            mpsc::channel::<Replayed<A>>(limits::RECOVERY_EPOCHS_SETTLE_AHEAD_MAX);
        let settled = tokio::task::spawn_blocking(move || {
            let mut busy = Duration::ZERO;
            while let Some((env, results)) = rx.blocking_recv() {
                let started = Instant::now();
                settle_epoch::<A>(&env, results, &mut dedup)?;
                busy += started.elapsed();
            }
            Ok((dedup, busy))
        });
        Settler { epochs, settled }
    }

    /// Queues one replayed epoch; fails with the settling thread's error if it stopped on one.
    async fn settle(
        &mut self,
        env: Arc<EpochEnv<A::Event>>,
        results: Vec<TxnResult<A::Output>>,
    ) -> Result<(), TxnError> {
        if self.epochs.send((env, results)).await.is_ok() {
            return Ok(());
        }
        match (&mut self.settled).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) | Err(_) => Err(TxnError::Recovery(
                "the thread settling replayed outcomes stopped".into(),
            )),
        }
    }

    /// Waits until every queued epoch is settled; returns the dedup window and the time spent
    /// settling.
    async fn finish(self) -> Result<SettledWindow<A>, TxnError> {
        drop(self.epochs);
        self.settled.await.map_err(|e| {
            TxnError::Recovery(format!(
                "the thread settling replayed outcomes stopped: {e}"
            ))
        })?
    }
}

/// Puts the final outcomes of one replayed epoch's requests with ids into the dedup window,
/// in seq order, with the digests the live runtime computed from the same targets and events.
fn settle_epoch<A: App>(
    env: &EpochEnv<A::Event>,
    results: Vec<TxnResult<A::Output>>,
    dedup: &mut Dedup<A::Output>,
) -> Result<(), TxnError> {
    for (seq, result) in results.into_iter().enumerate() {
        let req = &env.requests[seq];
        if let Some(id) = req.id
            && let Settled::Final(o) = settle(env.epoch, env.timestamp_ms, seq, result, req.retries)
        {
            let (digest, _) = request_digest(req.target, &req.event).map_err(|e| {
                TxnError::Recovery(format!(
                    "epoch {}: a logged event does not re-encode: {e}",
                    env.epoch
                ))
            })?;
            dedup.record(id, digest, env.epoch, &o, true);
        }
    }
    Ok(())
}

/// Where a replay's time went, logged once it ends: waiting for the log (read and decoded on
/// the blocking pool), running the epochs, and settling their outcomes into the dedup window.
/// Settling runs beside the epochs; `settle_wait` is how long the replay waited for it at the
/// end.
#[derive(Default)]
struct ReplaySpent {
    log_wait: Duration,
    run: Duration,
    settle: Duration,
    settle_wait: Duration,
    txns: u64,
}

impl ReplaySpent {
    /// Logs the breakdown of a replay of `epochs` epochs (nothing for an empty log tail).
    fn log(&self, epochs: u64) {
        if epochs == 0 {
            return;
        }
        let per_epoch_ms = |d: Duration| d.as_secs_f64() * 1e3 / epochs as f64;
        tracing::info!(
            epochs,
            txns = self.txns,
            log_wait_ms_per_epoch = per_epoch_ms(self.log_wait),
            run_ms_per_epoch = per_epoch_ms(self.run),
            settle_ms_per_epoch = per_epoch_ms(self.settle),
            settle_wait_ms = self.settle_wait.as_secs_f64() * 1e3,
            run_us_per_txn = self.run.as_secs_f64() * 1e6 / self.txns.max(1) as f64,
            "replay breakdown: waiting for the log, running the epochs, settling outcomes (beside them)"
        );
    }
}

/// Recovers the runtime's partitions: in one process through its actors ([`recover`]); in a
/// cluster without replaying any epoch through the network ([`recover_then_hand_over`]).
pub(crate) async fn recover_driver<A: App>(
    app: &Arc<AppDef<A>>,
    actors: &DriverDispatch<A>,
    config: &RuntimeConfig,
    prepared: Option<PreparedTakeOver<A>>,
) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
    match actors {
        DriverDispatch::Local(_) => recover(app, actors, config).await,
        DriverDispatch::Cluster(_) => {
            let prepared = match prepared.and_then(|p| p.take()) {
                Some(preparing) => still_current(preparing, config).await,
                None => None,
            };
            recover_then_hand_over(app, actors, config, prepared).await
        }
    }
}

/// The prepared take-over's private copy, once its replay is done, if the store's latest
/// checkpoint is still the one it loaded (`take_over.rs`); otherwise it is stopped.
async fn still_current<A: App>(
    preparing: tokio::task::JoinHandle<Result<Prepared<A>, TxnError>>,
    config: &RuntimeConfig,
) -> Option<Prepared<A>> {
    let prepared = match preparing.await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the take-over prepared before the lease failed; recovering from the store");
            return None;
        }
        Err(error) => {
            tracing::warn!(%error, "the take-over prepared before the lease stopped; recovering from the store");
            return None;
        }
    };
    let storage = config.storage.clone();
    let latest = tokio::task::spawn_blocking(move || storage.latest_checkpoint_epoch()).await;
    let loaded = prepared.replay.checkpoint_epoch();
    match latest {
        Ok(Ok(latest)) if latest == loaded => Some(prepared),
        other => {
            tracing::info!(
                loaded = ?loaded,
                latest = ?other.map(|r| r.map_err(|e| e.to_string())),
                "the take-over prepared before the lease loaded another checkpoint than the \
                 store's latest; recovering from the store"
            );
            prepared.private.stop().await;
            None
        }
    }
}

/// A cluster's recovery: every partition is recovered on a private copy in this process (the
/// checkpoint, then the log replayed there, as in one process) while the owners of the other
/// nodes' partitions that were not kept from the runtime before load the same checkpoint; then
/// this node's partitions take the private copy's states, the other owners get the rows the
/// replay changed, marked for the next checkpoint as the replay marked them, and every owner
/// must end with the private copy's state hash.
async fn recover_then_hand_over<A: App>(
    app: &Arc<AppDef<A>>,
    actors: &DriverDispatch<A>,
    config: &RuntimeConfig,
    prepared: Option<Prepared<A>>,
) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
    let started = Instant::now();
    let (private, replay, prepared_epochs) = match prepared {
        Some(p) => (p.private, Some(p.replay), p.epochs),
        // The private copy always remembers changed rows: they are what the owners are handed.
        None => (PartitionActors::start(app.clone(), true)?, None, 0),
    };
    let recovered = recover_on_private(app, actors, config, &private, replay).await;
    private.stop().await;
    let mut recovered = recovered?;
    recovered.0.duration = started.elapsed();
    recovered.0.epochs_replayed_before_lease = prepared_epochs;
    Ok(recovered)
}

/// [`recover_then_hand_over`] on the private copy `private`, going on with `replay` if one was
/// begun before the lease.
async fn recover_on_private<A: App>(
    app: &Arc<AppDef<A>>,
    actors: &DriverDispatch<A>,
    config: &RuntimeConfig,
    private: &PartitionActors<A>,
    replay: Option<Replay<A>>,
) -> Result<(RecoveryReport, Dedup<A::Output>), TxnError> {
    let started = Instant::now();
    let sources = sources_of(app, actors).await?;
    let kept: Vec<GlobalPartition> = of_source(&sources, Source::Kept);
    let split = match kept.is_empty() {
        false => Some((log_tail_from(config).await?, kept.clone())),
        true => None,
    };
    // A take-over prepared before the lease has little left to replay: the owners reading the
    // whole checkpoint again would be most of what remains, so the partitions new on their
    // owners are handed every row of the private copy instead (`Changed::every_row_to_loaded`).
    let every_row_to_loaded = replay.is_some();
    let skipped: Vec<bool> = sources
        .iter()
        .map(|s| every_row_to_loaded || *s != Source::Loaded)
        .collect();
    let replaying = async {
        let mut replay = match replay {
            Some(replay) => replay,
            None => Replay::begin(app, private, config).await?,
        };
        let before_tail = replay.run(app, private, config, None, split).await?;
        let (report, dedup) = replay.finish().await?;
        Ok::<_, TxnError>((report, dedup, before_tail))
    };
    let owners_loading = async {
        match every_row_to_loaded {
            true => Ok(()),
            false => load_checkpoint_except(app, actors, config, skipped)
                .await
                .map(drop),
        }
    };
    let (recovered, owners_loaded) = tokio::join!(replaying, owners_loading);
    match (recovered, owners_loaded) {
        (Ok((mut report, dedup, before_tail)), Ok(_)) => {
            report.partitions_kept = kept.len();
            tracing::info!(
                checkpoint_epoch = ?report.checkpoint_epoch,
                rows_loaded = report.rows_loaded,
                epochs_replayed = report.epochs_replayed,
                partitions_kept = report.partitions_kept,
                seconds = started.elapsed().as_secs_f64(),
                "recovered on this node's private copy of the partitions; the other nodes loaded \
                 the checkpoint into the partitions they did not keep"
            );
            let changed = Changed {
                before_tail: before_tail.map(|rows| kept.iter().copied().zip(rows).collect()),
                sources: &sources,
                from_checkpoint: report.checkpoint_epoch.is_some(),
                track_dirty: config.checkpoint_every_epochs != 0,
                every_row_to_loaded,
            };
            hand_over(app, private, actors, changed).await?;
            Ok((report, dedup))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Where a partition's state comes from in a cluster's recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// On this node: the private copy's state, moved over.
    Here,
    /// On another node that kept it from the runtime before: the log tail's rows.
    Kept,
    /// On another node, new there: the checkpoint, then every replayed row.
    Loaded,
}

/// The partitions of `sources` from `source`, ascending.
fn of_source(sources: &[Source], source: Source) -> Vec<GlobalPartition> {
    (0..)
        .zip(sources)
        .filter(|(_, s)| **s == source)
        .map(|(gp, _)| gp)
        .collect()
}

/// The first epoch of the log's tail that a kept partition may not have applied: its owner may
/// have been an epoch or two behind the log when the runtime before stopped (it ends mid-epoch,
/// and the epoch is logged before it runs).
async fn log_tail_from(config: &RuntimeConfig) -> Result<u64, TxnError> {
    let storage = config.storage.clone();
    let last = tokio::task::spawn_blocking(move || storage.last_epoch())
        .await
        .map_err(|e| TxnError::Recovery(format!("reading the log's end stopped: {e}")))?
        .map_err(|e| TxnError::Recovery(format!("reading the log's end: {e}")))?;
    let tail = limits::TAKE_OVER_LOG_TAIL_EPOCHS - 1;
    Ok(last.unwrap_or(0).saturating_sub(tail).max(1))
}

/// What the replay changed, and for which owners.
struct Changed<'k> {
    /// The kept partitions' rows changed before the log's tail (`None`: the whole replay is the
    /// tail).
    before_tail: Option<Vec<(GlobalPartition, Vec<DeferredRows>)>>,
    sources: &'k [Source],
    /// Whether the replay started from a checkpoint.
    from_checkpoint: bool,
    /// Whether this node's partitions remember changed rows for checkpoints.
    track_dirty: bool,
    /// Whether a partition new on its owner (`Source::Loaded`) loaded no checkpoint and gets
    /// every row of the private copy (and the rows deleted since the checkpoint, so that the
    /// next one deletes them too) instead of the rows the replay changed.
    every_row_to_loaded: bool,
}

impl Changed<'_> {
    /// The rows to hand each other node's partition, in the order to apply them: every
    /// changed row to one that loaded the checkpoint; to a kept one the tail's (which bring it
    /// to the log's end) and, after a checkpoint, the rows changed before the tail too (so the
    /// rows deleted since the checkpoint are marked for the next one). Without a checkpoint the
    /// rows before the tail are every row, which it holds already.
    fn into_rows_to_hand(
        self,
        remote: &[GlobalPartition],
        tail: ChangedRows,
    ) -> Vec<(GlobalPartition, Vec<DeferredRows>)> {
        let mut rows = Vec::new();
        if let Some(before) = self.before_tail
            && self.from_checkpoint
        {
            rows.extend(before);
        }
        rows.extend(remote.iter().copied().zip(tail));
        rows
    }
}

/// Per global partition: where its state comes from. Another node kept its state from the
/// runtime before (a `PartitionHost::re_place`) when its state hash is not an empty
/// partition's; a kept partition that is empty counts as new, which it equals.
async fn sources_of<A: App>(
    app: &AppDef<A>,
    actors: &DriverDispatch<A>,
) -> Result<Vec<Source>, TxnError> {
    let all: Vec<GlobalPartition> = (0..app.n_global).collect();
    let marks = run_phase(actors, &all, |_, reply| Job::StateHash { reply }).await?;
    let sources = marks.into_iter().zip(&all).map(|(mark, gp)| {
        let hash = mark.hash;
        let empty = crate::partition::PartitionState::new(app, *gp).state_hash();
        match actors.remote_node(*gp) {
            None => Source::Here,
            Some(_) if hash != empty => Source::Kept,
            Some(_) => Source::Loaded,
        }
    });
    Ok(sources.collect())
}

/// Moves the private copy's states of this node's partitions into its partition actors (a
/// lend from the private copy, then a return in place of the actors' empty states): nothing is
/// copied, and each keeps the replay's marks for the next checkpoint.
async fn move_in<A: App>(
    private: &PartitionActors<A>,
    actors: &DriverDispatch<A>,
    here: &[GlobalPartition],
    track_dirty: bool,
) -> Result<(), TxnError> {
    let states = run_phase(private, here, |_, reply| Job::Lend { reply }).await?;
    let replaced = run_phase(actors, here, |_, reply| Job::Lend { reply }).await?;
    // Freed beside the async workers: they may hold the rows of a runtime before.
    tokio::task::spawn_blocking(move || drop(replaced));
    for mut state in states {
        if !track_dirty {
            state.set_track_dirty(false);
        }
        let gp = state.gp;
        actors.dispatch(gp, Job::Return { state }).await?;
    }
    Ok(())
}

/// Moves this node's partitions over from the private copy and hands the other nodes' owners
/// the rows the replay changed ([`Changed::into_rows_to_hand`]), then checks each owner's
/// state hash against the private copy's.
async fn hand_over<A: App>(
    app: &Arc<AppDef<A>>,
    private: &PartitionActors<A>,
    actors: &DriverDispatch<A>,
    changed: Changed<'_>,
) -> Result<(), TxnError> {
    let started = Instant::now();
    let all: Vec<GlobalPartition> = (0..app.n_global).collect();
    let sources = changed.sources;
    let expected = run_phase(private, &all, |_, reply| Job::StateHash { reply }).await?;
    let expected: Vec<u64> = expected.into_iter().map(|m| m.hash).collect();
    let here = of_source(sources, Source::Here);
    move_in(private, actors, &here, changed.track_dirty).await?;
    let remote: Vec<GlobalPartition> = all
        .iter()
        .copied()
        .filter(|gp| !here.contains(gp))
        .collect();
    let (whole, by_change): (Vec<GlobalPartition>, Vec<GlobalPartition>) = remote
        .iter()
        .partition(|gp| changed.every_row_to_loaded && sources[**gp as usize] == Source::Loaded);
    let tail = run_phase(private, &by_change, |_, reply| Job::Checkpoint { reply }).await?;
    let mut rows = changed.into_rows_to_hand(&by_change, tail);
    rows.extend(every_row(private, &whole).await?);
    let rows_applied = apply_rows(actors, rows).await?;
    let applied_in = started.elapsed();
    let installed = run_phase(actors, &all, |_, reply| Job::StateHash { reply }).await?;
    for (gp, (installed, expected)) in installed.into_iter().zip(expected).enumerate() {
        let installed = installed.hash;
        if installed != expected {
            let owner = actors
                .remote_node(gp as GlobalPartition)
                .unwrap_or("this node");
            let why = match sources[gp] {
                Source::Kept => {
                    "kept from the runtime before (it ran an epoch the log does not hold, or \
                     missed more than the log's tail gives back): place the partitions again \
                     without keeping any"
                }
                Source::Loaded => "loaded from the checkpoint",
                Source::Here => "moved from the private copy",
            };
            return Err(TxnError::Recovery(format!(
                "partition {gp}: the state on its owner ({owner}), {why}, hashes to \
                 {installed:#x}, but the state recovered here to {expected:#x}"
            )));
        }
    }
    tracing::info!(
        rows_applied,
        apply_seconds = applied_in.as_secs_f64(),
        seconds = started.elapsed().as_secs_f64(),
        partitions_here = here.len(),
        "moved this node's partitions from the private copy, handed the replayed rows to the \
         other nodes' partitions; every state hash matches"
    );
    Ok(())
}

/// Every row of the private copy's partitions `gps`, with the rows deleted since the
/// checkpoint as deletions (`settle_between_epochs_keeping_deletions`: the replay is over, so
/// nothing is mid-epoch): what an owner that loaded nothing needs
/// to hold the same state and to list for the next checkpoint what the store must change. The
/// states are lent out of the private copy for good (it is stopped after the hand-over).
async fn every_row<A: App>(
    private: &PartitionActors<A>,
    gps: &[GlobalPartition],
) -> Result<Vec<(GlobalPartition, Vec<DeferredRows>)>, TxnError> {
    if gps.is_empty() {
        return Ok(Vec::new());
    }
    let states = run_phase(private, gps, |_, reply| Job::Lend { reply }).await?;
    // Every row is visited: beside the async workers.
    tokio::task::spawn_blocking(move || {
        let rows = states.into_iter().map(|mut state| {
            crate::host::settle_between_epochs_keeping_deletions(&mut state);
            (state.gp, state.drain_checkpoint_rows())
        });
        rows.collect()
    })
    .await
    .map_err(|e| TxnError::Recovery(format!("listing the private copy's rows stopped: {e}")))
}

/// Applies `rows` on each partition's owner, in order (`Job::Apply`, chunked, encoded on the
/// blocking pool); returns how many.
pub(super) async fn apply_rows<A: App>(
    actors: &DriverDispatch<A>,
    rows: Vec<(GlobalPartition, Vec<DeferredRows>)>,
) -> Result<usize, TxnError> {
    let (tx, mut rx) = mpsc::channel(limits::RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX);
    let encoder = tokio::task::spawn_blocking(move || encode_changed_rows(rows, tx));
    let bytes_of = |(key, value): &CheckpointRow| key.len() + value.as_ref().map_or(0, Vec::len);
    send_chunks(actors, &mut rx, bytes_of, |rows, reply| Job::Apply {
        rows,
        reply,
    })
    .await?;
    encoder
        .await
        .map_err(|e| TxnError::Recovery(format!("the rows' encoder stopped: {e}")))
}

/// Encodes each partition's changed rows (blocking work) and hands them over in chunks, in
/// order; returns how many rows it encoded.
fn encode_changed_rows(
    changed: Vec<(GlobalPartition, Vec<DeferredRows>)>,
    tx: mpsc::Sender<(GlobalPartition, Vec<CheckpointRow>)>,
) -> usize {
    let mut n_rows = 0;
    for (gp, chunks) in changed {
        for encode in chunks {
            let mut rows = Vec::new();
            encode(&mut rows);
            n_rows += rows.len();
            if !rows.is_empty() && tx.blocking_send((gp, rows)).is_err() {
                // The sender stopped on an error, which it reports.
                return n_rows;
            }
        }
    }
    n_rows
}
