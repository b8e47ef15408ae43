//! The epoch driver: execute → decide → commit (→ fallback) for one sequenced epoch.
//!
//! The driver sends exactly one batch message per touched partition per phase and waits for
//! all replies before the next phase (the phase barrier). Execution happens in waves: wave 0
//! runs every request's inbound event in its target partition; the events those steps emit
//! are grouped per target partition, sorted by `Seq` (so the order never depends on which
//! actor replied first) and run as the next wave, until no transaction emits any more.
//!
//! **Serial order.** Transactions that survive the first pass commit as if run one by one in
//! TID order. With the serial fallback on, transactions that lost a conflict are re-run right
//! after the commit, one at a time in TID order, each seeing the previous one's writes; so the
//! equivalent serial order of an epoch is: first-pass survivors by TID, then fallback
//! transactions by TID (Aria's deterministic reordering). [`SerialPos`] names that position.
//!
//! **Canonical step order.** The steps of one transaction are ordered by wave, then within a
//! wave by the order they were emitted (by the position of the emitting step, then emit
//! order). Every executor runs a transaction's steps in one partition in this order and applies
//! one rule for the output (the last step in this order that set one) and for the abort reason
//! (the first step in this order that aborted), so the parallel pass, the serial fallback,
//! `SerialExecutor` and replay agree on a transaction's outcome.
//!
//! **Limits.** Each transaction's use of its `TxnLimits` is summed here between waves (what its
//! steps used in every partition, and how many steps its emits add); inside a wave, each
//! partition's steps of the transaction check the limits against the use at the wave's start
//! plus their own, so a runaway handler is stopped where it runs.
//!
//! **Serial hints.** The sequencer may send transactions it predicts would lose a conflict
//! straight to the serial pass (`EpochEnv::serial`): they skip the parallel pass, so they
//! cannot lose there, and they run among the conflict losers in TID order. The serial order
//! above is unchanged (a hinted transaction is placed exactly like a loser), only the wasted
//! first execution is saved.
//!
//! **Ordered fallback.** With `Fallback::Ordered` the fallback transactions run through the
//! partition actors instead, each partition taking them in TID order, in parallel where their
//! first-pass partitions are disjoint (`ordered.rs`); a transaction leaving its first-pass
//! partitions is re-run last, alone (`SerialPos::pass` 2).

mod ordered;

use crate::app::{App, AppDef};
use crate::bitset::SeqSet;
use crate::context::Usage;
use crate::envelope::EpochEnv;
pub use crate::envelope::Fallback;
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, Seq};
use crate::limits::{CHAIN_WAVES_MAX, SERIAL_PASS_SETTLE_TXNS, TxnLimits};
pub use crate::outcome::SerialPos;
use crate::partition::{Emitted, Job, OutboxMsg, Partitions, Step, StepEvent, WaveOut};
use crate::query::{QueryFn, QueryPart, QueryResult};
use crate::serial::SerialPrefetch;
use crate::sync::{AtomicSeqSet, Depositor, PhaseBarrier};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// How a transaction of an epoch ended.
#[derive(Debug)]
pub(crate) enum TxnResult<O> {
    Committed {
        pass: u8,
        output: Option<O>,
    },
    /// Aborted by a handler, in the given pass, on reads that were not stale.
    Aborted {
        pass: u8,
        reason: AbortReason,
    },
    /// Lost a conflict and must run again first in the next epoch.
    Retry,
}

/// A query sequenced into an epoch.
pub(crate) struct QueryJob {
    pub targets: Vec<GlobalPartition>,
    pub f: QueryFn,
}

/// Counts of one epoch, for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochStats {
    pub n_txns: usize,
    pub n_committed: usize,
    pub n_user_aborted: usize,
    pub n_conflicts: usize,
    pub n_fallback: usize,
    /// Transactions sent straight to the serial pass by a serial hint.
    pub n_serial_hinted: usize,
    pub n_waves: usize,
    /// Wall time of the phases: execute (all waves), decide, commit, serial pass.
    pub phase_nanos: [u64; 4],
    /// Wall time of lending the partitions to the serial pass and returning them (part of the
    /// serial pass's time); `None` if the epoch did not lend them.
    pub lend_nanos: Option<u64>,
}

