//! Closed-loop drivers: many clients against a vmsdb `Runtime`, one client against the serial
//! baseline.
//!
//! **vmsdb.** A client is one slot with one request in flight: when its outcome arrives the
//! slot records it and submits its next request. Slots are spread over a few driver tasks
//! (about one per worker thread), each polling its slots' futures with `FuturesUnordered`:
//! a thousand clients cost a thousand pending futures, not a thousand tasks, and each driver
//! task records into its own `Recorder`, so the client side adds no shared hot spot next to
//! the system under test.
//!
//! **Client groups (`--submit-batch N`).** With N > 1 each driver task's clients go in groups
//! of N that submit their operations together (`AsyncTarget::submit_many`: for vmsdb one
//! `Client::submit_many`, one channel send and one wake-up for the group) and each client
//! submits its next operation when its group's outcomes are all in. It is still a closed loop
//! of `--clients` clients with one operation each in flight; a client's latency runs until its
//! group completed, which is when it learns its outcome.
//!
//! **Open loop (`--rate`).** Each driver task schedules its share of the arrivals at fixed
//! intervals from the run's start and submits every arrival that is due, whether or not
//! earlier ones completed. The client generators form the slot pool: an arrival takes a free
//! one, and an arrival that finds none (all `--clients` operations in flight) is counted as
//! `late` and skipped. Latency runs from an operation's *scheduled* time, so a system that
//! falls behind shows it in its percentiles instead of hiding it (no coordinated omission).
//! The tokio timer has millisecond resolution: arrivals due within the same millisecond are
//! submitted together, which can add up to about 1 ms to a measured latency.
//!
//! **eventual.** The same closed loop against the eventual baseline (`txn::EventualRuntime`):
//! same clients, same generators, its queries read the partitions in place.
//!
//! **serial.** One thread generates a request, runs it to completion and records it, until the
//! time is up — the upper bound of single-threaded execution without any concurrency control.

use crate::metrics::{Completion, Recorder};
use crate::progress::Progress;
use crate::workload::{Op, RequestOf, Workload};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use txn::{AbortReason, Client, EventualRuntime, SerialExecutor, TxnError};

/// A system the async closed loop can drive: vmsdb's `Client`, the eventual baseline.
pub trait AsyncTarget<W: Workload>: Clone + Send + Sync + 'static {
    /// Submits a transaction and waits for its outcome.
    fn submit(
        &self,
        request: RequestOf<W>,
    ) -> impl Future<Output = Result<Result<(), AbortReason>, TxnError>> + Send;
    /// Runs a read-only query.
    fn query(&self, w: &W, query: W::Query) -> impl Future<Output = Result<(), TxnError>> + Send;
    /// Submits several transactions together and waits for all their outcomes, in order; by
    /// default one `submit` each, concurrently.
    fn submit_many(
        &self,
        requests: Vec<RequestOf<W>>,
    ) -> impl Future<Output = Vec<Result<Result<(), AbortReason>, TxnError>>> + Send {
        futures::future::join_all(requests.into_iter().map(|r| self.submit(r)))
    }
}

impl<W: Workload> AsyncTarget<W> for Client<W::App> {
    async fn submit(&self, request: RequestOf<W>) -> Result<Result<(), AbortReason>, TxnError> {
        self.submit_request(request)
            .await
            .map(|outcome| outcome.result.map(|_| ()))
    }

    async fn query(&self, w: &W, query: W::Query) -> Result<(), TxnError> {
        w.run_query(self, query).await
    }

    async fn submit_many(
        &self,
        requests: Vec<RequestOf<W>>,
    ) -> Vec<Result<Result<(), AbortReason>, TxnError>> {
        let outcomes = Client::submit_many(self, requests).await;
        outcomes
            .into_iter()
            .map(|r| r.map(|outcome| outcome.result.map(|_| ())))
            .collect()
    }
}

impl<W: Workload> AsyncTarget<W> for Arc<EventualRuntime<W::App>> {
    async fn submit(&self, request: RequestOf<W>) -> Result<Result<(), AbortReason>, TxnError> {
        self.submit_request(request)
            .await
            .map(|outcome| outcome.map(|_| ()))
    }

    async fn query(&self, w: &W, query: W::Query) -> Result<(), TxnError> {
        w.run_query_local(&**self, query).await;
        Ok(())
    }
}

