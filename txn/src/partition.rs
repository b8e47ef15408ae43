//! One partition of one service: its tables and the work of each epoch phase on them.
//!
//! A partition runs the phases it is sent, one batch message per phase per epoch:
//! - **wave**: run a batch of transaction steps (and snapshot queries) against the committed
//!   state, buffering writes; return the events they emitted, the aborts and outputs;
//! - **decide**: report the transactions that lose a conflict in this partition;
//! - **commit**: apply the writes of the transactions that every partition let commit.
//!
//! Its state has exactly one owner at any time (its actor, or the epoch driver during a lend
//! for the serial pass), so there is no lock: every other access is a [`Job`] to the owner.

use crate::app::{App, AppDef};
use crate::bitset::SeqSet;
use crate::clock::Clock;
use crate::constraint::{ConstraintStep, IndexOp, OnDelete, ParentDeleted, Probe};
use crate::context::{Meter, TxnCtx, Usage};
use crate::contract::RowHint;
use crate::envelope::EpochEnv;
use crate::error::{AbortReason, panic_message};
use crate::ids::{GlobalPartition, Seq, Tid};
use crate::precedence::PrecedenceState;
use crate::query::{QueryFn, QueryPart, ReadView};
use crate::row_key::{CheckpointRow, DeferredRows, row_key_prefix, split_row_key};
use crate::sync::{AtomicSeqSet, Depositor};
use crate::table::{AnyTable, ConflictTally};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// One step to run: the inbound event of transaction `seq`, or an event emitted by it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Step<E> {
    pub seq: Seq,
    /// Its position among its transaction's steps of this wave, in canonical step order (see
    /// `TxnCtx::set_output`): a partition runs its steps sorted by `(seq, pos)`.
    pub pos: u32,
    /// What the transaction had used of its limits when this wave began.
    pub used: Usage,
    pub event: StepEvent<E>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum StepEvent<E> {
    /// The request's own event, read from the shared epoch batch (no copy).
    Inbound,
    Emitted(E),
    /// A foreign-key probe sent by a write of this transaction.
    Probe(Probe),
    /// A unique-index claim or release sent by a write of this transaction.
    Index(IndexOp),
    /// A parent row deleted by this transaction: restrict or cascade in a child partition.
    ParentDeleted(ParentDeleted),
}

impl<E> From<ConstraintStep> for StepEvent<E> {
    fn from(step: ConstraintStep) -> Self {
        match step {
            ConstraintStep::Index(op) => StepEvent::Index(op),
            ConstraintStep::ParentDeleted(deleted) => StepEvent::ParentDeleted(deleted),
        }
    }
}

/// An event (or probe) emitted by a step, to run in `target` in the next wave.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Emitted<E> {
    pub seq: Seq,
    /// The `pos` of the step that emitted it: the next wave's canonical order is by parent,
    /// then by emit order.
    pub parent: u32,
    pub target: GlobalPartition,
    /// `Emitted` or `Probe`, never `Inbound`.
    pub event: StepEvent<E>,
}

/// A message for the outside world, queued by transaction `seq` with `TxnCtx::outbox`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct OutboxMsg {
    pub seq: Seq,
    pub topic: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The result of one wave in one partition.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub(crate) struct WaveOut<A: App> {
    pub emits: Vec<Emitted<A::Event>>,
    pub outbox: Vec<OutboxMsg>,
    /// `(seq, pos, reason)`: the step at `pos` of transaction `seq` aborted it.
    pub aborts: Vec<(Seq, u32, AbortReason)>,
    /// `(seq, pos, output)`: the step at `pos` set the transaction's output.
    pub outputs: Vec<(Seq, u32, A::Output)>,
    /// What each transaction's steps in this partition used of its limits during the wave.
    pub usage: Vec<(Seq, Usage)>,
    /// Not serialized: a host moves its named queries' parts into the wave reply's answers
    /// (`wire::QueryAnswer`); closure queries run only where they were asked.
    #[serde(skip)]
    pub query_results: Vec<(usize, Result<QueryPart, String>)>,
}

impl<A: App> Default for WaveOut<A> {
    fn default() -> Self {
        WaveOut {
            emits: Vec::new(),
            outbox: Vec::new(),
            aborts: Vec::new(),
            outputs: Vec::new(),
            usage: Vec::new(),
            query_results: Vec::new(),
        }
    }
}

/// How many steps ahead of the step it runs a wave prefetches the rows of its steps' hints
/// (`RowHint`): the entry of step `i + PREFETCH_AHEAD`, whose index bucket was prefetched
/// `PREFETCH_AHEAD` steps before, and the index bucket of step `i + 2 * PREFETCH_AHEAD`. Far
/// enough ahead for a load from memory to arrive during the steps between, near enough for the
/// lines to still be cached when their step runs (`txn/benches/rows.rs`, `rows_prefetch`).
const PREFETCH_AHEAD: usize = 8;

