//! [`ClusterDispatch`]: the epoch driver's `Dispatch` when partitions are spread over nodes.
//! Jobs for this node's partitions go to its partition actors at once, as with
//! `PartitionActors` alone; jobs for another node's partitions are buffered per node, their
//! `Depositor`s kept here, and `flush` (called once a phase's jobs are all dispatched) sends one
//! `PhaseBatch` per node, concurrently, and deposits each partition's result when its node's
//! reply comes. A decide reply carries the node's conflict losers, ORed into the phase's shared
//! set. A node that fails, answers wrongly or stays silent past the phase timeout fails the
//! phase with `TxnError::NodeFailed` naming it, never a hang. A checkpoint step asks each node
//! for at most `ClusterPlacement::checkpoint_answer_bytes_max` of rows per answer, and deposits
//! each partition's share as it comes.
//!
//! Named queries travel in the wave-0 batch, by name and argument bytes, and their encoded
//! parts come back with the wave's results. What cannot travel is refused with an error naming
//! it: the serial fallback's lend (a cluster runs `Fallback::Ordered`), and closure queries
//! (their closures stay on the asking node; the sequencer refuses one naming another node's
//! partition before it runs).

use crate::app::{App, AppDef};
use crate::envelope::EpochEnv;
use crate::epoch::Dispatch;
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::limits::{
    CHECKPOINT_ANSWER_BYTES_MAX_DEFAULT, CLUSTER_PHASE_TIMEOUT_MS_DEFAULT, PHASE_MESSAGE_BYTES_MAX,
};
use crate::node_link::NodeLink;
use crate::partition::{CheckpointShare, Job, StateMark, WaveOut};
use crate::query::{NamedPart, QueryFn, QueryPart};
use crate::row_key::DeferredRows;
use crate::sync::{AtomicSeqSet, Depositor};
use crate::table::ConflictTally;
use crate::transport::PartitionActors;
use crate::wire::{
    FallbackJob, LoadRow, Phase, PhaseBatch, PhaseReply, PhaseResult, PhaseWork, QueryAnswer,
    WireAnswer, WireQuery, WireRow, WireShare,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Where the partitions of a cluster runtime live, and how the driver reaches the other nodes
/// (`RuntimeConfig::cluster`).
#[derive(Clone)]
pub struct ClusterPlacement {
    /// The name of the node that runs the runtime (the driver).
    pub this_node: String,
    /// The node of each global partition, in order (e.g. `txn::cluster::place_partitions`).
    pub owners: Vec<String>,
    /// How the driver reaches the other nodes' `PartitionHost`s.
    pub link: Arc<dyn NodeLink>,
    /// Longest wait for one node's answer to one phase batch.
    pub phase_timeout: Duration,
    /// Most row bytes of a checkpoint one node's answer to one copy step carries (at most half
    /// the link's payload limit); a node sends the rest of its rows in the next steps.
    pub checkpoint_answer_bytes_max: usize,
}

impl ClusterPlacement {
    /// `owners` placed over the nodes, reached through `link`, with the default phase timeout.
    pub fn new(this_node: &str, owners: Vec<String>, link: Arc<dyn NodeLink>) -> Self {
        ClusterPlacement {
            this_node: this_node.to_string(),
            owners,
            link,
            phase_timeout: Duration::from_millis(CLUSTER_PHASE_TIMEOUT_MS_DEFAULT),
            checkpoint_answer_bytes_max: CHECKPOINT_ANSWER_BYTES_MAX_DEFAULT,
        }
    }
}

/// The phase traffic with one other node since the runtime started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTraffic {
    pub node: String,
    /// Encoded phase batches sent to it and replies received, in bytes.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Phase batches exchanged with it (one per phase it had work in, and per chunk loaded or
    /// question asked between epochs).
    pub batches: u64,
    /// Of those, the batches of an epoch's phases (waves, decide, commit, fallback rounds):
    /// recovery sends none, it replays the log on the driver.
    pub epoch_batches: u64,
    /// Wall time from sending its batches to having their replies, summed, in nanoseconds.
    pub reply_wait_nanos: u64,
}

/// The live counters behind [`NodeTraffic`], one entry per other node.
#[derive(Default)]
pub(crate) struct TrafficCounters {
    nodes: Vec<(String, [AtomicU64; 5])>,
}

