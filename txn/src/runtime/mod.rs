//! The embedded runtime: sequencer, epoch driver, durability thread and reply stage.
//!
//! ```text
//!  clients ──submit──▶ [sequencer task] ──Arc<EpochEnv>──▶ [durability thread] ─ append_epoch ─▶ Storage
//!                          │   run_epoch (waves, decide, commit, fallback)         │ durable epoch (watch)
//!                          ▼                                                      ▼
//!                     [partition actors]                    [reply stage] waits for "durable ≥ e", then replies
//! ```
//!
//! The sequencer closes an epoch when `epoch_duration` has passed since its first request,
//! `epoch_txns_max` requests are in, it holds `epoch_split_txns` and half of all requests
//! outstanding, with at least `epoch_split_txns` outstanding elsewhere too (after a short
//! turn), or it holds `epoch_quiet_close_txns` and no more arrive
//! while it yields a few times; it hands the batch to the durability thread (one durable write
//! per epoch) and executes it while the write is in flight. Replies of epoch `e` are released
//! only once epoch `e` is durable; if storage fails, they get [`TxnError::Storage`] instead and
//! the runtime stops accepting requests.

mod batch;
mod client;
mod config;
mod durability;
mod forget;
mod hand_over;
mod lease;
mod named_query;
mod recovery;
mod reply;
mod reply_slot;
mod retention;
mod sequencer;
mod stats;
mod take_over;

pub use crate::outcome::Outcome;
pub use client::Client;
pub use config::{HISTORY_BASE_DIR, RecoverFrom, Retention, RuntimeConfig};
pub(crate) use durability::EpochRecordRef;
pub(crate) use forget::erase_at_epoch_end;
pub use hand_over::HandOver;
pub use lease::{LeaseConfig, LeaseStatus};
pub use recovery::RecoveryReport;
pub(crate) use recovery::{load_checkpoint_async, recover, recover_driver, stream_log};
pub use reply::OutboxSink;
pub use stats::{ConflictStats, RuntimeStats, StatsSnapshot, TableConflicts};
pub use stats::{EpochPeak, LatencyPeaks, LogPeak};
pub use take_over::PreparedTakeOver;

use crate::app::{App, AppDef};
use crate::cluster_dispatch::{ClusterDispatch, DriverDispatch};
use crate::envelope::Fallback;
use crate::error::TxnError;
use crate::ids::IdGenerator;
use crate::limits;
use crate::predict::Predictor;
use crate::sync::DurableWatermark;
use crate::transport::PartitionActors;
use client::Submission;
use durability::{
    CheckpointOrder, CheckpointSchedule, LogItem, WriterTurn, checkpoint_loop, durability_loop,
    log_truncation_channel, truncation_loop,
};
use reply::{ReplySender, reply_loop};
use rustc_hash::FxHashMap;
use sequencer::{Sequencer, Stopped, sequencer_loop};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A running embedded vmsdb instance.
pub struct Runtime<A: App> {
    client: Client<A>,
    stats: Arc<RuntimeStats>,
    sequencer: tokio::task::JoinHandle<Stopped<A>>,
    replier: tokio::task::JoinHandle<()>,
    durability: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// The checkpoint writers of the runtimes that handed over to this one (a checkpoint they
    /// were writing finishes under this runtime).
    inherited_checkpointers: Vec<std::thread::JoinHandle<()>>,
    actors: DriverDispatch<A>,
    recovery: RecoveryReport,
    /// Renews the store's lease (`None`: no lease, writes unfenced).
    lease: Option<lease::LeaseKeeper>,
    /// The durable epoch, which also records why the runtime refuses writes (`failure`).
    durable: Arc<DurableWatermark>,
    /// The checkpoint in flight, which a stop keeping the lease abandons.
    checkpoint_schedule: Arc<CheckpointSchedule>,
}

impl<A: App> Runtime<A> {
    /// Opens (or creates) the embedded store in `dir` and starts `app` on it with the default
    /// settings: what a restart finds is everything acknowledged before it. Must be called
    /// inside a multi-threaded tokio runtime.
    pub async fn open(app: Arc<AppDef<A>>, dir: impl AsRef<Path>) -> Result<Self, TxnError> {
        let dir = dir.as_ref();
        let config = RuntimeConfig::durable(dir).map_err(|e| {
            TxnError::Storage(format!("opening the store in {}: {e}", dir.display()))
        })?;
        Self::start(app, config).await
    }

