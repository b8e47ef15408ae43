//! PostgreSQL's binary `COPY` format, as the PostgreSQL backend reads a checkpoint: decoding
//! the `(key, envelope)` rows a `COPY ... TO STDOUT (FORMAT binary)` sends.
//!
//! The format (PostgreSQL documentation, "COPY", "Binary Format"): an 11-byte signature, a
//! 32-bit flags field, a 32-bit header extension length and that many bytes; then per row a
//! 16-bit field count and, per field, a 32-bit length (-1 for NULL) and the field's bytes in
//! the type's binary send format (`bytea`: the bytes as they are; `bool`: one byte); a field
//! count of -1 ends the data. All integers are big-endian.

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Where one row's key and envelope lie in the decoded COPY data.
#[derive(Clone, Copy)]
struct RowSpan {
    key_start: usize,
    key_len: u32,
    envelope_len: u32,
}

impl RowSpan {
    /// The envelope follows the key and its own 32-bit length.
    fn envelope_start(&self) -> usize {
        self.key_start + self.key_len as usize + 4
    }
}

/// The `(key, envelope)` rows of one binary COPY, kept in the COPY's own bytes (no allocation
/// per row), to be sorted by key and visited.
pub(crate) struct CopiedRows {
    data: Vec<u8>,
    rows: Vec<RowSpan>,
}

/// Reads a big-endian integer of `N` bytes at `*at`, moving past it.
fn take<const N: usize>(data: &[u8], at: &mut usize) -> Result<[u8; N], String> {
    let bytes = data.get(*at..*at + N).ok_or_else(|| {
        format!(
            "COPY data ends at byte {} inside a field header",
            data.len()
        )
    })?;
    *at += N;
    Ok(bytes.try_into().expect("N bytes"))
}

impl CopiedRows {
    /// No rows yet.
    pub(crate) fn new() -> Self {
        CopiedRows {
            data: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Decodes and adds `data`, the whole output of one binary COPY of two non-NULL columns.
    pub(crate) fn add(&mut self, data: Vec<u8>) -> Result<(), String> {
        let base = self.data.len();
        if base == 0 {
            self.data = data;
        } else {
            self.data.extend_from_slice(&data);
        }
        self.decode_from(base)
    }

    /// Decodes the COPY output that starts at byte `base` of `self.data`.
    fn decode_from(&mut self, base: usize) -> Result<(), String> {
        let data = &self.data;
        if !data[base..].starts_with(SIGNATURE) {
            return Err("COPY data does not start with the binary COPY signature".into());
        }
        let mut at = base + SIGNATURE.len() + 4;
        let extension = u32::from_be_bytes(take::<4>(data, &mut at)?) as usize;
        at += extension;
        loop {
            let n_fields = i16::from_be_bytes(take::<2>(data, &mut at)?);
            if n_fields == -1 {
                break;
            }
            if n_fields != 2 {
                return Err(format!("COPY row of {n_fields} fields, expected 2"));
            }
            let key_len = Self::field_len(data, &mut at)?;
            let key_start = at;
            at += key_len as usize;
            let envelope_len = Self::field_len(data, &mut at)?;
            at += envelope_len as usize;
            if at > data.len() {
                return Err(format!(
                    "COPY data ends at byte {} inside a row",
                    data.len()
                ));
            }
            self.rows.push(RowSpan {
                key_start,
                key_len,
                envelope_len,
            });
        }
        Ok(())
    }

    fn field_len(data: &[u8], at: &mut usize) -> Result<u32, String> {
        let len = i32::from_be_bytes(take::<4>(data, at)?);
        u32::try_from(len).map_err(|_| format!("COPY field of length {len} (NULL?)"))
    }

    fn key(&self, span: &RowSpan) -> &[u8] {
        &self.data[span.key_start..span.key_start + span.key_len as usize]
    }

    /// Puts the rows in key order; returns a key found twice, if any.
    pub(crate) fn sort_by_key(&mut self) -> Option<Vec<u8>> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)));
        self.rows = rows;
        self.rows
            .windows(2)
            .find(|pair| self.key(&pair[0]) == self.key(&pair[1]))
            .map(|pair| self.key(&pair[0]).to_vec())
    }

    /// Visits every `(key, envelope)` in the current order.
    pub(crate) fn for_each<E>(
        &self,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for span in &self.rows {
            let envelope_start = span.envelope_start();
            let envelope = &self.data[envelope_start..envelope_start + span.envelope_len as usize];
            visit(self.key(span), envelope)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    /// The COPY output of `rows`, as the server would send it.
    fn copy_of(rows: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 9, 9]);
        for (key, envelope) in rows {
            out.extend_from_slice(&2i16.to_be_bytes());
            push_field(&mut out, key);
            push_field(&mut out, envelope);
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn decodes_several_copies_sorts_and_visits_rows() {
        let mut rows = CopiedRows::new();
        rows.add(copy_of(&[(b"b", b"2"), (b"a", b"1")])).unwrap();
        rows.add(copy_of(&[(b"ab", b"")])).unwrap();
        assert_eq!(rows.sort_by_key(), None);
        let mut seen = Vec::new();
        rows.for_each(|k, e| {
            seen.push((k.to_vec(), e.to_vec()));
            Ok::<_, ()>(())
        })
        .unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [("a", "1"), ("ab", ""), ("b", "2")]
            .iter()
            .map(|(k, e)| (k.as_bytes().to_vec(), e.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn finds_a_key_stored_twice_and_refuses_cut_data() {
        let mut rows = CopiedRows::new();
        rows.add(copy_of(&[(b"k", b"1"), (b"k", b"2")])).unwrap();
        assert_eq!(rows.sort_by_key(), Some(b"k".to_vec()));
        let data = copy_of(&[(b"key", b"value")]);
        for cut in [5, 20, data.len() - 4, data.len() - 1] {
            let mut rows = CopiedRows::new();
            rows.add(copy_of(&[(b"first", b"whole")])).unwrap();
            assert!(rows.add(data[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }
}
