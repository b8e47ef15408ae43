//! [`PartitionHost`]: the serving side of a cluster runtime. A node that does not drive epochs
//! holds the partitions the placement gives it, as partition actors like the driver's own, and
//! answers each `PhaseBatch` from the driver (`cluster_dispatch.rs`) by running every job of it
//! on its actors and encoding one `PhaseReply`.
//!
//! The epoch's logged batch (`EpochEnv`) comes with the first wave or fallback batch of the
//! epoch sent to this node; the host keeps it for the later waves and fallback rounds of that
//! epoch, whose inbound steps read their event from it.
//!
//! A checkpoint copy step's answer is bounded: the rows of the partitions that have copied all
//! theirs wait here and go out in shares of at most the batch's `answer_bytes_max`, over as
//! many steps as they need, so no answer exceeds the link's payload limit.
//!
//! Named queries come with the wave-0 batch by name and argument bytes: each partition runs
//! them from the application's registered queries before the wave's steps, so they read the
//! state committed by the previous epoch, and their encoded parts go back with the reply.

use crate::app::{App, AppDef};
use crate::bitset::SeqSet;
use crate::envelope::EpochEnv;
use crate::epoch::{Dispatch, run_phase};
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::partition::WaveOut;
use crate::partition::{Job, PartitionState};
use crate::query::{NamedCall, NamedPart, QueryFn};
use crate::sync::{AtomicSeqSet, Depositor};
use crate::transport::PartitionActors;
use crate::wire::{
    LoadRow, Phase, PhaseBatch, PhaseReply, PhaseResult, PhaseWork, QueryAnswer, WireAnswer,
    WireQuery, WireRow, WireShare, take_share, wire_rows,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The partitions of one node, answering the epoch driver's phase batches.
pub struct PartitionHost<A: App> {
    app: Arc<AppDef<A>>,
    node: String,
    actors: PartitionActors<A>,
    /// Per global partition: whether this node holds it.
    held: Vec<bool>,
    /// The logged batch of the epoch being run, for its later waves and fallback rounds.
    env: parking_lot::Mutex<Option<Arc<EpochEnv<A::Event>>>>,
    /// The rows of the checkpoint being taken of the partitions done copying them, not sent
    /// yet (checkpoint steps answer in bounded shares).
    checkpoint_rows: parking_lot::Mutex<BTreeMap<GlobalPartition, VecDeque<WireRow>>>,
    /// Per global partition: the rows recovery sent it, loaded from a checkpoint and applied
    /// from a replay (`RECEIVED_LOADED`, `RECEIVED_APPLIED`).
    received: Vec<[AtomicU64; 2]>,
    /// Per global partition: the placement before gave it to this node and this one gives it
    /// to another; its rows wait in `checkpoint_rows` until the new runtime takes them (a
    /// hand-over reads them with checkpoint steps that do not begin a checkpoint).
    leaving: Vec<bool>,
    /// The partitions copying a checkpoint (begun, their last rows not copied yet): a
    /// re-placement cannot take their changed rows apart from the copy.
    copying: parking_lot::Mutex<BTreeSet<GlobalPartition>>,
}

/// Index of the rows loaded from a checkpoint in `PartitionHost::received`.
const RECEIVED_LOADED: usize = 0;
/// Index of the replayed rows applied in `PartitionHost::received`.
const RECEIVED_APPLIED: usize = 1;

impl<A: App> PartitionHost<A> {
    /// Starts the partition actors of node `node`: the partitions `owners` (one node name per
    /// global partition, e.g. from `txn::cluster::place_partitions`) gives it, with empty
    /// states (the driver's recovery loads them). They remember changed rows for checkpoints.
    pub fn start(app: Arc<AppDef<A>>, node: &str, owners: &[String]) -> Result<Self, TxnError> {
        if owners.len() != app.n_global as usize {
            return Err(TxnError::InvalidApp(vec![format!(
                "the placement names {} partitions, but the application has {}",
                owners.len(),
                app.n_global
            )]));
        }
        let held = owners.iter().map(|owner| owner == node).collect();
        let actors = PartitionActors::start(app.clone(), true)?;
        Ok(PartitionHost {
            app,
            node: node.to_string(),
            actors,
            held,
            env: parking_lot::Mutex::new(None),
            checkpoint_rows: parking_lot::Mutex::new(BTreeMap::new()),
            received: owners.iter().map(|_| Default::default()).collect(),
            leaving: vec![false; owners.len()],
            copying: parking_lot::Mutex::new(BTreeSet::new()),
        })
    }

    /// The host of a new placement, `owners`, on the same node, for a new runtime (a take-over
    /// or a re-placement): every partition this host holds and `owners` leaves on this node
    /// keeps its state, moved over without copying (a lend, then a return) and readied for the
    /// new runtime ([`settle_keeping_deletions`]: the epoch in progress and any checkpoint copy
    /// forgotten, every row listed for the next checkpoint, and the rows deleted since the last
    /// checkpoint copy began still listed); every other partition starts empty. The new
    /// runtime's recovery finds the kept partitions by their state hash, loads nothing into them
    /// and checks that they equal its replay of the log.
    ///
    /// Each partition this host holds and `owners` gives to another node is readied the same
    /// way, then its listed rows (every live row, and the deletions) are encoded and wait for
    /// the new runtime: a hand-over without replay (`Runtime::start_handed_over`) reads them
    /// with checkpoint steps that do not begin a checkpoint and applies them on the new owner;
    /// the first checkpoint that begins drops what is left. Stop this host afterwards.
    pub async fn re_place(&self, owners: &[String]) -> Result<Self, TxnError> {
        let mut next = PartitionHost::start(self.app.clone(), &self.node, owners)?;
        let held: Vec<GlobalPartition> = (0..self.app.n_global)
            .filter(|gp| self.held[*gp as usize])
            .collect();
        if held.is_empty() {
            return Ok(next);
        }
        let kept: Vec<GlobalPartition> = held
            .iter()
            .copied()
            .filter(|gp| next.held[*gp as usize])
            .collect();
        let states = run_phase(&self.actors, &held, |_, reply| Job::Lend { reply }).await?;
        // The new actors' empty states are lent away and dropped, so that they take the kept
        // ones back in their place.
        run_phase(&next.actors, &kept, |_, reply| Job::Lend { reply }).await?;
        let copying = std::mem::take(&mut *self.copying.lock());
        let mut leaving_rows = BTreeMap::new();
        for mut state in states {
            let gp = state.gp;
            let stays = next.held[gp as usize];
            let mid_copy = copying.contains(&gp);
            // Every row is visited: beside the async workers.
            let readied = tokio::task::spawn_blocking(move || {
                settle_keeping_deletions(&mut state, mid_copy);
                match stays {
                    true => (Some(state), Vec::new()),
                    false => (None, wire_rows(state.drain_checkpoint_rows())),
                }
            })
            .await
            .map_err(|e| TxnError::Actor(format!("readying partition {gp} stopped: {e}")))?;
            match readied {
                (Some(state), _) => next.actors.dispatch(gp, Job::Return { state }).await?,
                (None, rows) => {
                    next.leaving[gp as usize] = true;
                    leaving_rows.insert(gp, VecDeque::from(rows));
                }
            }
        }
        *next.checkpoint_rows.get_mut() = leaving_rows;
        Ok(next)
    }

    /// The rows recovery sent partition `gp` on this node: loaded from a checkpoint, and
    /// applied from the driver's replay of the log.
    pub fn rows_received(&self, gp: GlobalPartition) -> (u64, u64) {
        let received = &self.received[gp as usize];
        (
            received[RECEIVED_LOADED].load(Ordering::Relaxed),
            received[RECEIVED_APPLIED].load(Ordering::Relaxed),
        )
    }

    /// Counts the rows of `chunks` as received (`which`: loaded or applied).
    fn count_received<R>(&self, chunks: &[(GlobalPartition, Vec<R>)], which: usize) {
        for (gp, rows) in chunks {
            self.received[*gp as usize][which].fetch_add(rows.len() as u64, Ordering::Relaxed);
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Answers one encoded `PhaseBatch` with one encoded `PhaseReply` (a failure is a reply too,
    /// which names what went wrong). Install it as the node's link handler (`Cluster::serve`,
    /// `LoopbackLink::add_node`).
    pub async fn handle(&self, bytes: Vec<u8>) -> Vec<u8> {
        let batch = match PhaseBatch::<A>::decode(&bytes, self.app.n_global) {
            Ok(batch) => batch,
            Err(e) => return self.failed(0, Phase::StateHash, e.to_string()),
        };
        let (epoch, phase) = (batch.epoch, batch.phase());
        if let Some(gp) = batch
            .partitions()
            .into_iter()
            .find(|gp| !self.held[*gp as usize] && !self.leaving[*gp as usize])
        {
            let why = format!("partition {gp} is not placed on node {:?}", self.node);
            return self.failed(epoch, phase, why);
        }
        let result = match self.run(batch).await {
            Ok(result) => result,
            Err(e) => return self.failed(epoch, phase, e.to_string()),
        };
        let reply = PhaseReply {
            epoch,
            phase,
            result,
        };
        reply
            .encode()
            .unwrap_or_else(|e| self.failed(epoch, phase, e.to_string()))
    }

    /// Stops the partition actors.
    pub async fn stop(&self) {
        self.actors.stop().await;
    }

    fn failed(&self, epoch: u64, phase: Phase, message: String) -> Vec<u8> {
        tracing::error!(node = %self.node, epoch, %phase, %message, "phase batch failed");
        let reply = PhaseReply::<A> {
            epoch,
            phase,
            result: PhaseResult::Failed { message },
        };
        reply.encode().unwrap_or_default()
    }

    /// The epoch's logged batch: the one sent with this batch (kept for the epoch's later
    /// batches), else the one kept, which must be of the same epoch.
    fn epoch_env(
        &self,
        epoch: u64,
        sent: Option<Arc<EpochEnv<A::Event>>>,
    ) -> Result<Arc<EpochEnv<A::Event>>, TxnError> {
        let mut kept = self.env.lock();
        if let Some(env) = sent {
            *kept = Some(env);
        }
        match &*kept {
            Some(env) if env.epoch == epoch => Ok(env.clone()),
            other => Err(TxnError::Actor(format!(
                "node {:?} has no logged batch of epoch {epoch} (it has epoch {:?})",
                self.node,
                other.as_ref().map(|env| env.epoch)
            ))),
        }
    }

    /// Runs every job of `batch` on this node's partition actors.
    async fn run(&self, batch: PhaseBatch<A>) -> Result<PhaseResult<A>, TxnError> {
        let gps = batch.partitions();
        let actors = &self.actors;
        match batch.work {
            PhaseWork::Wave {
                env,
                steps,
                queries,
                ..
            } => {
                let env = self.epoch_env(batch.epoch, env)?;
                let mut queries = self.queries_by_partition(&gps, queries).into_iter();
                let mut steps = steps.into_iter().map(|(_, steps)| steps);
                let outs = run_phase(actors, &gps, |_, reply| Job::Wave {
                    env: env.clone(),
                    steps: steps.next().unwrap_or_default(),
                    queries: queries.next().unwrap_or_default(),
                    reply,
                })
                .await?;
                let mut outs: Vec<_> = gps.into_iter().zip(outs).collect();
                let answers = take_answers(&mut outs);
                Ok(PhaseResult::Wave { outs, answers })
            }
            PhaseWork::Fallback { env, jobs, .. } => {
                let env = self.epoch_env(batch.epoch, env)?;
                let mut jobs = jobs.into_iter().map(|(_, job)| job);
                let outs = run_phase(actors, &gps, |_, reply| {
                    let job = jobs.next().expect("one job per partition");
                    Job::Fallback {
                        env: env.clone(),
                        finish: job.finish,
                        begin: job.begin,
                        steps: job.steps,
                        reply,
                    }
                })
                .await?;
                let outs = gps.into_iter().zip(outs).collect();
                Ok(PhaseResult::Fallback { outs })
            }
            PhaseWork::Decide { user_aborted, .. } => {
                let n_txns = user_aborted.len();
                let user_aborted = Arc::new(user_aborted);
                let merged = Arc::new(AtomicSeqSet::with_capacity(n_txns));
                run_phase(actors, &gps, |_, reply| Job::Decide {
                    user_aborted: user_aborted.clone(),
                    conflicts: merged.clone(),
                    reply,
                })
                .await?;
                let conflicts = SeqSet::from_words(merged.snapshot(), n_txns);
                Ok(PhaseResult::Decide { conflicts })
            }
            PhaseWork::Commit { aborted, .. } => {
                let aborted = Arc::new(aborted);
                run_phase(actors, &gps, |_, reply| Job::Commit {
                    aborted: aborted.clone(),
                    reply,
                })
                .await?;
                Ok(PhaseResult::Commit)
            }
            work => self.run_between_epochs(gps, work).await,
        }
    }

    /// Each partition's named queries (`gps` ascending), in `idx` order, as the wave runs
    /// them; a name this node does not know answers `Failed` in every partition it names.
    fn queries_by_partition(
        &self,
        gps: &[GlobalPartition],
        queries: Vec<WireQuery>,
    ) -> Vec<Vec<(usize, QueryFn)>> {
        let mut per_partition: Vec<Vec<(usize, QueryFn)>> =
            gps.iter().map(|_| Vec::new()).collect();
        for WireQuery {
            idx,
            name,
            args,
            partitions,
        } in queries
        {
            let call = Arc::new(NamedCall { name, args });
            let f = self.app.queries.query_fn(call.clone()).unwrap_or_else(|| {
                let message = format!("node {:?} has no query named {:?}", self.node, call.name);
                unknown_query(call, message)
            });
            for gp in partitions {
                if let Ok(at) = gps.binary_search(&gp) {
                    per_partition[at].push((idx as usize, f.clone()));
                }
            }
        }
        per_partition
    }

    /// The jobs sent between epochs: checkpoint rows, recovery loading, counts and hashes.
    async fn run_between_epochs(
        &self,
        gps: Vec<GlobalPartition>,
        work: PhaseWork<A>,
    ) -> Result<PhaseResult<A>, TxnError> {
        let actors = &self.actors;
        match work {
            PhaseWork::CheckpointStep {
                begin,
                answer_bytes_max,
                ..
            } => self.checkpoint_step(gps, begin, answer_bytes_max).await,
            PhaseWork::Load { chunks } => {
                self.count_received(&chunks, RECEIVED_LOADED);
                let rows = |LoadRow(key, value)| (key, value);
                let loaded = run_chunks(actors, chunks, rows, |rows, reply| Job::Load {
                    rows,
                    reply,
                });
                Ok(PhaseResult::Load {
                    loaded: loaded.await?,
                })
            }
            PhaseWork::Apply { chunks } => {
                self.count_received(&chunks, RECEIVED_APPLIED);
                let rows = |WireRow(key, value)| (key, value);
                let applied = run_chunks(actors, chunks, rows, |rows, reply| Job::Apply {
                    rows,
                    reply,
                });
                Ok(PhaseResult::Apply {
                    applied: applied.await?,
                })
            }
            PhaseWork::ConflictTally { .. } => {
                let tallies =
                    run_phase(actors, &gps, |_, reply| Job::ConflictTally { reply }).await?;
                let tallies = gps.into_iter().zip(tallies).collect();
                Ok(PhaseResult::ConflictTally { tallies })
            }
            PhaseWork::StateHash { .. } => {
                let hashes = run_phase(actors, &gps, |_, reply| Job::StateHash { reply }).await?;
                let hashes = gps.into_iter().zip(hashes).collect();
                Ok(PhaseResult::StateHash { hashes })
            }
            PhaseWork::Wave { .. }
            | PhaseWork::Fallback { .. }
            | PhaseWork::Decide { .. }
            | PhaseWork::Commit { .. } => unreachable!("epoch phases are run by `run`"),
        }
    }
}

impl<A: App> PartitionHost<A> {
    /// One checkpoint copy step of partitions `gps`: those still copying copy their next rows
    /// (`begin`: of a new checkpoint, which drops what is left of an abandoned one); the rows of
    /// those done go out in one share of at most `answer_bytes_max` row bytes, in partition
    /// order, and the rest waits for the next steps. A partition is done with its last row.
    async fn checkpoint_step(
        &self,
        gps: Vec<GlobalPartition>,
        begin: bool,
        answer_bytes_max: u64,
    ) -> Result<PhaseResult<A>, TxnError> {
        let copying: Vec<GlobalPartition> = {
            let mut waiting = self.checkpoint_rows.lock();
            if begin {
                waiting.clear();
            }
            gps.iter()
                .copied()
                .filter(|gp| !waiting.contains_key(gp))
                .collect()
        };
        self.copying.lock().extend(copying.iter().copied());
        let shares = run_phase(&self.actors, &copying, |_, reply| Job::CheckpointStep {
            begin,
            reply,
        })
        .await?;
        let mut waiting = self.checkpoint_rows.lock();
        for (gp, share) in copying.into_iter().zip(shares) {
            if share.done {
                self.copying.lock().remove(&gp);
                waiting.insert(gp, wire_rows(share.rows).into());
            }
        }
        let (mut budget, mut first) = (answer_bytes_max, true);
        let mut answer = Vec::with_capacity(gps.len());
        for gp in gps {
            let Some(rows) = waiting.get_mut(&gp) else {
                let copying = WireShare {
                    rows: Vec::new(),
                    done: false,
                };
                answer.push((gp, copying));
                continue;
            };
            let rows = take_share(rows, &mut budget, &mut first);
            let done = waiting.get(&gp).is_some_and(VecDeque::is_empty);
            if done {
                waiting.remove(&gp);
            }
            answer.push((gp, WireShare { rows, done }));
        }
        Ok(PhaseResult::CheckpointStep { rows: answer })
    }
}

/// Hands each partition its chunk of rows, each row converted by `row`, in the job `make`
/// builds; each partition's answer, in the chunks' order.
async fn run_chunks<A: App, W, R>(
    actors: &PartitionActors<A>,
    chunks: Vec<(GlobalPartition, Vec<W>)>,
    row: impl Fn(W) -> R,
    make: impl Fn(Vec<R>, Depositor<Result<(), String>>) -> Job<A>,
) -> Result<Vec<(GlobalPartition, Result<(), String>)>, TxnError> {
    let gps: Vec<GlobalPartition> = chunks.iter().map(|(gp, _)| *gp).collect();
    let mut chunks = chunks.into_iter().map(|(_, rows)| rows);
    let answers = run_phase(actors, &gps, |_, reply| {
        let rows = chunks.next().unwrap_or_default();
        make(rows.into_iter().map(&row).collect(), reply)
    })
    .await?;
    Ok(gps.into_iter().zip(answers).collect())
}

/// A query that answers `message` as its failure in every partition (a name this node's
/// application did not register).
fn unknown_query(call: Arc<NamedCall>, message: String) -> QueryFn {
    QueryFn {
        run: Arc::new(move |_| Box::new(NamedPart::Err(message.clone()))),
        named: Some(call),
    }
}

/// Moves the named queries' parts out of the wave outputs into the reply's answers, by
/// partition, then `idx` (the order the driver checks).
fn take_answers<A: App>(outs: &mut [(GlobalPartition, WaveOut<A>)]) -> Vec<QueryAnswer> {
    let mut answers = Vec::new();
    for (partition, out) in outs {
        let start = answers.len();
        for (idx, part) in out.query_results.drain(..) {
            let answer = match part {
                Err(message) => WireAnswer::Panicked(message),
                Ok(part) => match part.downcast::<NamedPart>().map(|part| *part) {
                    Ok(Ok(bytes)) => WireAnswer::Part(bytes),
                    Ok(Err(message)) => WireAnswer::Failed(message),
                    Err(_) => WireAnswer::Failed("not a named query's part".to_string()),
                },
            };
            answers.push(QueryAnswer {
                partition: *partition,
                idx: idx as u32,
                answer,
            });
        }
        answers[start..].sort_by_key(|a| a.idx);
    }
    answers
}

/// Readies a partition kept from the runtime before for the next one
/// (`PartitionState::settle_for_take_over`: the epoch in progress and any checkpoint copy
/// forgotten, every live row listed for the next checkpoint) without losing the rows deleted
/// since the last checkpoint copy began: settling lists only live rows, and a deletion not
/// listed would never reach the store's checkpoints (they merge), so a recovery from them would
/// bring the row back. The deletions are listed again (a delete of an absent row), unless a
/// checkpoint copy was in progress (`mid_copy`: its rows cannot be taken apart from it) or
/// settling changed the state (a transaction running alone was undone, so a listed deletion
/// may be its own): both happen only when the runtime before did not stop cleanly, and then
/// recovery's replay lists every row changed since the last checkpoint anyway.
pub(crate) fn settle_keeping_deletions<A: App>(state: &mut PartitionState<A>, mid_copy: bool) {
    if mid_copy {
        state.settle_for_take_over();
        return;
    }
    let before = state.state_hash();
    settle_relisting_deletions(state, |state| state.state_hash() == before);
}

/// [`settle_keeping_deletions`] for a state known to be between two epochs (a recovery's
/// private copy after its replay): no transaction can be undone by settling, so the deletions
/// are listed again without hashing the partition before and after (two passes over every row).
pub(crate) fn settle_between_epochs_keeping_deletions<A: App>(state: &mut PartitionState<A>) {
    settle_relisting_deletions(state, |_| true);
}

/// Settles `state` for a take-over and lists the deletions it had listed again, if `unchanged`
/// says settling undid nothing.
fn settle_relisting_deletions<A: App>(
    state: &mut PartitionState<A>,
    unchanged: impl FnOnce(&PartitionState<A>) -> bool,
) {
    let mut deleted = Vec::new();
    for encode in state.drain_checkpoint_rows() {
        let mut rows = Vec::new();
        encode(&mut rows);
        deleted.extend(rows.into_iter().filter(|(_, value)| value.is_none()));
    }
    state.settle_for_take_over();
    if !deleted.is_empty() && unchanged(state) {
        state
            .apply_rows(&deleted)
            .expect("a row key the partition listed itself names its table");
    }
}
