//! The [`Storage`] backend on redb: two copy-on-write B-tree files, every write one
//! `Durability::Immediate` transaction (fsync before the commit returns).
//!
//! # Layout
//!
//! Files in the data directory: `vmsdb.redb` (the epoch log), `vmsdb-checkpoints.redb` (the
//! other three tables), a `.created` marker next to each (written once the file exists, so a
//! later missing or emptied file is reported rather than silently replaced by a new, empty
//! one) and, only after a failed integrity check, `vmsdb.redb.integrity-failed`. redb lets one
//! writer in per file, so the long transaction that completes a checkpoint never holds up a
//! log append. The tables:
//!
//! ```text
//! table                      key        value
//! epoch_log                  u64 epoch  record envelope (crc32c, len, batch)         see `record`
//! checkpoint_state           row key    row envelope (crc32c, tag 1, value): the merged state
//!                                       as of the latest complete checkpoint
//! checkpoint_pending_blobs   u64 seq    record envelope of a blob of rows
//!                                       [key len, key, envelope len, envelope]*: the rows of the
//!                                       one incomplete checkpoint, in write order
//! meta                       "latest_complete"  u64 + crc32c
//!                            "pending_epoch"    u64 + crc32c: whose rows the blobs hold
//!                            "merge_from"       crc32c + key: set while the blobs hold rows
//!                                               of the latest complete checkpoint not yet
//!                                               merged, from this key on
//!                            "store_info"       crc32c + the store info record
//! ```
//!
//! The lease (see [`Storage::acquire_lease`]; expiry by the local clock) lives in the log
//! file's `log_meta` table as `"lease"` (holder, term, expiry; checksummed), and its term again
//! in the checkpoint file's `meta` as `"lease_term"`, so a fenced handle's appends and
//! truncations check the term in the log file's write transaction and its checkpoint writes in
//! the checkpoint file's. Taking the lease writes the log file first, then raises the
//! checkpoint file's term (never lowers it; a renewal, finding it raised, writes only the log
//! file, so it never waits for a long checkpoint write); it returns only after both, so every write of the
//! deposed holder that is not refused happened before the new holder's first write. Opening a
//! directory this process already has open is refused; [`RedbStorage::open_another`] gives a
//! second handle on the same files (see `open_stores`), with its own lease term. redb locks its
//! files for one process, so a lease recorded before this process opened them belongs to a
//! process that no longer has the store: it counts as run out (a restart after a crash takes
//! the store at once, with a newer term, which still fences nothing but the dead process).
//!
//! The (device, inode) of both files is remembered at open and checked after every committed
//! write: a data directory deleted or replaced under the running process fails the next write
//! with [`StorageError::Vanished`] (see `identity`).
//!
//! A chunk of checkpoint rows is sorted by key and appended as one blob (split above
//! [`limits::REDB_PENDING_BLOB_BYTES_MAX`]): appending at the end of a small table costs one
//! fsync and a few pages, where inserting the rows one by one into a keyed table rewrote pages
//! all over it in every chunk's transaction (about 3x slower for 1,000,000 rows).
//! Completing checkpoint `c` is one small transaction that sets `latest_complete = c` and
//! `merge_from` (the empty key), followed by a merge of the blobs into `checkpoint_state` in
//! key order (a later write of a key wins; a deletion removes the row) in steps of at most
//! [`limits::REDB_MERGE_STEP_ROWS`] rows or [`limits::REDB_MERGE_STEP_BYTES`] bytes, each one
//! durable transaction that applies the next key range and moves `merge_from` past it; the
//! last removes `merge_from`, and the merged blobs are then removed a few megabytes per
//! transaction. So the checkpoint flips atomically, and no commit writes out more than one
//! step's pages: merged in one transaction, a checkpoint of millions of rows wrote and synced
//! hundreds of megabytes in its commit while log appends on the same disk waited behind it
//! (the two files have separate writers, but share the disk). The merge is a k-way merge of
//! the blobs (`PendingRows`), so the state table's pages are visited once, in order, as in one
//! transaction: applied blob after blob, each of the hundreds of blobs of a large checkpoint
//! walked the whole table again, and the completion of 2,000,000 rows took 39–56 s instead of
//! 8–18 s (`benches/checkpoint_write.rs`). The merge lists the blobs with their first keys,
//! then reads each blob (in a read transaction of its own) only when the merge reaches its
//! first key and drops it after its last row: a checkpoint's blobs are its tables' rows in
//! chunks of consecutive keys, so it holds a few blobs at a time, where holding every blob
//! took about 35 bytes a row (0.7 GB at 20 M rows).
//! While `merge_from` is set (during the merge, or after one cut short by an error or a
//! crash), a read of the checkpoint (`read_latest_checkpoint`) takes from one snapshot the
//! state below `merge_from` and, from it on, each key's last write in the blobs over the
//! state's row: it sees the complete checkpoint whole and never waits for the merge. The next
//! chunk write or completion finishes an unfinished merge first, from `merge_from` on, under
//! one lock (`Files::merge`), each step fenced by the handle's lease term like every
//! checkpoint write; so rows of the next checkpoint never join the blobs, and the blobs are
//! never dropped as an abandoned checkpoint's while they still hold rows to merge.
//! Otherwise, blobs are only trusted while `pending_epoch` names the checkpoint being written
//! or completed; else they are leftovers of an abandoned checkpoint and are dropped. Every
//! write, the order checks included, is one redb write transaction.
//!
//! # Corruption: refuse, never return
//!
//! - **At open** redb first repairs the file if the last shutdown was unclean: a commit whose
//!   checksum fails (torn by a crash before its fsync returned, so never acknowledged) is
//!   dropped and the previous commit is used. Then [`RedbStorage::open`] verifies the checksum of
//!   every live page (`check_integrity`, ~0.1 s for 1,000,000 rows). Damage fails the open with
//!   [`StorageError::Corrupt`] naming the epoch when our own checksums can find the damaged log
//!   record, else [`StorageError::CorruptStore`] naming the row, the metadata or the file. A
//!   file cut short is refused the same way ("truncated below stored layout"). Should redb ever
//!   repair a cleanly closed file by rolling it back, the open fails and writes
//!   `vmsdb.redb.integrity-failed`, refusing every later open until an operator deletes it.
//!   redb panics on some structurally damaged files; the open turns that panic into
//!   [`StorageError::CorruptStore`].
//! - **On every read** the [`crate::record`] checksum of each log record (naming the epoch), the
//!   `row` checksum of each checkpoint row and metadata value, and the log's lack of
//!   gaps are checked, because redb does not verify its page checksums on plain reads: damage
//!   that happens while the store is open is still reported, never returned.
//!
//! Nothing is truncated silently except the torn, unacknowledged last commit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::identity::PathIdentity;
use crate::lease::{self, HeldTerm, LeaseRecord};
use crate::open_stores::Share;
use crate::{CheckpointRow, Storage, StorageError, limits, record, row};

const BACKEND: &str = "redb";

/// The file inside the data directory that holds the epoch log.
pub const FILE_NAME: &str = "vmsdb.redb";

/// The file that holds the checkpoints (state, pending blobs, metadata). A separate redb file
/// has its own writer, so completing a large checkpoint never holds up log appends.
pub const CHECKPOINT_FILE_NAME: &str = "vmsdb-checkpoints.redb";

/// Written next to the log file once the store was created, so a later missing or emptied file
/// is reported instead of silently replaced by a new, empty store.
pub const CREATED_MARKER: &str = "vmsdb.redb.created";

/// The same for the checkpoint file.
pub const CHECKPOINT_CREATED_MARKER: &str = "vmsdb-checkpoints.redb.created";

/// Written next to the file when an integrity check failed; its presence makes
/// [`RedbStorage::open`] refuse until an operator removes it.
pub const INTEGRITY_FAILED_MARKER: &str = "vmsdb.redb.integrity-failed";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("epoch_log");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("checkpoint_state");
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoint_pending_blobs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The log file's metadata: the lease.
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");

const META_LATEST: &str = "latest_complete";
const META_PENDING: &str = "pending_epoch";
/// The store info record (see [`Storage::write_store_info`]).
const META_STORE_INFO: &str = "store_info";
/// The checkpoint file's copy of the lease term, checked by fenced checkpoint writes.
const META_LEASE_TERM: &str = "lease_term";
/// Present while the pending blobs hold the rows of the latest complete checkpoint that are not
/// yet merged into the state table: the first key not yet merged (checksummed like the store
/// info record).
const META_MERGE_FROM: &str = "merge_from";

/// A [`Storage`] in two redb files inside a data directory: the log and the checkpoints.
/// [`RedbStorage::open_another`] gives another handle on a store this process has open.
pub struct RedbStorage {
    files: Arc<Files>,
    /// The lease term this handle took, if any.
    held: HeldTerm,
}

/// The two open files of a store, shared by its handles.
struct Files {
    /// The open databases; replaced whole when the files are rewritten
    /// ([`Storage::purge_freed_bytes`]), which holds the write lock while it rewrites.
    live: parking_lot::RwLock<Live>,
    /// The epoch log's path.
    path: PathBuf,
    /// The checkpoints' path.
    ckpt_path: PathBuf,
    /// The lease term recorded when this process opened the files (0: none). redb locks its
    /// files for one process, so that lease's holder, if it was another process, no longer
    /// has the store: the lease is void and the next taker gets it at once (with a newer term)
    /// instead of waiting for it to run out after a crash.
    lease_term_at_open: u64,
    /// Held by a completion while it flips and merges, and by every chunk write while it
    /// checks this (reads do not take it); `true` while a complete checkpoint's rows may not
    /// all be merged into the state table yet (`META_MERGE_FROM` may be set): after a
    /// completion that failed or a crash mid-merge, the next chunk write or completion
    /// finishes the merge first.
    merge: parking_lot::Mutex<bool>,
    /// Rows and bytes of one merge step (`limits::REDB_MERGE_STEP_ROWS`, `_BYTES`; smaller in
    /// tests).
    merge_step: parking_lot::Mutex<(usize, usize)>,
    /// Test hook: the merge fails (as an I/O error would) after this many steps.
    #[cfg(test)]
    merge_fail_after_steps: std::sync::atomic::AtomicU64,
    /// Test counter: commits of checkpoint-file write transactions.
    #[cfg(test)]
    checkpoint_commits: std::sync::atomic::AtomicU64,
}

