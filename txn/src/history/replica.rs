//! A private replica of an application's partitions that replays the retained log through the
//! same `run_epoch` as recovery, from the history base of a bounded retention if there is one,
//! optionally with a trace installed on every partition.

use super::HistoryError;
use crate::app::{App, AppDef};
use crate::envelope::EpochEnv;
use crate::epoch::{TxnResult, run_epoch};
use crate::error::TxnError;
use crate::partition::Partitions;
use crate::storage::Storage;
use crate::trace::{PartitionTrace, TraceRecord, TraceSink};
use crate::transport::DirectDispatch;
use std::sync::Arc;

/// The replica's partitions, owned by a direct dispatcher that runs each phase job at once:
/// no actors, no other work.
pub(super) type Direct<A> = DirectDispatch<A>;

/// One replayed epoch, handed to the caller of [`replay`].
pub(super) struct Replayed<'r, A: App> {
    pub env: &'r EpochEnv<A::Event>,
    pub results: &'r [TxnResult<A::Output>],
    /// The traced records of the epoch, each with the index of its transaction's last run.
    pub records: Vec<(TraceRecord, u32)>,
}

/// Builds an empty replica of `app`, with `sink` installed on every partition if given.
pub(super) fn replica<A: App>(app: &Arc<AppDef<A>>, sink: Option<&Arc<TraceSink>>) -> Direct<A> {
    let mut parts = Partitions::new(app);
    for part in parts.iter_mut() {
        part.set_track_dirty(false);
        part.trace = sink.map(|s| PartitionTrace::new(s.clone()));
    }
    DirectDispatch::new(app.clone(), parts)
}

/// Where replay starts: the history base's state (epoch 0 and the empty state without one).
pub(super) struct Start<'s> {
    pub base: Option<&'s Arc<dyn Storage>>,
}

impl Start<'_> {
    /// The base's epoch: the state as of its end is where replay starts (0: the empty state).
    pub(super) fn epoch(&self) -> Result<u64, HistoryError> {
        let Some(base) = self.base else {
            return Ok(0);
        };
        let epoch = base
            .latest_checkpoint_epoch()
            .map_err(|e| TxnError::Storage(format!("reading the history base: {e}")))?;
        Ok(epoch.unwrap_or(0))
    }

    /// Loads the base's state into `replica`; returns its epoch.
    async fn load<A: App>(
        &self,
        app: &Arc<AppDef<A>>,
        replica: &Direct<A>,
    ) -> Result<u64, HistoryError> {
        let epoch = self.epoch()?;
        if let (Some(base), true) = (self.base, epoch > 0) {
            let config = crate::runtime::RuntimeConfig::with_storage(base.clone());
            crate::runtime::load_checkpoint_async(app, replica, &config).await?;
        }
        Ok(epoch)
    }
}

/// Replays the retained log from the history base (`start`: epoch 0 without one) through epoch
/// `until` (inclusive) on `replica`, calling `each` after every epoch. Returns the last epoch
/// replayed (the base's if none). The log must go on at the epoch after the base, and `until`
/// may not be older than the base: history has no state to start from otherwise
/// ([`HistoryError::NotRetained`]).
pub(super) async fn replay<A: App>(
    app: &Arc<AppDef<A>>,
    storage: &Arc<dyn Storage>,
    start: &Start<'_>,
    replica: &Direct<A>,
    sink: Option<&Arc<TraceSink>>,
    until: u64,
    mut each: impl FnMut(Replayed<'_, A>),
) -> Result<u64, HistoryError> {
    let base_epoch = start.epoch()?;
    if until < base_epoch {
        return Err(HistoryError::NotRetained {
            first_logged_epoch: base_epoch + 1,
        });
    }
    start.load(app, replica).await?;
    let mut records = crate::runtime::stream_log::<A>(storage.clone(), base_epoch + 1);
    let mut last = base_epoch;
    while last < until {
        let Some(record) = records.recv().await else {
            break;
        };
        let mut record = record?;
        if record.epoch != last + 1 {
            return Err(if last == base_epoch {
                HistoryError::NotRetained {
                    first_logged_epoch: record.epoch,
                }
            } else {
                TxnError::Recovery(format!(
                    "the epoch log has a gap: expected epoch {}, found {}",
                    last + 1,
                    record.epoch
                ))
                .into()
            });
        }
        let erase = std::mem::take(&mut record.erase);
        let env = record.into_env();
        let outcome = run_epoch(app, replica, env.clone(), Vec::new()).await?;
        crate::runtime::erase_at_epoch_end(app, replica, &erase).await?;
        let records = sink.map(|s| s.take_epoch()).unwrap_or_default();
        each(Replayed {
            env: &env,
            results: &outcome.results,
            records,
        });
        last = env.epoch;
    }
    if last == base_epoch && until > base_epoch {
        // An empty log next to a newer checkpoint was truncated below it.
        let checkpoint = storage
            .latest_checkpoint_epoch()
            .map_err(|e| TxnError::Storage(format!("reading the latest checkpoint: {e}")))?;
        if let Some(c) = checkpoint.filter(|&c| c > base_epoch) {
            return Err(HistoryError::NotRetained {
                first_logged_epoch: c + 1,
            });
        }
    }
    Ok(last)
}