pub(crate) struct EpochOutcome<A: App> {
    pub results: Vec<TxnResult<A::Output>>,
    /// Outbox messages of committed transactions, in serial order.
    pub outbox: Vec<OutboxMsg>,
    pub query_results: Vec<QueryResult>,
    pub stats: EpochStats,
}

/// Delivers a phase job to a partition (through the actor runtime, or directly in tests).
pub(crate) trait Dispatch<A: App>: Send + Sync + 'static {
    fn dispatch(
        &self,
        gp: GlobalPartition,
        job: Job<A>,
    ) -> impl Future<Output = Result<(), TxnError>> + Send;

    /// Sends what `dispatch` buffered for other nodes (one batch per node) and deposits their
    /// replies; called once a phase's jobs are all dispatched. Local owners run each job as it
    /// is dispatched, so for them this is a no-op.
    fn flush(&self) -> impl Future<Output = Result<(), TxnError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Sends one job to each of `targets` and waits at the phase barrier for all replies, which come
/// back in `targets` order whatever order the partitions finished in.
pub(crate) async fn run_phase<A: App, D: Dispatch<A>, T: Send>(
    dispatch: &D,
    targets: &[GlobalPartition],
    mut make: impl FnMut(GlobalPartition, Depositor<T>) -> Job<A>,
) -> Result<Vec<T>, TxnError> {
    let (barrier, depositors) = PhaseBarrier::new(targets.len());
    for (gp, depositor) in targets.iter().zip(depositors) {
        dispatch.dispatch(*gp, make(*gp, depositor)).await?;
    }
    dispatch.flush().await?;
    barrier.wait().await.map_err(|a| {
        TxnError::Actor(format!(
            "partition {} dropped its phase reply (its actor stopped)",
            targets[a.slot_idx]
        ))
    })
}

/// Hears each transaction's final result as soon as the driver knows it, so that its reply
/// need not wait for the rest of the epoch: the live sequencer's reply hand-off. Recovery and
/// history replay pass none.
pub(crate) trait EarlySettle<O>: Send {
    /// Transaction `seq` ended with `result` (committed or aborted, never `Retry`). Called in
    /// serial order: the first pass's by seq once it is committed, then the serial pass's one
    /// by one as they run.
    fn settled(&mut self, seq: Seq, result: &TxnResult<O>);
    /// Hands on what `settled` gathered, with the outbox messages of the epoch's committed
    /// transactions so far (taken from `outbox`, in serial order, so they still go out before
    /// the replies of their transactions).
    fn flush(&mut self, outbox: &mut Vec<OutboxMsg>);
}

/// Runs one epoch to completion (not including durability, which the caller awaits).
pub(crate) async fn run_epoch<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    dispatch: &D,
    env: Arc<EpochEnv<A::Event>>,
    queries: Vec<QueryJob>,
) -> Result<EpochOutcome<A>, TxnError> {
    run_epoch_settling(app, dispatch, env, queries, None, None).await
}

