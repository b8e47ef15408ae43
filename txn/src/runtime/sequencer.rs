//! The sequencer: gathers submissions into epochs, numbers them, hands each to the durability
//! thread and executes it while the write is in flight, settles the outcomes (retries, dedup
//! window) and queues the replies and the checkpoints that fall due.

use crate::app::{App, AppDef};
use crate::clock::now_ms;
use crate::cluster_dispatch::DriverDispatch;
use crate::dedup::{Check, Dedup};
use crate::envelope::{EpochEnv, Fallback, Sequenced};
use crate::epoch::{EarlySettle, EpochOutcome, QueryJob, TxnResult, run_epoch_settling, run_phase};
use crate::error::{AbortReason, TxnError};
use crate::ids::{GlobalPartition, RequestId, Tid};
use crate::limits;
use crate::outcome::{Outcome, SerialPos};
use crate::partition::{Job, OutboxMsg};
use crate::predict::Predictor;
use crate::row_key::{CheckpointRow, DeferredRows};
use crate::runtime::client::{Admitted, QueryReply, Submission, SubmitRx, TxnReply};
use crate::runtime::config::RuntimeConfig;
use crate::runtime::durability::{CheckpointSchedule, LogItem};
use crate::runtime::reply::{ReplyBatch, ReplySender};
use crate::runtime::stats::{ConflictStats, EpochPeak, RuntimeStats};
use crate::sync::DurableWatermark;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The sequencer task's state.
pub(super) struct Sequencer<A: App> {
    pub(super) app: Arc<AppDef<A>>,
    pub(super) actors: DriverDispatch<A>,
    pub(super) config: RuntimeConfig,
    pub(super) rx: SubmitRx<A>,
    pub(super) log_tx: mpsc::Sender<LogItem<A>>,
    pub(super) reply_tx: ReplySender<A>,
    pub(super) durable: Arc<DurableWatermark>,
    pub(super) stats: Arc<RuntimeStats>,
    /// The last epoch sequenced (recovered or run).
    pub(super) epoch: u64,
    /// The timestamp of the last epoch: epoch timestamps never go backwards.
    pub(super) last_timestamp_ms: u64,
    pub(super) dedup: Dedup<A::Output>,
    /// Whether a checkpoint is in flight and the epoch of the last completed one.
    pub(super) checkpoint_schedule: Arc<CheckpointSchedule>,
    /// Decides the serial hints of each epoch from the conflicts of the previous ones.
    pub(super) predictor: Predictor,
    /// Conflict losers to run first in the next epoch.
    pub(super) retry_queue: Vec<(Sequenced<A::Event>, PendingTxn<A>)>,
    /// Requests with client-chosen ids between sequencing and their final outcome.
    pub(super) inflight: InFlight<A>,
    /// The rest of a batch that did not fit into the epoch it arrived in (`epoch_txns_max`):
    /// sequenced first in the next epochs, after the retries.
    pub(super) carry: VecDeque<Admitted<A>>,
    /// Requests of the last epoch run: an epoch closes early on a quiet queue only once it holds
    /// as many (`RuntimeConfig::epoch_quiet_close_txns`), so a quiet close never splits the
    /// burst of a closed loop's clients coming back across two log writes (only the epoch
    /// split does, on purpose, into halves: `RuntimeConfig::epoch_split_txns`).
    pub(super) last_epoch_txns: usize,
    /// How long the turn of the last epoch that ran requests took: an epoch splits only after
    /// a short one (`RuntimeConfig::epoch_split_txns`).
    pub(super) last_turn: std::time::Duration,
    /// Whether a partition lives on another node: each epoch's commit then waits for its log
    /// record to be durable (`run_epoch_settling`'s `commit_after`).
    pub(super) partitions_elsewhere: bool,
}

/// A sequenced request's reply channel and what the dedup window needs of it.
pub(super) struct PendingTxn<A: App> {
    /// `None` once the reply has been sent ahead of the epoch's end (`EarlyReplies`).
    reply: Option<TxnReply<A>>,
    id: Option<RequestId>,
    /// The request's digest, remembered with its id in the dedup window.
    digest: u32,
    /// See `Submission::Txn::fresh`.
    fresh: bool,
}

/// Requests with an id being sequenced: their digest and who else waits for their outcome.
pub(super) type InFlight<A> = FxHashMap<RequestId, (u32, Vec<TxnReply<A>>)>;