impl TrafficCounters {
    fn record(&self, node: usize, phase: Phase, sent: usize, received: usize, waited: Duration) {
        let [
            bytes_sent,
            bytes_received,
            batches,
            wait_nanos,
            epoch_batches,
        ] = &self.nodes[node].1;
        if phase.is_epoch_phase() {
            epoch_batches.fetch_add(1, Ordering::Relaxed);
        }
        bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        bytes_received.fetch_add(received as u64, Ordering::Relaxed);
        batches.fetch_add(1, Ordering::Relaxed);
        wait_nanos.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn read(&self) -> Vec<NodeTraffic> {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        self.nodes
            .iter()
            .map(
                |(node, [sent, received, batches, waited, epoch_batches])| NodeTraffic {
                    node: node.clone(),
                    bytes_sent: read(sent),
                    bytes_received: read(received),
                    batches: read(batches),
                    epoch_batches: read(epoch_batches),
                    reply_wait_nanos: read(waited),
                },
            )
            .collect()
    }
}

/// The driver's dispatch over this node's actors and the other nodes' hosts.
pub(crate) struct ClusterDispatch<A: App> {
    app: Arc<AppDef<A>>,
    local: PartitionActors<A>,
    /// Per global partition: `None` on this node, else the index of its node in `nodes`.
    owner: Vec<Option<usize>>,
    /// The other nodes' names.
    nodes: Vec<String>,
    link: Arc<dyn NodeLink>,
    phase_timeout: Duration,
    /// `ClusterPlacement::checkpoint_answer_bytes_max`.
    checkpoint_answer_bytes_max: u64,
    buffer: parking_lot::Mutex<Buffer<A>>,
    traffic: Arc<TrafficCounters>,
}

/// The jobs waiting for the next flush, per other node, and what each node already has.
struct Buffer<A: App> {
    jobs: Vec<Vec<(GlobalPartition, Job<A>)>>,
    /// The epoch of the last wave or fallback job buffered (labels the batches after it).
    epoch: u64,
    /// Per node: the epoch whose logged batch it was sent (0: none).
    env_sent: Vec<u64>,
    /// Per node: the batches it was sent in the current epoch (numbers waves and rounds).
    batches_in_epoch: Vec<u32>,
}

impl<A: App> ClusterDispatch<A> {
    /// Checks `placement` against `app` and wraps this node's actors.
    pub fn new(
        app: Arc<AppDef<A>>,
        local: PartitionActors<A>,
        placement: &ClusterPlacement,
    ) -> Result<Self, TxnError> {
        if placement.owners.len() != app.n_global as usize {
            return Err(TxnError::InvalidApp(vec![format!(
                "the cluster placement names {} partitions, but the application has {}",
                placement.owners.len(),
                app.n_global
            )]));
        }
        let answer_bytes_max = placement.checkpoint_answer_bytes_max;
        if answer_bytes_max == 0 || answer_bytes_max > PHASE_MESSAGE_BYTES_MAX / 2 {
            return Err(TxnError::InvalidApp(vec![format!(
                "the cluster placement's checkpoint_answer_bytes_max is {answer_bytes_max}; it \
                 must be from 1 to half the phase message limit, {}",
                PHASE_MESSAGE_BYTES_MAX / 2
            )]));
        }
        let mut nodes: Vec<String> = Vec::new();
        let mut owner = Vec::with_capacity(placement.owners.len());
        for name in &placement.owners {
            if *name == placement.this_node {
                owner.push(None);
                continue;
            }
            let idx = match nodes.iter().position(|n| n == name) {
                Some(idx) => idx,
                None => {
                    nodes.push(name.clone());
                    nodes.len() - 1
                }
            };
            owner.push(Some(idx));
        }
        let traffic = TrafficCounters {
            nodes: nodes
                .iter()
                .map(|n| (n.clone(), Default::default()))
                .collect(),
        };
        let buffer = Buffer {
            jobs: nodes.iter().map(|_| Vec::new()).collect(),
            epoch: 0,
            env_sent: vec![0; nodes.len()],
            batches_in_epoch: vec![0; nodes.len()],
        };
        Ok(ClusterDispatch {
            app,
            local,
            owner,
            nodes,
            link: placement.link.clone(),
            phase_timeout: placement.phase_timeout,
            checkpoint_answer_bytes_max: answer_bytes_max as u64,
            buffer: parking_lot::Mutex::new(buffer),
            traffic: Arc::new(traffic),
        })
    }

    pub fn traffic(&self) -> Arc<TrafficCounters> {
        self.traffic.clone()
    }