/// The open databases of a store and what their paths named when they were opened.
struct Live {
    /// The epoch log.
    db: Database,
    /// The checkpoints.
    ckpt: Database,
    /// What the two paths named at open: checked after every write, so a store deleted or
    /// replaced under the running process fails its next write instead of acknowledging it.
    identity: [PathIdentity; 2],
}

/// Which of the two files a transaction is on.
#[derive(Clone, Copy)]
enum File {
    Log,
    Checkpoints,
}

impl RedbStorage {
    /// Opens the store in `dir`, creating the directory and the file if needed. After an unclean
    /// shutdown redb first repairs the file (walks and verifies it), which takes time in
    /// proportion to its size.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|err| StorageError::io(BACKEND, "create data directory", err))?;
        Self::open_shared(dir, Share::OpenNew)
    }

    /// Another handle on the store in `dir` that this process has open already: the same files,
    /// its own lease (see [`Storage::acquire_lease`]); for handing the store over from one
    /// writer to the next. Fails if the store is not open here.
    pub fn open_another(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_shared(dir.as_ref(), Share::JoinOpen)
    }

    fn open_shared(dir: &Path, share: Share) -> Result<Self, StorageError> {
        let still_valid = |files: &Files| {
            files
                .live
                .read()
                .identity
                .iter()
                .all(|id| id.check().is_ok())
        };
        let files =
            crate::open_stores::shared(BACKEND, dir, share, still_valid, || Files::open(dir))?;
        Ok(Self {
            files,
            held: HeldTerm::default(),
        })
    }

    /// Sets the most rows and bytes one step of a completion's merge applies (by default
    /// [`limits::REDB_MERGE_STEP_ROWS`] and [`limits::REDB_MERGE_STEP_BYTES`]), for every
    /// handle on this store: for tests that stop a process between steps, and for benches.
    #[doc(hidden)]
    pub fn set_merge_step(&self, rows: usize, bytes: usize) {
        *self.files.merge_step.lock() = (rows.max(1), bytes.max(1));
    }

    /// Whether the latest complete checkpoint's merge into the state is unfinished (cut short
    /// by an error or a crash; reads see the checkpoint whole either way): for tests.
    #[doc(hidden)]
    pub fn merge_unfinished(&self) -> Result<bool, StorageError> {
        self.files.read_checkpoint_meta("merge_unfinished", |meta| {
            Ok(read_merge_from(meta)?.is_some())
        })
    }

    /// The path of the log file.
    pub fn path(&self) -> &Path {
        &self.files.path
    }

    /// The path of the checkpoint file.
    pub fn checkpoint_path(&self) -> &Path {
        &self.files.ckpt_path
    }

    /// Rewrites both files of the store in `dir` (which must not be open) from their live
    /// entries only, each into a new file that then replaces the old one (written, synced,
    /// renamed, directory synced). Pages redb freed — truncated log records, overwritten
    /// checkpoint rows — keep the bytes they held until reused; after this no file holds them.
    pub fn rewrite_files(dir: impl AsRef<Path>) -> Result<(), StorageError> {
        Self::open(dir)?.files.rewrite_live()
    }
}

impl Files {
    /// Rewrites both files from their live entries while the store is open: holds the write
    /// lock (every other call on the store waits), writes each file's live entries into a new
    /// file, syncs it, renames it over the old one, syncs the directory, then opens the new
    /// files and drops the old handles (their unlinked files go with them).
    fn rewrite_live(&self) -> Result<(), StorageError> {
        let mut live = self.live.write();
        let log = rewrite_into_temp(&live.db, &self.path, |from, to| {
            copy_table!(from, to, LOG);
            copy_table!(from, to, LOG_META);
            Ok(())
        })?;
        let ckpt = rewrite_into_temp(&live.ckpt, &self.ckpt_path, |from, to| {
            copy_table!(from, to, STATE);
            copy_table!(from, to, PENDING);
            copy_table!(from, to, META);
            Ok(())
        })?;
        for (temp, path) in [(log, &self.path), (ckpt, &self.ckpt_path)] {
            std::fs::rename(&temp, path)
                .map_err(|err| StorageError::io(BACKEND, "replace a rewritten file", err))?;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|err| StorageError::io(BACKEND, "sync the data directory", err))?;
        let reopen = |path: &Path| {
            let mut builder = Database::builder();
            builder.set_cache_size(limits::REDB_CACHE_BYTES);
            builder
                .open(path)
                .map_err(|e| engine_error(path, "reopen a rewritten file", e))
        };
        // The old handles close only after the new ones opened: a failure leaves them in place,
        // and their next write reports the replaced files (`StorageError::Vanished`).
        let fresh = Live {
            db: reopen(&self.path)?,
            ckpt: reopen(&self.ckpt_path)?,
            identity: [
                PathIdentity::capture(BACKEND, &self.path)?,
                PathIdentity::capture(BACKEND, &self.ckpt_path)?,
            ],
        };
        *live = fresh;
        Ok(())
    }
}

/// Copies every entry of table `$def` from read transaction `$from` to write transaction `$to`;
/// the target table is created even when the source has none (a checkpoint's completion
/// deletes the pending table, the next write makes it again).
macro_rules! copy_table {
    ($from:expr, $to:expr, $def:expr) => {{
        let mut target = $to.open_table($def)?;
        match $from.open_table($def) {
            Ok(source) => {
                for entry in source.iter()? {
                    let (key, value) = entry?;
                    target.insert(key.value(), value.value())?;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }};
}
use copy_table;

/// Writes the live entries of `db` (copied by `copy`) into a new file beside `path`, synced,
/// and returns its path.
fn rewrite_into_temp(
    db: &Database,
    path: &Path,
    copy: impl FnOnce(&redb::ReadTransaction, &redb::WriteTransaction) -> Result<(), redb::Error>,
) -> Result<PathBuf, StorageError> {
    let temp = path.with_extension("redb.rewrite");
    let _ = std::fs::remove_file(&temp);
    let fresh = Database::create(&temp).map_err(|e| engine_error(&temp, "create", e))?;
    let read = db
        .begin_read()
        .map_err(|e| engine_error(path, "rewrite", e))?;
    let write = fresh
        .begin_write()
        .map_err(|e| engine_error(&temp, "rewrite", e))?;
    copy(&read, &write).map_err(|e| engine_error(path, "rewrite", e))?;
    write
        .commit()
        .map_err(|e| engine_error(&temp, "rewrite", e))?;
    drop(fresh);
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|err| StorageError::io(BACKEND, "sync a rewritten file", err))?;
    Ok(temp)
}

impl Files {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        let marker = dir.join(INTEGRITY_FAILED_MARKER);
        if marker.exists() {
            let note = std::fs::read_to_string(&marker).unwrap_or_default();
            return Err(StorageError::CorruptStore {
                backend: BACKEND,
                location: format!("directory {}", dir.display()),
                detail: format!(
                    "an earlier integrity check failed and redb rolled a file back, so \
                     acknowledged writes may be missing; refusing to open until an operator \
                     deletes {} ({})",
                    marker.display(),
                    note.trim()
                ),
            });
        }
        let log_existed = dir.join(CREATED_MARKER).exists();
        if log_existed && !dir.join(CHECKPOINT_CREATED_MARKER).exists() {
            return Err(StorageError::CorruptStore {
                backend: BACKEND,
                location: format!("directory {}", dir.display()),
                detail: format!(
                    "{} exists but {} does not: the checkpoint file is missing, or the store \
                     was written by a version that kept checkpoints in the log file",
                    CREATED_MARKER, CHECKPOINT_CREATED_MARKER
                ),
            });
        }
        let (db, path) = open_file(dir, FILE_NAME, CREATED_MARKER, &marker)?;
        let (ckpt, ckpt_path) = open_file(
            dir,
            CHECKPOINT_FILE_NAME,
            CHECKPOINT_CREATED_MARKER,
            &marker,
        )?;
        let identity = [
            PathIdentity::capture(BACKEND, &path)?,
            PathIdentity::capture(BACKEND, &ckpt_path)?,
        ];
        let mut store = Self {
            live: parking_lot::RwLock::new(Live { db, ckpt, identity }),
            path,
            ckpt_path,
            lease_term_at_open: 0,
            merge: parking_lot::Mutex::new(false),
            merge_step: parking_lot::Mutex::new((
                limits::REDB_MERGE_STEP_ROWS,
                limits::REDB_MERGE_STEP_BYTES,
            )),
            #[cfg(test)]
            merge_fail_after_steps: std::sync::atomic::AtomicU64::new(u64::MAX),
            #[cfg(test)]
            checkpoint_commits: std::sync::atomic::AtomicU64::new(0),
        };
        store.lease_term_at_open = store.write(File::Log, "create tables", |txn| {
            txn.open_table(LOG)?;
            let meta = txn.open_table(LOG_META)?;
            Ok(read_lease(&meta)?.map_or(0, |record| record.term))
        })?;
        let unmerged = store.write(File::Checkpoints, "create tables", |txn| {
            txn.open_table(STATE)?;
            txn.open_table(PENDING)?;
            let meta = txn.open_table(META)?;
            Ok(read_merge_from(&meta)?.is_some())
        })?;
        *store.merge.get_mut() = unmerged;
        for created in [CREATED_MARKER, CHECKPOINT_CREATED_MARKER] {
            let created = dir.join(created);
            if !created.exists() {
                write_created_marker(dir, &created)?;
            }
        }
        Ok(store)
    }

    fn file_path(&self, file: File) -> &Path {
        match file {
            File::Log => &self.path,
            File::Checkpoints => &self.ckpt_path,
        }
    }

    /// Reads one value of the checkpoint file's `meta` table in a read transaction.
    fn read_checkpoint_meta<T>(
        &self,
        operation: &'static str,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        let err = self.err(File::Checkpoints, operation);
        let live = self.live.read();
        let txn = live.ckpt.begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        match read(&meta) {
            Ok(value) => Ok(value),
            Err(TxnError::Storage(e)) => Err(e),
            Err(TxnError::Engine(e)) => Err(err(e)),
        }
    }

    fn err(
        &self,
        file: File,
        operation: &'static str,
    ) -> impl Fn(redb::Error) -> StorageError + '_ {
        let path = self.file_path(file);
        move |err| engine_error(path, operation, err)
    }

    /// Runs `body` in one durable write transaction on `file` and commits it unless `body`
    /// fails.
    fn write<T>(
        &self,
        file: File,
        operation: &'static str,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        let err = self.err(file, operation);
        let live = self.live.read();
        let db = match file {
            File::Log => &live.db,
            File::Checkpoints => &live.ckpt,
        };
        let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| err(e.into()))?;
        match body(&txn) {
            Ok(value) => {
                txn.commit().map_err(|e| err(e.into()))?;
                #[cfg(test)]
                if matches!(file, File::Checkpoints) {
                    self.checkpoint_commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // After the commit: a deletion before it (or during it) is caught, so no write
                // that went to a deleted or replaced file is reported durable.
                live.identity[file as usize].check()?;
                Ok(value)
            }
            Err(TxnError::Storage(e)) => {
                txn.abort().map_err(|e| err(e.into()))?;
                Err(e)
            }
            Err(TxnError::Engine(e)) => Err(err(e)),
        }
    }
}

