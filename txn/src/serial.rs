//! Running transactions one at a time: the serial fallback, the reference executor that tests
//! replay histories against, and the `serial` baseline of the bench harness.

use crate::app::{App, AppDef, ServiceRef};
use crate::clock::Clock;
use crate::context::Usage;
use crate::contract::{EventOf, KeyOf, Request, RowHint, Service, Svc};
use crate::envelope::{EpochEnv, Sequenced};
use crate::error::AbortReason;
use crate::ids::{GlobalPartition, Seq};
use crate::limits::{CHAIN_WAVES_MAX, SLOW_STEP_WARN_US};
use crate::outcome::SerialPos;
use crate::partition::{Emitted, Partitions, StepEvent, WaveOut, warn_if_slow};
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// How many transactions ahead of the one it runs the serial pass prefetches rows
/// (`App::row_hints`): the entries of transaction `i + SERIAL_PREFETCH_AHEAD`, whose index
/// buckets it prefetched `SERIAL_PREFETCH_AHEAD` transactions before, and the index buckets of
/// transaction `i + 2 * SERIAL_PREFETCH_AHEAD`. One transaction of the pass takes a few
/// microseconds, far longer than a load from memory, so two is enough to hide both misses of a
/// lookup (the bucket, then the entry it points to) and few enough that the lines are still
/// cached when their transaction runs.
const SERIAL_PREFETCH_AHEAD: usize = 2;

/// Slots of `SerialPrefetch`'s ring: the hints of the transactions from the one running to the
/// one whose buckets were prefetched last.
const SERIAL_PREFETCH_RING: usize = 2 * SERIAL_PREFETCH_AHEAD + 1;

/// The serial pass's prefetches: walks the pass's transactions `2 * SERIAL_PREFETCH_AHEAD`
/// ahead of the one it runs, gets each one's row hints (`App::row_hints`) and prefetches them
/// where they may be (`Partitions::prefetch_hint`): the buckets on arrival, the entries
/// `SERIAL_PREFETCH_AHEAD` transactions later. Only a hint: a wrong or missing one changes
/// nothing but the time taken, and a panicking `row_hints` (application code) turns the
/// prefetches off for the rest of the pass, nothing else.
pub(crate) struct SerialPrefetch<I> {
    seqs: I,
    /// Each transaction's target partition and hints.
    ring: [(GlobalPartition, Vec<RowHint>); SERIAL_PREFETCH_RING],
    /// The position in the pass of the next transaction `seqs` gives.
    next: usize,
    on: bool,
}

impl<I: Iterator<Item = Seq>> SerialPrefetch<I> {
    /// Starts on the pass's transactions `seqs`: prefetches the buckets of the first
    /// `2 * SERIAL_PREFETCH_AHEAD` and the entries of the first `SERIAL_PREFETCH_AHEAD`.
    pub fn new<A: App>(
        seqs: I,
        app: &AppDef<A>,
        env: &EpochEnv<A::Event>,
        parts: &Partitions<A>,
    ) -> Self {
        let mut prefetch = SerialPrefetch {
            seqs,
            ring: Default::default(),
            next: 0,
            on: true,
        };
        for _ in 0..2 * SERIAL_PREFETCH_AHEAD {
            prefetch.pull(app, env, parts);
        }
        for i in 0..SERIAL_PREFETCH_AHEAD {
            prefetch.entries(app, parts, i);
        }
        prefetch
    }

    /// Before the pass runs its transaction at position `i`: the buckets of the one at
    /// `i + 2 * SERIAL_PREFETCH_AHEAD`, the entries of the one at `i + SERIAL_PREFETCH_AHEAD`.
    #[inline]
    pub fn advance<A: App>(
        &mut self,
        app: &AppDef<A>,
        env: &EpochEnv<A::Event>,
        parts: &Partitions<A>,
        i: usize,
    ) {
        if self.on {
            debug_assert_eq!(self.next, i + 2 * SERIAL_PREFETCH_AHEAD);
            self.pull(app, env, parts);
            self.entries(app, parts, i + SERIAL_PREFETCH_AHEAD);
        }
    }

