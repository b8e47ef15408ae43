//! MessagePack written by hand, byte for byte as rmp-serde writes the same values, for the
//! encodings every request pays for (the dedup window's entries, the epoch log's records):
//! going through serde's generic serializer and a fallible `Write` for every field costs
//! several times what the bytes themselves do. Each user holds its bytes to rmp-serde's in
//! tests computed at test time.

use crate::ids::RequestId;

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

    /// An unsigned integer in its shortest form (positive fixint, uint 8/16/32/64).
    #[inline(always)]
    pub(crate) fn uint(&mut self, v: u64) {
        if v < 0x80 {
            self.put([v as u8]);
            return;
        }
        let width = if v < 1 << 8 {
            1
        } else if v < 1 << 16 {
            2
        } else if v < 1 << 32 {
            4
        } else {
            8
        };
        self.sized([0xcc, 0xcd, 0xce, 0xcf], width, v);
    }

    /// A signed integer as rmp writes it (`write_sint`): a negative one in its shortest form
    /// (negative fixint, int 8/16/32/64), a non-negative one as [`Self::uint`] does.
    #[inline(always)]
    pub(crate) fn sint(&mut self, v: i64) {
        if v >= 0 {
            self.uint(v as u64);
            return;
        }
        if v >= -32 {
            self.put([v as u8]);
            return;
        }
        let width = if v >= -(1 << 7) {
            1
        } else if v >= -(1 << 15) {
            2
        } else if v >= -(1 << 31) {
            4
        } else {
            8
        };
        // Two's complement: the low bytes of the widened value are the narrow one's.
        self.sized([0xd0, 0xd1, 0xd2, 0xd3], width, v as u64);
    }

    /// The low `width` (1, 2, 4 or 8) bytes of `v`, big-endian, after that width's marker.
    #[inline(always)]
    fn sized(&mut self, markers: [u8; 4], width: u8, v: u64) {
        let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
        match width {
            1 => self.put([markers[0], h]),
            2 => self.put([markers[1], g, h]),
            4 => self.put([markers[2], e, f, g, h]),
            _ => self.put([markers[3], a, b, c, d, e, f, g, h]),
        }
    }

    /// An array header for `n` elements (fixarray, array 16/32).
    #[inline(always)]
    pub(crate) fn array(&mut self, n: usize) {
        if n < 16 {
            self.put([0x90 | n as u8]);
        } else {
            self.length(
                [0xdc, 0xdd],
                n,
                "a MessagePack array holds under 2^32 elements",
            );
        }
    }

    /// A byte string's header for `len` bytes (bin 8/16/32).
    #[inline(always)]
    pub(crate) fn bin(&mut self, len: usize) {
        if len < 1 << 8 {
            self.put([0xc4, len as u8]);
        } else {
            self.length(
                [0xc5, 0xc6],
                len,
                "a MessagePack byte string is under 4 GiB",
            );
        }
    }

    /// A 16-bit length after `markers[0]`, or a 32-bit one after `markers[1]`.
    #[inline(always)]
    fn length(&mut self, markers: [u8; 2], n: usize, too_long: &str) {
        if n < 1 << 16 {
            let [a, b] = (n as u16).to_be_bytes();
            self.put([markers[0], a, b]);
        } else {
            let [a, b, c, d] = u32::try_from(n).expect(too_long).to_be_bytes();
            self.put([markers[1], a, b, c, d]);
        }
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

/// Writes `value` into `head` as rmp-serde would, if it is a value of one of the common small
/// shapes — a bool, an integer up to 64 bits, unit, a unit struct, an option or a newtype
/// struct of those — and leaves at least `keep` bytes of room; returns `false` (with `head`
/// partly written) for any other value, which the caller then encodes with rmp-serde.
pub(crate) fn small_value<T: serde::Serialize + ?Sized>(
    head: &mut Head,
    value: &T,
    keep: usize,
) -> bool {
    value.serialize(Small { head, keep }).is_ok()
}

/// The serializer of [`small_value`].
struct Small<'a> {
    head: &'a mut Head,
    keep: usize,
}

/// A value [`small_value`] does not write.
#[derive(Debug)]
struct NotSmall;

impl std::fmt::Display for NotSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a small value")
    }
}

impl std::error::Error for NotSmall {}

impl serde::ser::Error for NotSmall {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotSmall
    }
}

impl Small<'_> {
    /// Room for the widest scalar (9 bytes) besides what must be kept.
    fn room(&self) -> Result<(), NotSmall> {
        if self.head.room() >= 9 + self.keep {
            Ok(())
        } else {
            Err(NotSmall)
        }
    }

    fn put<const K: usize>(self, bytes: [u8; K]) -> Result<(), NotSmall> {
        self.room()?;
        self.head.put(bytes);
        Ok(())
    }

    fn uint(self, v: u64) -> Result<(), NotSmall> {
        self.room()?;
        self.head.uint(v);
        Ok(())
    }

    fn sint(self, v: i64) -> Result<(), NotSmall> {
        self.room()?;
        self.head.sint(v);
        Ok(())
    }
}

/// The compound shapes [`small_value`] does not write.
type NoCompound = serde::ser::Impossible<(), NotSmall>;

/// `Serializer` methods that write their integer widened to `$wide` by `Small::$write`.
macro_rules! widening {
    ($($write:ident($wide:ty): $($name:ident($t:ty)),+);+) => {
        $($(
            fn $name(self, v: $t) -> Result<(), NotSmall> {
                self.$write(<$wide>::from(v))
            }
        )+)+
    };
}

/// `Serializer` methods for the shapes [`small_value`] leaves to rmp-serde.
macro_rules! refusing {
    ($($name:ident($($arg:ty),*) -> $ok:ty),+ $(,)?) => {
        $(
            fn $name(self, $(_: $arg),*) -> Result<$ok, NotSmall> {
                Err(NotSmall)
            }
        )+
    };
}