impl Files {
    /// Merges the pending blobs of the latest complete checkpoint into the state table from
    /// `META_MERGE_FROM` on, when `unmerged` (the guarded flag of [`Files::merge`]) says they
    /// may not all be merged: in steps of at most `merge_step` rows and bytes, each one durable
    /// transaction that applies the next range of keys in key order and moves
    /// `META_MERGE_FROM` past it; the last removes the marker, then the blobs go in pieces
    /// (`drop_merged_blobs`). Every leaf page of
    /// the state table is written once, as in one transaction, but no commit writes out more
    /// than one step's pages. A crash between steps loses nothing: the marker and the rows
    /// before it were committed together, the blobs are still there, and the next merge goes
    /// on from the marker. Each step is fenced by `held`, the lease term of the handle doing
    /// the merge: a deposed holder's merge stops at its next step.
    fn finish_merge(
        &self,
        unmerged: &mut bool,
        held: &HeldTerm,
    ) -> Result<MergeCounts, StorageError> {
        let mut counts = MergeCounts::default();
        if !*unmerged {
            return Ok(counts);
        }
        const OPERATION: &str = "merge a complete checkpoint";
        let err = self.err(File::Checkpoints, OPERATION);
        // The blobs are listed (with their first keys) in one read transaction and read again
        // one at a time as the merge reaches them (`PendingRows`); each step is a write
        // transaction of its own, and the merge's place in every blob carries over from step
        // to step. Steps write the state and meta tables only, so every read sees the same blobs.
        let (from, blobs) = {
            let live = self.live.read();
            let txn = live.ckpt.begin_read().map_err(|e| err(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let from = match read_merge_from(&meta) {
                Ok(Some(from)) => from,
                Ok(None) => {
                    *unmerged = false;
                    return Ok(counts);
                }
                Err(TxnError::Storage(e)) => return Err(e),
                Err(TxnError::Engine(e)) => return Err(err(e)),
            };
            let pending = txn.open_table(PENDING).map_err(|e| err(e.into()))?;
            let blobs = pending_blobs(&pending).map_err(|e| e.into_storage(&err))?;
            (from, blobs)
        };
        counts.blobs = blobs.len() as u64;
        counts.bytes = blobs.iter().map(|b| b.len as u64).sum();
        let load = |seq: u64| {
            // `read_recursive`: a step's write transaction holds a read lock already, and a
            // plain `read` would wait behind a queued writer (`rewrite_live`) that waits for it.
            let live = self.live.read_recursive();
            let txn = live.ckpt.begin_read().map_err(|e| err(e.into()))?;
            let pending = txn.open_table(PENDING).map_err(|e| err(e.into()))?;
            read_blob(&pending, seq).map_err(|e| e.into_storage(&err))
        };
        let mut rows = PendingRows::new(&blobs, &from, load)?;
        let (step_rows, step_bytes) = *self.merge_step.lock();
        loop {
            #[cfg(test)]
            if counts.steps
                >= self
                    .merge_fail_after_steps
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(StorageError::io(
                    BACKEND,
                    OPERATION,
                    std::io::Error::other("test hook: the merge stops here"),
                ));
            }
            let step_started = std::time::Instant::now();
            let (mut applied, mut bytes) = (0, 0);
            let done = self.write(File::Checkpoints, OPERATION, |txn| {
                check_checkpoint_fence(txn, held)?;
                let mut state = txn.open_table(STATE)?;
                while applied < step_rows && bytes < step_bytes {
                    let Some(head) = rows.next()? else { break };
                    // The envelope of a live row is the same in both tables.
                    match head.live {
                        true => state.insert(head.key, head.envelope).map(drop)?,
                        false => state.remove(head.key).map(drop)?,
                    }
                    applied += 1;
                    bytes += head.key.len() + head.envelope.len();
                }
                counts.rows += applied as u64;
                let mut meta = txn.open_table(META)?;
                match rows.peek_key() {
                    Some(next) => {
                        let stored = row::encode_meta_bytes(META_MERGE_FROM, next);
                        meta.insert(META_MERGE_FROM, stored.as_slice())?;
                        Ok(false)
                    }
                    None => {
                        meta.remove(META_MERGE_FROM)?;
                        Ok(true)
                    }
                }
            })?;
            counts.steps += 1;
            let step_seconds = step_started.elapsed().as_secs_f64();
            counts.longest_step_seconds = counts.longest_step_seconds.max(step_seconds);
            tracing::trace!(
                step = counts.steps,
                rows = applied,
                bytes,
                step_seconds,
                "redb: checkpoint merge step committed"
            );
            if done {
                *unmerged = false;
                self.drop_merged_blobs(&blobs, step_bytes)?;
                return Ok(counts);
            }
        }
    }
}

impl Files {
    /// Removes the blobs of a finished merge (leftovers now: `META_PENDING` and
    /// `META_MERGE_FROM` are gone, so nothing reads them) in transactions of about
    /// `piece_bytes` of blobs each: deleting the table of a large checkpoint's blobs in one
    /// transaction took 0.4–0.6 s, the longest step of the completion. After a crash in between,
    /// the next checkpoint's first chunk drops what is left, as any abandoned checkpoint's.
    fn drop_merged_blobs(
        &self,
        blobs: &[PendingBlob],
        piece_bytes: usize,
    ) -> Result<(), StorageError> {
        let mut rest = blobs;
        while !rest.is_empty() {
            let mut bytes = 0;
            let len = rest
                .iter()
                .take_while(|blob| {
                    let take = bytes < piece_bytes;
                    bytes += blob.len;
                    take
                })
                .count();
            let (piece, after) = rest.split_at(len);
            let started = std::time::Instant::now();
            self.write(
                File::Checkpoints,
                "drop a merged checkpoint's blobs",
                |txn| {
                    let mut pending = txn.open_table(PENDING)?;
                    for blob in piece {
                        pending.remove(blob.seq)?;
                    }
                    Ok(())
                },
            )?;
            tracing::trace!(
                blobs = piece.len(),
                step_seconds = started.elapsed().as_secs_f64(),
                "redb: merged checkpoint blobs dropped"
            );
            rest = after;
        }
        Ok(())
    }
}

/// Opens (or creates) one of the store's files: refuses a missing or emptied file once its
/// creation marker exists, and turns redb's panics on damaged files into errors.
fn open_file(
    dir: &Path,
    name: &str,
    created_marker: &str,
    marker: &Path,
) -> Result<(Database, PathBuf), StorageError> {
    let path = dir.join(name);
    let created = dir.join(created_marker);
    // Once a store was created here, a missing or emptied file is damage, not a new store:
    // redb would silently initialise a fresh database in it.
    let existing = created.exists();
    if existing {
        let missing = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => Some("empty"),
            Ok(_) => None,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some("missing"),
            Err(err) => return Err(StorageError::io(BACKEND, "open", err)),
        };
        if let Some(missing) = missing {
            return Err(StorageError::CorruptStore {
                backend: BACKEND,
                location: format!("file {}", path.display()),
                detail: format!(
                    "the database file is {missing} although {} says a store was created here",
                    created.display()
                ),
            });
        }
    }
    // redb panics on some structurally damaged files; a damaged file is bad input, so the
    // panic becomes an error naming the file. Nothing of the store escapes the closure.
    let opened = std::panic::catch_unwind(|| open_and_verify(&path, marker, existing));
    match opened {
        Ok(result) => Ok((result?, path)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".into());
            Err(StorageError::CorruptStore {
                backend: BACKEND,
                location: format!("file {}", path.display()),
                detail: format!("redb panicked while opening and verifying the file: {detail}"),
            })
        }
    }
}