    /// The node holding `gp`, if it is another node.
    pub fn remote_node(&self, gp: GlobalPartition) -> Option<&str> {
        let node = self.owner.get(gp as usize).copied().flatten()?;
        Some(&self.nodes[node])
    }

    /// Takes every buffered job and makes one batch per node that has some.
    fn take_batches(&self) -> Result<Vec<Exchange<A>>, TxnError> {
        let mut buffer = self.buffer.lock();
        let epoch = buffer.epoch;
        let mut exchanges = Vec::new();
        // Every node's buffer is emptied even after a refusal, so no job outlives its phase.
        let mut refused = None;
        for node in 0..self.nodes.len() {
            let mut jobs = std::mem::take(&mut buffer.jobs[node]);
            if jobs.is_empty() || refused.is_some() {
                continue;
            }
            jobs.sort_by_key(|(gp, _)| *gp);
            let number = buffer.batches_in_epoch[node];
            buffer.batches_in_epoch[node] += 1;
            let needs_env = buffer.env_sent[node] != epoch;
            let phase = phase_name(&jobs[0].1);
            match split_jobs(jobs, number, needs_env, self.checkpoint_answer_bytes_max) {
                Ok((work, deposits, env_sent)) => {
                    if env_sent {
                        buffer.env_sent[node] = epoch;
                    }
                    let batch = PhaseBatch { epoch, work };
                    exchanges.push(Exchange {
                        node,
                        batch,
                        deposits,
                    });
                }
                Err(reason) => {
                    refused = Some(TxnError::NodeFailed {
                        node: self.nodes[node].clone(),
                        phase: phase.to_string(),
                        epoch,
                        reason,
                    })
                }
            }
        }
        refused.map_or(Ok(exchanges), Err)
    }

    /// Sends one node its batch, waits for its reply (at most the phase timeout) and deposits
    /// the results.
    async fn exchange(&self, exchange: Exchange<A>) -> Result<(), TxnError> {
        let Exchange {
            node,
            batch,
            deposits,
        } = exchange;
        let name = &self.nodes[node];
        let sent = batch.sent(self.app.n_global);
        let fail = |reason: String| TxnError::NodeFailed {
            node: name.clone(),
            phase: sent.phase.to_string(),
            epoch: sent.epoch,
            reason,
        };
        let bytes = batch.encode().map_err(|e| fail(e.to_string()))?;
        drop(batch);
        let bytes_sent = bytes.len();
        let started = Instant::now();
        let reply = tokio::time::timeout(self.phase_timeout, self.link.request(name, bytes))
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.phase_timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        let waited = started.elapsed();
        self.traffic
            .record(node, sent.phase, bytes_sent, reply.len(), waited);
        tracing::debug!(
            node = %name,
            epoch = sent.epoch,
            phase = %sent.phase,
            bytes_sent,
            bytes_received = reply.len(),
            elapsed_us = waited.as_micros() as u64,
            "phase batch exchanged"
        );
        let reply = PhaseReply::<A>::decode(&reply, &sent).map_err(|e| fail(e.to_string()))?;
        deposits.deposit(reply.result).map_err(fail)
    }
}

impl<A: App> Dispatch<A> for ClusterDispatch<A> {
    async fn dispatch(&self, gp: GlobalPartition, job: Job<A>) -> Result<(), TxnError> {
        let Some(node) = self.owner.get(gp as usize).copied().flatten() else {
            return self.local.dispatch(gp, job).await;
        };
        let mut buffer = self.buffer.lock();
        if let Job::Wave { env, .. } | Job::Fallback { env, .. } = &job
            && env.epoch != buffer.epoch
        {
            buffer.epoch = env.epoch;
            buffer.batches_in_epoch.fill(0);
        }
        buffer.jobs[node].push((gp, job));
        Ok(())
    }

