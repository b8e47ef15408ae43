//! Durability: the thread that appends epoch records to the log (group commit), the thread
//! that writes checkpoints one at a time, the schedule that says when a checkpoint falls due,
//! and the on-log form of an epoch.

use crate::app::App;
use crate::envelope::{EpochEnv, Fallback, Sequenced};
use crate::ids::Seq;
use crate::limits;
use crate::row_key::{CheckpointRow, DeferredRows};
use crate::runtime::retention::Truncation;
use crate::runtime::stats::{LogPeak, RuntimeStats};
use crate::storage::Storage;
use crate::sync::DurableWatermark;
use crate::wire::pack::Head;
use crate::wire::value::write;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// Turns at writing the store, shared by the log appender and the checkpoint writer so that
/// neither starves the other (many engines, redb among them, let one writer in at a time and
/// do not queue fairly).
pub(super) type WriterTurn = parking_lot::Mutex<()>;

/// What the durability thread is asked to persist, in order.
pub(super) enum LogItem<A: App> {
    /// An epoch's record, and when it was queued (for `LogPeak::wait_nanos`).
    Epoch(Arc<EpochEnv<A::Event>>, Instant),
    /// The rows changed since the previous checkpoint, as of the end of `epoch`.
    Checkpoint {
        epoch: u64,
        /// The epoch's logged time (bounded history retention by duration needs it).
        timestamp_ms: u64,
        rows: Vec<DeferredRows>,
    },
    /// An epoch at whose end the named subjects' personal data is erased (`Client::forget`):
    /// logged alone, in its own durable write.
    Erasure(Arc<EpochEnv<A::Event>>, Vec<String>),
    /// Truncate the log below `below`, then rewrite the store so that no file keeps the bytes
    /// of data deleted or overwritten before (`Storage::purge_freed_bytes`); sent by a live
    /// erasure once its checkpoint is complete and no checkpoint is being written.
    Purge {
        below: u64,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

/// A checkpoint handed to the checkpoint thread: the rows changed since the previous one, as
/// of the end of `epoch`, logged at `timestamp_ms`.
pub(super) struct CheckpointOrder {
    pub(super) epoch: u64,
    pub(super) timestamp_ms: u64,
    pub(super) rows: Vec<DeferredRows>,
}

/// The on-log form of an epoch: everything replay needs.
#[derive(Serialize)]
pub(crate) struct EpochRecordRef<'a, E> {
    pub(crate) epoch: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) requests: &'a [Sequenced<E>],
    pub(crate) fallback: Fallback,
    pub(crate) serial: &'a [Seq],
    /// Subjects whose personal data is erased at the end of the epoch (`Client::forget`);
    /// left out when empty, so every other record encodes as before the field existed.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(crate) erase: &'a [String],
}

impl<E: Serialize> EpochRecordRef<'_, E> {
    /// Appends the record to `buf`: exactly the bytes rmp-serde writes for it (a stored format:
    /// replay and the checkpoints after it depend on them), with every request's envelope
    /// (`[target, event, id, retries]`) written by hand and only its event, the application's
    /// type, and the per-epoch fields after the requests through `wire::value` (rmp-serde's
    /// bytes, written straight into `buf`).
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error> {
        let mut head = Head::new();
        head.array(if self.erase.is_empty() { 5 } else { 6 });
        head.uint(self.epoch);
        head.uint(self.timestamp_ms);
        head.array(self.requests.len());
        head.flush_to(buf);
        for request in self.requests {
            head.put([0x94]);
            head.uint(u64::from(request.target));
            head.flush_to(buf);
            write(buf, &request.event)?;
            match request.id {
                None => head.put([0xc0]),
                Some(id) => head.request_id(id),
            }
            head.uint(u64::from(request.retries));
            head.flush_to(buf);
        }
        write(buf, &self.fallback)?;
        write(buf, self.serial)?;
        if !self.erase.is_empty() {
            write(buf, self.erase)?;
        }
        Ok(())
    }
}

/// The decoded form of [`EpochRecordRef`], read back by recovery.
#[derive(Deserialize)]
pub(crate) struct EpochRecord<E> {
    pub(crate) epoch: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) requests: Vec<Sequenced<E>>,
    pub(crate) fallback: Fallback,
    pub(crate) serial: Vec<Seq>,
    /// See [`EpochRecordRef::erase`]; empty in records written before it existed.
    #[serde(default)]
    pub(crate) erase: Vec<String>,
}

