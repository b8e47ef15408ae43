//! The committed rows of a hash table, stored densely: the entries sit side by side in one
//! vector, and a hash index of positions finds them.
//!
//! A hash map of `(key, slot)` entries keeps its entries in its buckets, so every empty bucket
//! costs a whole entry, and growing it holds the old and the new bucket arrays at once. Here
//! the entries vector only ever holds live entries (growing it is a `realloc`, which the
//! allocator serves by remapping pages for large vectors, and untouched capacity is not
//! resident), and the index is one array of 4-byte buckets, each a position and some bits of
//! its key's hash, filled at most to `MAX_LOAD` with linear probing (`Index`). A probe of a row
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
    /// The next, twice as large, index while it is being filled a few entries per insert
    /// (`grow_step`); `index` stays the one every lookup uses until it is complete.
    growth: Option<Growth>,
    probes: ProbeCount,
}

/// An index of twice the buckets, filled in entry order alongside the current one.
struct Growth {
    next: Index,
    /// Entries `[0, built)` are indexed in `next`, at their current positions.
    built: usize,
}

impl Growth {
    /// Indexes up to `most` more entries in `next`; whether every entry now is.
    fn fill<K: Hash, S>(&mut self, entries: &[(K, S)], most: usize) -> bool {
        let end = entries.len().min(self.built.saturating_add(most));
        for (position, (key, _)) in (self.built..end).zip(&entries[self.built..end]) {
            self.next.index_entry(hash_of(key), position);
        }
        self.built = end;
        end == entries.len()
    }
}

/// How full the index's bucket array may be before it doubles, as a fraction: linear probing
/// stays short (about 3 buckets, within one cache line, for a row that exists) below it.
const MAX_LOAD: (usize, usize) = (4, 5);

/// Buckets of the first bucket array.
const MIN_BUCKETS: usize = 16;

/// How full the bucket array is when its successor starts to be filled, a few entries per
/// insert (`DenseRows::grow_step`), instead of all at once when it is `MAX_LOAD` full: indexing
/// 1.7 M entries again in one insert took ~90 ms, a commit phase that long, and so the
/// marketplace's slowest transaction of a long run.
const GROW_START: (usize, usize) = (3, 4);

/// Entries indexed into the next array per insert while it is filled. From `GROW_START` to
/// `MAX_LOAD` there are `(4/5 - 3/4) n` inserts for at most `(4/5) n` entries, so this must be
/// at least 16; at 32 the next array is complete at about 77 % (so an array still doubles at
/// nearly the same load), and no insert indexes more than 32 entries besides its own.
const GROW_STEP_ENTRIES: usize = 32;
const _: () = assert!(
    GROW_STEP_ENTRIES * (MAX_LOAD.0 * GROW_START.1 - GROW_START.0 * MAX_LOAD.1)
        >= MAX_LOAD.0 * GROW_START.1
);

/// Smaller bucket arrays double at once (indexing at most ~13,000 entries again, well under a
/// millisecond): the next array's allocation and bookkeeping are not worth it below this.
const GROW_IN_STEPS_MIN_BUCKETS: usize = 1 << 14;

/// The most buckets an index holds (so a bucket keeps at least one hash bit): at most
/// `MAX_BUCKETS * 4 / 5` rows in one table of one partition.
const MAX_BUCKETS: usize = 1 << 31;

/// An empty bucket.
const EMPTY: u32 = 0;

/// The most buckets `prefetch_entry` reads of a probe: a run longer than this (rare below
/// `MAX_LOAD`) is left to the probe itself.
const PREFETCH_PROBE: usize = 4;

/// Asks the CPU to start loading the cache line holding `at`, without waiting for it: a
/// prefetch changes no value and cannot fault, so it is only ever a performance hint. A no-op
/// where there is no prefetch instruction to use.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(at: &T) {
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the target's
    // baseline); it reads nothing into the program and never faults, and `at` is a live
    // reference anyway.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (at as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The hash index of `DenseRows`: a power-of-two array of 4-byte buckets, with linear probing
