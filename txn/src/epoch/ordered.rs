//! The ordered fallback (`Fallback::Ordered`): conflict losers and hinted transactions re-run
//! through the partition actors, each partition taking them in TID order, so transactions
//! whose partitions are disjoint run in parallel on different cores.
//!
//! **Footprints.** The first pass records, for each transaction, the partitions its steps ran
//! in; a hinted transaction (which skipped the first pass) is predicted to touch its target
//! only. Each partition's queue lists, in TID order, the fallback transactions predicted to
//! touch it.
//!
//! **Rounds.** The fallback runs in rounds, each one batched job per partition it concerns
//! (`Job::Fallback`). A transaction starts once it heads the queue of every partition of its
//! footprint, so it holds those partitions alone: it runs there in solo mode (writes in
//! place, with the undo log, as in `serial.rs`) and nothing else runs there until it ends.
//! Each round runs one wave of every transaction in flight; the steps of one transaction in
//! one partition go in that partition's job. When a transaction ends, the next round's jobs
//! tell every partition it ran in to commit or discard it, and it leaves its queues, which may
//! start the transactions behind it. A transaction only ever waits for lower TIDs, so nothing
//! deadlocks, and every partition applies the fallback's transactions in TID order: the result
//! equals running them one at a time in TID order (`SerialPos::pass` 1), as `Fallback::Serial`
//! does. Which transactions share a round depends only on the log, never on timing.
//!
//! **Mispredictions.** A transaction whose re-execution emits a step to a partition outside its
//! footprint is discarded (its partitions are still held, so undoing it is safe) and re-run
//! after every other one, alone, in a tail pass in TID order (`SerialPos::pass` 2).
//!
//! **Chains** follow the rules of `serial::run_chain` and of the first pass: canonical step
//! order, the first aborting step decides the reason, the last step setting an output decides
//! the output, limits checked inside a wave per partition and summed between waves.

use super::{Dispatch, EpochStats, TxnResult, run_phase};
use crate::app::{App, AppDef};
use crate::bitset::SeqSet;
use crate::context::Usage;
use crate::envelope::EpochEnv;
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, Seq};
use crate::limits::{CHAIN_WAVES_MAX, TxnLimits};
use crate::partition::{Emitted, Job, OutboxMsg, Step, StepEvent, WaveOut};
use std::sync::Arc;

/// The partitions each fallback transaction is predicted to touch, and each partition's queue
/// of them in TID order.
struct Footprints {
    /// `(seq, gp)`, sorted and deduplicated: a transaction's footprint is one run.
    by_txn: Vec<(Seq, GlobalPartition)>,
    /// `(gp, seq)`, sorted: a partition's queue is one run.
    by_part: Vec<(GlobalPartition, Seq)>,
    /// Per partition, the index in `by_part` of its queue's head (its first unfinished
    /// transaction) and the end of its queue.
    head: Vec<usize>,
    end: Vec<usize>,
}

impl Footprints {
    /// `first_pass`: the `(seq, gp)` pairs of the steps the first pass ran, sorted.
    fn new<E>(
        first_pass: &[(Seq, GlobalPartition)],
        fallback: &SeqSet,
        env: &EpochEnv<E>,
        n_global: usize,
    ) -> Self {
        let mut by_txn: Vec<(Seq, GlobalPartition)> = first_pass
            .iter()
            .copied()
            .filter(|(seq, _)| fallback.contains(*seq))
            .collect();
        // The target is always touched (and is all a hinted transaction is predicted to touch).
        by_txn.extend(
            fallback
                .iter()
                .map(|seq| (seq, env.requests[seq as usize].target)),
        );
        by_txn.sort_unstable();
        by_txn.dedup();
        let mut by_part: Vec<(GlobalPartition, Seq)> =
            by_txn.iter().map(|&(seq, gp)| (gp, seq)).collect();
        by_part.sort_unstable();
        let (mut head, mut end) = (vec![0; n_global], vec![0; n_global]);
        for gp in 0..n_global {
            head[gp] = by_part.partition_point(|(p, _)| (*p as usize) < gp);
            end[gp] = by_part.partition_point(|(p, _)| (*p as usize) <= gp);
        }
        Footprints {
            by_txn,
            by_part,
            head,
            end,
        }
    }

