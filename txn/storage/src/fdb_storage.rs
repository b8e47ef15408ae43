//! The [`Storage`] backend on FoundationDB (API 7.3, cargo feature `fdb`): the log and the
//! checkpoints of one store under one tuple subspace, every write a FoundationDB transaction
//! (durable and replicated when its commit returns), split to stay far inside FoundationDB's
//! limits.
//!
//! # Key layout
//!
//! `root` is `("vmsdb", <store name>)`; every key is a tuple under it:
//!
//! ```text
//! root ─┬─ ("epoch", e)               -> record envelope of [n_chunks: u32, record len: u64]
//!       │                                the log header of epoch e, written LAST: it seals e
//!       ├─ ("chunk", e, i)            -> bytes [i*90_000, (i+1)*90_000) of the record envelope
//!       │                                (crc32c, len, batch) of epoch e        see `record`
//!       ├─ ("meta", "latest_epoch")   -> u64 + crc32c ┐ checkpoint control: every checkpoint
//!       ├─ ("meta", "latest_attempt") -> u64 + crc32c │ transaction reads and writes these, so
//!       ├─ ("meta", "pending_epoch")  -> u64 + crc32c │ checkpoint writers serialise on them
//!       ├─ ("meta", "pending_attempt")-> u64 + crc32c │ (one writer per store by design)
//!       ├─ ("meta", "next_attempt")   -> u64 + crc32c ┘
//!       ├─ ("meta", "store_info")     -> crc32c + the store info record (what wrote the store)
//!       ├─ ("meta", "lease")          -> crc32c + term, expiry, holder: the store's lease
//!       ├─ ("row", key, attempt)      -> row envelope (crc32c, tag put|delete, value)
//!       │                                one version of a checkpoint row per checkpoint attempt
//!       ├─ ("written", attempt, key)  -> tag            which keys an attempt wrote (clean-up)
//!       ├─ ("abandoned", attempt)     -> ""             attempts discarded before completion
//!       └─ ("gc", attempt)            -> ""             completed attempts whose superseded
//!                                                        versions are still to be cleared
//! ```
//!
//! **Which keys contend.** An append reads the last key of `("epoch", …)` and writes the next
//! one, so two appenders conflict and FoundationDB's serialisable commits order the log: epoch
//! `e` can only be sealed by a transaction that saw `e - 1` sealed. Checkpoint transactions all
//! read and write the `("meta", …)` keys. Appends and checkpoint writes touch disjoint keys, so
//! the durability thread's log and checkpoint work never conflict with each other. Truncation
//! clears ranges below the checkpoint, away from the keys appends read.
//!
//! # Log records
//!
//! An epoch's record envelope is cut into chunks of at most [`limits::FDB_VALUE_BYTES_MAX`]. A
//! record that fits [`limits::FDB_TRANSACTION_BYTES_TARGET`] is written with its header in one
//! transaction; a larger one is written chunk group by chunk group, each group its own
//! transaction, and then sealed by a last transaction writing the header. Chunks without a
//! header are invisible (a crash mid-append leaves an unsealed, unacknowledged epoch, overwritten
//! by the next append of that epoch); stale chunks of an earlier try are cleared by the seal.
//!
//! # Checkpoints
//!
//! Every checkpoint *attempt* gets a fresh id from `next_attempt`; its rows are written as
//! versions `("row", key, attempt)` in as many transactions as needed. Completing it is one small
//! transaction setting `latest_epoch`/`latest_attempt`, so the switch is atomic. The state as of
//! the latest complete attempt `L` is, for every key, its newest version `<= L` that is not
//! abandoned: rows of the incomplete attempt are newer than `L` and stay invisible; starting or
//! completing another checkpoint marks the incomplete attempt abandoned, so its rows never
//! surface even if a later checkpoint reuses its epoch (it gets a new attempt id). After a
//! completion, a clean-up in small transactions clears the versions it superseded, its
//! deletions, and the rows of abandoned attempts; it is idempotent and resumes after a crash
//! from the `("gc", …)` and `("abandoned", …)` markers.
//!
//! # Retries and idempotency
//!
//! Every transaction runs in `Database::run`, which re-runs the closure after a retryable error
//! — including `commit_unknown_result`, when the previous try may have committed. So every
//! closure is idempotent: chunk and row writes are plain `set`s of the same bytes; the seal sees
//! its own header and returns success if the previous try committed; a checkpoint chunk reuses
//! the pending attempt once it exists; a repeated completion sees `latest_epoch` already set. A
//! transaction that keeps failing ends after [`limits::FDB_TRANSACTION_RETRY_MAX`] retries or
//! [`limits::FDB_TRANSACTION_TIMEOUT_MS`] with [`StorageError::Io`].
//!
//! # Lease and fencing
//!
//! The lease ([`Storage::acquire_lease`]) is one key, `("meta", "lease")`. Its clock is the
//! cluster's **read version**, not any node's wall clock: FoundationDB advances versions by
//! about 1,000,000 per second and never moves them back, so `read version / 1000` serves as
//! milliseconds that every client agrees on. A lease taken at read version `v` for `ttl` ends
//! at `v / 1000 + ttl_ms`. Every write transaction of a fenced handle (each part of an append,
//! every checkpoint transaction, truncation) reads the lease key first, as a conflicting read:
//! if a take-over commits in between, the write transaction conflicts, is retried, sees the
//! new term and fails with [`StorageError::Fenced`] without writing.
//!
//! # Process setup
//!
//! The FoundationDB client network must be started once per process before
//! [`FdbStorage::open`] (`foundationdb::boot`, which is `unsafe` and belongs in the binary's
//! `main`, not in this crate) and stopped before the process exits.