impl<E> EpochRecord<E> {
    /// The epoch as it ran: the record says how (its fallback, its serial hints), so replay
    /// does the same whatever the replaying runtime's configuration is.
    pub(crate) fn into_env(self) -> Arc<EpochEnv<E>> {
        Arc::new(EpochEnv {
            epoch: self.epoch,
            timestamp_ms: self.timestamp_ms,
            requests: self.requests,
            serial: self.serial,
            fallback: self.fallback,
        })
    }
}

/// When the next checkpoint falls due: `checkpoint_every_epochs` after the last *completed*
/// one, so however often the process restarts or is killed mid-checkpoint, recovery replays at
/// most about that many epochs (a checkpoint that did not complete is due again at once).
pub(super) struct CheckpointSchedule {
    /// Set while a checkpoint is queued or being written; a checkpoint that falls due then is
    /// skipped (its rows stay dirty and go into the next one), so writing never piles up.
    pub(super) in_flight: AtomicBool,
    /// The epoch of the latest complete checkpoint (0: none), stored before `in_flight` is
    /// cleared.
    pub(super) last_completed: AtomicU64,
    /// Told each time the checkpoint thread clears `in_flight` (one stored permit), so a live
    /// erasure can wait for the checkpoint being written.
    pub(super) idle: tokio::sync::Notify,
    /// Set when the runtime stops to be replaced (`Runtime::shutdown_keeping_lease`): the
    /// checkpoint being written stops before its next chunk and is never completed.
    pub(super) abandon: AtomicBool,
    /// When the latest complete checkpoint was done and how long its write took (`None`: none
    /// completed in this process), for the duty-cycle bound (`RuntimeConfig::checkpoint_rest_factor`).
    pub(super) last_write: parking_lot::Mutex<Option<(Instant, std::time::Duration)>>,
}

impl CheckpointSchedule {
    /// Waits until no checkpoint is queued or being written.
    pub(super) async fn wait_idle(&self) {
        while self.in_flight.load(Ordering::Acquire) {
            self.idle.notified().await;
        }
    }
}

impl CheckpointSchedule {
    /// A schedule whose latest complete checkpoint is `last_completed`'s (0: none).
    pub(super) fn new(last_completed: u64) -> Self {
        CheckpointSchedule {
            in_flight: AtomicBool::new(false),
            last_completed: AtomicU64::new(last_completed),
            idle: tokio::sync::Notify::new(),
            abandon: AtomicBool::new(false),
            last_write: parking_lot::Mutex::new(None),
        }
    }

    /// Whether a checkpoint falls due at `epoch`: `every` epochs after the latest complete one
    /// and, when `rest_factor` is not 0, no sooner than `rest_factor` times its write time after
    /// it completed, so the checkpoint thread is busy at most about `1 / (1 + rest_factor)` of
    /// the time however long a write takes (a workload dirtying every row stretches the
    /// interval instead of checkpointing back to back). Only the regular schedule asks this:
    /// an erasure's checkpoint is taken at once.
    pub(super) fn due(&self, epoch: u64, every: u64, rest_factor: u32) -> bool {
        let by_epochs = every > 0
            && !self.in_flight.load(Ordering::Acquire)
            && epoch
                >= self
                    .last_completed
                    .load(Ordering::Acquire)
                    .saturating_add(every);
        by_epochs && (rest_factor == 0 || self.rested(rest_factor))
    }

    /// Whether `rest_factor` times the latest complete checkpoint's write time has passed
    /// since it completed.
    fn rested(&self, rest_factor: u32) -> bool {
        match *self.last_write.lock() {
            Some((done, took)) => done.elapsed() >= took.saturating_mul(rest_factor),
            None => true,
        }
    }
}

/// A log append whose epochs waited this long from queued to durable is logged (debug).
const SLOW_APPEND_NANOS: u64 = 100_000_000;