/// from bucket `hash & mask` and backward-shift deletion (no tombstones: a delete moves the
/// buckets after it back along their probe paths, so a probe stops at the first empty bucket).
///
/// With `2^bits` buckets, an occupied bucket holds the entry's position + 1 in its low `bits`
/// bits (positions are below the row count, which is below the bucket count) and, above them,
/// the top `32 - bits` bits of the hash's high half (its tag): a probe passing another key's
/// bucket almost always tells it apart by the tag, without reading that key's entry. Neither
/// the home bucket nor the whole hash is kept, so doubling the array and shifting buckets back
/// on a delete hash the keys again (`rebuild` from every entry in order; `remove` for the few
/// buckets after the hole).
struct Index {
    buckets: Vec<u32>,
    /// Occupied buckets.
    len: usize,
    /// log2 of the bucket count: the width of the position field.
    bits: u32,
}

impl Index {
    fn new() -> Self {
        Index {
            buckets: Vec::new(),
            len: 0,
            bits: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The tag of `hash` for the current bucket count.
    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) >> self.bits
    }

    /// The occupied bucket for the entry at `position` with hash `hash`.
    fn bucket(&self, hash: u64, position: usize) -> u32 {
        let tag = u64::from(self.tag(hash)) << self.bits;
        (tag | (position as u64 + 1)) as u32
    }

    /// The entry position an occupied bucket holds (its low `bits` bits, the same as the
    /// bucket mask, minus one).
    #[inline]
    fn position_of(&self, b: u32) -> usize {
        (b as usize & self.mask()) - 1
    }

