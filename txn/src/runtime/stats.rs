//! The runtime's counters ([`RuntimeStats`]) and their by-name snapshots ([`StatsSnapshot`]).

use crate::cluster_dispatch::{NodeTraffic, TrafficCounters};
use crate::epoch::EpochStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a running runtime.
#[derive(Default)]
pub struct RuntimeStats {
    pub epochs: AtomicU64,
    pub committed: AtomicU64,
    pub user_aborted: AtomicU64,
    pub conflicts: AtomicU64,
    pub fallback: AtomicU64,
    /// Transactions a serial hint sent straight to the serial pass (counted in `fallback` too).
    pub serial_hinted: AtomicU64,
    /// Times a kind of request went from not hinted to hinted or back (`predict.rs`): a kind
    /// that keeps flipping runs whole in the parallel pass every other time.
    pub serial_hint_flips: AtomicU64,
    /// Checkpoints handed to storage / completed; `started > completed` means one is being
    /// written right now.
    pub checkpoints_started: AtomicU64,
    pub checkpoints_completed: AtomicU64,
    /// Durable log writes, the epoch records they held, their encoded bytes, and the time
    /// spent writing them (including the fsync).
    pub log_appends: AtomicU64,
    pub log_epochs: AtomicU64,
    pub log_bytes: AtomicU64,
    pub log_append_nanos: AtomicU64,
    /// Rows and wall time of the last completed checkpoint.
    pub last_checkpoint_rows: AtomicU64,
    pub last_checkpoint_micros: AtomicU64,
    /// Between-epoch steps copying checkpoint rows (`Job::CheckpointStep` rounds): a checkpoint
    /// larger than `limits::CHECKPOINT_COPY_ROWS_PER_EPOCH` per partition takes several.
    pub checkpoint_copy_steps: AtomicU64,
    /// Wall time spent in each epoch phase, summed over epochs: execute (all waves), decide,
    /// commit, serial pass.
    pub execute_nanos: AtomicU64,
    pub decide_nanos: AtomicU64,
    pub commit_nanos: AtomicU64,
    pub serial_pass_nanos: AtomicU64,
    /// Epochs whose serial pass borrowed the partitions (`Job::Lend`, `Job::Return`), and the
    /// wall time of those lend rounds (included in `serial_pass_nanos`).
    pub serial_lends: AtomicU64,
    pub serial_lend_nanos: AtomicU64,
    /// The sequencer's time between two epochs, summed: waiting for an epoch's first request
    /// with nothing queued (`gather_idle_nanos`), then collecting the rest of the epoch until
    /// it closes (`gather_fill_nanos`); every partition is idle meanwhile. And its whole turns
    /// (`turn_nanos`: from an epoch closing to the next gather, execution and its checkpoint
    /// step included).
    pub gather_idle_nanos: AtomicU64,
    pub gather_fill_nanos: AtomicU64,
    /// The part of `gather_fill_nanos` after the last submission of the epoch arrived: waiting
    /// for `epoch_duration` to run out with nothing coming.
    pub gather_tail_nanos: AtomicU64,
    pub turn_nanos: AtomicU64,
    /// Epochs closed early because the submission queue went quiet
    /// (`RuntimeConfig::epoch_quiet_close_txns`) rather than by time or size.
    pub quiet_closes: AtomicU64,
    /// Epochs closed because they held half of the requests outstanding
    /// (`RuntimeConfig::epoch_split_txns`).
    pub split_closes: AtomicU64,
    /// Transaction replies the sequencer has handed to the reply stage whose epoch the reply
    /// stage has not yet seen durable: a gauge, read by the epoch split.
    pub replies_waiting: std::sync::atomic::AtomicUsize,
    /// Reply batches (one per epoch) and how long they waited, after the epoch had run, for the
    /// epoch to be durable: the replies' wait for the fsync.
    pub reply_batches: AtomicU64,
    pub reply_durable_wait_nanos: AtomicU64,
    /// The store lease's term this runtime holds (0: none; see `RuntimeStats::lease_status`).
    pub lease_term: AtomicU64,
    /// The term of the holder that took the store over (0: none; `u64::MAX`: the lease lapsed).
    pub fenced_by_term: AtomicU64,
    /// Phase traffic with each other node of a cluster runtime (unset in one process).
    node_traffic: std::sync::OnceLock<Arc<TrafficCounters>>,
    /// The slowest sequencer turn, log append and checkpoint chunk since the peaks were last
    /// taken (`RuntimeStats::take_peaks`): where a worst-case latency came from.
    pub peaks: parking_lot::Mutex<LatencyPeaks>,
    /// The checkpoint thread's part of the peaks (`LatencyPeaks::slowest_checkpoint_chunk_nanos`,
    /// `slowest_checkpoint_nanos`), kept apart in atomics: that thread may run at a lower
    /// priority (`RuntimeConfig::checkpoint_nice`) and must never hold the lock the log
    /// appender takes for its own peak.
    checkpoint_chunk_peak_nanos: AtomicU64,
    checkpoint_peak_nanos: AtomicU64,
}