    /// Starts a runtime for `app`: replays whatever the storage holds, then accepts requests.
    /// Must be called inside a multi-threaded tokio runtime.
    pub async fn start(app: Arc<AppDef<A>>, config: RuntimeConfig) -> Result<Self, TxnError> {
        Self::start_taking(app, config, None, None).await
    }

    /// [`Runtime::start`] on the store and node of a runtime this process stopped with
    /// [`Runtime::shutdown_handing_over`]: without recovering, when the hand-over holds (nothing
    /// wrote the store since, the lease's term is the same, and every partition's owner before
    /// still answers with the state it had); the partitions whose owner changed move as rows
    /// from their owner before (`PartitionHost::re_place` readied them) to the new one. Otherwise
    /// it recovers as [`Runtime::start`] does (`RecoveryReport::handed_over` tells).
    pub async fn start_handed_over(
        app: Arc<AppDef<A>>,
        config: RuntimeConfig,
        hand_over: HandOver<A>,
    ) -> Result<Self, TxnError> {
        Self::start_taking(app, config, Some(hand_over), None).await
    }

    /// [`Runtime::start`] going on with a take-over's recovery begun before the store's lease
    /// was free ([`PreparedTakeOver`]): once this runtime holds the lease, if the store's latest
    /// checkpoint is still the one `prepared` loaded, only the rest of the log is replayed on
    /// its private copy; otherwise it recovers as [`Runtime::start`] does. Used by a cluster's
    /// runtime only (one in a single process recovers as `start` does); a start refused for the
    /// lease leaves `prepared` for the next.
    pub async fn start_prepared(
        app: Arc<AppDef<A>>,
        config: RuntimeConfig,
        hand_over: Option<HandOver<A>>,
        prepared: PreparedTakeOver<A>,
    ) -> Result<Self, TxnError> {
        Self::start_taking(app, config, hand_over, Some(prepared)).await
    }

    async fn start_taking(
        app: Arc<AppDef<A>>,
        config: RuntimeConfig,
        hand_over: Option<HandOver<A>>,
        prepared: Option<PreparedTakeOver<A>>,
    ) -> Result<Self, TxnError> {
        validate(&config)?;
        // Nothing is read from the store before this runtime holds its lease.
        let granted = lease::acquire(&config.storage, config.lease.as_ref()).await?;
        let (storage, lease_config) = (config.storage.clone(), config.lease.clone());
        let held = granted.is_some();
        let started = Self::start_holding_lease(app, config, granted, hand_over, prepared).await;
        if started.is_err() && held {
            // A runtime that will never write must not keep a standby waiting for its lease.
            lease::hand_back(storage, lease_config).await;
        }
        started
    }

