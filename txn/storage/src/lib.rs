//! The durable-storage boundary of vmsdb's transaction layer.
//!
//! `txn` reaches durable storage only through the [`Storage`] trait defined here. The trait is
//! deliberately byte-oriented: the transaction layer encodes epoch batches and checkpoint rows
//! itself (rmp-serde), and a backend only has to keep bytes safe and ordered.
//!
//! Two kinds of data live in a store:
//! - **The epoch log.** One record per epoch: the epoch's sequenced input batch, appended in
//!   increasing epoch order with no gaps, one durable write per epoch (group commit). Replaying
//!   the log from a checkpoint deterministically rebuilds the state.
//! - **Checkpoints.** Incremental: checkpoint `c` holds only the rows that changed since the
//!   previous checkpoint (a `None` value is a deletion). The state as of the latest *complete*
//!   checkpoint is the merge of all complete checkpoints, newest version of each row winning.
//!   A checkpoint may be written in many chunks and becomes visible only when
//!   [`Storage::complete_checkpoint`] returns; rows of an incomplete checkpoint are never read.
//!
//! Every logged record carries a CRC-32C checksum (see [`record`]); a torn or corrupt record is
//! reported as [`StorageError::Corrupt`] naming the epoch, never returned as data.
//!
//! Backends, all passing the one suite in [`conformance`]:
//! - [`EmbeddedStorage`] = [`RedbStorage`]: the default, two redb files (the log and the
//!   checkpoints) in a data directory.
//! - `FjallStorage` (cargo feature `fjall`): the measured alternative, kept for comparison.
//! - `FdbStorage` (cargo feature `fdb`): FoundationDB 7.3, for durability across nodes.
//! - `PostgresStorage` (cargo feature `postgres`): a PostgreSQL schema, the shared store the
//!   cluster work is tested with (FoundationDB cannot run everywhere).
//! - [`MemoryStorage`]: in memory, for tests and simulation; [`FaultyStorage`] wraps any backend
//!   and injects I/O errors.
//!
//! Every backend also keeps a **lease** with a growing term ([`Storage::acquire_lease`]): a
//! handle that took the lease has each of its writes checked, in the write's own store
//! transaction, against the store's current term, so a deposed holder (an old sequencer) can
//! never write between the new holder's writes ([`StorageError::Fenced`]).
//!
//! The size limits every backend enforces alike are in [`limits`]. Measurements and the choice of
//! the default are in `docs/storage.md`.

pub mod conformance;
pub mod delegating;
pub mod faulty;
#[cfg(feature = "fdb")]
pub mod fdb_storage;
#[cfg(feature = "fjall")]
pub mod fjall_storage;
mod identity;
mod lease;
pub mod limits;
pub mod memory;
mod open_stores;
#[cfg(feature = "postgres")]
mod postgres_copy;
#[cfg(feature = "postgres")]
pub mod postgres_instance;
#[cfg(feature = "postgres")]
pub mod postgres_storage;
pub mod record;
pub mod redb_storage;
mod row;

use std::fmt;
use std::time::Duration;

pub use faulty::{FaultOp, FaultyStorage};
#[cfg(feature = "fdb")]
pub use fdb_storage::FdbStorage;
#[cfg(feature = "fjall")]
pub use fjall_storage::FjallStorage;
pub use memory::MemoryStorage;
#[cfg(feature = "postgres")]
pub use postgres_storage::PostgresStorage;
pub use redb_storage::RedbStorage;

/// The embedded durable backend: redb, chosen over fjall from the measurements in
/// `docs/storage.md` (faster checkpoints and recovery, one file, no background threads).
/// Open it with `EmbeddedStorage::open(dir)`.
pub type EmbeddedStorage = RedbStorage;

/// One checkpoint row as written: key and new value, `None` for a deletion.
pub type CheckpointRow = (Vec<u8>, Option<Vec<u8>>);

/// One live row as read back from a checkpoint: key and value.
pub type LiveRow = (Vec<u8>, Vec<u8>);