/// [`run_epoch`], telling `early` of every final result as soon as it is known: the first
/// pass's after its commit, the serial pass's every `SERIAL_PASS_SETTLE_TXNS` transactions.
/// The serial pass then runs off the runtime's worker (`off_worker`), so that the replies it
/// releases reach their clients, and their next requests the sequencer's queue, while it runs.
/// `EpochOutcome::outbox` keeps only the messages not flushed to `early`.
pub(crate) async fn run_epoch_settling<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    dispatch: &D,
    env: Arc<EpochEnv<A::Event>>,
    queries: Vec<QueryJob>,
    mut early: Option<&mut dyn EarlySettle<A::Output>>,
    commit_after: Option<&crate::sync::DurableWatermark>,
) -> Result<EpochOutcome<A>, TxnError> {
    let n_txns = env.requests.len();
    let hinted = hinted_set(&env);
    let mut stats = EpochStats {
        n_txns,
        n_serial_hinted: hinted.iter().count(),
        ..EpochStats::default()
    };
    let started = Instant::now();
    let executed = execute(app, dispatch, &env, &hinted, queries, &mut stats).await?;
    let executed_at = Instant::now();
    let Executed {
        chains,
        touched,
        mut outbox,
        query_results,
        footprint,
    } = executed;
    let Chains {
        aborted: user_aborted,
        mut reasons,
        mut outputs,
        ..
    } = chains;

    // Decide: one message per touched partition; each ORs its losers into the shared set.
    let user_aborted = Arc::new(user_aborted);
    let merged = Arc::new(AtomicSeqSet::with_capacity(n_txns));
    run_phase(dispatch, &touched, |_, reply| Job::Decide {
        user_aborted: user_aborted.clone(),
        conflicts: merged.clone(),
        reply,
    })
    .await?;
    let conflicts = SeqSet::from_words(merged.snapshot(), n_txns);
    let mut aborted = (*user_aborted).clone();
    aborted.union_with(&conflicts);
    let decided_at = Instant::now();

    // With `commit_after` (a cluster's sequencer), no partition commits the epoch before its
    // log record is durable: a partition on another node outlives this process, and one that
    // committed an epoch the log lost could not be kept by the runtime that takes over (it
    // cannot be rolled back, so every partition would be recovered again from the store). The
    // record was queued before the epoch ran, so the wait is what is left of its append.
    if let Some(watermark) = commit_after {
        watermark
            .wait(env.epoch)
            .await
            .map_err(|e| TxnError::Storage(e.to_string()))?;
    }

    // Commit: apply surviving writes everywhere.
    let aborted = Arc::new(aborted);
    run_phase(dispatch, &touched, |_, reply| Job::Commit {
        aborted: aborted.clone(),
        reply,
    })
    .await?;
    let committed_at = Instant::now();

    let mut results = Vec::with_capacity(n_txns);
    for seq in 0..n_txns as Seq {
        let reason = reasons[seq as usize].take().map(|(_, reason)| reason);
        let output = outputs[seq as usize].take().map(|(_, output)| output);
        // A conflict loser is retried even if a handler aborted it: an abort decided on stale
        // reads (a lower TID wrote what it read) might not happen in the serial order.
        let retry = conflicts.contains(seq) || hinted.contains(seq);
        debug_assert!(retry || reason.is_some() || !aborted.contains(seq));
        results.push(first_pass_result(retry, reason, output, &mut stats));
    }
    stats.n_conflicts = conflicts.iter().count();

    // Keep the messages of committed transactions, in serial (seq) order; the sort is stable, so
    // a transaction's own messages stay in the order its steps queued them.
    outbox.retain(|m| !aborted.contains(m.seq));
    outbox.sort_by_key(|m| m.seq);
    if let Some(early) = early.as_deref_mut() {
        settle_first_pass(&results, &mut outbox, early);
    }

    let mut serial = conflicts;
    serial.union_with(&hinted);
    match env.fallback {
        // Lending costs two messages per partition: only when the pass has work.
        Fallback::Serial if serial.iter().next().is_some() => {
            let lend_started = Instant::now();
            let mut parts = lend_all(app, dispatch).await?;
            let lent_after = lend_started.elapsed();
            let pass = SerialPass {
                env: &env,
                results: &mut results,
                outbox: &mut outbox,
                stats: &mut stats,
            };
            match early {
                Some(early) => {
                    off_worker(|| serial_pass(app, &mut parts, &serial, pass, Some(early)))
                }
                None => serial_pass(app, &mut parts, &serial, pass, None),
            }
            let return_started = Instant::now();
            return_all(dispatch, parts).await?;
            stats.lend_nanos = Some((lent_after + return_started.elapsed()).as_nanos() as u64);
        }
        Fallback::Serial => {}
        Fallback::Ordered => {
            ordered::ordered_pass(
                app,
                dispatch,
                &env,
                &footprint,
                &serial,
                &mut results,
                &mut outbox,
                &mut stats,
            )
            .await?
        }
        Fallback::NextEpoch => {}
    }
    stats.phase_nanos = [
        executed_at - started,
        decided_at - executed_at,
        committed_at - decided_at,
        committed_at.elapsed(),
    ]
    .map(|d| d.as_nanos() as u64);
    Ok(EpochOutcome {
        results,
        outbox,
        query_results,
        stats,
    })
}

/// The transactions a serial hint sends straight to the serial pass (honoured with
/// `Fallback::Serial` and `Fallback::Ordered`).
fn hinted_set<E>(env: &EpochEnv<E>) -> SeqSet {
    let mut hinted = SeqSet::with_len(env.requests.len());
    if env.fallback != Fallback::NextEpoch {
        for &seq in &env.serial {
            hinted.insert(seq);
        }
    }
    hinted
}

