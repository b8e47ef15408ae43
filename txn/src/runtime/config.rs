//! Runtime configuration: how epochs are cut, where the log and checkpoints go, and where
//! recovery starts. Storage is always named: durable (`RuntimeConfig::durable`) or in memory
//! (`RuntimeConfig::in_memory`), never picked silently.

use crate::cluster_dispatch::ClusterPlacement;
use crate::envelope::Fallback;
use crate::limits;
use crate::predict::SerialHints;
use crate::runtime::lease::LeaseConfig;
use crate::runtime::reply::OutboxSink;
use crate::storage::{EmbeddedStorage, MemoryStorage, Storage, StorageError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How a runtime runs.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// How long an epoch collects requests after its first one (at most
    /// [`limits::EPOCH_DURATION_US_MAX`]).
    pub epoch_duration: Duration,
    /// Most transactions in one epoch.
    pub epoch_txns_max: usize,
    /// An epoch holding at least this many requests, and at least as many as the epoch before
    /// it, closes before `epoch_duration` is up as soon as the submission queue stays empty
    /// while the sequencer yields a few times ([`limits::EPOCH_QUIET_YIELDS`]): under load the
    /// clients of the last epoch are back by then (a closed-loop client waits for its reply),
    /// and waiting out the timer only leaves every partition idle; asking for as many as last
    /// time keeps a quiet close from splitting a burst of returning clients over two log
    /// writes (the epoch split below does split it, into halves, on purpose). 0 turns it
    /// off (an epoch closes only by time or size). Gathering only decides where epochs are
    /// cut; the log records the cut, so replay is unaffected.
    pub epoch_quiet_close_txns: usize,
    /// An epoch holding at least this many requests closes as soon as it holds as many as are
    /// outstanding elsewhere (replies of earlier epochs not yet released, submissions still
    /// queued), provided those are at least this many too: half of all. Under a closed loop the
    /// clients then split over two epochs that overlap, one running while the other's clients
    /// get their replies and come back, instead of all of them waiting on one epoch while the
    /// sequencer waits for them. Not after a turn longer than
    /// [`limits::EPOCH_SPLIT_TURNS_MAX`] epoch durations, where the clients' round trip is a
    /// small share of the cycle. 0 turns it off. Like every cut, it only decides where epochs
    /// end; replay reads the cut from the log.
    pub epoch_split_txns: usize,
    /// What happens to conflict losers.
    pub fallback: Fallback,
    /// Where the epoch log and checkpoints go.
    pub storage: Arc<dyn Storage>,
    /// Epochs between incremental checkpoints, counted from the last *completed* one, so
    /// recovery replays about this many epochs at most however often the process restarts
    /// (0: never checkpoint; recovery replays the log).
    pub checkpoint_every_epochs: u64,
    /// Bounds the checkpoint thread's duty cycle: a checkpoint falls due only once
    /// `checkpoint_every_epochs` have passed AND this many times the latest checkpoint's write
    /// time has passed since it completed (2: the thread writes at most about a third of the
    /// time), so a workload that dirties most rows stretches the interval instead of keeping
    /// the thread busy back to back. The cost: a crash replays up to that much longer a log
    /// tail. 0: off (checkpoints by epochs alone). Never applied to a cluster runtime
    /// (`RuntimeConfig::cluster`), whose failover wants frequent checkpoints; an erasure's
    /// checkpoint is never held up by it.
    pub checkpoint_rest_factor: u32,
    /// How many nice steps the checkpoint thread lowers its own CPU priority by when it starts
    /// (Linux: `setpriority` on the thread, from the nice value it starts with up to 19; other
    /// systems: nothing), so that on a machine whose cores the epoch workers keep busy a
    /// checkpoint uses the CPU they leave instead of taking a core from them. Only on a store
    /// whose checkpoints have their own writer (`Storage::checkpoints_have_own_writer`, the
    /// embedded store, PostgreSQL): elsewhere (FoundationDB, the in-memory store) the
    /// checkpoint's writes take the log appender's turn, and a
    /// low-priority thread must never hold what a normal one waits for. The thread never
    /// touches the log itself: the log's truncation after a checkpoint runs on a thread of
    /// normal priority. 0: the thread keeps the process's priority; at most
    /// [`limits::CHECKPOINT_NICE_MAX`]; a failure to lower it is logged, never fatal.
    pub checkpoint_nice: u8,
    /// Whether a completed checkpoint truncates the log below it. Off keeps the whole log, so a
    /// crash-free replay from epoch 1 can be compared with checkpoint-based recovery.
    pub truncate_log_after_checkpoint: bool,
    /// Where recovery starts.
    pub recover_from: RecoverFrom,
    /// How many outcomes of requests with client-chosen ids (`submit_with_id`) are remembered
    /// for exactly-once resubmission (the oldest forgotten first).
    pub dedup_window_max: usize,
    /// Bytes of remembered outcomes the dedup window keeps, in each of its two parts (ids chosen
    /// by clients, ids generated by `Client`); the oldest are forgotten first.
    pub dedup_window_bytes_max: usize,
    /// Epochs the outcome of a request with a generated id (a plain `submit`) is remembered
    /// after the epoch it settled in, for `submit_with_id` retries after
    /// `TxnError::OutcomeUnknown`.
    pub generated_id_window_epochs: u64,
    /// Largest encoded size of one submitted event, in bytes; a larger one is refused with
    /// `TxnError::RequestTooLarge` before it reaches the log.
    pub request_bytes_max: usize,
    /// Where outbox messages are delivered (`None`: they are dropped).
    pub outbox: Option<Arc<dyn OutboxSink>>,
    /// Which transactions skip the parallel pass because they would likely lose a conflict
    /// (see [`SerialHints`]); with `Fallback::Serial` and `Fallback::Ordered`.
    pub serial_hints: SerialHints,
    /// Whether outcomes leave as soon as they are decided rather than at the epoch's end: the
    /// first pass's after its commit, the serial pass's in groups of
    /// `limits::SERIAL_PASS_SETTLE_TXNS` while it runs (still each only once its epoch is
    /// durable). Off (`false`) by default: on a quiet two-core machine the clients' replies and
    /// next requests then compete with the one-thread serial pass for the cores, which ran
    /// 2.8–3.5 ms per epoch instead of 1.9–2.3 ms (YCSB-T Zipf 0.99: 200.7 k txn/s early
    /// against 216.7 k held, three alternating pairs). Worth turning on where cores are spare.
    pub early_replies: bool,
    /// How much history `txn::history` can replay (`None`, the default: none is kept beyond
    /// what recovery needs, and checkpoints truncate the log as usual).
    pub history_retention: Option<Retention>,
    /// Where a bounded retention (`Retention::Epochs`, `Retention::Duration`) keeps its
    /// *history base*: the state as of the epoch before the retained window, so the log can be
    /// truncated below the window (`RuntimeConfig::durable_with_history` opens one in the data
    /// directory). A second store, never the runtime's own; `None` refuses bounded retention.
    pub history_base: Option<Arc<dyn Storage>>,
    /// The store lease the runtime takes before recovery and renews while it runs, so that a
    /// second process on the same store cannot write (`LeaseConfig`; the default holds it for
    /// 5 s, renewed every 5/3 s). `None`: no lease, writes unfenced (one process per store is
    /// then the operator's business).
    pub lease: Option<LeaseConfig>,
    /// Partitions spread over nodes (`RuntimeConfig::cluster`): this runtime drives the epochs
    /// and holds its own node's partitions; `PartitionHost`s hold the others. `None`: every
    /// partition in this process.
    pub cluster: Option<ClusterPlacement>,
}