/// The worst moments of the pipeline since the peaks were last taken, each with what coincided
/// with it, so a latency spike seen by clients can be traced to its cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyPeaks {
    pub slowest_turn: EpochPeak,
    pub slowest_append: LogPeak,
    /// The longest a checkpoint held the store's writer for one chunk of rows (encoding
    /// excluded), and the longest whole checkpoint, from hand-over to completion.
    pub slowest_checkpoint_chunk_nanos: u64,
    pub slowest_checkpoint_nanos: u64,
}

/// One sequencer turn: everything it did for one epoch, from the end of gathering the epoch's
/// requests to the start of gathering the next. Nothing new is sequenced during a turn, so a
/// long one delays every request that arrives meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochPeak {
    pub epoch: u64,
    /// The epoch's logged timestamp (wall clock), ms since the Unix epoch.
    pub timestamp_ms: u64,
    pub txns: u64,
    pub turn_nanos: u64,
    /// Waiting to hand the epoch's record to the durability thread, which was
    /// `limits::EPOCHS_IN_FLIGHT_MAX` epochs behind.
    pub log_queue_nanos: u64,
    /// The epoch's phases: execute, decide, commit, serial pass.
    pub phase_nanos: [u64; 4],
    /// Taking the changed rows from the partitions for a checkpoint after the epoch (0: none
    /// fell due), and how many table chunks that gave.
    pub checkpoint_take_nanos: u64,
    pub checkpoint_take_chunks: u64,
    /// Whether a checkpoint was queued or being written when the turn began.
    pub checkpoint_writing: bool,
}

/// One durable log append (group commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPeak {
    /// From the oldest epoch of the group being queued to the group being durable: the log's
    /// share of that epoch's latency.
    pub wait_nanos: u64,
    /// Encoding, writing and syncing the group.
    pub append_nanos: u64,
    pub epochs: u64,
    pub bytes: u64,
    /// Whether a checkpoint was being written at the same time.
    pub checkpoint_writing: bool,
}

impl RuntimeStats {
    /// The peaks since the last call (or the start), resetting them: a caller takes them once
    /// before a measured stretch and once after it.
    pub fn take_peaks(&self) -> LatencyPeaks {
        let mut peaks = std::mem::take(&mut *self.peaks.lock());
        peaks.slowest_checkpoint_chunk_nanos =
            self.checkpoint_chunk_peak_nanos.swap(0, Ordering::Relaxed);
        peaks.slowest_checkpoint_nanos = self.checkpoint_peak_nanos.swap(0, Ordering::Relaxed);
        peaks
    }

    /// Keeps `turn` if it is the slowest so far (one lock per epoch).
    pub(super) fn note_turn(&self, turn: &EpochPeak) {
        let mut peaks = self.peaks.lock();
        if turn.turn_nanos > peaks.slowest_turn.turn_nanos {
            peaks.slowest_turn = *turn;
        }
    }

