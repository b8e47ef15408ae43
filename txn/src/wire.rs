//! The wire form of epoch phase work between nodes: what a phase sends the partitions another
//! node owns, as one [`PhaseBatch`] per node per phase, and what comes back, one
//! [`PhaseReply`]. Each is one link request or reply (`actor_runtime::cluster`): a version byte,
//! then rmp-serde. No per-operation messages: a wave's steps for every partition of a node
//! travel together, and decide and commit send one sequence-number set per node.
//!
//! The steps, results and sets are the partition's own types (`Step`, `WaveOut`, `SeqSet`, ...),
//! made serde by derive; a step's constraint targets (`Arc<FkTarget>` and friends) travel by
//! value. A closure query never travels; a named query (`AppBuilder::query`) goes by name
//! and argument bytes in the wave-0 batch ([`WireQuery`]), is run there before the wave's
//! steps (on the same snapshot as on the asking node), and comes back as bytes
//! ([`QueryAnswer`]).
//!
//! Sent by `ClusterDispatch` (`cluster_dispatch.rs`), which buffers the jobs of remote
//! partitions per node and flushes one batch per node per phase, and answered by
//! `PartitionHost` (`host.rs`). Between epochs the same way: checkpoint rows, recovery loading
//! (`Load`) and the row changes recovery replayed on the driver (`Apply`), conflict counts and
//! the state hash.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::bitset::SeqSet;
use crate::envelope::EpochEnv;
use crate::ids::GlobalPartition;
use crate::limits::PHASE_MESSAGE_BYTES_MAX;
use crate::partition::{StateMark, Step, WaveOut};
use crate::row_key::{CheckpointRow, DeferredRows, split_row_key};
use crate::table::ConflictTally;

/// The first byte of every encoded phase message. Bumped whenever the encoding of anything in
/// it changes, so nodes of two builds refuse each other's messages instead of misreading them.
pub(crate) const WIRE_FORMAT_VERSION: u8 = 5;

/// Which phase of an epoch a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Phase {
    Wave { wave: u32 },
    Decide,
    Commit,
    CheckpointStep,
    Fallback { round: u32 },
    Load,
    ConflictTally,
    StateHash,
    Apply,
}

impl Phase {
    /// Whether it is part of an epoch (a wave, decide, commit or fallback round), not work
    /// between epochs.
    pub fn is_epoch_phase(self) -> bool {
        matches!(
            self,
            Phase::Wave { .. } | Phase::Decide | Phase::Commit | Phase::Fallback { .. }
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Wave { wave } => write!(f, "wave {wave}"),
            Phase::Decide => f.write_str("decide"),
            Phase::Commit => f.write_str("commit"),
            Phase::CheckpointStep => f.write_str("checkpoint step"),
            Phase::Fallback { round } => write!(f, "fallback round {round}"),
            Phase::Load => f.write_str("checkpoint load"),
            Phase::ConflictTally => f.write_str("conflict tally"),
            Phase::StateHash => f.write_str("state hash"),
            Phase::Apply => f.write_str("replayed rows"),
        }
    }
}

/// One round of the ordered fallback for one partition (`Job::Fallback` without its reply).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct FallbackJob<A: App> {
    pub finish: Option<bool>,
    pub begin: bool,
    pub steps: Vec<Step<A::Event>>,
}

/// One named query of an epoch for the partitions of one node: `idx` is its place among the
/// epoch's queries (the driver's, echoed in the answers), `partitions` those of the node it
/// reads, ascending (a partition listed twice answers twice).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireQuery {
    pub idx: u32,
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    pub partitions: Vec<GlobalPartition>,
}

/// One partition's answer to a [`WireQuery`].
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueryAnswer {
    pub partition: GlobalPartition,
    pub idx: u32,
    pub answer: WireAnswer,
}

/// A named query's part (encoded), or why there is none.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireAnswer {
    Part(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Its arguments or part did not decode or encode, or the node has no query of its name.
    Failed(String),
    /// The query panicked: the message.
    Panicked(String),
}