use std::future::Future;
use std::time::Duration;

use foundationdb::options::{DatabaseOption, StreamingMode};
use foundationdb::tuple::Subspace;
use foundationdb::{
    FdbBindingError, MaybeCommitted, RangeOption, RetryableTransaction, Transaction,
};
use parking_lot::RwLock;

use crate::lease::{self, HeldTerm, LeaseRecord};
use crate::{CheckpointRow, Storage, StorageError, limits, record, row};

const BACKEND: &str = "fdb";

const META_LATEST_EPOCH: &str = "latest_epoch";
const META_LATEST_ATTEMPT: &str = "latest_attempt";
const META_PENDING_EPOCH: &str = "pending_epoch";
const META_PENDING_ATTEMPT: &str = "pending_attempt";
const META_NEXT_ATTEMPT: &str = "next_attempt";
/// The store info record (see [`Storage::write_store_info`]), in its own key.
const META_STORE_INFO: &str = "store_info";

/// A [`Storage`] in one subspace of a FoundationDB cluster.
pub struct FdbStorage {
    db: foundationdb::Database,
    root: Subspace,
    /// Held shared while a checkpoint is read, exclusively while one is completed and cleaned up:
    /// a read spans many transactions and must not see versions cleared under it.
    checkpoint_lock: RwLock<()>,
    /// The lease term this handle took, if any.
    held: HeldTerm,
}

/// The subspaces of one store, see the module doc.
struct Layout {
    epoch: Subspace,
    chunk: Subspace,
    meta: Subspace,
    row: Subspace,
    written: Subspace,
    abandoned: Subspace,
    gc: Subspace,
}

impl FdbStorage {
    /// Connects to the cluster of `cluster_file` (the default cluster file when `None`) and uses
    /// the subspace `("vmsdb", store_name)`. The FoundationDB network must already run (see the
    /// module doc).
    pub fn open(cluster_file: Option<&str>, store_name: &str) -> Result<Self, StorageError> {
        if cluster_file.is_some_and(|path| path.contains('\0')) {
            return Err(StorageError::Io {
                backend: BACKEND,
                operation: "open",
                detail: "cluster file path contains a NUL byte".into(),
            });
        }
        let db = foundationdb::Database::new(cluster_file)
            .map_err(|err| fdb_error("open", &FdbBindingError::from(err)))?;
        let options = [
            DatabaseOption::TransactionTimeout(limits::FDB_TRANSACTION_TIMEOUT_MS),
            DatabaseOption::TransactionRetryLimit(limits::FDB_TRANSACTION_RETRY_MAX),
        ];
        for option in options {
            db.set_option(option)
                .map_err(|err| fdb_error("open", &FdbBindingError::from(err)))?;
        }
        Ok(Self {
            db,
            root: Subspace::all().subspace(&("vmsdb", store_name)),
            checkpoint_lock: RwLock::new(()),
            held: HeldTerm::default(),
        })
    }

    /// Deletes every key of this store (for tests and decommissioning).
    pub fn clear_everything(&self) -> Result<(), StorageError> {
        let (begin, end) = self.root.range();
        self.run("clear_everything", |trx, _| {
            let (begin, end) = (&begin, &end);
            async move {
                trx.clear_range(begin, end);
                Ok(())
            }
        })
    }

    fn layout(&self) -> Layout {
        Layout {
            epoch: self.root.subspace(&("epoch",)),
            chunk: self.root.subspace(&("chunk",)),
            meta: self.root.subspace(&("meta",)),
            row: self.root.subspace(&("row",)),
            written: self.root.subspace(&("written",)),
            abandoned: self.root.subspace(&("abandoned",)),
            gc: self.root.subspace(&("gc",)),
        }
    }