    /// Keeps `append` if its epoch waited the longest so far (one lock per log append).
    pub(super) fn note_append(&self, append: &LogPeak) {
        let mut peaks = self.peaks.lock();
        if append.wait_nanos > peaks.slowest_append.wait_nanos {
            peaks.slowest_append = *append;
        }
    }

    /// Keeps the longest chunk write and the longest checkpoint (no lock: see
    /// `checkpoint_chunk_peak_nanos`).
    pub(super) fn note_checkpoint(&self, chunk_nanos: u64, checkpoint_nanos: u64) {
        self.checkpoint_chunk_peak_nanos
            .fetch_max(chunk_nanos, Ordering::Relaxed);
        self.checkpoint_peak_nanos
            .fetch_max(checkpoint_nanos, Ordering::Relaxed);
    }
}

impl RuntimeStats {
    pub(super) fn add(&self, s: &EpochStats) {
        self.epochs.fetch_add(1, Ordering::Relaxed);
        self.committed
            .fetch_add(s.n_committed as u64, Ordering::Relaxed);
        self.user_aborted
            .fetch_add(s.n_user_aborted as u64, Ordering::Relaxed);
        self.conflicts
            .fetch_add(s.n_conflicts as u64, Ordering::Relaxed);
        self.fallback
            .fetch_add(s.n_fallback as u64, Ordering::Relaxed);
        self.serial_hinted
            .fetch_add(s.n_serial_hinted as u64, Ordering::Relaxed);
        let [execute, decide, commit, serial_pass] = s.phase_nanos;
        self.execute_nanos.fetch_add(execute, Ordering::Relaxed);
        self.decide_nanos.fetch_add(decide, Ordering::Relaxed);
        self.commit_nanos.fetch_add(commit, Ordering::Relaxed);
        self.serial_pass_nanos
            .fetch_add(serial_pass, Ordering::Relaxed);
        if let Some(lend) = s.lend_nanos {
            self.serial_lends.fetch_add(1, Ordering::Relaxed);
            self.serial_lend_nanos.fetch_add(lend, Ordering::Relaxed);
        }
    }
}

/// Every [`RuntimeStats`] counter at one moment, by name ([`RuntimeStats::snapshot`]). Each
/// counter is read on its own, so counters bumped together may be caught between two bumps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub epochs: u64,
    pub committed: u64,
    pub user_aborted: u64,
    /// Conflict losers of the parallel pass.
    pub conflicts: u64,
    /// Runs in the serial pass (conflict losers and hinted transactions).
    pub fallback: u64,
    pub serial_hinted: u64,
    pub serial_hint_flips: u64,
    pub checkpoints_started: u64,
    pub checkpoints_completed: u64,
    pub log_appends: u64,
    pub log_epochs: u64,
    pub log_bytes: u64,
    pub log_append_nanos: u64,
    /// Levels, not counts: the last completed checkpoint's rows and wall time.
    pub last_checkpoint_rows: u64,
    pub last_checkpoint_micros: u64,
    pub checkpoint_copy_steps: u64,
    /// Wall time in each epoch phase, summed over epochs.
    pub execute_nanos: u64,
    pub decide_nanos: u64,
    pub commit_nanos: u64,
    pub serial_pass_nanos: u64,
    /// Epochs whose serial pass borrowed the partitions, and the wall time of those lend rounds.
    pub serial_lends: u64,
    pub serial_lend_nanos: u64,
    /// The sequencer's gathering and turn time, and the replies' wait for durability (see
    /// [`RuntimeStats::gather_idle_nanos`] and [`RuntimeStats::reply_durable_wait_nanos`]).
    pub gather_idle_nanos: u64,
    pub gather_fill_nanos: u64,
    pub gather_tail_nanos: u64,
    pub turn_nanos: u64,
    pub quiet_closes: u64,
    pub split_closes: u64,
    pub reply_batches: u64,
    pub reply_durable_wait_nanos: u64,
    /// Levels: the lease's term held, and the term that fenced this runtime (0: none).
    pub lease_term: u64,
    pub fenced_by_term: u64,
    /// A cluster runtime's phase traffic with the other nodes, summed over them: encoded
    /// batches sent and replies received, in bytes, and batches exchanged (per node:
    /// [`RuntimeStats::node_traffic`]).
    pub node_bytes_sent: u64,
    pub node_bytes_received: u64,
    pub node_batches: u64,
}

