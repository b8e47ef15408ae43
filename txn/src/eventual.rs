//! The `eventual` baseline: the same application, wired by asynchronous events with NO
//! transaction layer — what the eventually consistent Orleans/Dapr implementations of the
//! benchmarks do.
//!
//! Every step runs in its partition as soon as its event arrives and commits right away on its
//! own; the events it emits are delivered asynchronously to their partitions, interleaving with
//! other requests' steps; an abort discards only the aborting step (earlier steps of the chain
//! stay committed); queries read the partitions one after another, not at one snapshot (each
//! partition's state is owned by the task that runs its steps, so a query is a message to each
//! task, answered between two of its steps). The client gets its outcome when the whole chain
//! has run. It exists to be measured against — its anomalies are what the consistency checkers
//! count — and is not a mode anyone should run in production.
//!
//! # Durability
//!
//! [`EventualRuntime::start`] keeps everything in memory and logs nothing.
//!
//! [`EventualRuntime::start_durable`] models the state store of those implementations: a step's
//! state change is persisted before anything the step produced leaves it. Each step still
//! commits locally at once (later steps in the same partition read its writes right away), but
//! the events it emitted and the client's reply (or abort) are **held** until the rows it
//! changed are durable:
//! - a partition task runs the steps queued for it in a burst (one step after another, each
//!   committing on its own), then takes the rows the burst changed (the tables' dirty tracking,
//!   `PartitionState::drain_changed_rows`, the same encoding as vmsdb's checkpoints), encodes
//!   them as a grain serializes its own state, hands them with the burst's held outputs to the
//!   log writer, and goes on with its queue — it never waits for a disk write;
//! - the log writer, one dedicated OS thread like vmsdb's durability thread, takes every burst
//!   handed over since its last write, frames their rows into a record and appends it in ONE
//!   [`Storage::append_epochs`] call (group commit; an increasing batch number stands for the
//!   epoch), hands the group to a release task and starts on the next group; the release task
//!   (on the tokio runtime, overlapping the next write) releases the held outputs in order:
//!   emitted events to their partitions, replies to the clients;
//! - a burst that changed nothing skips the writer when no earlier burst of its partition is
//!   still waiting (it cannot have read anything that is not durable yet);
//! - a failed append fails every held step and every later one (`TxnError::Storage`), like the
//!   runtime: their events are never delivered.
//!
//! The log record of a batch is [`EventualLogRecord`]: the `(key, value)` of every changed row,
//! keys prefixed by global partition and table as in vmsdb's checkpoints. **Recovery is not
//! implemented**: this is a baseline, the log exists to pay for durability faithfully, not to be
//! read back, and it is never truncated. Queries read the live state, which may include writes
//! whose batch is not durable yet.

use crate::app::{App, AppDef, ServiceRef};
use crate::clock::Clock;
use crate::context::Usage;
use crate::contract::{EventOf, KeyOf, Request, Service, Svc};
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, Tid};
use crate::partition::{Emitted, PartitionState, Partitions, StepEvent, WaveOut};
use crate::query::ReadView;
use crate::row_key::{CheckpointRow, DeferredRows};
use crate::storage::Storage;
use parking_lot::Mutex;
use serde_bytes::{ByteBuf, Bytes};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How a request ended in the eventual baseline.
pub type EventualOutcome<O> = Result<Option<O>, AbortReason>;

/// Most steps a partition runs in one burst before handing their outputs to the log writer
/// (also bounds how long a partition task runs without yielding).
const BURST_STEPS_MAX: usize = 128;

/// Target size of one log record; a group commit with more changed rows is split into several
/// consecutive batch records, still appended in one call. Far below
/// `txn_storage::limits::EPOCH_BATCH_BYTES_MAX`.
const RECORD_BYTES_TARGET: usize = 8 * 1024 * 1024;
const _: () = assert!(RECORD_BYTES_TARGET * 2 <= crate::storage::limits::EPOCH_BATCH_BYTES_MAX);

type Reply<O> = oneshot::Sender<Result<EventualOutcome<O>, TxnError>>;

