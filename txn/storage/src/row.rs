//! The checksummed envelopes the durable backends store checkpoint rows and metadata in.
//!
//! The engines do not all verify their own checksums on every read (redb checks them only when
//! repairing after a crash), so a damaged checkpoint row or metadata value must be caught here
//! and reported as [`StorageError::CorruptStore`], never returned as state.
//!
//! Row layout: `[crc32c: u32 LE][tag: u8][value]`, tag `1` for a live row, `0` for a deletion
//! (value empty). The checksum covers the key length (u32 LE), the key, the tag and the value, so
//! a row moved under another key is caught too. Metadata layout: `[value: u64 BE][crc32c: u32
//! LE]`, the checksum covering the metadata name and the value.

use crate::StorageError;

/// Bytes of row envelope before the value.
pub(crate) const ROW_HEADER_LEN: usize = 5;

const TAG_DELETE: u8 = 0;
const TAG_PUT: u8 = 1;

fn row_checksum(key: &[u8], tag: u8, value: &[u8]) -> u32 {
    // Keys are bounded by `limits::CHECKPOINT_KEY_BYTES_MAX`, far below u32::MAX.
    let key_len = key.len() as u32;
    let crc = crc32c::crc32c(&key_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, key);
    let crc = crc32c::crc32c_append(crc, &[tag]);
    crc32c::crc32c_append(crc, value)
}

/// Wraps the new value of `key` (`None`: deleted) in its envelope.
#[cfg(any(feature = "fjall", feature = "fdb", test))]
pub(crate) fn encode_row(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROW_HEADER_LEN + value.map_or(0, <[u8]>::len));
    push_row(&mut out, key, value);
    out
}

/// Appends the envelope of `key`'s new value (`None`: deleted) to `out`.
pub(crate) fn push_row(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    let (tag, value) = match value {
        Some(value) => (TAG_PUT, value),
        None => (TAG_DELETE, &[][..]),
    };
    out.extend_from_slice(&row_checksum(key, tag, value).to_le_bytes());
    out.push(tag);
    out.extend_from_slice(value);
}

/// Checks the envelope of `key`'s stored row and returns its value, `None` for a deletion.
pub(crate) fn decode_row<'a>(
    backend: &'static str,
    key: &[u8],
    stored: &'a [u8],
) -> Result<Option<&'a [u8]>, StorageError> {
    let corrupt = |detail: String| StorageError::CorruptStore {
        backend,
        location: format!("checkpoint row {}", display_key(key)),
        detail,
    };
    if stored.len() < ROW_HEADER_LEN {
        return Err(corrupt(format!(
            "row envelope cut short: {} of {ROW_HEADER_LEN} header bytes",
            stored.len()
        )));
    }
    let stored_crc = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let tag = stored[4];
    let value = &stored[ROW_HEADER_LEN..];
    let actual = row_checksum(key, tag, value);
    if actual != stored_crc {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"
        )));
    }
    match tag {
        TAG_PUT => Ok(Some(value)),
        TAG_DELETE if value.is_empty() => Ok(None),
        _ => Err(corrupt(format!(
            "unknown row tag {tag} with a valid checksum"
        ))),
    }
}

/// Encodes the metadata value `name` = `value`.
pub(crate) fn encode_meta(name: &str, value: u64) -> [u8; 12] {
    let value = value.to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), &value);
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&value);
    out[8..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks and decodes the stored metadata value `name`.
pub(crate) fn decode_meta(
    backend: &'static str,
    name: &str,
    stored: &[u8],
) -> Result<u64, StorageError> {
    let corrupt = |detail: String| StorageError::CorruptStore {
        backend,
        location: format!("metadata {name:?}"),
        detail,
    };
    let Ok(bytes) = <[u8; 12]>::try_from(stored) else {
        return Err(corrupt(format!("{} bytes instead of 12", stored.len())));
    };
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[..8]);
    let value = u64::from_be_bytes(value);
    if encode_meta(name, value) != bytes {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(value)
}

/// Encodes the variable-length metadata value `name` (the store info record):
/// `[crc32c: u32 LE][value]`, the checksum covering the name and the value.
pub(crate) fn encode_meta_bytes(name: &str, value: &[u8]) -> Vec<u8> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), value);
    let mut out = Vec::with_capacity(4 + value.len());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// Checks and decodes the stored variable-length metadata value `name`.
pub(crate) fn decode_meta_bytes<'a>(
    backend: &'static str,
    name: &str,
    stored: &'a [u8],
) -> Result<&'a [u8], StorageError> {
    let corrupt = |detail: String| StorageError::CorruptStore {
        backend,
        location: format!("metadata {name:?}"),
        detail,
    };
    let Some((crc, value)) = stored.split_first_chunk::<4>() else {
        return Err(corrupt(format!(
            "{} bytes, shorter than its checksum",
            stored.len()
        )));
    };
    let actual = crc32c::crc32c_append(crc32c::crc32c(name.as_bytes()), value);
    if u32::from_le_bytes(*crc) != actual {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(value)
}

/// Appends one row to a blob of pending rows: `[key len: u32 LE][key][envelope len: u32
/// LE][row envelope]`. Lengths are bounded by the row size limits.
pub(crate) fn push_blob_row(blob: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    blob.extend_from_slice(&(key.len() as u32).to_le_bytes());
    blob.extend_from_slice(key);
    // The envelope is written in place: no buffer of its own per row.
    let envelope_len = ROW_HEADER_LEN + value.map_or(0, <[u8]>::len);
    blob.extend_from_slice(&(envelope_len as u32).to_le_bytes());
    push_row(blob, key, value);
}