    /// Runs one transaction with the crate's retry loop, blocking the calling thread.
    fn run<T, F, Fut>(&self, operation: &'static str, body: F) -> Result<T, StorageError>
    where
        F: Fn(RetryableTransaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, FdbBindingError>>,
    {
        futures::executor::block_on(self.db.run(body)).map_err(|err| fdb_error(operation, &err))
    }
}

/// Turns an error out of `Database::run` back into a [`StorageError`]: ours if a closure aborted
/// with one, otherwise an I/O error naming the FoundationDB error.
fn fdb_error(operation: &'static str, err: &FdbBindingError) -> StorageError {
    if let FdbBindingError::CustomError(custom) = err
        && let Some(storage) = custom.downcast_ref::<StorageError>()
    {
        return clone_error(storage);
    }
    let detail = match err.get_fdb_error() {
        Some(fdb) => format!("FoundationDB error {}: {}", fdb.code(), fdb.message()),
        None => err.to_string(),
    };
    StorageError::Io {
        backend: BACKEND,
        operation,
        detail,
    }
}

/// [`StorageError`] is not `Clone` (it is the trait's contract type); rebuild it field by field.
fn clone_error(err: &StorageError) -> StorageError {
    match err {
        StorageError::Io {
            backend,
            operation,
            detail,
        } => StorageError::Io {
            backend,
            operation,
            detail: detail.clone(),
        },
        StorageError::Corrupt {
            backend,
            epoch,
            detail,
        } => StorageError::Corrupt {
            backend,
            epoch: *epoch,
            detail: detail.clone(),
        },
        StorageError::OutOfOrder {
            backend,
            epoch,
            last,
        } => StorageError::OutOfOrder {
            backend,
            epoch: *epoch,
            last: *last,
        },
        StorageError::TooLarge {
            backend,
            what,
            size,
            limit,
        } => StorageError::TooLarge {
            backend,
            what,
            size: *size,
            limit: *limit,
        },
        StorageError::CheckpointOutOfOrder {
            backend,
            checkpoint_epoch,
            latest_complete,
        } => StorageError::CheckpointOutOfOrder {
            backend,
            checkpoint_epoch: *checkpoint_epoch,
            latest_complete: *latest_complete,
        },
        StorageError::TruncateBeyondCheckpoint {
            backend,
            epoch,
            latest_complete,
        } => StorageError::TruncateBeyondCheckpoint {
            backend,
            epoch: *epoch,
            latest_complete: *latest_complete,
        },
        StorageError::CorruptStore {
            backend,
            location,
            detail,
        } => StorageError::CorruptStore {
            backend,
            location: location.clone(),
            detail: detail.clone(),
        },
        StorageError::Vanished {
            backend,
            path,
            detail,
        } => StorageError::Vanished {
            backend,
            path: path.clone(),
            detail: detail.clone(),
        },
        StorageError::Fenced {
            backend,
            ours,
            current,
        } => StorageError::Fenced {
            backend,
            ours: *ours,
            current: *current,
        },
        StorageError::LeaseHeld {
            backend,
            holder,
            term,
            remaining_ms,
        } => StorageError::LeaseHeld {
            backend,
            holder: holder.clone(),
            term: *term,
            remaining_ms: *remaining_ms,
        },
        StorageError::LeaseUnsupported { backend } => StorageError::LeaseUnsupported { backend },
        StorageError::PurgeUnsupported { backend } => StorageError::PurgeUnsupported { backend },
        StorageError::Visitor(detail) => StorageError::Visitor(detail.clone()),
    }
}

/// Aborts a transaction closure with `err`; `Database::run` does not retry it.
fn abort<T>(err: StorageError) -> Result<T, FdbBindingError> {
    Err(FdbBindingError::new_custom_error(Box::new(err)))
}

fn corrupt_key(what: &str, key: &[u8], err: impl std::fmt::Display) -> StorageError {
    StorageError::CorruptStore {
        backend: BACKEND,
        location: format!("{what} key {}", row::display_key(key)),
        detail: format!("does not unpack: {err}"),
    }
}

fn range(begin: Vec<u8>, end: Vec<u8>, limit: usize, reverse: bool) -> RangeOption<'static> {
    let mut option = RangeOption::from((begin, end));
    option.limit = Some(limit);
    option.reverse = reverse;
    option.mode = StreamingMode::WantAll;
    option
}

async fn read_meta(
    trx: &Transaction,
    meta: &Subspace,
    name: &str,
) -> Result<Option<u64>, FdbBindingError> {
    match trx.get(&meta.pack(&name), false).await? {
        Some(stored) => match row::decode_meta(BACKEND, name, &stored) {
            Ok(value) => Ok(Some(value)),
            Err(err) => abort(err),
        },
        None => Ok(None),
    }
}

fn write_meta(trx: &Transaction, meta: &Subspace, name: &str, value: u64) {
    trx.set(&meta.pack(&name), &row::encode_meta(name, value));
}

/// The highest sealed epoch, read inside `trx` (so a commit conflicts with a concurrent seal).
async fn last_sealed(trx: &Transaction, epoch: &Subspace) -> Result<Option<u64>, FdbBindingError> {
    let (begin, end) = epoch.range();
    let found = trx.get_range(&range(begin, end, 1, true), 1, false).await?;
    match found.iter().next() {
        Some(kv) => match epoch.unpack::<(u64,)>(kv.key()) {
            Ok((last,)) => Ok(Some(last)),
            Err(err) => abort(corrupt_key("log header", kv.key(), err)),
        },
        None => Ok(None),
    }
}

/// The header value sealing epoch `e`: how many chunks its record has and how long it is.
fn encode_header(epoch: u64, n_chunks: usize, record_len: usize) -> Vec<u8> {
    let mut fields = Vec::with_capacity(12);
    fields.extend_from_slice(&(n_chunks as u32).to_le_bytes());
    fields.extend_from_slice(&(record_len as u64).to_le_bytes());
    record::encode(epoch, &fields)
}

fn decode_header(epoch: u64, stored: &[u8]) -> Result<(usize, usize), StorageError> {
    let (fields, _) = record::decode(BACKEND, epoch, stored)?;
    let (Some(n_chunks), Some(record_len)) = (fields.get(0..4), fields.get(4..12)) else {
        return Err(StorageError::Corrupt {
            backend: BACKEND,
            epoch,
            detail: format!("log header has {} bytes instead of 12", fields.len()),
        });
    };
    let n_chunks = u32::from_le_bytes(n_chunks.try_into().unwrap_or_default()) as usize;
    let record_len = u64::from_le_bytes(record_len.try_into().unwrap_or_default()) as usize;
    Ok((n_chunks, record_len))
}

/// The pending checkpoint attempt for `checkpoint_epoch` inside `trx`, starting one (and
/// abandoning any other pending attempt) if needed. Fails if the checkpoint is not newer than
/// the latest complete one. Idempotent: a retry finds the attempt its earlier try started.
async fn pending_attempt(
    trx: &Transaction,
    layout: &Layout,
    checkpoint_epoch: u64,
) -> Result<u64, FdbBindingError> {
    let meta = &layout.meta;
    let latest = read_meta(trx, meta, META_LATEST_EPOCH).await?;
    if latest.is_some_and(|latest| checkpoint_epoch <= latest) {
        return abort(StorageError::CheckpointOutOfOrder {
            backend: BACKEND,
            checkpoint_epoch,
            latest_complete: latest,
        });
    }
    let pending_epoch = read_meta(trx, meta, META_PENDING_EPOCH).await?;
    let pending_attempt = read_meta(trx, meta, META_PENDING_ATTEMPT).await?;
    if pending_epoch == Some(checkpoint_epoch)
        && let Some(attempt) = pending_attempt
    {
        return Ok(attempt);
    }
    if let Some(abandoned) = pending_attempt {
        trx.set(&layout.abandoned.pack(&(abandoned,)), b"");
    }
    let attempt = read_meta(trx, meta, META_NEXT_ATTEMPT).await?.unwrap_or(1);
    write_meta(trx, meta, META_NEXT_ATTEMPT, attempt + 1);
    write_meta(trx, meta, META_PENDING_EPOCH, checkpoint_epoch);
    write_meta(trx, meta, META_PENDING_ATTEMPT, attempt);
    Ok(attempt)
}

/// Bytes one checkpoint row adds to a transaction: the row version and its index entry.
fn row_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    // A tuple may escape every byte of the key; the rest is prefixes and integers.
    2 * (2 * key.len() + 64) + value.map_or(0, <[u8]>::len) + row::ROW_HEADER_LEN
}