    /// Takes the next transaction's hints into its ring slot and prefetches their buckets.
    fn pull<A: App>(&mut self, app: &AppDef<A>, env: &EpochEnv<A::Event>, parts: &Partitions<A>) {
        let (target, hints) = &mut self.ring[self.next % SERIAL_PREFETCH_RING];
        hints.clear();
        self.next += 1;
        let Some(seq) = self.seqs.next() else {
            return;
        };
        let request = &env.requests[seq as usize];
        *target = request.target;
        if catch_unwind(AssertUnwindSafe(|| A::row_hints(&request.event, hints))).is_err() {
            hints.clear();
            self.on = false;
            return;
        }
        for &hint in hints.iter() {
            parts.prefetch_hint(app, *target, hint, false);
        }
    }

    /// Prefetches the entries of the transaction at position `i` (already pulled).
    fn entries<A: App>(&self, app: &AppDef<A>, parts: &Partitions<A>, i: usize) {
        let (target, hints) = &self.ring[i % SERIAL_PREFETCH_RING];
        for &hint in hints {
            parts.prefetch_hint(app, *target, hint, true);
        }
    }
}

/// Runs transaction `seq` of `env` alone, wave by wave, directly on the partitions (owned by
/// the caller: lent to the epoch driver, or a `SerialExecutor`'s; indexed by global partition,
/// idle and holding no other buffered access), and commits or discards it.
///
/// It follows the parallel pass's rules exactly (see `epoch.rs`): steps run in canonical order
/// (each wave's steps in the order they were emitted), the first step to abort decides the
/// reason, the last step to set an output decides the output, and the limits are checked the
/// same way: inside a wave per partition, against the use at the wave's start, and summed
/// between waves.
pub(crate) fn run_chain<A: App>(
    app: &AppDef<A>,
    parts: &mut Partitions<A>,
    clock: Clock,
    seq: Seq,
    request: &Sequenced<A::Event>,
    buffers: &mut ChainBuffers<A>,
) -> Result<Option<A::Output>, AbortReason> {
    let ChainBuffers {
        out: scratch,
        wave_steps,
        touched,
        in_wave,
    } = buffers;
    touched.clear();
    let mut chain = Chain {
        app,
        parts,
        clock,
        seq,
        inbound: &request.event,
        touched: std::mem::take(touched),
        in_wave: std::mem::take(in_wave),
    };
    scratch.emits.clear();
    scratch.aborts.clear();
    scratch.outputs.clear();
    scratch.outbox.clear();
    let mut usage = Usage {
        steps: 1,
        ..Usage::default()
    };
    wave_steps.clear();
    wave_steps.push(Emitted {
        seq,
        parent: 0,
        target: request.target,
        event: StepEvent::Inbound,
    });
    let mut output = None;
    let mut wave = 0;
    // Timed per transaction, not per step (see `partition::warn_if_slow`).
    let started = std::time::Instant::now();
    let result = loop {
        if let Err(reason) = chain.run_wave(wave_steps, &mut usage, scratch) {
            break Err(reason);
        }
        // Outputs were set in canonical order: the wave's last one is its latest.
        if let Some((_, _, o)) = scratch.outputs.pop() {
            output = Some(o);
        }
        scratch.outputs.clear();
        usage.steps += scratch.emits.len() as u64;
        if let Some(reason) = usage.exceeded(&app.txn_limits) {
            break Err(reason);
        }
        if scratch.emits.is_empty() {
            break Ok(());
        }
        wave += 1;
        if wave == CHAIN_WAVES_MAX {
            break Err(AbortReason::ChainTooLong {
                max_waves: CHAIN_WAVES_MAX,
            });
        }
        // The steps run in the order they were emitted, which is the canonical order.
        std::mem::swap(wave_steps, &mut scratch.emits);
    };
    let Chain {
        parts,
        touched: chain_touched,
        in_wave: chain_in_wave,
        ..
    } = chain;
    for &gp in &chain_touched {
        parts[gp].commit_all(result.is_ok());
    }
    // Back into the buffers, with their capacity, for the next transaction.
    (*touched, *in_wave) = (chain_touched, chain_in_wave);
    if started.elapsed().as_micros() > u128::from(SLOW_STEP_WARN_US) {
        let part = &parts[request.target];
        let service = &app.services[part.service_idx as usize].name;
        warn_if_slow(service, part.partition, usage.steps as usize, started);
    }
    result.map(|()| output)
}

