//! A [`Storage`] wrapper that injects I/O errors on command, for tests of how the transaction
//! layer reacts to a full disk or a failing device.
//!
//! A fault is injected either *before* the wrapped call (nothing was written, like a write
//! refused by a full disk) or *after* it (the write reached the store but the caller sees an
//! error, like an fsync that reported failure): both must leave the caller unacknowledged, and
//! the second checks that retries are idempotent. Clones share the fault plan and the store.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Storage, StorageError};

/// The operations a fault can be injected into, one per [`Storage`] method that does I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// [`Storage::append_epoch`].
    Append,
    /// [`Storage::write_checkpoint_rows`].
    CheckpointRows,
    /// [`Storage::complete_checkpoint`].
    CompleteCheckpoint,
    /// [`Storage::truncate_log_below`].
    Truncate,
    /// [`Storage::read_epochs`].
    ReadEpochs,
    /// [`Storage::read_latest_checkpoint`].
    ReadCheckpoint,
    /// [`Storage::last_epoch`].
    LastEpoch,
    /// [`Storage::latest_checkpoint_epoch`].
    LatestCheckpointEpoch,
    /// [`Storage::read_store_info`].
    ReadStoreInfo,
    /// [`Storage::write_store_info`].
    WriteStoreInfo,
}

impl FaultOp {
    const ALL: [FaultOp; 10] = [
        FaultOp::Append,
        FaultOp::CheckpointRows,
        FaultOp::CompleteCheckpoint,
        FaultOp::Truncate,
        FaultOp::ReadEpochs,
        FaultOp::ReadCheckpoint,
        FaultOp::LastEpoch,
        FaultOp::LatestCheckpointEpoch,
        FaultOp::ReadStoreInfo,
        FaultOp::WriteStoreInfo,
    ];

    fn idx(self) -> usize {
        self as usize
    }