/// How a sequenced request ended, decided identically live and on replay.
pub(super) enum Settled<O> {
    Final(Outcome<O>),
    Retry,
}

/// Turns an epoch's result for request `seq` into its final outcome, or a retry in the next
/// epoch while it has retries left.
pub(super) fn settle<O>(
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
    requests: Vec<Sequenced<A::Event>>,
    pending: Vec<PendingTxn<A>>,
    queries: Vec<(QueryJob, QueryReply)>,
    /// Resubmissions answered from the dedup window.
    answered: Vec<(TxnReply<A>, Outcome<A::Output>)>,
    /// Callers of `Client::conflict_stats`, answered before the epoch runs.
    conflict_stats: Vec<oneshot::Sender<Result<ConflictStats, TxnError>>>,
    /// Callers of `Client::state_hash` in a cluster, answered before the epoch runs.
    state_hashes: Vec<oneshot::Sender<Result<u64, TxnError>>>,
    /// Callers of `Client::forget`: each erasure runs as its own epoch before this batch's.
    forgets: Vec<super::forget::ForgetCall>,
    closed: bool,
}

impl<A: App> Gathered<A> {
    /// Takes in one submission; the requests of a batch beyond `room` (what is left of
    /// `epoch_txns_max`) go to `carry`, for the next epoch.
    fn take(
        &mut self,
        sub: Submission<A>,
        room: usize,
        dedup: &Dedup<A::Output>,
        inflight: &mut InFlight<A>,
        carry: &mut VecDeque<Admitted<A>>,
    ) {
        match sub {
            Submission::Txn(admitted) => self.take_txn(admitted, dedup, inflight),
            Submission::TxnBatch(batch) => {
                let mut batch = batch.into_iter();
                for admitted in batch.by_ref().take(room) {
                    self.take_txn(admitted, dedup, inflight);
                }
                carry.extend(batch);
            }
            Submission::Query { targets, f, reply } => {
                self.queries.push((QueryJob { targets, f }, reply));
            }
            Submission::ConflictStats { reply } => self.conflict_stats.push(reply),
            Submission::StateHash { reply } => self.state_hashes.push(reply),
            Submission::Forget { subject, reply } => self.forgets.push((subject, reply)),
            Submission::Stop => self.closed = true,
        }
    }

    /// Sequences one admitted request, unless the dedup window or a request in flight with the
    /// same id answers it.
    fn take_txn(
        &mut self,
        admitted: Admitted<A>,
        dedup: &Dedup<A::Output>,
        inflight: &mut InFlight<A>,
    ) {
        let Admitted {
            request,
            digest,
            fresh,
            reply,
        } = admitted;
        if let Some(id) = request.id
            && !fresh
        {
            let reused = || Err(TxnError::RequestIdReused { id });
            match dedup.check(&id, digest) {
                Check::Settled(outcome) => return self.answered.push((reply, outcome)),
                Check::Reused => return reply.send(reused()),
                Check::New => {}
            }
            if let Some((first_digest, waiters)) = inflight.get_mut(&id) {
                if *first_digest != digest {
                    return reply.send(reused());
                }
                return waiters.push(reply);
            }
            inflight.insert(id, (digest, Vec::new()));
        }
        self.pending.push(PendingTxn {
            reply: Some(reply),
            id: request.id,
            digest,
            fresh,
        });
        self.requests.push(request);
    }
}

/// Gathers and runs epochs until the runtime stops (a `Stop` submission or every client gone)
/// and nothing is left to retry; returns its state and the checkpoint it was copying, if any
/// (a runtime that hands over to the next one finishes it, `hand_over.rs`).
pub(super) async fn sequencer_loop<A: App>(mut s: Sequencer<A>) -> Stopped<A> {
    let mut closed = false;
    let mut copying = None;
    while let Some(gathered) = s.gather(closed).await {
        closed = gathered.closed;
        let started = Instant::now();
        let mut turn = EpochPeak {
            checkpoint_writing: s.checkpoint_schedule.in_flight.load(Ordering::Acquire),
            ..EpochPeak::default()
        };
        s.run_gathered(gathered, &mut turn, &mut copying).await;
        let took = started.elapsed();
        if turn.txns > 0 {
            // Only an epoch's turn: a stats call or a forget says nothing about the next one.
            s.last_turn = took;
        }
        turn.turn_nanos = took.as_nanos() as u64;
        s.stats
            .turn_nanos
            .fetch_add(turn.turn_nanos, Ordering::Relaxed);
        s.stats.note_turn(&turn);
    }
    (s, copying)
}