    async fn flush(&self) -> Result<(), TxnError> {
        let exchanges = self.take_batches()?;
        if exchanges.is_empty() {
            return Ok(());
        }
        let span = tracing::debug_span!("phase_flush", nodes = exchanges.len());
        let exchanges = exchanges.into_iter().map(|e| self.exchange(e));
        let results = futures::future::join_all(exchanges).instrument(span).await;
        results.into_iter().collect()
    }
}

/// One node's batch of one phase, and where its results go.
struct Exchange<A: App> {
    node: usize,
    batch: PhaseBatch<A>,
    deposits: Deposits<A>,
}

/// The depositors of a batch's jobs, in partition order.
enum Deposits<A: App> {
    Wave(Vec<Depositor<WaveOut<A>>>),
    Decide {
        conflicts: Arc<AtomicSeqSet>,
        replies: Vec<Depositor<()>>,
    },
    Commit(Vec<Depositor<()>>),
    CheckpointStep(Vec<Depositor<CheckpointShare>>),
    Fallback(Vec<Depositor<WaveOut<A>>>),
    Load(Vec<Depositor<Result<(), String>>>),
    ConflictTally(Vec<Depositor<Vec<(String, ConflictTally)>>>),
    StateHash(Vec<Depositor<StateMark>>),
    Apply(Vec<Depositor<Result<(), String>>>),
}

/// What a job is part of, for errors.
fn phase_name<A: App>(job: &Job<A>) -> &'static str {
    match job {
        Job::Wave { .. } => "wave",
        Job::Decide { .. } => "decide",
        Job::Commit { .. } => "commit",
        Job::Checkpoint { .. } => "checkpoint",
        Job::CheckpointStep { .. } => "checkpoint step",
        Job::Fallback { .. } => "fallback round",
        Job::Lend { .. } | Job::Return { .. } => "serial fallback lend",
        Job::Load { .. } => "checkpoint load",
        Job::ConflictTally { .. } => "conflict tally",
        Job::StateHash { .. } => "state hash",
        Job::Apply { .. } => "replayed rows",
        Job::Erase { .. } => "erasure",
        #[cfg(test)]
        Job::Crash => "crash",
    }
}

/// Why a job cannot go to another node.
fn cannot_travel<A: App>(gp: GlobalPartition, job: &Job<A>) -> String {
    match job {
        Job::Lend { .. } | Job::Return { .. } => format!(
            "the serial fallback (Fallback::Serial) lends every partition to the driver, which \
             cannot reach partition {gp} on another node: a cluster runs Fallback::Ordered (an \
             epoch logged with Fallback::Serial replays only in one process)"
        ),
        Job::Erase { .. } => format!(
            "live erasure (Client::forget) reaches only the driver's own partitions, and \
             partition {gp} is on another node: erase a stopped store with forget_dir"
        ),
        Job::Checkpoint { .. } => format!(
            "partition {gp} on another node was asked for an all-at-once checkpoint copy, which \
             only runs locally (offline erasure): a runtime copies checkpoints over epochs \
             (Job::CheckpointStep)"
        ),
        Job::Wave { .. } => format!(
            "a closure query was sent to partition {gp} on another node: closure queries run \
             only on the driver's partitions (register it with AppBuilder::query to call it by \
             name)"
        ),
        _ => format!("partition {gp}'s batch mixes jobs of different phases"),
    }
}

/// Splits one node's jobs (sorted by partition) into the batch's work and its depositors;
/// also says whether the epoch's logged batch went with it (`needs_env`: the node lacks it).
/// A checkpoint step asks for at most `answer_bytes_max` row bytes.
fn split_jobs<A: App>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    number: u32,
    needs_env: bool,
    answer_bytes_max: u64,
) -> Result<(PhaseWork<A>, Deposits<A>, bool), String> {
    match &jobs[0].1 {
        Job::Wave { .. } => split_waves(jobs, number, needs_env),
        Job::Fallback { .. } => split_fallback(jobs, number, needs_env),
        Job::Decide { conflicts, .. } => {
            let conflicts = conflicts.clone();
            let mut user_aborted = None;
            let (partitions, replies) = split_each(jobs, |gp, job| match job {
                Job::Decide {
                    user_aborted: set,
                    reply,
                    ..
                } => {
                    user_aborted.get_or_insert(set);
                    Ok(reply)
                }
                job => Err(cannot_travel(gp, &job)),
            })?;
            let user_aborted = Arc::unwrap_or_clone(user_aborted.expect("one job at least"));
            let work = PhaseWork::Decide {
                user_aborted,
                partitions,
            };
            Ok((work, Deposits::Decide { conflicts, replies }, false))
        }
        Job::Commit { aborted, .. } => {
            let aborted = (**aborted).clone();
            let (partitions, replies) = split_each(jobs, |gp, job| match job {
                Job::Commit { reply, .. } => Ok(reply),
                job => Err(cannot_travel(gp, &job)),
            })?;
            let work = PhaseWork::Commit {
                aborted,
                partitions,
            };
            Ok((work, Deposits::Commit(replies), false))
        }
        _ => split_between_epochs(jobs, answer_bytes_max),
    }
}