/// How a run is driven.
#[derive(Clone, Copy, Debug)]
pub struct DriveConfig {
    pub duration: Duration,
    pub clients: u32,
    /// Tasks the client slots are spread over.
    pub driver_tasks: usize,
    /// Clients of a driver task that submit together (closed loop; 1: each alone).
    pub submit_batch: usize,
    /// Open loop: operations per second in total; `None` is closed loop.
    pub rate: Option<u64>,
}

/// What a driver measured, and over how long.
pub struct Driven {
    pub recorder: Recorder,
    /// From the first submission until the last in-flight request completed.
    pub elapsed: Duration,
}

/// One completed operation, handed back with its client's generator.
struct Done<G> {
    generator: G,
    ty: usize,
    effect: i64,
    started: Instant,
    finished: Instant,
    result: Result<Result<(), AbortReason>, TxnError>,
}

/// Runs the client's next operation; its latency counts from `scheduled` when given (open
/// loop), else from now.
async fn one_op<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    mut generator: W::Gen,
    scheduled: Option<Instant>,
) -> Done<W::Gen> {
    let op = w.next_op(&mut generator);
    let started = scheduled.unwrap_or_else(Instant::now);
    let (ty, effect, result) = match op {
        Op::Txn {
            ty,
            request,
            effect,
        } => (ty, effect, client.submit(request).await),
        Op::Query { ty, query } => (ty, 0, client.query(w, query).await.map(Ok)),
    };
    Done {
        generator,
        ty,
        effect,
        started,
        finished: Instant::now(),
        result,
    }
}

fn record<G>(rec: &mut Recorder, start: Instant, d: &Done<G>) {
    let completion = match &d.result {
        Ok(Ok(())) => Completion::Committed,
        Ok(Err(reason)) => Completion::Aborted(reason),
        Err(e) => Completion::Error(e),
    };
    rec.record(
        d.ty,
        d.finished - d.started,
        d.finished - start,
        d.effect,
        completion,
    );
}

/// Drives `w` against a running vmsdb (a `Client`) or the eventual baseline for
/// `cfg.duration`.
pub async fn drive_runtime<W: Workload, T: AsyncTarget<W>>(
    w: Arc<W>,
    client: T,
    cfg: DriveConfig,
    progress: &Progress,
) -> Driven {
    let n_types = w.op_types().len();
    let live = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let n_tasks = cfg.driver_tasks.clamp(1, cfg.clients as usize);
    let mut tasks = Vec::with_capacity(n_tasks);
    for task_idx in 0..n_tasks {
        // Client ids task_idx, task_idx + n_tasks, ...: every client exactly once.
        let clients: Vec<u64> = (task_idx as u64..u64::from(cfg.clients))
            .step_by(n_tasks)
            .collect();
        let (w, client, live) = (w.clone(), client.clone(), live.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new(n_types, live);
            match cfg.rate {
                None if cfg.submit_batch > 1 => {
                    let groups = Groups {
                        size: cfg.submit_batch,
                        start,
                        deadline,
                    };
                    closed_loop_groups(&*w, &client, &clients, groups, &mut rec).await
                }
                None => rec = closed_loop(&*w, &client, &clients, start, deadline, rec).await,
                Some(rate) => {
                    // This task's share of the arrivals, staggered against the other tasks.
                    let interval = Duration::from_secs_f64(n_tasks as f64 / rate as f64);
                    let first = start + interval.mul_f64(task_idx as f64 / n_tasks as f64);
                    let slots = clients.iter().map(|&c| w.generator(c)).collect();
                    let arrivals = Arrivals {
                        first,
                        interval,
                        deadline,
                    };
                    open_loop(&*w, &client, slots, arrivals, start, &mut rec).await
                }
            }
            rec.publish();
            rec
        }));
    }
    let ticker = progress.is_visible().then(|| {
        let live = live.clone();
        let bar = progress.clone_handle();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let committed = live.load(Ordering::Relaxed);
                let rate = (committed - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, committed);
                bar.set_position((now - start).as_millis() as u64);
                bar.set_message(format!(
                    "{} txn/s, {} committed",
                    fmt_count(rate as u64),
                    fmt_count(committed)
                ));
            }
        })
    });
    let mut recorder = Recorder::new(n_types, live);
    for t in tasks {
        // A driver task only fails by panicking (a harness bug): pass the panic on.
        recorder.merge(
            t.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        );
    }
    let elapsed = start.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    progress.finish();
    Driven { recorder, elapsed }
}