/// Opens the file (redb repairs it first after an unclean shutdown) and verifies the checksum of
/// every live page, so damage is found here and not by a read that might return it.
fn open_and_verify(path: &Path, marker: &Path, existing: bool) -> Result<Database, StorageError> {
    let started = std::time::Instant::now();
    let mut builder = Database::builder();
    builder.set_cache_size(limits::REDB_CACHE_BYTES);
    builder.set_repair_callback(|session| {
        tracing::warn!(
            progress = session.progress(),
            "redb: repairing the store after an unclean shutdown"
        );
    });
    // `open` refuses an empty or foreign file; `create` would initialise it.
    let opened = if existing {
        builder.open(path)
    } else {
        builder.create(path)
    };
    let mut db = opened.map_err(|err| engine_error(path, "open", err))?;
    let intact = match db.check_integrity() {
        Ok(intact) => intact,
        Err(err) => {
            let err = engine_error(path, "verify checksums", err);
            // Name the damaged epoch or row when our own checksums can find it.
            return Err(diagnose(&db).unwrap_or(err));
        }
    };
    if !intact {
        let detail = "a page checksum failed; redb repaired the file by rolling back to an \
                      older commit, so acknowledged writes may be missing";
        std::fs::write(marker, detail)
            .map_err(|err| StorageError::io(BACKEND, "write integrity marker", err))?;
        return Err(StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("file {}", path.display()),
            detail: format!("{detail}; wrote {} to refuse later opens", marker.display()),
        });
    }
    tracing::debug!(elapsed = ?started.elapsed(), "redb: opened and verified");
    Ok(db)
}

/// Records durably that a store was created in `dir`.
fn write_created_marker(dir: &Path, created: &Path) -> Result<(), StorageError> {
    let io = |err| StorageError::io(BACKEND, "write creation marker", err);
    let file = std::fs::File::create(created).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// After a failed integrity check: reads the file with our own checksums to name the
/// first damaged log record (by epoch), checkpoint row or metadata value. `None` when the damage
/// is only in redb's own structures (or the file cannot even be read).
fn diagnose(db: &Database) -> Option<StorageError> {
    let found_by = |err: StorageError| -> StorageError {
        match err {
            StorageError::Corrupt {
                backend,
                epoch,
                detail,
            } => StorageError::Corrupt {
                backend,
                epoch,
                detail: format!("{detail} (found by the integrity check at open)"),
            },
            other => other,
        }
    };
    // Each file holds some of the tables; a table the file does not have is skipped.
    let scan = || -> Option<StorageError> {
        let txn = db.begin_read().ok()?;
        if let Ok(log) = txn.open_table(LOG) {
            let mut previous = None;
            for entry in log.iter().ok()? {
                let (key, stored) = entry.ok()?;
                let epoch = key.value();
                if let Err(err) = row::check_contiguous(BACKEND, previous, epoch)
                    .and_then(|()| record::decode(BACKEND, epoch, stored.value()).map(drop))
                {
                    return Some(found_by(err));
                }
                previous = Some(epoch);
            }
        }
        if let Ok(meta) = txn.open_table(META) {
            for name in [META_LATEST, META_PENDING] {
                if let Err(TxnError::Storage(err)) = read_meta(&meta, name) {
                    return Some(err);
                }
            }
            if let Err(TxnError::Storage(err)) = read_store_info(&meta) {
                return Some(err);
            }
            if let Err(TxnError::Storage(err)) = read_merge_from(&meta) {
                return Some(err);
            }
        }
        if let Ok(state) = txn.open_table(STATE) {
            for entry in state.iter().ok()? {
                let (key, stored) = entry.ok()?;
                if let Err(err) = row::decode_row(BACKEND, key.value(), stored.value()) {
                    return Some(err);
                }
            }
        }
        None
    };
    std::panic::catch_unwind(AssertUnwindSafe(scan))
        .ok()
        .flatten()
}

/// One row at the head of the merge, popped from blob `blob`: ordered by key, then by the
/// blob's place in write order, so equal keys pop in the order they were written and the last
/// one wins. Its envelope is a range of the blob's stored bytes.
struct Head {
    key: Vec<u8>,
    blob: usize,
    envelope: std::ops::Range<usize>,
    live: bool,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        (&self.key, self.blob) == (&other.key, other.blob)
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.key, self.blob).cmp(&(&other.key, other.blob))
    }
}

/// A row [`PendingRows::next`] gives: the last write of its key.
struct MergedRow<'r> {
    key: &'r [u8],
    envelope: &'r [u8],
    live: bool,
}

/// A pending blob: its seq, its stored size and its first key, listed before the merge.
struct PendingBlob {
    seq: u64,
    len: usize,
    first: Vec<u8>,
}

/// Lists `pending`'s blobs in seq order (write order) with their first keys. Each blob is read
/// here and dropped again (the merge reads it a second time when it reaches it), so the list
/// costs a key per blob, not the blobs.
fn pending_blobs(
    pending: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<PendingBlob>, TxnError> {
    let mut blobs = Vec::new();
    for entry in pending.iter()? {
        let (seq, stored) = entry?;
        let (seq, stored) = (seq.value(), stored.value());
        let first = first_key(seq, decode_blob(seq, stored)?)?.to_vec();
        blobs.push(PendingBlob {
            seq,
            len: stored.len(),
            first,
        });
    }
    Ok(blobs)
}

/// The stored bytes of pending blob `seq`, listed by [`pending_blobs`] in the same state.
fn read_blob(
    pending: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Vec<u8>, TxnError> {
    match pending.get(seq)? {
        Some(stored) => Ok(stored.value().to_vec()),
        None => Err(TxnError::Storage(StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("pending checkpoint blob {seq}"),
            detail: "the blob is no longer stored".into(),
        })),
    }
}

/// The key of a blob's first row (empty for a blob without rows).
fn first_key(seq: u64, payload: &[u8]) -> Result<&[u8], StorageError> {
    let location = || format!("pending checkpoint blob {seq}");
    let first = row::BlobRows::new(payload).next_row(BACKEND, &location)?;
    Ok(first.map_or(&[][..], |(key, _, _)| key))
}

/// The rows of a stored pending blob.
fn decode_blob(seq: u64, stored: &[u8]) -> Result<&[u8], StorageError> {
    record::decode(BACKEND, seq, stored)
        .map(|(blob, _)| blob)
        .map_err(|err| StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("pending checkpoint blob {seq}"),
            detail: err.to_string(),
        })
}

/// A blob in the merge: its stored bytes while it is loaded (empty before and after), and
/// where its next row starts in them.
struct BlobCursor {
    seq: u64,
    stored: Vec<u8>,
    next: usize,
    end: usize,
}

/// The rows of a complete checkpoint's pending blobs (each sorted by key) in key order, the
/// last write of a key winning: a k-way merge of the blobs, a heap of one head per blob.
///
/// A blob is read (through `load`) only when the merge reaches its first key, and dropped when
/// its last row has been given: a checkpoint's blobs are its tables' rows in chunks of
/// consecutive keys, so few are loaded at once, where reading them all first held the whole
/// checkpoint in memory (about 35 bytes a row: 0.7 GB for 20 M rows).
struct PendingRows<'l> {
    heap: BinaryHeap<Reverse<Head>>,
    cursors: Vec<BlobCursor>,
    /// Blobs not loaded yet, by first key, the smallest last (then by write order).
    unloaded: Vec<(Vec<u8>, usize)>,
    load: Box<dyn FnMut(u64) -> Result<Vec<u8>, StorageError> + 'l>,
    from: Vec<u8>,
    /// The head [`PendingRows::next`] gave last; its blob stays loaded until the next call.
    given: Option<Head>,
    /// Blobs whose last row has been popped, dropped at the next call.
    spent: Vec<usize>,
    /// Key buffers of heads no longer needed, reused for the next heads.
    spare_keys: Vec<Vec<u8>>,
}

