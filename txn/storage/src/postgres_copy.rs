//! PostgreSQL's binary `COPY` format, as the PostgreSQL backend writes and reads a checkpoint:
//! encoding the `(key, epoch, live, envelope)` rows of a `COPY ... FROM STDIN (FORMAT binary)`
//! ([`CopyIn`]) and decoding the `(key, envelope)` (or `(key, epoch, envelope)`) rows a
//! `COPY ... TO STDOUT (FORMAT binary)` sends ([`CopiedRows`]).
//!
//! The format (PostgreSQL documentation, "COPY", "Binary Format"): an 11-byte signature, a
//! 32-bit flags field, a 32-bit header extension length and that many bytes; then per row a
//! 16-bit field count and, per field, a 32-bit length (-1 for NULL) and the field's bytes in
//! the type's binary send format (`bytea`: the bytes as they are; `bool`: one byte); a field
//! count of -1 ends the data. All integers are big-endian.

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Bytes a row of [`CopyIn`] takes besides its key and value: the field count, four field
/// lengths, the epoch, the live flag and the row envelope's header.
const COPY_IN_ROW_OVERHEAD: usize = 2 + 4 * 4 + 8 + 1 + crate::row::ROW_HEADER_LEN;

/// The input of one binary `COPY checkpoint_versions (key, epoch, live, envelope) FROM STDIN`:
/// every row encoded into one buffer (no allocation per row), the row envelope in place.
pub(crate) struct CopyIn {
    data: Vec<u8>,
}

impl CopyIn {
    /// The header only, with room for `rows` rows of `payload` key and value bytes in all.
    pub(crate) fn with_capacity(rows: usize, payload: usize) -> Self {
        let mut data =
            Vec::with_capacity(SIGNATURE.len() + 8 + rows * COPY_IN_ROW_OVERHEAD + payload + 2);
        data.extend_from_slice(SIGNATURE);
        // Flags (no OIDs), then a header extension of zero bytes.
        data.extend_from_slice(&[0; 8]);
        CopyIn { data }
    }

    /// Adds the row of `key` (`value` `None`: a deletion), with the stored `epoch`.
    pub(crate) fn push_row(&mut self, key: &[u8], epoch: i64, value: Option<&[u8]>) {
        let data = &mut self.data;
        data.extend_from_slice(&4i16.to_be_bytes());
        // Keys and values are bounded by the row size limits, far below i32::MAX.
        data.extend_from_slice(&(key.len() as i32).to_be_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(&8i32.to_be_bytes());
        data.extend_from_slice(&epoch.to_be_bytes());
        data.extend_from_slice(&1i32.to_be_bytes());
        data.push(u8::from(value.is_some()));
        let envelope_len = crate::row::ROW_HEADER_LEN + value.map_or(0, <[u8]>::len);
        data.extend_from_slice(&(envelope_len as i32).to_be_bytes());
        crate::row::push_row(data, key, value);
    }

    /// The whole COPY input: the rows and the end marker.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.data.extend_from_slice(&(-1i16).to_be_bytes());
        self.data
    }
}

/// Where one row's key and envelope lie in the decoded COPY data.
#[derive(Clone, Copy)]
struct RowSpan {
    key_start: usize,
    key_len: u32,
    envelope_len: u32,
}

/// Bytes of the epoch field of a version, between the key and the envelope: its 32-bit length
/// and the `bigint`; of a pruned row's, only the length (-1: NULL).
const VERSION_EPOCH_FIELD: usize = 4 + 8;
const NULL_EPOCH_FIELD: usize = 4;

/// The rows of binary COPYs, kept in the COPYs' own bytes (no allocation per row), to be sorted
/// by key and visited: `(key, envelope)` rows, or, [`CopiedRows::with_epochs`], `(key, epoch,
/// envelope)` rows where a NULL epoch marks a pruned row and an epoch a version of which each
/// key's newest replaces its pruned row.
pub(crate) struct CopiedRows {
    data: Vec<u8>,
    /// The pruned rows (all rows without the epoch column).
    rows: Vec<RowSpan>,
    /// The versions (rows with an epoch).
    versions: Vec<RowSpan>,
    /// Whether each row has the epoch field between its key and its envelope.
    epochs: bool,
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
    /// No rows yet; [`CopiedRows::add`] takes COPYs of two columns, key and envelope.
    pub(crate) fn new() -> Self {
        CopiedRows {
            data: Vec::new(),
            rows: Vec::new(),
            versions: Vec::new(),
            epochs: false,
        }
    }

