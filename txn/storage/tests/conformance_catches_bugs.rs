//! Checks that the conformance suite fails on stores that break the contract, so a backend
//! passing it means something.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use txn_storage::conformance::{self, Open};
use txn_storage::delegating::{Delegate, Delegating};
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

impl Delegate for Broken {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }

    fn name(&self) -> &'static str {
        "broken"
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

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        match self.bug {
            Bug::CompleteDoesNothing => Ok(()),
            _ => self.inner.complete_checkpoint(checkpoint_epoch),
        }
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

/// A MemoryStorage passed through [`Delegating`] untouched.
struct Forwarded(MemoryStorage);

impl Delegate for Forwarded {
    fn inner(&self) -> &dyn Storage {
        &self.0
    }
}

/// Runs the conformance suite on memory stores seen through `wrap`, and returns whether it
/// passed. With `forgets_on_reopen`, a reopened store is a new, empty one.
fn suite_passes<S: Storage>(forgets_on_reopen: bool, wrap: impl Fn(MemoryStorage) -> S) -> bool {
    let mut last = MemoryStorage::new();
    catch_unwind(AssertUnwindSafe(|| {
        conformance::run_all(&mut |open| {
            let inner = match open {
                Open::Reopen if forgets_on_reopen => MemoryStorage::new(),
                Open::Reopen | Open::Another => last.clone(),
                Open::Fresh => {
                    last = MemoryStorage::new();
                    last.clone()
                }
            };
            wrap(inner)
        })
    }))
    .is_ok()
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
        let forgets_on_reopen = matches!(bug, Bug::ForgetsOnReopen);
        assert!(
            !suite_passes(forgets_on_reopen, |inner| Delegating(Broken { inner, bug })),
            "the conformance suite passed a store with bug {bug:?}"
        );
    }
}

#[test]
fn suite_passes_the_store_the_broken_ones_wrap() {
    // Goal: the suite's failures above come from the bugs alone: the same memory store, seen
    // through the same delegating wrapper with nothing overridden, passes it.
    assert!(
        suite_passes(false, |inner| Delegating(Forwarded(inner))),
        "the conformance suite failed a memory store forwarded untouched"
    );
}
