//! The size of a value's rmp-serde encoding, computed without encoding it.
//!
//! The bytes-written limit (`TxnLimits::bytes_written_max`) charges every key and row a
//! transaction puts, every key it deletes and every event it emits by its rmp-serde size (the
//! encoding the log and checkpoints use). Measuring that size by running rmp-serde into a
//! counting writer cost one `write_all` call per marker and per datum, through rmp's error
//! plumbing: 13.6 % of the marketplace's instructions (docs/benchmarks.md, "The bytes-written
//! limit without encoding"). [`encoded_len`] walks the value once with a serializer that only
//! adds up the lengths rmp-serde 1.3 would write (its default configuration: structs as arrays,
//! enums as `{variant: data}` maps or the variant's name, integers in their shortest form), so
//! the count is the same byte for byte, including for values whose `Serialize` fails part-way
//! (it counts what rmp-serde would have written before the error). The tests hold it to the
//! linked rmp-serde's own count, so an upgrade that changes the encoding fails them.

use serde::Serialize;
use serde::ser;

/// The number of bytes `rmp_serde::encode::write(w, value)` writes into `w`, errors included
/// (a value that fails to serialize counts what was written before the failure).
#[inline]
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut size = Size(0);
    // A value that fails to serialize part-way still counts what it wrote; it could not be
    // persisted anyway and fails where it is encoded for real.
    let _ = value.serialize(&mut size);
    size.0
}

/// The running count.
struct Size(u64);

/// Why a value failed to serialize: only its own `Serialize` can fail.
#[derive(Debug)]
pub(crate) struct SizeError;

impl std::fmt::Display for SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the value failed to serialize")
    }
}

impl std::error::Error for SizeError {}

impl ser::Error for SizeError {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        SizeError
    }
}

/// rmp's `write_uint` (unsigned integers in their shortest form).
#[inline]
const fn uint_len(v: u64) -> u64 {
    if v < 128 {
        1
    } else if v < 1 << 8 {
        2
    } else if v < 1 << 16 {
        3
    } else if v < 1 << 32 {
        5
    } else {
        9
    }
}

/// rmp's `write_sint` (non-negative values as unsigned, in their shortest form).
#[inline]
const fn sint_len(v: i64) -> u64 {
    if v >= 0 {
        uint_len(v as u64)
    } else if v >= -32 {
        1
    } else if v >= -(1 << 7) {
        2
    } else if v >= -(1 << 15) {
        3
    } else if v >= -(1 << 31) {
        5
    } else {
        9
    }
}

/// rmp's `write_str_len`, for a string of `len` bytes (the length written as a `u32`).
#[inline]
const fn str_head(len: usize) -> u64 {
    let len = len as u32;
    if len < 32 {
        1
    } else if len < 1 << 8 {
        2
    } else if len < 1 << 16 {
        3
    } else {
        5
    }
}

/// rmp's `write_bin_len`.
#[inline]
const fn bin_head(len: usize) -> u64 {
    let len = len as u32;
    if len < 1 << 8 {
        2
    } else if len < 1 << 16 {
        3
    } else {
        5
    }
}

/// rmp's `write_array_len` and `write_map_len` (the same widths).
#[inline]
const fn container_head(len: u32) -> u64 {
    if len < 16 {
        1
    } else if len < 1 << 16 {
        3
    } else {
        5
    }
}

impl Size {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 += n;
    }

    #[inline]
    fn str(&mut self, v: &str) {
        self.add(str_head(v.len()) + v.len() as u64);
    }

    /// An array header of `len` (tuples and structs, whose fields follow).
    #[inline]
    fn array(&mut self, len: usize) -> Result<&mut Self, SizeError> {
        self.add(container_head(len as u32));
        Ok(self)
    }

    /// An enum variant with data: `{variant: data}`, a one-entry map's header and the name.
    #[inline]
    fn variant(&mut self, variant: &str) -> &mut Self {
        self.add(1);
        self.str(variant);
        self
    }
}

/// A sequence or map whose length serde did not give: rmp-serde encodes its elements into a
/// buffer of their own and writes the counted length and the buffer at `end`, so an element
/// that fails drops the whole buffer. Its elements are counted as they come and the count is
/// taken back if `end` is never reached.
struct Unknown<'a> {
    size: &'a mut Size,
    /// The count before the first element.
    start: u64,
    /// Elements so far (keys and values of a map both count, as in rmp-serde).
    elements: u32,
    ended: bool,
}

impl Unknown<'_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SizeError> {
        value.serialize(&mut *self.size)?;
        self.elements += 1;
        Ok(())
    }

    #[inline]
    fn end(mut self, len: u32) {
        self.size.add(container_head(len));
        self.ended = true;
    }
}

impl Drop for Unknown<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.size.0 = self.start;
        }
    }
}

/// The compound serializers: a sequence or map of known or unknown length.
pub(crate) struct Compound<'a> {
    /// `None` once the length was known (written up front, as rmp-serde does).
    unknown: Option<Unknown<'a>>,
    size: Option<&'a mut Size>,
}