/// Appends epoch records and advances the watermark: every record queued when the thread comes
/// round is written in ONE durable write (group commit across epochs), so a slow fsync makes the
/// writes bigger, not the queue longer. Checkpoints are queued behind their epoch's record and
/// handed to the checkpoint thread, so a large checkpoint never holds up the log.
pub(super) fn durability_loop<A: App>(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<LogItem<A>>,
    durable: &DurableWatermark,
    checkpoints: std::sync::mpsc::Sender<CheckpointOrder>,
    stats: &RuntimeStats,
    writer_turn: &WriterTurn,
) {
    let mut group: Vec<Arc<EpochEnv<A::Event>>> = Vec::new();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut next = rx.blocking_recv();
    while let Some(item) = next.take() {
        let mut oldest_queued = None;
        let after = gather_group(item, &mut rx, &mut group, &mut oldest_queued);
        let writer = LogWriter {
            storage: storage.as_ref(),
            stats,
            writer_turn,
        };
        if !group.is_empty() && durable.failure().is_none() {
            match writer.append(&group, &[], &mut bufs) {
                Ok((last, append_nanos)) => {
                    durable.advance(last);
                    if let Some(queued) = oldest_queued {
                        let peak = LogPeak {
                            wait_nanos: queued.elapsed().as_nanos() as u64,
                            append_nanos,
                            epochs: group.len() as u64,
                            bytes: bufs[..group.len()].iter().map(|b| b.len() as u64).sum(),
                            checkpoint_writing: checkpoint_writing(stats),
                        };
                        if peak.wait_nanos >= SLOW_APPEND_NANOS {
                            tracing::debug!(
                                epoch = last,
                                wait_ms = peak.wait_nanos as f64 / 1e6,
                                append_ms = peak.append_nanos as f64 / 1e6,
                                epochs = peak.epochs,
                                bytes = peak.bytes,
                                checkpoint_writing = peak.checkpoint_writing,
                                "slow log append"
                            );
                        }
                        stats.note_append(&peak);
                    }
                }
                Err(e) => {
                    let last = group.last().map_or(0, |env| env.epoch);
                    tracing::error!(epoch = last, error = %e, "epoch log append failed; refusing further writes");
                    durable.fail(e);
                }
            }
        }
        group.clear();
        match after {
            Some(LogItem::Checkpoint {
                epoch,
                timestamp_ms,
                rows,
            }) => {
                // The epoch's own record is durable: it was queued, and so written, before
                // this item.
                if durable.failure().is_none() {
                    let _ = checkpoints.send(CheckpointOrder {
                        epoch,
                        timestamp_ms,
                        rows,
                    });
                }
            }
            Some(LogItem::Erasure(env, subjects)) => {
                append_erasure(&writer, durable, env, &subjects, &mut bufs)
            }
            Some(LogItem::Purge { below, reply }) => {
                let _ = reply.send(purge(&writer, durable, below));
            }
            Some(LogItem::Epoch(..)) | None => {}
        }
        next = rx.blocking_recv();
    }
}

/// Appends an erasure's epoch record alone and advances the watermark to it.
fn append_erasure<E: Serialize>(
    writer: &LogWriter<'_>,
    durable: &DurableWatermark,
    env: Arc<EpochEnv<E>>,
    subjects: &[String],
    bufs: &mut Vec<Vec<u8>>,
) {
    if durable.failure().is_some() {
        return;
    }
    let epoch = env.epoch;
    match writer.append(&[env], subjects, bufs) {
        Ok((last, _)) => durable.advance(last),
        Err(e) => {
            tracing::error!(epoch, error = %e, "erasure epoch append failed; refusing further writes");
            durable.fail(e);
        }
    }
}

/// Truncates the log below `below` and purges the store's freed bytes, holding the writer's
/// turn; a failure fails the watermark (the erasure's checkpoint is durable, but the store may
/// be half rewritten).
fn purge(writer: &LogWriter<'_>, durable: &DurableWatermark, below: u64) -> Result<(), String> {
    if let Some(failure) = durable.failure() {
        return Err(failure.message().to_string());
    }
    let _turn = writer.writer_turn.lock();
    let storage = writer.storage;
    let result = storage
        .truncate_log_below(below)
        .and_then(|()| storage.purge_freed_bytes())
        .map_err(|e| {
            super::lease::note_fenced(writer.stats, &e);
            format!("erasing the store's old bytes: {e}")
        });
    if let Err(e) = &result {
        tracing::error!(error = %e, "purging the store after an erasure failed; refusing further writes");
        durable.fail(e.clone());
    }
    result
}

