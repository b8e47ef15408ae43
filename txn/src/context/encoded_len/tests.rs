//! `encoded_len` against rmp-serde's own encoding, computed at test time.

use super::encoded_len;
use proptest::prelude::*;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// What rmp-serde writes for `value` (also when its `Serialize` fails part-way).
fn rmp_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut writer = super::CountingWriter(0);
    let _ = rmp_serde::encode::write(&mut writer, value);
    writer.0
}

fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
    assert_eq!(
        encoded_len(value),
        rmp_len(value),
        "encoded size of {value:?}"
    );
}

#[test]
fn integers_at_every_width_edge() {
    let mut unsigned = vec![0u64, u64::MAX];
    for bits in [7u32, 8, 16, 32] {
        let edge = 1u64 << bits;
        unsigned.extend([edge - 1, edge, edge + 1]);
    }
    for &v in &unsigned {
        same(&v);
        same(&(v as u32));
        same(&(v as u16));
        same(&(v as u8));
        same(&(v as u128));
        same(&(v as i128));
    }
    let mut signed = vec![0i64, i64::MIN, i64::MAX, -1];
    for bits in [5u32, 7, 8, 15, 16, 31, 32] {
        let edge = 1i64 << bits;
        signed.extend([edge - 1, edge, edge + 1, -edge - 1, -edge, -edge + 1]);
    }
    for &v in &signed {
        same(&v);
        same(&(v as i32));
        same(&(v as i16));
        same(&(v as i8));
    }
    same(&1.5f32);
    same(&-2.25f64);
    same(&true);
}

#[test]
fn strings_bytes_and_containers_across_their_header_widths() {
    for len in [0usize, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
        let s = "x".repeat(len);
        same(&s);
        same(&serde_bytes::ByteBuf::from(vec![7u8; len]));
        same(&vec![1u8; len]);
        let map: BTreeMap<u32, ()> = (0..len as u32).map(|k| (k, ())).collect();
        same(&map);
    }
    for c in ['a', 'é', '€', '😀'] {
        same(&c);
    }
    same(&[1u8, 2, 3]);
    same(&[300u16; 20]);
    same(&(1u8, "two", 3.0f64));
}

#[derive(Serialize, Debug)]
struct Unit;

#[derive(Serialize, Debug)]
struct Newtype(u64);

#[derive(Serialize, Debug)]
struct TupleStruct(i32, String);

#[derive(Serialize, Debug)]
enum Variants {
    Unit,
    Newtype(Vec<u64>),
    Tuple(u8, Option<String>),
    Struct { a: i64, b: Option<Box<Variants>> },
}

#[derive(Serialize, Debug)]
struct Inner {
    x: u32,
    y: String,
}

/// A flattened field makes serde write the struct as a map of unknown length.
#[derive(Serialize, Debug)]
struct Flattened {
    id: u64,
    #[serde(flatten)]
    inner: Inner,
    extra: BTreeMap<String, i64>,
}

#[test]
fn structs_enums_options_and_unknown_lengths() {
    same(&Unit);
    same(&());
    same(&Newtype(1 << 40));
    same(&TupleStruct(-70_000, "abc".into()));
    same(&Variants::Unit);
    same(&Variants::Newtype(vec![1, 2, 1 << 33]));
    same(&Variants::Tuple(9, None));
    same(&Variants::Tuple(9, Some("é".repeat(40))));
    same(&Variants::Struct {
        a: -1,
        b: Some(Box::new(Variants::Struct { a: 5, b: None })),
    });
    same(&Some(Some(3u8)));
    same(&None::<u8>);
    same(&Flattened {
        id: 77,
        inner: Inner {
            x: 1 << 20,
            y: "y".repeat(33),
        },
        extra: (0..20).map(|i| (format!("k{i}"), i * 1000)).collect(),
    });
    // An iterator without an exact size: serde's `collect_seq` with an unknown length.
    struct Filtered(Vec<u64>);
    impl Serialize for Filtered {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().filter(|v| **v % 2 == 0))
        }
    }
    impl std::fmt::Debug for Filtered {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    same(&Filtered((0..40).collect()));
    same(&Filtered((0..4).collect()));
}

#[test]
fn a_message_pack_extension_counts_as_rmp_serde_writes_it() {
    #[derive(Debug)]
    struct Ext(i8, Vec<u8>);
    impl Serialize for Ext {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let bytes = serde_bytes::Bytes::new(&self.1);
            s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &(self.0, bytes))
        }
    }
    for len in [1usize, 2, 3, 4, 8, 16, 17, 300] {
        same(&Ext(5, vec![1; len]));
    }
}

/// A value whose `Serialize` fails after `after` elements, inside a sequence of known or
/// unknown length.
#[derive(Debug)]
struct FailsAfter {
    after: usize,
    known_len: bool,
}

impl Serialize for FailsAfter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(self.known_len.then_some(10))?;
        for i in 0..self.after {
            seq.serialize_element(&(i as u64 * 1000))?;
        }
        Err(S::Error::custom("fails"))
    }
}

#[test]
fn a_value_that_fails_part_way_counts_what_rmp_serde_wrote_before_the_failure() {
    for after in [0, 1, 5] {
        for known_len in [true, false] {
            let value = FailsAfter { after, known_len };
            same(&value);
            same(&("before", &value));
        }
    }
}

/// A value tree of every kind serde knows, for the property test.
#[derive(Serialize, Debug, Clone)]
enum Tree {
    U(u64),
    I(i64),
    F(f64),
    S(String),
    B(#[serde(with = "serde_bytes")] Vec<u8>),
    O(Option<Box<Tree>>),
    L(Vec<Tree>),
    M(BTreeMap<String, Tree>),
    T(u16, i8, bool),
    R { a: u32, b: Box<Tree> },
    Unit,
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Tree::U),
        any::<i64>().prop_map(Tree::I),
        (0u64..300).prop_map(Tree::U),
        (-300i64..300).prop_map(Tree::I),
        any::<f64>().prop_map(Tree::F),
        ".{0,40}".prop_map(Tree::S),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Tree::B),
        (any::<u16>(), any::<i8>(), any::<bool>()).prop_map(|(a, b, c)| Tree::T(a, b, c)),
        Just(Tree::Unit),
    ];
    leaf.prop_recursive(4, 64, 20, |inner| {
        prop_oneof![
            proptest::option::of(inner.clone().prop_map(Box::new)).prop_map(Tree::O),
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Tree::L),
            proptest::collection::btree_map(".{0,8}", inner.clone(), 0..20).prop_map(Tree::M),
            (any::<u32>(), inner.prop_map(Box::new)).prop_map(|(a, b)| Tree::R { a, b }),
        ]
    })
}

proptest! {
    #[test]
    fn any_value_tree_counts_as_rmp_serde_encodes_it(value in tree()) {
        prop_assert_eq!(encoded_len(&value), rmp_len(&value));
        prop_assert_eq!(
            encoded_len(&value),
            rmp_serde::to_vec(&value).map_or(0, |bytes| bytes.len() as u64)
        );
    }
}