/// The chain of one request: how many of its steps are still queued or running.
struct Chain<A: App> {
    outstanding: AtomicUsize,
    abort: Mutex<Option<AbortReason>>,
    output: Mutex<Option<A::Output>>,
    reply: Mutex<Option<Reply<A::Output>>>,
}

struct EventualStep<A: App> {
    tid: Tid,
    event: StepEvent<A::Event>,
    chain: Arc<Chain<A>>,
}

/// What a partition task receives: a step to run, or a query to run on the state it owns.
enum PartitionMsg<A: App> {
    Step(EventualStep<A>),
    Query(StateQuery<A>),
}

/// A query run by the task that owns a partition, on its state.
type StateQuery<A> = Box<dyn FnOnce(&PartitionState<A>) + Send>;

type Queues<A> = Arc<Vec<mpsc::UnboundedSender<PartitionMsg<A>>>>;

/// A step that ran and committed locally, with what it produced, not yet released.
struct Done<A: App> {
    tid: Tid,
    chain: Arc<Chain<A>>,
    /// The output (if any) and how many of the burst's emits, in order, are this step's.
    result: Result<(Option<A::Output>, usize), AbortReason>,
}

/// One burst of one partition, waiting for its changed rows to be durable.
struct Held<A: App> {
    gp: usize,
    /// How many changed rows `rows` holds.
    n_rows: usize,
    /// The changed rows, each encoded as a record row (see `encode_row`), back to back.
    rows: Vec<u8>,
    steps: Vec<Done<A>>,
    emits: Vec<Emitted<A::Event>>,
}

/// Counters of the durable mode.
#[derive(Default)]
struct Counters {
    steps: AtomicU64,
    held_steps: AtomicU64,
    appends: AtomicU64,
    records: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    append_nanos: AtomicU64,
}

/// What the durable mode wrote (see [`EventualRuntime::durability_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventualDurabilityStats {
    /// Steps run (committed or aborted), in total.
    pub steps: u64,
    /// Steps whose outputs waited for the log writer (the rest changed nothing and had nothing
    /// to wait for).
    pub held_steps: u64,
    /// `Storage::append_epochs` calls (durable writes).
    pub appends: u64,
    /// Batch records appended (one per append unless a group was split for size).
    pub records: u64,
    /// Changed rows written.
    pub rows: u64,
    /// Record bytes written.
    pub bytes: u64,
    /// Time spent in `Storage::append_epochs` (the durable writes), in nanoseconds.
    pub append_nanos: u64,
}

