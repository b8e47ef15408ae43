//! A re-placement without replay: a runtime stopped cleanly hands the next one, in the same
//! process and on the same store, what a recovery would compute (`Runtime::shutdown_handing_over`,
//! `Runtime::start_handed_over`).
//!
//! The invariant that allows it: the runtime before stopped cleanly (every sequenced epoch ran
//! on every partition and is durable, no epoch is in flight, no write failed), every partition's
//! owner before is alive and still a member of the new placement (a re-placement that also
//! removes a member recovers), and nothing else wrote the store since (the lease's term is
//! unchanged and the store still ends at the epoch handed over: the log's last epoch, or the
//! checkpoint of that epoch when it truncated the whole log). Then every partition is at the
//! log's end and a replay would only rebuild what the partitions already hold. What the next
//! runtime takes:
//!
//! - **its position**: the last epoch and its timestamp (the next epoch is one more, timestamps
//!   never go backwards), the durable watermark itself (at that epoch), the lease's term;
//! - **the dedup window**, with its marks for the next checkpoint;
//! - **the checkpoint schedule and its writer**: a checkpoint being written when the runtime
//!   stopped is not abandoned but finishes under the next runtime (which begins none until it
//!   completes); one being copied is finished first. A write of it that fails fails the shared
//!   watermark, so the next runtime refuses writes and its replacement recovers from the log,
//!   which no checkpoint that did not complete truncated;
//! - **the partitions**: this node's states (moved, not copied) and every partition's state hash
//!   with the incarnation of the instance its owner held (`StateMark`).
//!   A partition whose owner does not change stays where it is; one that moves is read on its
//!   owner before (every live row, and the rows deleted since the last checkpoint copy began)
//!   and applied on its new owner (`Job::Apply`, in chunks), which lists them all for the next
//!   checkpoint. Then every owner's state hash must equal the hash before, and every partition
//!   whose owner did not change must be the very instance that stopped (the same incarnation):
//!   an owner restarted since under the same name holds new, empty instances, which hash like
//!   emptied ones but do not list the deletions the stopped ones had not checkpointed.
//!
//! Every partition kept or moved is readied as after a take-over
//! (`host::settle_keeping_deletions`): every live row is listed for the next checkpoint, and
//! so are the rows deleted since the last checkpoint copy began (the checkpoints merge, so a
//! deletion must be written). Whatever fails on the way falls back to recovery: the checkpoint
//! writer is abandoned first, so the store stands still while recovery reads it.

use crate::app::{App, AppDef};
use crate::cluster_dispatch::DriverDispatch;
use crate::dedup::Dedup;
use crate::epoch::{Dispatch, run_phase};
use crate::error::TxnError;
use crate::host::settle_keeping_deletions;
use crate::ids::GlobalPartition;
use crate::partition::{Job, PartitionState, StateMark};
use crate::row_key::DeferredRows;
use crate::runtime::config::RuntimeConfig;
use crate::runtime::durability::CheckpointSchedule;
use crate::runtime::recovery::{RecoveryReport, apply_rows};
use crate::runtime::sequencer::{CheckpointCopying, Sequencer, checkpoint_step};
use crate::storage::{Storage, StorageError};
use crate::sync::DurableWatermark;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What a runtime stopped cleanly hands the next one on the same store
/// (`Runtime::shutdown_handing_over`), so that it starts without recovering
/// (`Runtime::start_handed_over`). Dropped unused, it abandons the checkpoint being written and
/// waits for its writer, so that a recovery can read the store.
pub struct HandOver<A: App> {
    pub(super) position: Position<A>,
    pub(super) durable: Arc<DurableWatermark>,
    pub(super) writers: Writers,
    /// The lease's term (0: no lease).
    pub(super) term: u64,
    /// This node's partitions before, in ascending order.
    pub(super) states: States<A>,
    /// Every partition's state hash before and the incarnation of the instance its owner held.
    pub(super) hashes: Vec<StateMark>,
}

impl<A: App> HandOver<A> {
    /// The last epoch the runtime before ran; the next runtime's first is one more.
    pub fn last_epoch(&self) -> u64 {
        self.position.epoch
    }