    /// The rest of [`Runtime::start`], once the lease (if any) is `granted`.
    async fn start_holding_lease(
        app: Arc<AppDef<A>>,
        config: RuntimeConfig,
        granted: Option<lease::Granted>,
        hand_over: Option<HandOver<A>>,
        prepared: Option<PreparedTakeOver<A>>,
    ) -> Result<Self, TxnError> {
        // Before anything reads the store: refuse one written by another application or format.
        // Storage calls block, so they run on the blocking pool.
        let fingerprint = crate::fingerprint::Fingerprint::of(&app);
        let storage = config.storage.clone();
        tokio::task::spawn_blocking(move || {
            crate::fingerprint::check_store(&fingerprint, storage.as_ref())
        })
        .await
        .map_err(|e| TxnError::Storage(format!("the store check stopped: {e}")))??;
        // Each partition actor builds and owns its state; without checkpoints, changed rows
        // need not be remembered.
        let track_dirty = config.checkpoint_every_epochs != 0;
        let local = PartitionActors::start(app.clone(), track_dirty)?;
        let stats = Arc::new(RuntimeStats::default());
        let actors = match &config.cluster {
            None => DriverDispatch::Local(local),
            Some(placement) => {
                let cluster = ClusterDispatch::new(app.clone(), local, placement)?;
                stats.set_node_traffic(cluster.traffic());
                DriverDispatch::Cluster(Arc::new(cluster))
            }
        };
        // A hand-over from the runtime before is taken only if it still holds (`hand_over.rs`).
        let term = granted.as_ref().map_or(0, lease::Granted::term);
        let handed = match hand_over {
            Some(h) => hand_over::usable(h, term, &app, &config).await,
            None => None,
        };
        // The lease is renewed from before recovery: a recovery longer than the lease's length
        // (a large store, a slow shared one) must not let a standby take the store meanwhile.
        // The watermark starts at 0 and is moved to the recovered epoch below; a lease lost
        // during recovery fails it, and the runtime then refuses to start. A hand-over's
        // watermark goes on (a checkpoint of the runtime before that fails to complete fails it).
        let watermark = match &handed {
            Some(h) => h.durable.clone(),
            None => Arc::new(DurableWatermark::new(0)),
        };
        let lease_keeper = lease::LeaseKeeper::spawn(
            &config.storage,
            config.lease.as_ref(),
            granted,
            &watermark,
            &stats,
        )?;
        // In a cluster, recovery loads the other nodes' partitions through their hosts.
        let (recovery, dedup, handed_schedule, inherited_checkpointers) = match handed {
            None => {
                let (recovery, dedup) = recover_driver(&app, &actors, &config, prepared).await?;
                (recovery, dedup, None, Vec::new())
            }
            Some(h) => match hand_over::take(&app, &actors, h).await {
                Ok(t) => (t.report, t.dedup, Some(t.schedule), t.checkpointers),
                Err(error) => {
                    tracing::warn!(%error, "the hand-over failed; recovering from the store");
                    let (recovery, dedup) =
                        recover_driver(&app, &actors, &config, prepared).await?;
                    (recovery, dedup, None, Vec::new())
                }
            },
        };
        if let Some(failure) = watermark.failure() {
            return Err(TxnError::Storage(format!(
                "the store's lease was lost during recovery: {}",
                failure.message()
            )));
        }
        watermark.advance(recovery.last_epoch);
        tracing::info!(
            checkpoint_epoch = ?recovery.checkpoint_epoch,
            rows_loaded = recovery.rows_loaded,
            epochs_replayed = recovery.epochs_replayed,
            handed_over = recovery.handed_over,
            seconds = recovery.duration.as_secs_f64(),
            "recovered"
        );
        let checkpoint_schedule = handed_schedule.unwrap_or_else(|| {
            Arc::new(CheckpointSchedule::new(
                recovery.checkpoint_epoch.unwrap_or(0),
            ))
        });
        let (log_tx, log_rx) = mpsc::channel::<LogItem<A>>(limits::EPOCHS_IN_FLIGHT_MAX);
        let threads =
            DurabilityThreads::spawn(&config, log_rx, &watermark, &stats, &checkpoint_schedule)?;
        let (tx, rx) = client::submission_queue(limits::SUBMIT_QUEUE_MAX);
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        let client = Client {
            tx,
            app: app.clone(),
            ids: Arc::new(IdGenerator::new()),
            request_bytes_max: config.request_bytes_max,
            in_cluster: config.cluster.is_some(),
            reply_slots: Default::default(),
        };
        let replier = tokio::spawn(reply_loop::<A>(
            reply_rx,
            watermark.clone(),
            config.outbox.clone(),
            stats.clone(),
        ));
        let partitions_elsewhere = (0..app.n_global).any(|gp| actors.remote_node(gp).is_some());
        let sequencer = tokio::spawn(sequencer_loop(Sequencer {
            partitions_elsewhere,
            predictor: Predictor::new(config.serial_hints),
            app,
            actors: actors.clone(),
            config,
            rx,
            log_tx,
            reply_tx: ReplySender::new(reply_tx, stats.clone()),
            durable: watermark.clone(),
            stats: stats.clone(),
            epoch: recovery.last_epoch,
            last_timestamp_ms: recovery.last_timestamp_ms,
            dedup,
            checkpoint_schedule: checkpoint_schedule.clone(),
            retry_queue: Vec::new(),
            inflight: FxHashMap::default(),
            carry: Default::default(),
            last_epoch_txns: 0,
            last_turn: Duration::ZERO,
        }));
        Ok(Runtime {
            client,
            stats,
            sequencer,
            replier,
            durability: Some(threads.durability),
            checkpointer: Some(threads.checkpointer),
            inherited_checkpointers,
            checkpoint_schedule,
            actors,
            recovery,
            lease: lease_keeper,
            durable: watermark,
        })
    }

