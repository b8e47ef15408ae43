//! The store's lease and the fencing of writes by a deposed holder, shared by every backend.
//!
//! A store keeps one lease record: the holder's name, a **term** that only ever grows, and when
//! the lease ends by the store's clock. [`grant`] decides what [`crate::Storage::acquire_lease`]
//! writes, the same way in every backend: a free or expired lease goes to the caller with the
//! next term; the current holder renews with its term kept; anyone else is refused with
//! [`StorageError::LeaseHeld`]. A handle that was granted term T remembers it ([`HeldTerm`]), and
//! each of its writes checks, inside the store transaction of the write, that the store's term
//! is still T ([`check_fence`]): once another holder took a newer term, every write of the old
//! handle is refused with [`StorageError::Fenced`] and writes nothing. A handle that never took
//! a lease is not fenced (one process alone on its store, as before leases existed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{StorageError, limits};

/// The lease record as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub(crate) holder: String,
    /// Grows by one each time the lease changes hands; 0 in a store never leased.
    pub(crate) term: u64,
    /// When the lease ends, in milliseconds of the store's clock.
    pub(crate) expires_at_ms: u64,
}

/// The name a lease record is checksummed under (see `row::encode_meta_bytes`).
pub(crate) const META_LEASE: &str = "lease";

impl LeaseRecord {
    /// `[term: u64 BE][expires_at_ms: u64 BE][holder: UTF-8]`, inside a checksummed metadata
    /// value.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut plain = Vec::with_capacity(16 + self.holder.len());
        plain.extend_from_slice(&self.term.to_be_bytes());
        plain.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        plain.extend_from_slice(self.holder.as_bytes());
        crate::row::encode_meta_bytes(META_LEASE, &plain)
    }

    /// Checks and decodes what [`LeaseRecord::encode`] wrote.
    pub(crate) fn decode(backend: &'static str, stored: &[u8]) -> Result<Self, StorageError> {
        let plain = crate::row::decode_meta_bytes(backend, META_LEASE, stored)?;
        let corrupt = |detail: &str| StorageError::CorruptStore {
            backend,
            location: format!("metadata {META_LEASE:?}"),
            detail: detail.into(),
        };
        let Some((term, rest)) = plain.split_first_chunk::<8>() else {
            return Err(corrupt("shorter than its term"));
        };
        let Some((expires, holder)) = rest.split_first_chunk::<8>() else {
            return Err(corrupt("shorter than its expiry"));
        };
        let holder = std::str::from_utf8(holder).map_err(|_| corrupt("holder is not UTF-8"))?;
        Ok(Self {
            holder: holder.to_string(),
            term: u64::from_be_bytes(*term),
            expires_at_ms: u64::from_be_bytes(*expires),
        })
    }
}

/// Refuses a holder name the stores cannot keep.
pub(crate) fn check_holder(backend: &'static str, holder: &str) -> Result<(), StorageError> {
    if holder.len() > limits::LEASE_HOLDER_BYTES_MAX {
        return Err(StorageError::TooLarge {
            backend,
            what: "lease holder name",
            size: holder.len(),
            limit: limits::LEASE_HOLDER_BYTES_MAX,
        });
    }
    Ok(())
}

/// What `holder` asking for the lease for `ttl` at `now_ms` (the store's clock) gets: the new
/// record to write, or [`StorageError::LeaseHeld`]. A lease is expired from its `expires_at_ms`
/// on, so a `ttl` of zero grants a lease that anyone may take over at once (a holder stepping
/// down, or a test).
pub(crate) fn grant(
    backend: &'static str,
    current: Option<&LeaseRecord>,
    holder: &str,
    now_ms: u64,
    ttl: Duration,
) -> Result<LeaseRecord, StorageError> {
    let expires_at_ms = now_ms.saturating_add(ttl_ms(ttl));
    let term = match current {
        None => 1,
        Some(current) if current.holder == holder => current.term,
        Some(current) if now_ms >= current.expires_at_ms => current.term.saturating_add(1),
        Some(current) => {
            return Err(StorageError::LeaseHeld {
                backend,
                holder: current.holder.clone(),
                term: current.term,
                remaining_ms: current.expires_at_ms - now_ms,
            });
        }
    };
    Ok(LeaseRecord {
        holder: holder.to_string(),
        term,
        expires_at_ms,
    })
}

/// [`grant`] by the local clock, for the embedded and in-memory stores.
pub(crate) fn grant_by_local_clock(
    backend: &'static str,
    current: Option<&LeaseRecord>,
    holder: &str,
    ttl: Duration,
) -> Result<LeaseRecord, StorageError> {
    grant(backend, current, holder, local_now_ms(), ttl)
}

/// `ttl` in whole milliseconds, saturating.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Fails with [`StorageError::Fenced`] unless the store's term is still the handle's.
pub(crate) fn check_fence(
    backend: &'static str,
    ours: u64,
    current: u64,
) -> Result<(), StorageError> {
    if ours == current {
        Ok(())
    } else {
        Err(StorageError::Fenced {
            backend,
            ours,
            current,
        })
    }
}

/// The local clock of the embedded and in-memory stores, in milliseconds since the Unix epoch.
fn local_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The term a handle was granted, or none: one per handle, never shared with another handle.
#[derive(Debug, Default)]
pub(crate) struct HeldTerm(AtomicU64);

impl HeldTerm {
    /// The handle's term, `None` while it never took a lease (its writes are not fenced). One
    /// atomic load: the hot path of an unleased handle costs nothing more.
    pub(crate) fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            term => Some(term),
        }
    }

    /// Remembers the term the store granted.
    pub(crate) fn set(&self, term: u64) {
        self.0.store(term, Ordering::Release);
    }
}