/// The jobs sent between epochs.
fn split_between_epochs<A: App>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    answer_bytes_max: u64,
) -> Result<(PhaseWork<A>, Deposits<A>, bool), String> {
    let (work, deposits) = match &jobs[0].1 {
        Job::CheckpointStep { begin, .. } => {
            let begin = *begin;
            let (partitions, replies) = split_each(jobs, |gp, job| match job {
                Job::CheckpointStep { reply, .. } => Ok(reply),
                job => Err(cannot_travel(gp, &job)),
            })?;
            let work = PhaseWork::CheckpointStep {
                begin,
                partitions,
                answer_bytes_max,
            };
            (work, Deposits::CheckpointStep(replies))
        }
        Job::Load { .. } => {
            let (chunks, replies) = split_chunks(jobs, |job| match job {
                Job::Load { rows, reply } => Ok((rows, reply)),
                job => Err(job),
            })?;
            let chunks = chunks
                .into_iter()
                .map(|(gp, rows)| (gp, rows.into_iter().map(|(k, v)| LoadRow(k, v)).collect()));
            let work = PhaseWork::Load {
                chunks: chunks.collect(),
            };
            (work, Deposits::Load(replies))
        }
        Job::Apply { .. } => {
            let (chunks, replies) = split_chunks(jobs, |job| match job {
                Job::Apply { rows, reply } => Ok((rows, reply)),
                job => Err(job),
            })?;
            let chunks = chunks
                .into_iter()
                .map(|(gp, rows)| (gp, rows.into_iter().map(|(k, v)| WireRow(k, v)).collect()));
            let work = PhaseWork::Apply {
                chunks: chunks.collect(),
            };
            (work, Deposits::Apply(replies))
        }
        Job::ConflictTally { .. } => {
            let (partitions, replies) = split_each(jobs, |gp, job| match job {
                Job::ConflictTally { reply } => Ok(reply),
                job => Err(cannot_travel(gp, &job)),
            })?;
            (
                PhaseWork::ConflictTally { partitions },
                Deposits::ConflictTally(replies),
            )
        }
        Job::StateHash { .. } => {
            let (partitions, replies) = split_each(jobs, |gp, job| match job {
                Job::StateHash { reply } => Ok(reply),
                job => Err(cannot_travel(gp, &job)),
            })?;
            (
                PhaseWork::StateHash { partitions },
                Deposits::StateHash(replies),
            )
        }
        job => return Err(cannot_travel(jobs[0].0, job)),
    };
    Ok((work, deposits, false))
}

fn split_waves<A: App>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    number: u32,
    needs_env: bool,
) -> Result<(PhaseWork<A>, Deposits<A>, bool), String> {
    let mut env: Option<Arc<EpochEnv<A::Event>>> = None;
    let mut steps = Vec::with_capacity(jobs.len());
    let mut wire_queries: Vec<WireQuery> = Vec::new();
    let (_, replies) = split_each(jobs, |gp, job| match job {
        Job::Wave {
            env: e,
            steps: s,
            queries,
            reply,
        } if queries.iter().all(|(_, q)| q.named.is_some()) => {
            env.get_or_insert(e);
            steps.push((gp, s));
            add_wire_queries(&mut wire_queries, gp, &queries);
            Ok(reply)
        }
        job => Err(cannot_travel(gp, &job)),
    })?;
    wire_queries.sort_unstable_by_key(|q| q.idx);
    let work = PhaseWork::Wave {
        wave: number,
        env: env.filter(|_| needs_env),
        steps,
        queries: wire_queries,
    };
    Ok((work, Deposits::Wave(replies), needs_env))
}

/// Adds partition `gp`'s named queries to the node's batch: each query once per node, with
/// the partitions it reads there (the jobs come in partition order, so they stay ascending).
fn add_wire_queries(
    wire_queries: &mut Vec<WireQuery>,
    gp: GlobalPartition,
    queries: &[(usize, QueryFn)],
) {
    for (idx, query) in queries {
        let Some(call) = &query.named else {
            continue;
        };
        let idx = *idx as u32;
        match wire_queries.iter_mut().find(|q| q.idx == idx) {
            Some(q) => q.partitions.push(gp),
            None => wire_queries.push(WireQuery {
                idx,
                name: call.name.clone(),
                args: call.args.clone(),
                partitions: vec![gp],
            }),
        }
    }
}