/// A durable store for the epoch log and checkpoints.
///
/// Calls are blocking; the transaction layer calls them from a dedicated durability thread, never
/// from an actor. Implementations must be safe to share between threads.
// The visitor parameters spell out `dyn FnMut` so callers see exactly what to pass.
#[allow(clippy::type_complexity)]
pub trait Storage: Send + Sync + 'static {
    /// A short name for reports and errors, e.g. `"memory"`, `"redb"`, `"fdb"`.
    fn name(&self) -> &'static str;

    /// Appends the input batch of `epoch` to the log and makes it durable before returning.
    ///
    /// `epoch` must be exactly one more than the last appended epoch (or any value when the log
    /// is empty, e.g. after truncation to a checkpoint); otherwise [`StorageError::OutOfOrder`].
    /// Appending an epoch that is already logged with identical bytes is a no-op (idempotent
    /// retry); with different bytes it is [`StorageError::OutOfOrder`]. A batch longer than
    /// [`limits::EPOCH_BATCH_BYTES_MAX`] is [`StorageError::TooLarge`] and nothing is written.
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError>;

    /// Appends several consecutive epochs in ONE durable write (group commit across epochs, for
    /// when the log falls behind execution). Each epoch follows the rules of
    /// [`Storage::append_epoch`]; the batch is all-or-nothing in backends that override this
    /// (the default appends one epoch at a time, each durable on its own).
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        for (epoch, batch) in epochs {
            self.append_epoch(*epoch, batch)?;
        }
        Ok(())
    }

    /// Calls `visit` for every logged epoch `>= from`, in increasing order. Stops at and returns
    /// the first error of `visit`. A corrupt record is reported as [`StorageError::Corrupt`]
    /// after the intact records before it were visited.
    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;

    /// The highest logged epoch, or `None` when the log is empty.
    fn last_epoch(&self) -> Result<Option<u64>, StorageError>;

    /// Writes one chunk of the rows of checkpoint `checkpoint_epoch` (the state after that
    /// epoch committed). `None` deletes the row. May be called any number of times before
    /// [`Storage::complete_checkpoint`]; each call is durable when it returns. Starting a new
    /// checkpoint discards the rows of any earlier incomplete one.
    ///
    /// Within one checkpoint a later write of a key replaces an earlier one, so re-writing a
    /// chunk after a failed call is safe. `checkpoint_epoch` must be newer than the latest
    /// complete checkpoint, otherwise [`StorageError::CheckpointOutOfOrder`]. A key longer than
    /// [`limits::CHECKPOINT_KEY_BYTES_MAX`] or a value longer than
    /// [`limits::CHECKPOINT_VALUE_BYTES_MAX`] is [`StorageError::TooLarge`] and nothing of the
    /// chunk is written.
    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), StorageError>;

    /// Atomically marks checkpoint `checkpoint_epoch` complete. Afterwards
    /// [`Storage::read_latest_checkpoint`] returns it.
    ///
    /// Completing a checkpoint no rows were written for is valid (nothing changed); rows of an
    /// incomplete checkpoint with another epoch are discarded. Completing the latest complete
    /// checkpoint again is a no-op (idempotent retry); an older one is
    /// [`StorageError::CheckpointOutOfOrder`].
    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError>;

    /// Visits every live row of the merged state as of the latest complete checkpoint (deleted
    /// rows are not visited), in key order, and returns that checkpoint's epoch, or `None` (and
    /// visits nothing) when no checkpoint was ever completed.
    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError>;

    /// Removes log records of epochs `< epoch`. Only called for `epoch <=` the latest complete
    /// checkpoint's epoch + 1; a larger `epoch` is refused with
    /// [`StorageError::TruncateBeyondCheckpoint`] and removes nothing. Idempotent.
    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError>;

    /// The epoch of the latest complete checkpoint, or `None` when no checkpoint was ever
    /// completed — the epoch [`Storage::read_latest_checkpoint`] would return, without reading
    /// a single row.
    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError>;

    /// The store's info record: a small opaque value the transaction layer writes when it first
    /// uses a store (what application and on-disk format wrote it) and checks at every start.
    /// `None` when it was never written. A damaged record is [`StorageError::CorruptStore`].
    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// Replaces the store's info record and makes it durable before returning. A record longer
    /// than [`limits::STORE_INFO_BYTES_MAX`] is [`StorageError::TooLarge`] and nothing is
    /// written. Independent of the log and the checkpoints: writing it never changes them.
    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError>;

    /// Whether checkpoint writes (`write_checkpoint_rows`, `complete_checkpoint`) go through a
    /// writer of their own that never holds up `append_epochs`. When `false` (the default: one
    /// writer for everything, as in most embedded engines) the runtime makes the log appender
    /// and the checkpoint writer take turns fairly.
    fn checkpoints_have_own_writer(&self) -> bool {
        false
    }

    /// Whether [`Storage::purge_freed_bytes`] is implemented (checked before an erasure
    /// changes anything).
    fn can_purge_freed_bytes(&self) -> bool {
        false
    }

    /// Makes sure no file of the store holds the bytes of data deleted or overwritten before
    /// the call (truncated log records, replaced or deleted checkpoint rows), so an erasure
    /// (`Client::forget`) leaves no copy behind; durable when it returns. The embedded store
    /// rewrites both files from their live entries (other calls wait meanwhile); the in-memory
    /// store has no files. The default refuses with [`StorageError::PurgeUnsupported`]: on a
    /// database server (PostgreSQL, FoundationDB) deleted data lives on in the server's own
    /// files, write-ahead log and backups until the server reclaims them, which this trait
    /// cannot promise; a wrapper around another store must forward it.
    fn purge_freed_bytes(&self) -> Result<(), StorageError> {
        Err(StorageError::PurgeUnsupported {
            backend: self.name(),
        })
    }

    /// Takes or renews the store's lease for `holder`, for `ttl` by the store's clock, and
    /// returns the lease's **term**. The lease is taken when it is free, expired, or already
    /// held by `holder` (a renewal: the term is kept, the expiry moves to now + `ttl`); taking
    /// it from someone else bumps the term, which only ever grows and survives reopening.
    /// While another holder's lease runs the call fails with [`StorageError::LeaseHeld`] naming
    /// that holder and how long its lease still runs. A `ttl` of zero grants a lease anyone may
    /// take over at once. A holder name longer than [`limits::LEASE_HOLDER_BYTES_MAX`] is
    /// [`StorageError::TooLarge`].
    ///
    /// From then on **this handle** is fenced: each of its writes (`append_epoch(s)`,
    /// `write_checkpoint_rows`, `complete_checkpoint`, `truncate_log_below`) checks in the same
    /// store transaction that the store's term is still the one granted, else it writes nothing
    /// and fails with [`StorageError::Fenced`]. Other handles on the same store (another
    /// process, or a second handle in this one) are not affected; a handle that never took a
    /// lease is never fenced. Holder names must be unique per would-be writer: two handles
    /// asking under one name share the lease.
    ///
    /// Which clock decides expiry is the backend's (documented on each): the database's for
    /// PostgreSQL, the cluster's read version for FoundationDB, the local clock for the
    /// embedded and in-memory stores. The default refuses with
    /// [`StorageError::LeaseUnsupported`]; a wrapper around another store must forward it.
    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        let _ = (holder, ttl);
        Err(StorageError::LeaseUnsupported {
            backend: self.name(),
        })
    }
}

