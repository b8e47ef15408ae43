//! Every tunable limit of the storage backends, in one place.
//!
//! The size limits apply to every backend alike, so a workload that runs on the embedded engine
//! also fits FoundationDB: a backend refuses anything larger with [`crate::StorageError::TooLarge`]
//! before writing.

/// Largest epoch input batch [`crate::Storage::append_epoch`] accepts, in bytes. Far above a
/// realistic epoch (tens of KB to a few hundred KB) and far below the 4 GiB the record envelope
/// can describe.
pub const EPOCH_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest checkpoint row key, in bytes. Bounded by FoundationDB's 10,000-byte key limit minus
/// the subspace prefix and the tuple encoding, which may escape every byte of the key.
pub const CHECKPOINT_KEY_BYTES_MAX: usize = 4 * 1024;

/// Largest checkpoint row value, in bytes. Bounded by FoundationDB's 100,000-byte value limit
/// minus the row envelope.
pub const CHECKPOINT_VALUE_BYTES_MAX: usize = 90 * 1024;

/// Largest store info record ([`crate::Storage::write_store_info`]), in bytes. The record
/// describes an application's services and tables: a few KB; it is one value in every backend,
/// so it is bounded like a checkpoint row value.
pub const STORE_INFO_BYTES_MAX: usize = 64 * 1024;

/// Longest lease holder name ([`crate::Storage::acquire_lease`]), in bytes: a node name or
/// address, kept in one small value in every backend.
pub const LEASE_HOLDER_BYTES_MAX: usize = 256;
/// redb's page cache per file (the log and the checkpoint file each have one), in bytes.
/// redb's default is 1 GiB per file, which a large checkpoint fills with pages it will not read
/// again, held in the process's resident memory; above this the kernel's page cache (not
/// counted against the process) serves reads. Half of it may buffer one write transaction.
pub const REDB_CACHE_BYTES: usize = 128 * 1024 * 1024;