/// What one phase asks of the partitions of one node. Partitions are listed in ascending
/// order, each once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum PhaseWork<A: App> {
    /// One wave of the first pass. `env`, the epoch's logged batch, comes with the first wave
    /// or fallback batch of the epoch sent to the node: the node keeps it for the epoch's later
    /// waves and fallback rounds (inbound steps read their event from it).
    Wave {
        wave: u32,
        env: Option<Arc<EpochEnv<A::Event>>>,
        steps: Vec<(GlobalPartition, Vec<Step<A::Event>>)>,
        /// The epoch's named queries on these partitions (wave 0 only), by `idx`; each reads
        /// its partitions before their steps run.
        queries: Vec<WireQuery>,
    },
    /// Report the conflict losers of these partitions; `user_aborted` lose nothing.
    Decide {
        user_aborted: SeqSet,
        partitions: Vec<GlobalPartition>,
    },
    /// Apply the writes of every transaction not in `aborted`.
    Commit {
        aborted: SeqSet,
        partitions: Vec<GlobalPartition>,
    },
    /// Copy the next bounded share of the rows of the checkpoint being taken (`begin`: start
    /// one as of the epoch just run), and answer with at most `answer_bytes_max` row bytes
    /// (`wire_row_bytes`) of the rows of the partitions done copying.
    CheckpointStep {
        begin: bool,
        partitions: Vec<GlobalPartition>,
        answer_bytes_max: u64,
    },
    Fallback {
        round: u32,
        /// As for `Wave`: only if no earlier batch of the epoch brought it to the node.
        env: Option<Arc<EpochEnv<A::Event>>>,
        jobs: Vec<(GlobalPartition, FallbackJob<A>)>,
    },
    /// Load chunks of checkpoint rows (full row keys, see `row_key.rs`) at recovery.
    Load {
        chunks: Vec<(GlobalPartition, Vec<LoadRow>)>,
    },
    /// Report each table's conflict losses so far.
    ConflictTally { partitions: Vec<GlobalPartition> },
    /// Report each partition's hash of its committed rows.
    StateHash { partitions: Vec<GlobalPartition> },
    /// Apply chunks of the row changes recovery replayed on the driver (`Job::Apply`).
    Apply {
        chunks: Vec<(GlobalPartition, Vec<WireRow>)>,
    },
}

/// One checkpoint row to load: the encoded row key and value, as bytes.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoadRow(
    #[serde(with = "serde_bytes")] pub Vec<u8>,
    #[serde(with = "serde_bytes")] pub Vec<u8>,
);

/// One checkpoint row on the wire: the encoded row key and value (`None`: deleted), as bytes.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRow(
    #[serde(with = "serde_bytes")] pub Vec<u8>,
    #[serde(with = "serde_bytes")] pub Option<Vec<u8>>,
);

/// The rows of a partition's `Job::CheckpointStep` answer, encoded for the wire.
pub(crate) fn wire_rows(deferred: Vec<DeferredRows>) -> Vec<WireRow> {
    let mut rows: Vec<CheckpointRow> = Vec::new();
    for encode in deferred {
        encode(&mut rows);
    }
    rows.into_iter()
        .map(|(key, value)| WireRow(key, value))
        .collect()
}

/// Most bytes rmp-serde spends on one [`WireRow`] besides its key and value: an array header
/// (1), two byte-string headers (at most 5 each, for lengths up to 4 GiB) or a nil.
pub(crate) const WIRE_ROW_OVERHEAD_BYTES: usize = 11;

/// What a row costs in a checkpoint step answer's byte budget: at least its encoded size.
pub(crate) fn wire_row_bytes(row: &WireRow) -> usize {
    row.0.len() + row.1.as_ref().map_or(0, Vec::len) + WIRE_ROW_OVERHEAD_BYTES
}