impl FdbStorage {
    /// Reads the whole record envelope of a sealed epoch and returns its payload.
    fn read_record(
        &self,
        layout: &Layout,
        epoch: u64,
        header: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        let (n_chunks, record_len) = decode_header(epoch, header)?;
        let mut record_bytes = Vec::with_capacity(record_len);
        let mut next_chunk = 0usize;
        let (_, chunks_end) = layout.chunk.subspace(&(epoch,)).range();
        while next_chunk < n_chunks {
            let begin = layout.chunk.pack(&(epoch, next_chunk as u64));
            let page = self.run("read_epochs", |trx, _| {
                let (begin, end) = (begin.clone(), chunks_end.clone());
                async move {
                    let n_chunks_max = (limits::FDB_READ_BYTES_PER_TRANSACTION_MAX
                        / limits::FDB_VALUE_BYTES_MAX)
                        .max(1);
                    let option = range(begin, end, n_chunks_max, false);
                    let found = trx.get_range(&option, 1, true).await?;
                    let mut page = Vec::new();
                    for kv in found.iter() {
                        match layout.chunk.unpack::<(u64, u64)>(kv.key()) {
                            Ok((_, idx)) => page.push((idx, kv.value().to_vec())),
                            Err(err) => return abort(corrupt_key("log chunk", kv.key(), err)),
                        }
                    }
                    Ok(page)
                }
            })?;
            let before = next_chunk;
            for (idx, bytes) in page {
                if idx != next_chunk as u64 || next_chunk == n_chunks {
                    break;
                }
                record_bytes.extend_from_slice(&bytes);
                next_chunk += 1;
            }
            if next_chunk == before {
                // A missing chunk: reported below.
                break;
            }
        }
        if next_chunk != n_chunks || record_bytes.len() != record_len {
            return Err(StorageError::Corrupt {
                backend: BACKEND,
                epoch,
                detail: format!(
                    "record has {next_chunk} of {n_chunks} chunks and {} of {record_len} bytes",
                    record_bytes.len()
                ),
            });
        }
        let (payload, _) = record::decode(BACKEND, epoch, &record_bytes)?;
        Ok(payload.to_vec())
    }

