//! [`AtomicSeqSet`]: the epoch's abort set, merged concurrently by the partitions.

use super::shim::{AtomicU64, Ordering};
use std::fmt;

/// A fixed-capacity set of sequence numbers `0..capacity` (an epoch's `Seq`s), one bit each,
/// stored in `AtomicU64` words, that many threads may add to at once.
///
/// In the decide phase every partition ORs its conflict set in ([`insert`](Self::insert),
/// [`union_from`](Self::union_from)) while the others do the same; the driver reads the merged
/// set ([`snapshot`](Self::snapshot), [`iter`](Self::iter), [`contains`](Self::contains)) after
/// the phase barrier. The word layout is the one of `txn`'s `SeqSet`: bit `s % 64` of word
/// `s / 64` is sequence number `s`.
///
/// # Contract
/// - **No lost bit.** Every bit added by any thread is in the set from then on; concurrent
///   merges into the same word never overwrite one another. Bits are never removed, except by
///   [`clear`](Self::clear), which needs `&mut self` (no concurrent writer).
/// - **Publication.** If a reader observes `s` in the set (through `contains`, `snapshot` or
///   `iter`), everything the thread that added `s` did before adding it happens-before the
///   read (e.g. the abort reason it recorded for `s`).
/// - Reads are per word: a read racing with writers sees each word at some instant, not the
///   whole set at one instant. Read the merged result once all writers are done (after the
///   phase barrier, which orders every merge before the driver's read).
///
/// # Memory ordering
/// Adding is one `fetch_or` per word: read-modify-writes on one atomic are totally ordered
/// (its modification order) and each one reads the latest value, so no update can be lost
/// whatever the ordering argument — that is what "no lost bit" rests on. The `fetch_or`s use
/// `Release` and the reads `Acquire`, so a reader that sees a bit synchronises with the
/// `fetch_or` that set it (or a later one on that word, which carries it along the release
/// sequence): that gives the publication guarantee. A word with nothing to add is not touched
/// at all (no store, hence no release either — there is nothing to publish).
pub struct AtomicSeqSet {
    words: Box<[AtomicU64]>,
    capacity: usize,
}

impl AtomicSeqSet {
    /// An empty set able to hold `0..capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        AtomicSeqSet {
            words: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            capacity,
        }
    }

    /// The `capacity` given at construction: members are `0..capacity`.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of `u64` words (`capacity.div_ceil(64)`), i.e. the length [`union_from`]
    /// expects and [`snapshot`] returns.
    ///
    /// [`union_from`]: Self::union_from
    /// [`snapshot`]: Self::snapshot
    pub fn n_words(&self) -> usize {
        self.words.len()
    }

    /// Adds `seq`; returns whether it was not in the set before.
    ///
    /// # Panics
    /// If `seq >= capacity` (a caller bug: sequence numbers come from the epoch's own batch).
    pub fn insert(&self, seq: u32) -> bool {
        assert!(
            (seq as usize) < self.capacity,
            "seq {seq} out of range 0..{}",
            self.capacity
        );
        let bit = 1u64 << (seq % 64);
        self.words[seq as usize / 64].fetch_or(bit, Ordering::Release) & bit == 0
    }

    /// Adds every member of a set given in the same word layout (e.g. a partition's `SeqSet`).
    /// Bits at or beyond `capacity` are ignored.
    ///
    /// # Panics
    /// If `words.len() != self.n_words()` (the sets belong to epochs of different sizes).
    pub fn union_from(&self, words: &[u64]) {
        assert_eq!(
            words.len(),
            self.words.len(),
            "merging a set of {} words into one of {}",
            words.len(),
            self.words.len()
        );
        for (i, (dst, &src)) in self.words.iter().zip(words).enumerate() {
            let src = src & self.word_mask(i);
            if src != 0 {
                dst.fetch_or(src, Ordering::Release);
            }
        }
    }

    /// Whether `seq` is in the set (`false` when out of range).
    pub fn contains(&self, seq: u32) -> bool {
        (seq as usize) < self.capacity
            && self.words[seq as usize / 64].load(Ordering::Acquire) & (1 << (seq % 64)) != 0
    }

    /// The set's words (layout as in [`union_from`](Self::union_from)).
    pub fn snapshot(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.words.len());
        self.snapshot_into(&mut out);
        out
    }

    /// Replaces the contents of `out` with the set's words, reusing its allocation.
    pub fn snapshot_into(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(self.words.iter().map(|w| w.load(Ordering::Acquire)));
    }

    /// The members in increasing order (each word is read once, when the iterator reaches it).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, word)| {
            let mut bits = word.load(Ordering::Acquire);
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some(i as u32 * 64 + bit)
            })
        })
    }

    /// The number of members.
    pub fn count(&self) -> usize {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as usize)
            .sum()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| w.load(Ordering::Acquire) == 0)
    }

    /// Removes every member, keeping the capacity (to reuse the set for the next epoch).
    /// `&mut self` proves no other thread is adding, so plain stores suffice.
    pub fn clear(&mut self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Bits of word `i` that are inside `0..capacity`.
    fn word_mask(&self, i: usize) -> u64 {
        let bits_left = self.capacity - i * 64;
        if bits_left >= 64 {
            u64::MAX
        } else {
            (1u64 << bits_left) - 1
        }
    }
}

