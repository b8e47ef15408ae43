//! Live erasure: [`Client::forget`] removes one subject's personal data from a running
//! runtime, so that afterwards no file of the store holds those bytes (state, checkpoints,
//! log), while recovery and replay keep giving the same state.
//!
//! The sequencer runs an erasure between two epochs, as an epoch of its own: an empty epoch
//! `e` whose log record names the subject (`EpochRecordRef::erase`), at whose end every
//! partition erases the subject's personal fields (`Job::Erase`). Recovery replaying `e` does
//! the same at the same point, so a crash at any moment recovers the state the live runtime
//! had. Then a checkpoint of `e` is taken and written, the log is truncated below `e + 1` (the
//! events logged before may carry the personal data) and the store rewrites its files from
//! their live entries (`Storage::purge_freed_bytes`: pages freed earlier keep old bytes).
//! Submissions wait meanwhile: the sequencer starts no epoch until the erasure is done.

use crate::app::{App, AppDef};
use crate::epoch::{Dispatch, run_phase};
use crate::error::TxnError;
use crate::governance::ForgetReport;
use crate::ids::GlobalPartition;
use crate::partition::Job;
use crate::runtime::client::{Client, Submission};
use crate::runtime::durability::LogItem;
use crate::runtime::sequencer::{CheckpointCopying, Sequencer, checkpoint_step};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

/// A caller of `Client::forget`: the subject and where its report goes.
pub(super) type ForgetCall = (String, oneshot::Sender<Result<ForgetReport, TxnError>>);

impl<A: App> Client<A> {
    /// Erases `subject`'s personal data from the running runtime and its store, and returns
    /// once the erasure is durable and no file of the store holds the old bytes: every
    /// personal field (`#[pii]`, `#[category(..)]`) of every row whose subject is `subject`
    /// gets its type's default value, a checkpoint covering the erasure is written, the log
    /// below it is truncated and the store's files are rewritten from their live entries.
    /// Non-personal fields and other subjects' rows are untouched. Submissions made meanwhile
    /// wait and then run as usual (writes pause for the whole erasure, see
    /// `docs/governance.md`).
    ///
    /// Refused with [`TxnError::ForgetRefused`], before anything is erased, when the store
    /// cannot rewrite its files (`Storage::purge_freed_bytes`), when checkpoints are off
    /// (`checkpoint_every_epochs == 0`), with a bounded history retention (its history base
    /// holds past states; erase it stopped with `erasure::forget_dir`) and in a cluster.
    pub async fn forget(&self, subject: &str) -> Result<ForgetReport, TxnError> {
        let (reply, rx) = oneshot::channel();
        let subject = subject.to_string();
        self.tx
            .send(Submission::Forget { subject, reply })
            .await
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)?
    }
}

/// Erases each of `subjects` on every partition (the end of an epoch whose record names them);
/// returns how many rows changed.
pub(crate) async fn erase_at_epoch_end<A: App, D: Dispatch<A>>(
    app: &AppDef<A>,
    dispatch: &D,
    subjects: &[String],
) -> Result<usize, TxnError> {
    let all: Vec<GlobalPartition> = (0..app.n_global).collect();
    let mut n_erased = 0;
    for subject in subjects {
        let subject: Arc<str> = Arc::from(subject.as_str());
        let counts = run_phase(dispatch, &all, |_, reply| Job::Erase {
            subject: subject.clone(),
            reply,
        })
        .await?;
        n_erased += counts.into_iter().sum::<usize>();
    }
    Ok(n_erased)
}

/// Why this runtime cannot erase live, if it cannot.
fn refusal<A: App>(s: &Sequencer<A>) -> Option<String> {
    let storage = &s.config.storage;
    if !storage.can_purge_freed_bytes() {
        return Some(format!(
            "the {} store cannot rewrite its files to drop the bytes of deleted data",
            storage.name()
        ));
    }
    if s.config.checkpoint_every_epochs == 0 {
        return Some("checkpoints are off (checkpoint_every_epochs = 0)".into());
    }
    if s.config.history_base.is_some() {
        return Some(
            "a bounded history retention keeps past states in its history base; stop the \
             runtime and use erasure::forget_dir, which deletes the base"
                .into(),
        );
    }
    if s.actors.is_cluster() {
        return Some("partitions on other nodes cannot erase yet (one process only)".into());
    }
    None
}

/// Runs one erasure between two epochs (see the module doc).
pub(super) async fn forget<A: App>(
    s: &mut Sequencer<A>,
    copying: &mut Option<CheckpointCopying>,
    subject: &str,
) -> Result<ForgetReport, TxnError> {
    if let Some(why) = refusal(s) {
        return Err(TxnError::ForgetRefused { why });
    }
    // The checkpoint being copied or written covers an epoch before the erasure: finish it, so
    // that the erasure's own checkpoint is the next one and nothing else is in flight.
    finish_checkpoint(s, copying).await?;
    let env = s.next_epoch(Vec::new());
    let epoch = env.epoch;
    let subjects = vec![subject.to_string()];
    s.log_tx
        .send(LogItem::Erasure(env, subjects.clone()))
        .await
        .map_err(|_| TxnError::Storage("the durability thread stopped".into()))?;
    let rows_erased = match erase_at_epoch_end(&s.app, &s.actors, &subjects).await {
        Ok(n) => n,
        Err(e) => {
            // The record is logged and replay would erase whole, while here it may be half
            // done: stop accepting writes, as for a failed epoch.
            s.durable
                .fail(format!("the erasure of epoch {epoch} failed: {e}"));
            return Err(e);
        }
    };
    checkpoint_step(s, copying).await?;
    finish_checkpoint(s, copying).await?;
    let completed = s.checkpoint_schedule.last_completed.load(Ordering::Acquire);
    if completed < epoch {
        return Err(TxnError::Storage(format!(
            "the checkpoint of the erasure's epoch {epoch} was not completed (latest: {completed})"
        )));
    }
    let (reply, purged) = oneshot::channel();
    let below = epoch + 1;
    s.log_tx
        .send(LogItem::Purge { below, reply })
        .await
        .map_err(|_| TxnError::Storage("the durability thread stopped".into()))?;
    purged
        .await
        .map_err(|_| TxnError::Storage("the durability thread stopped".into()))?
        .map_err(TxnError::Storage)?;
    Ok(ForgetReport {
        subject: subject.to_string(),
        rows_erased,
        checkpoint_epoch: epoch,
    })
}

/// Copies the rest of the checkpoint being copied, if any, and waits until the checkpoint
/// thread has written it; fails if storage failed meanwhile.
async fn finish_checkpoint<A: App>(
    s: &mut Sequencer<A>,
    copying: &mut Option<CheckpointCopying>,
) -> Result<(), TxnError> {
    while copying.is_some() {
        checkpoint_step(s, copying).await?;
    }
    s.checkpoint_schedule.wait_idle().await;
    match s.durable.failure() {
        Some(failure) => Err(TxnError::Storage(failure.message().to_string())),
        None => Ok(()),
    }
}
