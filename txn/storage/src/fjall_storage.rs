//! The [`Storage`] backend on fjall: an LSM-tree with a write-ahead journal; every write is one
//! atomic cross-keyspace batch persisted with `PersistMode::SyncAll` (fsync) before returning.
//!
//! # Layout
//!
//! One fjall database in the data directory, four keyspaces:
//!
//! ```text
//! epoch_log           u64 epoch (8 bytes BE) -> record envelope (crc32c, len, batch)   see `record`
//! checkpoint_state    0x01 ++ row key -> row envelope (crc32c, tag 1, value)     merged state as of the
//!                                                                          latest complete checkpoint
//! checkpoint_pending  0x01 ++ row key -> row envelope (crc32c, tag 0|1, value)   rows of the one
//!                                                                          incomplete checkpoint
//! meta                "latest_complete" -> u64 + crc32c
//!                     "pending_epoch"   -> u64 + crc32c  (which checkpoint `checkpoint_pending` holds)
//!                     "store_info"      -> crc32c + the store info record
//! ```
//!
//! Row keys get a one-byte prefix because fjall refuses empty keys; it keeps the key order.
//!
//! Completing checkpoint `c` is one batch that applies every pending row to `checkpoint_state`
//! and sets `latest_complete = c`; the pending keyspace is cleared afterwards. Pending rows are
//! only trusted while `pending_epoch` names the checkpoint being written or completed.
//! All writes go through one lock, so the check-then-write of an append is atomic.
//!
//! The lease (see [`Storage::acquire_lease`]; expiry by the local clock) is the `"lease"` value
//! of `meta`; a fenced handle's writes check its term under the same writer lock.
//! [`FjallStorage::open_another`] gives a second handle on a database this process has open
//! (see `open_stores`), with its own lease term.
//!
//! # Corruption
//!
//! fjall checksums journal batches and table blocks and verifies them when it reads them from
//! disk. A torn last journal batch (a crash during a write) is dropped on open — it was never
//! acknowledged because its fsync had not returned. Any other damage fails
//! [`FjallStorage::open`] or the read that meets it with [`StorageError::CorruptStore`]. On top,
//! every value carries the checksums of [`crate::record`] and `row`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::Mutex;

use crate::identity::PathIdentity;
use crate::lease::{self, HeldTerm, LeaseRecord};
use crate::open_stores::Share;
use crate::{CheckpointRow, Storage, StorageError, limits, record, row};

const BACKEND: &str = "fjall";

const ROW_KEY_PREFIX: u8 = 0x01;

const META_LATEST: &str = "latest_complete";
const META_PENDING: &str = "pending_epoch";
/// The store info record (see [`Storage::write_store_info`]).
const META_STORE_INFO: &str = "store_info";

/// A [`Storage`] in one fjall database directory. [`FjallStorage::open_another`] gives another
/// handle on a database this process has open.
pub struct FjallStorage {
    engine: Arc<Engine>,
    /// The lease term this handle took, if any.
    held: HeldTerm,
}

/// The open database of a store, shared by its handles.
struct Engine {
    db: Database,
    log: Keyspace,
    state: Keyspace,
    pending: Keyspace,
    meta: Keyspace,
    /// Serialises writers so the checks before a write see the state the write applies to.
    write_lock: Mutex<()>,
    dir: PathBuf,
    /// What the data directory was at open: checked after every write, so a directory deleted
    /// or replaced under the running process fails the next write instead of acknowledging it.
    identity: PathIdentity,
}