/// Most emits per step a wave's emit list is sized for from the last wave's ratio, and most
/// emits in all: beyond them the list grows as events come.
const EMITS_RESERVED_PER_STEP_MAX: usize = 4;
const EMITS_RESERVED_MAX: usize = 1 << 16;

/// The tables of one partition.
pub(crate) struct PartitionState<A: App> {
    pub gp: GlobalPartition,
    /// Precedence markers of the current epoch (see `precedence.rs`).
    pub precedence: PrecedenceState,
    pub service_idx: u32,
    pub partition: u32,
    pub tables: Vec<Box<dyn AnyTable>>,
    /// Set only by a history replay (`trace.rs`); `None` in the live runtime.
    pub trace: Option<Box<crate::trace::PartitionTrace>>,
    /// This instance among every partition state ever made, in any process
    /// ([`next_incarnation`]): a hand-over keeps a partition only if the instance its owner
    /// holds is the one the runtime before stopped. Not part of the state.
    pub incarnation: u64,
    /// The current wave's row hints, one per step (`run_wave`): kept between waves so a wave
    /// does not allocate them. Not part of the state.
    hints: Vec<Option<RowHint>>,
    /// (steps, emits) of the last wave this partition ran: the next wave's emit list is sized
    /// from that ratio instead of regrown event by event (the list leaves with the wave's
    /// result, so its memory cannot be kept). Not part of the state.
    last_wave: (usize, usize),
    _app: PhantomData<fn() -> A>,
}

/// A partition's state hash and the instance that holds it (`Job::StateHash`): an owner
/// restarted under the same name holds new instances, even where their rows hash the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StateMark {
    pub hash: u64,
    pub incarnation: u64,
}

