//! The `eventual` baseline: the same application, wired by asynchronous events with NO
//! transaction layer — what the eventually consistent Orleans/Dapr implementations of the
//! benchmarks do.
//!
//! Every step runs in its partition as soon as its event arrives and commits right away on its
//! own; the events it emits are delivered asynchronously to their partitions, interleaving with
//! other requests' steps; an abort discards only the aborting step (earlier steps of the chain
//! stay committed); queries read the partitions one after another, not at one snapshot. The
//! client gets its outcome when the whole chain has run. Nothing is logged. It exists to be
//! measured against — its anomalies are what the consistency checkers count — and is not a
//! mode anyone should run in production.

use crate::app::{App, AppDef, ServiceRef};
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, Tid};
use crate::partition::{Clock, PartitionState, SharedPartition, StepEvent, WaveOut};
use crate::query::ReadView;
use parking_lot::Mutex;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How a request ended in the eventual baseline.
pub type EventualOutcome<O> = Result<Option<O>, AbortReason>;

/// The chain of one request: how many of its steps are still queued or running.
struct Chain<A: App> {
    outstanding: AtomicUsize,
    abort: Mutex<Option<AbortReason>>,
    output: Mutex<Option<A::Output>>,
    reply: Mutex<Option<oneshot::Sender<EventualOutcome<A::Output>>>>,
}

struct EventualStep<A: App> {
    tid: Tid,
    event: StepEvent<A::Event>,
    chain: Arc<Chain<A>>,
}

/// A running eventual baseline: one task per partition, each applying its queue of steps.
pub struct EventualRuntime<A: App> {
    app: Arc<AppDef<A>>,
    parts: Vec<SharedPartition<A>>,
    queues: Arc<Vec<mpsc::UnboundedSender<EventualStep<A>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_seq: AtomicU32,
}

impl<A: App> EventualRuntime<A> {
    /// Starts one task per partition. Must be called inside a tokio runtime.
    pub fn start(app: Arc<AppDef<A>>) -> Self {
        let parts = PartitionState::all(&app);
        for p in &parts {
            p.lock().set_track_dirty(false);
        }
        let mut senders = Vec::with_capacity(parts.len());
        let mut receivers = Vec::with_capacity(parts.len());
        for _ in 0..parts.len() {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let queues = Arc::new(senders);
        let tasks = receivers
            .into_iter()
            .zip(parts.iter().cloned())
            .map(|(rx, part)| tokio::spawn(partition_loop(app.clone(), part, rx, queues.clone())))
            .collect();
        EventualRuntime {
            app,
            parts,
            queues,
            tasks,
            next_seq: AtomicU32::new(0),
        }
    }

    /// Submits `event` to the partition of `service` owning `key`; resolves when every step of
    /// its chain has run.
    pub async fn submit<K: Hash + ?Sized>(
        &self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<EventualOutcome<A::Output>, TxnError> {
        self.submit_to(service, service.partition_of(key), event)
            .await
    }

    /// Submits `event` to partition `partition` of `service`.
    pub async fn submit_to(
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
            .send(step)
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)
    }

    /// Runs `f` on every partition of `services`, one partition after another (NOT one
    /// snapshot: writes land in between, which is what this baseline is measured for).
    pub fn query<R>(&self, services: &[ServiceRef], f: impl Fn(&ReadView<'_>) -> R) -> Vec<R> {
        let mut out = Vec::new();
        for s in services {
            for p in 0..s.n_partitions {
                let part = self.parts[s.gp(p) as usize].lock();
                out.push(f(&ReadView::new(&part, &self.app)));
            }
        }
        out
    }

    /// Stops the partition tasks (queued steps are dropped).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn partition_loop<A: App>(
    app: Arc<AppDef<A>>,
    part: SharedPartition<A>,
    mut rx: mpsc::UnboundedReceiver<EventualStep<A>>,
    queues: Arc<Vec<mpsc::UnboundedSender<EventualStep<A>>>>,
) {
    let mut out = WaveOut::<A>::default();
    while let Some(step) = rx.recv().await {
        out.emits.clear();
        out.aborts.clear();
        out.outputs.clear();
        out.outbox.clear();
        let clock = Clock {
            epoch: step.tid.epoch(),
            timestamp_ms: now_ms(),
        };
        let seq = step.tid.seq();
        {
            let mut state = part.lock();
            state.set_solo(true);
            match &step.event {
                StepEvent::Emitted(event) => state.execute_step(&app, clock, seq, event, &mut out),
                StepEvent::Probe(probe) => state.execute_probe(seq, probe, &mut out),
                StepEvent::Index(op) => state.execute_index_op(seq, op, &mut out),
                StepEvent::Inbound => unreachable!("eventual steps carry their event"),
            }
            // Each step commits on its own: an abort discards this step only.
            state.commit_all(out.aborts.is_empty());
        }
        let chain = step.chain;
        if let Some((_, reason)) = out.aborts.pop() {
            chain.abort.lock().get_or_insert(reason);
        } else {
            if let Some((_, o)) = out.outputs.pop() {
                *chain.output.lock() = Some(o);
            }
            chain
                .outstanding
                .fetch_add(out.emits.len(), Ordering::AcqRel);
            for e in out.emits.drain(..) {
                let target: GlobalPartition = e.target;
                let next = EventualStep {
                    tid: step.tid,
                    event: e.event,
                    chain: chain.clone(),
                };
                if queues[target as usize].send(next).is_err() {
                    chain.outstanding.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if chain.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            let result = match chain.abort.lock().take() {
                Some(reason) => Err(reason),
                None => Ok(chain.output.lock().take()),
            };
            if let Some(reply) = chain.reply.lock().take() {
                let _ = reply.send(result);
            }
        }
    }
}