    fn of(&self, seq: Seq) -> &[(Seq, GlobalPartition)] {
        let start = self.by_txn.partition_point(|(s, _)| *s < seq);
        let end = self.by_txn.partition_point(|(s, _)| *s <= seq);
        &self.by_txn[start..end]
    }

    fn contains(&self, seq: Seq, gp: GlobalPartition) -> bool {
        self.by_txn.binary_search(&(seq, gp)).is_ok()
    }

    fn head(&self, gp: GlobalPartition) -> Option<Seq> {
        let (head, end) = (self.head[gp as usize], self.end[gp as usize]);
        (head < end).then(|| self.by_part[head].1)
    }

    /// Whether `seq` heads the queue of every partition of its footprint.
    fn ready(&self, seq: Seq) -> bool {
        self.of(seq)
            .iter()
            .all(|&(_, gp)| self.head(gp) == Some(seq))
    }

    /// Appends to `ready` the queue heads that may start now.
    fn initially_ready(&self, ready: &mut Vec<Seq>) {
        for gp in 0..self.head.len() {
            if let Some(seq) = self.head(gp as GlobalPartition)
                && self.ready(seq)
            {
                ready.push(seq);
            }
        }
        ready.sort_unstable();
        ready.dedup();
    }

    /// Takes `seq` (which was ready, so heads all its queues) out of its queues and appends to
    /// `ready` the transactions behind it that may start now.
    fn finish(&mut self, seq: Seq, ready: &mut Vec<Seq>) {
        let start = self.by_txn.partition_point(|(s, _)| *s < seq);
        for i in start..self.by_txn.len() {
            let (s, gp) = self.by_txn[i];
            if s != seq {
                break;
            }
            debug_assert_eq!(self.head(gp), Some(seq));
            self.head[gp as usize] += 1;
            if let Some(next) = self.head(gp)
                && self.ready(next)
            {
                ready.push(next);
            }
        }
    }
}

/// One fallback transaction in flight.
struct Flight<A: App> {
    seq: Seq,
    wave: usize,
    /// Its use of its limits at the start of the current wave.
    usage: Usage,
    /// The current wave's steps in canonical order (a step's position is its index).
    steps: Vec<Emitted<A::Event>>,
    /// The partitions it ran in (put in solo mode), to commit or discard at its end.
    touched: Vec<GlobalPartition>,
    output: Option<A::Output>,
    /// The wave's results, gathered from the partitions that ran its steps.
    abort: Option<(u32, AbortReason)>,
    wave_output: Option<(u32, A::Output)>,
    used: Usage,
    emits: Vec<Emitted<A::Event>>,
    outbox: Vec<OutboxMsg>,
}

/// How a flight stands after a wave.
enum Next<O> {
    Continue,
    Committed(Option<O>),
    Aborted(AbortReason),
    /// It emitted a step outside its footprint: discard it and re-run it in the tail pass.
    Mispredicted,
}

