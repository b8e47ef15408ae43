//! What a transaction ended with: its outcome and its place in the equivalent serial order.
//! A leaf module shared by the sequencer, the dedup window and the public API.

use crate::error::AbortReason;
use crate::ids::{Seq, Tid};
use serde::{Deserialize, Serialize};

/// Where a committed transaction stands in the equivalent serial order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SerialPos {
    /// The epoch it committed in.
    pub epoch: u64,
    /// 0 for the parallel first pass, 1 for the fallback, 2 for the ordered fallback's tail
    /// (transactions that left their first-pass partitions, re-run after all others).
    pub pass: u8,
    /// Its position in the epoch's batch.
    pub seq: Seq,
}

/// The committed or aborted result of one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome<O> {
    /// The TID it last ran under.
    pub tid: Tid,
    /// The output set by its handlers, or why it aborted.
    pub result: Result<Option<O>, AbortReason>,
    /// Where it stands in the equivalent serial order: committed transactions, and transactions
    /// a handler aborted (on a consistent snapshot, so a serial replay at this position aborts
    /// too). `None` only when it gave up after too many conflict retries.
    pub serial_pos: Option<SerialPos>,
    /// How many times it lost a conflict and was retried in a later epoch.
    pub retries: u32,
    /// The logged timestamp of the epoch it ran in (what `TxnCtx::now_ms` returned), so a
    /// replay can reproduce time-dependent rows.
    #[serde(default)]
    pub timestamp_ms: u64,
}

impl<O> Outcome<O> {
    /// Whether the transaction committed.
    pub fn committed(&self) -> bool {
        self.result.is_ok()
    }
}