/// Closed loop: every client has one operation in flight and submits its next one when the
/// outcome arrives, until the deadline. Each client is one long-lived loop, so the driver task
/// polls the same futures the whole run: no future (and no allocation) per operation.
async fn closed_loop<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    clients: &[u64],
    start: Instant,
    deadline: Instant,
    rec: Recorder,
) -> Recorder {
    // Shared by the loops of this one task only: the lock is never contended.
    let shared = std::sync::Mutex::new(rec);
    let mut loops: FuturesUnordered<_> = clients
        .iter()
        .map(|&c| client_loop(w, client, w.generator(c), start, deadline, &shared))
        .collect();
    while loops.next().await.is_some() {}
    drop(loops);
    shared.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// One closed-loop client: runs an operation, records it, and runs the next until one
/// finishes after the deadline.
async fn client_loop<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    mut generator: W::Gen,
    start: Instant,
    deadline: Instant,
    rec: &std::sync::Mutex<Recorder>,
) {
    loop {
        let done = one_op(w, client, generator, None).await;
        record(
            &mut rec.lock().unwrap_or_else(|e| e.into_inner()),
            start,
            &done,
        );
        if done.finished >= deadline {
            return;
        }
        generator = done.generator;
    }
}

/// How a driver task's clients are grouped, and the run's start and deadline.
struct Groups {
    size: usize,
    start: Instant,
    deadline: Instant,
}

/// Closed loop in client groups: each group submits its clients' operations together and each
/// client submits its next one when the whole group's outcomes are in, until the deadline. Each
/// group is one long-lived loop with buffers it reuses, as `closed_loop`'s clients are: per
/// group and round only the request list handed to `submit_many` is allocated.
async fn closed_loop_groups<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    clients: &[u64],
    groups: Groups,
    rec: &mut Recorder,
) {
    // Shared by the loops of this one task only: the lock is never contended.
    let shared = std::sync::Mutex::new(rec);
    let mut loops: FuturesUnordered<_> = clients
        .chunks(groups.size)
        .map(|group| {
            let generators = group.iter().map(|&c| w.generator(c)).collect();
            group_loop(w, client, generators, &groups, &shared)
        })
        .collect();
    while loops.next().await.is_some() {}
}

/// One group of closed-loop clients: runs every client's next operation together, records
/// them, and goes on with the clients whose operation finished before the deadline.
async fn group_loop<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    mut generators: Vec<W::Gen>,
    groups: &Groups,
    rec: &std::sync::Mutex<&mut Recorder>,
) {
    let mut ops = GroupOps::default();
    while !generators.is_empty() {
        group_ops(w, client, &mut generators, &mut ops).await;
        let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
        let mut place = 0;
        generators.retain(|_| {
            let done = ops.done[place]
                .as_ref()
                .expect("every client ran an operation");
            place += 1;
            record(&mut rec, groups.start, done);
            done.finished < groups.deadline
        });
    }
}

/// A group's buffers, reused from round to round.
#[derive(Default)]
struct GroupOps {
    /// (client in the group, op type, effect) of each transaction, in group order.
    txns: Vec<(usize, usize, i64)>,
    /// Each client's completed operation of the round, by place in the group.
    done: Vec<Option<Done<()>>>,
}