    /// No rows yet; [`CopiedRows::add`] takes COPYs of three columns: key, epoch (`bigint`,
    /// NULL for a pruned row) and envelope.
    pub(crate) fn with_epochs() -> Self {
        CopiedRows {
            epochs: true,
            ..Self::new()
        }
    }

    /// Decodes and adds `data`, the whole output of one binary COPY of two (three, with epochs)
    /// columns.
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
        let expected = if self.epochs { 3 } else { 2 };
        loop {
            let n_fields = i16::from_be_bytes(take::<2>(data, &mut at)?);
            if n_fields == -1 {
                break;
            }
            if n_fields != expected {
                return Err(format!(
                    "COPY row of {n_fields} fields, expected {expected}"
                ));
            }
            let key_len = Self::field_len(data, &mut at)?;
            let key_start = at;
            at += key_len as usize;
            let mut version = false;
            if self.epochs {
                match i32::from_be_bytes(take::<4>(data, &mut at)?) {
                    -1 => {}
                    8 => {
                        version = true;
                        at += 8;
                    }
                    len => return Err(format!("COPY epoch field of length {len}")),
                }
            }
            let envelope_len = Self::field_len(data, &mut at)?;
            at += envelope_len as usize;
            if at > data.len() {
                return Err(format!(
                    "COPY data ends at byte {} inside a row",
                    data.len()
                ));
            }
            let span = RowSpan {
                key_start,
                key_len,
                envelope_len,
            };
            match version {
                true => self.versions.push(span),
                false => self.rows.push(span),
            }
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

    /// The stored epoch of a version.
    fn epoch(&self, span: &RowSpan) -> i64 {
        let at = span.key_start + span.key_len as usize + 4;
        i64::from_be_bytes(self.data[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The envelope of a row (`version`: of a version), after the key, the epoch field if any,
    /// and the envelope's own 32-bit length.
    fn envelope(&self, span: &RowSpan, version: bool) -> &[u8] {
        let epoch = match (version, self.epochs) {
            (true, _) => VERSION_EPOCH_FIELD,
            (false, true) => NULL_EPOCH_FIELD,
            (false, false) => 0,
        };
        let start = span.key_start + span.key_len as usize + epoch + 4;
        &self.data[start..start + span.envelope_len as usize]
    }

    /// Puts the rows in key order, and the versions in key order, each key's newest first, of
    /// which only that one is kept. Returns a key found twice among the rows, or twice in one
    /// epoch among the versions, if any.
    pub(crate) fn sort_by_key(&mut self) -> Option<Vec<u8>> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)));
        let mut twice = rows
            .windows(2)
            .find(|pair| self.key(&pair[0]) == self.key(&pair[1]))
            .map(|pair| self.key(&pair[0]).to_vec());
        self.rows = rows;
        let mut versions = std::mem::take(&mut self.versions);
        versions.sort_unstable_by(|a, b| {
            (self.key(a).cmp(self.key(b))).then(self.epoch(b).cmp(&self.epoch(a)))
        });
        twice = twice.or_else(|| {
            versions
                .windows(2)
                .find(|pair| {
                    self.key(&pair[0]) == self.key(&pair[1])
                        && self.epoch(&pair[0]) == self.epoch(&pair[1])
                })
                .map(|pair| self.key(&pair[0]).to_vec())
        });
        versions.dedup_by(|later, kept| self.key(later) == self.key(kept));
        self.versions = versions;
        twice
    }