const _: () = assert!(STORE_INFO_BYTES_MAX <= CHECKPOINT_VALUE_BYTES_MAX);
const _: () = assert!(LEASE_HOLDER_BYTES_MAX + 64 <= STORE_INFO_BYTES_MAX);
const _: () = assert!(EPOCH_BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(
    EPOCH_BATCH_BYTES_MAX * 2 <= REDB_CACHE_BYTES,
    "redb's write buffer (half its cache) holds the largest epoch batch"
);
const _: () = assert!(CHECKPOINT_KEY_BYTES_MAX * 2 + 64 <= 10_000);
const _: () = assert!(CHECKPOINT_VALUE_BYTES_MAX + 64 <= 100_000);

/// Checks the size limits shared by every backend.
pub(crate) fn check_batch(backend: &'static str, batch: &[u8]) -> Result<(), crate::StorageError> {
    if batch.len() > EPOCH_BATCH_BYTES_MAX {
        return Err(crate::StorageError::TooLarge {
            backend,
            what: "epoch batch",
            size: batch.len(),
            limit: EPOCH_BATCH_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks the store info record against [`STORE_INFO_BYTES_MAX`].
pub(crate) fn check_store_info(
    backend: &'static str,
    info: &[u8],
) -> Result<(), crate::StorageError> {
    if info.len() > STORE_INFO_BYTES_MAX {
        return Err(crate::StorageError::TooLarge {
            backend,
            what: "store info record",
            size: info.len(),
            limit: STORE_INFO_BYTES_MAX,
        });
    }
    Ok(())
}

/// Checks every row of a checkpoint chunk against the size limits shared by every backend.
pub(crate) fn check_rows(
    backend: &'static str,
    rows: &[crate::CheckpointRow],
) -> Result<(), crate::StorageError> {
    for (key, value) in rows {
        if key.len() > CHECKPOINT_KEY_BYTES_MAX {
            return Err(crate::StorageError::TooLarge {
                backend,
                what: "checkpoint row key",
                size: key.len(),
                limit: CHECKPOINT_KEY_BYTES_MAX,
            });
        }
        if let Some(value) = value
            && value.len() > CHECKPOINT_VALUE_BYTES_MAX
        {
            return Err(crate::StorageError::TooLarge {
                backend,
                what: "checkpoint row value",
                size: value.len(),
                limit: CHECKPOINT_VALUE_BYTES_MAX,
            });
        }
    }
    Ok(())
}

/// Largest blob of pending checkpoint rows the embedded redb backend stores under one key, in
/// bytes. A larger chunk from the caller is split; each blob is read whole on completion.
pub const REDB_PENDING_BLOB_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(
    REDB_PENDING_BLOB_BYTES_MAX >= CHECKPOINT_KEY_BYTES_MAX + CHECKPOINT_VALUE_BYTES_MAX + 64
);

/// Most rows, and most bytes of keys and row envelopes, one transaction of the embedded redb
/// backend's merge of a completed checkpoint into its state applies. A completion is a small
/// transaction that marks the checkpoint complete and then a merge in steps of this size, each
/// one transaction (and one fsync) over the next range of keys, so no commit writes out more
/// than a step's pages at once (one transaction for the whole merge wrote and synced hundreds
/// of megabytes in its commit, and log appends on the same disk waited behind it). 16,384
/// rows of 16-byte keys and 40-byte values are about 1 MB and 45–85 ms a step; a quarter of
/// that made the completion of 2,000,000 rows about 15 % longer (one fsync a step) with no
/// better append latency (`docs/storage.md`, "The completion in steps").
pub const REDB_MERGE_STEP_ROWS: usize = 16_384;

/// See [`REDB_MERGE_STEP_ROWS`]; also about the blob bytes one transaction removes after the
/// merge.
pub const REDB_MERGE_STEP_BYTES: usize = 8 * 1024 * 1024;

/// Log records the PostgreSQL backend reads ahead of the caller's visitor in `read_epochs`
/// (each up to one epoch batch).
pub const POSTGRES_LOG_READ_AHEAD: usize = 16;

/// Most connections the PostgreSQL backend reads one checkpoint with, each copying its own
/// range of the table's heap blocks at the same time (the first is the store's reader, the
/// others are opened for the read and closed after it).
pub const POSTGRES_CHECKPOINT_READERS_MAX: usize = 3;

/// Fewest heap blocks (8 KiB each by default) of the checkpoint table per connection of a
/// checkpoint read: a smaller table is read by fewer connections, one below this, as opening a
/// connection costs more than copying that much.
pub const POSTGRES_CHECKPOINT_BLOCKS_PER_READER_MIN: i64 = 2_048;

/// A PostgreSQL checkpoint's completion prunes the versions its rows and those of the
/// checkpoints before it replace once the versions not yet pruned are more than one in this
/// many of the checkpoint's rows; below that, it leaves them to a later completion and reads
/// merge the unpruned versions over the pruned rows (so they read up to that share more rows).
pub const POSTGRES_UNPRUNED_ROWS_DIVISOR: u64 = 10;

const _: () = assert!(POSTGRES_CHECKPOINT_READERS_MAX >= 1);
const _: () = assert!(POSTGRES_UNPRUNED_ROWS_DIVISOR >= 1);
const _: () = assert!(POSTGRES_CHECKPOINT_BLOCKS_PER_READER_MIN >= 1);

/// Largest value the FoundationDB backend writes, in bytes: a log record is cut into chunks of
/// this size. FoundationDB refuses values over 100,000 bytes; we stay 10% under.
pub const FDB_VALUE_BYTES_MAX: usize = 90_000;

/// Bytes of keys and values one FoundationDB write transaction aims to stay under. FoundationDB
/// refuses transactions over 10 MB and recommends staying under 1 MB; larger writes are split
/// into several transactions.
pub const FDB_TRANSACTION_BYTES_TARGET: usize = 500_000;

/// Keys one FoundationDB read or clean-up transaction handles before the next transaction takes
/// over, so every transaction ends well inside FoundationDB's 5 s limit.
pub const FDB_KEYS_PER_TRANSACTION_MAX: usize = 5_000;

/// Bytes one FoundationDB read transaction fetches before the next transaction takes over.
pub const FDB_READ_BYTES_PER_TRANSACTION_MAX: usize = 8_000_000;

/// Log headers read per FoundationDB transaction by `read_epochs`.
pub const FDB_EPOCHS_PER_READ_MAX: usize = 32;

/// Time budget of one FoundationDB operation including its retries, in milliseconds; past it the
/// call fails with [`crate::StorageError::Io`] instead of retrying forever (e.g. cluster down).
pub const FDB_TRANSACTION_TIMEOUT_MS: i32 = 30_000;

/// Retries of one FoundationDB transaction before the call fails with
/// [`crate::StorageError::Io`].
pub const FDB_TRANSACTION_RETRY_MAX: i32 = 50;

const _: () = assert!(FDB_VALUE_BYTES_MAX < 100_000);
const _: () = assert!(FDB_READ_BYTES_PER_TRANSACTION_MAX >= FDB_VALUE_BYTES_MAX);
const _: () = assert!(FDB_TRANSACTION_BYTES_TARGET >= FDB_VALUE_BYTES_MAX * 2);
const _: () = assert!(FDB_TRANSACTION_BYTES_TARGET < 1_000_000);
// One checkpoint row (tuple-encoded key twice: the row and its index entry, plus the value)
// always fits one transaction.
const _: () = assert!(
    2 * (2 * CHECKPOINT_KEY_BYTES_MAX + 64) + CHECKPOINT_VALUE_BYTES_MAX + 64
        < FDB_TRANSACTION_BYTES_TARGET
);