/// Puts `item` and every epoch already queued behind it into `group`, up to the first item
/// that is not a plain epoch (a checkpoint, an erasure, a purge), which it returns;
/// `oldest_queued` gets when the first epoch was queued.
fn gather_group<A: App>(
    item: LogItem<A>,
    rx: &mut mpsc::Receiver<LogItem<A>>,
    group: &mut Vec<Arc<EpochEnv<A::Event>>>,
    oldest_queued: &mut Option<Instant>,
) -> Option<LogItem<A>> {
    match item {
        LogItem::Epoch(env, queued) => {
            group.push(env);
            *oldest_queued = Some(queued);
            loop {
                match rx.try_recv() {
                    Ok(LogItem::Epoch(env, _)) => group.push(env),
                    Ok(other) => break Some(other),
                    Err(_) => break None,
                }
            }
        }
        other => Some(other),
    }
}

/// Writes groups of epoch records to the log and counts what it wrote.
struct LogWriter<'a> {
    storage: &'a dyn Storage,
    stats: &'a RuntimeStats,
    writer_turn: &'a WriterTurn,
}

impl LogWriter<'_> {
    /// Encodes `group` into `bufs` (reused across groups) and appends it in one durable write;
    /// returns the last epoch written and the append's wall time. `erase` goes into every
    /// record of the group (an erasure's group is its epoch alone).
    fn append<E: Serialize>(
        &self,
        group: &[Arc<EpochEnv<E>>],
        erase: &[String],
        bufs: &mut Vec<Vec<u8>>,
    ) -> Result<(u64, u64), String> {
        // The sequencer numbers epochs one by one and the channel keeps their order.
        debug_assert!(group.windows(2).all(|w| w[1].epoch == w[0].epoch + 1));
        let started = std::time::Instant::now();
        bufs.resize_with(group.len(), Vec::new);
        let encoded = group
            .iter()
            .zip(bufs.iter_mut())
            .try_for_each(|(env, buf)| encode_epoch(env, erase, buf));
        let result = encoded.and_then(|()| {
            let batch: Vec<(u64, &[u8])> = group
                .iter()
                .zip(bufs.iter())
                .map(|(env, buf)| (env.epoch, buf.as_slice()))
                .collect();
            let _turn = self.writer_turn.lock();
            self.storage.append_epochs(&batch).map_err(|e| {
                super::lease::note_fenced(self.stats, &e);
                e.to_string()
            })
        });
        let stats = self.stats;
        stats.log_appends.fetch_add(1, Ordering::Relaxed);
        stats
            .log_epochs
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let n_bytes: usize = bufs[..group.len()].iter().map(Vec::len).sum();
        stats.log_bytes.fetch_add(n_bytes as u64, Ordering::Relaxed);
        let nanos = started.elapsed().as_nanos() as u64;
        stats.log_append_nanos.fetch_add(nanos, Ordering::Relaxed);
        result.map(|()| (group.last().map_or(0, |env| env.epoch), nanos))
    }
}

/// Whether a checkpoint is being written right now.
pub(super) fn checkpoint_writing(stats: &RuntimeStats) -> bool {
    stats.checkpoints_started.load(Ordering::Relaxed)
        > stats.checkpoints_completed.load(Ordering::Relaxed)
}

/// Encodes one epoch's log record into `buf` (cleared first).
fn encode_epoch<E: Serialize>(
    env: &EpochEnv<E>,
    erase: &[String],
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    buf.clear();
    let record = EpochRecordRef {
        epoch: env.epoch,
        timestamp_ms: env.timestamp_ms,
        requests: &env.requests,
        fallback: env.fallback,
        serial: &env.serial,
        erase,
    };
    record
        .encode(buf)
        .map_err(|e| format!("epoch {} does not encode: {e}", env.epoch))
}

