//! MessagePack written by hand, byte for byte as rmp-serde writes the same values, for the
//! encodings every request pays for (the dedup window's entries, the epoch log's records):
//! going through serde's generic serializer and a fallible `Write` for every field costs
//! several times what the bytes themselves do. Each user holds its bytes to rmp-serde's in
//! tests computed at test time.

use crate::ids::RequestId;
use crate::wire::value;

/// Bytes a [`Head`] holds.
const HEAD_BYTES: usize = 128;

/// Up to 128 bytes of MessagePack put together on the stack, then appended to a buffer in
/// one copy: writing field by field into the `Vec` checks its capacity at every byte.
pub(crate) struct Head {
    bytes: [u8; HEAD_BYTES],
    len: usize,
}

impl Head {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Head {
            bytes: [0; HEAD_BYTES],
            len: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn put<const K: usize>(&mut self, bytes: [u8; K]) {
        self.bytes[self.len..self.len + K].copy_from_slice(&bytes);
        self.len += K;
    }

    /// An unsigned integer in its shortest form ([`value::uint`]).
    #[inline(always)]
    pub(crate) fn uint(&mut self, v: u64) {
        let Ok(()) = value::uint(self, v);
    }

    /// An array header for `n` elements (fixarray, array 16/32).
    #[inline(always)]
    pub(crate) fn array(&mut self, n: usize) {
        value::array(self, n).expect("a MessagePack array holds under 2^32 elements");
    }

    /// A byte string's header for `len` bytes (bin 8/16/32).
    #[inline(always)]
    pub(crate) fn bin(&mut self, len: usize) {
        value::bin_header(self, len).expect("a MessagePack byte string is under 4 GiB");
    }

    /// A [`RequestId`]: a 2-array of its client and seq.
    #[inline(always)]
    pub(crate) fn request_id(&mut self, id: RequestId) {
        self.put([0x92]);
        self.uint(id.client);
        self.uint(id.seq);
    }

    /// Bytes put so far.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes that can still be put.
    #[inline(always)]
    pub(crate) fn room(&self) -> usize {
        HEAD_BYTES - self.len
    }

    /// The bytes put so far.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Overwrites the byte put at `at`.
    #[inline(always)]
    pub(crate) fn set(&mut self, at: usize, byte: u8) {
        self.bytes[at] = byte;
    }

    /// Appends the bytes put so far to `buf`.
    #[inline(always)]
    pub(crate) fn append_to(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.bytes[..self.len]);
    }

    /// Appends the bytes put so far to `buf` and starts again empty.
    #[inline(always)]
    pub(crate) fn flush_to(&mut self, buf: &mut Vec<u8>) {
        self.append_to(buf);
        self.len = 0;
    }
}

/// A [`Head`] overflowing is a bug: [`Head::put`] panics.
impl value::Sink for Head {
    type Full = std::convert::Infallible;
    #[inline(always)]
    fn push_array<const K: usize>(&mut self, bytes: [u8; K]) -> Result<(), Self::Full> {
        self.put(bytes);
        Ok(())
    }
    #[inline(always)]
    fn push_slice(&mut self, bytes: &[u8]) -> Result<(), Self::Full> {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
}

/// Writes `value` into `head` as rmp-serde would ([`value::into`]) if it fits with at least
/// `keep` bytes of room left, and returns `true`; returns `false` (with `head` partly written)
/// for a value that does not fit or that [`value::value`] leaves to rmp-serde, which the
/// caller then encodes another way.
pub(crate) fn value_in_head<T: serde::Serialize + ?Sized>(
    head: &mut Head,
    value: &T,
    keep: usize,
) -> bool {
    value::into(&mut Kept { head, keep }, value)
}

/// A [`Head`] that refuses a write leaving it less than `keep` bytes of room.
struct Kept<'a> {
    head: &'a mut Head,
    keep: usize,
}

impl Kept<'_> {
    #[inline(always)]
    fn fits(&self, n: usize) -> Result<(), value::Refused> {
        match self.head.room() >= n + self.keep {
            true => Ok(()),
            false => Err(value::Refused),
        }
    }
}

impl value::Sink for Kept<'_> {
    type Full = value::Refused;
    #[inline(always)]
    fn push_array<const K: usize>(&mut self, bytes: [u8; K]) -> Result<(), value::Refused> {
        self.fits(K)?;
        let Ok(()) = self.head.push_array(bytes);
        Ok(())
    }
    #[inline(always)]
    fn push_slice(&mut self, bytes: &[u8]) -> Result<(), value::Refused> {
        self.fits(bytes.len())?;
        let Ok(()) = self.head.push_slice(bytes);
        Ok(())
    }
}