/// The subdirectory of a data directory holding the history base of a bounded retention
/// ([`RuntimeConfig::durable_with_history`]).
pub const HISTORY_BASE_DIR: &str = "history-base";

/// How much of the log a runtime keeps for provenance and time travel (`txn::history`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// Keep every logged epoch: checkpoints never truncate the log, so every past state can be
    /// rebuilt by replay from epoch 1. The log grows by every epoch's requests (about 26 bytes
    /// per ledger transfer), and replaying to epoch *e* costs executing every epoch up to *e*.
    Everything,
    /// Keep at least the last `n` epochs up to the latest checkpoint (and at most about
    /// `checkpoint_every_epochs` more): older epochs are folded into the history base and
    /// truncated from the log, so the log and the base hold a bounded window.
    Epochs(u64),
    /// Keep at least the epochs whose logged timestamp is within this long of the latest
    /// checkpoint's (by the epochs' logged time, never the wall clock at replay).
    Duration(Duration),
}

impl Retention {
    /// Whether this retention folds old epochs into a history base (`Epochs`, `Duration`).
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Retention::Everything)
    }
}

/// Where recovery starts at `Runtime::start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoverFrom {
    /// The latest complete checkpoint, then the log after it (the normal case).
    LatestCheckpoint,
    /// Ignore checkpoints and replay the whole log from its first epoch (needs a log that was
    /// never truncated; used to check recovery against a crash-free replay).
    LogStart,
}