/// One row of a blob: its key, its row envelope and its value (`None` for a deletion).
pub(crate) type BlobRow<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// The rows of a blob made by [`push_blob_row`], in order: [`BlobRows::next_row`] gives each
/// row's key, envelope and value, checking the envelope.
pub(crate) struct BlobRows<'a> {
    rest: &'a [u8],
}

impl<'a> BlobRows<'a> {
    pub(crate) fn new(blob: &'a [u8]) -> Self {
        Self { rest: blob }
    }

    /// The next row as (key, row envelope, value; `None` for a deletion), `Ok(None)` after the
    /// last; a row cut short or failing its checksum is [`StorageError::CorruptStore`] at
    /// `location`.
    pub(crate) fn next_row(
        &mut self,
        backend: &'static str,
        location: &dyn Fn() -> String,
    ) -> Result<Option<BlobRow<'a>>, StorageError> {
        /// Splits one length-prefixed field off the front of `blob`, `None` when it is cut short.
        fn take<'a>(blob: &mut &'a [u8]) -> Option<&'a [u8]> {
            let (len, rest) = blob.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let field = rest.get(..len)?;
            *blob = &rest[len..];
            Some(field)
        }
        if self.rest.is_empty() {
            return Ok(None);
        }
        let cut = || StorageError::CorruptStore {
            backend,
            location: location(),
            detail: "row blob cut short".into(),
        };
        let key = take(&mut self.rest).ok_or_else(cut)?;
        let envelope = take(&mut self.rest).ok_or_else(cut)?;
        let value = decode_row(backend, key, envelope)?;
        Ok(Some((key, envelope, value)))
    }
}

/// A key for error messages: text when printable, hex otherwise, cut after 64 bytes.
pub(crate) fn display_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(64)];
    let ellipsis = if key.len() > 64 { "…" } else { "" };
    if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}{ellipsis}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{ellipsis}")
    }
}

/// Checks that log records are visited without a gap: `epoch` must follow `previous`.
pub(crate) fn check_contiguous(
    backend: &'static str,
    previous: Option<u64>,
    epoch: u64,
) -> Result<(), StorageError> {
    match previous {
        Some(previous) if previous.checked_add(1) != Some(epoch) => Err(StorageError::Corrupt {
            backend,
            epoch: previous.saturating_add(1),
            detail: format!(
                "record missing from the log: epoch {previous} is followed by epoch {epoch}"
            ),
        }),
        _ => Ok(()),
    }
}

/// Checks and decodes the log record of `epoch` read after `previous` (no gap), hands its
/// batch to `visit` and moves `previous` on.
// The visitor is spelled out as the trait's `read_epochs` takes it.
#[allow(clippy::type_complexity)]
pub(crate) fn visit_record(
    backend: &'static str,
    previous: &mut Option<u64>,
    epoch: u64,
    stored: &[u8],
    visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    check_contiguous(backend, *previous, epoch)?;
    let (payload, _) = crate::record::decode(backend, epoch, stored)?;
    visit(epoch, payload)?;
    *previous = Some(epoch);
    Ok(())
}

/// Checks and decodes one row of the merged checkpoint state and hands it to `visit`; a
/// deletion there is damage.
#[allow(clippy::type_complexity)]
pub(crate) fn visit_live_row(
    backend: &'static str,
    key: &[u8],
    stored: &[u8],
    visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    match decode_row(backend, key, stored)? {
        Some(value) => visit(key, value),
        None => Err(StorageError::CorruptStore {
            backend,
            location: format!("checkpoint row {}", display_key(key)),
            detail: "a deletion stored in the merged state".into(),
        }),
    }
}

/// Refuses to truncate the log below `epoch` unless the latest complete checkpoint covers
/// every epoch below it.
pub(crate) fn check_truncation(
    backend: &'static str,
    epoch: u64,
    latest_complete: Option<u64>,
) -> Result<(), StorageError> {
    let covered = latest_complete.map_or(0, |latest| latest.saturating_add(1));
    if epoch > covered {
        return Err(StorageError::TruncateBeyondCheckpoint {
            backend,
            epoch,
            latest_complete,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_round_trip_and_detects_flip_and_moved_key() {
        // Goal: a row envelope decodes to its value and rejects a flipped byte or another key.
        let stored = encode_row(b"k1", Some(b"value"));
        assert_eq!(
            decode_row("t", b"k1", &stored).unwrap(),
            Some(&b"value"[..])
        );
        assert!(matches!(
            decode_row("t", b"k2", &stored),
            Err(StorageError::CorruptStore { .. })
        ));
        for idx in 0..stored.len() {
            let mut flipped = stored.clone();
            flipped[idx] ^= 0x10;
            assert!(
                decode_row("t", b"k1", &flipped).is_err(),
                "flip at {idx} undetected"
            );
        }
        assert!(decode_row("t", b"k1", &stored[..3]).is_err());
        let deleted = encode_row(b"k1", None);
        assert_eq!(decode_row("t", b"k1", &deleted).unwrap(), None);
    }

    #[test]
    fn meta_round_trip_and_detects_flip() {
        // Goal: metadata decodes to its value and rejects a flipped byte, a cut or another name.
        let stored = encode_meta("latest", 42);
        assert_eq!(decode_meta("t", "latest", &stored).unwrap(), 42);
        assert!(decode_meta("t", "pending", &stored).is_err());
        assert!(decode_meta("t", "latest", &stored[..11]).is_err());
        let mut flipped = stored;
        flipped[3] ^= 1;
        assert!(decode_meta("t", "latest", &flipped).is_err());
    }
}
