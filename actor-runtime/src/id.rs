//! Identities (service, partition, node) and the stable hash that maps entity keys to partitions.

use std::fmt;
use std::hash::{Hash, Hasher};

/// A registered service, numbered in registration order within one `ActorSystem` (first is 0).
///
/// Registration order is the only input, so a process that registers its services in the same
/// order gets the same ids on every run — the transaction layer may log them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ServiceId(pub u32);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// The identity of one virtual actor: partition `partition` of service `service`.
///
/// Displays as `s<service>/<partition>`, e.g. `s2/3`. It is a pair of integers so it stays `Copy`
/// and cheap; `ActorSystem::actor_label` turns it into `ledger/3` when the name is wanted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ActorId {
    pub service: ServiceId,
    pub partition: u32,
}

impl ActorId {
    pub const fn new(service: ServiceId, partition: u32) -> Self {
        Self { service, partition }
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.partition)
    }
}

/// A process that can host actors. Embedded mode has exactly one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The partition (in `0..n_partitions`) that owns `key`.
///
/// The key is fed through its `Hash` impl into [`StableHasher`], which has no random seed, so the
/// answer is the same in every process, on every platform and on every run — recovery and
/// multi-node placement depend on that. The 64-bit hash is mapped onto `0..n_partitions` by a
/// multiply-high (Lemire's reduction), which is uniform and avoids a division.
///
/// What stays stable is bounded by the key's `Hash` impl: integers, tuples of integers and byte
/// strings hash identically across Rust releases in practice, but std does not promise it for
/// every type, so persisted data should key on plain integers or bytes.
///
/// `n_partitions == 0` has no valid answer; it returns 0 (service configs reject 0 partitions).
pub fn partition_of<K: Hash + ?Sized>(key: &K, n_partitions: u32) -> u32 {
    partition_of_hash(stable_hash(key), n_partitions)
}

/// The 64-bit hash [`partition_of`] reduces: kept by whoever routes the same key among
/// partition counts known only later ([`partition_of_hash`]).
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = StableHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The partition among `n_partitions` of a key whose [`stable_hash`] is `hash`: the same as
/// [`partition_of`] of the key.
pub fn partition_of_hash(hash: u64, n_partitions: u32) -> u32 {
    reduce(hash, n_partitions)
}

/// Maps a uniformly distributed 64-bit hash onto `0..n` without a division.
pub(crate) fn reduce(hash: u64, n: u32) -> u32 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u32
}

/// A seedless, platform-independent 64-bit hasher used for partitioning and placement.
///
/// Every integer is mixed as its numeric value (not its native-endian bytes), byte slices are read
/// as little-endian words, and `usize` is widened to 64 bits, so 32/64-bit and big/little-endian
/// machines agree. The per-word step is a multiply-rotate (as in FxHash); `finish` applies the
/// MurmurHash3 64-bit finalizer so that every output bit depends on every input bit, which
/// rendezvous hashing and the multiply-high reduction both need.
///
/// Changing this function moves entities between partitions: treat it as a data-format change.
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: u64,
}

/// Initial state: the first 64 bits of pi's fraction (an arbitrary but fixed constant).
const STABLE_HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// Odd multiplier derived from the golden ratio; spreads each word over the high bits.
const STABLE_HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl StableHasher {
    pub const fn new() -> Self {
        Self {
            state: STABLE_HASH_SEED,
        }
    }

    #[inline]
    fn add_word(&mut self, word: u64) {
        self.state = (self.state.rotate_left(23) ^ word).wrapping_mul(STABLE_HASH_MULTIPLIER);
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
#[inline]
pub(crate) const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        fmix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add_word(u64::from_le_bytes(word));
        }
        // The tail word carries its length in the top byte so that `[1]` and `[1, 0]` differ.
        let tail = chunks.remainder();
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        word[7] = tail.len() as u8;
        self.add_word(u64::from_le_bytes(word));
    }

    fn write_u8(&mut self, i: u8) {
        self.add_word(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add_word(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add_word(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add_word(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.add_word(i as u64);
        self.add_word((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add_word(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the key -> partition map never changes silently (it is a data-format promise).
    #[test]
    fn partition_of_matches_golden_values() {
        let observed = [
            partition_of(&0u64, 1024),
            partition_of(&42u64, 1024),
            partition_of(&u64::MAX, 1024),
            partition_of("customer-17", 1024),
            partition_of(&(3u32, 9u32), 1024),
            partition_of(&[1u8, 2, 3][..], 1024),
        ];
        assert_eq!(
            observed, GOLDEN,
            "the stable hash changed; that moves persisted entities"
        );
    }

    const GOLDEN: [u32; 6] = [989, 232, 993, 355, 851, 67];

    // Goal: integer widths and byte tails that differ hash differently.
    #[test]
    fn stable_hasher_separates_lengths() {
        let hash = |f: &dyn Fn(&mut StableHasher)| {
            let mut h = StableHasher::new();
            f(&mut h);
            h.finish()
        };
        assert_ne!(hash(&|h| h.write(&[1])), hash(&|h| h.write(&[1, 0])));
        assert_ne!(hash(&|h| h.write(&[])), hash(&|h| h.write(&[0])));
        assert_ne!(hash(&|h| h.write_u32(1)), hash(&|h| h.write_u32(2)));
    }

    // Goal: keys spread evenly over partitions (no partition gets more than 1.5x its share).
    #[test]
    fn partition_of_spreads_keys_evenly() {
        let n_partitions = 64u32;
        let n_keys = 64_000u64;
        let mut counts = vec![0u32; n_partitions as usize];
        for key in 0..n_keys {
            let partition = partition_of(&key, n_partitions);
            assert!(partition < n_partitions);
            counts[partition as usize] += 1;
        }
        let share = (n_keys / u64::from(n_partitions)) as u32;
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *max < share * 3 / 2 && *min > share / 2,
            "min {min} max {max} share {share}"
        );
    }

    // Goal: string keys spread too (they go through `write` and the 0xff terminator).
    #[test]
    fn partition_of_spreads_string_keys() {
        let n_partitions = 16u32;
        let mut counts = vec![0u32; n_partitions as usize];
        for key in 0..16_000 {
            counts[partition_of(&format!("order-{key}"), n_partitions) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (500..1500).contains(&c)),
            "{counts:?}"
        );
    }

    // Goal: the degenerate partition count is answered without a panic.
    #[test]
    fn partition_of_zero_partitions_is_zero() {
        assert_eq!(partition_of(&7u64, 0), 0);
        assert_eq!(partition_of(&7u64, 1), 0);
    }
}