/// A stopped sequencer's state, and the checkpoint it was copying.
pub(super) type Stopped<A> = (Sequencer<A>, Option<CheckpointCopying>);

impl<A: App> Sequencer<A> {
    /// The next epoch's requests: the retries first, then submissions until the epoch closes
    /// (`fill`). `None` when stopped.
    async fn gather(&mut self, closed: bool) -> Option<Gathered<A>> {
        // Sized for an epoch like the last one, or what is queued already if more, so taking
        // requests in does not grow (and copy) them push by push; both move on with the epoch,
        // so they cannot be kept.
        let expected = (self.retry_queue.len() + self.carry.len())
            .max(self.last_epoch_txns)
            .max(self.rx.queued())
            .min(self.config.epoch_txns_max);
        let mut g = Gathered {
            requests: Vec::with_capacity(expected),
            pending: Vec::with_capacity(expected),
            queries: Vec::new(),
            answered: Vec::new(),
            conflict_stats: Vec::new(),
            state_hashes: Vec::new(),
            forgets: Vec::new(),
            closed,
        };
        for (req, p) in self.retry_queue.drain(..) {
            g.requests.push(req);
            g.pending.push(p);
        }
        let max = self.config.epoch_txns_max;
        while g.requests.len() < max
            && let Some(admitted) = self.carry.pop_front()
        {
            g.take_txn(admitted, &self.dedup, &mut self.inflight);
        }
        let gathering = Instant::now();
        let mut idle_nanos = 0;
        if g.requests.is_empty() && g.answered.is_empty() {
            if g.closed {
                return None;
            }
            let sub = self.rx.recv().await?;
            idle_nanos = gathering.elapsed().as_nanos() as u64;
            // A burst that came while the sequencer waited: lists of its size at once rather
            // than doubled under it (both are still empty).
            let burst = (self.rx.queued() + 1).min(max);
            if burst > g.requests.capacity() {
                g.requests = Vec::with_capacity(burst);
                g.pending = Vec::with_capacity(burst);
            }
            g.take(sub, max, &self.dedup, &mut self.inflight, &mut self.carry);
            let between_epochs =
                !g.conflict_stats.is_empty() || !g.state_hashes.is_empty() || !g.forgets.is_empty();
            if between_epochs && g.requests.is_empty() {
                // Nothing to wait for: answer at once.
                return Some(g);
            }
        }
        self.fill(&mut g).await;
        let gathered_nanos = gathering.elapsed().as_nanos() as u64;
        let stats = &self.stats;
        stats
            .gather_idle_nanos
            .fetch_add(idle_nanos, Ordering::Relaxed);
        stats
            .gather_fill_nanos
            .fetch_add(gathered_nanos - idle_nanos, Ordering::Relaxed);
        Some(g)
    }

