//! [`PartitionHost`]: the serving side of a cluster runtime. A node that does not drive epochs
//! holds the partitions the placement gives it, as partition actors like the driver's own, and
//! answers each `PhaseBatch` from the driver (`cluster_dispatch.rs`) by running every job of it
//! on its actors and encoding one `PhaseReply`.
//!
//! The epoch's logged batch (`EpochEnv`) comes with the first wave or fallback batch of the
//! epoch sent to this node; the host keeps it for the later waves and fallback rounds of that
//! epoch, whose inbound steps read their event from it.

use crate::app::{App, AppDef};
use crate::bitset::SeqSet;
use crate::envelope::EpochEnv;
use crate::epoch::run_phase;
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::partition::Job;
use crate::sync::AtomicSeqSet;
use crate::transport::PartitionActors;
use crate::wire::{LoadRow, Phase, PhaseBatch, PhaseReply, PhaseResult, PhaseWork, wire_rows};
use std::sync::Arc;

/// The partitions of one node, answering the epoch driver's phase batches.
pub struct PartitionHost<A: App> {
    app: Arc<AppDef<A>>,
    node: String,
    actors: PartitionActors<A>,
    /// Per global partition: whether this node holds it.
    held: Vec<bool>,
    /// The logged batch of the epoch being run, for its later waves and fallback rounds.
    env: parking_lot::Mutex<Option<Arc<EpochEnv<A::Event>>>>,
}

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
        })
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
            .find(|gp| !self.held[*gp as usize])
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
            PhaseWork::Wave { env, steps, .. } => {
                let env = self.epoch_env(batch.epoch, env)?;
                let mut steps = steps.into_iter().map(|(_, steps)| steps);
                let outs = run_phase(actors, &gps, |_, reply| Job::Wave {
                    env: env.clone(),
                    steps: steps.next().unwrap_or_default(),
                    queries: Vec::new(),
                    reply,
                })
                .await?;
                let outs = gps.into_iter().zip(outs).collect();
                Ok(PhaseResult::Wave { outs })
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

    /// The jobs sent between epochs: checkpoint rows, recovery loading, counts and hashes.
    async fn run_between_epochs(
        &self,
        gps: Vec<GlobalPartition>,
        work: PhaseWork<A>,
    ) -> Result<PhaseResult<A>, TxnError> {
        let actors = &self.actors;
        match work {
            PhaseWork::Checkpoint { .. } => {
                let parts = run_phase(actors, &gps, |_, reply| Job::Checkpoint { reply }).await?;
                let rows = gps.into_iter().zip(parts.into_iter().map(wire_rows));
                Ok(PhaseResult::Checkpoint {
                    rows: rows.collect(),
                })
            }
            PhaseWork::CheckpointStep { begin, .. } => {
                let parts = run_phase(actors, &gps, |_, reply| Job::CheckpointStep {
                    begin,
                    reply,
                })
                .await?;
                let rows = gps
                    .into_iter()
                    .zip(parts.into_iter().map(|p| p.map(wire_rows)));
                Ok(PhaseResult::CheckpointStep {
                    rows: rows.collect(),
                })
            }
            PhaseWork::Load { chunks } => {
                let mut chunks = chunks.into_iter().map(|(_, rows)| rows);
                let loaded = run_phase(actors, &gps, |_, reply| Job::Load {
                    rows: chunks
                        .next()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|LoadRow(key, value)| (key, value))
                        .collect(),
                    reply,
                })
                .await?;
                let loaded = gps.into_iter().zip(loaded).collect();
                Ok(PhaseResult::Load { loaded })
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