/// Tells `early` of every transaction the first pass decided (all but the serial pass's and
/// the retries), in seq order, and hands it the first pass's outbox messages.
fn settle_first_pass<O>(
    results: &[TxnResult<O>],
    outbox: &mut Vec<OutboxMsg>,
    early: &mut dyn EarlySettle<O>,
) {
    for (seq, result) in results.iter().enumerate() {
        if !matches!(result, TxnResult::Retry) {
            early.settled(seq as Seq, result);
        }
    }
    early.flush(outbox);
}

/// Runs `f`, work that may keep a thread busy for milliseconds or more (the one-thread serial
/// pass; a partition job that visits every row), so that the runtime's other tasks keep running
/// meanwhile: on a multi-thread runtime the worker first hands its queued tasks to another
/// thread (`block_in_place`), so a reply task woken by the serial pass is not stuck behind it,
/// and a take-over's hashes and hand-over on every worker at once no longer silence a node's
/// heartbeats (they did, for over a second, and its peers declared it dead). Costs a thread
/// hand-off per call; a current-thread runtime cannot hand its queue over and runs `f` in place.
pub(crate) fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// How a transaction that ran in the first pass ended there, counted in `stats`.
fn first_pass_result<O>(
    retry: bool,
    reason: Option<AbortReason>,
    output: Option<O>,
    stats: &mut EpochStats,
) -> TxnResult<O> {
    match (retry, reason) {
        // Decided by the serial pass (or retried next epoch).
        (true, _) => TxnResult::Retry,
        (false, Some(reason)) => {
            stats.n_user_aborted += 1;
            TxnResult::Aborted { pass: 0, reason }
        }
        (false, None) => {
            stats.n_committed += 1;
            TxnResult::Committed { pass: 0, output }
        }
    }
}

/// Borrows every partition's state from its owner for the serial pass (one `Job::Lend` each):
/// ownership moves to the driver, nothing is shared. This works only for partitions in this
/// process; across nodes the contended path is `Fallback::Ordered`, which sends jobs only.
async fn lend_all<A: App, D: Dispatch<A>>(
    app: &AppDef<A>,
    dispatch: &D,
) -> Result<Partitions<A>, TxnError> {
    let all: Vec<GlobalPartition> = (0..app.n_global).collect();
    let states = run_phase(dispatch, &all, |_, reply| Job::Lend { reply }).await?;
    Ok(Partitions::from_lent(states))
}

/// Gives every lent state back to its owner (one `Job::Return` each, no reply: the owner's
/// mailbox is in order, so the next epoch's jobs find the state home).
async fn return_all<A: App, D: Dispatch<A>>(
    dispatch: &D,
    parts: Partitions<A>,
) -> Result<(), TxnError> {
    for state in parts.into_states() {
        dispatch.dispatch(state.gp, Job::Return { state }).await?;
    }
    Ok(())
}

/// What the serial pass reads and fills in.
struct SerialPass<'p, A: App> {
    env: &'p EpochEnv<A::Event>,
    results: &'p mut [TxnResult<A::Output>],
    outbox: &'p mut Vec<OutboxMsg>,
    stats: &'p mut EpochStats,
}

/// Every partition is idle and lent to the driver (`parts`, indexed by global partition): runs
/// the conflict losers and the hinted transactions (`serial`) one at a time, in TID order, each
/// seeing all writes committed before it. Their outbox messages follow the first pass's, in the
/// same order. `early` hears each result, `SERIAL_PASS_SETTLE_TXNS` at a time.
fn serial_pass<A: App>(
    app: &Arc<AppDef<A>>,
    parts: &mut Partitions<A>,
    serial: &SeqSet,
    pass: SerialPass<'_, A>,
    mut early: Option<&mut dyn EarlySettle<A::Output>>,
) {
    let SerialPass {
        env,
        results,
        outbox,
        stats,
    } = pass;
    let mut scratch = crate::serial::ChainBuffers::default();
    let mut prefetch = SerialPrefetch::new(serial.iter(), app, env, parts);
    for (n_run, seq) in serial.iter().enumerate() {
        prefetch.advance(app, env, parts, n_run);
        if let Some(early) = early.as_deref_mut()
            && n_run > 0
            && n_run.is_multiple_of(SERIAL_PASS_SETTLE_TXNS)
        {
            early.flush(outbox);
        }
        debug_assert!(matches!(results[seq as usize], TxnResult::Retry));
        stats.n_fallback += 1;
        let request = &env.requests[seq as usize];
        let clock = env.clock();
        results[seq as usize] =
            match crate::serial::run_chain(app, parts, clock, seq, request, &mut scratch) {
                Ok(output) => {
                    stats.n_committed += 1;
                    outbox.append(&mut scratch.out.outbox);
                    TxnResult::Committed { pass: 1, output }
                }
                Err(reason) => {
                    stats.n_user_aborted += 1;
                    TxnResult::Aborted { pass: 1, reason }
                }
            };
        if let Some(early) = early.as_deref_mut() {
            early.settled(seq, &results[seq as usize]);
        }
    }
    if let Some(early) = early {
        early.flush(outbox);
    }
}