/// Writes checkpoints handed over by the durability thread, one at a time. `writer_turn` is
/// the turn its checkpoint writes take; the log's truncation after a checkpoint goes to
/// `truncator` (a thread of normal priority, which takes the log appender's turn), so this
/// thread, which may run at a lower priority (`RuntimeConfig::checkpoint_nice`), never holds
/// the log's turn. Dropping `truncator` on return ends the truncation thread.
#[allow(clippy::too_many_arguments)]
pub(super) fn checkpoint_loop(
    storage: &dyn Storage,
    rx: std::sync::mpsc::Receiver<CheckpointOrder>,
    durable: &DurableWatermark,
    mut truncation: Truncation,
    stats: &RuntimeStats,
    schedule: &CheckpointSchedule,
    writer_turn: &WriterTurn,
    truncator: LogTruncator,
) {
    while let Ok(order) = rx.recv() {
        let epoch = order.epoch;
        // The sequencer queues a checkpoint only when none is in flight and sets the flag
        // first: this is the one checkpoint in flight.
        debug_assert!(schedule.in_flight.load(Ordering::Acquire));
        if durable.failure().is_none() {
            stats.checkpoints_started.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let writers = Writers {
                checkpoint: writer_turn,
                truncator: &truncator,
            };
            match write_checkpoint(storage, order, &mut truncation, writers, &schedule.abandon) {
                Ok(None) => {
                    tracing::info!(
                        epoch,
                        "checkpoint abandoned unfinished: the runtime stops to be replaced"
                    );
                }
                Ok(Some((n_rows, chunk_nanos_max))) => {
                    let micros = started.elapsed().as_micros() as u64;
                    stats.note_checkpoint(chunk_nanos_max, micros * 1_000);
                    stats
                        .last_checkpoint_rows
                        .store(n_rows as u64, Ordering::Relaxed);
                    stats
                        .last_checkpoint_micros
                        .store(micros, Ordering::Relaxed);
                    stats.checkpoints_completed.fetch_add(1, Ordering::Relaxed);
                    *schedule.last_write.lock() = Some((Instant::now(), started.elapsed()));
                    schedule.last_completed.store(epoch, Ordering::Release);
                }
                Err(e) => {
                    super::lease::note_fenced(stats, &e);
                    tracing::error!(epoch, error = %e, "checkpoint write failed; refusing further writes");
                    durable.fail(format!("checkpoint of epoch {epoch}: {e}"));
                }
            }
        }
        schedule.in_flight.store(false, Ordering::Release);
        schedule.idle.notify_one();
    }
}

/// Writes an incremental checkpoint in bounded chunks, completes it, then drops the log records
/// it covers; returns how many rows it wrote and the longest it held the writer for one chunk,
/// or `None` if `abandon` was set before it completed (nothing completed, nothing truncated).
/// Each table's rows are encoded and written before the next table's are encoded, so the
/// encoded rows in memory are one table's at most, not the whole checkpoint's (after a large
/// load that would be every row of the database again).
fn write_checkpoint(
    storage: &dyn Storage,
    order: CheckpointOrder,
    truncation: &mut Truncation,
    writers: Writers<'_>,
    abandon: &AtomicBool,
) -> Result<Option<(usize, u64)>, crate::storage::StorageError> {
    let writer_turn = writers.checkpoint;
    let CheckpointOrder {
        epoch,
        timestamp_ms,
        rows: deferred,
    } = order;
    let mut base = match truncation {
        Truncation::Retain(base) => Some(base.as_mut()),
        _ => None,
    };
    if let Some(base) = base.as_deref_mut() {
        base.begin(storage, epoch)?;
    }
    let started = std::time::Instant::now();
    let mut chunk_nanos_max = 0u64;
    // One chunk per turn, handed over fairly: a log append waiting for the store goes next, so
    // a large checkpoint delays epochs by at most one chunk write.
    let mut turn = |f: &mut dyn FnMut() -> Result<(), crate::storage::StorageError>| {
        let guard = writer_turn.lock();
        let held = Instant::now();
        let result = f();
        chunk_nanos_max = chunk_nanos_max.max(held.elapsed().as_nanos() as u64);
        parking_lot::MutexGuard::unlock_fair(guard);
        result
    };
    let mut rows: Vec<CheckpointRow> = Vec::new();
    let mut n_rows = 0;
    for encode in deferred {
        rows.clear();
        encode(&mut rows);
        n_rows += rows.len();
        if let Some(base) = base.as_deref_mut() {
            base.push_rows(epoch, &rows)?;
        }
        for chunk in rows.chunks(limits::CHECKPOINT_CHUNK_ROWS_MAX) {
            if abandon.load(Ordering::Acquire) {
                return Ok(None);
            }
            turn(&mut || storage.write_checkpoint_rows(epoch, chunk))?;
        }
    }
    if abandon.load(Ordering::Acquire) {
        return Ok(None);
    }
    if let Some(base) = base.as_deref_mut() {
        base.finish(epoch, timestamp_ms)?;
    }
    let chunks_written = started.elapsed();
    turn(&mut || storage.complete_checkpoint(epoch))?;
    let completed = started.elapsed();
    let truncate_below = match base {
        Some(base) => Some(base.advance(epoch, timestamp_ms)? + 1),
        None => matches!(truncation, Truncation::BelowCheckpoint).then_some(epoch + 1),
    };
    if let Some(below) = truncate_below.filter(|&below| below > 1) {
        writers.truncator.truncate_below(below)?;
    }
    tracing::debug!(
        epoch,
        rows = n_rows,
        seconds = started.elapsed().as_secs_f64(),
        chunks_seconds = chunks_written.as_secs_f64(),
        completion_seconds = (completed - chunks_written).as_secs_f64(),
        truncation_seconds = (started.elapsed() - completed).as_secs_f64(),
        "checkpoint written"
    );
    Ok(Some((n_rows, chunk_nanos_max)))
}