impl<A: App> Flight<A> {
    fn start(seq: Seq, env: &EpochEnv<A::Event>) -> Self {
        Flight {
            seq,
            wave: 0,
            usage: Usage {
                steps: 1,
                ..Usage::default()
            },
            steps: vec![Emitted {
                seq,
                parent: 0,
                target: env.requests[seq as usize].target,
                event: StepEvent::Inbound,
            }],
            touched: Vec::new(),
            output: None,
            abort: None,
            wave_output: None,
            used: Usage::default(),
            emits: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Takes in what one partition ran of the flight's wave.
    fn gather(&mut self, mut out: WaveOut<A>) {
        for (_, pos, reason) in out.aborts.drain(..) {
            if self.abort.as_ref().is_none_or(|(first, _)| pos < *first) {
                self.abort = Some((pos, reason));
            }
        }
        for (_, pos, output) in out.outputs.drain(..) {
            if self
                .wave_output
                .as_ref()
                .is_none_or(|(last, _)| pos > *last)
            {
                self.wave_output = Some((pos, output));
            }
        }
        for (_, used) in &out.usage {
            self.used.add(used);
        }
        self.emits.append(&mut out.emits);
        self.outbox.append(&mut out.outbox);
    }

    /// Decides how the flight goes on after its wave (the rules of `serial::run_chain`); with
    /// `footprint`, a step emitted outside it is a misprediction.
    fn end_wave(&mut self, limits: &TxnLimits, footprint: Option<&Footprints>) -> Next<A::Output> {
        if let Some((_, reason)) = self.abort.take() {
            return Next::Aborted(reason);
        }
        if let Some((_, output)) = self.wave_output.take() {
            self.output = Some(output);
        }
        self.usage.add(&std::mem::take(&mut self.used));
        self.usage.steps += self.emits.len() as u64;
        if let Some(reason) = self.usage.exceeded(limits) {
            return Next::Aborted(reason);
        }
        if self.emits.is_empty() {
            return Next::Committed(self.output.take());
        }
        self.wave += 1;
        if self.wave == CHAIN_WAVES_MAX {
            return Next::Aborted(AbortReason::ChainTooLong {
                max_waves: CHAIN_WAVES_MAX,
            });
        }
        // Each partition's emits came in its steps' order; a stable sort by emitting step puts
        // the wave's emits in canonical order.
        self.emits.sort_by_key(|e| e.parent);
        if let Some(footprint) = footprint
            && self
                .emits
                .iter()
                .any(|e| !footprint.contains(self.seq, e.target))
        {
            return Next::Mispredicted;
        }
        std::mem::swap(&mut self.steps, &mut self.emits);
        Next::Continue
    }
}

/// One partition's job of a round, as it is built.
struct RoundJob<E> {
    gp: GlobalPartition,
    finish: Option<bool>,
    begin: bool,
    steps: Vec<Step<E>>,
    /// The index of the flight whose steps it runs.
    flight: Option<usize>,
}

/// The state of the ordered fallback of one epoch.
struct OrderedPass<'p, A: App, D: Dispatch<A>> {
    dispatch: &'p D,
    env: &'p Arc<EpochEnv<A::Event>>,
    limits: TxnLimits,
    flights: Vec<Flight<A>>,
    /// Partitions whose holder ended: commit (`true`) or discard it in the next round.
    finishing: Vec<(GlobalPartition, bool)>,
    /// Per partition, the index of its job in the round being built (`usize::MAX`: none).
    job_of: Vec<usize>,
    /// Outbox messages of committed transactions, per pass (1, 2).
    kept: [Vec<OutboxMsg>; 2],
}

impl<A: App, D: Dispatch<A>> OrderedPass<'_, A, D> {
    fn job(&mut self, jobs: &mut Vec<RoundJob<A::Event>>, gp: GlobalPartition) -> usize {
        let slot = &mut self.job_of[gp as usize];
        if *slot == usize::MAX {
            *slot = jobs.len();
            jobs.push(RoundJob {
                gp,
                finish: None,
                begin: false,
                steps: Vec::new(),
                flight: None,
            });
        }
        *slot
    }

    /// Runs one round: the pending commits and discards, then one wave of every flight, one
    /// job per partition; gathers the results into the flights.
    async fn round(&mut self) -> Result<(), TxnError> {
        let mut jobs: Vec<RoundJob<A::Event>> = Vec::new();
        for (gp, keep) in std::mem::take(&mut self.finishing) {
            let j = self.job(&mut jobs, gp);
            jobs[j].finish = Some(keep);
        }
        for f in 0..self.flights.len() {
            let steps = std::mem::take(&mut self.flights[f].steps);
            for (pos, step) in steps.into_iter().enumerate() {
                let j = self.job(&mut jobs, step.target);
                let flight = &mut self.flights[f];
                if !flight.touched.contains(&step.target) {
                    flight.touched.push(step.target);
                    jobs[j].begin = true;
                }
                jobs[j].flight = Some(f);
                jobs[j].steps.push(Step {
                    seq: flight.seq,
                    pos: pos as u32,
                    used: flight.usage,
                    event: step.event,
                });
            }
        }
        for job in &jobs {
            self.job_of[job.gp as usize] = usize::MAX;
        }
        jobs.sort_unstable_by_key(|j| j.gp);
        let targets: Vec<GlobalPartition> = jobs.iter().map(|j| j.gp).collect();
        let mut building = jobs.iter_mut();
        let outs = run_phase(self.dispatch, &targets, |_, reply| {
            let job = building.next().expect("one job per target");
            Job::Fallback {
                env: self.env.clone(),
                finish: job.finish,
                begin: job.begin,
                steps: std::mem::take(&mut job.steps),
                reply,
            }
        })
        .await?;
        for (job, out) in jobs.iter().zip(outs) {
            if let Some(f) = job.flight {
                self.flights[f].gather(out);
            }
        }
        Ok(())
    }

