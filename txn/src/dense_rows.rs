//! The committed rows of a hash table, stored densely: the entries sit side by side in one
//! vector, and a hash index of `u32` positions finds them.
//!
//! A hash map of `(key, slot)` entries keeps its entries in its buckets, so every empty bucket
//! (a power-of-two table is 44–87 % full) costs a whole entry, and growing it holds the old and
//! the new bucket arrays at once. Here an empty bucket costs 5 bytes (a `u32` and a control
//! byte), the entries vector only ever holds live entries (growing it is a `realloc`, which the
//! allocator serves by remapping pages for large vectors, and untouched capacity is not
//! resident), and a probe still reads one index bucket and one entry. Deleting moves the last
//! entry into the hole, which re-points its index bucket (a second probe, on deletes only).
//! Iteration is in entry order, which depends on the order of inserts and deletes only, never
//! on hashes.

use hashbrown::hash_table::{Entry, HashTable};
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

/// Committed rows keyed by `K`, each with its slot `S` (the value and its bookkeeping).
pub(crate) struct DenseRows<K, S> {
    /// Every live entry, in insert order except where a delete moved the last one.
    entries: Vec<(K, S)>,
    /// The position in `entries` of each key, hashed by key.
    index: HashTable<u32>,
    probes: ProbeCount,
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

/// The position `i` as stored in the index, refusing positions `u32` cannot hold.
fn position(i: usize) -> u32 {
    u32::try_from(i).expect("more than 2^32 rows in one table of one partition")
}

impl<K: Hash + Eq, S> DenseRows<K, S> {
    pub fn new() -> Self {
        DenseRows {
            entries: Vec::new(),
            index: HashTable::new(),
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
        let &i = self
            .index
            .find(hash_of(key), |&i| entries[i as usize].0 == *key)?;
        Some(i as usize)
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
        let hash = hash_of(&key);
        let entries = &self.entries;
        let entry = self.index.entry(
            hash,
            |&i| entries[i as usize].0 == key,
            |&i| hash_of(&entries[i as usize].0),
        );
        match entry {
            Entry::Occupied(o) => Some(*o.get() as usize),
            Entry::Vacant(v) => {
                if let Some(slot) = make(&key) {
                    v.insert(position(self.entries.len()));
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
            let last = position(self.entries.len());
            *self
                .index
                .find_mut(hash_of(moved_key), |&j| j == last)
                .expect("every entry is indexed") = position(i);
        }
        removed
    }

    /// Drops the index bucket of the entry at position `i`.
    fn unindex(&mut self, i: usize) {
        self.probes.add();
        let at = position(i);
        let found = self
            .index
            .find_entry(hash_of(&self.entries[i].0), |&j| j == at);
        found.expect("every entry is indexed").remove();
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
            let found = rows.index.find(hash_of(k), |&j| j as usize == i).is_some();
            assert!(found, "entry {i} (key {k}) is not indexed at its position");
        }
        assert_eq!(rows.index.len(), rows.len());
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
}