impl serde::Serializer for Small<'_> {
    type Ok = ();
    type Error = NotSmall;
    type SerializeSeq = NoCompound;
    type SerializeTuple = NoCompound;
    type SerializeTupleStruct = NoCompound;
    type SerializeTupleVariant = NoCompound;
    type SerializeMap = NoCompound;
    type SerializeStruct = NoCompound;
    type SerializeStructVariant = NoCompound;

    // rmp-serde is not human-readable: types that encode differently for humans must take
    // the same branch here.
    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), NotSmall> {
        self.put([if v { 0xc3 } else { 0xc2 }])
    }
    widening! {
        sint(i64): serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64);
        uint(u64): serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64)
    }
    refusing! {
        serialize_f32(f32) -> (),
        serialize_f64(f64) -> (),
        serialize_char(char) -> (),
        serialize_str(&str) -> (),
        serialize_bytes(&[u8]) -> (),
        serialize_unit_variant(&'static str, u32, &'static str) -> (),
        serialize_seq(Option<usize>) -> NoCompound,
        serialize_tuple(usize) -> NoCompound,
        serialize_tuple_struct(&'static str, usize) -> NoCompound,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> NoCompound,
        serialize_map(Option<usize>) -> NoCompound,
        serialize_struct(&'static str, usize) -> NoCompound,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> NoCompound,
    }
    fn serialize_none(self) -> Result<(), NotSmall> {
        self.put([0xc0])
    }
    fn serialize_some<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<(), NotSmall> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), NotSmall> {
        self.put([0xc0])
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NotSmall> {
        // rmp-serde writes a unit struct as an empty array.
        self.put([0x90])
    }
    fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), NotSmall> {
        if name == rmp_serde::MSGPACK_EXT_STRUCT_NAME {
            // A MessagePack extension: rmp-serde's own encoding.
            return Err(NotSmall);
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotSmall> {
        Err(NotSmall)
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

    /// `value` through [`small_value`] (`None` if refused) and through rmp-serde.
    fn both_ways<T: Serialize + ?Sized>(value: &T) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut head = Head::new();
        head.put([0xaa]);
        let small = small_value(&mut head, value, 0).then(|| head.bytes()[1..].to_vec());
        (small, rmp_serde::to_vec(value).expect("encodes"))
    }

    fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        let (small, rmp) = both_ways(value);
        assert_eq!(small.as_ref(), Some(&rmp), "{value:?}");
    }

    fn refused<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        assert_eq!(both_ways(value).0, None, "{value:?}");
    }

    #[derive(Serialize, Debug)]
    struct Unit;

    #[derive(Serialize, Debug)]
    struct Newtype(i32);

    #[derive(Serialize, Debug)]
    enum Kind {
        Plain,
        Wrapped(u8),
    }

    #[derive(Serialize, Debug)]
    struct Pair {
        a: u8,
        b: u8,
    }

    #[test]
    fn small_values_are_byte_for_byte_rmp_serde() {
        for v in INT_EDGES {
            same(&v);
            same(&(v as u8));
            same(&(v as u16));
            same(&(v as u32));
            same(&Some(v));
            same(&(v as i64));
        }
        for v in SIGNED_EDGES.into_iter().chain(INT_EDGES.map(|v| v as i64)) {
            same(&v);
            same(&(v as i8));
            same(&(v as i16));
            same(&(v as i32));
            same(&Newtype(v as i32));
        }
        same(&true);
        same(&false);
        same(&());
        same(&Unit);
        same(&None::<u64>);
        same(&Some(Some(3u8)));
        same(&Some(None::<u8>));
        same(&Some(Unit));
    }

    #[test]
    fn other_values_are_left_to_rmp_serde() {
        refused("text");
        refused(&'c');
        refused(&1.5f64);
        refused(&1.5f32);
        refused(&1u128);
        refused(&-1i128);
        refused(&vec![1u8]);
        refused(&(1u8, 2u8));
        refused(&Pair { a: 1, b: 2 });
        refused(&Kind::Plain);
        refused(&Kind::Wrapped(1));
        refused(&Some("text"));
        refused(&serde_bytes::Bytes::new(b"ab"));
        // A MessagePack extension: rmp-serde's `_ExtStruct` newtype.
        #[derive(Serialize, Debug)]
        #[serde(rename = "_ExtStruct")]
        struct Ext((i8, serde_bytes::ByteBuf));
        refused(&Ext((1, serde_bytes::ByteBuf::from(vec![1]))));
    }

    #[test]
    fn small_values_keep_the_room_asked_for() {
        let mut head = Head::new();
        while head.room() > 9 + 20 {
            head.put([0]);
        }
        let len = head.len();
        assert!(small_value(&mut head, &u64::MAX, 20));
        assert!(!small_value(&mut head, &0u8, 20), "under 9 + 20 bytes left");
        assert_eq!(head.len(), len + 9);
    }

    proptest! {
        #[test]
        fn small_values_match_rmp_serde_on_random_integers(
            u in any_width_uint(),
            i in any::<i64>(),
            shift in 0u32..64,
        ) {
            prop_assert_eq!(both_ways(&(u, i)).0, None::<Vec<u8>>);
            prop_assert_eq!(rmp_serde::to_vec(&u).unwrap(), both_ways(&u).0.unwrap());
            let narrow = i >> shift;
            prop_assert_eq!(rmp_serde::to_vec(&narrow).unwrap(), both_ways(&narrow).0.unwrap());
            prop_assert_eq!(rmp_serde::to_vec(&Some(narrow)).unwrap(), both_ways(&Some(narrow)).0.unwrap());
        }
    }
}