/// What the first pass's waves leave for decide and commit.
struct Executed<A: App> {
    chains: Chains<A>,
    /// The partitions that ran a step, in order.
    touched: Vec<GlobalPartition>,
    outbox: Vec<OutboxMsg>,
    query_results: Vec<QueryResult>,
    /// With `Fallback::Ordered`: the `(seq, gp)` of every step run, sorted and deduplicated
    /// (each transaction's predicted footprint for the ordered fallback); empty otherwise.
    footprint: Vec<(Seq, GlobalPartition)>,
}

/// Runs the first pass's waves: every non-hinted request's inbound step, then the steps their
/// emits add, wave after wave, with the epoch's queries in wave 0.
async fn execute<A: App, D: Dispatch<A>>(
    app: &Arc<AppDef<A>>,
    dispatch: &D,
    env: &Arc<EpochEnv<A::Event>>,
    hinted: &SeqSet,
    queries: Vec<QueryJob>,
    stats: &mut EpochStats,
) -> Result<Executed<A>, TxnError> {
    let n_global = app.n_global as usize;
    let mut chains: Chains<A> = Chains::new(env.requests.len(), app.txn_limits);
    let mut touched = vec![false; n_global];
    let mut outbox: Vec<OutboxMsg> = Vec::new();
    let mut steps: Vec<Vec<Step<A::Event>>> = (0..n_global).map(|_| Vec::new()).collect();
    for (seq, req) in env.requests.iter().enumerate() {
        if hinted.contains(seq as Seq) {
            continue;
        }
        chains.usage[seq].steps = 1;
        steps[req.target as usize].push(Step {
            seq: seq as Seq,
            pos: 0,
            used: chains.usage[seq],
            event: StepEvent::Inbound,
        });
    }
    let mut queries = EpochQueries::new(n_global, queries);
    let mut footprint: Vec<(Seq, GlobalPartition)> = Vec::new();
    let mut wave = 0;
    loop {
        let targets = wave_targets(&mut steps, &queries, &mut chains, &mut touched, wave);
        if targets.is_empty() {
            break;
        }
        if env.fallback == Fallback::Ordered {
            record_footprint(&targets, &steps, &mut footprint);
        }
        stats.n_waves += 1;
        let outs: Vec<WaveOut<A>> = run_phase(dispatch, &targets, |gp, reply| Job::Wave {
            env: env.clone(),
            steps: std::mem::take(&mut steps[gp as usize]),
            queries: std::mem::take(&mut queries.per_partition[gp as usize]),
            reply,
        })
        .await?;
        let mut outs: Vec<(GlobalPartition, WaveOut<A>)> =
            targets.iter().copied().zip(outs).collect();
        for (gp, out) in &mut outs {
            outbox.append(&mut out.outbox);
            queries.collect(app, *gp, out);
        }
        // Route emits only after every abort of this wave is known: an aborted transaction's
        // chain stops everywhere.
        chains.end_wave(wave, outs.into_iter().map(|(_, out)| out), &mut steps);
        wave += 1;
    }
    let touched = (0..n_global)
        .filter(|gp| touched[*gp])
        .map(|gp| gp as GlobalPartition)
        .collect();
    footprint.sort_unstable();
    footprint.dedup();
    Ok(Executed {
        chains,
        touched,
        outbox,
        query_results: queries.results(),
        footprint,
    })
}

/// Appends the `(seq, gp)` of the wave's steps to `footprint` (one push per step, into one
/// vector per epoch).
fn record_footprint<E>(
    targets: &[GlobalPartition],
    steps: &[Vec<Step<E>>],
    footprint: &mut Vec<(Seq, GlobalPartition)>,
) {
    for &gp in targets {
        footprint.extend(steps[gp as usize].iter().map(|step| (step.seq, gp)));
    }
}

