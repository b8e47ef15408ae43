//! Any serde value written as MessagePack straight into a `Vec`, byte for byte as rmp-serde's
//! default serializer writes it (structs as arrays, enums as one-entry maps from the variant's
//! name, integers in their shortest form), for the application's values every request pays to
//! encode (its event, for the request digest). rmp-serde writes each marker and each length
//! through a fallible `io::Write` and its configuration's wrappers; here each is one append to
//! the vector. Shapes whose bytes would need more than that are refused, and the caller falls
//! back to rmp-serde for the whole value: sequences and maps of unknown length (rmp-serde
//! buffers them), MessagePack extensions (`_ExtStruct`), lengths of 2^32 or more, and any error
//! the value's own `Serialize` raises (rmp-serde then raises the same one).

use serde::Serialize;
use serde::ser;

/// Appends what `rmp_serde::encode::write(buf, value)` appends, and fails as it fails: through
/// [`value`], or through rmp-serde itself for a value [`value`] refuses.
#[inline]
pub(crate) fn write<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    v: &T,
) -> Result<(), rmp_serde::encode::Error> {
    if value(buf, v) {
        return Ok(());
    }
    rmp_serde::encode::write(buf, v)
}

/// Appends `value`'s rmp-serde encoding to `buf` and returns `true`; or returns `false` with
/// `buf` as it was, for a value of a shape refused above (encode it with rmp-serde then).
#[inline]
pub(crate) fn value<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> bool {
    let start = buf.len();
    if into(buf, value) {
        return true;
    }
    buf.truncate(start);
    false
}

/// Writes `value`'s rmp-serde encoding into `sink` and returns `true`; or returns `false`, with
/// `sink` partly written, for a value of a shape refused above or that does not fit.
#[inline]
pub(crate) fn into<S: Sink, T: Serialize + ?Sized>(sink: &mut S, value: &T) -> bool
where
    Refused: From<S::Full>,
{
    value.serialize(Writer(sink)).is_ok()
}

/// Where MessagePack bytes go: a growing `Vec`, or a fixed buffer on the stack
/// (`wire::pack`'s `Head`, and a head that keeps some room free).
pub(crate) trait Sink {
    /// What a sink without room for more answers (`Infallible` for one that never fills).
    type Full;
    fn push_array<const K: usize>(&mut self, bytes: [u8; K]) -> Result<(), Self::Full>;
    fn push_slice(&mut self, bytes: &[u8]) -> Result<(), Self::Full>;
}

impl Sink for Vec<u8> {
    type Full = std::convert::Infallible;
    #[inline(always)]
    fn push_array<const K: usize>(&mut self, bytes: [u8; K]) -> Result<(), Self::Full> {
        self.extend_from_slice(&bytes);
        Ok(())
    }
    #[inline(always)]
    fn push_slice(&mut self, bytes: &[u8]) -> Result<(), Self::Full> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// An unsigned integer in its shortest form (`rmp::encode::write_uint`: positive fixint,
/// uint 8/16/32/64).
#[inline(always)]
pub(crate) fn uint<S: Sink>(s: &mut S, v: u64) -> Result<(), S::Full> {
    if v < 0x80 {
        s.push_array([v as u8])
    } else if v < 1 << 8 {
        s.push_array([0xcc, v as u8])
    } else if v < 1 << 16 {
        let [a, b] = (v as u16).to_be_bytes();
        s.push_array([0xcd, a, b])
    } else if v < 1 << 32 {
        let [a, b, c, d] = (v as u32).to_be_bytes();
        s.push_array([0xce, a, b, c, d])
    } else {
        let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
        s.push_array([0xcf, a, b, c, d, e, f, g, h])
    }
}

/// A signed integer as `rmp::encode::write_sint` writes it: non-negative ones as [`uint`],
/// negative ones in their shortest form (negative fixint, int 8/16/32/64).
#[inline(always)]
pub(crate) fn sint<S: Sink>(s: &mut S, v: i64) -> Result<(), S::Full> {
    if v >= 0 {
        uint(s, v as u64)
    } else if v >= -32 {
        s.push_array([v as u8])
    } else if v >= -(1 << 7) {
        s.push_array([0xd0, v as u8])
    } else if v >= -(1 << 15) {
        let [a, b] = (v as i16).to_be_bytes();
        s.push_array([0xd1, a, b])
    } else if v >= -(1 << 31) {
        let [a, b, c, d] = (v as i32).to_be_bytes();
        s.push_array([0xd2, a, b, c, d])
    } else {
        let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
        s.push_array([0xd3, a, b, c, d, e, f, g, h])
    }
}

/// A length after its fix marker (`fix | n` under `fix_max`) or its 8-bit (if any), 16-bit or
/// 32-bit marker; refused at 2^32 and over.
#[inline(always)]
fn len<S: Sink>(
    s: &mut S,
    n: usize,
    fix: u8,
    fix_max: usize,
    markers: [u8; 3],
) -> Result<(), Refused>
where
    Refused: From<S::Full>,
{
    if n < fix_max {
        s.push_array([fix | n as u8])?;
    } else if n < 1 << 8 && markers[0] != 0 {
        s.push_array([markers[0], n as u8])?;
    } else if n < 1 << 16 {
        let [a, b] = (n as u16).to_be_bytes();
        s.push_array([markers[1], a, b])?;
    } else {
        let [a, b, c, d] = u32::try_from(n).map_err(|_| Refused)?.to_be_bytes();
        s.push_array([markers[2], a, b, c, d])?;
    }
    Ok(())
}

/// An array header for `n` elements (fixarray, array 16/32).
#[inline(always)]
pub(crate) fn array<S: Sink>(s: &mut S, n: usize) -> Result<(), Refused>
where
    Refused: From<S::Full>,
{
    len(s, n, 0x90, 16, [0, 0xdc, 0xdd])
}

/// A byte string's header for `n` bytes (bin 8/16/32: no fix form).
#[inline(always)]
pub(crate) fn bin_header<S: Sink>(s: &mut S, n: usize) -> Result<(), Refused>
where
    Refused: From<S::Full>,
{
    len(s, n, 0, 0, [0xc4, 0xc5, 0xc6])
}

/// The serializer of [`into`].
struct Writer<'a, S>(&'a mut S);

