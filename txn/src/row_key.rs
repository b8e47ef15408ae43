//! The checkpoint row-key codec: `[global partition u32 BE][table u16 BE][rmp-encoded key]`, so
//! one store holds every partition's rows and they sort by partition, then table. A leaf module:
//! tables encode with it, recovery and the dedup window decode with it.

use crate::ids::GlobalPartition;

/// One encoded checkpoint row: `(row key, Some(value) | None for deleted)`.
pub(crate) type CheckpointRow = (Vec<u8>, Option<Vec<u8>>);

/// Copies of changed rows taken at the epoch barrier, encoded into checkpoint rows when called
/// (on the checkpoint thread).
pub(crate) type DeferredRows = Box<dyn FnOnce(&mut Vec<CheckpointRow>) + Send>;

/// Bytes before the encoded key in a checkpoint row key: global partition (u32 BE) and table
/// index (u16 BE), so one store holds every partition's rows and they sort by partition.
const ROW_KEY_PREFIX_LEN: usize = 6;

/// The row key prefix of table `table` in global partition `gp`.
pub(crate) fn row_key_prefix(gp: GlobalPartition, table: usize) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(ROW_KEY_PREFIX_LEN);
    prefix.extend_from_slice(&gp.to_be_bytes());
    prefix.extend_from_slice(&(table as u16).to_be_bytes());
    prefix
}

/// Splits a checkpoint row key into global partition, table index and encoded key; `None` if
/// it is too short to hold the prefix.
pub(crate) fn split_row_key(key: &[u8]) -> Option<(GlobalPartition, u16, &[u8])> {
    let gp = u32::from_be_bytes(key.get(0..4)?.try_into().ok()?);
    let table = u16::from_be_bytes(key.get(4..6)?.try_into().ok()?);
    Some((gp, table, &key[ROW_KEY_PREFIX_LEN..]))
}