/// The partitions that run wave `wave`: those with steps or queries. At `CHAIN_WAVES_MAX` the
/// steps left abort their transactions instead of running.
fn wave_targets<A: App>(
    steps: &mut [Vec<Step<A::Event>>],
    queries: &EpochQueries,
    chains: &mut Chains<A>,
    touched: &mut [bool],
    wave: usize,
) -> Vec<GlobalPartition> {
    let mut targets: Vec<GlobalPartition> = Vec::new();
    for gp in 0..steps.len() {
        let has_steps = !steps[gp].is_empty();
        let has_queries = !queries.per_partition[gp].is_empty();
        if !has_steps && !has_queries {
            continue;
        }
        if wave == CHAIN_WAVES_MAX {
            for step in &steps[gp] {
                let reason = AbortReason::ChainTooLong {
                    max_waves: CHAIN_WAVES_MAX,
                };
                chains.abort(step.seq, (wave, step.pos), reason);
            }
            steps[gp].clear();
            continue;
        }
        touched[gp] |= has_steps;
        targets.push(gp as GlobalPartition);
    }
    targets
}

/// The epoch's snapshot queries: what each partition runs in wave 0, and the parts collected.
struct EpochQueries {
    per_partition: Vec<Vec<(usize, QueryFn)>>,
    parts: Vec<Vec<Option<QueryPart>>>,
    errors: Vec<Option<TxnError>>,
}

impl EpochQueries {
    fn new(n_global: usize, queries: Vec<QueryJob>) -> Self {
        let mut per_partition: Vec<Vec<(usize, QueryFn)>> =
            (0..n_global).map(|_| Vec::new()).collect();
        let mut parts = Vec::with_capacity(queries.len());
        for (idx, q) in queries.iter().enumerate() {
            for gp in &q.targets {
                per_partition[*gp as usize].push((idx, q.f.clone()));
            }
            parts.push(Vec::with_capacity(q.targets.len()));
        }
        let errors = (0..queries.len()).map(|_| None).collect();
        EpochQueries {
            per_partition,
            parts,
            errors,
        }
    }

    /// Takes partition `gp`'s query results out of its wave output.
    fn collect<A: App>(&mut self, app: &AppDef<A>, gp: GlobalPartition, out: &mut WaveOut<A>) {
        for (idx, result) in out.query_results.drain(..) {
            match result {
                Ok(part) => self.parts[idx].push(Some(part)),
                Err(message) => {
                    let (service_idx, partition) = app.locate(gp);
                    self.errors[idx] = Some(TxnError::QueryPanicked {
                        service: app.services[service_idx as usize].name.clone(),
                        partition,
                        message,
                    })
                }
            }
        }
    }

    fn results(self) -> Vec<QueryResult> {
        self.parts
            .into_iter()
            .zip(self.errors)
            .map(|(parts, err)| match err {
                Some(e) => Err(e),
                None => Ok(parts.into_iter().flatten().collect()),
            })
            .collect()
    }
}

/// Where a step stands in its transaction's canonical order: (wave, position in the wave).
type StepAt = (usize, u32);

/// The first pass's account of every transaction of the epoch: aborts, outputs and use of the
/// limits, following the canonical step order (see the module documentation).
struct Chains<A: App> {
    limits: TxnLimits,
    usage: Vec<Usage>,
    aborted: SeqSet,
    /// The abort reason of the first step (in canonical order) that aborted.
    reasons: Vec<Option<(StepAt, AbortReason)>>,
    /// The output of the last step (in canonical order) that set one.
    outputs: Vec<Option<(StepAt, A::Output)>>,
    /// The wave's emits, gathered to be put in canonical order: each wave result's list as it
    /// came (moved in whole, not event by event).
    emits: Vec<Vec<Emitted<A::Event>>>,
    /// The transactions whose steps reported use in the wave (kept to reuse its memory).
    charged: Vec<Seq>,
    /// How many of the wave's emits go to each partition (kept to reuse its memory).
    emits_per_target: Vec<usize>,
    /// The wave's emits in canonical order, as `(seq, parent, list in emits, index in it)`
    /// (kept to reuse its memory): sorting these keys instead of the emits moves each event
    /// once.
    emit_order: Vec<(Seq, u32, u32, u32)>,
}

