//! The checksummed envelope every logged record is stored in.
//!
//! Layout: `[crc32c: u32 LE][len: u32 LE][payload: len bytes]`, where the checksum covers the
//! epoch number (u64 LE) followed by the payload, so a record moved to the wrong epoch is caught
//! as well as a flipped byte or a cut tail.

use crate::StorageError;

/// Bytes of envelope before the payload.
pub const HEADER_LEN: usize = 8;

fn checksum(epoch: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&epoch.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Wraps `payload` of `epoch` in its envelope, appending to `out`.
pub fn encode_into(epoch: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("record payload over 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&checksum(epoch, payload).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Wraps `payload` of `epoch` in a new envelope.
pub fn encode(epoch: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(epoch, payload, &mut out);
    out
}

/// Checks the envelope at the start of `bytes` and returns its payload and the total length
/// consumed, or [`StorageError::Corrupt`] naming `epoch`.
pub fn decode<'a>(
    backend: &'static str,
    epoch: u64,
    bytes: &'a [u8],
) -> Result<(&'a [u8], usize), StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt {
        backend,
        epoch,
        detail,
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "record header cut short: {} of {HEADER_LEN} bytes",
            bytes.len()
        )));
    }
    let stored_crc = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let end = HEADER_LEN
        .checked_add(len)
        .ok_or_else(|| corrupt("record length overflows".into()))?;
    if bytes.len() < end {
        return Err(corrupt(format!(
            "record cut short: payload has {} of {len} bytes",
            bytes.len() - HEADER_LEN
        )));
    }
    let payload = &bytes[HEADER_LEN..end];
    let actual = checksum(epoch, payload);
    if actual != stored_crc {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"
        )));
    }
    Ok((payload, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_flip_cut_and_wrong_epoch() {
        // Goal: a record decodes to its payload; a flipped byte, a cut or another epoch is Corrupt.
        let rec = encode(7, b"hello epoch");
        let (payload, used) = decode("test", 7, &rec).unwrap();
        assert_eq!(payload, b"hello epoch");
        assert_eq!(used, rec.len());

        let mut flipped = rec.clone();
        flipped[HEADER_LEN + 2] ^= 0x40;
        assert!(matches!(
            decode("test", 7, &flipped),
            Err(StorageError::Corrupt { epoch: 7, .. })
        ));
        assert!(matches!(
            decode("test", 7, &rec[..rec.len() - 1]),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            decode("test", 8, &rec),
            Err(StorageError::Corrupt { epoch: 8, .. })
        ));
    }
}