/// Puts the named queries' answers (ordered by partition, like `outs`) back into each wave
/// output as the parts the epoch collects, as if the queries had run on this node.
fn attach_answers<A: App>(outs: &mut [(GlobalPartition, WaveOut<A>)], answers: Vec<QueryAnswer>) {
    let mut outs = outs.iter_mut().peekable();
    for QueryAnswer {
        partition,
        idx,
        answer,
    } in answers
    {
        while outs.next_if(|(gp, _)| *gp != partition).is_some() {}
        let Some((_, out)) = outs.peek_mut() else {
            return;
        };
        let part: Result<QueryPart, String> = match answer {
            WireAnswer::Part(bytes) => Ok(Box::new(NamedPart::Ok(bytes))),
            WireAnswer::Failed(message) => Ok(Box::new(NamedPart::Err(message))),
            WireAnswer::Panicked(message) => Err(message),
        };
        out.query_results.push((idx as usize, part));
    }
}

fn split_fallback<A: App>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    number: u32,
    needs_env: bool,
) -> Result<(PhaseWork<A>, Deposits<A>, bool), String> {
    let mut env: Option<Arc<EpochEnv<A::Event>>> = None;
    let mut fallback_jobs = Vec::with_capacity(jobs.len());
    let (_, replies) = split_each(jobs, |gp, job| match job {
        Job::Fallback {
            env: e,
            finish,
            begin,
            steps,
            reply,
        } => {
            env.get_or_insert(e);
            let job = FallbackJob {
                finish,
                begin,
                steps,
            };
            fallback_jobs.push((gp, job));
            Ok(reply)
        }
        job => Err(cannot_travel(gp, &job)),
    })?;
    let work = PhaseWork::Fallback {
        round: number,
        env: env.filter(|_| needs_env),
        jobs: fallback_jobs,
    };
    Ok((work, Deposits::Fallback(replies), needs_env))
}

/// Takes each job of rows apart with `take` (its rows and depositor, or the job back if it is
/// of another kind), returning each partition's rows in order and their depositors.
#[allow(clippy::type_complexity)]
fn split_chunks<A: App, R>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    take: impl Fn(Job<A>) -> Result<(Vec<R>, Depositor<Result<(), String>>), Job<A>>,
) -> Result<
    (
        Vec<(GlobalPartition, Vec<R>)>,
        Vec<Depositor<Result<(), String>>>,
    ),
    String,
> {
    let mut chunks = Vec::with_capacity(jobs.len());
    let (_, replies) = split_each(jobs, |gp, job| {
        let (rows, reply) = take(job).map_err(|job| cannot_travel(gp, &job))?;
        chunks.push((gp, rows));
        Ok(reply)
    })?;
    Ok((chunks, replies))
}

/// Takes each job apart with `take` (which keeps what it needs and hands back the depositor),
/// returning the partitions in order and their depositors.
fn split_each<A: App, T>(
    jobs: Vec<(GlobalPartition, Job<A>)>,
    mut take: impl FnMut(GlobalPartition, Job<A>) -> Result<Depositor<T>, String>,
) -> Result<(Vec<GlobalPartition>, Vec<Depositor<T>>), String> {
    let mut partitions = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for (gp, job) in jobs {
        let reply = take(gp, job)?;
        partitions.push(gp);
        replies.push(reply);
    }
    Ok((partitions, replies))
}

