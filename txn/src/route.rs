//! Stable key-to-partition routing.

use std::hash::{Hash, Hasher};

/// The partition of `key` among `n_partitions`: a hash with a fixed seed, so the same key maps
/// to the same partition in every process and every run (recovery and multi-node rely on it).
pub fn partition_of<K: Hash + ?Sized>(key: &K, n_partitions: u32) -> u32 {
    debug_assert!(n_partitions > 0);
    if n_partitions == 1 {
        return 0;
    }
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    // FxHash's low bits are weak for small integers; fold the high half in before reducing.
    let x = h.finish();
    let mixed = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((mixed >> 32) % u64::from(n_partitions)) as u32
}