    /// Clears superseded versions after a completion and the rows of abandoned attempts, in
    /// small transactions. Idempotent; an interrupted clean-up resumes on the next completion.
    fn collect_garbage(&self, layout: &Layout) -> Result<(), StorageError> {
        for (marker, superseded) in [(&layout.gc, true), (&layout.abandoned, false)] {
            let (begin, end) = marker.range();
            let attempts: Vec<u64> = self.run("collect_garbage", |trx, _| {
                let (begin, end) = (begin.clone(), end.clone());
                async move {
                    let found = trx
                        .get_range(
                            &range(begin, end, limits::FDB_KEYS_PER_TRANSACTION_MAX, false),
                            1,
                            true,
                        )
                        .await?;
                    let mut attempts = Vec::new();
                    for kv in found.iter() {
                        match marker.unpack::<(u64,)>(kv.key()) {
                            Ok((attempt,)) => attempts.push(attempt),
                            Err(err) => {
                                return abort(corrupt_key("clean-up marker", kv.key(), err));
                            }
                        }
                    }
                    Ok(attempts)
                }
            })?;
            for attempt in attempts {
                self.collect_attempt(layout, attempt, superseded)?;
                let done = marker.pack(&(attempt,));
                self.run("collect_garbage", |trx, _| {
                    let done = &done;
                    async move {
                        trx.clear(done);
                        Ok(())
                    }
                })?;
            }
        }
        Ok(())
    }

    /// For a completed attempt (`superseded`): clears every older version of the keys it wrote
    /// and its own deletions. For an abandoned attempt: clears its rows.
    fn collect_attempt(
        &self,
        layout: &Layout,
        attempt: u64,
        superseded: bool,
    ) -> Result<(), StorageError> {
        let written = layout.written.subspace(&(attempt,));
        loop {
            let (begin, end) = written.range();
            let n_done = self.run("collect_garbage", |trx, _| {
                let (begin, end, written) = (begin.clone(), end.clone(), &written);
                async move {
                    let option = range(begin, end, limits::FDB_KEYS_PER_TRANSACTION_MAX, false);
                    let found = trx.get_range(&option, 1, false).await?;
                    for kv in found.iter() {
                        let key = match written.unpack::<(Vec<u8>,)>(kv.key()) {
                            Ok((key,)) => key,
                            Err(err) => return abort(corrupt_key("written index", kv.key(), err)),
                        };
                        let own_version = layout.row.pack(&(key.as_slice(), attempt));
                        if superseded {
                            let (older_begin, _) = layout.row.subspace(&(key.as_slice(),)).range();
                            trx.clear_range(&older_begin, &own_version);
                            if kv.value() == [0] {
                                trx.clear(&own_version);
                            }
                        } else {
                            trx.clear(&own_version);
                        }
                        trx.clear(kv.key());
                    }
                    Ok(found.len())
                }
            })?;
            if n_done == 0 {
                return Ok(());
            }
        }
    }
}