/// What writes the store for the checkpoint thread: the turn its checkpoint writes take, and
/// the thread that truncates the log after a checkpoint.
#[derive(Clone, Copy)]
struct Writers<'a> {
    checkpoint: &'a WriterTurn,
    truncator: &'a LogTruncator,
}

/// The checkpoint thread's end of the truncation thread: a truncation order goes out and the
/// checkpoint thread waits for its result, so a checkpoint still counts as written only once
/// the log below it is removed (and a failure is reported as before), while the log's turn is
/// only ever taken by threads of normal priority.
pub(super) struct LogTruncator {
    orders: std::sync::mpsc::Sender<u64>,
    done: std::sync::mpsc::Receiver<Result<(), crate::storage::StorageError>>,
}

/// The truncation thread's end: the orders it takes and where their results go.
pub(super) struct TruncationOrders {
    orders: std::sync::mpsc::Receiver<u64>,
    done: std::sync::mpsc::Sender<Result<(), crate::storage::StorageError>>,
}

/// A connected pair of ends.
pub(super) fn log_truncation_channel() -> (LogTruncator, TruncationOrders) {
    let (orders_tx, orders_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    (
        LogTruncator {
            orders: orders_tx,
            done: done_rx,
        },
        TruncationOrders {
            orders: orders_rx,
            done: done_tx,
        },
    )
}

impl LogTruncator {
    /// Has the truncation thread remove the log records below `below` and waits until it has.
    fn truncate_below(&self, below: u64) -> Result<(), crate::storage::StorageError> {
        let gone = || {
            crate::storage::StorageError::io(
                "runtime",
                "truncate the log after a checkpoint",
                std::io::Error::other("the log truncation thread has stopped"),
            )
        };
        self.orders.send(below).map_err(|_| gone())?;
        self.done.recv().map_err(|_| gone())?
    }
}

/// The truncation thread: removes the log below each ordered epoch in bounded steps under the
/// log appender's turn (`truncate_in_steps`) and sends back the result; ends when the checkpoint
/// thread drops its end.
pub(super) fn truncation_loop(
    storage: &dyn Storage,
    ends: TruncationOrders,
    log_turn: &WriterTurn,
) {
    while let Ok(below) = ends.orders.recv() {
        if ends
            .done
            .send(truncate_in_steps(storage, below, log_turn))
            .is_err()
        {
            return;
        }
    }
}

/// Lowers the calling thread's CPU priority by `steps` nice steps (up to 19) on Linux, where a
/// thread has its own nice value; elsewhere does nothing. A failure is logged, never fatal.
pub(super) fn lower_own_priority(steps: u8) {
    if steps == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: `getpriority` and `setpriority` with `who` 0 only read and set the calling
        // thread's nice value (Linux keeps one per thread; 0 names the caller, so no thread id
        // and no `gettid`, which older C libraries lack), and `errno` is the calling thread's.
        let result = unsafe {
            const CALLER: libc::id_t = 0;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, CALLER);
            if current == -1 && *libc::__errno_location() != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                let target = current.saturating_add(i32::from(steps)).min(19);
                match libc::setpriority(libc::PRIO_PROCESS, CALLER, target) {
                    0 => Ok(target),
                    _ => Err(std::io::Error::last_os_error()),
                }
            }
        };
        match result {
            Ok(nice) => tracing::debug!(nice, "checkpoint thread priority lowered"),
            Err(error) => tracing::warn!(
                steps,
                %error,
                "cannot lower the checkpoint thread's priority; it runs at the process's"
            ),
        }
    }
}