/// A value [`value`] leaves to rmp-serde.
#[derive(Debug)]
pub(crate) struct Refused;

impl From<std::convert::Infallible> for Refused {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to rmp-serde")
    }
}

impl std::error::Error for Refused {}

impl ser::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Refused
    }
}

impl<S: Sink> Writer<'_, S>
where
    Refused: From<S::Full>,
{
    #[inline(always)]
    fn put<const K: usize>(&mut self, bytes: [u8; K]) -> Result<(), Refused> {
        Ok(self.0.push_array(bytes)?)
    }

    #[inline(always)]
    fn uint(&mut self, v: u64) -> Result<(), Refused> {
        Ok(uint(self.0, v)?)
    }

    #[inline(always)]
    fn sint(&mut self, v: i64) -> Result<(), Refused> {
        Ok(sint(self.0, v)?)
    }

    #[inline(always)]
    fn array(&mut self, n: usize) -> Result<(), Refused> {
        array(self.0, n)
    }

    #[inline(always)]
    fn map(&mut self, n: usize) -> Result<(), Refused> {
        len(self.0, n, 0x80, 16, [0, 0xde, 0xdf])
    }

    #[inline]
    fn str(&mut self, s: &str) -> Result<(), Refused> {
        len(self.0, s.len(), 0xa0, 32, [0xd9, 0xda, 0xdb])?;
        Ok(self.0.push_slice(s.as_bytes())?)
    }

    #[inline]
    fn bin(&mut self, b: &[u8]) -> Result<(), Refused> {
        bin_header(self.0, b.len())?;
        Ok(self.0.push_slice(b)?)
    }

    /// The head of an enum variant with data: a one-entry map from its name.
    #[inline]
    fn variant(&mut self, name: &str) -> Result<(), Refused> {
        self.put([0x81])?;
        self.str(name)
    }

    /// The serializer for the next element of a compound, writing into the same sink.
    #[inline(always)]
    fn next(&mut self) -> Writer<'_, S> {
        Writer(self.0)
    }
}

/// `Serializer` methods that write their integer widened to `$wide` by `Writer::$write`.
macro_rules! widening {
    ($($write:ident($wide:ty): $($name:ident($t:ty)),+);+) => {
        $($(
            #[inline]
            fn $name(mut self, v: $t) -> Result<(), Refused> {
                self.$write(<$wide>::from(v))
            }
        )+)+
    };
}