impl<A: App> Chains<A> {
    fn new(n_txns: usize, limits: TxnLimits) -> Self {
        Chains {
            limits,
            usage: vec![Usage::default(); n_txns],
            aborted: SeqSet::with_len(n_txns),
            reasons: (0..n_txns).map(|_| None).collect(),
            outputs: (0..n_txns).map(|_| None).collect(),
            emits: Vec::new(),
            charged: Vec::new(),
            emits_per_target: Vec::new(),
            emit_order: Vec::new(),
        }
    }

    fn abort(&mut self, seq: Seq, at: StepAt, reason: AbortReason) {
        self.aborted.insert(seq);
        let slot = &mut self.reasons[seq as usize];
        if slot.as_ref().is_none_or(|(first, _)| at < *first) {
            *slot = Some((at, reason));
        }
    }

    /// Takes in the wave's results (`outs`, in partition order), decides which transactions it
    /// aborted (their steps' aborts, then the limits: a limit exceeded by the sum of a wave
    /// counts as exceeded after the wave's last step), and routes the surviving emits into
    /// `steps` in canonical order.
    fn end_wave(
        &mut self,
        wave: usize,
        outs: impl Iterator<Item = WaveOut<A>>,
        steps: &mut [Vec<Step<A::Event>>],
    ) {
        for mut out in outs {
            for (seq, pos, reason) in out.aborts.drain(..) {
                self.abort(seq, (wave, pos), reason);
            }
            for (seq, pos, output) in out.outputs.drain(..) {
                let slot = &mut self.outputs[seq as usize];
                if slot.as_ref().is_none_or(|(last, _)| (wave, pos) > *last) {
                    *slot = Some(((wave, pos), output));
                }
            }
            for (seq, used) in out.usage.drain(..) {
                self.usage[seq as usize].add(&used);
                self.charged.push(seq);
            }
            if !out.emits.is_empty() {
                self.emits.push(std::mem::take(&mut out.emits));
            }
        }
        for e in self.emits.iter().flatten() {
            self.usage[e.seq as usize].steps += 1;
        }
        let mut charged = std::mem::take(&mut self.charged);
        for seq in charged.drain(..) {
            if self.aborted.contains(seq) {
                continue;
            }
            if let Some(reason) = self.usage[seq as usize].exceeded(&self.limits) {
                self.abort(seq, (wave, u32::MAX), reason);
            }
        }
        self.charged = charged;
        self.route(steps);
    }

    /// Moves the gathered emits of transactions still alive into the next wave's `steps`:
    /// sorted by transaction, then emitting step, then gathering order (which keeps each step's
    /// emit order), which numbers each transaction's next steps and leaves every partition's
    /// list sorted by `(seq, pos)`. Only the keys are sorted; each event moves once, from the
    /// gathered list to its step (sorting the emits themselves moved every event several times
    /// and was ~5 % of the marketplace's instructions).
    fn route(&mut self, steps: &mut [Vec<Step<A::Event>>]) {
        self.emit_order.clear();
        for (l, list) in self.emits.iter().enumerate() {
            self.emit_order.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, e)| (e.seq, e.parent, l as u32, i as u32)),
            );
        }
        // The list and index make every key distinct and follow the gathering order, so the
        // unstable sort gives the stable order.
        self.emit_order.sort_unstable();
        // Size each partition's next-wave list once instead of regrowing it push by push.
        self.emits_per_target.clear();
        self.emits_per_target.resize(steps.len(), 0);
        for e in self.emits.iter().flatten() {
            self.emits_per_target[e.target as usize] += 1;
        }
        for (list, n) in steps.iter_mut().zip(&self.emits_per_target) {
            list.reserve(*n);
        }
        let mut numbering: Option<(Seq, u32)> = None;
        for &(_, _, l, i) in &self.emit_order {
            let e = &mut self.emits[l as usize][i as usize];
            if self.aborted.contains(e.seq) {
                continue;
            }
            let pos = match &mut numbering {
                Some((seq, next)) if *seq == e.seq => {
                    *next += 1;
                    *next
                }
                slot => slot.insert((e.seq, 0)).1,
            };
            steps[e.target as usize].push(Step {
                seq: e.seq,
                pos,
                used: self.usage[e.seq as usize],
                // `Inbound` is a placeholder that owns nothing, dropped with the list below.
                event: std::mem::replace(&mut e.event, StepEvent::Inbound),
            });
        }
        self.emits.clear();
    }
}