    /// The bucket holding `hash`'s tag and a position `eq` accepts, or else the empty bucket
    /// its probe stopped at (any value when there are no buckets yet).
    #[inline]
    fn find(&self, hash: u64, mut eq: impl FnMut(usize) -> bool) -> Result<usize, usize> {
        if self.buckets.is_empty() {
            return Err(0);
        }
        let (mask, tag) = (self.mask(), self.tag(hash));
        let mut at = hash as usize & mask;
        loop {
            let b = self.buckets[at];
            if b == EMPTY {
                return Err(at);
            }
            if b >> self.bits == tag && eq(self.position_of(b)) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The position of the first bucket of `hash`'s probe that holds `hash`'s tag, without
    /// reading any entry (so possibly another key's entry, on a tag collision), or `None` when
    /// the probe reaches an empty bucket first or runs longer than `PREFETCH_PROBE` buckets.
    #[inline]
    fn tagged_position(&self, hash: u64) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), self.tag(hash));
        let mut at = hash as usize & mask;
        for _ in 0..PREFETCH_PROBE {
            let b = self.buckets[at];
            if b == EMPTY {
                return None;
            }
            if b >> self.bits == tag {
                return Some(self.position_of(b));
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// The position the occupied bucket `at` holds.
    fn position_at(&self, at: usize) -> usize {
        self.position_of(self.buckets[at])
    }

    /// Re-points the occupied bucket `at` to `position`.
    fn set_position(&mut self, at: usize, position: usize) {
        let b = self.buckets[at];
        let tag = u64::from(b >> self.bits) << self.bits;
        self.buckets[at] = (tag | (position as u64 + 1)) as u32;
    }

    /// Whether indexing one more entry needs a larger array first (`rebuild`).
    fn full(&self) -> bool {
        (self.len + 1) * MAX_LOAD.1 > self.buckets.len() * MAX_LOAD.0
    }

    /// Indexes the entry at `position` with hash `hash` in the empty bucket `vacant` that
    /// `find` gave (after a `rebuild` if `full`: `vacant_for`).
    fn insert(&mut self, hash: u64, position: usize, vacant: usize) {
        debug_assert!(!self.full() && self.buckets[vacant] == EMPTY);
        self.buckets[vacant] = self.bucket(hash, position);
        self.len += 1;
    }

    /// The first empty bucket of `hash`'s probe.
    fn vacant_for(&self, hash: u64) -> usize {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.buckets[at] != EMPTY {
            at = (at + 1) & mask;
        }
        at
    }

    /// An empty index of `n` buckets (a power of two).
    fn with_buckets(n: usize) -> Self {
        assert!(
            n <= MAX_BUCKETS,
            "more than {} rows in one table of one partition",
            MAX_BUCKETS / MAX_LOAD.1 * MAX_LOAD.0
        );
        debug_assert!(n.is_power_of_two());
        Index {
            buckets: vec![EMPTY; n],
            len: 0,
            bits: n.trailing_zeros(),
        }
    }

    /// The bucket count the next, larger, array has.
    fn doubled(&self) -> usize {
        (self.buckets.len() * 2).max(MIN_BUCKETS)
    }

    /// Whether at least the fraction `num / den` of the buckets is occupied.
    fn at_least(&self, (num, den): (usize, usize)) -> bool {
        self.len * den >= self.buckets.len() * num
    }

    /// Indexes the entry at `position` with hash `hash` in the first empty bucket of its probe
    /// (there must be room: the array is never more than `MAX_LOAD` full).
    fn index_entry(&mut self, hash: u64, position: usize) {
        let at = self.vacant_for(hash);
        self.buckets[at] = self.bucket(hash, position);
        self.len += 1;
    }

    /// Doubles the bucket array and indexes again every entry, given by its hash in position
    /// order.
    fn rebuild(&mut self, hashes: impl Iterator<Item = u64>) {
        let n = self.doubled();
        // The old array is dropped first: the entries, not it, are what is indexed again.
        *self = Index::new();
        *self = Index::with_buckets(n);
        for (position, hash) in hashes.enumerate() {
            self.index_entry(hash, position);
        }
    }

    /// Empties the occupied bucket `at`, moving each later bucket of the same run back into
    /// the hole when the hole lies on its probe path (from its home bucket to where it is);
    /// `hash_of` gives the hash of the entry at a position.
    fn remove(&mut self, at: usize, hash_of: impl Fn(usize) -> u64) {
        let mask = self.mask();
        let mut hole = at;
        let mut next = (at + 1) & mask;
        loop {
            let b = self.buckets[next];
            if b == EMPTY {
                break;
            }
            let home = hash_of(self.position_of(b)) as usize & mask;
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
    pub(crate) fn add(&self) {
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
pub(crate) fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

impl<K: Hash + Eq, S> DenseRows<K, S> {
    pub fn new() -> Self {
        DenseRows {
            entries: Vec::new(),
            index: Index::new(),
            growth: None,
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

    /// Starts loading the index bucket where the probe of a key with hash `hash` (`hash_of`)
    /// begins. Only a hint: nothing is read or changed.
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        let buckets = &self.index.buckets;
        if !buckets.is_empty() {
            prefetch(&buckets[hash as usize & self.index.mask()]);
        }
    }

    /// Starts loading the entry that the probe of a key with hash `hash` would most likely
    /// find: it reads the index buckets (best after `prefetch_bucket` of the same hash, some
    /// rows earlier) but no entry, and changes nothing. A wrong hash prefetches another
    /// entry or none.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        if let Some(entry) = self
            .index
            .tagged_position(hash)
            .and_then(|i| self.entries.get(i))
        {
            prefetch(entry);
        }
    }

    /// The position of `key`'s entry, found in one probe.
    #[inline]
    pub fn position_of(&self, key: &K) -> Option<usize> {
        self.probes.add();
        let entries = &self.entries;
        let at = self
            .index
            .find(hash_of(key), |i| entries[i].0 == *key)
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
        let hash = hash_of(&key);
        let entries = &self.entries;
        match self.index.find(hash, |i| entries[i].0 == key) {
            Ok(at) => Some(self.index.position_at(at)),
            Err(mut vacant) => {
                if let Some(slot) = make(&key) {
                    if self.index.full() {
                        self.grow_now();
                        vacant = self.index.vacant_for(hash);
                    }
                    self.index.insert(hash, self.entries.len(), vacant);
                    self.entries.push((key, slot));
                    self.grow_step();
                }
                None
            }
        }
    }

    /// Replaces the index by one of twice the buckets at once: the next one being filled,
    /// completed, or else a new one indexing every entry.
    fn grow_now(&mut self) {
        match self.growth.take() {
            Some(mut growth) => {
                growth.fill(&self.entries, usize::MAX);
                self.index = growth.next;
            }
            None => self
                .index
                .rebuild(self.entries.iter().map(|(k, _)| hash_of(k))),
        }
    }

    /// After an insert: once a large index is `GROW_START` full, fills its successor
    /// `GROW_STEP_ENTRIES` entries at a time, and switches to it when it indexes every entry,
    /// before the current one is `MAX_LOAD` full. So no insert indexes more than that many
    /// entries besides its own, where doubling at once indexed every entry of the table.
    fn grow_step(&mut self) {
        let growth = match &mut self.growth {
            Some(growth) => growth,
            None => {
                let large = self.index.buckets.len() >= GROW_IN_STEPS_MIN_BUCKETS;
                // At the largest array, `grow_now` reports the table full at `MAX_LOAD`.
                let can_double = self.index.doubled() <= MAX_BUCKETS;
                if !large || !can_double || !self.index.at_least(GROW_START) {
                    return;
                }
                self.growth.insert(Growth {
                    next: Index::with_buckets(self.index.doubled()),
                    built: 0,
                })
            }
        };
        if growth.fill(&self.entries, GROW_STEP_ENTRIES) {
            let growth = self.growth.take().expect("a growth was filled");
            self.index = growth.next;
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
        let entries = &self.entries;
        if let Some(growth) = self.growth.as_mut().filter(|g| i < g.built) {
            let at = growth
                .next
                .find(hash_of(&entries[i].0), |j| j == i)
                .expect("every built entry is indexed in the next array");
            growth.next.remove(at, |j| hash_of(&entries[j].0));
        }
        let removed = self.entries.swap_remove(i);
        if let Some((moved_key, _)) = self.entries.get(i) {
            self.probes.add();
            let last = self.entries.len();
            let hash = hash_of(moved_key);
            let at = self
                .index
                .find(hash, |j| j == last)
                .expect("every entry is indexed");
            self.index.set_position(at, i);
            // The next array follows: the moved entry is re-pointed there if it was indexed
            // there, and indexed there if it moved into the part already built.
            if let Some(growth) = &mut self.growth {
                if last < growth.built {
                    let at = growth
                        .next
                        .find(hash, |j| j == last)
                        .expect("every built entry is indexed in the next array");
                    growth.next.set_position(at, i);
                } else if i < growth.built {
                    growth.next.index_entry(hash, i);
                }
            }
        }
        if let Some(growth) = &mut self.growth {
            growth.built = growth.built.min(self.entries.len());
        }
        removed
    }

    /// Drops the index bucket of the entry at position `i`.
    fn unindex(&mut self, i: usize) {
        self.probes.add();
        let at = self
            .index
            .find(hash_of(&self.entries[i].0), |j| j == i)
            .expect("every entry is indexed");
        let entries = &self.entries;
        self.index.remove(at, |j| hash_of(&entries[j].0));
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

    /// Every entry is indexed at its position, and, while the next array is filled, every
    /// entry below `built` is indexed there too and nothing else is.
    fn check_index(rows: &DenseRows<u64, u64>) {
        for (i, (k, _)) in rows.iter().enumerate() {
            let found = rows.index.find(hash_of(k), |j| j == i).is_ok();
            assert!(found, "entry {i} (key {k}) is not indexed at its position");
        }
        assert_eq!(rows.index.len, rows.len());
        if let Some(growth) = &rows.growth {
            assert!(growth.built <= rows.len());
            for (i, (k, _)) in rows.iter().enumerate().take(growth.built) {
                let found = growth.next.find(hash_of(k), |j| j == i).is_ok();
                assert!(found, "built entry {i} (key {k}) is not in the next array");
            }
            assert_eq!(growth.next.len, growth.built);
        }
    }

    /// Sets `key` to `value`, or removes it when `None`, in both `rows` and the `model`,
    /// checking that a removal returns what the model held.
    fn upsert_or_remove(
        rows: &mut DenseRows<u64, u64>,
        model: &mut std::collections::BTreeMap<u64, u64>,
        key: u64,
        value: Option<u64>,
    ) {
        let found = rows.upsert(key, |_| value);
        match value {
            None => {
                let removed = found.map(|i| rows.remove_at(i).1);
                assert_eq!(removed, model.remove(&key));
            }
            Some(value) => {
                if let Some(i) = found {
                    rows.entry_mut(i).1 = value;
                }
                model.insert(key, value);
            }
        }
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
            upsert_or_remove(&mut rows, &mut model, key, (!deleting).then_some(x));
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
    /// middle: every position stays findable under its hash and the array never holds a hole
    /// inside a run (which would hide the buckets after it).
    #[test]
    fn removing_from_runs_that_wrap_keeps_every_bucket_reachable() {
        let mut index = Index::new();
        // Hashes whose home buckets (low bits) crowd the last buckets of the 16-bucket array,
        // so runs wrap to the front, and whose high halves differ (the tags).
        let homes = [15u64, 14, 15, 13, 15, 31, 14, 47, 15, 30, 63, 12];
        let hashes: Vec<u64> = homes
            .iter()
            .enumerate()
            .map(|(i, home)| ((i as u64 + 1) << 60) | home)
            .collect();
        for (position, &hash) in hashes.iter().enumerate() {
            let mut vacant = index.find(hash, |_| false).unwrap_err();
            if index.full() {
                index.rebuild(hashes[..position].iter().copied());
                vacant = index.vacant_for(hash);
            }
            index.insert(hash, position, vacant);
        }
        assert_eq!(index.buckets.len(), 16);
        let mut live: Vec<usize> = (0..hashes.len()).collect();
        for remove in [2usize, 0, 7, 5, 11, 3] {
            live.retain(|&p| p != remove);
            let at = index
                .find(hashes[remove], |p| p == remove)
                .expect("indexed");
            index.remove(at, |p| hashes[p]);
            assert!(index.find(hashes[remove], |p| p == remove).is_err());
            for &position in &live {
                assert!(
                    index.find(hashes[position], |p| p == position).is_ok(),
                    "position {position} lost after removing {remove}"
                );
            }
            assert_eq!(index.len, live.len());
        }
    }

    /// A bucket keeps the position in its low bits and hash bits above them, at every size the
    /// array doubles through.
    #[test]
    fn buckets_keep_positions_and_tags_as_the_array_doubles() {
        let mut rows = DenseRows::<u64, u64>::new();
        for key in 0..100_000u64 {
            rows.upsert(key, |_| Some(key));
        }
        check_index(&rows);
        assert_eq!(rows.index.buckets.len(), 1 << 17);
        for key in (0..100_000u64).step_by(7) {
            assert_eq!(rows.get(&key), Some(&key));
        }
        assert_eq!(rows.get(&100_000), None);
    }

    /// A large index doubles in steps: no insert indexes more than `GROW_STEP_ENTRIES` entries
    /// besides its own, and the larger array replaces the old one only once it indexes every
    /// entry; lookups find every key throughout.
    #[test]
    fn large_tables_double_in_steps_of_a_few_entries() {
        let mut rows = DenseRows::<u64, u64>::new();
        let mut doublings_in_steps = 0;
        for key in 0..400_000u64 {
            let buckets = rows.index.buckets.len();
            let built = rows.growth.as_ref().map(|g| g.built);
            rows.upsert(key, |_| Some(key));
            let doubled = rows.index.buckets.len() > buckets;
            if buckets >= GROW_IN_STEPS_MIN_BUCKETS {
                match (&rows.growth, built, doubled) {
                    // Filling: a few more entries each insert.
                    (Some(g), Some(before), false) => {
                        assert!(
                            g.built - before <= GROW_STEP_ENTRIES,
                            "{before} -> {}",
                            g.built
                        )
                    }
                    // Switched: the last few entries went in, none was indexed at once.
                    (None, Some(before), true) => {
                        assert!(rows.len() - before <= GROW_STEP_ENTRIES + 1);
                        doublings_in_steps += 1;
                    }
                    (_, None, true) => panic!("{buckets} buckets doubled at once at key {key}"),
                    _ => {}
                }
            }
            if rows.growth.is_some() && key % 97 == 0 {
                check_index(&rows);
            }
        }
        check_index(&rows);
        assert_eq!(
            doublings_in_steps, 5,
            "16 K -> 32 K -> 64 K -> 128 K -> 256 K -> 512 K buckets"
        );
        for key in (0..400_000u64).step_by(13) {
            assert_eq!(rows.get(&key), Some(&key));
        }
    }

    /// Deletes while the next array is being filled keep both arrays right: a deleted entry
    /// leaves the next array too, and the last entry moved into its hole is re-pointed there,
    /// or indexed there when it moves into the part already built.
    #[test]
    fn removals_while_growing_keep_both_arrays_right() {
        let mut rows = DenseRows::<u64, u64>::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut ops_while_growing = 0;
        for n in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 60_000;
            // Mostly inserts, so the table grows through several doublings (bits of `x` other
            // than the key's decide, so that deletes hit inserted keys).
            let deleting = (x >> 40) % 8 < 3;
            upsert_or_remove(&mut rows, &mut model, key, (!deleting).then_some(x));
            if rows.growth.is_some() {
                ops_while_growing += 1;
                if ops_while_growing % 7 == 0 {
                    check_index(&rows);
                }
            } else if n % 10_000 == 0 {
                check_index(&rows);
            }
        }
        assert!(ops_while_growing > 1_000, "{ops_while_growing}");
        check_index(&rows);
        assert_eq!(rows.len(), model.len());
        for (key, value) in &model {
            assert_eq!(rows.get(key), Some(value));
        }
    }
}
