//! A dense bit set over the sequence numbers of one epoch (abort sets, conflict sets).

/// A fixed-size set of `Seq` values `0..len`. On the wire (rmp-serde): its words and length,
/// checked when read back (`SeqSetWords`).
#[derive(Clone, Default, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SeqSetWords")]
pub struct SeqSet {
    words: Vec<u64>,
    len: usize,
}

impl SeqSet {
    /// An empty set able to hold `0..len`.
    pub fn with_len(len: usize) -> Self {
        SeqSet {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Adds `seq`; returns whether it was newly added.
    pub fn insert(&mut self, seq: u32) -> bool {
        let (w, b) = (seq as usize / 64, seq % 64);
        debug_assert!(
            (seq as usize) < self.len,
            "seq {seq} out of range {}",
            self.len
        );
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        !was
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u32) -> bool {
        let w = seq as usize / 64;
        w < self.words.len() && self.words[w] & (1 << (seq % 64)) != 0
    }

    /// Adds every member of `other` (same length).
    pub fn union_with(&mut self, other: &SeqSet) {
        debug_assert_eq!(self.len, other.len);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut bits = w;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(i as u32 * 64 + b)
            })
        })
    }

    /// The backing words (bit `i % 64` of word `i / 64` is member `i`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// A set of capacity `len` from backing words in the layout of [`SeqSet::words`].
    pub fn from_words(words: Vec<u64>, len: usize) -> Self {
        assert_eq!(
            words.len(),
            len.div_ceil(64),
            "word count does not match len {len}"
        );
        SeqSet { words, len }
    }

    /// The capacity `len` given at construction.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// A `SeqSet` as read from the wire, before it is checked: the same fields, in the same order.
#[derive(serde::Deserialize)]
pub(crate) struct SeqSetWords {
    words: Vec<u64>,
    len: usize,
}

impl TryFrom<SeqSetWords> for SeqSet {
    type Error = String;

    /// Refuses words that do not fit the length: a wrong word count, or members at or past
    /// `len` (which `iter` would yield and `insert` would never make).
    fn try_from(wire: SeqSetWords) -> Result<Self, String> {
        let SeqSetWords { words, len } = wire;
        if words.len() != len.div_ceil(64) {
            return Err(format!(
                "a set of {len} sequence numbers needs {} words, got {}",
                len.div_ceil(64),
                words.len()
            ));
        }
        let spare_bits = words.len() * 64 - len;
        let last = words.last().copied().unwrap_or(0);
        if spare_bits > 0 && last >> (64 - spare_bits) != 0 {
            return Err(format!(
                "a set of {len} sequence numbers has members past {len}"
            ));
        }
        Ok(SeqSet { words, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_union_iterate() {
        let mut a = SeqSet::with_len(130);
        assert!(a.insert(0));
        assert!(!a.insert(0));
        a.insert(64);
        a.insert(129);
        let mut b = SeqSet::with_len(130);
        b.insert(5);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 5, 64, 129]);
        assert!(!a.contains(6) && a.contains(129));
    }
}