impl<'l> PendingRows<'l> {
    /// The rows of `blobs` (in seq order, which is write order) whose keys are at least `from`;
    /// `load` reads a blob's stored bytes by seq.
    fn new(
        blobs: &[PendingBlob],
        from: &[u8],
        load: impl FnMut(u64) -> Result<Vec<u8>, StorageError> + 'l,
    ) -> Result<Self, StorageError> {
        let cursors = blobs
            .iter()
            .map(|b| BlobCursor {
                seq: b.seq,
                stored: Vec::new(),
                next: 0,
                end: 0,
            })
            .collect();
        let mut unloaded: Vec<(Vec<u8>, usize)> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| (b.first.clone(), i))
            .collect();
        unloaded.sort_by(|a, b| b.cmp(a));
        let mut rows = Self {
            heap: BinaryHeap::new(),
            cursors,
            unloaded,
            load: Box::new(load),
            from: from.to_vec(),
            given: None,
            spent: Vec::new(),
            spare_keys: Vec::new(),
        };
        rows.fill()?;
        Ok(rows)
    }

    /// Loads every blob whose first key is not above the heap's smallest key (any blob, when
    /// the heap is empty), so the heap's top is the smallest key of every blob left.
    fn fill(&mut self) -> Result<(), StorageError> {
        while let Some((first, _)) = self.unloaded.last() {
            let due = match self.heap.peek() {
                Some(Reverse(top)) => first.as_slice() <= top.key.as_slice(),
                None => true,
            };
            if !due {
                break;
            }
            let (first, blob) = self.unloaded.pop().expect("an unloaded blob");
            let cursor = &mut self.cursors[blob];
            let seq = cursor.seq;
            let stored = (self.load)(seq)?;
            let payload = decode_blob(seq, &stored)?;
            // The listing read the same blob: another first key means it changed since.
            if first_key(seq, payload)? != first.as_slice() {
                return Err(StorageError::CorruptStore {
                    backend: BACKEND,
                    location: format!("pending checkpoint blob {seq}"),
                    detail: "the blob changed while the checkpoint was being merged".into(),
                });
            }
            let start = payload.as_ptr() as usize - stored.as_ptr() as usize;
            (cursor.next, cursor.end) = (start, start + payload.len());
            cursor.stored = stored;
            let from = std::mem::take(&mut self.from);
            let pushed = self.advance(blob, &from);
            self.from = from;
            pushed?;
            // A blob wholly below `from` (a resumed merge) gave no row: drop it now, not at the
            // next call, or a resumed merge would hold every blob below its place at once. No
            // given row is in it: it was not loaded before.
            if self.spent.last() == Some(&blob) {
                self.spent.pop();
                self.cursors[blob].stored = Vec::new();
            }
            self.spare_keys.push(first);
        }
        Ok(())
    }

    /// Pushes the next row of blob `blob` whose key is at least `from`, if any, onto the heap;
    /// a blob with none left is spent.
    fn advance(&mut self, blob: usize, from: &[u8]) -> Result<(), StorageError> {
        let cursor = &mut self.cursors[blob];
        let seq = cursor.seq;
        let location = || format!("pending checkpoint blob {seq}");
        let base = cursor.stored.as_ptr() as usize;
        let mut rows = row::BlobRows::new(&cursor.stored[cursor.next..cursor.end]);
        while let Some((key, envelope, value)) = rows.next_row(BACKEND, &location)? {
            let at = envelope.as_ptr() as usize - base;
            cursor.next = at + envelope.len();
            if key >= from {
                let mut owned = self.spare_keys.pop().unwrap_or_default();
                owned.clear();
                owned.extend_from_slice(key);
                self.heap.push(Reverse(Head {
                    key: owned,
                    blob,
                    envelope: at..at + envelope.len(),
                    live: value.is_some(),
                }));
                return Ok(());
            }
        }
        self.spent.push(blob);
        Ok(())
    }

    /// The last write of the next key. Equal keys pop in write order (by blob, and within a
    /// blob one after the other), so the last one popped wins.
    fn next(&mut self) -> Result<Option<MergedRow<'_>>, StorageError> {
        if let Some(given) = self.given.take() {
            self.spare_keys.push(given.key);
        }
        for blob in self.spent.drain(..) {
            self.cursors[blob].stored = Vec::new();
        }
        let Some(Reverse(mut head)) = self.heap.pop() else {
            return Ok(None);
        };
        self.advance(head.blob, &[])?;
        self.fill()?;
        while self.peek_key() == Some(head.key.as_slice()) {
            let Some(Reverse(later)) = self.heap.pop() else {
                break;
            };
            self.advance(later.blob, &[])?;
            self.fill()?;
            self.spare_keys
                .push(std::mem::replace(&mut head, later).key);
        }
        let head = self.given.insert(head);
        Ok(Some(MergedRow {
            key: &head.key,
            envelope: &self.cursors[head.blob].stored[head.envelope.clone()],
            live: head.live,
        }))
    }

    /// The key [`PendingRows::next`] gives next.
    fn peek_key(&self) -> Option<&[u8]> {
        self.heap.peek().map(|Reverse(head)| head.key.as_slice())
    }
}

/// What a merge did, for the completion's debug log line.
#[derive(Default)]
struct MergeCounts {
    /// Pending blobs.
    blobs: u64,
    /// Distinct keys applied to the state table.
    rows: u64,
    /// Bytes of the stored blobs.
    bytes: u64,
    /// Write transactions.
    steps: u64,
    /// The longest step, from its start to its commit's return.
    longest_step_seconds: f64,
}

/// An error inside a transaction body: ours, or the engine's.
enum TxnError {
    Storage(StorageError),
    Engine(redb::Error),
}

impl TxnError {
    /// Ours as it is; the engine's as `err` words it.
    fn into_storage(self, err: &impl Fn(redb::Error) -> StorageError) -> StorageError {
        match self {
            TxnError::Storage(e) => e,
            TxnError::Engine(e) => err(e),
        }
    }
}

impl<E: Into<redb::Error>> From<E> for TxnError {
    fn from(err: E) -> Self {
        TxnError::Engine(err.into())
    }
}

impl From<StorageError> for TxnError {
    fn from(err: StorageError) -> Self {
        TxnError::Storage(err)
    }
}

fn fail<T>(err: StorageError) -> Result<T, TxnError> {
    Err(TxnError::Storage(err))
}

fn engine_error(path: &Path, operation: &'static str, err: impl Into<redb::Error>) -> StorageError {
    match err.into() {
        redb::Error::Corrupted(detail) => StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("file {} ({operation})", path.display()),
            detail,
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            StorageError::CorruptStore {
                backend: BACKEND,
                location: format!("file {} ({operation})", path.display()),
                detail: format!("file cut short: {io}"),
            }
        }
        other => StorageError::Io {
            backend: BACKEND,
            operation,
            detail: format!("{other} (file {})", path.display()),
        },
    }
}

fn read_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<u64>, TxnError> {
    match table.get(name)? {
        Some(stored) => match row::decode_meta(BACKEND, name, stored.value()) {
            Ok(value) => Ok(Some(value)),
            Err(err) => fail(err),
        },
        None => Ok(None),
    }
}