    /// Records how flight `f` ended (in `pass`), queues its commit or discard, and removes it.
    fn settle(
        &mut self,
        f: usize,
        next: Next<A::Output>,
        pass: u8,
        results: &mut [TxnResult<A::Output>],
        stats: &mut EpochStats,
    ) -> Flight<A> {
        let mut flight = self.flights.swap_remove(f);
        let (result, keep) = match next {
            Next::Committed(output) => {
                stats.n_committed += 1;
                self.kept[pass as usize - 1].append(&mut flight.outbox);
                (TxnResult::Committed { pass, output }, true)
            }
            Next::Aborted(reason) => {
                stats.n_user_aborted += 1;
                (TxnResult::Aborted { pass, reason }, false)
            }
            Next::Mispredicted | Next::Continue => (TxnResult::Retry, false),
        };
        results[flight.seq as usize] = result;
        self.finishing
            .extend(flight.touched.iter().map(|gp| (*gp, keep)));
        flight
    }
}

/// Runs the fallback transactions (`fallback`: conflict losers and hinted ones) of the epoch
/// just committed, partition-ordered (see the module documentation). `first_pass` lists the
/// `(seq, gp)` of every step the first pass ran, sorted. Their outbox messages follow the first
/// pass's in `outbox`, in serial order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ordered_pass<A: App, D: Dispatch<A>>(
    app: &AppDef<A>,
    dispatch: &D,
    env: &Arc<EpochEnv<A::Event>>,
    first_pass: &[(Seq, GlobalPartition)],
    fallback: &SeqSet,
    results: &mut [TxnResult<A::Output>],
    outbox: &mut Vec<OutboxMsg>,
    stats: &mut EpochStats,
) -> Result<(), TxnError> {
    let n_global = app.n_global as usize;
    let mut footprints = Footprints::new(first_pass, fallback, env, n_global);
    let mut pass = OrderedPass {
        dispatch,
        env,
        limits: app.txn_limits,
        flights: Vec::new(),
        finishing: Vec::new(),
        job_of: vec![usize::MAX; n_global],
        kept: [Vec::new(), Vec::new()],
    };
    stats.n_fallback += fallback.iter().count();
    let mut ready = Vec::new();
    footprints.initially_ready(&mut ready);
    let mut tail: Vec<Seq> = Vec::new();
    loop {
        for seq in ready.drain(..) {
            pass.flights.push(Flight::start(seq, env));
        }
        if pass.flights.is_empty() && pass.finishing.is_empty() {
            break;
        }
        pass.round().await?;
        let mut f = 0;
        while f < pass.flights.len() {
            match pass.flights[f].end_wave(&pass.limits, Some(&footprints)) {
                Next::Continue => f += 1,
                next => {
                    let mispredicted = matches!(next, Next::Mispredicted);
                    let flight = pass.settle(f, next, 1, results, stats);
                    if mispredicted {
                        tail.push(flight.seq);
                    }
                    footprints.finish(flight.seq, &mut ready);
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
    }
    tail.sort_unstable();
    tail_pass(&mut pass, &tail, results, stats).await?;
    // Committed transactions of the ordered pass ended in any order; each one's messages stay
    // in its own order (the sort is stable).
    pass.kept[0].sort_by_key(|m| m.seq);
    for kept in &mut pass.kept {
        outbox.append(kept);
    }
    Ok(())
}

/// Runs the mispredicted transactions (`tail`, ascending) one at a time, each seeing the
/// writes of everything before it, as `SerialPos::pass` 2.
async fn tail_pass<A: App, D: Dispatch<A>>(
    pass: &mut OrderedPass<'_, A, D>,
    tail: &[Seq],
    results: &mut [TxnResult<A::Output>],
    stats: &mut EpochStats,
) -> Result<(), TxnError> {
    for &seq in tail {
        pass.flights.push(Flight::start(seq, pass.env));
        loop {
            pass.round().await?;
            match pass.flights[0].end_wave(&pass.limits, None) {
                Next::Continue => {}
                next => {
                    pass.settle(0, next, 2, results, stats);
                    break;
                }
            }
        }
    }
    if !pass.finishing.is_empty() {
        pass.round().await?;
    }
    Ok(())
}