/// Everything that can go wrong in a store, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The underlying engine or file system failed (disk full, I/O error, engine error).
    #[error("{backend} storage I/O failed during {operation}: {detail}")]
    Io {
        backend: &'static str,
        operation: &'static str,
        detail: String,
    },
    /// A logged record failed its checksum or is cut short.
    #[error("{backend} log record of epoch {epoch} is corrupt: {detail}")]
    Corrupt {
        backend: &'static str,
        epoch: u64,
        detail: String,
    },
    /// An append did not follow the last logged epoch.
    #[error("{backend}: epoch {epoch} appended out of order (last logged epoch: {last:?})")]
    OutOfOrder {
        backend: &'static str,
        epoch: u64,
        last: Option<u64>,
    },
    /// A value or batch is larger than the backend can store.
    #[error("{backend}: {what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        backend: &'static str,
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// A checkpoint write or completion named a checkpoint that is not newer than the latest
    /// complete one.
    #[error(
        "{backend}: checkpoint {checkpoint_epoch} is not newer than the latest complete \
         checkpoint {latest_complete:?}"
    )]
    CheckpointOutOfOrder {
        backend: &'static str,
        checkpoint_epoch: u64,
        latest_complete: Option<u64>,
    },
    /// A truncation would remove log records that no complete checkpoint covers.
    #[error(
        "{backend}: truncating the log below epoch {epoch} would drop epochs not covered by the \
         latest complete checkpoint {latest_complete:?}"
    )]
    TruncateBeyondCheckpoint {
        backend: &'static str,
        epoch: u64,
        latest_complete: Option<u64>,
    },
    /// Stored data other than a log record (checkpoint rows, metadata, the engine's own files)
    /// is damaged or unreadable.
    #[error("{backend} store is corrupt at {location}: {detail}")]
    CorruptStore {
        backend: &'static str,
        location: String,
        detail: String,
    },
    /// The store's files or directory are no longer the ones opened: deleted, moved or replaced
    /// under the running process. Whatever was written since went to files nobody will find, so
    /// nothing may be acknowledged.
    #[error("{backend} store vanished: {path} {detail}")]
    Vanished {
        backend: &'static str,
        path: String,
        detail: String,
    },
    /// This handle took the store's lease with term `ours`, and another holder has taken it
    /// since (term `current`): the handle belongs to a deposed writer, and nothing was written.
    #[error(
        "{backend}: write refused, this handle's lease (term {ours}) was taken over by another \
         holder (term {current}); nothing was written"
    )]
    Fenced {
        backend: &'static str,
        ours: u64,
        current: u64,
    },
    /// [`Storage::acquire_lease`] while another holder's lease still runs.
    #[error(
        "{backend}: the store's lease is held by {holder:?} (term {term}) for another \
         {remaining_ms} ms"
    )]
    LeaseHeld {
        backend: &'static str,
        holder: String,
        term: u64,
        remaining_ms: u64,
    },
    /// [`Storage::acquire_lease`] on a store (or a wrapper) that does not implement leases.
    #[error("{backend} store does not implement leases, so it cannot fence a deposed writer")]
    LeaseUnsupported { backend: &'static str },
    /// [`Storage::purge_freed_bytes`] on a store that cannot promise its files drop deleted
    /// data.
    #[error(
        "{backend} store cannot rewrite its files so that deleted data is gone from them \
         (erasure needs it)"
    )]
    PurgeUnsupported { backend: &'static str },
    /// An error raised by a caller's visitor, passed through unchanged.
    #[error("{0}")]
    Visitor(String),
}

impl StorageError {
    /// Shorthand for an [`StorageError::Io`] built from any displayable error.
    pub fn io(backend: &'static str, operation: &'static str, err: impl fmt::Display) -> Self {
        StorageError::Io {
            backend,
            operation,
            detail: err.to_string(),
        }
    }
}