/// Runs the next operation of every client of a group: its transactions in one
/// `submit_many`, its queries alongside; `ops.done` gets each client's outcome.
async fn group_ops<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    generators: &mut [W::Gen],
    ops: &mut GroupOps,
) {
    let started = Instant::now();
    ops.txns.clear();
    ops.done.clear();
    ops.done.resize_with(generators.len(), || None);
    let mut requests = Vec::with_capacity(generators.len());
    let mut queries = Vec::new();
    for (i, generator) in generators.iter_mut().enumerate() {
        match w.next_op(generator) {
            Op::Txn {
                ty,
                request,
                effect,
            } => {
                ops.txns.push((i, ty, effect));
                requests.push(request);
            }
            Op::Query { ty, query } => queries.push((i, ty, query)),
        }
    }
    let queried = futures::future::join_all(queries.into_iter().map(|(i, ty, query)| async move {
        let result = client.query(w, query).await.map(Ok);
        (i, ty, result, Instant::now())
    }));
    let submitted = async {
        let results = if requests.is_empty() {
            Vec::new()
        } else {
            client.submit_many(requests).await
        };
        (results, Instant::now())
    };
    let ((results, finished), queried) = futures::join!(submitted, queried);
    let done = |ty, effect, finished, result| Done {
        generator: (),
        ty,
        effect,
        started,
        finished,
        result,
    };
    for (&(i, ty, effect), result) in ops.txns.iter().zip(results) {
        ops.done[i] = Some(done(ty, effect, finished, result));
    }
    for (i, ty, result, at) in queried {
        ops.done[i] = Some(done(ty, 0, at, result));
    }
}

/// The arrival schedule of one driver task in open loop.
struct Arrivals {
    first: Instant,
    interval: Duration,
    deadline: Instant,
}

/// Open loop: submits an operation at every scheduled arrival before the deadline on a free
/// slot (generator), counts arrivals without a free slot in `rec.late`, and waits for the
/// in-flight ones at the end.
async fn open_loop<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    client: &T,
    mut free: Vec<W::Gen>,
    arrivals: Arrivals,
    start: Instant,
    rec: &mut Recorder,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut next_at = arrivals.first;
    loop {
        if next_at >= arrivals.deadline && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                record(rec, start, &done);
                free.push(done.generator);
            }
            () = tokio::time::sleep_until(next_at.into()), if next_at < arrivals.deadline => {
                let now = Instant::now();
                while next_at <= now && next_at < arrivals.deadline {
                    match free.pop() {
                        Some(g) => in_flight.push(one_op(w, client, g, Some(next_at))),
                        None => rec.late += 1,
                    }
                    next_at += arrivals.interval;
                }
            }
        }
    }
}

/// Drives `w` against the serial executor on the calling thread for `duration`.
pub fn drive_serial<W: Workload>(
    w: &W,
    exec: &mut SerialExecutor<W::App>,
    duration: Duration,
    progress: &Progress,
) -> Driven {
    let live = Arc::new(AtomicU64::new(0));
    let mut rec = Recorder::new(w.op_types().len(), live.clone());
    let mut generator = w.generator(0);
    let start = Instant::now();
    let deadline = start + duration;
    let mut timestamp_ms = wall_ms();
    let mut n: u64 = 0;
    let mut last_tick = (start, 0u64);
    loop {
        let op = w.next_op(&mut generator);
        let started = Instant::now();
        let (ty, effect, result) = match op {
            Op::Txn {
                ty,
                request,
                effect,
            } => {
                let r = exec.run_request(request, timestamp_ms);
                (ty, effect, Ok(r.map(|_| ())))
            }
            Op::Query { ty, query } => {
                // The serial executor's reads are ready at once: nothing to wait for.
                let ran = w.run_query_local(&*exec, query).now_or_never();
                ran.expect("the serial executor answers queries at once");
                (ty, 0, Ok(Ok(())))
            }
        };
        let done = Done {
            generator: (),
            ty,
            effect,
            started,
            finished: Instant::now(),
            result,
        };
        record(&mut rec, start, &done);
        n += 1;
        if n.is_multiple_of(4096) {
            if done.finished >= deadline {
                break;
            }
            // The context clock only needs epoch-like (millisecond) resolution.
            timestamp_ms = wall_ms();
            if progress.is_visible() && done.finished - last_tick.0 >= Duration::from_millis(250) {
                rec.publish();
                let committed = live.load(Ordering::Relaxed);
                let rate =
                    (committed - last_tick.1) as f64 / (done.finished - last_tick.0).as_secs_f64();
                last_tick = (done.finished, committed);
                progress.set_position((done.finished - start).as_millis() as u64);
                progress.set_message(format!(
                    "{} txn/s, {} committed",
                    fmt_count(rate as u64),
                    fmt_count(committed)
                ));
            }
        }
    }
    rec.publish();
    progress.finish();
    Driven {
        elapsed: start.elapsed(),
        recorder: rec,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 1234567 → "1,234,567".
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