/// What [`run_chain`] fills and empties for every transaction, kept by its caller so that a
/// run of transactions reuses the memory instead of allocating it per transaction.
pub(crate) struct ChainBuffers<A: App> {
    /// The steps' emits, aborts, outputs and outbox messages of the running wave.
    pub out: WaveOut<A>,
    /// The steps of the running wave.
    wave_steps: Vec<Emitted<A::Event>>,
    /// The partitions the transaction ran in.
    touched: Vec<GlobalPartition>,
    /// The running wave's use of the limits per partition.
    in_wave: Vec<(GlobalPartition, Usage)>,
}

impl<A: App> Default for ChainBuffers<A> {
    fn default() -> Self {
        ChainBuffers {
            out: WaveOut::default(),
            wave_steps: Vec::new(),
            touched: Vec::new(),
            in_wave: Vec::new(),
        }
    }
}

/// One transaction running alone (see [`run_chain`]).
struct Chain<'c, A: App> {
    app: &'c AppDef<A>,
    parts: &'c mut Partitions<A>,
    clock: Clock,
    seq: Seq,
    inbound: &'c A::Event,
    /// Partitions put in solo mode, to commit or discard at the end.
    touched: Vec<GlobalPartition>,
    /// This wave's running use of the limits in each partition it ran in.
    in_wave: Vec<(GlobalPartition, Usage)>,
}

impl<A: App> Chain<'_, A> {
    /// Runs the wave's steps (drained from `wave_steps`) in order; their emits collect in
    /// `scratch.emits` and `usage` gains what they used. Stops at the first abort.
    fn run_wave(
        &mut self,
        wave_steps: &mut Vec<Emitted<A::Event>>,
        usage: &mut Usage,
        scratch: &mut WaveOut<A>,
    ) -> Result<(), AbortReason> {
        let before = *usage;
        self.in_wave.clear();
        for (pos, step) in wave_steps.drain(..).enumerate() {
            let at = (self.seq, pos as u32);
            let part = &mut self.parts[step.target];
            if !self.touched.contains(&step.target) {
                self.touched.push(step.target);
                part.set_solo(true);
            }
            let slot = match self.in_wave.iter().position(|(gp, _)| *gp == step.target) {
                Some(i) => i,
                None => {
                    self.in_wave.push((step.target, before));
                    self.in_wave.len() - 1
                }
            };
            let running = &mut self.in_wave[slot].1;
            let (app, clock) = (self.app, self.clock);
            match &step.event {
                StepEvent::Inbound => {
                    part.execute_step(app, clock, at, self.inbound, running, scratch)
                }
                StepEvent::Emitted(event) => {
                    part.execute_step(app, clock, at, event, running, scratch)
                }
                StepEvent::Probe(probe) => part.execute_probe(at, probe, scratch),
                StepEvent::Index(op) => part.execute_index_op(at, op, scratch),
                StepEvent::ParentDeleted(deleted) => {
                    part.execute_parent_deleted(app, at, deleted, running, scratch)
                }
            }
            if let Some((_, _, reason)) = scratch.aborts.pop() {
                // Dropping the drain discards the wave's remaining steps.
                return Err(reason);
            }
        }
        for (_, running) in &self.in_wave {
            usage.add(&running.since(&before));
        }
        Ok(())
    }
}

