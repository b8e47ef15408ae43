//! A [`Storage`] wrapper that announces checkpoint writes as they happen, so the crash test can
//! kill the child while one is being written.
//!
//! It sees exactly the window that matters for crash safety: from the first checkpoint write of
//! an epoch to the return of `complete_checkpoint`. The announcement is printed before the first
//! write starts, so a kill that reacts to it lands inside the window unless the write is faster
//! than the reaction; the next recovery tells which (its checkpoint is older if the kill landed
//! inside).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{CheckpointRow, Storage, StorageError};

/// Checkpoint counters, shared with whoever prints status lines.
#[derive(Default)]
pub struct CheckpointCounters {
    /// Checkpoints whose first storage write began.
    pub started: AtomicU64,
    /// Checkpoints whose completion returned.
    pub completed: AtomicU64,
}

struct Current {
    epoch: u64,
    rows: usize,
    started: Instant,
}

/// Wraps a store; calls `announce` with `ckpt_begin epoch=E` before a checkpoint's first write
/// and `ckpt_done epoch=E rows=N ms=T` after it completed. Every other call reaches the store
/// as it is ([`Delegate`]), so the run writes its log and checkpoints as it would unobserved.
pub struct ObservedStorage<S> {
    inner: S,
    counters: Arc<CheckpointCounters>,
    current: Mutex<Option<Current>>,
    announce: Box<dyn Fn(&str) + Send + Sync>,
}

impl<S: Storage> ObservedStorage<S> {
    pub fn new(
        inner: S,
        counters: Arc<CheckpointCounters>,
        announce: impl Fn(&str) + Send + Sync + 'static,
    ) -> Delegating<Self> {
        Delegating(ObservedStorage {
            inner,
            counters,
            current: Mutex::new(None),
            announce: Box::new(announce),
        })
    }

    fn current(&self) -> MutexGuard<'_, Option<Current>> {
        // Poisoned only if `announce` panicked; the counters stay usable.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, epoch: u64, rows: usize) {
        let mut current = self.current();
        match &mut *current {
            Some(c) if c.epoch == epoch => c.rows += rows,
            _ => {
                (self.announce)(&format!("ckpt_begin epoch={epoch}"));
                self.counters.started.fetch_add(1, Ordering::SeqCst);
                *current = Some(Current {
                    epoch,
                    rows,
                    started: Instant::now(),
                });
            }
        }
    }
}

impl<S: Storage> Delegate for ObservedStorage<S> {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        self.begin(checkpoint_epoch, rows.len());
        self.inner.write_checkpoint_rows(checkpoint_epoch, rows)
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        self.begin(checkpoint_epoch, 0);
        let result = self.inner.complete_checkpoint(checkpoint_epoch);
        if result.is_ok() {
            self.counters.completed.fetch_add(1, Ordering::SeqCst);
            if let Some(c) = self.current().take() {
                (self.announce)(&format!(
                    "ckpt_done epoch={checkpoint_epoch} rows={} ms={:.3}",
                    c.rows,
                    c.started.elapsed().as_secs_f64() * 1e3
                ));
            }
        }
        result
    }
}