    /// Why this runtime refuses writes, once it does (its log or a checkpoint could not be
    /// written, an epoch failed, or its lease was lost); `None` while it accepts them. A
    /// runtime that refuses writes stays so: start a new one, which recovers from the store.
    pub fn failure(&self) -> Option<String> {
        self.durable.failure().map(|f| f.message().to_string())
    }

    /// What recovery did when this runtime started.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// A new client handle.
    pub fn client(&self) -> Client<A> {
        self.client.clone()
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The conflict losses by table so far, with each table's hottest keys
    /// ([`Client::conflict_stats`]): every partition is asked between two epochs, so call it
    /// for reports, not per request.
    pub async fn conflict_stats(&self) -> Result<ConflictStats, TxnError> {
        self.client.conflict_stats().await
    }

    /// Stops accepting requests, finishes every sequenced epoch, waits for the log to be durable
    /// and stops the partition actors.
    pub async fn shutdown(self) {
        self.stop(Stop::HandLeaseBack).await;
    }

    /// [`Runtime::shutdown`], but the store's lease is not handed back: it runs until its
    /// length after the last renewal, so a new runtime this process starts at once on the same
    /// store (a cluster's re-placement) renews it before any standby can take it.
    pub async fn shutdown_keeping_lease(self) {
        self.stop(Stop::KeepLease).await;
    }

    /// [`Runtime::shutdown_keeping_lease`] for a new runtime of this process on the same store
    /// (a cluster's re-placement, [`Runtime::start_handed_over`]): when it stopped cleanly
    /// (every sequenced epoch durable and run on every partition, nothing failed), what a
    /// recovery would compute: its position, its dedup window, its checkpoint writer (a
    /// checkpoint being copied is finished, one being written goes on), this node's partitions'
    /// states and every partition's state hash and instance incarnation. `None` otherwise (the
    /// new runtime recovers). The other nodes' hosts must still hold the partitions as this
    /// runtime left them: the very instances (an owner restarted since fails the hand-over).
    pub async fn shutdown_handing_over(self) -> Option<HandOver<A>> {
        self.stop(Stop::HandOver).await
    }

    async fn stop(mut self, how: Stop) -> Option<HandOver<A>> {
        // A runtime replaced by a new one on the same store (keeping the lease) does not wait
        // for the rest of a checkpoint being written: the checkpoint is left incomplete, as a
        // crash would leave it, and the new runtime recovers from the previous one and the
        // log. Writing a large first checkpoint can take tens of seconds, during which no
        // runtime would serve. A hand-over lets it go on under the next runtime instead.
        let schedule = self.checkpoint_schedule.clone();
        let abandon = || {
            schedule
                .abandon
                .store(true, std::sync::atomic::Ordering::Release)
        };
        if how == Stop::KeepLease {
            abandon();
        }
        let _ = self.client.tx.send(Submission::Stop).await;
        let stopped = (&mut self.sequencer).await.ok();
        // The sequencer's state is dropped here (with its log sender) unless it hands over.
        let position = match (how, stopped) {
            (Stop::HandOver, Some((s, copying))) => hand_over::Position::of(s, copying).await,
            _ => None,
        };
        let _ = (&mut self.replier).await;
        // The durability thread ends when the sequencer's log sender is gone, and drops the
        // checkpoint sender, which ends the checkpoint thread after its last checkpoint.
        if let Some(thread) = self.durability.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let handing = match position {
            Some(position) => self.collect_hand_over(position).await,
            None => None,
        };
        if handing.is_none() {
            if how == Stop::HandOver {
                // The next runtime recovers: nothing may complete under it while it reads.
                abandon();
            }
            let threads = self.checkpointer.take().into_iter();
            let threads: Vec<_> = threads
                .chain(self.inherited_checkpointers.drain(..))
                .collect();
            let _ = tokio::task::spawn_blocking(move || {
                for thread in threads {
                    let _ = thread.join();
                }
            })
            .await;
        }
        // Everything is durable: hand the lease back so a standby need not wait for it.
        if let Some(keeper) = self.lease.take() {
            let _ = tokio::task::spawn_blocking(move || {
                if how == Stop::HandLeaseBack {
                    keeper.step_down();
                }
            })
            .await;
        }
        self.actors.stop().await;
        handing
    }

    /// The hand-over of a runtime whose sequencer stopped at `position`: checks that it stopped
    /// cleanly (nothing failed, its last epoch durable), then takes every partition's state
    /// hash and instance incarnation, this node's states, and the checkpoint writers.
    async fn collect_hand_over(&mut self, position: hand_over::Position<A>) -> Option<HandOver<A>> {
        if let Some(failure) = self.durable.failure() {
            tracing::warn!(
                failure = failure.message(),
                "no hand-over: the runtime failed"
            );
            return None;
        }
        let durable = self.durable.durable_epoch();
        if durable != position.epoch {
            tracing::warn!(
                durable,
                last_epoch = position.epoch,
                "no hand-over: the log is behind"
            );
            return None;
        }
        let n_global = self.client.app.n_global;
        let all: Vec<crate::ids::GlobalPartition> = (0..n_global).collect();
        let hashes = crate::epoch::run_phase(&self.actors, &all, |_, reply| {
            crate::partition::Job::StateHash { reply }
        });
        let hashes = match hashes.await {
            Ok(hashes) => hashes,
            Err(error) => {
                tracing::warn!(%error, "no hand-over: a partition's owner did not answer");
                return None;
            }
        };
        let here: Vec<crate::ids::GlobalPartition> = all
            .into_iter()
            .filter(|gp| self.actors.remote_node(*gp).is_none())
            .collect();
        let states = crate::epoch::run_phase(&self.actors, &here, |_, reply| {
            crate::partition::Job::Lend { reply }
        });
        let states = match states.await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "no hand-over: this node's partitions did not answer");
                return None;
            }
        };
        let threads = self.checkpointer.take().into_iter();
        let threads = threads
            .chain(self.inherited_checkpointers.drain(..))
            .collect();
        Some(HandOver {
            position,
            durable: self.durable.clone(),
            writers: hand_over::Writers {
                schedule: self.checkpoint_schedule.clone(),
                threads,
            },
            term: self
                .stats
                .lease_term
                .load(std::sync::atomic::Ordering::Acquire),
            states,
            hashes,
        })
    }
}