/// A new partition instance's incarnation: a random base drawn once per process plus a count
/// of the instances it made before, so no two instances of a process share one and two
/// processes share one only by a chance of about 2^-64 per pair. Never seen by a handler: it
/// is no part of a partition's state or of a replay.
fn next_incarnation() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = *BASE.get_or_init(rand::random::<u64>);
    base.wrapping_add(MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Every partition's state in one holder's hands (the epoch driver during a lend, a
/// `SerialExecutor`, a direct dispatcher), indexed by global partition. Each state is boxed so
/// that its ownership moves between its actor and the driver without copying its tables.
// Boxed on purpose: a lend moves each box to the driver and back, never the tables.
#[allow(clippy::vec_box)]
pub(crate) struct Partitions<A: App>(Vec<Box<PartitionState<A>>>);

impl<A: App> Partitions<A> {
    /// Empty states for every partition of `app`.
    pub fn new(app: &AppDef<A>) -> Self {
        Partitions(
            (0..app.n_global)
                .map(|gp| Box::new(PartitionState::new(app, gp)))
                .collect(),
        )
    }

    /// The states handed over by their owners, which must be every partition in order.
    #[allow(clippy::vec_box)]
    pub fn from_lent(states: Vec<Box<PartitionState<A>>>) -> Self {
        debug_assert!(states.iter().enumerate().all(|(i, s)| s.gp as usize == i));
        Partitions(states)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PartitionState<A>> {
        self.0.iter().map(|s| &**s)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut PartitionState<A>> {
        self.0.iter_mut().map(|s| &mut **s)
    }

    /// The states, to hand back to their owners.
    pub fn into_states(self) -> impl Iterator<Item = Box<PartitionState<A>>> {
        self.0.into_iter()
    }

    /// Prefetches the row `hint` names where it may be, in every table keyed by its key type
    /// (the index bucket, or `entry`: the entry): with a routing hash (`RowHint::routed`), in
    /// each service the partition it picks, else in `target`, the partition of the event that
    /// gave the hint. Changes nothing but what the caches hold.
    #[inline]
    pub fn prefetch_hint(
        &self,
        app: &AppDef<A>,
        target: GlobalPartition,
        hint: RowHint,
        entry: bool,
    ) {
        if hint.route == 0 {
            return self[target].prefetch(Some(&Some(hint)), entry);
        }
        for service in &app.services {
            let service = service.service;
            let p = actor_runtime::partition_of_hash(hint.route, service.n_partitions());
            self[service.gp(p)].prefetch(Some(&Some(hint)), entry);
        }
    }
}

impl<A: App> std::ops::Index<GlobalPartition> for Partitions<A> {
    type Output = PartitionState<A>;
    fn index(&self, gp: GlobalPartition) -> &PartitionState<A> {
        &self.0[gp as usize]
    }
}

impl<A: App> std::ops::IndexMut<GlobalPartition> for Partitions<A> {
    fn index_mut(&mut self, gp: GlobalPartition) -> &mut PartitionState<A> {
        &mut self.0[gp as usize]
    }
}

impl<A: App> PartitionState<A> {
    pub fn new(app: &AppDef<A>, gp: GlobalPartition) -> Self {
        let (service_idx, partition) = app.locate(gp);
        let tables = app.services[service_idx as usize]
            .tables
            .iter()
            .map(|t| (t.make.as_ref().expect("tables are built"))())
            .collect();
        PartitionState {
            gp,
            precedence: PrecedenceState::default(),
            service_idx,
            partition,
            tables,
            trace: None,
            incarnation: next_incarnation(),
            hints: Vec::new(),
            last_wave: (0, 0),
            _app: PhantomData,
        }
    }

    /// Runs the step at `pos` of transaction `seq`, appending its emits, abort or output to
    /// `out`. `usage` is the transaction's use of its limits so far and is updated; an error
    /// the context handed the handler aborts the step even if the handler returned `Ok`.
    pub fn execute_step(
        &mut self,
        app: &AppDef<A>,
        clock: Clock,
        (seq, pos): (Seq, u32),
        event: &A::Event,
        usage: &mut Usage,
        out: &mut WaveOut<A>,
    ) {
        let def = &app.services[self.service_idx as usize];
        let handler = def
            .handler
            .as_ref()
            .expect("build() rejects services without handler");
        if !def.precedence.is_empty() {
            self.precedence
                .record(&def.precedence, A::event_kind(event), seq);
        }
        let emits_before = out.emits.len();
        let outbox_before = out.outbox.len();
        let partition = self.partition;
        let at = (clock.epoch, seq, pos);
        let place = (self.service_idx, partition);
        crate::trace::step_started::<A>(&mut self.trace, at, usage.steps, place, event);
        let mut ctx = TxnCtx {
            part: self,
            app,
            seq,
            tid: Tid::new(clock.epoch, seq),
            timestamp_ms: clock.timestamp_ms,
            emits: &mut out.emits,
            outbox: &mut out.outbox,
            output: None,
            rng: None,
            pos,
            meter: Meter::new(*usage, app.txn_limits),
            event,
        };
        let result = catch_unwind(AssertUnwindSafe(|| handler(&mut ctx, event)));
        let output = ctx.output.take();
        *usage = ctx.meter.usage;
        let poisoned = ctx.meter.poisoned.take();
        let reason = match result {
            Ok(Ok(())) => poisoned,
            Ok(Err(abort)) => Some(abort.0.in_service(&def.name)),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::warn!(service = %def.name, partition, %message, "handler panicked; transaction aborted");
                Some(AbortReason::HandlerPanicked {
                    service: def.name.clone(),
                    message,
                })
            }
        };
        crate::trace::step_ended(&self.trace, reason.as_ref(), output.as_ref());
        match reason {
            None => {
                if let Some(o) = output {
                    out.outputs.push((seq, pos, o));
                }
            }
            Some(reason) => {
                out.emits.truncate(emits_before);
                out.outbox.truncate(outbox_before);
                out.aborts.push((seq, pos, reason));
            }
        }
    }

    /// Runs a foreign-key probe of transaction `seq`: a missing parent aborts it.
    pub fn execute_probe(&mut self, (seq, pos): (Seq, u32), probe: &Probe, out: &mut WaveOut<A>) {
        let fk = &probe.target;
        let missing = match self.tables.get_mut(fk.parent_table_idx as usize) {
            Some(t) => t.probe(seq, &probe.key),
            None => Err(format!("table #{} does not exist", fk.parent_table_idx)),
        };
        let message = match missing {
            Ok(None) => return,
            Ok(Some(key)) => format!(
                "foreign key {:?}: no {}.{} row with key {key}",
                fk.name, fk.parent_service, fk.parent_table
            ),
            Err(e) => format!("foreign key {:?}: probe failed: {e}", fk.name),
        };
        out.aborts.push((
            seq,
            pos,
            AbortReason::Constraint {
                service: probe.child.0.clone(),
                table: probe.child.1.clone(),
                message,
            },
        ));
    }

    /// Runs a unique-index claim or release of transaction `seq`: a value held by another row
    /// aborts it.
    pub fn execute_index_op(&mut self, (seq, pos): (Seq, u32), op: &IndexOp, out: &mut WaveOut<A>) {
        let Some(index) = self.tables.get_mut(op.target.index_table_idx as usize) else {
            out.aborts.push((
                seq,
                pos,
                AbortReason::Constraint {
                    service: op.child.0.clone(),
                    table: op.child.1.clone(),
                    message: format!("unique {:?}: its index table is missing", op.target.name),
                },
            ));
            return;
        };
        let message = if op.claim {
            match index.claim(seq, &op.value, &op.row_key) {
                Ok(None) => return,
                Ok(Some(holder)) => format!(
                    "unique {:?}: the value is already held by the row with key {holder}",
                    op.target.name
                ),
                Err(e) => format!("unique {:?}: {e}", op.target.name),
            }
        } else {
            match index.release(seq, &op.value, &op.row_key) {
                Ok(()) => return,
                Err(e) => format!("unique {:?}: {e}", op.target.name),
            }
        };
        out.aborts.push((
            seq,
            pos,
            AbortReason::Constraint {
                service: op.child.0.clone(),
                table: op.child.1.clone(),
                message,
            },
        ));
    }

    /// Runs a parent delete of transaction `seq` in this child partition: children abort the
    /// transaction (`Restrict`) or are deleted (`Cascade`, their own constraint steps emitted
    /// for the next wave). The lookup and each deleted child cost a work unit.
    pub fn execute_parent_deleted(
        &mut self,
        app: &AppDef<A>,
        (seq, pos): (Seq, u32),
        deleted: &ParentDeleted,
        usage: &mut Usage,
        out: &mut WaveOut<A>,
    ) {
        let link = &deleted.link;
        let cascade = link.on_delete == OnDelete::Cascade;
        let emits_before = out.emits.len();
        let emits = &mut out.emits;
        let found = self.tables.get_mut(link.child_table_idx as usize).map(|t| {
            let mut emit = |target, step: ConstraintStep| {
                emits.push(Emitted {
                    seq,
                    parent: pos,
                    target,
                    event: StepEvent::from(step),
                })
            };
            t.parent_deleted(seq, deleted, &mut emit)
        });
        let fk = &link.target;
        let message = match found {
            None => Some(format!(
                "foreign key {:?}: child table #{} is missing",
                fk.name, link.child_table_idx
            )),
            Some((_, Some(child_key))) if !cascade => Some(format!(
                "foreign key {:?}: cannot delete the {}.{} row, the {}.{} row with key {child_key} \
                 still refers to it (on delete restrict)",
                fk.name, fk.parent_service, fk.parent_table, link.child.0, link.child.1
            )),
            Some((n_children, _)) => {
                usage.work = usage.work.saturating_add(1 + n_children as u64);
                None
            }
        };
        let reason = match message {
            Some(message) => Some(AbortReason::Constraint {
                service: link.child.0.clone(),
                table: link.child.1.clone(),
                message,
            }),
            None => usage.exceeded(&app.txn_limits),
        };
        if let Some(reason) = reason {
            out.emits.truncate(emits_before);
            out.aborts.push((seq, pos, reason));
        }
    }

    /// Runs a wave: the queries first (they read the committed state only), then the steps in
    /// the order given (sorted by `(seq, pos)` by the driver). The steps of one transaction
    /// here share one running account of its limits, starting from its use before the wave;
    /// what they used is reported in `out.usage`.
    pub fn run_wave(
        &mut self,
        app: &AppDef<A>,
        env: &EpochEnv<A::Event>,
        steps: Vec<Step<A::Event>>,
        queries: &[(usize, QueryFn)],
    ) -> WaveOut<A> {
        let mut out = WaveOut::default();
        for (idx, query) in queries {
            let view = ReadView::new(self, app);
            let result = catch_unwind(AssertUnwindSafe(|| (query.run)(&view)))
                .map_err(|p| panic_message(p.as_ref()));
            out.query_results.push((*idx, result));
        }
        // (seq, its use before the wave, its use so far) of the transaction being run.
        let mut running: Option<(Seq, Usage, Usage)> = None;
        // Timed per wave, not per step: two clock reads per step cost ~2 % of the marketplace.
        let started = std::time::Instant::now();
        let n_steps = steps.len();
        // At most one entry per step: sized once instead of regrown push by push.
        out.usage.reserve(n_steps);
        let (last_steps, last_emits) = self.last_wave;
        if last_emits > 0 {
            // Bounded: the last wave may have been one step fanning out thousands of events.
            let estimate = n_steps.saturating_mul(last_emits) / last_steps.max(1);
            out.emits.reserve(
                estimate
                    .min(n_steps.saturating_mul(EMITS_RESERVED_PER_STEP_MAX))
                    .min(EMITS_RESERVED_MAX),
            );
        }
        let mut hints = std::mem::take(&mut self.hints);
        self.prime_hints(env, &steps, &mut hints);
        for (i, step) in steps.into_iter().enumerate() {
            self.prefetch(hints.get(i + 2 * PREFETCH_AHEAD), false);
            self.prefetch(hints.get(i + PREFETCH_AHEAD), true);
            let (_, _, usage) = match &mut running {
                Some(r) if r.0 == step.seq => r,
                slot => {
                    if let Some((seq, before, now)) = slot.take() {
                        out.usage.push((seq, now.since(&before)));
                    }
                    slot.insert((step.seq, step.used, step.used))
                }
            };
            let at = (step.seq, step.pos);
            match &step.event {
                StepEvent::Inbound => {
                    let event = &env.requests[step.seq as usize].event;
                    self.execute_step(app, env.clock(), at, event, usage, &mut out);
                }
                StepEvent::Emitted(event) => {
                    self.execute_step(app, env.clock(), at, event, usage, &mut out);
                }
                StepEvent::Probe(probe) => self.execute_probe(at, probe, &mut out),
                StepEvent::Index(op) => self.execute_index_op(at, op, &mut out),
                StepEvent::ParentDeleted(deleted) => {
                    self.execute_parent_deleted(app, at, deleted, usage, &mut out)
                }
            }
        }
        if let Some((seq, before, now)) = running {
            out.usage.push((seq, now.since(&before)));
        }
        hints.clear();
        self.hints = hints;
        self.last_wave = (n_steps, out.emits.len());
        let service = &app.services[self.service_idx as usize].name;
        warn_if_slow(service, self.partition, n_steps, started);
        out
    }

    /// Fills `hints` (empty on entry) with the row hint of each step (`App::row_hint`; none for
    /// constraint steps) and prefetches the rows of the first steps: the index buckets of the
    /// first `2 * PREFETCH_AHEAD`, then the entries of the first `PREFETCH_AHEAD`. Leaves
    /// `hints` empty when no step has a hint, or when `row_hint` panics (application code: a
    /// hint is only a prefetch, so its panic costs the wave its prefetches, nothing else; the
    /// step's handler still runs, under its own guard).
    fn prime_hints(
        &self,
        env: &EpochEnv<A::Event>,
        steps: &[Step<A::Event>],
        hints: &mut Vec<Option<RowHint>>,
    ) {
        let collected = catch_unwind(AssertUnwindSafe(|| {
            hints.extend(steps.iter().map(|step| match &step.event {
                StepEvent::Inbound => A::row_hint(&env.requests[step.seq as usize].event),
                StepEvent::Emitted(event) => A::row_hint(event),
                _ => None,
            }))
        }));
        if collected.is_err() || hints.iter().all(Option::is_none) {
            hints.clear();
            return;
        }
        for hint in hints.iter().take(2 * PREFETCH_AHEAD) {
            self.prefetch(Some(hint), false);
        }
        for hint in hints.iter().take(PREFETCH_AHEAD) {
            self.prefetch(Some(hint), true);
        }
    }

    /// Prefetches the row `hint` names (if any) in every table keyed by its key type: its index
    /// bucket, or (`entry`) its entry. Changes nothing but what the caches hold.
    #[inline]
    fn prefetch(&self, hint: Option<&Option<RowHint>>, entry: bool) {
        if let Some(Some(hint)) = hint {
            for table in &self.tables {
                table.prefetch_hinted(*hint, entry);
            }
        }
    }

    /// The decide phase: transactions losing a conflict in this partition.
    pub fn decide(&self, user_aborted: &SeqSet) -> SeqSet {
        let mut conflicts = SeqSet::with_len(user_aborted.len());
        if !self.precedence.is_empty() {
            self.precedence.decide(user_aborted, &mut conflicts);
        }
        for t in &self.tables {
            if t.has_access() {
                t.decide(user_aborted, &mut conflicts);
            }
        }
        conflicts
    }

    /// The commit phase: apply surviving writes.
    pub fn commit(&mut self, aborted: &SeqSet) {
        self.precedence.clear();
        for t in &mut self.tables {
            if t.has_access() {
                t.commit(aborted);
            }
        }
    }

    /// Switches every table into (or out of) solo mode for the serial fallback.
    pub fn set_solo(&mut self, solo: bool) {
        for t in &mut self.tables {
            t.set_solo(solo);
        }
    }

    /// Applies or discards the buffered writes of the one transaction that ran alone, and
    /// leaves solo mode.
    pub fn commit_all(&mut self, keep: bool) {
        // A transaction running alone needs no precedence markers: it is already in TID order.
        self.precedence.clear();
        for t in &mut self.tables {
            if t.has_access() {
                t.commit_all(keep);
            }
            t.set_solo(false);
        }
    }

    /// Whether changed rows are remembered for checkpoints.
    pub fn set_track_dirty(&mut self, track: bool) {
        for t in &mut self.tables {
            t.set_track_dirty(track);
        }
    }

    /// Readies a partition a take-over keeps on its node for the new runtime: the epoch in
    /// progress and any checkpoint being copied are forgotten, every row is listed as changed
    /// since the last checkpoint (`AnyTable::settle_for_take_over`).
    pub fn settle_for_take_over(&mut self) {
        self.precedence.clear();
        for t in &mut self.tables {
            t.settle_for_take_over();
        }
    }

    /// Order-independent hash of every committed row of the partition.
    pub fn state_hash(&self) -> u64 {
        tables_hash(&self.tables)
    }

    /// Erases `subject`'s personal fields in every table of the partition that has personal
    /// fields (live erasure, between epochs); returns how many rows changed.
    pub fn erase_subject(&mut self, app: &AppDef<A>, subject: &str) -> usize {
        let (service, _) = app.locate(self.gp);
        let mut n_erased = 0;
        for (idx, table) in self.tables.iter_mut().enumerate() {
            if let Some(rule) = app.governance.rule(service, idx as u32) {
                n_erased += table.erase_subject(&rule.governance, subject);
            }
        }
        n_erased
    }
}

/// The work one partition is sent for one phase of one epoch.
pub(crate) enum Job<A: App> {
    Wave {
        env: Arc<EpochEnv<A::Event>>,
        steps: Vec<Step<A::Event>>,
        queries: Vec<(usize, QueryFn)>,
        reply: Depositor<WaveOut<A>>,
    },
    /// OR this partition's conflict losers into the shared set, then check in at the barrier.
    Decide {
        user_aborted: Arc<SeqSet>,
        conflicts: Arc<AtomicSeqSet>,
        reply: Depositor<()>,
    },
    Commit {
        aborted: Arc<SeqSet>,
        reply: Depositor<()>,
    },
    /// Encode the rows changed since the last checkpoint (between epochs).
    Checkpoint { reply: Depositor<Vec<DeferredRows>> },
    /// One step of an incremental checkpoint (between epochs): `begin` one as of now, then copy
    /// its pace of its rows, at most `limits::CHECKPOINT_COPY_ROWS_PER_EPOCH`; the rows once
    /// all are copied.
    CheckpointStep {
        begin: bool,
        reply: Depositor<CheckpointShare>,
    },
    /// One round of the ordered fallback (`ordered.rs`): first commit (`Some(true)`) or discard
    /// the transaction that held this partition and has finished, then, if `begin`, enter solo
    /// mode for the transaction whose steps follow, and run them like a wave.
    Fallback {
        env: Arc<EpochEnv<A::Event>>,
        finish: Option<bool>,
        begin: bool,
        steps: Vec<Step<A::Event>>,
        reply: Depositor<WaveOut<A>>,
    },
    /// Hand the state to the epoch driver for the serial pass (`epoch.rs`, `serial_pass`); the
    /// owner holds nothing and refuses every other job until the matching `Return`.
    Lend {
        reply: Depositor<Box<PartitionState<A>>>,
    },
    /// Take back the state lent to the driver.
    Return { state: Box<PartitionState<A>> },
    /// Load a chunk of checkpoint rows (full row keys, see `row_key.rs`) at recovery.
    Load {
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        reply: Depositor<Result<(), String>>,
    },
    /// Apply row changes (full row keys; `None`: deleted) that recovery replayed on the
    /// driver's private copy of the partitions, marked for the next checkpoint.
    Apply {
        rows: Vec<CheckpointRow>,
        reply: Depositor<Result<(), String>>,
    },
    /// Report each table's conflict losses so far (`Runtime::conflict_stats`).
    ConflictTally {
        reply: Depositor<Vec<(String, ConflictTally)>>,
    },
    /// Report the hash of the committed rows (between epochs; `Client::state_hash` in a
    /// cluster, where a query's closure cannot travel) and the instance's incarnation.
    StateHash { reply: Depositor<StateMark> },
    /// Erase a subject's personal fields (between epochs, at the end of the epoch whose log
    /// record names the subject); replies with the number of rows changed.
    Erase {
        subject: Arc<str>,
        reply: Depositor<usize>,
    },
    /// A bug outside any handler, for the supervision tests: panics in the owner.
    #[cfg(test)]
    Crash,
}

/// A partition's answer to one `Job::CheckpointStep`: rows of the checkpoint being copied, and
/// whether they are its last. A partition of the driver's process answers nothing until it has
/// copied every row, then all of them at once; a partition on another node answers through its
/// node (`PartitionHost`), which sends the rows of those done in bounded shares over several
/// steps, so the link carries each node's answer within its payload limit.
pub(crate) struct CheckpointShare {
    pub rows: Vec<DeferredRows>,
    pub done: bool,
}

impl CheckpointShare {
    /// The answer of a partition still copying its rows.
    pub fn copying() -> Self {
        CheckpointShare {
            rows: Vec::new(),
            done: false,
        }
    }
}

impl<A: App> PartitionState<A> {
    /// Moves the rows changed since the last checkpoint out as encoded checkpoint rows.
    pub fn drain_checkpoint_rows(&mut self) -> Vec<DeferredRows> {
        let gp = self.gp;
        let mut out = Vec::new();
        for (idx, t) in self.tables.iter_mut().enumerate() {
            t.take_dirty_chunks(row_key_prefix(gp, idx), &mut out);
        }
        out
    }

    /// One step of an incremental checkpoint: begins one (`begin`: the rows changed since the
    /// last checkpoint, as of now, without touching them), then copies its tables' pace of its
    /// rows (`limits::CHECKPOINT_COPY_SPREAD_EPOCHS`), at least
    /// `limits::CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN` and at most `budget`; once every table's
    /// are copied, their deferred encodings. A row changed before its turn is copied by the
    /// change, so the epochs in between never wait for the whole copy.
    pub fn checkpoint_step(&mut self, begin: bool, budget: usize) -> Option<Vec<DeferredRows>> {
        if begin {
            self.tables
                .iter_mut()
                .for_each(|t| t.begin_checkpoint_copy());
        }
        let pace: usize = self.tables.iter().map(|t| t.checkpoint_copy_pace()).sum();
        let mut budget = pace
            .max(crate::limits::CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN)
            .min(budget);
        for t in &mut self.tables {
            budget = t.copy_checkpoint_rows(budget);
        }
        if self.tables.iter().any(|t| t.checkpoint_rows_to_copy() > 0) {
            return None;
        }
        let gp = self.gp;
        let mut out = Vec::new();
        for (idx, t) in self.tables.iter_mut().enumerate() {
            let finished = t.finish_checkpoint_copy(row_key_prefix(gp, idx), &mut out);
            debug_assert!(finished, "a table with no rows left to copy finishes");
        }
        Some(out)
    }

    /// Like [`PartitionState::drain_checkpoint_rows`], but only for the tables that have
    /// changed rows, appended to `out` (the eventual baseline's durable mode takes them after
    /// every burst of steps, which touches one table or two).
    pub fn drain_changed_rows(&mut self, out: &mut Vec<DeferredRows>) {
        let gp = self.gp;
        for (idx, t) in self.tables.iter_mut().enumerate() {
            if t.has_dirty() {
                out.push(t.take_dirty(row_key_prefix(gp, idx)));
            }
        }
    }
}

impl<A: App> PartitionState<A> {
    /// Loads checkpoint rows (full row keys) into this partition's tables.
    pub fn load_rows(&mut self, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
        for (key, value) in rows {
            let (table, row_key) = self.table_of_row(key)?;
            table.load_row(row_key, value)?;
        }
        Ok(())
    }

    /// Applies row changes (full row keys; `None`: deleted) that a replay on the driver
    /// computed (`Job::Apply`), remembered for the next checkpoint like a commit's.
    pub fn apply_rows(&mut self, rows: &[CheckpointRow]) -> Result<(), String> {
        for (key, value) in rows {
            let (table, row_key) = self.table_of_row(key)?;
            table.apply_row(row_key, value.as_deref())?;
        }
        Ok(())
    }

    /// The table a full row key names, and the row's own key; an error if the key is too
    /// short or names another partition or a table that does not exist.
    fn table_of_row<'k>(&mut self, key: &'k [u8]) -> Result<(&mut dyn AnyTable, &'k [u8]), String> {
        let Some((gp, table, row_key)) = split_row_key(key) else {
            return Err(format!(
                "checkpoint row key of {} bytes is too short",
                key.len()
            ));
        };
        if gp != self.gp {
            return Err(format!(
                "checkpoint row of partition {gp} was sent to partition {}",
                self.gp
            ));
        }
        let n_tables = self.tables.len();
        let t = self.tables.get_mut(table as usize).ok_or_else(|| {
            format!(
                "checkpoint row of table #{table} in partition {gp}, which has {n_tables} tables"
            )
        })?;
        Ok((t.as_mut(), row_key))
    }
}

/// What the one owner of a partition (its actor, or a direct dispatcher) holds.
pub(crate) enum Slot<A: App> {
    /// The state, owned outright.
    Owned(Box<PartitionState<A>>),
    /// Lent to the epoch driver for the serial pass; a `Job::Return` brings it back.
    Lent,
    /// Gone with a panic outside any handler: a phase may have half applied, and committed
    /// state cannot be rebuilt from this partition alone (replay needs every partition), so
    /// the owner refuses every job until the runtime restarts and recovers.
    Lost,
}

/// Runs one job against the slot of partition `gp` (what a partition actor does with each
/// message). A job that finds the state lent or lost is refused: logged, and its reply dropped,
/// which fails the driver's phase barrier with an error instead of a hang.
pub(crate) fn run_job<A: App>(
    app: &AppDef<A>,
    gp: GlobalPartition,
    slot: &mut Slot<A>,
    job: Job<A>,
) {
    match (job, &mut *slot) {
        (Job::Lend { reply }, Slot::Owned(_)) => {
            let Slot::Owned(state) = std::mem::replace(slot, Slot::Lent) else {
                unreachable!("matched Owned above")
            };
            reply.deposit(state);
        }
        (Job::Return { state }, Slot::Lent) => *slot = Slot::Owned(state),
        (Job::Return { .. }, _) => {
            tracing::error!(
                partition = gp,
                "internal error: a partition state was returned to an owner that had not lent it; dropped"
            );
        }
        (job, Slot::Owned(state)) => run_owned_job(app, state, job),
        (job, Slot::Lent | Slot::Lost) => refuse(gp, slot, job),
    }
}

/// Logs why a job cannot run on partition `gp` and drops it (and with it its reply).
fn refuse<A: App>(gp: GlobalPartition, slot: &Slot<A>, job: Job<A>) {
    let why = match slot {
        Slot::Lent => "its state is lent to the epoch driver (a job sent during the serial pass)",
        _ => "its state was lost to a panic outside any handler (restart the runtime to recover)",
    };
    tracing::error!(
        partition = gp,
        "internal error: partition job refused: {why}"
    );
    drop(job);
}

/// Runs one job on an owned partition state.
fn run_owned_job<A: App>(app: &AppDef<A>, state: &mut PartitionState<A>, job: Job<A>) {
    match job {
        Job::Wave {
            env,
            steps,
            queries,
            reply,
        } => {
            reply.deposit(state.run_wave(app, &env, steps, &queries));
        }
        Job::Decide {
            user_aborted,
            conflicts,
            reply,
        } => {
            conflicts.union_from(state.decide(&user_aborted).words());
            reply.deposit(());
        }
        Job::Commit { aborted, reply } => {
            state.commit(&aborted);
            reply.deposit(());
        }
        Job::Checkpoint { reply } => {
            reply.deposit(state.drain_checkpoint_rows());
        }
        Job::CheckpointStep { begin, reply } => {
            let budget = crate::limits::CHECKPOINT_COPY_ROWS_PER_EPOCH;
            let share = match state.checkpoint_step(begin, budget) {
                Some(rows) => CheckpointShare { rows, done: true },
                None => CheckpointShare::copying(),
            };
            reply.deposit(share);
        }
        Job::Fallback {
            env,
            finish,
            begin,
            steps,
            reply,
        } => {
            if let Some(keep) = finish {
                state.commit_all(keep);
            }
            if begin {
                state.set_solo(true);
            }
            let out = if steps.is_empty() {
                WaveOut::default()
            } else {
                state.run_wave(app, &env, steps, &[])
            };
            reply.deposit(out);
        }
        Job::Load { rows, reply } => reply.deposit(state.load_rows(&rows)),
        Job::Apply { rows, reply } => reply.deposit(state.apply_rows(&rows)),
        Job::ConflictTally { reply } => {
            reply.deposit(state.tables.iter().map(|t| t.conflict_tally()).collect());
        }
        Job::StateHash { reply } => reply.deposit(StateMark {
            hash: tables_hash(&state.tables),
            incarnation: state.incarnation,
        }),
        Job::Erase { subject, reply } => reply.deposit(state.erase_subject(app, &subject)),
        Job::Lend { .. } | Job::Return { .. } => unreachable!("handled by run_job"),
        #[cfg(test)]
        Job::Crash => panic!("a bug outside any handler (test)"),
    }
}

/// Reports `n_steps` handler steps run on `partition` of `service` (one partition's wave, or one
/// transaction in the serial pass) that took longer than `SLOW_STEP_WARN_US` together; never
/// changes an outcome.
pub(crate) fn warn_if_slow(
    service: &str,
    partition: u32,
    n_steps: usize,
    started: std::time::Instant,
) {
    let elapsed = started.elapsed();
    if elapsed.as_micros() > u128::from(crate::limits::SLOW_STEP_WARN_US) {
        tracing::warn!(
            service,
            partition,
            n_steps,
            elapsed_us = elapsed.as_micros() as u64,
            "slow handler steps (only reported: wall-clock time never aborts a transaction)"
        );
    }
}

/// Order-independent hash of the committed rows of a partition's tables.
pub(crate) fn tables_hash(tables: &[Box<dyn AnyTable>]) -> u64 {
    tables.iter().enumerate().fold(0u64, |acc, (i, t)| {
        acc.wrapping_add(t.state_hash().rotate_left(i as u32))
    })
}
