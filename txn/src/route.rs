//! Stable key-to-partition routing: the one function every key is routed by.
//!
//! A key's partition is persisted (checkpoint row keys start with the global partition), so the
//! function must never change silently: it is `actor_runtime::partition_of`, a seedless hash
//! that feeds every integer as a little-endian `u64` and byte strings as little-endian words, so
//! the answer is the same on every platform, in every process and with every dependency version.
//! The golden values in `txn/tests/fingerprint.rs` pin it; changing it is an on-disk format
//! change (`fingerprint::STORE_FORMAT_VERSION`).

use std::hash::Hash;

/// The partition of `key` among `n_partitions` (`ServiceRef::partition_of`, table placement,
/// foreign keys and unique indexes all route through here).
pub fn partition_of<K: Hash + ?Sized>(key: &K, n_partitions: u32) -> u32 {
    debug_assert!(n_partitions > 0);
    actor_runtime::partition_of(key, n_partitions)
}
