//! Checks that the conformance suite fails on stores that break the contract, so a backend
//! passing it means something.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use txn_storage::conformance::{self, Open};
use txn_storage::{MemoryStorage, Storage, StorageError};

/// The ways a broken store can deviate from the contract.
#[derive(Clone, Copy, Debug)]
enum Bug {
    ReadIgnoresFrom,
    TruncateDoesNothing,
    CompleteDoesNothing,
    SwallowsVisitorErrors,
    ForgetsOnReopen,
    LatestCheckpointLags,
    StoreInfoNotKept,
    /// Takes the lease on a handle of its own, so its writes are never fenced.
    IgnoresFence,
}

/// A MemoryStorage with one deliberate bug.
struct Broken {
    inner: MemoryStorage,
    bug: Bug,
}

impl Storage for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        self.inner.append_epoch(epoch, batch)
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        match self.bug {
            Bug::ReadIgnoresFrom => self.inner.read_epochs(0, visit),
            Bug::SwallowsVisitorErrors => self.inner.read_epochs(from, &mut |epoch, batch| {
                let _ = visit(epoch, batch);
                Ok(())
            }),
            _ => self.inner.read_epochs(from, visit),
        }
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.inner.last_epoch()
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError> {
        self.inner.write_checkpoint_rows(checkpoint_epoch, rows)
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        match self.bug {
            Bug::CompleteDoesNothing => Ok(()),
            _ => self.inner.complete_checkpoint(checkpoint_epoch),
        }
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        self.inner.read_latest_checkpoint(visit)
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        match self.bug {
            Bug::TruncateDoesNothing => Ok(()),
            _ => self.inner.truncate_log_below(epoch),
        }
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        match self.bug {
            // Reports the first completion forever, like a cache never refreshed.
            Bug::LatestCheckpointLags => Ok(self.inner.latest_checkpoint_epoch()?.map(|_| 4)),
            _ => self.inner.latest_checkpoint_epoch(),
        }
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.read_store_info()
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        match self.bug {
            // Keeps only the first record ever written.
            Bug::StoreInfoNotKept if self.inner.read_store_info()?.is_some() => Ok(()),
            _ => self.inner.write_store_info(info),
        }
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        match self.bug {
            Bug::IgnoresFence => self.inner.clone().acquire_lease(holder, ttl),
            _ => self.inner.acquire_lease(holder, ttl),
        }
    }
}

#[test]
fn suite_fails_every_broken_store() {
    // Goal: each deliberate contract violation makes the conformance suite panic.
    for bug in [
        Bug::ReadIgnoresFrom,
        Bug::TruncateDoesNothing,
        Bug::CompleteDoesNothing,
        Bug::SwallowsVisitorErrors,
        Bug::ForgetsOnReopen,
        Bug::LatestCheckpointLags,
        Bug::StoreInfoNotKept,
        Bug::IgnoresFence,
    ] {
        let mut last = MemoryStorage::new();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            conformance::run_all(&mut |open| {
                let inner = match (open, bug) {
                    (Open::Reopen, Bug::ForgetsOnReopen) => MemoryStorage::new(),
                    (Open::Reopen | Open::Another, _) => last.clone(),
                    (Open::Fresh, _) => {
                        last = MemoryStorage::new();
                        last.clone()
                    }
                };
                Broken { inner, bug }
            })
        }));
        assert!(
            outcome.is_err(),
            "the conformance suite passed a store with bug {bug:?}"
        );
    }
}