impl RuntimeConfig {
    /// The default settings on `storage`.
    pub fn with_storage(storage: Arc<dyn Storage>) -> Self {
        RuntimeConfig {
            epoch_duration: Duration::from_micros(limits::EPOCH_DURATION_US_DEFAULT),
            epoch_txns_max: limits::EPOCH_TXNS_MAX_DEFAULT,
            epoch_quiet_close_txns: limits::EPOCH_QUIET_CLOSE_TXNS_DEFAULT,
            epoch_split_txns: limits::EPOCH_SPLIT_TXNS_DEFAULT,
            fallback: Fallback::Serial,
            storage,
            checkpoint_every_epochs: limits::CHECKPOINT_EVERY_EPOCHS_DEFAULT,
            checkpoint_rest_factor: limits::CHECKPOINT_REST_FACTOR_DEFAULT,
            checkpoint_nice: limits::CHECKPOINT_NICE_DEFAULT,
            truncate_log_after_checkpoint: true,
            recover_from: RecoverFrom::LatestCheckpoint,
            dedup_window_max: limits::DEDUP_WINDOW_MAX_DEFAULT,
            dedup_window_bytes_max: limits::DEDUP_WINDOW_BYTES_MAX_DEFAULT,
            generated_id_window_epochs: limits::GENERATED_ID_WINDOW_EPOCHS_DEFAULT,
            request_bytes_max: limits::REQUEST_BYTES_MAX_DEFAULT,
            outbox: None,
            serial_hints: SerialHints::DEFAULT,
            early_replies: false,
            history_retention: None,
            history_base: None,
            lease: Some(LeaseConfig::default()),
            cluster: None,
        }
    }

    /// These settings with the partitions spread over nodes as `placement` says, and the
    /// ordered fallback (`Fallback::Ordered`), the contended path that works across nodes: the
    /// serial fallback lends every partition to the driver, which only works in one process.
    pub fn cluster(mut self, placement: ClusterPlacement) -> Self {
        self.cluster = Some(placement);
        self.fallback = Fallback::Ordered;
        self
    }

    /// The default settings on an embedded store (redb) in `dir` (created if missing): what
    /// survives a restart is whatever was acknowledged before it.
    pub fn durable(dir: impl AsRef<Path>) -> Result<Self, StorageError> {
        Ok(Self::with_storage(Arc::new(EmbeddedStorage::open(dir)?)))
    }

    /// [`RuntimeConfig::durable`], keeping `retention` of history: a bounded retention's
    /// history base goes in the subdirectory [`HISTORY_BASE_DIR`] of `dir`, where
    /// `History::open_dir` finds it.
    pub fn durable_with_history(
        dir: impl AsRef<Path>,
        retention: Retention,
    ) -> Result<Self, StorageError> {
        let mut config = Self::durable(dir.as_ref())?;
        if retention.is_bounded() {
            let base = EmbeddedStorage::open(dir.as_ref().join(HISTORY_BASE_DIR))?;
            config.history_base = Some(Arc::new(base));
        }
        config.history_retention = Some(retention);
        Ok(config)
    }

    /// The default settings on storage that keeps nothing across restarts (tests, benchmarks
    /// of the pipeline without the disk).
    pub fn in_memory() -> Self {
        Self::with_storage(Arc::new(MemoryStorage::new()))
    }
}