impl Storage for FdbStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        limits::check_batch(BACKEND, batch)?;
        let layout = self.layout();
        let held = self.held.get();
        let record_bytes = record::encode(epoch, batch);
        let chunks: Vec<&[u8]> = record_bytes.chunks(limits::FDB_VALUE_BYTES_MAX).collect();
        let header = encode_header(epoch, chunks.len(), record_bytes.len());
        let header_key = layout.epoch.pack(&(epoch,));
        let (_, chunks_end) = layout.chunk.subspace(&(epoch,)).range();
        let stale_chunks_begin = layout.chunk.pack(&(epoch, chunks.len() as u64));
        let single_transaction = record_bytes.len() <= limits::FDB_TRANSACTION_BYTES_TARGET;

        // Checks the order, writes the chunks when they fit, and seals; `Ok(true)`: `epoch` is
        // now logged (by this call or an earlier identical one), `Ok(false)`: chunks still to be
        // written. Idempotent: a retry after an unknown commit result sees its own header.
        let seal = |write_chunks: bool| {
            self.run("append_epoch", |trx, _| {
                let (layout, chunks, header, header_key) = (&layout, &chunks, &header, &header_key);
                let (stale_begin, chunks_end) = (&stale_chunks_begin, &chunks_end);
                async move {
                    check_fence(&trx, &layout.meta, held).await?;
                    let last = last_sealed(&trx, &layout.epoch).await?;
                    let next_in_order = match last {
                        None => true,
                        Some(last) => last.checked_add(1) == Some(epoch),
                    };
                    if !next_in_order {
                        return match trx.get(header_key, false).await? {
                            // Already logged (by an earlier try of this call, or before): the
                            // caller compares the bytes.
                            Some(_) => Ok(None),
                            None => abort(StorageError::OutOfOrder {
                                backend: BACKEND,
                                epoch,
                                last,
                            }),
                        };
                    }
                    if !write_chunks {
                        return Ok(Some(false));
                    }
                    for (idx, chunk) in chunks.iter().enumerate() {
                        trx.set(&layout.chunk.pack(&(epoch, idx as u64)), chunk);
                    }
                    trx.clear_range(stale_begin, chunks_end);
                    trx.set(header_key, header);
                    Ok(Some(true))
                }
            })
        };

        let outcome = if single_transaction {
            seal(true)?
        } else {
            match seal(false)? {
                Some(false) => {
                    // The record does not fit one transaction: write the chunks group by group
                    // (each `set` idempotent), then seal with the header alone.
                    let n_per_group =
                        (limits::FDB_TRANSACTION_BYTES_TARGET / limits::FDB_VALUE_BYTES_MAX).max(1);
                    for (group_idx, group) in chunks.chunks(n_per_group).enumerate() {
                        self.run("append_epoch", |trx, _| {
                            let layout = &layout;
                            async move {
                                check_fence(&trx, &layout.meta, held).await?;
                                for (idx, chunk) in group.iter().enumerate() {
                                    let idx = (group_idx * n_per_group + idx) as u64;
                                    trx.set(&layout.chunk.pack(&(epoch, idx)), chunk);
                                }
                                Ok(())
                            }
                        })?;
                    }
                    self.run("append_epoch", |trx, _| {
                        let (layout, header, header_key) = (&layout, &header, &header_key);
                        let (stale_begin, chunks_end) = (&stale_chunks_begin, &chunks_end);
                        async move {
                            check_fence(&trx, &layout.meta, held).await?;
                            let last = last_sealed(&trx, &layout.epoch).await?;
                            if last == Some(epoch) {
                                // An earlier try of this transaction committed, or another
                                // writer sealed it: the caller compares the bytes.
                                return Ok(None);
                            }
                            if last.is_some_and(|last| last.checked_add(1) != Some(epoch)) {
                                return abort(StorageError::OutOfOrder {
                                    backend: BACKEND,
                                    epoch,
                                    last,
                                });
                            }
                            trx.clear_range(stale_begin, chunks_end);
                            trx.set(header_key, header);
                            Ok(Some(true))
                        }
                    })?
                }
                other => other,
            }
        };
        match outcome {
            Some(true) => Ok(()),
            Some(false) => unreachable_outcome(epoch),
            None => {
                // `epoch` is already logged: the same bytes are the contract's idempotent
                // re-append (or a retry whose first try committed), other bytes are refused.
                let stored = self.run("append_epoch", |trx, _| {
                    let header_key = &header_key;
                    async move { Ok(trx.get(header_key, false).await?.map(|v| v.to_vec())) }
                })?;
                let last = self.last_epoch()?;
                let same = match stored {
                    Some(stored) => self.read_record(&layout, epoch, &stored)? == batch,
                    None => false,
                };
                if same {
                    Ok(())
                } else {
                    Err(StorageError::OutOfOrder {
                        backend: BACKEND,
                        epoch,
                        last,
                    })
                }
            }
        }
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let layout = self.layout();
        let (_, end) = layout.epoch.range();
        let mut begin = layout.epoch.pack(&(from,));
        let mut previous = None;
        loop {
            let headers: Vec<(u64, Vec<u8>)> = self.run("read_epochs", |trx, _| {
                let (begin, end, layout) = (begin.clone(), end.clone(), &layout);
                async move {
                    let option = range(begin, end, limits::FDB_EPOCHS_PER_READ_MAX, false);
                    let found = trx.get_range(&option, 1, true).await?;
                    let mut headers = Vec::new();
                    for kv in found.iter() {
                        match layout.epoch.unpack::<(u64,)>(kv.key()) {
                            Ok((epoch,)) => headers.push((epoch, kv.value().to_vec())),
                            Err(err) => return abort(corrupt_key("log header", kv.key(), err)),
                        }
                    }
                    Ok(headers)
                }
            })?;
            let Some(&(last_epoch, _)) = headers.last() else {
                return Ok(());
            };
            for (epoch, header) in headers {
                row::check_contiguous(BACKEND, previous, epoch)?;
                let payload = self.read_record(&layout, epoch, &header)?;
                visit(epoch, &payload)?;
                previous = Some(epoch);
            }
            match last_epoch.checked_add(1) {
                Some(next) => begin = layout.epoch.pack(&(next,)),
                None => return Ok(()),
            }
        }
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        let layout = self.layout();
        self.run("last_epoch", |trx, _| {
            let layout = &layout;
            async move { last_sealed(&trx, &layout.epoch).await }
        })
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        limits::check_rows(BACKEND, rows)?;
        let layout = self.layout();
        let held = self.held.get();
        // Groups of rows that each fit one transaction; at least one (possibly empty) group so
        // an empty chunk still starts the checkpoint.
        let mut groups: Vec<&[CheckpointRow]> = Vec::new();
        let (mut group_start, mut group_bytes) = (0, 0);
        for (idx, (key, value)) in rows.iter().enumerate() {
            let bytes = row_bytes(key, value.as_deref());
            if idx > group_start && group_bytes + bytes > limits::FDB_TRANSACTION_BYTES_TARGET {
                groups.push(&rows[group_start..idx]);
                (group_start, group_bytes) = (idx, 0);
            }
            group_bytes += bytes;
        }
        groups.push(&rows[group_start..]);
        for group in groups {
            self.run("write_checkpoint_rows", |trx, _| {
                let layout = &layout;
                async move {
                    check_fence(&trx, &layout.meta, held).await?;
                    let attempt = pending_attempt(&trx, layout, checkpoint_epoch).await?;
                    for (key, value) in group {
                        let stored = row::encode_row(key, value.as_deref());
                        trx.set(&layout.row.pack(&(key.as_slice(), attempt)), &stored);
                        let tag = [u8::from(value.is_some())];
                        trx.set(&layout.written.pack(&(attempt, key.as_slice())), &tag);
                    }
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let layout = self.layout();
        let held = self.held.get();
        let _exclusive = self.checkpoint_lock.write();
        self.run("complete_checkpoint", |trx, _| {
            let layout = &layout;
            async move {
                check_fence(&trx, &layout.meta, held).await?;
                let meta = &layout.meta;
                if read_meta(&trx, meta, META_LATEST_EPOCH).await? == Some(checkpoint_epoch) {
                    // Already complete: a retry after an unknown commit result, or a repeat.
                    return Ok(());
                }
                let attempt = pending_attempt(&trx, layout, checkpoint_epoch).await?;
                write_meta(&trx, meta, META_LATEST_EPOCH, checkpoint_epoch);
                write_meta(&trx, meta, META_LATEST_ATTEMPT, attempt);
                trx.clear(&meta.pack(&META_PENDING_EPOCH));
                trx.clear(&meta.pack(&META_PENDING_ATTEMPT));
                trx.set(&layout.gc.pack(&(attempt,)), b"");
                Ok(())
            }
        })?;
        // The completion is durable; a failed clean-up leaves only invisible garbage that the
        // next completion clears.
        if let Err(err) = self.collect_garbage(&layout) {
            tracing::warn!(error = %err, "fdb: clean-up after a checkpoint failed; will resume");
        }
        Ok(())
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let layout = self.layout();
        let _shared = self.checkpoint_lock.read();
        let (latest, abandoned) = self.run("read_latest_checkpoint", |trx, _| {
            let layout = &layout;
            async move {
                let epoch = read_meta(&trx, &layout.meta, META_LATEST_EPOCH).await?;
                let attempt = read_meta(&trx, &layout.meta, META_LATEST_ATTEMPT).await?;
                let (begin, end) = layout.abandoned.range();
                let mut abandoned = std::collections::BTreeSet::new();
                let mut option = range(begin, end, usize::MAX, false);
                option.limit = None;
                loop {
                    let found = trx.get_range(&option, 1, true).await?;
                    for kv in found.iter() {
                        match layout.abandoned.unpack::<(u64,)>(kv.key()) {
                            Ok((attempt,)) => abandoned.insert(attempt),
                            Err(err) => return abort(corrupt_key("abandoned", kv.key(), err)),
                        };
                    }
                    match option.next_range(&found) {
                        Some(next) => option = next,
                        None => break,
                    }
                }
                Ok((epoch.zip(attempt), abandoned))
            }
        })?;
        let Some((latest_epoch, latest_attempt)) = latest else {
            return Ok(None);
        };
        let (mut begin, end) = layout.row.range();
        // The key being read and its newest visible version so far; versions of one key are
        // contiguous and ascending, possibly split across pages.
        let mut current: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
        let mut emit = |current: Option<(Vec<u8>, Option<Vec<u8>>)>| -> Result<(), StorageError> {
            if let Some((key, Some(stored))) = current
                && let Some(value) = row::decode_row(BACKEND, &key, &stored)?
            {
                visit(&key, value)?;
            }
            Ok(())
        };
        loop {
            let page: Vec<(Vec<u8>, u64, Vec<u8>)> =
                self.run("read_latest_checkpoint", |trx, _| {
                    let (begin, end, layout) = (begin.clone(), end.clone(), &layout);
                    async move {
                        let option = range(begin, end, limits::FDB_KEYS_PER_TRANSACTION_MAX, false);
                        let found = trx.get_range(&option, 1, true).await?;
                        let mut page = Vec::new();
                        for kv in found.iter() {
                            match layout.row.unpack::<(Vec<u8>, u64)>(kv.key()) {
                                Ok((key, version)) => {
                                    page.push((key, version, kv.value().to_vec()))
                                }
                                Err(err) => {
                                    return abort(corrupt_key("checkpoint row", kv.key(), err));
                                }
                            }
                        }
                        Ok(page)
                    }
                })?;
            let Some((last_key, last_version, _)) = page.last() else {
                break;
            };
            let mut next_begin = layout.row.pack(&(last_key.as_slice(), *last_version));
            next_begin.push(0x00);
            for (key, version, stored) in page {
                if current
                    .as_ref()
                    .is_none_or(|(current_key, _)| *current_key != key)
                {
                    emit(current.take())?;
                    current = Some((key, None));
                }
                if version <= latest_attempt
                    && !abandoned.contains(&version)
                    && let Some((_, newest)) = current.as_mut()
                {
                    *newest = Some(stored);
                }
            }
            begin = next_begin;
        }
        emit(current.take())?;
        Ok(Some(latest_epoch))
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        let layout = self.layout();
        self.run("latest_checkpoint_epoch", |trx, _| {
            let layout = &layout;
            async move { read_meta(&trx, &layout.meta, META_LATEST_EPOCH).await }
        })
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let layout = self.layout();
        self.run("read_store_info", |trx, _| {
            let layout = &layout;
            async move {
                match trx.get(&layout.meta.pack(&META_STORE_INFO), false).await? {
                    Some(stored) => {
                        match row::decode_meta_bytes(BACKEND, META_STORE_INFO, &stored) {
                            Ok(info) => Ok(Some(info.to_vec())),
                            Err(err) => abort(err),
                        }
                    }
                    None => Ok(None),
                }
            }
        })
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        limits::check_store_info(BACKEND, info)?;
        let layout = self.layout();
        let stored = row::encode_meta_bytes(META_STORE_INFO, info);
        self.run("write_store_info", |trx, _| {
            let (layout, stored) = (&layout, &stored);
            async move {
                trx.set(&layout.meta.pack(&META_STORE_INFO), stored);
                Ok(())
            }
        })
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        let layout = self.layout();
        let held = self.held.get();
        self.run("truncate_log_below", |trx, _| {
            let layout = &layout;
            async move {
                check_fence(&trx, &layout.meta, held).await?;
                let latest = read_meta(&trx, &layout.meta, META_LATEST_EPOCH).await?;
                if let Err(err) = row::check_truncation(BACKEND, epoch, latest) {
                    return abort(err);
                }
                let (epochs_begin, _) = layout.epoch.range();
                trx.clear_range(&epochs_begin, &layout.epoch.pack(&(epoch,)));
                let (chunks_begin, _) = layout.chunk.range();
                trx.clear_range(&chunks_begin, &layout.chunk.pack(&(epoch,)));
                Ok(())
            }
        })
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        lease::check_holder(BACKEND, holder)?;
        let layout = self.layout();
        let term = self.run("acquire_lease", |trx, _| {
            let layout = &layout;
            async move {
                // The cluster's clock: read versions advance about 1,000,000 per second.
                let now_ms = u64::try_from(trx.get_read_version().await?).unwrap_or(0) / 1000;
                let current = read_lease(&trx, &layout.meta).await?;
                let granted = match lease::grant(BACKEND, current.as_ref(), holder, now_ms, ttl) {
                    Ok(granted) => granted,
                    Err(err) => return abort(err),
                };
                trx.set(&layout.meta.pack(&lease::META_LEASE), &granted.encode());
                Ok(granted.term)
            }
        })?;
        self.held.set(term);
        Ok(term)
    }
}

/// `seal(true)` never reports chunks still to be written.
fn unreachable_outcome(epoch: u64) -> Result<(), StorageError> {
    Err(StorageError::Io {
        backend: BACKEND,
        operation: "append_epoch",
        detail: format!("internal: epoch {epoch} was neither sealed nor refused"),
    })
}

/// Reads the lease inside `trx` (a conflicting read: a take-over committed meanwhile aborts
/// `trx`, whose retry then sees it) and refuses the write of a handle whose lease was taken.
async fn check_fence(
    trx: &Transaction,
    meta: &Subspace,
    held: Option<u64>,
) -> Result<(), FdbBindingError> {
    let Some(ours) = held else {
        return Ok(());
    };
    let current = read_lease(trx, meta).await?.map_or(0, |record| record.term);
    match lease::check_fence(BACKEND, ours, current) {
        Ok(()) => Ok(()),
        Err(err) => abort(err),
    }
}

async fn read_lease(
    trx: &Transaction,
    meta: &Subspace,
) -> Result<Option<LeaseRecord>, FdbBindingError> {
    match trx.get(&meta.pack(&lease::META_LEASE), false).await? {
        Some(stored) => match LeaseRecord::decode(BACKEND, &stored) {
            Ok(record) => Ok(Some(record)),
            Err(err) => abort(err),
        },
        None => Ok(None),
    }
}
