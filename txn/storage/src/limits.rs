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

const _: () = assert!(EPOCH_BATCH_BYTES_MAX <= u32::MAX as usize);
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