/// How a runtime stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Waits for the checkpoint being written and hands the store's lease back.
    HandLeaseBack,
    /// Abandons the checkpoint being written and keeps the lease (a new runtime follows).
    KeepLease,
    /// Keeps the lease and hands the new runtime what it needs to start without recovering.
    HandOver,
}

/// Refuses a configuration the pipeline cannot run with.
fn validate(config: &RuntimeConfig) -> Result<(), TxnError> {
    if config.epoch_duration > Duration::from_micros(limits::EPOCH_DURATION_US_MAX) {
        return Err(TxnError::InvalidApp(vec![format!(
            "epoch_duration {:?} exceeds the maximum of {} µs",
            config.epoch_duration,
            limits::EPOCH_DURATION_US_MAX
        )]));
    }
    if let Some(why) = config.lease.as_ref().and_then(LeaseConfig::invalid) {
        return Err(TxnError::InvalidApp(vec![why]));
    }
    if config.cluster.is_some() && config.fallback == Fallback::Serial {
        return Err(TxnError::InvalidApp(vec![
            "a cluster runtime cannot use Fallback::Serial, which lends every partition to the \
             epoch driver and works only in one process: use Fallback::Ordered (which \
             RuntimeConfig::cluster sets) or Fallback::NextEpoch"
                .to_string(),
        ]));
    }
    if let Some(why) = config.serial_hints.invalid() {
        return Err(TxnError::InvalidApp(vec![why]));
    }
    if config.checkpoint_nice > limits::CHECKPOINT_NICE_MAX {
        return Err(TxnError::InvalidApp(vec![format!(
            "checkpoint_nice {} exceeds the maximum of {}",
            config.checkpoint_nice,
            limits::CHECKPOINT_NICE_MAX
        )]));
    }
    if config.epoch_txns_max == 0 || config.epoch_txns_max > limits::EPOCH_TXNS_MAX {
        return Err(TxnError::InvalidApp(vec![format!(
            "epoch_txns_max {} must be in 1..={}",
            config.epoch_txns_max,
            limits::EPOCH_TXNS_MAX
        )]));
    }
    Ok(())
}

