//! Bounded history retention (`Retention::Epochs`, `Retention::Duration`): the *history base*,
//! the state as of the epoch before the retained window, kept in a store of its own so that the
//! epoch log can be truncated below the window while `txn::history` still has a state to replay
//! the window from.
//!
//! The base store holds the base state as its latest complete checkpoint (epoch `b`: the state
//! after epoch `b`; none: the empty state before epoch 1) and, in its log, every live checkpoint
//! taken since as *delta records*: checkpoint `c`'s changed rows, split into records keyed by
//! the epochs after the previous delta (`prev + 1 ..= c`, padded with empty records), the one
//! keyed `c` marking the delta complete with epoch `c`'s logged time. After each live
//! checkpoint the checkpoint thread appends its delta, then advances the base to the newest
//! complete delta wholly before the retention window (its rows and the older deltas' merged
//! into the base's checkpoint, their records truncated), and only then truncates the live log
//! below the base's epoch + 1. So the live log always holds every epoch after the base, and
//! the base store at most the deltas of the window.

use crate::dedup::DEDUP_GP;
use crate::error::TxnError;
use crate::limits;
use crate::row_key::CheckpointRow;
use crate::runtime::config::{Retention, RuntimeConfig};
use crate::storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// What a completed checkpoint does to the log.
pub(crate) enum Truncation {
    /// Nothing: the log is kept whole (`Retention::Everything`, or truncation switched off).
    Never,
    /// The log below the checkpoint is dropped (no history retained).
    BelowCheckpoint,
    /// The log below the history base is dropped, after the base has been advanced.
    Retain(Box<HistoryBase>),
}

impl Truncation {
    /// What `config` asks for; bounded retention without a base store is refused.
    pub(crate) fn of(config: &RuntimeConfig) -> Result<Self, TxnError> {
        if !config.truncate_log_after_checkpoint {
            return Ok(Truncation::Never);
        }
        match config.history_retention {
            None => Ok(Truncation::BelowCheckpoint),
            Some(retention) if !retention.is_bounded() => Ok(Truncation::Never),
            Some(retention) => match &config.history_base {
                Some(base) => Ok(Truncation::Retain(Box::new(HistoryBase::new(
                    base.clone(),
                    retention,
                )))),
                None => Err(TxnError::InvalidApp(vec![format!(
                    "history_retention {retention:?} needs a history_base store (open one \
                     with RuntimeConfig::durable_with_history)"
                )])),
            },
        }
    }
}

/// One record of a delta in the base store's log.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeltaRecord {
    /// The live checkpoint whose changed rows these are.
    pub(crate) checkpoint_epoch: u64,
    /// On the delta's last record: the logged time of the checkpoint's epoch.
    pub(crate) complete_at_ms: Option<u64>,
    pub(crate) rows: Vec<CheckpointRow>,
}

/// A complete delta: its checkpoint epoch and that epoch's logged time.
type DeltaMark = (u64, u64);

/// The checkpoint thread's handle on the history base.
pub(crate) struct HistoryBase {
    storage: Arc<dyn Storage>,
    retention: Retention,
    /// The complete deltas in the base store's log, oldest first; `None` until the base was
    /// checked against the live store (at this runtime's first checkpoint).
    deltas: Option<VecDeque<DeltaMark>>,
    /// The rows of the record being filled, its encoded size, and its key.
    pending: Vec<CheckpointRow>,
    pending_bytes: usize,
    next_key: u64,
}

fn base_error(doing: &'static str) -> impl Fn(StorageError) -> StorageError {
    move |e| StorageError::Visitor(format!("history base: {doing}: {e}"))
}

impl HistoryBase {
    pub(crate) fn new(storage: Arc<dyn Storage>, retention: Retention) -> Self {
        HistoryBase {
            storage,
            retention,
            deltas: None,
            pending: Vec::new(),
            pending_bytes: 0,
            next_key: 0,
        }
    }

    /// Starts the delta of live checkpoint `epoch`, before any of its rows is written to
    /// `live`. The first time, checks that the base knows the state as of `live`'s latest
    /// checkpoint and rebuilds it from `live` if not (retention just switched on, or the store
    /// ran without it for a while).
    pub(crate) fn begin(&mut self, live: &dyn Storage, epoch: u64) -> Result<(), StorageError> {
        if self.deltas.is_none() {
            let deltas = self.read_deltas()?;
            let base_epoch = self.base_epoch()?;
            let known = deltas.back().map_or(base_epoch, |d| d.0.max(base_epoch));
            let live_epoch = live.latest_checkpoint_epoch()?.unwrap_or(0);
            // Records the base already holds (a crash between advancing and dropping them).
            if base_epoch > 0 {
                self.storage.truncate_log_below(base_epoch + 1)?;
            }
            self.deltas = Some(if known < live_epoch {
                self.rebuild_from(live, live_epoch)?;
                VecDeque::new()
            } else {
                deltas
            });
        }
        let last_key = self.storage.last_epoch()?;
        self.next_key = last_key.map_or(self.base_epoch()?, |k| k) + 1;
        if self.next_key > epoch {
            return Err(StorageError::Visitor(format!(
                "history base: its log already reaches epoch {} beyond checkpoint {epoch}",
                self.next_key - 1
            )));
        }
        Ok(())
    }