    fn method(self) -> &'static str {
        match self {
            FaultOp::Append => "append_epoch",
            FaultOp::CheckpointRows => "write_checkpoint_rows",
            FaultOp::CompleteCheckpoint => "complete_checkpoint",
            FaultOp::Truncate => "truncate_log_below",
            FaultOp::ReadEpochs => "read_epochs",
            FaultOp::ReadCheckpoint => "read_latest_checkpoint",
            FaultOp::LastEpoch => "last_epoch",
            FaultOp::LatestCheckpointEpoch => "latest_checkpoint_epoch",
            FaultOp::ReadStoreInfo => "read_store_info",
            FaultOp::WriteStoreInfo => "write_store_info",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Rule {
    n_fail_before_next: u64,
    n_fail_after_next: u64,
    fail_always: bool,
    n_injected: u64,
}

/// When an injected fault strikes relative to the wrapped call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strike {
    None,
    Before,
    After,
}

/// Wraps a [`Storage`] and fails chosen calls with [`StorageError::Io`].
#[derive(Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    rules: Arc<Mutex<[Rule; FaultOp::ALL.len()]>>,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`; no fault is planned yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rules: Arc::new(Mutex::new([Rule::default(); FaultOp::ALL.len()])),
        }
    }

    /// The wrapped store, e.g. to inspect it without faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Fails the next `n` calls of `op` before they reach the store (nothing is written).
    pub fn fail_next(&self, op: FaultOp, n: u64) {
        self.rules.lock()[op.idx()].n_fail_before_next += n;
    }

    /// Lets the next `n` calls of `op` reach the store, then reports an error anyway (the write
    /// happened; the caller must not treat it as durable). Reads fail before the call.
    pub fn fail_next_after_write(&self, op: FaultOp, n: u64) {
        self.rules.lock()[op.idx()].n_fail_after_next += n;
    }

    /// Fails every call of `op` before it reaches the store until [`FaultyStorage::heal`].
    pub fn fail_always(&self, op: FaultOp) {
        self.rules.lock()[op.idx()].fail_always = true;
    }

    /// Fails the next append before it is written (a full disk).
    pub fn fail_next_append(&self) {
        self.fail_next(FaultOp::Append, 1);
    }

    /// Fails every append until [`FaultyStorage::heal`].
    pub fn fail_all_appends(&self) {
        self.fail_always(FaultOp::Append);
    }

    /// Fails the next checkpoint write, rows or completion, before it is written.
    pub fn fail_next_checkpoint_write(&self) {
        let mut rules = self.rules.lock();
        rules[FaultOp::CheckpointRows.idx()].n_fail_before_next += 1;
        rules[FaultOp::CompleteCheckpoint.idx()].n_fail_before_next += 1;
    }

    /// Fails every checkpoint write, rows and completion, until [`FaultyStorage::heal`].
    pub fn fail_all_checkpoint_writes(&self) {
        self.fail_always(FaultOp::CheckpointRows);
        self.fail_always(FaultOp::CompleteCheckpoint);
    }

    /// Cancels every planned fault; calls reach the store again.
    pub fn heal(&self) {
        for rule in self.rules.lock().iter_mut() {
            *rule = Rule {
                n_injected: rule.n_injected,
                ..Rule::default()
            };
        }
    }

    /// How many faults were injected into `op` so far.
    pub fn n_injected(&self, op: FaultOp) -> u64 {
        self.rules.lock()[op.idx()].n_injected
    }

    fn strike(&self, op: FaultOp) -> Strike {
        let mut rules = self.rules.lock();
        let rule = &mut rules[op.idx()];
        let strike = if rule.fail_always {
            Strike::Before
        } else if rule.n_fail_before_next > 0 {
            rule.n_fail_before_next -= 1;
            Strike::Before
        } else if rule.n_fail_after_next > 0 {
            rule.n_fail_after_next -= 1;
            Strike::After
        } else {
            Strike::None
        };
        if strike != Strike::None {
            rule.n_injected += 1;
        }
        strike
    }

    fn injected(&self, op: FaultOp, strike: Strike) -> StorageError {
        let when = if strike == Strike::After {
            "after the write reached the store"
        } else {
            "before anything was written"
        };
        StorageError::Io {
            backend: self.inner.name(),
            operation: op.method(),
            detail: format!("injected fault (simulated I/O error / disk full), {when}"),
        }
    }

    /// Runs a write with the planned fault of `op`, if any.
    fn write<T>(
        &self,
        op: FaultOp,
        call: impl FnOnce(&S) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match self.strike(op) {
            Strike::None => call(&self.inner),
            Strike::Before => Err(self.injected(op, Strike::Before)),
            Strike::After => {
                call(&self.inner)?;
                Err(self.injected(op, Strike::After))
            }
        }
    }

    /// Runs a read with the planned fault of `op`, if any; reads always fail before the call.
    fn read<T>(
        &self,
        op: FaultOp,
        call: impl FnOnce(&S) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match self.strike(op) {
            Strike::None => call(&self.inner),
            strike => Err(self.injected(op, strike)),
        }
    }
}

impl<S: Storage> Storage for FaultyStorage<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        self.write(FaultOp::Append, |s| s.append_epoch(epoch, batch))
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.read(FaultOp::ReadEpochs, |s| s.read_epochs(from, visit))
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.read(FaultOp::LastEpoch, |s| s.last_epoch())
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        self.write(FaultOp::CheckpointRows, |s| {
            s.write_checkpoint_rows(checkpoint_epoch, rows)
        })
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        self.write(FaultOp::CompleteCheckpoint, |s| {
            s.complete_checkpoint(checkpoint_epoch)
        })
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        self.read(FaultOp::ReadCheckpoint, |s| s.read_latest_checkpoint(visit))
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        self.write(FaultOp::Truncate, |s| s.truncate_log_below(epoch))
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.read(FaultOp::LatestCheckpointEpoch, |s| {
            s.latest_checkpoint_epoch()
        })
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(FaultOp::ReadStoreInfo, |s| s.read_store_info())
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        self.write(FaultOp::WriteStoreInfo, |s| s.write_store_info(info))
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        self.inner.acquire_lease(holder, ttl)
    }

    fn can_purge_freed_bytes(&self) -> bool {
        self.inner.can_purge_freed_bytes()
    }

    fn purge_freed_bytes(&self) -> Result<(), StorageError> {
        self.inner.purge_freed_bytes()
    }
}
