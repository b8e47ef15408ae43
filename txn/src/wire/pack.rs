//! MessagePack written by hand, byte for byte as rmp-serde writes the same values, for the
//! encodings every request pays for (the dedup window's entries, the epoch log's records):
//! going through serde's generic serializer and a fallible `Write` for every field costs
//! several times what the bytes themselves do. Each user holds its bytes to rmp-serde's in
//! tests computed at test time.

use crate::ids::RequestId;

/// Up to 80 bytes of MessagePack put together on the stack, then appended to a buffer in
/// one copy: writing field by field into the `Vec` checks its capacity at every byte.
pub(crate) struct Head {
    bytes: [u8; 80],
    len: usize,
}

impl Head {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Head {
            bytes: [0; 80],
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
        } else if v < 1 << 8 {
            self.put([0xcc, v as u8]);
        } else if v < 1 << 16 {
            let [a, b] = (v as u16).to_be_bytes();
            self.put([0xcd, a, b]);
        } else if v < 1 << 32 {
            let [a, b, c, d] = (v as u32).to_be_bytes();
            self.put([0xce, a, b, c, d]);
        } else {
            let [a, b, c, d, e, f, g, h] = v.to_be_bytes();
            self.put([0xcf, a, b, c, d, e, f, g, h]);
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