impl<'a> Compound<'a> {
    #[inline]
    fn new(size: &'a mut Size, len: Option<usize>, head: fn(u32) -> u64) -> Self {
        match len {
            Some(len) => {
                size.add(head(len as u32));
                Compound {
                    unknown: None,
                    size: Some(size),
                }
            }
            None => {
                let start = size.0;
                Compound {
                    unknown: Some(Unknown {
                        size,
                        start,
                        elements: 0,
                        ended: false,
                    }),
                    size: None,
                }
            }
        }
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SizeError> {
        match (&mut self.size, &mut self.unknown) {
            (Some(size), _) => value.serialize(&mut **size),
            (None, Some(unknown)) => unknown.element(value),
            (None, None) => unreachable!("a compound counts into one of the two"),
        }
    }

    /// Ends a sequence (`per_entry` 1) or a map (2, a key and a value): a length not known
    /// up front is the elements counted, written before them.
    #[inline]
    fn finish(self, per_entry: u32) -> Result<(), SizeError> {
        if let Some(unknown) = self.unknown {
            let n = unknown.elements / per_entry;
            unknown.end(n);
        }
        Ok(())
    }
}

/// Sequences (each element one entry) and maps (a key and a value one entry) of known or
/// unknown length.
macro_rules! counted_compound {
    ($trait:ident, $per_entry:expr, $($method:ident),+) => {
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = SizeError;

            $(
                #[inline]
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SizeError> {
                    self.element(value)
                }
            )+

            #[inline]
            fn end(self) -> Result<(), SizeError> {
                self.finish($per_entry)
            }
        }
    };
}

counted_compound!(SerializeSeq, 1, serialize_element);
counted_compound!(SerializeMap, 2, serialize_key, serialize_value);

/// Tuples, structs and variants: their lengths are always known and written first.
macro_rules! fixed_compound {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for &mut Size {
            type Ok = ();
            type Error = SizeError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                $($key: &'static str,)?
                value: &T,
            ) -> Result<(), SizeError> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<(), SizeError> {
                Ok(())
            }
        }
    };
}

fixed_compound!(SerializeTuple, serialize_element);
fixed_compound!(SerializeTupleStruct, serialize_field);
fixed_compound!(SerializeTupleVariant, serialize_field);
fixed_compound!(SerializeStruct, serialize_field, _key);
fixed_compound!(SerializeStructVariant, serialize_field, _key);

/// rmp-serde's MessagePack extension: a newtype struct of this name holding `(tag, bytes)`.
struct Ext<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Ext<'_, T> {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, self.0)
    }
}

/// An `io::Write` that only counts the bytes written to it: measures an extension value with
/// rmp-serde itself (applications do not use extensions; it is the one rare case).
struct CountingWriter(u64);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The serializer's methods for scalars: each adds the length its encoding takes.
macro_rules! scalars {
    ($($method:ident($v:ident: $ty:ty) => $len:expr;)*) => {
        $(
            #[inline]
            fn $method(self, $v: $ty) -> Result<(), SizeError> {
                self.add($len);
                Ok(())
            }
        )*
    };
}

impl<'a> ser::Serializer for &'a mut Size {
    type Ok = ();
    type Error = SizeError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }

    scalars! {
        serialize_bool(_v: bool) => 1;
        serialize_i8(v: i8) => sint_len(i64::from(v));
        serialize_i16(v: i16) => sint_len(i64::from(v));
        serialize_i32(v: i32) => sint_len(i64::from(v));
        serialize_i64(v: i64) => sint_len(v);
        // Its 16 big-endian bytes as `bin 8`.
        serialize_i128(_v: i128) => bin_head(16) + 16;
        serialize_u8(v: u8) => uint_len(u64::from(v));
        serialize_u16(v: u16) => uint_len(u64::from(v));
        serialize_u32(v: u32) => uint_len(u64::from(v));
        serialize_u64(v: u64) => uint_len(v);
        serialize_u128(_v: u128) => bin_head(16) + 16;
        // Floats at full width.
        serialize_f32(_v: f32) => 5;
        serialize_f64(_v: f64) => 9;
        serialize_char(v: char) => str_head(v.len_utf8()) + v.len_utf8() as u64;
        serialize_str(v: &str) => str_head(v.len()) + v.len() as u64;
        serialize_bytes(v: &[u8]) => bin_head(v.len()) + v.len() as u64;
    }

    #[inline]
    fn serialize_none(self) -> Result<(), SizeError> {
        self.add(1);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), SizeError> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), SizeError> {
        self.add(1);
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), SizeError> {
        // An empty array.
        self.add(1);
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), SizeError> {
        self.str(variant);
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), SizeError> {
        if name == rmp_serde::MSGPACK_EXT_STRUCT_NAME {
            let mut writer = CountingWriter(0);
            let written = rmp_serde::encode::write(&mut writer, &Ext(value));
            self.add(writer.0);
            return written.map_err(|_| SizeError);
        }
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), SizeError> {
        // `{variant: value}`.
        value.serialize(self.variant(variant))
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, SizeError> {
        Ok(Compound::new(self, len, container_head))
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self, SizeError> {
        self.array(len)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, SizeError> {
        self.array(len)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, SizeError> {
        // `{variant: [fields]}`.
        self.variant(variant).array(len)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>, SizeError> {
        Ok(Compound::new(self, len, container_head))
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Self, SizeError> {
        self.array(len)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, SizeError> {
        self.variant(variant).array(len)
    }

    /// rmp-serde's: the length is known when the iterator's bounds agree and fit in a `u32`.
    #[inline]
    fn collect_seq<I>(self, iter: I) -> Result<(), SizeError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi && u32::try_from(lo).is_ok() => Some(lo),
            _ => None,
        };
        let mut seq = ser::Serializer::serialize_seq(self, len)?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }
}

#[cfg(test)]
mod tests;