impl StatsSnapshot {
    /// What the counters grew by since `earlier` (an older snapshot of the same runtime); the
    /// last-checkpoint levels are this snapshot's.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            epochs: self.epochs - earlier.epochs,
            committed: self.committed - earlier.committed,
            user_aborted: self.user_aborted - earlier.user_aborted,
            conflicts: self.conflicts - earlier.conflicts,
            fallback: self.fallback - earlier.fallback,
            serial_hinted: self.serial_hinted - earlier.serial_hinted,
            serial_hint_flips: self.serial_hint_flips - earlier.serial_hint_flips,
            checkpoints_started: self.checkpoints_started - earlier.checkpoints_started,
            checkpoints_completed: self.checkpoints_completed - earlier.checkpoints_completed,
            log_appends: self.log_appends - earlier.log_appends,
            log_epochs: self.log_epochs - earlier.log_epochs,
            log_bytes: self.log_bytes - earlier.log_bytes,
            log_append_nanos: self.log_append_nanos - earlier.log_append_nanos,
            last_checkpoint_rows: self.last_checkpoint_rows,
            last_checkpoint_micros: self.last_checkpoint_micros,
            checkpoint_copy_steps: self.checkpoint_copy_steps - earlier.checkpoint_copy_steps,
            execute_nanos: self.execute_nanos - earlier.execute_nanos,
            decide_nanos: self.decide_nanos - earlier.decide_nanos,
            commit_nanos: self.commit_nanos - earlier.commit_nanos,
            serial_pass_nanos: self.serial_pass_nanos - earlier.serial_pass_nanos,
            serial_lends: self.serial_lends - earlier.serial_lends,
            serial_lend_nanos: self.serial_lend_nanos - earlier.serial_lend_nanos,
            gather_idle_nanos: self.gather_idle_nanos - earlier.gather_idle_nanos,
            gather_fill_nanos: self.gather_fill_nanos - earlier.gather_fill_nanos,
            gather_tail_nanos: self.gather_tail_nanos - earlier.gather_tail_nanos,
            turn_nanos: self.turn_nanos - earlier.turn_nanos,
            quiet_closes: self.quiet_closes - earlier.quiet_closes,
            split_closes: self.split_closes - earlier.split_closes,
            reply_batches: self.reply_batches - earlier.reply_batches,
            reply_durable_wait_nanos: self.reply_durable_wait_nanos
                - earlier.reply_durable_wait_nanos,
            lease_term: self.lease_term,
            fenced_by_term: self.fenced_by_term,
            node_bytes_sent: self.node_bytes_sent - earlier.node_bytes_sent,
            node_bytes_received: self.node_bytes_received - earlier.node_bytes_received,
            node_batches: self.node_batches - earlier.node_batches,
        }
    }
}