    /// Adds one table's changed rows of the checkpoint `epoch` being written.
    pub(crate) fn push_rows(
        &mut self,
        epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        for (key, value) in rows {
            if key.starts_with(&DEDUP_GP.to_be_bytes()) {
                // The dedup window is the live runtime's, not part of any past state.
                continue;
            }
            let size = key.len() + value.as_ref().map_or(0, Vec::len) + 16;
            if self.pending_bytes + size > limits::HISTORY_BASE_RECORD_BYTES_MAX {
                self.flush(epoch, None)?;
            }
            self.pending.push((key.clone(), value.clone()));
            self.pending_bytes += size;
        }
        Ok(())
    }

    /// Completes the delta of checkpoint `epoch` (logged at `timestamp_ms`): pads the keys up
    /// to `epoch` and writes the last record, keyed `epoch`.
    pub(crate) fn finish(&mut self, epoch: u64, timestamp_ms: u64) -> Result<(), StorageError> {
        let padding: Vec<Vec<u8>> = (self.next_key..epoch)
            .map(|_| encode(epoch, None, &[]))
            .collect::<Result<_, _>>()?;
        let batch: Vec<(u64, &[u8])> = (self.next_key..epoch)
            .zip(padding.iter())
            .map(|(key, bytes)| (key, bytes.as_slice()))
            .collect();
        if !batch.is_empty() {
            self.storage
                .append_epochs(&batch)
                .map_err(base_error("padding a delta"))?;
        }
        self.next_key = epoch;
        self.flush(epoch, Some(timestamp_ms))?;
        if let Some(deltas) = &mut self.deltas {
            deltas.push_back((epoch, timestamp_ms));
        }
        Ok(())
    }

    /// Writes the pending rows as the record keyed `next_key`.
    fn flush(&mut self, epoch: u64, complete_at_ms: Option<u64>) -> Result<(), StorageError> {
        if complete_at_ms.is_none() && self.next_key >= epoch {
            return Err(StorageError::Visitor(format!(
                "history base: checkpoint {epoch}'s changed rows need more than one record per \
                 epoch since the previous checkpoint ({} bytes each)",
                limits::HISTORY_BASE_RECORD_BYTES_MAX
            )));
        }
        let bytes = encode(epoch, complete_at_ms, &self.pending)?;
        self.storage
            .append_epoch(self.next_key, &bytes)
            .map_err(base_error("appending a delta"))?;
        self.next_key += 1;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// After live checkpoint `epoch` (logged at `timestamp_ms`) completed: advances the base to
    /// the newest complete delta before the retention window, if that is newer than the base,
    /// and returns the base's epoch, below which (+ 1) the live log may be truncated.
    pub(crate) fn advance(&mut self, epoch: u64, timestamp_ms: u64) -> Result<u64, StorageError> {
        let base_epoch = self.base_epoch()?;
        let deltas = self.deltas.as_mut().expect("begin ran first");
        let Some(target) = base_target(self.retention, deltas, epoch, timestamp_ms) else {
            return Ok(base_epoch);
        };
        if target <= base_epoch {
            return Ok(base_epoch);
        }
        for key in base_epoch + 1..=target {
            if let Some(record) = read_record(self.storage.as_ref(), key)? {
                self.storage
                    .write_checkpoint_rows(target, &record.rows)
                    .map_err(base_error("merging a delta"))?;
            }
        }
        self.storage
            .complete_checkpoint(target)
            .map_err(base_error("completing the base"))?;
        self.storage
            .truncate_log_below(target + 1)
            .map_err(base_error("dropping merged deltas"))?;
        deltas.retain(|d| d.0 > target);
        Ok(target)
    }

    /// The base's epoch: its latest complete checkpoint (0: the empty state).
    fn base_epoch(&self) -> Result<u64, StorageError> {
        Ok(self.storage.latest_checkpoint_epoch()?.unwrap_or(0))
    }

    /// The complete deltas in the base store's log, oldest first.
    fn read_deltas(&self) -> Result<VecDeque<DeltaMark>, StorageError> {
        let mut deltas = VecDeque::new();
        self.storage.read_epochs(0, &mut |key, bytes| {
            let header: DeltaHeader = rmp_serde::from_slice(bytes).map_err(|e| {
                StorageError::Visitor(format!("history base record {key} does not decode: {e}"))
            })?;
            if let Some(at) = header.complete_at_ms {
                deltas.push_back((header.checkpoint_epoch, at));
            }
            Ok(())
        })?;
        Ok(deltas)
    }

    /// Makes the base the state of `live`'s latest checkpoint, `live_epoch`: every live row,
    /// a deletion of every base row not in it, and no deltas.
    fn rebuild_from(&self, live: &dyn Storage, live_epoch: u64) -> Result<(), StorageError> {
        let mut stale: BTreeSet<Vec<u8>> = BTreeSet::new();
        self.storage.read_latest_checkpoint(&mut |key, _| {
            stale.insert(key.to_vec());
            Ok(())
        })?;
        let mut chunk: Vec<CheckpointRow> = Vec::new();
        let storage = self.storage.as_ref();
        live.read_latest_checkpoint(&mut |key, value| {
            stale.remove(key);
            if !key.starts_with(&DEDUP_GP.to_be_bytes()) {
                chunk.push((key.to_vec(), Some(value.to_vec())));
            }
            if chunk.len() >= limits::CHECKPOINT_CHUNK_ROWS_MAX {
                storage.write_checkpoint_rows(live_epoch, &chunk)?;
                chunk.clear();
            }
            Ok(())
        })?;
        chunk.extend(stale.into_iter().map(|key| (key, None)));
        for rows in chunk.chunks(limits::CHECKPOINT_CHUNK_ROWS_MAX) {
            storage.write_checkpoint_rows(live_epoch, rows)?;
        }
        storage.complete_checkpoint(live_epoch)?;
        storage.truncate_log_below(live_epoch + 1)
    }
}

/// A delta record's header, its rows skipped.
#[derive(Deserialize)]
struct DeltaHeader {
    checkpoint_epoch: u64,
    complete_at_ms: Option<u64>,
    #[allow(dead_code)]
    rows: serde::de::IgnoredAny,
}

fn encode(
    epoch: u64,
    complete_at_ms: Option<u64>,
    rows: &[CheckpointRow],
) -> Result<Vec<u8>, StorageError> {
    #[derive(Serialize)]
    struct DeltaRecordRef<'a> {
        checkpoint_epoch: u64,
        complete_at_ms: Option<u64>,
        rows: &'a [CheckpointRow],
    }
    let record = DeltaRecordRef {
        checkpoint_epoch: epoch,
        complete_at_ms,
        rows,
    };
    rmp_serde::to_vec(&record)
        .map_err(|e| StorageError::Visitor(format!("history base: encoding a delta: {e}")))
}