/// Joins the log truncation thread when dropped, on the checkpoint thread's way out, whether
/// its loop returned or panicked.
struct JoinOnDrop(Option<std::thread::JoinHandle<()>>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take()
            && thread.join().is_err()
        {
            tracing::error!("the log truncation thread panicked");
        }
    }
}

/// The storage threads: the log appender and the checkpoint writer (which starts, and joins,
/// the log truncation thread).
struct DurabilityThreads {
    durability: std::thread::JoinHandle<()>,
    checkpointer: std::thread::JoinHandle<()>,
}

impl DurabilityThreads {
    /// Starts the checkpoint thread, then the durability thread that feeds it.
    fn spawn<A: App>(
        config: &RuntimeConfig,
        log_rx: mpsc::Receiver<LogItem<A>>,
        watermark: &Arc<DurableWatermark>,
        stats: &Arc<RuntimeStats>,
        schedule: &Arc<CheckpointSchedule>,
    ) -> Result<Self, TxnError> {
        let writer_turn: Arc<WriterTurn> = Arc::new(parking_lot::Mutex::new(()));
        let (ckpt_tx, ckpt_rx) = std::sync::mpsc::channel::<CheckpointOrder>();
        let truncation = retention::Truncation::of(config)?;
        // Truncating the log after a checkpoint is a write of the log: it takes the appender's
        // turn, on a thread of its own at the process's priority (started here, so it never
        // inherits the checkpoint thread's lowered one). It ends when the checkpoint thread
        // drops its end of the channel, and the checkpoint thread joins it then.
        let (truncator, truncation_orders) = log_truncation_channel();
        let truncation_thread = std::thread::Builder::new()
            .name("vmsdb-truncate".into())
            .spawn({
                let storage = config.storage.clone();
                let log_turn = writer_turn.clone();
                move || truncation_loop(storage.as_ref(), truncation_orders, &log_turn)
            })
            .map_err(|e| TxnError::Storage(format!("cannot start the truncation thread: {e}")))?;
        let checkpointer = std::thread::Builder::new()
            .name("vmsdb-checkpoint".into())
            .spawn({
                let storage = config.storage.clone();
                let watermark = watermark.clone();
                let stats = stats.clone();
                let schedule = schedule.clone();
                // A store whose checkpoints have their own writer needs no turns: appends
                // never wait for a checkpoint there, so the thread may run at a lower priority.
                // Elsewhere every chunk write takes the appender's turn, and a low-priority
                // thread holding it would hold up the log: the priority stays.
                let own_writer = storage.checkpoints_have_own_writer();
                let writer_turn = if own_writer {
                    Arc::new(parking_lot::Mutex::new(()))
                } else {
                    writer_turn.clone()
                };
                let nice = if own_writer {
                    config.checkpoint_nice
                } else {
                    0
                };
                move || {
                    // Joined however the loop ends, a panic included: the loop drops the
                    // truncator first (which ends the truncation thread), then this joins.
                    let _truncation = JoinOnDrop(Some(truncation_thread));
                    durability::lower_own_priority(nice);
                    checkpoint_loop(
                        storage.as_ref(),
                        ckpt_rx,
                        &watermark,
                        truncation,
                        &stats,
                        &schedule,
                        &writer_turn,
                        truncator,
                    );
                }
            })
            .map_err(|e| TxnError::Storage(format!("cannot start the checkpoint thread: {e}")))?;
        let storage = config.storage.clone();
        let durability = std::thread::Builder::new()
            .name("vmsdb-durability".into())
            .spawn({
                let watermark = watermark.clone();
                let stats = stats.clone();
                move || durability_loop(storage, log_rx, &watermark, ckpt_tx, &stats, &writer_turn)
            })
            .map_err(|e| TxnError::Storage(format!("cannot start the durability thread: {e}")))?;
        Ok(DurabilityThreads {
            durability,
            checkpointer,
        })
    }
}
