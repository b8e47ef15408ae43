//! A private replica of an application's partitions that replays the retained log through the
//! same `run_epoch` as recovery, optionally with a trace installed on every partition.

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

/// Replays the retained log from epoch 1 through epoch `until` (inclusive) on `replica`,
/// calling `each` after every epoch. Returns the last epoch replayed (0 if the log is empty).
/// The log must start at epoch 1: history has no base state to start from otherwise.
pub(super) async fn replay<A: App>(
    app: &Arc<AppDef<A>>,
    storage: &Arc<dyn Storage>,
    replica: &Direct<A>,
    sink: Option<&Arc<TraceSink>>,
    until: u64,
    mut each: impl FnMut(Replayed<'_, A>),
) -> Result<u64, HistoryError> {
    let mut records = crate::runtime::stream_log::<A>(storage.clone(), 0);
    let mut last = 0;
    while last < until {
        let Some(record) = records.recv().await else {
            break;
        };
        let record = record?;
        if record.epoch != last + 1 {
            return Err(if last == 0 {
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
        let env = record.into_env();
        let outcome = run_epoch(app, replica, env.clone(), Vec::new()).await?;
        let records = sink.map(|s| s.take_epoch()).unwrap_or_default();
        each(Replayed {
            env: &env,
            results: &outcome.results,
            records,
        });
        last = env.epoch;
    }
    if last == 0 && until > 0 {
        // An empty log next to a checkpoint was truncated below it.
        let checkpoint = storage
            .latest_checkpoint_epoch()
            .map_err(|e| TxnError::Storage(format!("reading the latest checkpoint: {e}")))?;
        if let Some(c) = checkpoint {
            return Err(HistoryError::NotRetained {
                first_logged_epoch: c + 1,
            });
        }
    }
    Ok(last)
}