/// Each of MessagePack's integer widths, at both of its ends.
#[cfg(test)]
pub(crate) const INT_EDGES: [u64; 10] = [
    0,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

/// Each of MessagePack's signed integer widths at its negative end, and the extremes.
#[cfg(test)]
pub(crate) const SIGNED_EDGES: [i64; 12] = [
    0,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32_768,
    -32_769,
    i32::MIN as i64,
    i32::MIN as i64 - 1,
    i64::MIN,
    i64::MAX,
];

/// Any u64, each MessagePack integer width about equally likely.
#[cfg(test)]
pub(crate) fn any_width_uint() -> impl proptest::strategy::Strategy<Value = u64> {
    use proptest::prelude::*;
    prop_oneof![
        0..0x80u64,
        0x80..0x100u64,
        0x100..0x1_0000u64,
        0x1_0000..0x1_0000_0000u64,
        any::<u64>(),
    ]
}

/// An event (or any value) whose encoding fails, with [`UNENCODABLE`] as the error.
#[cfg(test)]
pub(crate) struct Unencodable;

/// The error message of [`Unencodable`]'s encoding.
#[cfg(test)]
pub(crate) const UNENCODABLE: &str = "no bytes for this one";

#[cfg(test)]
impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(UNENCODABLE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    /// `value` through [`value_in_head`] behind one byte, keeping `keep` bytes (`None` if
    /// refused), and through rmp-serde.
    fn both_ways<T: Serialize + ?Sized>(value: &T, keep: usize) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut head = Head::new();
        head.put([0xaa]);
        let fast = value_in_head(&mut head, value, keep).then(|| head.bytes()[1..].to_vec());
        (fast, rmp_serde::to_vec(value).expect("encodes"))
    }

    #[track_caller]
    fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        let (fast, rmp) = both_ways(value, 0);
        assert_eq!(fast.as_ref(), Some(&rmp), "{value:?}");
    }

    #[derive(Serialize, Debug)]
    struct Unit;

    #[derive(Serialize, Debug)]
    struct Newtype(i32);

    #[derive(Serialize, Debug)]
    enum Kind {
        Plain,
        Wrapped(u8),
        Named { a: u8, b: String },
    }

    #[test]
    fn values_that_fit_are_byte_for_byte_rmp_serde() {
        for v in INT_EDGES {
            same(&v);
            same(&Some(v as u32));
            same(&(v as i64));
        }
        for v in SIGNED_EDGES {
            same(&v);
            same(&Newtype(v as i32));
        }
        same(&true);
        same(&());
        same(&Unit);
        same(&None::<u64>);
        same(&Some(None::<u8>));
        same("text");
        same(&'c');
        same(&1.5f64);
        same(&-1i128);
        same(&vec![1u8, 200]);
        same(&Kind::Plain);
        same(&Kind::Wrapped(1));
        same(&Kind::Named {
            a: 7,
            b: "b".into(),
        });
        same(&serde_bytes::Bytes::new(b"ab"));
    }

    #[test]
    fn values_that_do_not_fit_or_are_left_to_rmp_serde_are_refused() {
        // 127 bytes of room behind the first byte: a 125-byte string needs 2 + 125.
        assert!(both_ways(&"x".repeat(125), 0).0.is_some());
        assert_eq!(both_ways(&"x".repeat(126), 0).0, None);
        assert_eq!(both_ways(&vec![0u64; 200], 0).0, None);
        // A MessagePack extension: rmp-serde's `_ExtStruct` newtype.
        #[derive(Serialize, Debug)]
        #[serde(rename = "_ExtStruct")]
        struct Ext((i8, serde_bytes::ByteBuf));
        assert_eq!(
            both_ways(&Ext((1, serde_bytes::ByteBuf::from(vec![1]))), 0).0,
            None
        );
        assert!(!value_in_head(&mut Head::new(), &Unencodable, 0));
    }

    #[test]
    fn a_value_in_the_head_keeps_the_room_asked_for() {
        let mut head = Head::new();
        while head.room() > 9 + 20 {
            head.put([0]);
        }
        let len = head.len();
        assert!(value_in_head(&mut head, &u64::MAX, 20), "9 bytes, 20 left");
        assert!(!value_in_head(&mut head, &0u8, 20), "1 byte would leave 19");
        assert_eq!(head.len(), len + 9, "a refused scalar writes nothing");
        // A string's bytes count as well as its header.
        let sixteen_left = || {
            let mut head = Head::new();
            while head.room() > 6 + 10 {
                head.put([0]);
            }
            head
        };
        assert!(
            !value_in_head(&mut sixteen_left(), "abcdef", 10),
            "7 bytes would leave 9"
        );
        let mut head = sixteen_left();
        assert!(value_in_head(&mut head, "abcde", 10), "6 bytes leave 10");
        assert_eq!(head.room(), 10);
    }

    proptest! {
        #[test]
        fn values_in_the_head_match_rmp_serde_on_random_integers(
            u in any_width_uint(),
            i in any::<i64>(),
            shift in 0u32..64,
        ) {
            let narrow = i >> shift;
            prop_assert_eq!(both_ways(&(u, narrow), 0).0, Some(rmp_serde::to_vec(&(u, narrow)).unwrap()));
            prop_assert_eq!(both_ways(&Some(narrow), 0).0, Some(rmp_serde::to_vec(&Some(narrow)).unwrap()));
        }
    }
}