impl RuntimeStats {
    /// Every counter now, by name.
    pub fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            epochs: read(&self.epochs),
            committed: read(&self.committed),
            user_aborted: read(&self.user_aborted),
            conflicts: read(&self.conflicts),
            fallback: read(&self.fallback),
            serial_hinted: read(&self.serial_hinted),
            serial_hint_flips: read(&self.serial_hint_flips),
            checkpoints_started: read(&self.checkpoints_started),
            checkpoints_completed: read(&self.checkpoints_completed),
            log_appends: read(&self.log_appends),
            log_epochs: read(&self.log_epochs),
            log_bytes: read(&self.log_bytes),
            log_append_nanos: read(&self.log_append_nanos),
            last_checkpoint_rows: read(&self.last_checkpoint_rows),
            last_checkpoint_micros: read(&self.last_checkpoint_micros),
            checkpoint_copy_steps: read(&self.checkpoint_copy_steps),
            execute_nanos: read(&self.execute_nanos),
            decide_nanos: read(&self.decide_nanos),
            commit_nanos: read(&self.commit_nanos),
            serial_pass_nanos: read(&self.serial_pass_nanos),
            serial_lends: read(&self.serial_lends),
            serial_lend_nanos: read(&self.serial_lend_nanos),
            gather_idle_nanos: read(&self.gather_idle_nanos),
            gather_fill_nanos: read(&self.gather_fill_nanos),
            gather_tail_nanos: read(&self.gather_tail_nanos),
            turn_nanos: read(&self.turn_nanos),
            quiet_closes: read(&self.quiet_closes),
            split_closes: read(&self.split_closes),
            reply_batches: read(&self.reply_batches),
            reply_durable_wait_nanos: read(&self.reply_durable_wait_nanos),
            lease_term: read(&self.lease_term),
            fenced_by_term: read(&self.fenced_by_term),
            ..StatsSnapshot::default()
        }
        .with_node_traffic(&self.node_traffic())
    }

    /// The phase traffic with each other node of a cluster runtime, by node (empty in one
    /// process).
    pub fn node_traffic(&self) -> Vec<NodeTraffic> {
        self.node_traffic
            .get()
            .map(|t| t.read())
            .unwrap_or_default()
    }

    pub(super) fn set_node_traffic(&self, traffic: Arc<TrafficCounters>) {
        let _ = self.node_traffic.set(traffic);
    }
}

impl StatsSnapshot {
    fn with_node_traffic(mut self, nodes: &[NodeTraffic]) -> Self {
        for node in nodes {
            self.node_bytes_sent += node.bytes_sent;
            self.node_bytes_received += node.bytes_received;
            self.node_batches += node.batches;
        }
        self
    }
}

/// The conflict losses of the parallel pass by table, since the runtime started
/// ([`Runtime::conflict_stats`](super::Runtime::conflict_stats)). Gathered from the tables
/// themselves, which count only when a conflict happens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictStats {
    /// By `service.table`; tables that never caused a loss are left out.
    pub by_table: std::collections::BTreeMap<String, TableConflicts>,
}

/// The conflict losses one table caused, over all its partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableConflicts {
    /// Transactions its rows made lose. A transaction losing on several rows of one partition
    /// counts once there (for the first row the decide phase walks); one losing in several
    /// partitions counts in each, so the sum over tables can exceed `StatsSnapshot::conflicts`.
    pub losers: u64,
    /// The hottest keys (their `Debug` text) with the losses they caused, most first, at most
    /// `limits::CONFLICT_HOT_KEYS_MAX`. Each partition keeps its hottest keys, a new key
    /// replacing the least-counted one, so a count is exact since its key was last admitted (a
    /// lower bound) and a key that was hot only for a while may stay listed.
    pub hot_keys: Vec<(String, u64)>,
}

impl ConflictStats {
    /// The losses counted since `earlier` (an older snapshot of the same runtime); the hot keys
    /// are this snapshot's, since the runtime started.
    pub fn since(&self, earlier: &ConflictStats) -> ConflictStats {
        let by_table = self
            .by_table
            .iter()
            .map(|(name, t)| {
                let before = earlier.by_table.get(name).map_or(0, |e| e.losers);
                let losers = t.losers - before;
                (
                    name.clone(),
                    TableConflicts {
                        losers,
                        hot_keys: t.hot_keys.clone(),
                    },
                )
            })
            .filter(|(_, t)| t.losers > 0)
            .collect();
        ConflictStats { by_table }
    }

    /// Adds one partition's tally of table `name`, keeping the hottest keys over partitions.
    pub(crate) fn add(&mut self, name: String, losers: u64, hot_keys: &[(String, u64)]) {
        if losers == 0 {
            return;
        }
        let table = self.by_table.entry(name).or_default();
        table.losers += losers;
        table.hot_keys.extend(hot_keys.iter().cloned());
        table
            .hot_keys
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        table
            .hot_keys
            .truncate(crate::limits::CONFLICT_HOT_KEYS_MAX);
    }
}