    /// Visits, in key order (after [`CopiedRows::sort_by_key`]), every key with its envelope:
    /// its newest version's where it has one (the flag then `true`), else its row's.
    pub(crate) fn for_each<E>(
        &self,
        mut visit: impl FnMut(&[u8], &[u8], bool) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.versions.is_empty() {
            for span in &self.rows {
                visit(self.key(span), self.envelope(span, false), false)?;
            }
            return Ok(());
        }
        let (mut rows, mut versions) =
            (self.rows.iter().peekable(), self.versions.iter().peekable());
        loop {
            let order = match (rows.peek(), versions.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(row), Some(version)) => self.key(row).cmp(self.key(version)),
            };
            if order.is_lt() {
                let row = rows.next().expect("peeked");
                visit(self.key(row), self.envelope(row, false), false)?;
            } else {
                if order.is_eq() {
                    rows.next();
                }
                let version = versions.next().expect("peeked");
                visit(self.key(version), self.envelope(version, true), true)?;
            }
        }
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
        rows.for_each(|k, e, _| {
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
    fn copy_in_encodes_four_fields_per_row_and_the_end_marker() {
        // Goal: the COPY input holds the header, then per row the key, the stored epoch, the
        // live flag and the row envelope (checked by the row decoder), then the end marker.
        let mut copy = CopyIn::with_capacity(2, 8);
        copy.push_row(b"k1", -5, Some(b"v1"));
        copy.push_row(b"k2", 7, None);
        let data = copy.finish();
        assert!(data.starts_with(SIGNATURE));
        let mut at = SIGNATURE.len();
        assert_eq!(take::<8>(&data, &mut at).unwrap(), [0; 8]);
        let field = |at: &mut usize| {
            let len = CopiedRows::field_len(&data, at).unwrap() as usize;
            *at += len;
            data[*at - len..*at].to_vec()
        };
        for (key, epoch, value) in [(&b"k1"[..], -5i64, Some(&b"v1"[..])), (b"k2", 7, None)] {
            assert_eq!(i16::from_be_bytes(take::<2>(&data, &mut at).unwrap()), 4);
            assert_eq!(field(&mut at), key);
            assert_eq!(field(&mut at), epoch.to_be_bytes());
            assert_eq!(field(&mut at), [u8::from(value.is_some())]);
            let envelope = field(&mut at);
            assert_eq!(
                crate::row::decode_row("test", key, &envelope).unwrap(),
                value
            );
        }
        assert_eq!(i16::from_be_bytes(take::<2>(&data, &mut at).unwrap()), -1);
        assert_eq!(at, data.len());
    }

    /// The COPY output of `(key, epoch, envelope)` rows (a pruned row's epoch NULL), as the
    /// server would send it.
    fn with_epochs(rows: &[(&[u8], Option<i64>, &[u8])]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&[0; 8]);
        for (key, epoch, envelope) in rows {
            out.extend_from_slice(&3i16.to_be_bytes());
            push_field(&mut out, key);
            match epoch {
                Some(epoch) => push_field(&mut out, &epoch.to_be_bytes()),
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            push_field(&mut out, envelope);
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn a_keys_newest_version_replaces_its_pruned_row() {
        // Goal: of a key's versions the newest epoch's is kept (negative stored epochs too:
        // the `bigint` order) and replaces the key's pruned row, over several COPYs.
        let mut rows = CopiedRows::with_epochs();
        rows.add(with_epochs(&[
            (b"b", Some(3), b"b3"),
            (b"c", None, b"c0"),
            (b"d", Some(-9), b"d-9"),
            (b"b", Some(5), b"b5"),
        ]))
        .unwrap();
        rows.add(with_epochs(&[
            (b"b", None, b"b0"),
            (b"d", Some(-10), b"d-10"),
            (b"a", None, b"a0"),
            (b"b", Some(4), b"b4"),
        ]))
        .unwrap();
        assert_eq!(rows.sort_by_key(), None);
        let mut seen = Vec::new();
        rows.for_each(|k, e, version| {
            seen.push((k.to_vec(), e.to_vec(), version));
            Ok::<_, ()>(())
        })
        .unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>, bool)> = [
            ("a", "a0", false),
            ("b", "b5", true),
            ("c", "c0", false),
            ("d", "d-9", true),
        ]
        .iter()
        .map(|(k, e, v)| (k.as_bytes().to_vec(), e.as_bytes().to_vec(), *v))
        .collect();
        assert_eq!(seen, expected);
        let mut twice = CopiedRows::with_epochs();
        twice
            .add(with_epochs(&[(b"k", Some(1), b"x"), (b"k", Some(1), b"y")]))
            .unwrap();
        assert_eq!(twice.sort_by_key(), Some(b"k".to_vec()));
        assert!(
            CopiedRows::with_epochs()
                .add(copy_of(&[(b"k", b"v")]))
                .is_err()
        );
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
