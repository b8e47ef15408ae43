//! A [`Storage`] made of another store and the few calls it intercepts: tests and
//! instrumentation that watch, slow down or break one or two calls of a store write only those,
//! and every other call, present or added to the trait later, reaches the wrapped store.
//!
//! ```
//! use txn_storage::delegating::{Delegate, Delegating};
//! use txn_storage::{MemoryStorage, Storage, StorageError};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! /// Counts truncations; everything else is the memory store's.
//! struct CountedTruncations {
//!     inner: MemoryStorage,
//!     truncations: AtomicU64,
//! }
//!
//! impl Delegate for CountedTruncations {
//!     fn inner(&self) -> &dyn Storage {
//!         &self.inner
//!     }
//!     fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
//!         self.truncations.fetch_add(1, Ordering::SeqCst);
//!         self.inner.truncate_log_below(epoch)
//!     }
//! }
//!
//! let store = Delegating(CountedTruncations {
//!     inner: MemoryStorage::new(),
//!     truncations: AtomicU64::new(0),
//! });
//! store.append_epoch(1, b"one").unwrap();
//! store.complete_checkpoint(1).unwrap();
//! store.truncate_log_below(2).unwrap();
//! assert_eq!(store.last_epoch().unwrap(), None);
//! assert_eq!(store.truncations.load(Ordering::SeqCst), 1);
//! assert_eq!(store.name(), "memory");
//! ```

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::{CheckpointRow, Storage, StorageError};

/// A [`Delegate`] used as a [`Storage`]. It dereferences to the delegate, so the delegate's own
/// fields and methods (what it recorded, a gate it holds) stay at hand through an `Arc`.
#[derive(Debug, Default)]
pub struct Delegating<D>(pub D);

impl<D> Deref for Delegating<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.0
    }
}

impl<D> DerefMut for Delegating<D> {
    fn deref_mut(&mut self) -> &mut D {
        &mut self.0
    }
}

/// Writes, from one list of the [`Storage`] methods, both [`Delegate`] (each method forwarding
/// to [`Delegate::inner`] unless overridden) and the [`Storage`] impl of [`Delegating`] (each
/// method calling the delegate's), so the two cannot disagree on which methods exist.
macro_rules! delegate_every_method {
    ($(fn $method:ident(&self $(, $arg:ident: $arg_type:ty)*) -> $output:ty;)*) => {
        /// A store that hands every [`Storage`] call to [`Delegate::inner`], except the calls it
        /// overrides; wrap it in [`Delegating`] to use it as a [`Storage`]. Each method has the
        /// signature and the contract of the [`Storage`] method of the same name, so an
        /// override that changes what the inner store returns is a store that breaks the
        /// contract (on purpose, in a test that the contract's checks catch it).
        // The visitor parameters spell out `dyn FnMut`, as in `Storage`.
        #[allow(clippy::type_complexity)]
        pub trait Delegate: Send + Sync + 'static {
            /// The store every call not overridden goes to.
            fn inner(&self) -> &dyn Storage;

            $(
                #[doc = concat!("[`Storage::", stringify!($method), "`] of the inner store, \
                                 unless overridden.")]
                fn $method(&self $(, $arg: $arg_type)*) -> $output {
                    self.inner().$method($($arg),*)
                }
            )*
        }

        #[allow(clippy::type_complexity)]
        impl<D: Delegate> Storage for Delegating<D> {
            $(
                fn $method(&self $(, $arg: $arg_type)*) -> $output {
                    Delegate::$method(&self.0 $(, $arg)*)
                }
            )*
        }
    };
}

delegate_every_method! {
    fn name(&self) -> &'static str;
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError>;
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError>;
    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>
    ) -> Result<(), StorageError>;
    fn last_epoch(&self) -> Result<Option<u64>, StorageError>;
    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow]
    ) -> Result<(), StorageError>;
    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError>;
    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>
    ) -> Result<Option<u64>, StorageError>;
    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError>;
    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError>;
    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError>;
    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError>;
    fn checkpoints_have_own_writer(&self) -> bool;
    fn can_purge_freed_bytes(&self) -> bool;
    fn purge_freed_bytes(&self) -> Result<(), StorageError>;
    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError>;
}