fn read_store_info(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Vec<u8>>, TxnError> {
    read_meta_bytes(table, META_STORE_INFO)
}

/// The first key not yet merged of the latest complete checkpoint's pending blobs, if any.
fn read_merge_from(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Vec<u8>>, TxnError> {
    read_meta_bytes(table, META_MERGE_FROM)
}

/// The checked bytes of metadata entry `name` (see `row::encode_meta_bytes`), if present.
fn read_meta_bytes(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
) -> Result<Option<Vec<u8>>, TxnError> {
    match table.get(name)? {
        Some(stored) => match row::decode_meta_bytes(BACKEND, name, stored.value()) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(err) => fail(err),
        },
        None => Ok(None),
    }
}

fn read_lease(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<LeaseRecord>, TxnError> {
    match table.get(lease::META_LEASE)? {
        Some(stored) => match LeaseRecord::decode(BACKEND, stored.value()) {
            Ok(record) => Ok(Some(record)),
            Err(err) => fail(err),
        },
        None => Ok(None),
    }
}

/// Refuses, inside the log file's write transaction `txn`, the write of a handle whose lease
/// was taken over. An unleased handle reads nothing.
fn check_log_fence(txn: &redb::WriteTransaction, held: &HeldTerm) -> Result<(), TxnError> {
    let Some(ours) = held.get() else {
        return Ok(());
    };
    let meta = txn.open_table(LOG_META)?;
    let current = read_lease(&meta)?.map_or(0, |record| record.term);
    lease::check_fence(BACKEND, ours, current).map_err(TxnError::Storage)
}

/// The same inside the checkpoint file's write transaction, against its copy of the term.
fn check_checkpoint_fence(txn: &redb::WriteTransaction, held: &HeldTerm) -> Result<(), TxnError> {
    let Some(ours) = held.get() else {
        return Ok(());
    };
    let meta = txn.open_table(META)?;
    let current = read_meta(&meta, META_LEASE_TERM)?.unwrap_or(0);
    lease::check_fence(BACKEND, ours, current).map_err(TxnError::Storage)
}

fn check_newer(checkpoint_epoch: u64, latest_complete: Option<u64>) -> Result<(), TxnError> {
    match latest_complete {
        Some(latest) if checkpoint_epoch <= latest => fail(StorageError::CheckpointOutOfOrder {
            backend: BACKEND,
            checkpoint_epoch,
            latest_complete,
        }),
        _ => Ok(()),
    }
}

impl Storage for RedbStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        self.append_epochs(&[(epoch, batch)])
    }

    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        for (_, batch) in epochs {
            limits::check_batch(BACKEND, batch)?;
        }
        self.files.write(File::Log, "append_epoch", |txn| {
            check_log_fence(txn, &self.held)?;
            let mut log = txn.open_table(LOG)?;
            for (epoch, batch) in epochs {
                let (epoch, batch) = (*epoch, *batch);
                let last = log.last()?.map(|(key, _)| key.value());
                let out_of_order = StorageError::OutOfOrder {
                    backend: BACKEND,
                    epoch,
                    last,
                };
                match last {
                    None => {}
                    Some(last) if last.checked_add(1) == Some(epoch) => {}
                    Some(_) => {
                        // A retry of an append that may already have succeeded.
                        let Some(stored) = log.get(epoch)? else {
                            return fail(out_of_order);
                        };
                        match record::decode(BACKEND, epoch, stored.value()) {
                            Ok((payload, _)) if payload == batch => continue,
                            Ok(_) => return fail(out_of_order),
                            Err(err) => return fail(err),
                        }
                    }
                }
                log.insert(epoch, record::encode(epoch, batch).as_slice())?;
            }
            Ok(())
        })
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let err = self.files.err(File::Log, "read_epochs");
        let live = self.files.live.read();
        let txn = live.db.begin_read().map_err(|e| err(e.into()))?;
        let log = txn.open_table(LOG).map_err(|e| err(e.into()))?;
        let mut previous = None;
        for entry in log.range(from..).map_err(|e| err(e.into()))? {
            let (key, stored) = entry.map_err(|e| err(e.into()))?;
            let epoch = key.value();
            row::visit_record(BACKEND, &mut previous, epoch, stored.value(), visit)?;
        }
        Ok(())
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        let err = self.files.err(File::Log, "last_epoch");
        let live = self.files.live.read();
        let txn = live.db.begin_read().map_err(|e| err(e.into()))?;
        let log = txn.open_table(LOG).map_err(|e| err(e.into()))?;
        let last = log.last().map_err(|e| err(e.into()))?;
        Ok(last.map(|(key, _)| key.value()))
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        limits::check_rows(BACKEND, rows)?;
        // The blobs of a complete checkpoint whose merge was cut short go into the state
        // before rows of the next one join the pending table.
        let mut unmerged = self.files.merge.lock();
        self.files.finish_merge(&mut unmerged, &self.held)?;
        self.files
            .write(File::Checkpoints, "write_checkpoint_rows", |txn| {
                check_checkpoint_fence(txn, &self.held)?;
                let pending_epoch = {
                    let meta = txn.open_table(META)?;
                    check_newer(checkpoint_epoch, read_meta(&meta, META_LATEST)?)?;
                    read_meta(&meta, META_PENDING)?
                };
                if pending_epoch != Some(checkpoint_epoch) {
                    // Starting a new checkpoint: drop the rows of the abandoned one.
                    txn.delete_table(PENDING)?;
                    let mut meta = txn.open_table(META)?;
                    meta.insert(
                        META_PENDING,
                        &row::encode_meta(META_PENDING, checkpoint_epoch)[..],
                    )?;
                }
                let mut pending = txn.open_table(PENDING)?;
                let mut seq = match pending.last()? {
                    Some((last, _)) => last.value().saturating_add(1),
                    None => 0,
                };
                // Sorted so completion walks the state table in key order; stable so a later write
                // of a key within the chunk still wins.
                let mut sorted: Vec<&CheckpointRow> = rows.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let mut blob = Vec::new();
                for (idx, (key, value)) in sorted.iter().enumerate() {
                    row::push_blob_row(&mut blob, key, value.as_deref());
                    let full = blob.len()
                        + limits::CHECKPOINT_KEY_BYTES_MAX
                        + limits::CHECKPOINT_VALUE_BYTES_MAX
                        + 64
                        > limits::REDB_PENDING_BLOB_BYTES_MAX;
                    if full || idx + 1 == sorted.len() {
                        pending.insert(seq, record::encode(seq, &blob).as_slice())?;
                        seq = seq.saturating_add(1);
                        blob.clear();
                    }
                }
                Ok(())
            })
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let mut unmerged = self.files.merge.lock();
        // An earlier completion's merge, cut short, goes first.
        self.files.finish_merge(&mut unmerged, &self.held)?;
        // From here on the blobs may be the rows of a complete checkpoint, whatever this
        // transaction reports (its commit may succeed and a check after it fail): the next
        // checkpoint write looks at `META_MERGE_FROM` before it drops any blob.
        *unmerged = true;
        // One small transaction makes the checkpoint complete: its rows are the pending blobs
        // from here on, merged into the state in steps below (and by whoever finds the merge
        // unfinished after a failure or a crash).
        let merge = self
            .files
            .write(File::Checkpoints, "complete_checkpoint", |txn| {
                check_checkpoint_fence(txn, &self.held)?;
                let (latest, pending_epoch) = {
                    let meta = txn.open_table(META)?;
                    (
                        read_meta(&meta, META_LATEST)?,
                        read_meta(&meta, META_PENDING)?,
                    )
                };
                if latest == Some(checkpoint_epoch) {
                    return Ok(false);
                }
                check_newer(checkpoint_epoch, latest)?;
                let mut meta = txn.open_table(META)?;
                meta.insert(
                    META_LATEST,
                    &row::encode_meta(META_LATEST, checkpoint_epoch)[..],
                )?;
                meta.remove(META_PENDING)?;
                if pending_epoch == Some(checkpoint_epoch) {
                    let from = row::encode_meta_bytes(META_MERGE_FROM, &[]);
                    meta.insert(META_MERGE_FROM, from.as_slice())?;
                    Ok(true)
                } else {
                    // Leftovers of an abandoned checkpoint, if any.
                    txn.delete_table(PENDING)?;
                    Ok(false)
                }
            })?;
        let completed = started.elapsed();
        *unmerged = merge;
        let merged = self.files.finish_merge(&mut unmerged, &self.held)?;
        tracing::debug!(
            checkpoint_epoch,
            blobs = merged.blobs,
            rows = merged.rows,
            blob_bytes = merged.bytes,
            steps = merged.steps,
            longest_step_seconds = merged.longest_step_seconds,
            complete_seconds = completed.as_secs_f64(),
            merge_seconds = (started.elapsed() - completed).as_secs_f64(),
            "redb: checkpoint completed"
        );
        Ok(())
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let err = self.files.err(File::Checkpoints, "read_latest_checkpoint");
        // One snapshot: while a completion's merge is unfinished (running now, or cut short by
        // an error or a crash), the rows from `META_MERGE_FROM` on are the pending blobs'
        // over the state's. No lock: a read neither waits for a merge nor writes.
        let live = self.files.live.read();
        let txn = live.ckpt.begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let latest = match read_meta(&meta, META_LATEST) {
            Ok(latest) => latest,
            Err(TxnError::Storage(e)) => return Err(e),
            Err(TxnError::Engine(e)) => return Err(err(e)),
        };
        if latest.is_none() {
            return Ok(None);
        }
        let merge_from = match read_merge_from(&meta) {
            Ok(from) => from,
            Err(TxnError::Storage(e)) => return Err(e),
            Err(TxnError::Engine(e)) => return Err(err(e)),
        };
        let state = txn.open_table(STATE).map_err(|e| err(e.into()))?;
        let Some(from) = merge_from else {
            for entry in state.iter().map_err(|e| err(e.into()))? {
                let (key, stored) = entry.map_err(|e| err(e.into()))?;
                row::visit_live_row(BACKEND, key.value(), stored.value(), visit)?;
            }
            return Ok(latest);
        };
        // Below `from` the state is merged; from it on, a key's row is its last write in the
        // blobs if it has one (a deletion: no row), else the state's.
        let pending = txn.open_table(PENDING).map_err(|e| err(e.into()))?;
        let blobs = pending_blobs(&pending).map_err(|e| e.into_storage(&err))?;
        let load = |seq: u64| read_blob(&pending, seq).map_err(|e| e.into_storage(&err));
        let mut unmerged = PendingRows::new(&blobs, &from, load)?;
        for entry in state
            .range::<&[u8]>(..from.as_slice())
            .map_err(|e| err(e.into()))?
        {
            let (key, stored) = entry.map_err(|e| err(e.into()))?;
            row::visit_live_row(BACKEND, key.value(), stored.value(), visit)?;
        }
        let mut merged = state
            .range::<&[u8]>(from.as_slice()..)
            .map_err(|e| err(e.into()))?
            .peekable();
        loop {
            let state_key = match merged.peek() {
                Some(Ok((key, _))) => Some(key.value()),
                Some(Err(_)) => None,
                None => None,
            };
            let blob_first = match (state_key, unmerged.peek_key()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(state_key), Some(blob_key)) => blob_key <= state_key,
            };
            if blob_first {
                let Some(head) = unmerged.next()? else { break };
                if state_key == Some(head.key) {
                    merged.next();
                }
                if head.live {
                    row::visit_live_row(BACKEND, head.key, head.envelope, visit)?;
                }
            } else {
                let Some(entry) = merged.next() else { break };
                let (key, stored) = entry.map_err(|e| err(e.into()))?;
                row::visit_live_row(BACKEND, key.value(), stored.value(), visit)?;
            }
        }
        Ok(latest)
    }

    fn checkpoints_have_own_writer(&self) -> bool {
        // The checkpoints live in their own file, with its own redb writer.
        true
    }

    fn can_purge_freed_bytes(&self) -> bool {
        true
    }

    fn purge_freed_bytes(&self) -> Result<(), StorageError> {
        self.files.rewrite_live()
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.files
            .read_checkpoint_meta("latest_checkpoint_epoch", |meta| {
                read_meta(meta, META_LATEST)
            })
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.files
            .read_checkpoint_meta("read_store_info", read_store_info)
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        limits::check_store_info(BACKEND, info)?;
        self.files
            .write(File::Checkpoints, "write_store_info", |txn| {
                let mut meta = txn.open_table(META)?;
                let stored = row::encode_meta_bytes(META_STORE_INFO, info);
                meta.insert(META_STORE_INFO, stored.as_slice())?;
                Ok(())
            })
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        // The checkpoint that covers the truncated epochs is read first, from its own file;
        // checkpoints only ever advance, so it still covers them when the log write commits.
        let latest = self
            .files
            .read_checkpoint_meta("truncate_log_below", |meta| read_meta(meta, META_LATEST))?;
        self.files.write(File::Log, "truncate_log_below", |txn| {
            check_log_fence(txn, &self.held)?;
            row::check_truncation(BACKEND, epoch, latest)?;
            txn.open_table(LOG)?.retain_in(..epoch, |_, _| false)?;
            Ok(())
        })
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        lease::check_holder(BACKEND, holder)?;
        let term = self.files.write(File::Log, "acquire_lease", |txn| {
            let mut meta = txn.open_table(LOG_META)?;
            let mut current = read_lease(&meta)?;
            // A lease from before this process opened the files ran out with its process.
            if let Some(record) = current.as_mut()
                && record.term == self.files.lease_term_at_open
            {
                record.expires_at_ms = 0;
            }
            let granted = lease::grant_by_local_clock(BACKEND, current.as_ref(), holder, ttl)?;
            meta.insert(lease::META_LEASE, granted.encode().as_slice())?;
            Ok(granted.term)
        })?;
        // Raised, never lowered: a concurrent taker with a newer term may have got here first.
        // Read first, without the file's one writer: a renewal finds the copy up to date and
        // so never waits for a long checkpoint write.
        let copied = self.files.read_checkpoint_meta("acquire_lease", |meta| {
            Ok(read_meta(meta, META_LEASE_TERM)?.unwrap_or(0))
        })?;
        if copied >= term {
            self.held.set(term);
            return Ok(term);
        }
        self.files
            .write(File::Checkpoints, "acquire_lease", |txn| {
                let mut meta = txn.open_table(META)?;
                let copied = read_meta(&meta, META_LEASE_TERM)?.unwrap_or(0);
                if copied < term {
                    meta.insert(
                        META_LEASE_TERM,
                        &row::encode_meta(META_LEASE_TERM, term)[..],
                    )?;
                }
                Ok(())
            })?;
        self.held.set(term);
        Ok(term)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A deterministic stream of pseudo-random numbers (64-bit LCG, high bits).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    fn read_all(store: &RedbStorage) -> (Option<u64>, Vec<crate::LiveRow>) {
        let mut rows = Vec::new();
        let latest = store
            .read_latest_checkpoint(&mut |key, value| {
                rows.push((key.to_vec(), value.to_vec()));
                Ok(())
            })
            .expect("read");
        (latest, rows)
    }

    #[test]
    fn completion_applies_chunks_in_write_order_whatever_their_key_order() {
        // Goal: the completion's merge of the pending blobs in key order gives exactly the state
        // of applying every write in the order it was written — duplicates of a key within a
        // chunk and across chunks, deletions of live and of absent rows, re-inserts after a
        // deletion — over three incremental checkpoints, against a map applied in write order.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStorage::open(dir.path()).expect("open");
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut rng = Lcg(7);
        for (checkpoint, chunks) in [(10u64, 40), (20, 25), (30, 60)] {
            for chunk_idx in 0..chunks {
                let len = 1 + rng.below(120) as usize;
                let chunk: Vec<CheckpointRow> = (0..len)
                    .map(|row_idx| {
                        // 300 keys of varying length: many repeats within and across chunks,
                        // and keys that are prefixes of others.
                        let key_id = rng.below(300);
                        let key = format!("k{key_id}").into_bytes();
                        let value = (rng.below(4) != 0)
                            .then(|| format!("c{checkpoint}/{chunk_idx}/{row_idx}").into_bytes());
                        (key, value)
                    })
                    .collect();
                // Applied in write order: within a chunk, a later row of a key wins.
                for (key, value) in &chunk {
                    match value {
                        Some(value) => model.insert(key.clone(), value.clone()),
                        None => model.remove(key),
                    };
                }
                store
                    .write_checkpoint_rows(checkpoint, &chunk)
                    .expect("write rows");
            }
            store.complete_checkpoint(checkpoint).expect("complete");
            let expected: Vec<crate::LiveRow> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(
                read_all(&store),
                (Some(checkpoint), expected),
                "checkpoint {checkpoint}"
            );
        }
    }

    /// `n` rows `k<i>` (every `stride`-th key of 0.., zero-padded, so key order is number order)
    /// with value `v<tag>`, every seventh one a deletion.
    fn numbered_rows(n: usize, stride: usize, tag: u64) -> Vec<CheckpointRow> {
        (0..n)
            .map(|i| {
                let key = format!("k{:06}", i * stride).into_bytes();
                let value = (i % 7 != 3).then(|| format!("v{tag}/{i}").into_bytes());
                (key, value)
            })
            .collect()
    }

    /// Applies `rows` to `model` as a checkpoint would.
    fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, rows: &[CheckpointRow]) {
        for (key, value) in rows {
            match value {
                Some(value) => model.insert(key.clone(), value.clone()),
                None => model.remove(key),
            };
        }
    }

    fn expected(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<crate::LiveRow> {
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn with_merge_step(store: RedbStorage, rows: usize, bytes: usize) -> RedbStorage {
        store.set_merge_step(rows, bytes);
        store
    }

    #[test]
    fn completion_merges_in_bounded_transactions() {
        // Goal: completing a checkpoint never writes its rows into the state table in one
        // transaction: the merge commits in steps of at most the step's rows (and bytes), so
        // no commit writes out the pages of the whole checkpoint at once. 10,000 rows in 10
        // chunks with steps of 1,000 rows: the completion is its marking transaction and at
        // least 10 merge steps (one transaction for everything before the change); with a
        // bound on bytes instead, the same. The state is exactly the rows written.
        for (step_rows, step_bytes, at_least) in [(1_000, usize::MAX, 10), (usize::MAX, 16_000, 10)]
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = with_merge_step(
                RedbStorage::open(dir.path()).expect("open"),
                step_rows,
                step_bytes,
            );
            let mut model = BTreeMap::new();
            for chunk in 0..10u64 {
                // Interleaved keys: every chunk's rows spread over the whole key range.
                let rows: Vec<CheckpointRow> = numbered_rows(1_000, 10, chunk)
                    .into_iter()
                    .map(|(key, value)| {
                        let mut key = key;
                        key.extend_from_slice(format!("/{chunk}").as_bytes());
                        (key, value)
                    })
                    .collect();
                apply(&mut model, &rows);
                store.write_checkpoint_rows(5, &rows).expect("write rows");
            }
            let commits = || {
                store
                    .files
                    .checkpoint_commits
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            let before = commits();
            store.complete_checkpoint(5).expect("complete");
            let completion_commits = commits() - before;
            assert!(
                completion_commits > at_least,
                "steps ({step_rows} rows, {step_bytes} bytes): the completion committed \
                 {completion_commits} transactions"
            );
            assert_eq!(read_all(&store), (Some(5), expected(&model)));
            let live = store.files.live.read();
            let txn = live.ckpt.begin_read().expect("read");
            let pending = txn.open_table(PENDING).expect("pending");
            let left = pending.iter().expect("iter").count();
            assert_eq!(left, 0, "the merged blobs are removed");
        }
    }

    /// Sets the test hook: the next merges stop (as an I/O error would) after `steps` steps.
    fn stop_merges_after(store: &RedbStorage, steps: u64) {
        store
            .files
            .merge_fail_after_steps
            .store(steps, std::sync::atomic::Ordering::Relaxed);
    }

    /// The stored `merge_from` marker.
    fn merge_from(store: &RedbStorage) -> Option<Vec<u8>> {
        store
            .files
            .read_checkpoint_meta("test", read_merge_from)
            .expect("read merge_from")
    }

    /// Writes checkpoint 10 (merged to the end) and checkpoint 20 (its keys over 10's, with
    /// deletions and rewrites), then completes 20 with a merge that stops after `cut` steps of
    /// 100 rows: the store as a crash between two steps leaves it. Returns the model of
    /// checkpoint 20.
    fn complete_with_a_merge_cut_short(
        dir: &Path,
        cut: u64,
    ) -> (RedbStorage, BTreeMap<Vec<u8>, Vec<u8>>) {
        let store = with_merge_step(RedbStorage::open(dir).expect("open"), 100, usize::MAX);
        let mut model = BTreeMap::new();
        for chunk in 0..4 {
            let rows = numbered_rows(300, 4 + chunk, 10 + chunk as u64);
            apply(&mut model, &rows);
            store.write_checkpoint_rows(10, &rows).expect("write rows");
        }
        store.complete_checkpoint(10).expect("complete");
        for chunk in 0..3 {
            let rows = numbered_rows(400, 2 + chunk, 20 + chunk as u64);
            apply(&mut model, &rows);
            store.write_checkpoint_rows(20, &rows).expect("write rows");
        }
        stop_merges_after(&store, cut);
        assert!(store.complete_checkpoint(20).is_err(), "the hook stops it");
        assert_eq!(store.latest_checkpoint_epoch().expect("latest"), Some(20));
        assert!(merge_from(&store).is_some(), "the merge is unfinished");
        stop_merges_after(&store, u64::MAX);
        (store, model)
    }

    #[test]
    fn a_merge_cut_short_reads_exactly_and_resumes_after_a_reopen() {
        // Goal: a crash between any two merge steps (every step is durable, so the files are
        // exactly as the last step committed them; here the hook stops the merge and the
        // handle is dropped) reopens to exactly the complete checkpoint's rows — the merged
        // part of the state plus the blobs' rows from `merge_from` on, a later write winning,
        // a deletion removing — and the next completion call finishes the merge from there.
        // Cut after 0 steps (only the flip committed), after some, and one step from the end
        // (checkpoint 20 has 833 distinct keys: 9 steps of 100).
        for cut in [0, 1, 4, 8] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (store, model) = complete_with_a_merge_cut_short(dir.path(), cut);
            drop(store);
            let store = RedbStorage::open(dir.path()).expect("reopen");
            assert!(
                *store.files.merge.lock(),
                "cut {cut}: the open finds it unfinished"
            );
            let unfinished_at = merge_from(&store).expect("merge_from");
            assert_eq!(
                read_all(&store),
                (Some(20), expected(&model)),
                "cut {cut}: read over the unfinished merge (from {unfinished_at:?})"
            );
            assert_eq!(store.latest_checkpoint_epoch().expect("latest"), Some(20));
            // A retry of the completion finishes the merge (the flip is already done).
            store.complete_checkpoint(20).expect("complete again");
            assert_eq!(merge_from(&store), None, "cut {cut}: the merge is finished");
            assert!(!*store.files.merge.lock());
            assert_eq!(read_all(&store), (Some(20), expected(&model)), "cut {cut}");
            drop(store);
            let store = RedbStorage::open(dir.path()).expect("reopen");
            assert_eq!(read_all(&store), (Some(20), expected(&model)), "cut {cut}");
        }
    }

    #[test]
    fn a_checkpoint_started_on_an_unfinished_merge_finishes_it_first() {
        // Goal: the first chunk of the next checkpoint, on a store whose last completion's
        // merge was cut short (with and without a reopen in between), does not mix its rows
        // with the unfinished merge's blobs nor drop them as an abandoned checkpoint's: it
        // finishes the merge first, and the next completion gives exactly every write in order.
        for reopen in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (mut store, mut model) = complete_with_a_merge_cut_short(dir.path(), 3);
            if reopen {
                drop(store);
                store = RedbStorage::open(dir.path()).expect("reopen");
            }
            let model_20 = model.clone();
            let rows = numbered_rows(200, 5, 40);
            apply(&mut model, &rows);
            store.write_checkpoint_rows(40, &rows).expect("write rows");
            assert_eq!(merge_from(&store), None, "reopen {reopen}: finished first");
            // Until 40 completes, reads give 20.
            assert_eq!(read_all(&store), (Some(20), expected(&model_20)));
            store.complete_checkpoint(40).expect("complete");
            assert_eq!(
                read_all(&store),
                (Some(40), expected(&model)),
                "reopen {reopen}"
            );
        }
    }

    #[test]
    fn a_deposed_holder_does_not_merge() {
        // Goal: the merge's steps are fenced like every other checkpoint write: a holder
        // deposed while its completion's merge was unfinished has its next checkpoint write
        // refused before any step commits (`merge_from` does not move), and the new holder
        // reads the complete checkpoint and finishes the merge.
        let dir = tempfile::tempdir().expect("temp dir");
        let old = with_merge_step(
            RedbStorage::open(dir.path()).expect("open"),
            100,
            usize::MAX,
        );
        old.acquire_lease("old", Duration::ZERO).expect("lease");
        let mut model = BTreeMap::new();
        for chunk in 0..3 {
            let rows = numbered_rows(400, 2 + chunk, 20 + chunk as u64);
            apply(&mut model, &rows);
            old.write_checkpoint_rows(20, &rows).expect("write rows");
        }
        stop_merges_after(&old, 2);
        assert!(old.complete_checkpoint(20).is_err(), "the hook stops it");
        stop_merges_after(&old, u64::MAX);
        let cut_at = merge_from(&old).expect("unfinished");
        let new = RedbStorage::open_another(dir.path()).expect("another handle");
        new.acquire_lease("new", Duration::from_secs(3_600))
            .expect("lease");
        let rows = numbered_rows(10, 1, 30);
        match old.write_checkpoint_rows(30, &rows) {
            Err(StorageError::Fenced { .. }) => {}
            other => panic!("the deposed holder's write: {other:?}"),
        }
        match old.complete_checkpoint(20) {
            Err(StorageError::Fenced { .. }) => {}
            other => panic!("the deposed holder's completion: {other:?}"),
        }
        assert_eq!(
            merge_from(&old),
            Some(cut_at),
            "no step of the deposed holder"
        );
        assert_eq!(read_all(&new), (Some(20), expected(&model)));
        apply(&mut model, &rows);
        new.write_checkpoint_rows(30, &rows).expect("write rows");
        new.complete_checkpoint(30).expect("complete");
        assert_eq!(read_all(&new), (Some(30), expected(&model)));
    }

    /// A chunk of checkpoint rows from `"key=value"` (a write) and `"-key"` (a deletion) words.
    fn chunk(spec: &str) -> Vec<CheckpointRow> {
        spec.split_whitespace()
            .map(|word| match word.strip_prefix('-') {
                Some(key) => (key.as_bytes().to_vec(), None),
                None => {
                    let (key, value) = word.split_once('=').expect("key=value");
                    (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
                }
            })
            .collect()
    }

    #[test]
    fn completion_keeps_the_last_write_of_a_key_across_blobs() {
        // Goal: equal keys in different pending blobs resolve to the last write (the blobs'
        // seq order, which is write order): a first-wins tie break in the merge would corrupt
        // the state silently. Each chunk below is one blob. Cases: a key rewritten in almost
        // every chunk while each chunk's other keys run in reverse key order (a later blob's
        // keys sort before an earlier one's, so the heap meets the blobs out of write order),
        // an insert a later chunk deletes, a deletion (also of a live row of the previous
        // checkpoint) a later chunk re-inserts, a key written twice within one chunk, and a
        // second checkpoint over the first one's state.
        let checkpoints = [
            (
                10,
                [
                    "m=1 x=1 y=1 z=1",
                    "m=2 w=2 x=2 -y",
                    "m=3 v=3 -w y=3",
                    "m=4 u=4 v=4 -x",
                    "t=5 -m u=5 t=5b",
                    "m=6 s=6 -z z=6",
                ]
                .as_slice(),
            ),
            (
                20,
                [
                    "-z s=7 -y",
                    "z=8 -m r=8 -s",
                    "y=9 m=9 -r q=9",
                    "-y q=10 p=10 s=10",
                    "-p -m o=11 -z",
                ]
                .as_slice(),
            ),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStorage::open(dir.path()).expect("open");
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (checkpoint, chunks) in &checkpoints {
            for spec in *chunks {
                let rows = chunk(spec);
                for (key, value) in &rows {
                    match value {
                        Some(value) => model.insert(key.clone(), value.clone()),
                        None => model.remove(key),
                    };
                }
                store
                    .write_checkpoint_rows(*checkpoint, &rows)
                    .expect("write rows");
            }
            store.complete_checkpoint(*checkpoint).expect("complete");
            let expected: Vec<crate::LiveRow> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(
                read_all(&store),
                (Some(*checkpoint), expected),
                "checkpoint {checkpoint}"
            );
        }
    }

    #[test]
    fn the_merge_loads_each_blob_once_and_holds_few_at_a_time() {
        // Goal: the k-way merge loads a blob only when it reaches the blob's first key and drops
        // it after its last row, so a checkpoint's blobs of consecutive key ranges (written in
        // any order) are held a few at a time, not all at once, also when a merge resumes far
        // in (the blobs below `from` are dropped as soon as they are skipped). The rows come in
        // key order, each once; a later blob spanning every range wins for its keys, and an
        // older blob that starts exactly on a key the heap holds is loaded before that key is
        // given, and loses to the newer writes of it.
        let key = |k: u32| format!("k{k:06}").into_bytes();
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let mut listed = Vec::new();
        let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut push = |rows: &[(u32, Option<Vec<u8>>)]| {
            let mut blob = Vec::new();
            for (k, value) in rows {
                row::push_blob_row(&mut blob, &key(*k), value.as_deref());
                model.insert(key(*k), value.clone());
            }
            let seq = stored.len() as u64;
            stored.push(record::encode(seq, &blob));
            listed.push(PendingBlob {
                seq,
                len: stored[seq as usize].len(),
                first: rows.first().map_or_else(Vec::new, |(k, _)| key(*k)),
            });
        };
        // Oldest: a blob starting on 1358, which the ranges and the late blob rewrite.
        push(&[(1358, Some(b"old".to_vec())), (1359, Some(b"old".to_vec()))]);
        push(&[]);
        // 40 ranges of 50 keys, written out of key order.
        let mut rng = Lcg(11);
        let mut ranges: Vec<u32> = (0..40).collect();
        for i in (1..ranges.len()).rev() {
            ranges.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for r in &ranges {
            let rows: Vec<_> = (r * 50..r * 50 + 50)
                .map(|k| (k, Some(vec![(k % 251) as u8; 3])))
                .collect();
            push(&rows);
        }
        // A later blob over every range: every 97th key rewritten (1358 among them), every
        // 89th deleted.
        let late: Vec<_> = (0..2000)
            .filter(|k| k % 97 == 0 || k % 89 == 0)
            .map(|k| (k, (k % 97 == 0).then(|| b"late".to_vec())))
            .collect();
        push(&late);

        let loads = std::cell::RefCell::new(vec![0; stored.len()]);
        let load = |seq: u64| {
            loads.borrow_mut()[seq as usize] += 1;
            Ok(stored[seq as usize].clone())
        };
        let loaded =
            |rows: &PendingRows<'_>| rows.cursors.iter().filter(|c| !c.stored.is_empty()).count();
        // A merge resumed far in: 22 of the 40 ranges lie below `from`.
        let from = key(1130);
        let mut rows = PendingRows::new(&listed, &from, load).expect("blobs decode");
        let mut most_loaded = loaded(&rows);
        let mut merged: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        while let Some(row) = rows.next().expect("rows decode") {
            let value = row::decode_row(BACKEND, row.key, row.envelope)
                .expect("an envelope")
                .map(<[u8]>::to_vec);
            assert_eq!(value.is_some(), row.live);
            if let Some((previous, _)) = merged.last() {
                assert!(previous.as_slice() < row.key, "rows out of order or twice");
            }
            merged.push((row.key.to_vec(), value));
            most_loaded = most_loaded.max(loaded(&rows));
        }
        let expected: Vec<_> = model.into_iter().filter(|(k, _)| *k >= from).collect();
        assert_eq!(merged, expected);
        assert!(
            merged.contains(&(key(1358), Some(b"late".to_vec()))),
            "the late write of 1358 wins"
        );
        // The spanning blob, the range being merged, the next one it reaches and the old blob.
        assert!(most_loaded <= 4, "{most_loaded} blobs held at once");
        assert!(
            loads.borrow().iter().all(|n| *n == 1),
            "{:?}",
            loads.borrow()
        );
    }
}