/// What a partition task of the durable mode shares with the log writer.
struct Durable<A: App> {
    tx: mpsc::UnboundedSender<Held<A>>,
    /// Per partition: bursts handed to the writer and not yet released.
    in_writer: Arc<Vec<AtomicUsize>>,
    /// Set once an append failed: nothing is released any more.
    failed: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl<A: App> Clone for Durable<A> {
    fn clone(&self) -> Self {
        Durable {
            tx: self.tx.clone(),
            in_writer: self.in_writer.clone(),
            failed: self.failed.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// A running eventual baseline: one task per partition, each owning its partition's state and
/// applying its queue of steps (and queries), and in the durable mode one log writer thread.
pub struct EventualRuntime<A: App> {
    app: Arc<AppDef<A>>,
    queues: Queues<A>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_seq: AtomicU32,
    /// The log writer thread and the task releasing what it wrote (durable mode).
    writer: Option<(std::thread::JoinHandle<()>, tokio::task::JoinHandle<()>)>,
    counters: Option<Arc<Counters>>,
}

impl<A: App> EventualRuntime<A> {
    /// Starts one task per partition, state in memory only, nothing logged. Must be called
    /// inside a tokio runtime.
    pub fn start(app: Arc<AppDef<A>>) -> Self {
        Self::launch(app, None).expect("the in-memory mode starts no thread")
    }

    /// Starts one task per partition and a log writer thread appending to `storage`: each step's
    /// changed rows are durable (group commit) before its emitted events are delivered and
    /// before its client is answered. Must be called inside a tokio runtime. Batch numbers
    /// continue after the last epoch already in `storage`'s log.
    pub fn start_durable(app: Arc<AppDef<A>>, storage: Arc<dyn Storage>) -> Result<Self, TxnError> {
        Self::launch(app, Some(storage))
    }

    fn launch(app: Arc<AppDef<A>>, storage: Option<Arc<dyn Storage>>) -> Result<Self, TxnError> {
        let mut parts = Partitions::new(&app);
        let n_partitions = app.n_global as usize;
        let mut senders = Vec::with_capacity(n_partitions);
        let mut receivers = Vec::with_capacity(n_partitions);
        for _ in 0..n_partitions {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let queues: Queues<A> = Arc::new(senders);
        let (durable, writer) = match storage {
            None => {
                for p in parts.iter_mut() {
                    p.set_track_dirty(false);
                }
                (None, None)
            }
            Some(storage) => {
                // Dirty tracking stays on (the default): it is how a burst's changed rows are
                // found.
                let first_batch = storage
                    .last_epoch()
                    .map_err(|e| TxnError::Storage(e.to_string()))?
                    .map_or(1, |last| last + 1);
                let (tx, rx) = mpsc::unbounded_channel();
                let durable = Durable {
                    tx,
                    in_writer: Arc::new((0..n_partitions).map(|_| AtomicUsize::new(0)).collect()),
                    failed: Arc::new(AtomicBool::new(false)),
                    counters: Arc::new(Counters::default()),
                };
                let (released, released_rx) = mpsc::unbounded_channel();
                let writer = LogWriter {
                    storage,
                    rx,
                    released,
                    failed: durable.failed.clone(),
                    counters: durable.counters.clone(),
                    next_batch: first_batch,
                };
                let handle = std::thread::Builder::new()
                    .name("eventual-log".into())
                    .spawn(move || writer.run())
                    .map_err(|e| {
                        TxnError::Storage(format!("cannot start the eventual log writer: {e}"))
                    })?;
                let releaser = tokio::spawn(release_loop(
                    released_rx,
                    queues.clone(),
                    durable.in_writer.clone(),
                ));
                (Some(durable), Some((handle, releaser)))
            }
        };
        let counters = durable.as_ref().map(|d| d.counters.clone());
        let tasks = receivers
            .into_iter()
            .zip(parts.into_states())
            .enumerate()
            .map(|(gp, (rx, part))| {
                tokio::spawn(partition_loop(
                    app.clone(),
                    part,
                    gp,
                    rx,
                    queues.clone(),
                    durable.clone(),
                ))
            })
            .collect();
        Ok(EventualRuntime {
            app,
            queues,
            tasks,
            next_seq: AtomicU32::new(0),
            writer,
            counters,
        })
    }

    /// Submits `event` to the partition of `to` owning its key; resolves when every step of
    /// its chain has run (and, in the durable mode, is durable).
    pub async fn submit<S, E>(
        &self,
        to: Svc<S>,
        event: E,
    ) -> Result<EventualOutcome<A::Output>, TxnError>
    where
        S: Service<App = A>,
        E: EventOf<S> + KeyOf<S::Key>,
    {
        self.submit_request(to.request(event)).await
    }

    /// Submits an already routed request.
    pub async fn submit_request(
        &self,
        request: Request<A>,
    ) -> Result<EventualOutcome<A::Output>, TxnError> {
        let (service, partition, event) = request.into_parts();
        self.submit_to_raw(service, partition, event).await
    }

    /// Untyped submit of `event` to the partition of `service` owning `key`.
    pub async fn submit_raw<K: Hash + ?Sized>(
        &self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<EventualOutcome<A::Output>, TxnError> {
        self.submit_to_raw(service, service.partition_of(key), event)
            .await
    }

    /// Untyped submit of `event` to partition `partition` of `service`.
    pub async fn submit_to_raw(
        &self,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
    ) -> Result<EventualOutcome<A::Output>, TxnError> {
        self.app.check_partition(service, partition)?;
        let (reply, rx) = oneshot::channel();
        let chain = Arc::new(Chain {
            outstanding: AtomicUsize::new(1),
            abort: Mutex::new(None),
            output: Mutex::new(None),
            reply: Mutex::new(Some(reply)),
        });
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let step = EventualStep {
            tid: Tid::new(0, seq),
            event: StepEvent::Emitted(event),
            chain,
        };
        self.queues[service.gp(partition) as usize]
            .send(PartitionMsg::Step(step))
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)?
    }

    /// Runs `f` on every partition of `services`, each in the task that owns the partition,
    /// between two of its steps (NOT one snapshot: writes land in between, which is what this
    /// baseline is measured for). Reads the live state, including writes not durable yet. The
    /// queries are queued at once; the future only collects the answers (it borrows nothing).
    pub fn query<R, F>(
        &self,
        services: &[ServiceRef],
        f: F,
    ) -> impl std::future::Future<Output = Result<Vec<R>, TxnError>> + Send + use<A, R, F>
    where
        R: Send + 'static,
        F: Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let mut answers = Vec::new();
        for s in services {
            for p in 0..s.n_partitions {
                let (tx, rx) = oneshot::channel();
                let (f, app) = (f.clone(), self.app.clone());
                let query = move |state: &PartitionState<A>| {
                    let _ = tx.send(f(&ReadView::new(state, &app)));
                };
                // A partition task that is gone drops the query, and its answer fails below.
                let _ = self.queues[s.gp(p) as usize].send(PartitionMsg::Query(Box::new(query)));
                answers.push(rx);
            }
        }
        async move {
            let mut out = Vec::with_capacity(answers.len());
            for rx in answers {
                out.push(rx.await.map_err(|_| TxnError::Stopped)?);
            }
            Ok(out)
        }
    }

    /// What the durable mode has written so far; `None` in the in-memory mode.
    pub fn durability_stats(&self) -> Option<EventualDurabilityStats> {
        self.counters.as_ref().map(|c| EventualDurabilityStats {
            steps: c.steps.load(Ordering::Relaxed),
            held_steps: c.held_steps.load(Ordering::Relaxed),
            appends: c.appends.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            append_nanos: c.append_nanos.load(Ordering::Relaxed),
        })
    }

    /// Stops the partition tasks (queued steps are dropped). The log writer, if any, ends on
    /// its own once the tasks are gone; [`EventualRuntime::shutdown`] waits for it.
    pub fn stop(self) {
        drop(self);
    }

    /// Stops the partition tasks (queued steps are dropped) and waits until the log writer has
    /// finished its last append and released the storage.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Some((writer, releaser)) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            // The writer is gone, so the release task drains what it was handed and ends.
            let _ = releaser.await;
        }
    }
}

impl<A: App> Drop for EventualRuntime<A> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The task that owns partition `gp`: runs its steps (in bursts, in the durable mode) and the
/// queries sent to it.
async fn partition_loop<A: App>(
    app: Arc<AppDef<A>>,
    mut part: Box<PartitionState<A>>,
    gp: usize,
    mut rx: mpsc::UnboundedReceiver<PartitionMsg<A>>,
    queues: Queues<A>,
    durable: Option<Durable<A>>,
) {
    // `out.emits` collects the emits of the current burst, in step order.
    let mut out = WaveOut::<A>::default();
    let mut steps: Vec<Done<A>> = Vec::new();
    let mut deferred: Vec<DeferredRows> = Vec::new();
    let mut changed: Vec<CheckpointRow> = Vec::new();
    while let Some(msg) = rx.recv().await {
        let step = match msg {
            PartitionMsg::Step(step) => step,
            PartitionMsg::Query(query) => {
                query(&part);
                continue;
            }
        };
        run_step(&app, &mut part, step, &mut out, &mut steps);
        let Some(durable) = &durable else {
            // In memory: released at once, step by step.
            release(&mut steps, &mut out.emits, &queues, None);
            continue;
        };
        while steps.len() < BURST_STEPS_MAX {
            match rx.try_recv() {
                Ok(PartitionMsg::Step(step)) => {
                    run_step(&app, &mut part, step, &mut out, &mut steps)
                }
                Ok(PartitionMsg::Query(query)) => query(&part),
                Err(_) => break,
            }
        }
        durable
            .counters
            .steps
            .fetch_add(steps.len() as u64, Ordering::Relaxed);
        part.drain_changed_rows(&mut deferred);
        // Encoded here, as a grain serializes its own state before the store writes it: the
        // log writer only frames and writes.
        for d in deferred.drain(..) {
            d(&mut changed);
        }
        let n_rows = changed.len();
        let mut rows = Vec::new();
        for (key, value) in changed.drain(..) {
            encode_row(&mut rows, &key, value.as_deref());
        }
        // Nothing changed and nothing this partition wrote is still waiting for the disk: the
        // burst read only durable rows, so its outputs may go at once.
        if n_rows == 0
            && durable.in_writer[gp].load(Ordering::Acquire) == 0
            && !durable.failed.load(Ordering::Acquire)
        {
            release(&mut steps, &mut out.emits, &queues, None);
            continue;
        }
        durable
            .counters
            .held_steps
            .fetch_add(steps.len() as u64, Ordering::Relaxed);
        durable.in_writer[gp].fetch_add(1, Ordering::AcqRel);
        let held = Held {
            gp,
            n_rows,
            rows,
            steps: std::mem::take(&mut steps),
            emits: std::mem::take(&mut out.emits),
        };
        if durable.tx.send(held).is_err() {
            // The writer is gone (shutting down): the held outputs are dropped, their clients
            // see `TxnError::Stopped`.
            return;
        }
    }
}

/// Runs one step in its partition and commits it on its own; records what it produced in
/// `steps` (and its emits at the end of `out.emits`) for release.
fn run_step<A: App>(
    app: &AppDef<A>,
    state: &mut PartitionState<A>,
    step: EventualStep<A>,
    out: &mut WaveOut<A>,
    steps: &mut Vec<Done<A>>,
) {
    out.aborts.clear();
    out.outputs.clear();
    out.outbox.clear();
    let emits_before = out.emits.len();
    let clock = Clock {
        epoch: step.tid.epoch(),
        timestamp_ms: now_ms(),
    };
    let seq = step.tid.seq();
    {
        state.set_solo(true);
        match &step.event {
            // Each step is its own transaction here: it gets the whole of the limits.
            StepEvent::Emitted(event) => {
                state.execute_step(app, clock, (seq, 0), event, &mut Usage::default(), out)
            }
            StepEvent::Probe(probe) => state.execute_probe((seq, 0), probe, out),
            StepEvent::Index(op) => state.execute_index_op((seq, 0), op, out),
            StepEvent::ParentDeleted(deleted) => {
                state.execute_parent_deleted(app, (seq, 0), deleted, &mut Usage::default(), out)
            }
            StepEvent::Inbound => unreachable!("eventual steps carry their event"),
        }
        // Each step commits on its own: an abort discards this step only.
        state.commit_all(out.aborts.is_empty());
    }
    let result = match out.aborts.pop() {
        Some((_, _, reason)) => {
            out.emits.truncate(emits_before);
            Err(reason)
        }
        None => Ok((
            out.outputs.pop().map(|(_, _, o)| o),
            out.emits.len() - emits_before,
        )),
    };
    steps.push(Done {
        tid: step.tid,
        chain: step.chain,
        result,
    });
}

/// Releases what `steps` produced, in order: delivers their emits (taken from the front of
/// `emits`), records aborts and outputs in their chains, and answers every chain that
/// completed. With `failure`, nothing is delivered and each step's client gets the error.
fn release<A: App>(
    steps: &mut Vec<Done<A>>,
    emits: &mut Vec<Emitted<A::Event>>,
    queues: &[mpsc::UnboundedSender<PartitionMsg<A>>],
    failure: Option<&str>,
) {
    let mut emits = emits.drain(..);
    for done in steps.drain(..) {
        let chain = done.chain;
        if let Some(e) = failure {
            let n = done.result.as_ref().map_or(0, |(_, n)| *n);
            emits.by_ref().take(n).for_each(drop);
            if let Some(reply) = chain.reply.lock().take() {
                let _ = reply.send(Err(TxnError::Storage(e.to_string())));
            }
            continue;
        }
        match done.result {
            Err(reason) => {
                chain.abort.lock().get_or_insert(reason);
            }
            Ok((output, n)) => {
                if let Some(o) = output {
                    *chain.output.lock() = Some(o);
                }
                chain.outstanding.fetch_add(n, Ordering::AcqRel);
                for e in emits.by_ref().take(n) {
                    let target: GlobalPartition = e.target;
                    let next = EventualStep {
                        tid: done.tid,
                        event: e.event,
                        chain: chain.clone(),
                    };
                    if queues[target as usize]
                        .send(PartitionMsg::Step(next))
                        .is_err()
                    {
                        chain.outstanding.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
        if chain.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let result = match chain.abort.lock().take() {
                Some(reason) => Err(reason),
                None => Ok(chain.output.lock().take()),
            };
            if let Some(reply) = chain.reply.lock().take() {
                let _ = reply.send(Ok(result));
            }
        }
    }
}

/// The log writer of the durable mode (runs on its own thread).
struct LogWriter<A: App> {
    storage: Arc<dyn Storage>,
    rx: mpsc::UnboundedReceiver<Held<A>>,
    /// To the release task: each written group, with the failure if the log failed.
    released: mpsc::UnboundedSender<Released<A>>,
    failed: Arc<AtomicBool>,
    counters: Arc<Counters>,
    next_batch: u64,
}

impl<A: App> LogWriter<A> {
    /// Group commit: takes every burst handed over since the last write, appends their changed
    /// rows in one durable write, then hands the group to the release task and goes on with the
    /// next group at once (releasing overlaps the next write). Groups are released in the order
    /// they were written, bursts within a group in the order they were handed over, so a
    /// partition's outputs leave in step order. Ends when every partition task is gone.
    fn run(mut self) {
        let mut group: Vec<Held<A>> = Vec::new();
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut failure: Option<Arc<str>> = None;
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            while let Ok(held) = self.rx.try_recv() {
                group.push(held);
            }
            let n_rows: usize = group.iter().map(|h| h.n_rows).sum();
            if failure.is_none() && n_rows > 0 {
                frame_records(&group, &mut self.next_batch, &mut records);
                let batch: Vec<(u64, &[u8])> =
                    records.iter().map(|(b, r)| (*b, r.as_slice())).collect();
                let started = Instant::now();
                let result = self.storage.append_epochs(&batch);
                let c = &self.counters;
                c.append_nanos
                    .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                c.appends.fetch_add(1, Ordering::Relaxed);
                c.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                c.rows.fetch_add(n_rows as u64, Ordering::Relaxed);
                let n_bytes: usize = records.iter().map(|(_, r)| r.len()).sum();
                c.bytes.fetch_add(n_bytes as u64, Ordering::Relaxed);
                if let Err(e) = result {
                    let last = records.last().map_or(0, |(b, _)| *b);
                    tracing::error!(batch = last, error = %e, "eventual log append failed; failing every held and later step");
                    self.failed.store(true, Ordering::Release);
                    failure = Some(format!("eventual log append failed: {e}").into());
                }
            }
            let released = Released {
                group: std::mem::take(&mut group),
                failure: failure.clone(),
            };
            if self.released.send(released).is_err() {
                return;
            }
        }
    }
}

/// A group the log writer is done with: durable, or failed with `failure`.
struct Released<A: App> {
    group: Vec<Held<A>>,
    failure: Option<Arc<str>>,
}

/// Releases the groups of the log writer in order, on a tokio task: waking the partition tasks
/// from inside the runtime is cheap, and the writer is already on its next write meanwhile.
async fn release_loop<A: App>(
    mut rx: mpsc::UnboundedReceiver<Released<A>>,
    queues: Queues<A>,
    in_writer: Arc<Vec<AtomicUsize>>,
) {
    while let Some(Released { group, failure }) = rx.recv().await {
        for mut held in group {
            release(
                &mut held.steps,
                &mut held.emits,
                &queues,
                failure.as_deref(),
            );
            in_writer[held.gp].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Appends one record row, `[key, value | nil]` with key and value as msgpack `bin`, to `buf`.
fn encode_row(buf: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    rmp_serde::encode::write(buf, &(Bytes::new(key), value.map(Bytes::new)))
        .expect("writing to a Vec cannot fail");
}

/// Writes a msgpack array header for `n` elements (the smallest form, as rmp-serde writes it).
fn write_array_len(buf: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a record holds fewer than 2^32 rows");
    rmp::encode::write_array_len(buf, n).expect("writing to a Vec cannot fail");
}

/// Frames the rows of `group` into one or more consecutive batch records of at most about
/// `RECORD_BYTES_TARGET` bytes each (split between bursts), numbered from `next_batch` (advanced
/// past them): `[batch, [row, ...]]`, the rows as the partitions encoded them.
fn frame_records<A: App>(group: &[Held<A>], next_batch: &mut u64, out: &mut Vec<(u64, Vec<u8>)>) {
    out.clear();
    let mut push = |chunk: &[Held<A>]| {
        let n_rows: usize = chunk.iter().map(|h| h.n_rows).sum();
        if n_rows == 0 {
            return;
        }
        let size: usize = chunk.iter().map(|h| h.rows.len()).sum();
        let mut buf = Vec::with_capacity(size + 16);
        write_array_len(&mut buf, 2);
        rmp_serde::encode::write(&mut buf, next_batch).expect("writing to a Vec cannot fail");
        write_array_len(&mut buf, n_rows);
        for h in chunk {
            buf.extend_from_slice(&h.rows);
        }
        out.push((*next_batch, buf));
        *next_batch += 1;
    };
    let (mut start, mut size) = (0, 0);
    for (i, h) in group.iter().enumerate() {
        if i > start && size + h.rows.len() > RECORD_BYTES_TARGET {
            push(&group[start..i]);
            (start, size) = (i, 0);
        }
        size += h.rows.len();
    }
    push(&group[start..]);
}

/// The log record of one group commit of [`EventualRuntime::start_durable`] (or one part of it,
/// when a group is split for size): batch number and the changed rows, encoded with rmp-serde as
/// `[batch, [[key, value | nil], ...]]`, key and value as msgpack `bin`.
///
/// A row key is `[global partition u32 BE][table index u16 BE][rmp-encoded key]`, as in vmsdb's
/// checkpoints ([`EventualLogRecord::split_key`]); the value is the rmp-encoded row, `None` for a
/// deletion. Within a record and across records a later entry for the same key supersedes an
/// earlier one. Nothing reads these records back (no recovery); the type exists so their
/// contents can be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventualLogRecord {
    /// The batch number, used as the log's epoch.
    pub batch: u64,
    /// `(row key, Some(row) | None for deleted)`, in the order written.
    pub rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl EventualLogRecord {
    /// Decodes a record as appended to the log.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (batch, rows): (u64, Vec<(ByteBuf, Option<ByteBuf>)>) =
            rmp_serde::from_slice(bytes).map_err(|e| format!("eventual log record: {e}"))?;
        Ok(EventualLogRecord {
            batch,
            rows: rows
                .into_iter()
                .map(|(k, v)| (k.into_vec(), v.map(ByteBuf::into_vec)))
                .collect(),
        })
    }

    /// Splits a row key into global partition, table index (within its service) and the
    /// rmp-encoded key; `None` if it is too short.
    pub fn split_key(key: &[u8]) -> Option<(u32, u16, &[u8])> {
        crate::row_key::split_row_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_headers_keep_their_bytes() {
        // Goal: the record framing's array headers are byte for byte the msgpack forms the log
        // has always held (fixarray, array16, array32 at their boundaries), whoever writes them.
        let cases: [(usize, &[u8]); 6] = [
            (0, &[0x90]),
            (15, &[0x9f]),
            (16, &[0xdc, 0x00, 0x10]),
            (65_535, &[0xdc, 0xff, 0xff]),
            (65_536, &[0xdd, 0x00, 0x01, 0x00, 0x00]),
            (u32::MAX as usize, &[0xdd, 0xff, 0xff, 0xff, 0xff]),
        ];
        for (n, bytes) in cases {
            let mut buf = vec![0xaa];
            write_array_len(&mut buf, n);
            assert_eq!(buf[1..], *bytes, "header of {n} elements");
        }
    }

    struct Unit;
    impl App for Unit {
        type Event = ();
        type Output = ();
    }

    fn held(gp: usize, rows: &[(Vec<u8>, Option<Vec<u8>>)]) -> Held<Unit> {
        let mut buf = Vec::new();
        for (k, v) in rows {
            encode_row(&mut buf, k, v.as_deref());
        }
        Held {
            gp,
            n_rows: rows.len(),
            rows: buf,
            steps: Vec::new(),
            emits: Vec::new(),
        }
    }

    // Goal: records framed from pre-encoded rows decode to exactly those rows, for every msgpack
    // array-header size (fixarray, array16, array32), skipping bursts without rows, and numbered
    // consecutively.
    #[test]
    fn framed_records_decode_to_their_rows() {
        for n in [0usize, 1, 15, 16, 65_535, 65_536, 70_000] {
            let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
                .map(|i| {
                    let key = (i as u32).to_be_bytes().to_vec();
                    let value = (i % 3 != 0).then(|| vec![(i % 251) as u8; i % 200]);
                    (key, value)
                })
                .collect();
            let (a, b) = rows.split_at(n / 3);
            let group = vec![held(0, a), held(1, &[]), held(2, b)];
            let mut next = 7;
            let mut out = Vec::new();
            frame_records(&group, &mut next, &mut out);
            if n == 0 {
                assert!(out.is_empty());
                assert_eq!(next, 7);
                continue;
            }
            assert_eq!(out.len(), 1, "{n} rows fit one record");
            assert_eq!(next, 8);
            let record = EventualLogRecord::decode(&out[0].1).unwrap();
            assert_eq!(record.batch, 7);
            assert_eq!(record.rows, rows, "{n} rows");
        }
    }

    // Goal: a group larger than the record target is split between bursts into consecutive
    // records, each under the storage limit, together holding every row in order.
    #[test]
    fn large_groups_split_into_consecutive_records() {
        let value = vec![1u8; 64 * 1024];
        let burst: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..40u32)
            .map(|i| (i.to_be_bytes().to_vec(), Some(value.clone())))
            .collect();
        let group: Vec<Held<Unit>> = (0..10).map(|gp| held(gp, &burst)).collect();
        let mut next = 1;
        let mut out = Vec::new();
        frame_records(&group, &mut next, &mut out);
        assert!(out.len() >= 3, "{} records", out.len());
        let mut all = Vec::new();
        for (i, (batch, bytes)) in out.iter().enumerate() {
            assert_eq!(*batch, 1 + i as u64);
            assert!(bytes.len() <= RECORD_BYTES_TARGET + 16);
            let record = EventualLogRecord::decode(bytes).unwrap();
            assert_eq!(record.batch, *batch);
            all.extend(record.rows);
        }
        assert_eq!(next, 1 + out.len() as u64);
        assert_eq!(all.len(), 400);
        assert!(all.chunks(40).all(|c| c == burst.as_slice()));
    }

    #[test]
    fn split_key_reads_partition_and_table() {
        let mut key = 9u32.to_be_bytes().to_vec();
        key.extend_from_slice(&3u16.to_be_bytes());
        key.extend_from_slice(b"k");
        assert_eq!(EventualLogRecord::split_key(&key), Some((9, 3, &b"k"[..])));
        assert_eq!(EventualLogRecord::split_key(&key[..5]), None);
    }
}