impl fmt::Debug for AtomicSeqSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicSeqSet")
            .field("capacity", &self.capacity)
            .field("members", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    // Goal: inserts and merges land in the right words and read back in increasing order.
    #[test]
    fn insert_union_iterate_count() {
        let set = AtomicSeqSet::with_capacity(130);
        assert_eq!((set.capacity(), set.n_words()), (130, 3));
        assert!(set.is_empty());
        assert!(set.insert(0));
        assert!(
            !set.insert(0),
            "a second insert reports the member was there"
        );
        assert!(set.insert(129));
        set.union_from(&[1 << 5, 1, 0]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 64, 129]);
        assert_eq!(set.count(), 4);
        assert!(set.contains(64) && !set.contains(65) && !set.contains(10_000));
        assert_eq!(set.snapshot(), vec![1 | 1 << 5, 1, 1 << 1]);
    }

    // Goal: merged bits outside 0..capacity never become members.
    #[test]
    fn union_ignores_bits_beyond_capacity() {
        let set = AtomicSeqSet::with_capacity(66);
        set.union_from(&[0, u64::MAX]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![64, 65]);
        let exact = AtomicSeqSet::with_capacity(64);
        exact.union_from(&[u64::MAX]);
        assert_eq!(exact.count(), 64);
    }

    // Goal: clear empties the set for reuse without changing its capacity.
    #[test]
    fn clear_empties_and_keeps_capacity() {
        let mut set = AtomicSeqSet::with_capacity(10);
        set.insert(3);
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.capacity(), 10);
        let mut words = vec![9, 9, 9];
        set.snapshot_into(&mut words);
        assert_eq!(words, vec![0]);
    }

    // Goal: inserting a seq outside the epoch fails loudly, naming it.
    #[test]
    #[should_panic(expected = "seq 10 out of range 0..10")]
    fn insert_out_of_range_names_the_seq() {
        AtomicSeqSet::with_capacity(10).insert(10);
    }

    // Goal: merging a set sized for another epoch fails loudly.
    #[test]
    #[should_panic(expected = "merging a set of 1 words into one of 2")]
    fn union_of_a_different_size_is_refused() {
        AtomicSeqSet::with_capacity(100).union_from(&[1]);
    }

    // Goal: inserts from many threads into shared words keep every member.
    #[test]
    fn concurrent_merges_keep_every_bit() {
        let set = AtomicSeqSet::with_capacity(256);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let set = &set;
                s.spawn(move || {
                    for seq in (t..256).step_by(4) {
                        assert!(set.insert(seq));
                    }
                });
            }
        });
        assert_eq!(set.count(), 256);
    }
}