/// The record keyed `key` in the base store's log, if any.
fn read_record(storage: &dyn Storage, key: u64) -> Result<Option<DeltaRecord>, StorageError> {
    const STOP: &str = "history base: one record read";
    let mut found = None;
    let read = storage.read_epochs(key, &mut |at, bytes| {
        if at == key {
            found = Some(rmp_serde::from_slice(bytes).map_err(|e| {
                StorageError::Visitor(format!("history base record {at} does not decode: {e}"))
            })?);
        }
        Err(StorageError::Visitor(STOP.into()))
    });
    match read {
        Err(StorageError::Visitor(why)) if why == STOP => Ok(found),
        Err(e) => Err(e),
        Ok(()) => Ok(found),
    }
}

/// The epoch the base should move to after checkpoint `epoch` (logged at `timestamp_ms`): the
/// newest complete delta every epoch of which lies before the window `retention` keeps.
pub(crate) fn base_target(
    retention: Retention,
    deltas: &VecDeque<DeltaMark>,
    epoch: u64,
    timestamp_ms: u64,
) -> Option<u64> {
    let before_window = |&(delta_epoch, delta_ms): &DeltaMark| match retention {
        Retention::Everything => false,
        Retention::Epochs(n) => delta_epoch.saturating_add(n) <= epoch,
        Retention::Duration(d) => {
            let d_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            delta_ms < timestamp_ms.saturating_sub(d_ms)
        }
    };
    deltas.iter().rev().find(|d| before_window(d)).map(|d| d.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_base_moves_to_the_newest_delta_before_the_window() {
        let deltas: VecDeque<DeltaMark> = [(2, 1_000), (4, 2_000), (6, 3_000)].into();
        assert_eq!(base_target(Retention::Epochs(3), &deltas, 8, 0), Some(4));
        assert_eq!(base_target(Retention::Epochs(2), &deltas, 8, 0), Some(6));
        assert_eq!(base_target(Retention::Epochs(7), &deltas, 8, 0), None);
        let hour = Duration::from_secs(3_600);
        assert_eq!(
            base_target(Retention::Duration(hour), &deltas, 8, 3_500),
            None
        );
        let second = Duration::from_millis(1_000);
        // Epochs logged at 3 000 ms and later are in the window of 1 s before 4 000 ms.
        assert_eq!(
            base_target(Retention::Duration(second), &deltas, 8, 4_000),
            Some(4)
        );
        assert_eq!(base_target(Retention::Everything, &deltas, 8, 4_000), None);
    }
}
