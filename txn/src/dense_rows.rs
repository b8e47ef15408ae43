//! The committed rows of a hash table, stored densely: the entries sit side by side in one
//! vector, and a hash index of positions finds them.
//!
//! A hash map of `(key, slot)` entries keeps its entries in its buckets, so every empty bucket
//! costs a whole entry, and growing it holds the old and the new bucket arrays at once. Here
//! the entries vector only ever holds live entries (growing it is a `realloc`, which the
//! allocator serves by remapping pages for large vectors, and untouched capacity is not
//! resident), and the index is one array of 8-byte buckets, each a position and 32 bits of its
//! key's hash, filled at most to `MAX_LOAD` with linear probing (`Index`). A probe of a row
//! that is far out of the caches is then two dependent cache misses, the bucket and the entry:
//! a hash table with separate control bytes (hashbrown's) reads its control group, then the
//! bucket elsewhere, then the entry, three misses (and three pages for the TLB). The hash bits
//! in the bucket make a probe that passes another key's bucket skip it without reading that
//! key's entry. Deleting moves the last entry into the hole, which re-points its index bucket
//! (a second probe, on deletes only). Iteration is in entry order, which depends on the order
//! of inserts and deletes only, never on hashes.

use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

/// Committed rows keyed by `K`, each with its slot `S` (the value and its bookkeeping).
pub(crate) struct DenseRows<K, S> {
    /// Every live entry, in insert order except where a delete moved the last one.
    entries: Vec<(K, S)>,
    /// The position in `entries` of each key, hashed by key.
    index: Index,
    probes: ProbeCount,
}

/// How full the index's bucket array may be before it doubles, as a fraction: linear probing
/// stays short (about 3 buckets, within one cache line, for a row that exists) below it.
const MAX_LOAD: (usize, usize) = (4, 5);

/// Buckets of the first bucket array.
const MIN_BUCKETS: usize = 16;

/// An empty bucket. An occupied one is `bucket(tag, position)`, never 0.
const EMPTY: u64 = 0;

/// The bucket of the entry at `position` whose key hashes to `tag` in its low 32 bits.
fn bucket(tag: u32, position: usize) -> u64 {
    (u64::from(tag) << 32) | (position as u64 + 1)
}

/// The hash bits an occupied bucket keeps; they also say where its probe starts.
fn tag_of_bucket(b: u64) -> u32 {
    (b >> 32) as u32
}

/// The entry position an occupied bucket holds.
fn position_of_bucket(b: u64) -> usize {
    (b as u32 - 1) as usize
}

/// The hash index of `DenseRows`: a power-of-two array of buckets, each 0 (empty) or an entry's
/// position with the low 32 bits of its key's hash (its tag), with linear probing from bucket
/// `tag & mask` and backward-shift deletion (no tombstones: a delete moves the buckets after it
/// back along their probe paths, so a probe stops at the first empty bucket).
struct Index {
    buckets: Vec<u64>,
    /// Occupied buckets.
    len: usize,
}