    /// The partitions this node held before.
    pub fn partitions_here(&self) -> usize {
        self.states.len()
    }
}

/// Partition states moving between actors: each boxed so that its tables never move.
#[allow(clippy::vec_box)]
pub(super) type States<A> = Vec<Box<PartitionState<A>>>;

/// The sequencer's position when it stopped.
pub(super) struct Position<A: App> {
    pub(super) epoch: u64,
    pub(super) last_timestamp_ms: u64,
    pub(super) dedup: Dedup<A::Output>,
    /// This node's name and the owner of each partition before (`None`: one process).
    pub(super) placement: Option<(String, Vec<String>)>,
}

impl<A: App> Position<A> {
    /// Finishes the checkpoint `s` was copying, if any (it then goes to the checkpoint writer
    /// like any other), and keeps the position; `None` if a copy step failed.
    pub(super) async fn of(
        mut s: Sequencer<A>,
        mut copying: Option<CheckpointCopying>,
    ) -> Option<Self> {
        while copying.is_some() {
            if let Err(error) = checkpoint_step(&mut s, &mut copying).await {
                tracing::warn!(%error, "finishing the checkpoint copy before a hand-over failed");
                return None;
            }
        }
        let Sequencer {
            epoch,
            last_timestamp_ms,
            dedup,
            config,
            ..
        } = s;
        let placement = config
            .cluster
            .map(|placement| (placement.this_node, placement.owners));
        Some(Position {
            epoch,
            last_timestamp_ms,
            dedup,
            placement,
        })
    }
}

/// The checkpoint writer threads of the runtimes before and their schedule.
pub(super) struct Writers {
    pub(super) schedule: Arc<CheckpointSchedule>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Abandons the checkpoint being written (before its next chunk) and waits for the writers.
    pub(super) async fn abandon(mut self) {
        self.schedule.abandon.store(true, Ordering::Release);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }

    /// The schedule and the threads, for the runtime that goes on with them.
    fn into_parts(mut self) -> (Arc<CheckpointSchedule>, Vec<std::thread::JoinHandle<()>>) {
        (self.schedule.clone(), std::mem::take(&mut self.threads))
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.schedule.abandon.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What the next runtime takes from a hand-over it accepted.
pub(super) struct Taken<A: App> {
    pub(super) report: RecoveryReport,
    pub(super) dedup: Dedup<A::Output>,
    pub(super) schedule: Arc<CheckpointSchedule>,
    pub(super) checkpointers: Vec<std::thread::JoinHandle<()>>,
}

/// `h` if the runtime starting with lease term `term` may take it: nothing failed since, the
/// term is the same, the store still ends at its epoch, the placement's node is the same and
/// the new placement only adds nodes (every node that owned a partition before owns one now).
/// Otherwise abandons its checkpoint writer and says why (the runtime recovers instead).
pub(super) async fn usable<A: App>(
    h: HandOver<A>,
    term: u64,
    app: &AppDef<A>,
    config: &RuntimeConfig,
) -> Option<HandOver<A>> {
    let storage = config.storage.clone();
    let store_end = tokio::task::spawn_blocking(move || store_end(storage.as_ref())).await;
    let store_end = match store_end {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => return refuse(h, format!("reading the store's end: {e}")).await,
        Err(e) => return refuse(h, format!("reading the store's end stopped: {e}")).await,
    };
    let this_node = config.cluster.as_ref().map(|p| p.this_node.as_str());
    let removed = match (&h.position.placement, &config.cluster) {
        (Some((_, before)), Some(now)) => {
            let now: BTreeSet<&String> = now.owners.iter().collect();
            before.iter().find(|node| !now.contains(node))
        }
        _ => None,
    };
    let why = if let Some(failure) = h.durable.failure() {
        format!("the runtime before failed: {}", failure.message())
    } else if h.term != term {
        format!("the lease's term changed from {} to {term}", h.term)
    } else if store_end != h.position.epoch {
        format!(
            "the store ends at epoch {store_end}, the runtime before at {}",
            h.position.epoch
        )
    } else if h.hashes.len() != app.n_global as usize {
        "the application's partitions changed".to_string()
    } else if h.position.placement.as_ref().map(|(node, _)| node.as_str()) != this_node {
        "the runtime before ran on another node or another kind of placement".to_string()
    } else if let Some(node) = removed {
        format!("node {node:?} owned partitions before and owns none now: a member was removed")
    } else {
        return Some(h);
    };
    refuse(h, why).await
}

/// The last epoch the store holds: the log's, or, once a checkpoint of the log's last epoch
/// truncated the whole log, that checkpoint's. The log is read first: a truncation between the
/// two reads then leaves the checkpoint to read.
fn store_end(storage: &dyn Storage) -> Result<u64, StorageError> {
    let log_end = storage.last_epoch()?;
    let checkpoint = storage.latest_checkpoint_epoch()?;
    Ok(log_end.unwrap_or(0).max(checkpoint.unwrap_or(0)))
}

/// Logs why `h` is not taken and abandons its checkpoint writer.
async fn refuse<A: App>(h: HandOver<A>, why: String) -> Option<HandOver<A>> {
    tracing::warn!(%why, "the runtime before cannot hand over; recovering from the store");
    h.writers.abandon().await;
    None
}

/// Takes `h`: this node's partitions move into `actors` (or to their new owners), the
/// partitions that change owner move as rows, every owner's state hash must equal the hash
/// before and every partition kept must be the instance that stopped. On an error, the checkpoint writer is abandoned (the caller recovers).
pub(super) async fn take<A: App>(
    app: &Arc<AppDef<A>>,
    actors: &DriverDispatch<A>,
    h: HandOver<A>,
) -> Result<Taken<A>, TxnError> {
    let started = Instant::now();
    let HandOver {
        position,
        writers,
        states,
        hashes,
        ..
    } = h;
    let moving = move_partitions(app, actors, position.placement, states, &hashes).await;
    let moved = match moving {
        Ok(moved) => moved,
        Err(e) => {
            writers.abandon().await;
            return Err(e);
        }
    };
    let (schedule, checkpointers) = writers.into_parts();
    let last_completed = schedule.last_completed.load(Ordering::Acquire);
    let report = RecoveryReport {
        checkpoint_epoch: (last_completed > 0).then_some(last_completed),
        rows_loaded: 0,
        epochs_replayed: 0,
        last_epoch: position.epoch,
        last_timestamp_ms: position.last_timestamp_ms,
        dedup_window_entries: position.dedup.len(),
        duration: started.elapsed(),
        partitions_kept: moved.kept,
        handed_over: true,
        partitions_moved: moved.partitions,
        rows_moved: moved.rows,
        epochs_replayed_before_lease: 0,
    };
    tracing::info!(
        last_epoch = report.last_epoch,
        partitions_kept = moved.kept,
        partitions_moved = moved.partitions,
        rows_moved = moved.rows,
        ms = started.elapsed().as_secs_f64() * 1e3,
        epochs_replayed = 0,
        "handed over from the runtime before: every state hash matches"
    );
    Ok(Taken {
        report,
        dedup: position.dedup,
        schedule,
        checkpointers,
    })
}

/// What [`move_partitions`] did.
struct Moved {
    kept: usize,
    partitions: usize,
    rows: usize,
}

/// Puts every partition where the new placement wants it (see [`take`]).
async fn move_partitions<A: App>(
    app: &Arc<AppDef<A>>,
    actors: &DriverDispatch<A>,
    placement: Option<(String, Vec<String>)>,
    states: States<A>,
    expected: &[StateMark],
) -> Result<Moved, TxnError> {
    let n_global = app.n_global;
    let owner_before = |gp: GlobalPartition| -> Option<&str> {
        let (this_node, owners) = placement.as_ref()?;
        let owner = owners[gp as usize].as_str();
        (owner != this_node).then_some(owner)
    };
    // This node's partitions before: those it keeps move into its actors, the others are read.
    let (staying, leaving): (Vec<_>, Vec<_>) = states
        .into_iter()
        .partition(|state| actors.remote_node(state.gp).is_none());
    let here: Vec<GlobalPartition> = staying.iter().map(|state| state.gp).collect();
    let replaced = run_phase(actors.local(), &here, |_, reply| Job::Lend { reply }).await?;
    let readied = tokio::task::spawn_blocking(move || {
        drop(replaced);
        let mut staying = staying;
        for state in &mut staying {
            settle_keeping_deletions(state, false);
        }
        let rows: Vec<(GlobalPartition, Vec<DeferredRows>)> = leaving
            .into_iter()
            .map(|mut state| {
                settle_keeping_deletions(&mut state, false);
                (state.gp, state.drain_checkpoint_rows())
            })
            .collect();
        (staying, rows)
    })
    .await
    .map_err(|e| TxnError::Recovery(format!("readying the partitions stopped: {e}")))?;
    let (staying, mut to_hand) = readied;
    let kept_here = staying.len();
    for state in staying {
        let gp = state.gp;
        actors.local().dispatch(gp, Job::Return { state }).await?;
    }
    // The partitions that move from another node are read there.
    let from_elsewhere: Vec<GlobalPartition> = (0..n_global)
        .filter(|gp| owner_before(*gp).is_some_and(|o| actors.remote_node(*gp) != Some(o)))
        .collect();
    let kept_elsewhere = (0..n_global)
        .filter(|gp| owner_before(*gp).is_some_and(|o| actors.remote_node(*gp) == Some(o)))
        .count();
    let n_moved = to_hand.len() + from_elsewhere.len();
    if let (false, Some((this_node, owners))) = (from_elsewhere.is_empty(), &placement) {
        let before = actors
            .routed_by(this_node, owners.clone())
            .expect("a placement before is a cluster's")?;
        to_hand.extend(read_rows(&before, from_elsewhere).await?);
    }
    let rows = apply_rows(actors, to_hand).await?;
    let all: Vec<GlobalPartition> = (0..n_global).collect();
    // A partition kept must be the very instance its owner held: an owner restarted since
    // holds a new one, which may hash the same (an emptied partition) but does not list the
    // deletions the one before had not yet written to a checkpoint.
    let installed = run_phase(actors, &all, |_, reply| Job::StateHash { reply }).await?;
    for (gp, (installed, expected)) in (0..n_global).zip(installed.into_iter().zip(expected)) {
        let owner = actors.remote_node(gp).unwrap_or("this node");
        if installed.hash != expected.hash {
            return Err(TxnError::Recovery(format!(
                "partition {gp}: handed over to its owner ({owner}), it hashes to {:#x}, but to \
                 {:#x} on its owner before",
                installed.hash, expected.hash
            )));
        }
        let kept = owner_before(gp) == actors.remote_node(gp);
        if kept && installed.incarnation != expected.incarnation {
            return Err(TxnError::Recovery(format!(
                "partition {gp}: its owner ({owner}) holds another instance of it than the one \
                 the runtime before stopped (the owner restarted since)"
            )));
        }
    }
    Ok(Moved {
        kept: kept_here + kept_elsewhere,
        partitions: n_moved,
        rows,
    })
}

/// Reads the rows the owners before readied for the partitions `gps` (`PartitionHost::re_place`)
/// through `before` (routing by the placement before), in bounded shares.
async fn read_rows<A: App>(
    before: &DriverDispatch<A>,
    mut gps: Vec<GlobalPartition>,
) -> Result<Vec<(GlobalPartition, Vec<DeferredRows>)>, TxnError> {
    let mut read = Vec::new();
    while !gps.is_empty() {
        let shares = run_phase(before, &gps, |_, reply| Job::CheckpointStep {
            begin: false,
            reply,
        })
        .await?;
        let mut still = Vec::new();
        let mut progressed = false;
        for (gp, share) in gps.iter().copied().zip(shares) {
            progressed |= share.done || !share.rows.is_empty();
            if !share.done {
                still.push(gp);
            }
            read.push((gp, share.rows));
        }
        if !progressed {
            return Err(TxnError::Recovery(format!(
                "the owners before of partitions {still:?} sent none of their rows"
            )));
        }
        gps = still;
    }
    Ok(read)
}