impl<A: App> Deposits<A> {
    /// Hands each partition its result from the node's reply (already checked to answer for
    /// the batch's partitions, in order).
    fn deposit(self, result: PhaseResult<A>) -> Result<(), String> {
        fn each<T, R>(
            replies: Vec<Depositor<T>>,
            results: Vec<(GlobalPartition, R)>,
            f: impl Fn(R) -> T,
        ) {
            for (reply, (_, result)) in replies.into_iter().zip(results) {
                reply.deposit(f(result));
            }
        }
        match (self, result) {
            (Deposits::Wave(replies), PhaseResult::Wave { mut outs, answers }) => {
                attach_answers(&mut outs, answers);
                each(replies, outs, |o| o)
            }
            (Deposits::Fallback(replies), PhaseResult::Fallback { outs }) => {
                each(replies, outs, |o| o)
            }
            (Deposits::Decide { conflicts, replies }, PhaseResult::Decide { conflicts: lost }) => {
                conflicts.union_from(lost.words());
                replies.into_iter().for_each(|reply| reply.deposit(()));
            }
            (Deposits::Commit(replies), PhaseResult::Commit) => {
                replies.into_iter().for_each(|reply| reply.deposit(()));
            }
            (Deposits::CheckpointStep(replies), PhaseResult::CheckpointStep { rows }) => {
                each(replies, rows, |WireShare { rows, done }| {
                    let rows = if rows.is_empty() {
                        Vec::new()
                    } else {
                        let encode: DeferredRows = Box::new(move |out| {
                            out.extend(rows.into_iter().map(|WireRow(key, value)| (key, value)))
                        });
                        vec![encode]
                    };
                    CheckpointShare { rows, done }
                })
            }
            (Deposits::Load(replies), PhaseResult::Load { loaded }) => each(replies, loaded, |r| r),
            (Deposits::Apply(replies), PhaseResult::Apply { applied }) => {
                each(replies, applied, |r| r)
            }
            (Deposits::ConflictTally(replies), PhaseResult::ConflictTally { tallies }) => {
                each(replies, tallies, |t| t)
            }
            (Deposits::StateHash(replies), PhaseResult::StateHash { hashes }) => {
                each(replies, hashes, |h| h)
            }
            _ => return Err("the reply is for another kind of phase".to_string()),
        }
        Ok(())
    }
}

/// What the runtime's epoch driver dispatches through: this process's actors alone (the
/// single-process path, unchanged: nothing buffers, `flush` is a no-op), or a cluster.
pub(crate) enum DriverDispatch<A: App> {
    Local(PartitionActors<A>),
    Cluster(Arc<ClusterDispatch<A>>),
}

impl<A: App> Clone for DriverDispatch<A> {
    fn clone(&self) -> Self {
        match self {
            DriverDispatch::Local(actors) => DriverDispatch::Local(actors.clone()),
            DriverDispatch::Cluster(cluster) => DriverDispatch::Cluster(cluster.clone()),
        }
    }
}

impl<A: App> DriverDispatch<A> {
    /// The node holding `gp`, if it is another node.
    pub fn remote_node(&self, gp: GlobalPartition) -> Option<&str> {
        match self {
            DriverDispatch::Local(_) => None,
            DriverDispatch::Cluster(cluster) => cluster.remote_node(gp),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, DriverDispatch::Cluster(_))
    }

    /// This node's partition actors.
    pub fn local(&self) -> &PartitionActors<A> {
        match self {
            DriverDispatch::Local(actors) => actors,
            DriverDispatch::Cluster(cluster) => &cluster.local,
        }
    }

    /// The same actors and link, routing each partition to its node in `owners` instead (a
    /// hand-over reads the partitions that move from their owners before, `this_node` being
    /// this one); `None` for a single process.
    pub fn routed_by(
        &self,
        this_node: &str,
        owners: Vec<String>,
    ) -> Option<Result<Self, TxnError>> {
        let DriverDispatch::Cluster(cluster) = self else {
            return None;
        };
        let placement = ClusterPlacement {
            this_node: this_node.to_string(),
            owners,
            link: cluster.link.clone(),
            phase_timeout: cluster.phase_timeout,
            checkpoint_answer_bytes_max: cluster.checkpoint_answer_bytes_max as usize,
        };
        let routed = ClusterDispatch::new(cluster.app.clone(), cluster.local.clone(), &placement);
        Some(routed.map(|routed| DriverDispatch::Cluster(Arc::new(routed))))
    }

    /// Stops this node's partition actors (the other nodes' hosts are their own business).
    pub async fn stop(&self) {
        match self {
            DriverDispatch::Local(actors) => actors.stop().await,
            DriverDispatch::Cluster(cluster) => cluster.local.stop().await,
        }
    }
}

impl<A: App> Dispatch<A> for DriverDispatch<A> {
    async fn dispatch(&self, gp: GlobalPartition, job: Job<A>) -> Result<(), TxnError> {
        match self {
            DriverDispatch::Local(actors) => actors.dispatch(gp, job).await,
            DriverDispatch::Cluster(cluster) => cluster.dispatch(gp, job).await,
        }
    }

    async fn flush(&self) -> Result<(), TxnError> {
        match self {
            DriverDispatch::Local(_) => Ok(()),
            DriverDispatch::Cluster(cluster) => cluster.flush().await,
        }
    }
}