impl Index {
    fn new() -> Self {
        Index {
            buckets: Vec::new(),
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The bucket holding tag `tag` and a position `eq` accepts, or else the empty bucket its
    /// probe stopped at (any value when there are no buckets yet).
    fn find(&self, tag: u32, mut eq: impl FnMut(usize) -> bool) -> Result<usize, usize> {
        if self.buckets.is_empty() {
            return Err(0);
        }
        let mask = self.mask();
        let mut at = tag as usize & mask;
        loop {
            let b = self.buckets[at];
            if b == EMPTY {
                return Err(at);
            }
            if tag_of_bucket(b) == tag && eq(position_of_bucket(b)) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The position the occupied bucket `at` holds.
    fn position_at(&self, at: usize) -> usize {
        position_of_bucket(self.buckets[at])
    }

    /// Re-points the occupied bucket `at` to `position`.
    fn set_position(&mut self, at: usize, position: usize) {
        self.buckets[at] = bucket(tag_of_bucket(self.buckets[at]), position);
    }

    /// Indexes `position` under `tag` in the empty bucket `vacant` that `find` gave, or, when
    /// the array must grow first, wherever its probe now ends.
    fn insert(&mut self, tag: u32, position: usize, vacant: usize) {
        let vacant = if (self.len + 1) * MAX_LOAD.1 > self.buckets.len() * MAX_LOAD.0 {
            self.grow();
            self.vacant_for(tag)
        } else {
            vacant
        };
        self.buckets[vacant] = bucket(tag, position);
        self.len += 1;
    }

    /// The first empty bucket of `tag`'s probe.
    fn vacant_for(&self, tag: u32) -> usize {
        let mask = self.mask();
        let mut at = tag as usize & mask;
        while self.buckets[at] != EMPTY {
            at = (at + 1) & mask;
        }
        at
    }

    /// Doubles the bucket array, re-placing every bucket by its tag (no entry is read).
    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            let at = self.vacant_for(tag_of_bucket(b));
            self.buckets[at] = b;
        }
    }

    /// Empties the occupied bucket `at`, moving each later bucket of the same run back into
    /// the hole when the hole lies on its probe path (from its home bucket to where it is).
    fn remove(&mut self, at: usize) {
        let mask = self.mask();
        let mut hole = at;
        let mut next = (at + 1) & mask;
        loop {
            let b = self.buckets[next];
            if b == EMPTY {
                break;
            }
            let home = tag_of_bucket(b) as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.buckets[hole] = b;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
    }
}

/// How many times the index was probed (hashed and searched), counted in debug builds only so
/// that tests can hold the per-row phases to their probe budget; release builds count nothing.
#[derive(Default)]
pub(crate) struct ProbeCount {
    #[cfg(debug_assertions)]
    n_probes: std::cell::Cell<u64>,
}

impl ProbeCount {
    fn add(&self) {
        #[cfg(debug_assertions)]
        self.n_probes.set(self.n_probes.get() + 1);
    }

    /// The probes so far, or `None` in a release build.
    pub fn get(&self) -> Option<u64> {
        #[cfg(debug_assertions)]
        return Some(self.n_probes.get());
        #[cfg(not(debug_assertions))]
        None
    }
}

/// The hash of a key for the index. Only positions in memory depend on it: nothing persisted
/// and no iteration order does.
fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The tag of a key in the index: the low 32 bits of its hash.
fn tag_of<K: Hash>(key: &K) -> u32 {
    hash_of(key) as u32
}

/// Refuses positions a bucket cannot hold (it stores `position + 1` in 32 bits).
fn check_position(i: usize) {
    assert!(
        i < u32::MAX as usize,
        "more than 2^32 - 1 rows in one table of one partition"
    );
}

impl<K: Hash + Eq, S> DenseRows<K, S> {
    pub fn new() -> Self {
        DenseRows {
            entries: Vec::new(),
            index: Index::new(),
            probes: ProbeCount::default(),
        }
    }

    /// How many times the index was probed so far (debug builds only).
    pub fn probes(&self) -> Option<u64> {
        self.probes.get()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of `key`'s entry, found in one probe.
    pub fn position_of(&self, key: &K) -> Option<usize> {
        self.probes.add();
        let entries = &self.entries;
        let at = self
            .index
            .find(tag_of(key), |i| entries[i].0 == *key)
            .ok()?;
        Some(self.index.position_at(at))
    }

    pub fn get(&self, key: &K) -> Option<&S> {
        let i = self.position_of(key)?;
        Some(&self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut S> {
        let i = self.position_of(key)?;
        Some(&mut self.entries[i].1)
    }

    /// Finds `key`'s entry in one probe and returns its position, or, when `make` returns a
    /// slot for the missing key, inserts it (in the same probe) and returns `None`.
    pub fn upsert(&mut self, key: K, make: impl FnOnce(&K) -> Option<S>) -> Option<usize> {
        self.probes.add();
        let tag = tag_of(&key);
        let entries = &self.entries;
        match self.index.find(tag, |i| entries[i].0 == key) {
            Ok(at) => Some(self.index.position_at(at)),
            Err(vacant) => {
                if let Some(slot) = make(&key) {
                    let i = self.entries.len();
                    check_position(i);
                    self.index.insert(tag, i, vacant);
                    self.entries.push((key, slot));
                }
                None
            }
        }
    }

    /// The entry at position `i` (as `upsert` or `position_of` returned it).
    pub fn entry(&self, i: usize) -> &(K, S) {
        &self.entries[i]
    }

    /// The entry at position `i`, mutably.
    pub fn entry_mut(&mut self, i: usize) -> &mut (K, S) {
        &mut self.entries[i]
    }

    /// Removes the entry at position `i` and returns it; the last entry moves into its place.
    pub fn remove_at(&mut self, i: usize) -> (K, S) {
        self.unindex(i);
        let removed = self.entries.swap_remove(i);
        if let Some((moved_key, _)) = self.entries.get(i) {
            self.probes.add();
            let last = self.entries.len();
            let at = self
                .index
                .find(tag_of(moved_key), |j| j == last)
                .expect("every entry is indexed");
            self.index.set_position(at, i);
        }
        removed
    }

    /// Drops the index bucket of the entry at position `i`.
    fn unindex(&mut self, i: usize) {
        self.probes.add();
        let at = self
            .index
            .find(tag_of(&self.entries[i].0), |j| j == i)
            .expect("every entry is indexed");
        self.index.remove(at);
    }

    /// Every entry, in entry order.
    pub fn iter(&self) -> impl Iterator<Item = &(K, S)> {
        self.entries.iter()
    }

    /// Every slot, mutably, in entry order.
    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.entries.iter_mut().map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_index(rows: &DenseRows<u64, u64>) {
        for (i, (k, _)) in rows.iter().enumerate() {
            let found = rows.index.find(tag_of(k), |j| j == i).is_ok();
            assert!(found, "entry {i} (key {k}) is not indexed at its position");
        }
        assert_eq!(rows.index.len, rows.len());
    }

    #[test]
    fn inserts_finds_and_removes_like_a_map() {
        let mut rows = DenseRows::<u64, u64>::new();
        let mut model = std::collections::BTreeMap::new();
        // A fixed pseudo-random sequence of inserts, updates and deletes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 500;
            let deleting = x.is_multiple_of(3);
            let found = rows.upsert(key, |_| (!deleting).then_some(x));
            if deleting {
                let removed = found.map(|i| rows.remove_at(i).1);
                assert_eq!(removed, model.remove(&key));
            } else {
                if let Some(i) = found {
                    rows.entry_mut(i).1 = x;
                }
                model.insert(key, x);
            }
        }
        check_index(&rows);
        for key in 0..500 {
            assert_eq!(rows.get(&key), model.get(&key));
        }
    }

    #[test]
    fn upsert_without_a_slot_inserts_nothing() {
        let mut rows = DenseRows::<u64, u64>::new();
        assert_eq!(rows.upsert(7, |_| None), None);
        assert_eq!(rows.len(), 0);
        assert_eq!(rows.get(&7), None);
    }

    /// Long probe runs that wrap around the end of the bucket array, with removals from their
    /// middle: every position stays findable under its tag and the array never holds a hole
    /// inside a run (which would hide the buckets after it).
    #[test]
    fn removing_from_runs_that_wrap_keeps_every_bucket_reachable() {
        let mut index = Index::new();
        let mut model: Vec<(u32, usize)> = Vec::new();
        // Tags whose home buckets crowd the last buckets of a 16-bucket array (and, after it
        // doubles, of 32), so runs wrap to the front.
        let tags = [15u32, 14, 15, 13, 15, 31, 14, 47, 15, 30, 63, 12];
        for (position, &tag) in tags.iter().enumerate() {
            let vacant = index.find(tag, |_| false).unwrap_err();
            index.insert(tag, position, vacant);
            model.push((tag, position));
        }
        for remove in [2usize, 0, 7, 5, 11, 3] {
            let (tag, position) =
                model.remove(model.iter().position(|&(_, p)| p == remove).unwrap());
            let at = index.find(tag, |p| p == position).expect("indexed");
            index.remove(at);
            assert!(index.find(tag, |p| p == position).is_err());
            for &(tag, position) in &model {
                assert!(
                    index.find(tag, |p| p == position).is_ok(),
                    "position {position} (tag {tag}) lost after removing {remove}"
                );
            }
            assert_eq!(index.len, model.len());
        }
    }
}
