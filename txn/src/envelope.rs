//! The epoch envelope: a sequenced request, the epoch that carries a batch of them, and how
//! the epoch treats conflict losers. A leaf module: the sequencer, the log codec, the partitions
//! and replay all share these types, so they depend on nothing but ids and the clock.

use crate::clock::Clock;
use crate::ids::{GlobalPartition, RequestId, Seq};
use serde::{Deserialize, Serialize};

/// An inbound request as sequenced into an epoch and written to the epoch log.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sequenced<E> {
    /// The global partition the first step runs in.
    pub target: GlobalPartition,
    /// The inbound event.
    pub event: E,
    /// The client's idempotency key, if any.
    #[serde(default)]
    pub id: Option<RequestId>,
    /// How many times this request already lost a conflict and was re-sequenced (logged, so
    /// replay reaches the same retry-exhaustion decisions).
    #[serde(default)]
    pub retries: u32,
}

/// Everything every partition needs to know about the epoch being executed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EpochEnv<E> {
    pub epoch: u64,
    pub timestamp_ms: u64,
    pub requests: Vec<Sequenced<E>>,
    /// Positions (ascending) of the requests that skip the parallel pass and run in the serial
    /// pass right away: the sequencer predicted they would lose a conflict. Logged with the
    /// epoch, so replay takes the same path. Only honoured with `Fallback::Serial` and
    /// `Fallback::Ordered`.
    pub serial: Vec<Seq>,
    /// What this epoch does with conflict losers; logged, so replay does the same.
    pub fallback: Fallback,
}

impl<E> EpochEnv<E> {
    pub fn clock(&self) -> Clock {
        Clock {
            epoch: self.epoch,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// Whether conflict losers are re-run at the end of the epoch (one at a time, or ordered per
/// partition) or retried next epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fallback {
    /// Re-run them one by one right after the commit (needs all partitions in this process).
    Serial,
    /// Retry them first in the next epoch with new, lowest TIDs.
    NextEpoch,
    /// Re-run them right after the commit through the partition actors, each partition taking
    /// them in TID order, so transactions whose first-pass partitions are disjoint run in
    /// parallel (see `epoch/ordered.rs`). The result equals `Serial`'s TID order, except that a
    /// transaction reaching a partition outside its first-pass footprint is re-run in a final
    /// one-at-a-time tail pass (`SerialPos::pass` 2).
    Ordered,
}