impl FjallStorage {
    /// Opens the store in `dir`, creating it if needed, and recovers its journal.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|err| StorageError::io(BACKEND, "create data directory", err))?;
        Self::open_shared(dir, Share::OpenNew)
    }

    /// Another handle on the store in `dir` that this process has open already: the same
    /// database, its own lease (see [`Storage::acquire_lease`]); for handing the store over from
    /// one writer to the next. Fails if the store is not open here.
    pub fn open_another(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_shared(dir.as_ref(), Share::JoinOpen)
    }

    fn open_shared(dir: &Path, share: Share) -> Result<Self, StorageError> {
        let still_valid = |engine: &Engine| engine.identity.check().is_ok();
        let engine =
            crate::open_stores::shared(BACKEND, dir, share, still_valid, || Engine::open(dir))?;
        Ok(Self {
            engine,
            held: HeldTerm::default(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.engine.dir
    }

    /// Refuses, under the writer lock, the write of a handle whose lease was taken over.
    fn check_fence(&self, operation: &'static str) -> Result<(), StorageError> {
        let Some(ours) = self.held.get() else {
            return Ok(());
        };
        let current = self.engine.read_lease(operation)?;
        lease::check_fence(BACKEND, ours, current.map_or(0, |record| record.term))
    }
}

impl Engine {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        let dir = dir.to_path_buf();
        let err = |e| engine_error(&dir, "open", e);
        let db = Database::builder(&dir).open().map_err(err)?;
        let log = db
            .keyspace("epoch_log", KeyspaceCreateOptions::default)
            .map_err(err)?;
        let state = db
            .keyspace("checkpoint_state", KeyspaceCreateOptions::default)
            .map_err(err)?;
        let pending = db
            .keyspace("checkpoint_pending", KeyspaceCreateOptions::default)
            .map_err(err)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(err)?;
        let identity = PathIdentity::capture(BACKEND, &dir)?;
        Ok(Self {
            db,
            log,
            state,
            pending,
            meta,
            write_lock: Mutex::new(()),
            dir,
            identity,
        })
    }

    fn read_lease(&self, operation: &'static str) -> Result<Option<LeaseRecord>, StorageError> {
        match self
            .meta
            .get(lease::META_LEASE)
            .map_err(self.err(operation))?
        {
            Some(stored) => LeaseRecord::decode(BACKEND, &stored).map(Some),
            None => Ok(None),
        }
    }

    fn err(&self, operation: &'static str) -> impl Fn(fjall::Error) -> StorageError + '_ {
        move |err| engine_error(&self.dir, operation, err)
    }

    fn read_meta(
        &self,
        reader: &impl Readable,
        name: &str,
        operation: &'static str,
    ) -> Result<Option<u64>, StorageError> {
        match reader.get(&self.meta, name).map_err(self.err(operation))? {
            Some(stored) => row::decode_meta(BACKEND, name, &stored).map(Some),
            None => Ok(None),
        }
    }

    fn check_newer(
        &self,
        checkpoint_epoch: u64,
        operation: &'static str,
    ) -> Result<(), StorageError> {
        let latest = self.read_meta(&self.db.snapshot(), META_LATEST, operation)?;
        match latest {
            Some(latest_epoch) if checkpoint_epoch <= latest_epoch => {
                Err(StorageError::CheckpointOutOfOrder {
                    backend: BACKEND,
                    checkpoint_epoch,
                    latest_complete: latest,
                })
            }
            _ => Ok(()),
        }
    }

    fn durable_batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::SyncAll))
    }

    /// Commits a durable batch, then checks that the data directory is still the one opened.
    fn commit(
        &self,
        write: fjall::OwnedWriteBatch,
        err: &impl Fn(fjall::Error) -> StorageError,
    ) -> Result<(), StorageError> {
        write.commit().map_err(err)?;
        self.identity.check()
    }
}

fn engine_error(dir: &Path, operation: &'static str, err: fjall::Error) -> StorageError {
    use fjall::Error as E;
    let corrupt = match &err {
        E::Io(_) | E::Poisoned | E::Locked | E::KeyspaceDeleted => false,
        E::Storage(lsm_err) => !matches!(lsm_err, fjall::LsmError::Io(_)),
        _ => true,
    };
    if corrupt {
        StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("directory {} ({operation})", dir.display()),
            detail: format!("{err:?}"),
        }
    } else {
        StorageError::Io {
            backend: BACKEND,
            operation,
            detail: format!("{err:?} (directory {})", dir.display()),
        }
    }
}