/// Takes rows from the front of `rows` while their cost (`wire_row_bytes`) stays within
/// `*budget`, and spends it; the first row of an answer (`*budget` still whole, `first`) is
/// taken whatever its size, so every step makes progress.
pub(crate) fn take_share(
    rows: &mut std::collections::VecDeque<WireRow>,
    budget: &mut u64,
    first: &mut bool,
) -> Vec<WireRow> {
    let mut n = 0;
    for row in rows.iter() {
        let cost = wire_row_bytes(row) as u64;
        if cost > *budget && !*first {
            break;
        }
        *budget = budget.saturating_sub(cost);
        *first = false;
        n += 1;
    }
    rows.drain(..n).collect()
}

/// One partition's share of a checkpoint step answer: rows of the checkpoint, and whether they
/// are its last (`false` with no rows: still copying).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireShare {
    pub rows: Vec<WireRow>,
    pub done: bool,
}

/// What the partitions of one node answer to one [`PhaseWork`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum PhaseResult<A: App> {
    /// Each partition's wave result, in the batch's order, and the answers to the batch's
    /// named queries by partition, then `idx` (a `WaveOut`'s own `query_results` never
    /// travel).
    Wave {
        outs: Vec<(GlobalPartition, WaveOut<A>)>,
        answers: Vec<QueryAnswer>,
    },
    /// The node's conflict losers: the union over its partitions.
    Decide {
        conflicts: SeqSet,
    },
    Commit,
    /// Each partition's share of its copied rows (none while it is still copying); within the
    /// batch's `answer_bytes_max` together.
    CheckpointStep {
        rows: Vec<(GlobalPartition, WireShare)>,
    },
    Fallback {
        outs: Vec<(GlobalPartition, WaveOut<A>)>,
    },
    /// Each partition's answer to its chunk (`Err`: why the rows did not load).
    Load {
        loaded: Vec<(GlobalPartition, Result<(), String>)>,
    },
    ConflictTally {
        tallies: Vec<(GlobalPartition, Vec<(String, ConflictTally)>)>,
    },
    /// Each partition's state hash and the incarnation of the instance that holds it.
    StateHash {
        hashes: Vec<(GlobalPartition, StateMark)>,
    },
    /// Each partition's answer to its chunk of replayed rows (`Err`: why they did not apply).
    Apply {
        applied: Vec<(GlobalPartition, Result<(), String>)>,
    },
    /// The node could not do the work (a malformed batch, a stopped partition): why.
    Failed {
        message: String,
    },
}

/// The work of one phase of one epoch for one node: one link request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct PhaseBatch<A: App> {
    pub epoch: u64,
    pub work: PhaseWork<A>,
}

/// A node's answer to a [`PhaseBatch`]: one link reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct PhaseReply<A: App> {
    pub epoch: u64,
    pub phase: Phase,
    pub result: PhaseResult<A>,
}

/// What the sender of a batch checks its reply against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SentBatch {
    pub epoch: u64,
    pub phase: Phase,
    /// The partitions the reply must answer for, in order; empty for decide and commit, which
    /// answer for the node as a whole.
    pub answered_by: Vec<GlobalPartition>,
    /// Partitions of the application, which every partition named in the reply must be below.
    pub n_partitions: u32,
    /// The `(partition, idx)` of every named query answer the reply must carry, in order.
    pub query_answers: Vec<(GlobalPartition, u32)>,
}