/// A single-threaded, in-memory executor with no durability: runs each request to completion
/// before the next. It is the reference that histories are replayed against and the `serial`
/// baseline.
pub struct SerialExecutor<A: App> {
    app: Arc<AppDef<A>>,
    /// Every partition's state, owned here alone and indexed by global partition.
    parts: Partitions<A>,
    epoch: u64,
    scratch: ChainBuffers<A>,
}

impl<A: App> SerialExecutor<A> {
    /// An executor with empty tables.
    pub fn new(app: Arc<AppDef<A>>) -> Self {
        let mut parts = Partitions::new(&app);
        for p in parts.iter_mut() {
            p.set_track_dirty(false);
        }
        SerialExecutor {
            app,
            parts,
            epoch: 0,
            scratch: ChainBuffers::default(),
        }
    }

    /// Runs `event` now in the partition of `to` owning its key, with `timestamp_ms` as its
    /// context time, and returns its outcome (like `Client::submit`).
    pub fn run<S, E>(
        &mut self,
        to: Svc<S>,
        event: E,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason>
    where
        S: Service<App = A>,
        E: EventOf<S> + KeyOf<S::Key>,
    {
        self.run_request(to.request(event), timestamp_ms)
    }

    /// Runs an already routed request now (like `Client::submit_request`).
    pub fn run_request(
        &mut self,
        request: Request<A>,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        let (service, partition, event) = request.into_parts();
        self.run_raw(service, partition, event, timestamp_ms)
    }

    /// Runs an already routed request with the TID it had at `pos` in a recorded history (see
    /// [`run_at`](Self::run_at)).
    pub fn run_request_at(
        &mut self,
        pos: SerialPos,
        request: Request<A>,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        let (service, partition, event) = request.into_parts();
        self.run_at(pos, service, partition, event, timestamp_ms)
    }

    /// Untyped run of one request in partition `partition` of `service`.
    pub fn run_raw(
        &mut self,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        self.run_at(
            SerialPos {
                epoch: self.epoch + 1,
                pass: 0,
                seq: 0,
            },
            service,
            partition,
            event,
            timestamp_ms,
        )
    }

    /// Runs one request with the TID it had at `pos` in a recorded history, so that handlers
    /// that use the TID-seeded RNG reproduce the same values.
    pub fn run_at(
        &mut self,
        pos: SerialPos,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        self.epoch = pos.epoch;
        let clock = Clock {
            epoch: pos.epoch,
            timestamp_ms,
        };
        let request = Sequenced {
            target: service.gp(partition),
            event,
            id: None,
            retries: 0,
        };
        run_chain(
            &self.app,
            &mut self.parts,
            clock,
            pos.seq,
            &request,
            &mut self.scratch,
        )
    }

    /// Untyped run of a request addressed by key, like `Client::submit_raw`.
    pub fn run_keyed_raw<K: Hash + ?Sized>(
        &mut self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        let partition = service.partition_of(key);
        self.run_raw(service, partition, event, timestamp_ms)
    }

    /// Order-independent hash of all committed rows (comparable with `Runtime::state_hash`).
    pub fn state_hash(&self) -> u64 {
        combine_hashes(self.parts.iter().map(|p| p.state_hash()))
    }

    /// Runs `f` over every partition of `services` and collects the results, like
    /// `Runtime::query`.
    pub fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&crate::query::ReadView<'_>) -> R,
    ) -> Vec<R> {
        let mut out = Vec::new();
        for s in services {
            for p in 0..s.n_partitions {
                let part = &self.parts[s.gp(p)];
                out.push(f(&crate::query::ReadView::new(part, &self.app)));
            }
        }
        out
    }
}

/// Combines per-partition hashes into one, position-sensitively.
pub(crate) fn combine_hashes(hashes: impl Iterator<Item = u64>) -> u64 {
    hashes
        .enumerate()
        .fold(0xcbf2_9ce4_8422_2325u64, |acc, (i, h)| {
            (acc ^ h.rotate_left((i % 64) as u32)).wrapping_mul(0x0100_0000_01b3)
        })
}
