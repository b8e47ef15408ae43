//! A take-over's recovery begun before the store's lease is free.
//!
//! When a cluster's sequencer dies, its lease still runs for up to its length, and a standby
//! can only start its runtime once it is over. Most of a take-over is the replay on the new
//! sequencer's private copy of the partitions (`recovery.rs`), which needs no lease: it only
//! reads the store. A [`PreparedTakeOver`] starts it at once, while the standby waits: the
//! latest checkpoint loaded into a private copy, the log replayed up to
//! `limits::TAKE_OVER_LOG_TAIL_EPOCHS` short of the end it had then.
//!
//! Reading before holding the lease is safe because what was read is checked once the lease
//! is held: a logged epoch never changes, and the log loses epochs only to a checkpoint's
//! completion (truncation) or an erasure, both of which complete a newer checkpoint. So the
//! runtime that takes the lease uses the prepared copy only if the store's latest checkpoint
//! is still the one it loaded, and replays the rest of the log on it; otherwise it drops it and
//! recovers from the store as without one. Stopping short of the log's end keeps the epochs a
//! kept partition may lack (the tail, `recovery.rs`) for after the lease, when the tail is known.

use super::config::RuntimeConfig;
use super::recovery::Replay;
use crate::app::{App, AppDef};
use crate::error::TxnError;
use crate::limits;
use crate::transport::PartitionActors;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// The private copy and its replay so far.
pub(crate) struct Prepared<A: App> {
    pub(crate) private: PartitionActors<A>,
    pub(crate) replay: Replay<A>,
    /// The epochs it replayed.
    pub(crate) epochs: u64,
}

type Preparing<A> = JoinHandle<Result<Prepared<A>, TxnError>>;

/// A take-over's recovery under way before its lease (module docs). Clones share it; the
/// runtime that starts with it takes it only once it holds the lease, so a start refused for
/// the lease leaves it for the next try. Dropped untaken, its private copy is stopped.
pub struct PreparedTakeOver<A: App> {
    slot: Arc<Slot<A>>,
}

impl<A: App> Clone for PreparedTakeOver<A> {
    fn clone(&self) -> Self {
        PreparedTakeOver {
            slot: self.slot.clone(),
        }
    }
}

struct Slot<A: App> {
    preparing: parking_lot::Mutex<Option<Preparing<A>>>,
}

impl<A: App> Drop for Slot<A> {
    fn drop(&mut self) {
        let Some(preparing) = self.preparing.get_mut().take() else {
            return;
        };
        preparing.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Ok(Ok(prepared)) = preparing.await {
                    prepared.private.stop().await;
                }
            });
        }
    }
}

impl<A: App> PreparedTakeOver<A> {
    /// Starts loading the store's latest checkpoint into a private copy and replaying the log
    /// on it, on a task of its own; returns at once. `config` is the runtime's to be (its
    /// store, dedup window bounds and recovery source). Must be called inside a tokio runtime.
    pub fn start(app: Arc<AppDef<A>>, config: RuntimeConfig) -> Self {
        let preparing = tokio::spawn(prepare(app, config));
        PreparedTakeOver {
            slot: Arc::new(Slot {
                preparing: parking_lot::Mutex::new(Some(preparing)),
            }),
        }
    }

    /// Takes the replay under way, once: the runtime holding the lease waits for it.
    pub(crate) fn take(&self) -> Option<Preparing<A>> {
        self.slot.preparing.lock().take()
    }
}

/// Checks the store is this application's (reading only), then loads and replays.
async fn prepare<A: App>(
    app: Arc<AppDef<A>>,
    config: RuntimeConfig,
) -> Result<Prepared<A>, TxnError> {
    let started = Instant::now();
    let fingerprint = crate::fingerprint::Fingerprint::of(&app);
    let storage = config.storage.clone();
    let end = tokio::task::spawn_blocking(move || {
        crate::fingerprint::check_written_store(&fingerprint, storage.as_ref())?;
        storage
            .last_epoch()
            .map_err(|e| TxnError::Recovery(format!("reading the log's end: {e}")))
    })
    .await
    .map_err(|e| TxnError::Recovery(format!("reading the store stopped: {e}")))??;
    let until = end
        .unwrap_or(0)
        .saturating_sub(limits::TAKE_OVER_LOG_TAIL_EPOCHS);
    // The private copy always remembers changed rows: they are what the owners are handed.
    let private = PartitionActors::start(app.clone(), true)?;
    let replayed = async {
        let mut replay = Replay::begin(&app, &private, &config).await?;
        replay
            .run(&app, &private, &config, Some(until), None)
            .await?;
        Ok::<_, TxnError>(replay)
    }
    .await;
    match replayed {
        Ok(replay) => {
            let epochs = replay.epochs_replayed();
            tracing::info!(
                checkpoint_epoch = ?replay.checkpoint_epoch(),
                epochs_replayed = epochs,
                up_to_epoch = until,
                seconds = started.elapsed().as_secs_f64(),
                "prepared a take-over before holding the store's lease: the checkpoint loaded \
                 into a private copy and the log replayed on it"
            );
            Ok(Prepared {
                private,
                replay,
                epochs,
            })
        }
        Err(error) => {
            private.stop().await;
            Err(error)
        }
    }
}
