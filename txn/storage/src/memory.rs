//! An in-memory [`Storage`] for tests and simulations: exact trait semantics, no durability
//! beyond the process.
//!
//! Clones share one state, so a test can drop the runtime that used a store and "restart" a new
//! one on a clone of it, the way a durable backend is reopened from its directory. A clone is a
//! new handle: it shares everything but the lease, which each handle takes for itself (see
//! [`Storage::acquire_lease`]; expiry follows the local clock). Log records
//! are kept in their checksummed envelope (see [`crate::record`]) so
//! [`MemoryStorage::corrupt_log_record`] can simulate a damaged record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::lease::{self, HeldTerm, LeaseRecord};
use crate::{Storage, StorageError, limits, record};

const BACKEND: &str = "memory";

/// A [`Storage`] that keeps everything in memory; clones share the same state (but not the
/// lease a handle took).
#[derive(Default)]
pub struct MemoryStorage {
    state: Arc<Mutex<State>>,
    /// The lease term this handle took, if any.
    held: HeldTerm,
}

impl Clone for MemoryStorage {
    /// Another handle on the same state, without a lease.
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            held: HeldTerm::default(),
        }
    }
}

/// The epoch of an incomplete checkpoint and its rows so far.
type PendingCheckpoint = (u64, BTreeMap<Vec<u8>, Option<Vec<u8>>>);

#[derive(Default)]
struct State {
    /// Epoch -> record envelope holding the batch. Shared so readers visit without the lock.
    log: BTreeMap<u64, Arc<[u8]>>,
    /// The merged live rows as of `latest_complete`. Readers take a clone of the `Arc` and visit
    /// without the lock; completion copies on write if a reader still holds it.
    merged: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    latest_complete: Option<u64>,
    /// The incomplete checkpoint being written, if any: its epoch and its rows so far.
    pending: Option<PendingCheckpoint>,
    /// The store info record, once written.
    store_info: Option<Vec<u8>>,
    /// The lease, once taken.
    lease: Option<LeaseRecord>,
}

impl State {
    /// Refuses the write of a handle whose lease was taken over (see [`crate::lease`]).
    fn check_fence(&self, held: &HeldTerm) -> Result<(), StorageError> {
        match held.get() {
            None => Ok(()),
            Some(ours) => {
                let current = self.lease.as_ref().map_or(0, |lease| lease.term);
                lease::check_fence(BACKEND, ours, current)
            }
        }
    }

    fn check_newer_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        match self.latest_complete {
            Some(latest) if checkpoint_epoch <= latest => Err(StorageError::CheckpointOutOfOrder {
                backend: BACKEND,
                checkpoint_epoch,
                latest_complete: self.latest_complete,
            }),
            _ => Ok(()),
        }
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flips one bit in the stored record of `epoch`, so reading it reports
    /// [`StorageError::Corrupt`]. Returns `false` when `epoch` is not logged. For tests.
    pub fn corrupt_log_record(&self, epoch: u64) -> bool {
        let mut state = self.state.lock();
        let Some(stored) = state.log.get_mut(&epoch) else {
            return false;
        };
        let mut bytes = stored.to_vec();
        let last_idx = bytes.len() - 1;
        bytes[last_idx] ^= 0x01;
        *stored = bytes.into();
        true
    }

    /// Number of log records currently kept, for tests of truncation.
    pub fn n_log_records(&self) -> usize {
        self.state.lock().log.len()
    }
}

impl Storage for MemoryStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        limits::check_batch(BACKEND, batch)?;
        let mut state = self.state.lock();
        state.check_fence(&self.held)?;
        let last = state.log.last_key_value().map(|(&last, _)| last);
        let out_of_order = StorageError::OutOfOrder {
            backend: BACKEND,
            epoch,
            last,
        };
        match last {
            None => {}
            Some(last) if last.checked_add(1) == Some(epoch) => {}
            Some(_) => {
                // A retry of an append that may already have succeeded: the same bytes are a
                // no-op, anything else is a caller bug.
                let Some(stored) = state.log.get(&epoch) else {
                    return Err(out_of_order);
                };
                let (payload, _) = record::decode(BACKEND, epoch, stored)?;
                return if payload == batch {
                    Ok(())
                } else {
                    Err(out_of_order)
                };
            }
        }
        state.log.insert(epoch, record::encode(epoch, batch).into());
        Ok(())
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let records: Vec<(u64, Arc<[u8]>)> = {
            let state = self.state.lock();
            state
                .log
                .range(from..)
                .map(|(&epoch, stored)| (epoch, Arc::clone(stored)))
                .collect()
        };
        for (epoch, stored) in records {
            let (payload, _) = record::decode(BACKEND, epoch, &stored)?;
            visit(epoch, payload)?;
        }
        Ok(())
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        Ok(self
            .state
            .lock()
            .log
            .last_key_value()
            .map(|(&last, _)| last))
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        limits::check_rows(BACKEND, rows)?;
        let mut state = self.state.lock();
        state.check_fence(&self.held)?;
        state.check_newer_checkpoint(checkpoint_epoch)?;
        let pending = match &mut state.pending {
            Some((pending_epoch, pending_rows)) if *pending_epoch == checkpoint_epoch => {
                pending_rows
            }
            pending => &mut pending.insert((checkpoint_epoch, BTreeMap::new())).1,
        };
        for (key, value) in rows {
            pending.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        state.check_fence(&self.held)?;
        if state.latest_complete == Some(checkpoint_epoch) {
            return Ok(());
        }
        state.check_newer_checkpoint(checkpoint_epoch)?;
        let rows = match state.pending.take() {
            Some((pending_epoch, rows)) if pending_epoch == checkpoint_epoch => rows,
            _ => BTreeMap::new(),
        };
        let merged = Arc::make_mut(&mut state.merged);
        for (key, value) in rows {
            match value {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        }
        state.latest_complete = Some(checkpoint_epoch);
        Ok(())
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let (latest, merged) = {
            let state = self.state.lock();
            (state.latest_complete, Arc::clone(&state.merged))
        };
        for (key, value) in merged.iter() {
            visit(key, value)?;
        }
        Ok(latest)
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.state.lock().latest_complete)
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state.lock().store_info.clone())
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        limits::check_store_info(BACKEND, info)?;
        self.state.lock().store_info = Some(info.to_vec());
        Ok(())
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        state.check_fence(&self.held)?;
        let covered = state
            .latest_complete
            .map_or(0, |latest| latest.saturating_add(1));
        if epoch > covered {
            return Err(StorageError::TruncateBeyondCheckpoint {
                backend: BACKEND,
                epoch,
                latest_complete: state.latest_complete,
            });
        }
        state.log = state.log.split_off(&epoch);
        Ok(())
    }

    fn can_purge_freed_bytes(&self) -> bool {
        // No files: deleted data is gone with the map entries that held it.
        true
    }

    fn purge_freed_bytes(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        lease::check_holder(BACKEND, holder)?;
        let mut state = self.state.lock();
        let granted = lease::grant_by_local_clock(BACKEND, state.lease.as_ref(), holder, ttl)?;
        let term = granted.term;
        state.lease = Some(granted);
        self.held.set(term);
        Ok(term)
    }
}