/// Prefixes a row key: fjall refuses empty keys, and one constant byte keeps the order.
fn stored_row_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(1 + key.len());
    stored.push(ROW_KEY_PREFIX);
    stored.extend_from_slice(key);
    stored
}

/// The row key inside a stored row key.
fn row_key(stored: &[u8]) -> Result<&[u8], StorageError> {
    match stored.split_first() {
        Some((&ROW_KEY_PREFIX, key)) => Ok(key),
        _ => Err(StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("checkpoint row key {}", row::display_key(stored)),
            detail: format!("missing the {ROW_KEY_PREFIX:#04x} prefix"),
        }),
    }
}

fn epoch_key(epoch: u64) -> [u8; 8] {
    epoch.to_be_bytes()
}

fn key_epoch(key: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("epoch_log key {}", row::display_key(key)),
            detail: format!("{} bytes instead of 8", key.len()),
        })
}

impl Storage for FjallStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        limits::check_batch(BACKEND, batch)?;
        let err = self.engine.err("append_epoch");
        let _writer = self.engine.write_lock.lock();
        self.check_fence("append_epoch")?;
        let last = self.last_epoch()?;
        match last {
            None => {}
            Some(last) if last.checked_add(1) == Some(epoch) => {}
            Some(_) => {
                // A retry of an append that may already have succeeded.
                let out_of_order = StorageError::OutOfOrder {
                    backend: BACKEND,
                    epoch,
                    last,
                };
                let Some(stored) = self.engine.log.get(epoch_key(epoch)).map_err(&err)? else {
                    return Err(out_of_order);
                };
                let (payload, _) = record::decode(BACKEND, epoch, &stored)?;
                return if payload == batch {
                    Ok(())
                } else {
                    Err(out_of_order)
                };
            }
        }
        let mut write = self.engine.durable_batch();
        write.insert(
            &self.engine.log,
            epoch_key(epoch),
            record::encode(epoch, batch),
        );
        self.engine.commit(write, &err)
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let err = self.engine.err("read_epochs");
        let snapshot = self.engine.db.snapshot();
        let mut previous = None;
        for entry in snapshot.range(&self.engine.log, epoch_key(from)..) {
            let (key, stored) = entry.into_inner().map_err(&err)?;
            let epoch = key_epoch(&key)?;
            row::visit_record(BACKEND, &mut previous, epoch, &stored, visit)?;
        }
        Ok(())
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        match self.engine.log.last_key_value() {
            Some(entry) => {
                let key = entry.key().map_err(self.engine.err("last_epoch"))?;
                key_epoch(&key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        limits::check_rows(BACKEND, rows)?;
        let operation = "write_checkpoint_rows";
        let err = self.engine.err(operation);
        let _writer = self.engine.write_lock.lock();
        self.check_fence(operation)?;
        self.engine.check_newer(checkpoint_epoch, operation)?;
        let pending_epoch =
            self.engine
                .read_meta(&self.engine.db.snapshot(), META_PENDING, operation)?;
        let mut write = self.engine.durable_batch();
        if pending_epoch != Some(checkpoint_epoch) {
            // Starting a new checkpoint: drop the rows of the abandoned one. The clear is
            // journaled before the batch below and made durable by its fsync.
            self.engine.pending.clear().map_err(&err)?;
            write.insert(
                &self.engine.meta,
                META_PENDING,
                row::encode_meta(META_PENDING, checkpoint_epoch).to_vec(),
            );
        }
        for (key, value) in rows {
            write.insert(
                &self.engine.pending,
                stored_row_key(key),
                row::encode_row(key, value.as_deref()),
            );
        }
        self.engine.commit(write, &err)
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let operation = "complete_checkpoint";
        let err = self.engine.err(operation);
        let _writer = self.engine.write_lock.lock();
        self.check_fence(operation)?;
        let snapshot = self.engine.db.snapshot();
        if self.engine.read_meta(&snapshot, META_LATEST, operation)? == Some(checkpoint_epoch) {
            return Ok(());
        }
        self.engine.check_newer(checkpoint_epoch, operation)?;
        let mut write = self.engine.durable_batch();
        if self.engine.read_meta(&snapshot, META_PENDING, operation)? == Some(checkpoint_epoch) {
            for entry in snapshot.iter(&self.engine.pending) {
                let (stored_key, stored) = entry.into_inner().map_err(&err)?;
                match row::decode_row(BACKEND, row_key(&stored_key)?, &stored)? {
                    // The envelope of a live row is the same in both keyspaces.
                    Some(_) => write.insert(&self.engine.state, stored_key, stored),
                    None => write.remove(&self.engine.state, stored_key),
                }
            }
        }
        write.insert(
            &self.engine.meta,
            META_LATEST,
            row::encode_meta(META_LATEST, checkpoint_epoch).to_vec(),
        );
        write.remove(&self.engine.meta, META_PENDING);
        self.engine.commit(write, &err)?;
        // Leftover pending rows are harmless (no `pending_epoch` names them), so a failure here
        // does not undo the completion; the next checkpoint clears them again.
        if let Err(e) = self.engine.pending.clear() {
            tracing::warn!(error = ?e, "fjall: clearing the rows of a completed checkpoint failed");
        }
        // Flush the memtables to tables so the journal holding the checkpoint can be dropped;
        // otherwise every reopen replays it row by row (seconds for 1,000,000 rows).
        for keyspace in [&self.engine.state, &self.engine.meta, &self.engine.log] {
            keyspace.rotate_memtable_and_wait().map_err(&err)?;
        }
        Ok(())
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let operation = "read_latest_checkpoint";
        let err = self.engine.err(operation);
        let snapshot = self.engine.db.snapshot();
        let latest = self.engine.read_meta(&snapshot, META_LATEST, operation)?;
        if latest.is_none() {
            return Ok(None);
        }
        for entry in snapshot.iter(&self.engine.state) {
            let (stored_key, stored) = entry.into_inner().map_err(&err)?;
            let key = row_key(&stored_key)?;
            row::visit_live_row(BACKEND, key, &stored, visit)?;
        }
        Ok(latest)
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.engine.read_meta(
            &self.engine.db.snapshot(),
            META_LATEST,
            "latest_checkpoint_epoch",
        )
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let stored = self
            .engine
            .meta
            .get(META_STORE_INFO)
            .map_err(self.engine.err("read_store_info"))?;
        match stored {
            Some(stored) => row::decode_meta_bytes(BACKEND, META_STORE_INFO, &stored)
                .map(|info| Some(info.to_vec())),
            None => Ok(None),
        }
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        limits::check_store_info(BACKEND, info)?;
        let err = self.engine.err("write_store_info");
        let _writer = self.engine.write_lock.lock();
        let mut write = self.engine.durable_batch();
        write.insert(
            &self.engine.meta,
            META_STORE_INFO,
            row::encode_meta_bytes(META_STORE_INFO, info),
        );
        self.engine.commit(write, &err)
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        let operation = "truncate_log_below";
        let err = self.engine.err(operation);
        let _writer = self.engine.write_lock.lock();
        self.check_fence(operation)?;
        let snapshot = self.engine.db.snapshot();
        let latest = self.engine.read_meta(&snapshot, META_LATEST, operation)?;
        row::check_truncation(BACKEND, epoch, latest)?;
        let mut write = self.engine.durable_batch();
        for entry in snapshot.range(&self.engine.log, ..epoch_key(epoch)) {
            let key = entry.key().map_err(&err)?;
            write.remove(&self.engine.log, key);
        }
        self.engine.commit(write, &err)
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        lease::check_holder(BACKEND, holder)?;
        let operation = "acquire_lease";
        let err = self.engine.err(operation);
        let _writer = self.engine.write_lock.lock();
        let current = self.engine.read_lease(operation)?;
        let granted = lease::grant_by_local_clock(BACKEND, current.as_ref(), holder, ttl)?;
        let mut write = self.engine.durable_batch();
        write.insert(&self.engine.meta, lease::META_LEASE, granted.encode());
        self.engine.commit(write, &err)?;
        self.held.set(granted.term);
        Ok(granted.term)
    }
}