    /// Takes in submissions until the epoch closes: `epoch_duration` after it began, at
    /// `epoch_txns_max` requests, once it holds half of the requests outstanding
    /// (`RuntimeConfig::epoch_split_txns`), or on a quiet queue once it holds enough
    /// (`RuntimeConfig::epoch_quiet_close_txns`).
    async fn fill(&mut self, g: &mut Gathered<A>) {
        let max = self.config.epoch_txns_max;
        let deadline = tokio::time::Instant::now() + self.config.epoch_duration;
        let quiet_min = match self.config.epoch_quiet_close_txns {
            0 => usize::MAX,
            min => min.max(self.last_epoch_txns),
        };
        // A turn of several epoch durations leaves the clients' round trip a small share of
        // the cycle: splitting would only add per-epoch costs, and make each request wait for
        // the turn running when it comes (the marketplace: a 17 ms turn, p99 up a fifth).
        let long_turn = self.last_turn > self.config.epoch_duration * limits::EPOCH_SPLIT_TURNS_MAX;
        let split_min = match self.config.epoch_split_txns {
            0 => usize::MAX,
            _ if long_turn => usize::MAX,
            min => min,
        };
        while !g.closed && g.requests.len() < max {
            if g.requests.len() >= split_min && self.holds_half_outstanding(g, split_min) {
                self.stats.split_closes.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let room = max - g.requests.len();
            match self.rx.try_recv() {
                Ok(sub) => g.take(sub, room, &self.dedup, &mut self.inflight, &mut self.carry),
                Err(mpsc::error::TryRecvError::Disconnected) => g.closed = true,
                Err(mpsc::error::TryRecvError::Empty) if g.requests.len() >= quiet_min => {
                    match self.wait_briefly().await {
                        Some(sub) => {
                            g.take(sub, room, &self.dedup, &mut self.inflight, &mut self.carry)
                        }
                        None => {
                            self.stats.quiet_closes.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    let waiting = Instant::now();
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(sub)) => {
                            g.take(sub, room, &self.dedup, &mut self.inflight, &mut self.carry)
                        }
                        Ok(None) => g.closed = true,
                        Err(_) => {
                            // Nothing came since `waiting`: the epoch's idle tail.
                            let tail = waiting.elapsed().as_nanos() as u64;
                            self.stats
                                .gather_tail_nanos
                                .fetch_add(tail, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Whether `g` holds at least as many requests as are outstanding elsewhere, and those are
    /// at least `split_min` too: replies of earlier epochs not yet released, the carried-over
    /// rest of a batch, and the submissions queued (a lower bound: a batch or a query counts
    /// once, and clients add more at any time). Closing the epoch then splits a closed loop's
    /// clients over two epochs that overlap: while the sequencer runs one, the other's
    /// clients get their replies and come back, instead of every client waiting on the same
    /// epoch and the sequencer waiting on every client. With fewer than `split_min` elsewhere
    /// (the clients come back slower than the sequencer takes them in, or are few) the epoch
    /// stays open, so it is never cut into pieces below the floor, and the quiet close decides.
    fn holds_half_outstanding(&self, g: &Gathered<A>, split_min: usize) -> bool {
        let elsewhere = self.stats.replies_waiting.load(Ordering::Relaxed)
            + self.carry.len()
            + self.rx.queued();
        elsewhere >= split_min && g.requests.len() >= elsewhere
    }

    /// The next submission if one arrives while the sequencer yields to its worker's other
    /// tasks `limits::EPOCH_QUIET_YIELDS` times; `None` when the queue stayed quiet (or every
    /// client is gone, which the next `try_recv` sees).
    async fn wait_briefly(&mut self) -> Option<Submission<A>> {
        for _ in 0..limits::EPOCH_QUIET_YIELDS {
            tokio::task::yield_now().await;
            if let Ok(sub) = self.rx.try_recv() {
                return Some(sub);
            }
        }
        None
    }

    /// Sequences, logs and runs what was gathered, then queues its replies (and a checkpoint
    /// if one falls due, or the next step of the one being copied); `turn` gets where the time
    /// went.
    async fn run_gathered(
        &mut self,
        g: Gathered<A>,
        turn: &mut EpochPeak,
        copying: &mut Option<CheckpointCopying>,
    ) {
        let Gathered {
            requests,
            pending,
            queries,
            answered,
            conflict_stats,
            state_hashes,
            forgets,
            ..
        } = g;
        for (subject, reply) in forgets {
            let _ = reply.send(super::forget::forget(self, copying, &subject).await);
        }
        if !conflict_stats.is_empty() {
            let stats = gather_conflict_stats(self).await;
            for reply in conflict_stats {
                let _ = reply.send(stats.clone());
            }
        }
        if !state_hashes.is_empty() {
            let hash = gather_state_hash(self).await;
            for reply in state_hashes {
                let _ = reply.send(hash.clone());
            }
        }
        let queries = self.refuse_remote_queries(queries);
        let answered_replies =
            |answered: Vec<(TxnReply<A>, _)>| answered.into_iter().map(|(r, _)| r);
        let failure = self.durable.failure().map(|f| f.message().to_string());
        if let Some(failure) = failure {
            let queries = queries.into_iter().map(|(_, r)| r);
            let replies = answered_replies(answered);
            return fail_all(pending, replies, queries, &mut self.inflight, &failure);
        }
        if requests.is_empty() && queries.is_empty() {
            if !answered.is_empty() {
                // Duplicates only: answer once the last executed epoch is durable.
                self.reply_tx.send(ReplyBatch {
                    epoch: self.epoch,
                    outbox: Vec::new(),
                    txns: answered,
                    queries: Vec::new(),
                });
            }
            return;
        }
        self.last_epoch_txns = requests.len();
        let env = self.next_epoch(requests);
        (turn.epoch, turn.timestamp_ms) = (env.epoch, env.timestamp_ms);
        turn.txns = env.requests.len() as u64;
        let (jobs, query_replies): (Vec<QueryJob>, Vec<QueryReply>) = queries.into_iter().unzip();
        let queueing = Instant::now();
        let queued = self
            .log_tx
            .send(LogItem::Epoch(env.clone(), queueing))
            .await;
        turn.log_queue_nanos = queueing.elapsed().as_nanos() as u64;
        if queued.is_err() {
            let why = "the durability thread stopped";
            let replies = answered_replies(answered);
            return fail_all(pending, replies, query_replies, &mut self.inflight, why);
        }
        let mut pending = pending;
        let mut early = EarlyReplies {
            env: &env,
            pending: &mut pending,
            reply_tx: &self.reply_tx,
            txns: Vec::new(),
        };
        let early = self
            .config
            .early_replies
            .then_some(&mut early as &mut dyn EarlySettle<_>);
        let commit_after = self.partitions_elsewhere.then_some(&*self.durable);
        let running = run_epoch_settling(
            &self.app,
            &self.actors,
            env.clone(),
            jobs,
            early,
            commit_after,
        );
        let outcome = match running.await {
            Ok(o) => o,
            Err(e) => {
                // The epoch is (or will be) in the log and replay would apply it whole, while
                // here it may be half done: stop accepting writes, as for a storage failure.
                tracing::error!(epoch = self.epoch, error = %e, "epoch failed; refusing further writes");
                self.durable
                    .fail(format!("epoch {} failed: {e}", self.epoch));
                let replies = answered_replies(answered);
                let why = e.to_string();
                // A query learns what failed (a node that did not answer: `NodeFailed`).
                for reply in query_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return fail_all(pending, replies, [], &mut self.inflight, &why);
            }
        };
        turn.phase_nanos = outcome.stats.phase_nanos;
        self.reply_after_epoch(&env, outcome, pending, answered, query_replies);
        let due = || {
            // A cluster's failover replays the log since the latest checkpoint: it keeps
            // them as frequent as its epochs say.
            let rest_factor = match self.config.cluster {
                Some(_) => 0,
                None => self.config.checkpoint_rest_factor,
            };
            self.checkpoint_schedule.due(
                self.epoch,
                self.config.checkpoint_every_epochs,
                rest_factor,
            )
        };
        if copying.is_some() || due() {
            let taking = Instant::now();
            // A cluster's epochs are several times longer than one process's (each waits for
            // the store's append and the nodes' answers), so a copy spread over as many epochs
            // would take seconds, and the latest complete checkpoint trail the log by as much:
            // there it takes a few steps an epoch (each its share of the rows, as one).
            let steps = match self.actors.is_cluster() {
                true => limits::CLUSTER_CHECKPOINT_STEPS_PER_EPOCH,
                false => 1,
            };
            for _ in 0..steps {
                match checkpoint_step(self, copying).await {
                    Ok(n_chunks) => turn.checkpoint_take_chunks += n_chunks as u64,
                    Err(e) => {
                        self.abandon_checkpoint(copying, &e);
                        break;
                    }
                }
                if copying.is_none() {
                    break;
                }
            }
            turn.checkpoint_take_nanos = taking.elapsed().as_nanos() as u64;
        }
    }

    /// A checkpoint step failed (a node did not answer, or its answer was refused).
    /// The partitions that did answer have handed their rows over and no longer track them, so
    /// finishing this checkpoint, or retrying the step, would write a checkpoint without them and
    /// truncate the log that still holds them. Stop accepting writes instead, as for a failed
    /// epoch: the log is intact, and the runtime that replaces this one recovers from it.
    fn abandon_checkpoint(&mut self, copying: &mut Option<CheckpointCopying>, e: &TxnError) {
        tracing::error!(epoch = self.epoch, error = %e, "checkpoint failed; refusing further writes");
        self.durable.fail(format!(
            "the checkpoint step of epoch {} failed: {e}",
            self.epoch
        ));
        *copying = None;
        self.checkpoint_schedule
            .in_flight
            .store(false, Ordering::Release);
        self.checkpoint_schedule.idle.notify_one();
    }

    /// Numbers the next epoch and stamps it with a timestamp that never goes backwards.
    pub(super) fn next_epoch(
        &mut self,
        requests: Vec<Sequenced<A::Event>>,
    ) -> Arc<EpochEnv<A::Event>> {
        let previous = (self.epoch, self.last_timestamp_ms);
        self.epoch += 1;
        self.last_timestamp_ms = self.last_timestamp_ms.max(now_ms());
        // Replay relies on both: epochs strictly increase, and so do (weakly) their clocks.
        debug_assert!(self.epoch > previous.0 && self.last_timestamp_ms >= previous.1);
        let serial = if self.config.fallback != Fallback::NextEpoch {
            let hints = self.predictor.hints::<A>(&requests);
            let flips = self.predictor.take_flips();
            if flips > 0 {
                self.stats
                    .serial_hint_flips
                    .fetch_add(flips, std::sync::atomic::Ordering::Relaxed);
            }
            hints
        } else {
            Vec::new()
        };
        Arc::new(EpochEnv {
            epoch: self.epoch,
            timestamp_ms: self.last_timestamp_ms,
            requests,
            serial,
            fallback: self.config.fallback,
        })
    }

    /// Settles every request of the epoch just run (queueing its losers for retry) and hands
    /// the replies to the reply stage, which releases them once the epoch is durable.
    fn reply_after_epoch(
        &mut self,
        env: &EpochEnv<A::Event>,
        outcome: EpochOutcome<A>,
        pending: Vec<PendingTxn<A>>,
        mut answered: Vec<(TxnReply<A>, Outcome<A::Output>)>,
        query_replies: Vec<QueryReply>,
    ) {
        self.stats.add(&outcome.stats);
        self.predictor
            .observe::<A>(&env.requests, &env.serial, &outcome.results);
        let mut txns = Vec::with_capacity(pending.len() + answered.len());
        for (seq, (result, p)) in outcome.results.into_iter().zip(pending).enumerate() {
            self.settle_one(env, seq, result, p, &mut txns);
        }
        txns.append(&mut answered);
        let queries = query_replies
            .into_iter()
            .zip(outcome.query_results)
            .collect();
        self.reply_tx.send(ReplyBatch {
            epoch: env.epoch,
            outbox: outcome.outbox,
            txns,
            queries,
        });
    }

    /// Settles request `seq` of `env`: a retry goes back in the queue; a final outcome goes into
    /// the dedup window and to the request's reply and every duplicate waiting on it.
    fn settle_one(
        &mut self,
        env: &EpochEnv<A::Event>,
        seq: usize,
        result: TxnResult<A::Output>,
        p: PendingTxn<A>,
        txns: &mut Vec<(TxnReply<A>, Outcome<A::Output>)>,
    ) {
        let req = &env.requests[seq];
        match settle(env.epoch, env.timestamp_ms, seq, result, req.retries) {
            Settled::Retry => self.retry_queue.push((
                Sequenced {
                    target: req.target,
                    event: req.event.clone(),
                    id: req.id,
                    retries: req.retries + 1,
                },
                p,
            )),
            Settled::Final(outcome) => {
                if let Some(id) = req.id {
                    self.dedup
                        .record(id, p.digest, env.epoch, &outcome, !p.fresh);
                    if !p.fresh {
                        let (_, waiters) = self.inflight.remove(&id).unwrap_or_default();
                        for waiter in waiters {
                            txns.push((waiter, outcome.clone()));
                        }
                    }
                }
                if let Some(reply) = p.reply {
                    txns.push((reply, outcome));
                }
            }
        }
    }
}

/// Hands each outcome the epoch driver settles to the reply stage ahead of the epoch's end
/// (`EarlySettle`), so the clients of the serial pass's first transactions come back while it
/// runs the rest. The dedup window still records every outcome after the epoch, in seq order
/// (`Sequencer::settle_one`), as replay does.
struct EarlyReplies<'e, A: App> {
    env: &'e EpochEnv<A::Event>,
    pending: &'e mut [PendingTxn<A>],
    reply_tx: &'e ReplySender<A>,
    /// Outcomes settled since the last flush.
    txns: Vec<(TxnReply<A>, Outcome<A::Output>)>,
}

impl<A: App> EarlySettle<A::Output> for EarlyReplies<'_, A> {
    fn settled(&mut self, seq: crate::ids::Seq, result: &TxnResult<A::Output>) {
        let result = match result {
            TxnResult::Committed { pass, output } => TxnResult::Committed {
                pass: *pass,
                output: output.clone(),
            },
            TxnResult::Aborted { pass, reason } => TxnResult::Aborted {
                pass: *pass,
                reason: reason.clone(),
            },
            TxnResult::Retry => return,
        };
        let Some(reply) = self.pending[seq as usize].reply.take() else {
            return;
        };
        let (epoch, timestamp_ms) = (self.env.epoch, self.env.timestamp_ms);
        let retries = self.env.requests[seq as usize].retries;
        // A committed or aborted result is always final.
        if let Settled::Final(outcome) = settle(epoch, timestamp_ms, seq as usize, result, retries)
        {
            self.txns.push((reply, outcome));
        }
    }

    fn flush(&mut self, outbox: &mut Vec<OutboxMsg>) {
        if self.txns.is_empty() && outbox.is_empty() {
            return;
        }
        self.reply_tx.send(ReplyBatch {
            epoch: self.env.epoch,
            outbox: std::mem::take(outbox),
            // Sized for the serial pass's groups, so filling the next one allocates once.
            txns: std::mem::replace(
                &mut self.txns,
                Vec::with_capacity(limits::SERIAL_PASS_SETTLE_TXNS),
            ),
            queries: Vec::new(),
        });
    }
}

/// Asks every partition for its tables' conflict losses (one message each; between epochs, so
/// no state is lent) and adds them up.
async fn gather_conflict_stats<A: App>(s: &Sequencer<A>) -> Result<ConflictStats, TxnError> {
    let all: Vec<GlobalPartition> = (0..s.app.n_global).collect();
    let tallies = run_phase(&s.actors, &all, |_, reply| Job::ConflictTally { reply }).await?;
    let mut out = ConflictStats::default();
    for (name, tally) in tallies.into_iter().flatten() {
        out.add(name, tally.losers, &tally.hot_keys);
    }
    Ok(out)
}

/// Hashes every partition's committed rows (one message each, between epochs) and combines
/// them in partition order, as `Client::state_hash`'s query does.
async fn gather_state_hash<A: App>(s: &Sequencer<A>) -> Result<u64, TxnError> {
    let all: Vec<GlobalPartition> = (0..s.app.n_global).collect();
    let marks = run_phase(&s.actors, &all, |_, reply| Job::StateHash { reply }).await?;
    Ok(crate::serial::combine_hashes(
        marks.into_iter().map(|m| m.hash),
    ))
}

impl<A: App> Sequencer<A> {
    /// Answers the closure queries that name another node's partition with
    /// `TxnError::QueryNotLocal` (a closure cannot travel) and keeps the others; named queries
    /// travel by name in the wave-0 batches (`ClusterDispatch`).
    fn refuse_remote_queries(
        &self,
        queries: Vec<(QueryJob, QueryReply)>,
    ) -> Vec<(QueryJob, QueryReply)> {
        if !self.actors.is_cluster() {
            return queries;
        }
        let mut kept = Vec::with_capacity(queries.len());
        for (job, reply) in queries {
            if job.f.named.is_some() {
                kept.push((job, reply));
                continue;
            }
            let remote = job
                .targets
                .iter()
                .find_map(|gp| Some((*gp, self.actors.remote_node(*gp)?)));
            let Some((gp, node)) = remote else {
                kept.push((job, reply));
                continue;
            };
            let (service_idx, partition) = self.app.locate(gp);
            let _ = reply.send(Err(TxnError::QueryNotLocal {
                service: self.app.services[service_idx as usize].name.clone(),
                partition,
                node: node.to_string(),
            }));
        }
        kept
    }
}

/// A checkpoint whose rows the partitions are still copying, a bounded number per epoch each
/// (`Job::CheckpointStep`): its epoch, the rows received so far, and the partitions not done
/// (still copying, or, on another node, still sending their rows in shares).
pub(super) struct CheckpointCopying {
    epoch: u64,
    /// The epoch's logged time (bounded history retention by duration needs it).
    timestamp_ms: u64,
    rows: Vec<DeferredRows>,
    copying: Vec<GlobalPartition>,
    /// When the copy began, and in how many steps it went (reported when it is queued).
    began: Instant,
    steps: u32,
}

/// A node's failure of a checkpoint step, naming the checkpoint's epoch instead of the epoch of
/// the last wave the dispatch sent that node (which may be many epochs older).
fn naming_checkpoint(e: TxnError, checkpoint_epoch: u64) -> TxnError {
    match e {
        TxnError::NodeFailed {
            node,
            phase,
            reason,
            ..
        } => TxnError::NodeFailed {
            node,
            phase,
            epoch: checkpoint_epoch,
            reason,
        },
        e => e,
    }
}

/// Begins a checkpoint as of the epoch just run (no row is copied yet, the dedup window's
/// changes are taken now) or continues the one being copied: each partition still copying
/// copies its next rows (one message each, in parallel). Once all are done, queues the rows
/// behind the latest epoch's log record; their epoch's record was queued before. Returns how
/// many deferred chunks it queued.
pub(super) async fn checkpoint_step<A: App>(
    s: &mut Sequencer<A>,
    copying: &mut Option<CheckpointCopying>,
) -> Result<usize, TxnError> {
    let begin = copying.is_none();
    let c = copying.get_or_insert_with(|| {
        let dedup_rows = s.dedup.drain_checkpoint_rows();
        let rows: Vec<DeferredRows> = vec![Box::new(move |out: &mut Vec<CheckpointRow>| {
            out.extend(dedup_rows)
        })];
        // One checkpoint in flight at a time: the schedule only falls due when none is.
        let was_in_flight = s.checkpoint_schedule.in_flight.swap(true, Ordering::AcqRel);
        debug_assert!(
            !was_in_flight,
            "a second checkpoint began while one is in flight"
        );
        CheckpointCopying {
            epoch: s.epoch,
            timestamp_ms: s.last_timestamp_ms,
            rows,
            copying: (0..s.app.n_global).collect(),
            began: Instant::now(),
            steps: 0,
        }
    });
    c.steps += 1;
    let parts = run_phase(&s.actors, &c.copying, |_, reply| Job::CheckpointStep {
        begin,
        reply,
    })
    .await
    .map_err(|e| naming_checkpoint(e, c.epoch))?;
    s.stats
        .checkpoint_copy_steps
        .fetch_add(1, Ordering::Relaxed);
    // A partition on another node may send its rows over several steps: it is done with its
    // last share, and every share is kept, each row once.
    let mut still_copying = Vec::new();
    for (gp, share) in c.copying.iter().zip(parts) {
        c.rows.extend(share.rows);
        if !share.done {
            still_copying.push(*gp);
        }
    }
    c.copying = still_copying;
    if !c.copying.is_empty() {
        return Ok(0);
    }
    let CheckpointCopying {
        epoch,
        timestamp_ms,
        rows,
        began,
        steps,
        ..
    } = copying.take().expect("a checkpoint is copied");
    let n_chunks = rows.len();
    tracing::debug!(
        epoch,
        steps,
        chunks = n_chunks,
        epochs_since = s.epoch - epoch,
        seconds = began.elapsed().as_secs_f64(),
        "checkpoint copied; queued for writing"
    );
    s.log_tx
        .send(LogItem::Checkpoint {
            epoch,
            timestamp_ms,
            rows,
        })
        .await
        .map_err(|_| TxnError::Storage("the durability thread stopped".into()))?;
    Ok(n_chunks)
}

/// Answers every waiter of a batch that will not run with the storage error `why`.
fn fail_all<A: App>(
    pending: Vec<PendingTxn<A>>,
    answered: impl IntoIterator<Item = TxnReply<A>>,
    queries: impl IntoIterator<Item = QueryReply>,
    inflight: &mut InFlight<A>,
    why: &str,
) {
    let error = || TxnError::Storage(why.to_string());
    for p in pending {
        let (_, waiters) = p.id.and_then(|id| inflight.remove(&id)).unwrap_or_default();
        for waiter in waiters {
            waiter.send(Err(error()));
        }
        if let Some(reply) = p.reply {
            reply.send(Err(error()));
        }
    }
    for reply in answered {
        reply.send(Err(error()));
    }
    for reply in queries {
        let _ = reply.send(Err(error()));
    }
}