/// Why a phase message could not be sent or read. Every variant names the message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{what} of {bytes} bytes exceeds the limit of {max} bytes: split the phase's work")]
    Oversized {
        what: &'static str,
        bytes: usize,
        max: usize,
    },
    #[error(
        "{what} has wire format version {found:?}; this node reads version {WIRE_FORMAT_VERSION}"
    )]
    Version {
        what: &'static str,
        /// `None`: the message is empty.
        found: Option<u8>,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} names partition {partition}, but the application has {n_partitions}")]
    UnknownPartition {
        what: &'static str,
        partition: GlobalPartition,
        n_partitions: u32,
    },
    #[error("{what} lists partition {partition} out of ascending order or twice")]
    PartitionOrder {
        what: &'static str,
        partition: GlobalPartition,
    },
    #[error("reply to the {expected} batch of epoch {epoch} is for {got} of epoch {got_epoch}")]
    WrongReply {
        epoch: u64,
        expected: Phase,
        got_epoch: u64,
        got: Phase,
    },
    #[error(
        "reply to the {phase} batch of epoch {epoch} answers for partitions {got:?}, \
         but was asked for {expected:?}"
    )]
    WrongPartitions {
        epoch: u64,
        phase: Phase,
        expected: Vec<GlobalPartition>,
        got: Vec<GlobalPartition>,
    },
    #[error(
        "a wave result of partition {partition} carries snapshot query results, which stay on their node"
    )]
    QueryResults { partition: GlobalPartition },
    #[error("the node could not do the work: {message}")]
    Failed { message: String },
    #[error(
        "reply to the {phase} batch of epoch {epoch} answers named queries {got:?} \
         (partition, query), but was asked {expected:?}"
    )]
    WrongAnswers {
        epoch: u64,
        phase: Phase,
        expected: Vec<(GlobalPartition, u32)>,
        got: Vec<(GlobalPartition, u32)>,
    },
    #[error(
        "{what}: named query #{idx} names partition {partition}, which the batch gives no work"
    )]
    QueryPartition {
        what: &'static str,
        idx: u32,
        partition: GlobalPartition,
    },
}

const BATCH: &str = "phase batch";
const REPLY: &str = "phase reply";

