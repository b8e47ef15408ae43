//! Time as the epoch pipeline sees it: the wall clock read once per epoch by the sequencer, and
//! the logged epoch clock every step of the epoch reads (so replay sees the same time).

use std::time::{SystemTime, UNIX_EPOCH};

/// The epoch and its logged timestamp, which is all a step needs to know of its epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub epoch: u64,
    pub timestamp_ms: u64,
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