impl<'a, S: Sink> ser::Serializer for Writer<'a, S>
where
    Refused: From<S::Full>,
{
    type Ok = ();
    type Error = Refused;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    // rmp-serde's default is not human-readable: types that encode differently for humans
    // take the same branch here.
    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(mut self, v: bool) -> Result<(), Refused> {
        self.put([if v { 0xc3 } else { 0xc2 }])
    }
    widening! {
        sint(i64): serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64);
        uint(u64): serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64)
    }
    #[inline]
    fn serialize_i128(mut self, v: i128) -> Result<(), Refused> {
        // rmp-serde: the 16 big-endian bytes as `bin`.
        self.bin(&v.to_be_bytes())
    }
    #[inline]
    fn serialize_u128(mut self, v: u128) -> Result<(), Refused> {
        self.bin(&v.to_be_bytes())
    }
    #[inline]
    fn serialize_f32(mut self, v: f32) -> Result<(), Refused> {
        let [a, b, c, d] = v.to_be_bytes();
        self.put([0xca, a, b, c, d])
    }
    #[inline]
    fn serialize_f64(mut self, v: f64) -> Result<(), Refused> {
        let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
        self.put([0xcb, a, b, c, d, e, f, g, h])
    }
    #[inline]
    fn serialize_char(mut self, v: char) -> Result<(), Refused> {
        self.str(v.encode_utf8(&mut [0; 4]))
    }
    #[inline]
    fn serialize_str(mut self, v: &str) -> Result<(), Refused> {
        self.str(v)
    }
    #[inline]
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), Refused> {
        self.bin(v)
    }
    #[inline]
    fn serialize_none(self) -> Result<(), Refused> {
        self.serialize_unit()
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Refused> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(mut self) -> Result<(), Refused> {
        self.put([0xc0])
    }
    #[inline]
    fn serialize_unit_struct(mut self, _: &'static str) -> Result<(), Refused> {
        // rmp-serde writes a unit struct as an empty array.
        self.put([0x90])
    }
    #[inline]
    fn serialize_unit_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Refused> {
        self.str(variant)
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Refused> {
        if name == rmp_serde::MSGPACK_EXT_STRUCT_NAME {
            return Err(Refused);
        }
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Refused> {
        self.variant(variant)?;
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(mut self, len: Option<usize>) -> Result<Self, Refused> {
        self.array(len.ok_or(Refused)?)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(mut self, len: usize) -> Result<Self, Refused> {
        self.array(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(mut self, _: &'static str, len: usize) -> Result<Self, Refused> {
        self.array(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Refused> {
        self.variant(variant)?;
        self.array(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_map(mut self, len: Option<usize>) -> Result<Self, Refused> {
        self.map(len.ok_or(Refused)?)?;
        Ok(self)
    }
    // A struct's fields are an array, as a tuple's (rmp-serde's default, not named).
    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self, Refused> {
        ser::Serializer::serialize_tuple_struct(self, name, len)
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Refused> {
        ser::Serializer::serialize_tuple_variant(self, name, index, variant, len)
    }
}

/// Elements, fields and entries follow their header with nothing between or after them.
macro_rules! compound {
    ($($trait:ident :: $method:ident $(($key:ty))?),+ $(,)?) => {
        $(
            impl<S: Sink> ser::$trait for Writer<'_, S>
            where
                Refused: From<S::Full>,
            {
                type Ok = ();
                type Error = Refused;
                #[inline]
                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $(_: $key,)?
                    value: &T,
                ) -> Result<(), Refused> {
                    value.serialize(self.next())
                }
                #[inline]
                fn end(self) -> Result<(), Refused> {
                    Ok(())
                }
            }
        )+
    };
}

compound! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
}

impl<S: Sink> ser::SerializeMap for Writer<'_, S>
where
    Refused: From<S::Full>,
{
    type Ok = ();
    type Error = Refused;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Refused> {
        key.serialize(self.next())
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Refused> {
        value.serialize(self.next())
    }
    #[inline]
    fn end(self) -> Result<(), Refused> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::value;
    use crate::wire::pack::{INT_EDGES, SIGNED_EDGES, UNENCODABLE, Unencodable, any_width_uint};
    use proptest::prelude::*;
    use serde::Serialize;
    use serde_bytes::ByteBuf;
    use std::collections::BTreeMap;

    /// `v` through [`value`] behind a byte already in the buffer, or `None` if refused (the
    /// buffer then unchanged).
    fn fast<T: Serialize + ?Sized>(v: &T) -> Option<Vec<u8>> {
        let mut buf = vec![0xaa];
        if value(&mut buf, v) {
            Some(buf[1..].to_vec())
        } else {
            assert_eq!(buf, [0xaa], "a refused value leaves the buffer as it was");
            None
        }
    }

    #[track_caller]
    fn same<T: Serialize + ?Sized + std::fmt::Debug>(v: &T) {
        let rmp = rmp_serde::to_vec(v).expect("rmp-serde encodes it");
        assert_eq!(fast(v), Some(rmp), "{v:?}");
    }

    #[derive(Serialize, Debug)]
    struct Unit;

    #[derive(Serialize, Debug)]
    struct Newtype(u32);

    #[derive(Serialize, Debug)]
    struct Tuple(i8, String);

    #[derive(Serialize, Debug)]
    struct Fields {
        a: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<String>,
        c: Vec<u16>,
    }

    #[derive(Serialize, Debug)]
    enum Ev {
        Plain,
        Wrapped(u64),
        Pair(u8, i64),
        Named { keys: Vec<u64>, next: u32 },
        Nested(Box<Ev>),
    }

    #[test]
    fn scalars_are_byte_for_byte_rmp_serde() {
        for v in INT_EDGES {
            same(&v);
            same(&(v as u8));
            same(&(v as u16));
            same(&(v as u32));
            same(&u128::from(v));
        }
        for v in SIGNED_EDGES.into_iter().chain(INT_EDGES.map(|v| v as i64)) {
            same(&v);
            same(&(v as i8));
            same(&(v as i16));
            same(&(v as i32));
            same(&i128::from(v));
        }
        same(&u128::MAX);
        same(&i128::MIN);
        for f in [
            0.0f64,
            -0.0,
            1.5,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NAN,
        ] {
            same(&f);
            same(&(f as f32));
        }
        same(&true);
        same(&false);
        same(&'c');
        same(&'é');
        same(&'🦀');
        same(&());
        same(&Unit);
        same(&None::<u8>);
        same(&Some(Some(3u8)));
        same(&Some(None::<u8>));
        same(&Newtype(7));
    }

    #[test]
    fn every_length_form_is_rmp_serde_s() {
        // Each marker's edges: fix forms, 8-, 16- and 32-bit lengths.
        for n in [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536] {
            same(&"x".repeat(n));
            same(&ByteBuf::from(vec![7u8; n]));
            same(&vec![1u8; n]);
            let map: BTreeMap<u32, bool> = (0..n as u32).map(|k| (k, k % 2 == 0)).collect();
            same(&map);
        }
    }

    #[test]
    fn compound_shapes_are_rmp_serde_s() {
        same(&(1u8, "two", [3u16; 3], (), Unit));
        same(&[0u64; 0]);
        same(&Tuple(-5, "t".into()));
        same(&Fields {
            a: 300,
            b: None,
            c: vec![1, 2, 65_535],
        });
        same(&Fields {
            a: u64::MAX,
            b: Some("b".into()),
            c: Vec::new(),
        });
        same(&Ev::Plain);
        same(&Ev::Wrapped(1 << 40));
        same(&Ev::Pair(9, -9));
        same(&Ev::Named {
            keys: vec![199_999, 3, 70_000, 12],
            next: 2,
        });
        same(&Ev::Nested(Box::new(Ev::Named {
            keys: vec![],
            next: 0,
        })));
        same(&vec![Ev::Plain, Ev::Wrapped(0)]);
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), vec![Some(1i32), None]);
        same(&map);
        same(&Some(map));
    }

    #[test]
    fn shapes_left_to_rmp_serde_are_refused() {
        // A sequence of unknown length (rmp-serde buffers it).
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(std::iter::from_fn({
                    let mut i = 0;
                    move || {
                        i += 1;
                        (i < 4).then_some(i)
                    }
                }))
            }
        }
        assert_eq!(fast(&Unsized), None);
        assert_eq!(fast(&(1u8, Unsized)), None, "also inside another value");
        // A MessagePack extension: rmp-serde's `_ExtStruct` newtype.
        #[derive(Serialize, Debug)]
        #[serde(rename = "_ExtStruct")]
        struct Ext((i8, ByteBuf));
        assert_eq!(fast(&Ext((1, ByteBuf::from(vec![1])))), None);
        // An event whose own `Serialize` fails: rmp-serde raises the error.
        assert_eq!(fast(&Unencodable), None);
        assert_eq!(fast(&vec![Unencodable]), None);
        let err = rmp_serde::to_vec(&Unencodable).unwrap_err();
        assert!(err.to_string().contains(UNENCODABLE));
    }

    /// A tree of every serde shape, for the proptest.
    #[derive(Serialize, Debug, Clone)]
    enum Tree {
        Nil,
        Flag(bool),
        Int(i64),
        Uint(u64),
        Float(f64),
        Text(String),
        Bytes(ByteBuf),
        Pair(Box<Tree>, Option<u32>),
        List(Vec<Tree>),
        Map(BTreeMap<String, Tree>),
        Node { left: Box<Tree>, weight: i16 },
    }

    fn any_tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            Just(Tree::Nil),
            any::<bool>().prop_map(Tree::Flag),
            any::<i64>().prop_map(Tree::Int),
            any_width_uint().prop_map(Tree::Uint),
            any::<f64>().prop_map(Tree::Float),
            ".{0,40}".prop_map(Tree::Text),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Tree::Bytes(b.into())),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                (inner.clone(), proptest::option::of(any::<u32>()))
                    .prop_map(|(t, w)| Tree::Pair(Box::new(t), w)),
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Tree::List),
                proptest::collection::btree_map(".{0,8}", inner.clone(), 0..20).prop_map(Tree::Map),
                (inner, any::<i16>()).prop_map(|(t, weight)| Tree::Node {
                    left: Box::new(t),
                    weight
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_values_are_rmp_serde_s(tree in any_tree()) {
            prop_assert_eq!(fast(&tree), Some(rmp_serde::to_vec(&tree).unwrap()));
        }
    }
}