/// `value` as a phase message: the version byte, then rmp-serde; refused if it is too large.
fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    let mut bytes = vec![WIRE_FORMAT_VERSION];
    rmp_serde::encode::write(&mut bytes, value).map_err(|e| WireError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if bytes.len() > PHASE_MESSAGE_BYTES_MAX {
        return Err(WireError::Oversized {
            what,
            bytes: bytes.len(),
            max: PHASE_MESSAGE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Reads a phase message back: size and version first, then the whole rest must be one value.
fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > PHASE_MESSAGE_BYTES_MAX {
        return Err(WireError::Oversized {
            what,
            bytes: bytes.len(),
            max: PHASE_MESSAGE_BYTES_MAX,
        });
    }
    match bytes.first() {
        Some(&WIRE_FORMAT_VERSION) => {}
        found => {
            let found = found.copied();
            return Err(WireError::Version { what, found });
        }
    }
    let malformed = |reason: String| WireError::Malformed { what, reason };
    let mut rest = &bytes[1..];
    let value = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
        .map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(value)
}

/// Checks that `partitions` are below `n_partitions` and strictly ascending.
fn check_partitions(
    what: &'static str,
    partitions: impl Iterator<Item = GlobalPartition>,
    n_partitions: u32,
) -> Result<(), WireError> {
    let mut previous: Option<GlobalPartition> = None;
    for partition in partitions {
        if partition >= n_partitions {
            return Err(WireError::UnknownPartition {
                what,
                partition,
                n_partitions,
            });
        }
        if previous.is_some_and(|p| p >= partition) {
            return Err(WireError::PartitionOrder { what, partition });
        }
        previous = Some(partition);
    }
    Ok(())
}

impl<A: App> PhaseBatch<A> {
    pub fn phase(&self) -> Phase {
        match &self.work {
            PhaseWork::Wave { wave, .. } => Phase::Wave { wave: *wave },
            PhaseWork::Decide { .. } => Phase::Decide,
            PhaseWork::Commit { .. } => Phase::Commit,
            PhaseWork::CheckpointStep { .. } => Phase::CheckpointStep,
            PhaseWork::Fallback { round, .. } => Phase::Fallback { round: *round },
            PhaseWork::Load { .. } => Phase::Load,
            PhaseWork::ConflictTally { .. } => Phase::ConflictTally,
            PhaseWork::StateHash { .. } => Phase::StateHash,
            PhaseWork::Apply { .. } => Phase::Apply,
        }
    }

    /// The partitions the batch gives work to, in its order.
    pub fn partitions(&self) -> Vec<GlobalPartition> {
        match &self.work {
            PhaseWork::Wave { steps, .. } => steps.iter().map(|(gp, _)| *gp).collect(),
            PhaseWork::Decide { partitions, .. }
            | PhaseWork::Commit { partitions, .. }
            | PhaseWork::CheckpointStep { partitions, .. }
            | PhaseWork::ConflictTally { partitions }
            | PhaseWork::StateHash { partitions } => partitions.clone(),
            PhaseWork::Fallback { jobs, .. } => jobs.iter().map(|(gp, _)| *gp).collect(),
            PhaseWork::Load { chunks } => chunks.iter().map(|(gp, _)| *gp).collect(),
            PhaseWork::Apply { chunks } => chunks.iter().map(|(gp, _)| *gp).collect(),
        }
    }

    /// What its reply is checked against (`PhaseReply::decode`).
    pub fn sent(&self, n_partitions: u32) -> SentBatch {
        let answered_by = match self.phase() {
            Phase::Decide | Phase::Commit => Vec::new(),
            _ => self.partitions(),
        };
        let mut query_answers: Vec<(GlobalPartition, u32)> = match &self.work {
            PhaseWork::Wave { queries, .. } => queries
                .iter()
                .flat_map(|q| q.partitions.iter().map(|gp| (*gp, q.idx)))
                .collect(),
            _ => Vec::new(),
        };
        query_answers.sort_unstable();
        SentBatch {
            epoch: self.epoch,
            phase: self.phase(),
            answered_by,
            n_partitions,
            query_answers,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(BATCH, self)
    }

    /// Reads a batch sent to a node of an application with `n_partitions` partitions.
    pub fn decode(bytes: &[u8], n_partitions: u32) -> Result<Self, WireError> {
        let batch: PhaseBatch<A> = decode(BATCH, bytes)?;
        let partitions = batch.partitions();
        check_partitions(BATCH, partitions.iter().copied(), n_partitions)?;
        if let PhaseWork::Wave { queries, .. } = &batch.work {
            check_query_partitions(queries, &partitions)?;
        }
        Ok(batch)
    }
}

/// Every named query names only partitions the wave batch gives work to, in ascending order.
fn check_query_partitions(
    queries: &[WireQuery],
    partitions: &[GlobalPartition],
) -> Result<(), WireError> {
    for q in queries {
        let mut previous = None;
        for &partition in &q.partitions {
            if partitions.binary_search(&partition).is_err() {
                return Err(WireError::QueryPartition {
                    what: BATCH,
                    idx: q.idx,
                    partition,
                });
            }
            if previous.is_some_and(|p| p > partition) {
                return Err(WireError::PartitionOrder {
                    what: BATCH,
                    partition,
                });
            }
            previous = Some(partition);
        }
    }
    Ok(())
}

impl<A: App> PhaseResult<A> {
    fn phase_matches(&self, phase: Phase) -> bool {
        matches!(
            (self, phase),
            (PhaseResult::Wave { .. }, Phase::Wave { .. })
                | (PhaseResult::Decide { .. }, Phase::Decide)
                | (PhaseResult::Commit, Phase::Commit)
                | (PhaseResult::CheckpointStep { .. }, Phase::CheckpointStep)
                | (PhaseResult::Fallback { .. }, Phase::Fallback { .. })
                | (PhaseResult::Load { .. }, Phase::Load)
                | (PhaseResult::ConflictTally { .. }, Phase::ConflictTally)
                | (PhaseResult::StateHash { .. }, Phase::StateHash)
                | (PhaseResult::Apply { .. }, Phase::Apply)
        )
    }

    /// The partitions it answers for, in order (none for decide and commit).
    fn partitions(&self) -> Vec<GlobalPartition> {
        match self {
            PhaseResult::Wave { outs, .. } | PhaseResult::Fallback { outs } => {
                outs.iter().map(|(gp, _)| *gp).collect()
            }
            PhaseResult::CheckpointStep { rows } => rows.iter().map(|(gp, _)| *gp).collect(),
            PhaseResult::Load { loaded } | PhaseResult::Apply { applied: loaded } => {
                loaded.iter().map(|(gp, _)| *gp).collect()
            }
            PhaseResult::ConflictTally { tallies } => tallies.iter().map(|(gp, _)| *gp).collect(),
            PhaseResult::StateHash { hashes } => hashes.iter().map(|(gp, _)| *gp).collect(),
            PhaseResult::Decide { .. } | PhaseResult::Commit | PhaseResult::Failed { .. } => {
                Vec::new()
            }
        }
    }

    /// The `(partition, idx)` of its named query answers, in order (none but for a wave).
    fn query_answers(&self) -> Vec<(GlobalPartition, u32)> {
        match self {
            PhaseResult::Wave { answers, .. } => {
                answers.iter().map(|a| (a.partition, a.idx)).collect()
            }
            _ => Vec::new(),
        }
    }

    fn wave_outs(&self) -> &[(GlobalPartition, WaveOut<A>)] {
        match self {
            PhaseResult::Wave { outs, .. } | PhaseResult::Fallback { outs } => outs,
            _ => &[],
        }
    }
}

impl<A: App> PhaseReply<A> {
    /// Refuses a wave result that carries query results (they would be dropped silently).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let with_queries = self
            .result
            .wave_outs()
            .iter()
            .find(|(_, out)| !out.query_results.is_empty());
        if let Some((partition, _)) = with_queries {
            return Err(WireError::QueryResults {
                partition: *partition,
            });
        }
        encode(REPLY, self)
    }

    /// Reads the reply to `sent`: the same epoch and phase, the same partitions in the same
    /// order, emitted events and checkpoint rows only for partitions that exist.
    pub fn decode(bytes: &[u8], sent: &SentBatch) -> Result<Self, WireError> {
        let reply: PhaseReply<A> = decode(REPLY, bytes)?;
        if let PhaseResult::Failed { message } = reply.result {
            return Err(WireError::Failed { message });
        }
        if (reply.epoch, reply.phase) != (sent.epoch, sent.phase)
            || !reply.result.phase_matches(sent.phase)
        {
            return Err(WireError::WrongReply {
                epoch: sent.epoch,
                expected: sent.phase,
                got_epoch: reply.epoch,
                got: reply.phase,
            });
        }
        let answered = reply.result.partitions();
        if answered != sent.answered_by {
            return Err(WireError::WrongPartitions {
                epoch: sent.epoch,
                phase: sent.phase,
                expected: sent.answered_by.clone(),
                got: answered,
            });
        }
        let answers = reply.result.query_answers();
        if answers != sent.query_answers {
            return Err(WireError::WrongAnswers {
                epoch: sent.epoch,
                phase: sent.phase,
                expected: sent.query_answers.clone(),
                got: answers,
            });
        }
        reply.check_targets(sent.n_partitions)?;
        Ok(reply)
    }

    /// Every emitted event and checkpoint row names a partition that exists (and a row, the
    /// partition it was reported for).
    fn check_targets(&self, n_partitions: u32) -> Result<(), WireError> {
        for (_, out) in self.result.wave_outs() {
            for emitted in &out.emits {
                check_partitions(REPLY, std::iter::once(emitted.target), n_partitions)?;
            }
        }
        let rows: Vec<(GlobalPartition, &Vec<WireRow>)> = match &self.result {
            PhaseResult::CheckpointStep { rows } => {
                rows.iter().map(|(gp, share)| (*gp, &share.rows)).collect()
            }
            _ => return Ok(()),
        };
        for (partition, rows) in rows {
            for WireRow(key, _) in rows {
                let owner = split_row_key(key).map(|(gp, _, _)| gp);
                if owner != Some(partition) {
                    return Err(WireError::Malformed {
                        what: REPLY,
                        reason: format!(
                            "a checkpoint row of partition {partition} has a key of partition \
                             {owner:?}"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

pub(crate) mod pack;
pub(crate) mod value;

#[cfg(test)]
mod tests;