/// The lowest epoch still logged: the first logged record's, else the one after the latest
/// complete checkpoint (the next appended), else 1. Read afresh for each truncation (one
/// record), as a live erasure's purge truncates the log too.
fn first_logged_epoch(storage: &dyn Storage) -> u64 {
    let mut first = None;
    // Stops at the first record: the visitor's error ends the read.
    let _ = storage.read_epochs(0, &mut |epoch, _| {
        first = Some(epoch);
        Err(crate::storage::StorageError::Visitor(
            "first epoch found".into(),
        ))
    });
    first
        .or_else(|| {
            let latest = storage.latest_checkpoint_epoch().ok().flatten();
            latest.map(|epoch| epoch + 1)
        })
        .unwrap_or(1)
}

/// Removes the log records below `below`, from the lowest logged epoch up, in steps of at most
/// `limits::CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP` epochs, each under the log appender's turn
/// handed over fairly, so an epoch waiting to be logged waits for one step at most instead of
/// the whole removal (the log may hold thousands of epochs of records by the time a large
/// checkpoint completes).
fn truncate_in_steps(
    storage: &dyn Storage,
    below: u64,
    log_turn: &WriterTurn,
) -> Result<(), crate::storage::StorageError> {
    let mut log_start = first_logged_epoch(storage);
    while log_start < below {
        let step_below = log_start
            .saturating_add(limits::CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP)
            .min(below);
        let guard = log_turn.lock();
        let result = storage.truncate_log_below(step_below);
        parking_lot::MutexGuard::unlock_fair(guard);
        result?;
        log_start = step_below;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;
    use crate::wire::pack::{INT_EDGES as EDGES, any_width_uint as uint};
    use proptest::prelude::*;

    /// The record by hand and by rmp-serde, which must be the same bytes.
    fn both_ways<E: Serialize>(record: &EpochRecordRef<'_, E>) -> (Vec<u8>, Vec<u8>) {
        let mut hand = vec![0xee]; // `encode` appends: what is already there stays.
        record.encode(&mut hand).expect("the record encodes");
        let mut rmp = vec![0xee];
        rmp_serde::encode::write(&mut rmp, record).expect("the record encodes");
        (hand, rmp)
    }

    fn record<'a, E>(
        epoch: u64,
        requests: &'a [Sequenced<E>],
        fallback: Fallback,
        serial: &'a [Seq],
        erase: &'a [String],
    ) -> EpochRecordRef<'a, E> {
        EpochRecordRef {
            epoch,
            timestamp_ms: epoch.rotate_left(17),
            requests,
            fallback,
            serial,
            erase,
        }
    }

    fn request<E>(target: u64, event: E, id: Option<RequestId>, retries: u64) -> Sequenced<E> {
        Sequenced {
            target: target as u32,
            event,
            id,
            retries: retries as u32,
        }
    }

    #[derive(Clone, Debug, Serialize)]
    enum Event {
        Unit,
        Put { key: u64, value: String },
        Many(Vec<Option<i64>>),
    }

    #[test]
    fn hand_encoding_is_byte_for_byte_rmp_serde() {
        // Every width of every integer of a request's envelope.
        let mut requests = Vec::new();
        for (i, &v) in EDGES.iter().enumerate() {
            let w = EDGES[(i + 3) % EDGES.len()];
            let id = RequestId { client: v, seq: w };
            requests.push(request(
                v.min(u64::from(u32::MAX)),
                v,
                Some(id),
                w.min(u64::from(u32::MAX)),
            ));
            requests.push(request(w, v, None, v));
        }
        let fallbacks = [Fallback::Serial, Fallback::NextEpoch, Fallback::Ordered];
        let erase = ["subject-1".to_string(), String::new()];
        for (i, &epoch) in EDGES.iter().enumerate() {
            let serial: Vec<Seq> = (0..i as u32).map(|s| s * 1_000).collect();
            let erase = &erase[..i % 3];
            let r = record(epoch, &requests, fallbacks[i % 3], &serial, erase);
            let (hand, rmp) = both_ways(&r);
            assert_eq!(hand, rmp, "epoch {epoch}");
        }
        // Events of the application's own shapes, and no requests at all.
        let events = [
            Event::Unit,
            Event::Put {
                key: 7,
                value: "seven".into(),
            },
            Event::Many(vec![None, Some(-1), Some(i64::MIN)]),
        ];
        let requests: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| request(i as u64, e.clone(), None, 0))
            .collect();
        for n in 0..=requests.len() {
            let r = record(3, &requests[..n], Fallback::Ordered, &[1], &[]);
            let (hand, rmp) = both_ways(&r);
            assert_eq!(hand, rmp, "{n} requests");
        }
    }

    #[test]
    fn every_width_of_the_request_count_is_rmp_serde() {
        let requests: Vec<_> = (0..0x1_0001u64).map(|k| request(1, k, None, 0)).collect();
        for n in [15, 16, 0xffff, 0x1_0000, 0x1_0001] {
            let r = record(9, &requests[..n], Fallback::Serial, &[], &[]);
            let (hand, rmp) = both_ways(&r);
            assert!(hand == rmp, "{n} requests: the bytes differ");
        }
    }

    #[test]
    fn an_unencodable_event_fails_as_with_rmp_serde() {
        use crate::wire::pack::{UNENCODABLE, Unencodable};
        let requests = [request(1, Unencodable, None, 0)];
        let r = record(2, &requests, Fallback::Serial, &[], &[]);
        let hand = r.encode(&mut Vec::new()).unwrap_err().to_string();
        let rmp = rmp_serde::to_vec(&r).unwrap_err().to_string();
        assert_eq!(hand, rmp);
        assert!(hand.contains(UNENCODABLE), "{hand}");
        let env = EpochEnv {
            epoch: 2,
            timestamp_ms: 0,
            requests: vec![request(1, Unencodable, None, 0)],
            serial: Vec::new(),
            fallback: Fallback::Serial,
        };
        let err = encode_epoch(&env, &[], &mut Vec::new()).unwrap_err();
        assert_eq!(err, format!("epoch 2 does not encode: {UNENCODABLE}"));
    }

    #[test]
    fn recovery_reads_the_record_back() {
        let id = RequestId {
            client: RequestId::GENERATED_CLIENT_BIT | 5,
            seq: 1 << 40,
        };
        let env = EpochEnv {
            epoch: 12,
            timestamp_ms: 1_700_000_000_000,
            requests: vec![
                request(3, (9u64, "nine".to_string()), Some(id), 2),
                request(0, (0u64, String::new()), None, 0),
            ],
            serial: vec![1],
            fallback: Fallback::Ordered,
        };
        let mut buf = vec![1, 2, 3]; // cleared first
        encode_epoch(&env, &["s".to_string()], &mut buf).unwrap();
        let back: EpochRecord<(u64, String)> = rmp_serde::from_slice(&buf).unwrap();
        assert_eq!((back.epoch, back.timestamp_ms), (12, 1_700_000_000_000));
        assert_eq!(
            (back.serial, back.fallback, back.erase),
            (vec![1], Fallback::Ordered, vec!["s".to_string()])
        );
        let got: Vec<_> = back
            .requests
            .into_iter()
            .map(|r| (r.target, r.event, r.id, r.retries))
            .collect();
        let want: Vec<_> = env
            .requests
            .into_iter()
            .map(|r| (r.target, r.event, r.id, r.retries))
            .collect();
        assert_eq!(got, want);
    }

    fn any_request() -> impl Strategy<Value = Sequenced<(u64, String, Option<Vec<u8>>)>> {
        let id = proptest::option::of(
            (uint(), uint()).prop_map(|(client, seq)| RequestId { client, seq }),
        );
        let event = (
            uint(),
            ".{0,40}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        );
        (uint(), event, id, uint())
            .prop_map(|(target, event, id, retries)| request(target, event, id, retries))
    }

    proptest::proptest! {
        #[test]
        fn hand_encoding_matches_rmp_serde_on_random_records(
            epoch in uint(),
            timestamp_ms in uint(),
            requests in proptest::collection::vec(any_request(), 0..40),
            fallback in prop_oneof![Just(Fallback::Serial), Just(Fallback::NextEpoch), Just(Fallback::Ordered)],
            serial in proptest::collection::vec(uint().prop_map(|s| s as u32), 0..20),
            erase in proptest::collection::vec(".{0,10}", 0..3),
        ) {
            let r = EpochRecordRef {
                epoch,
                timestamp_ms,
                requests: &requests,
                fallback,
                serial: &serial,
                erase: &erase,
            };
            let (hand, rmp) = both_ways(&r);
            proptest::prop_assert_eq!(hand, rmp);
        }
    }
}
