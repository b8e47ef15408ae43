//! Every tunable limit and default of the transaction layer, in one place.
//!
//! Units come last in each name. Every queue, batch and loop in `txn` is bounded by one of
//! these; the const assertions at the bottom state how they relate.

/// Default time an epoch stays open collecting requests, measured from its first request.
pub const EPOCH_DURATION_US_DEFAULT: u64 = 1_000;

/// Upper bound for the configurable epoch duration: p99 latency must stay in milliseconds.
pub const EPOCH_DURATION_US_MAX: u64 = 10_000;

/// Default largest number of transactions sequenced into one epoch.
pub const EPOCH_TXNS_MAX_DEFAULT: usize = 20_000;

/// Hard cap on transactions per epoch: sequence numbers within an epoch are `u32`, and the
/// epoch log record must stay a sane size.
pub const EPOCH_TXNS_MAX: usize = 1 << 20;

/// Longest event chain (number of waves) one transaction may take within an epoch. A chain
/// that is still emitting after this many steps is aborted, so a cycle of events cannot spin.
pub const CHAIN_WAVES_MAX: usize = 64;

/// Requests that may wait in the submission queue before `submit` applies backpressure.
pub const SUBMIT_QUEUE_MAX: usize = 1 << 16;

/// Epochs executed but not yet durable; the sequencer waits when the log falls this far behind.
pub const EPOCHS_IN_FLIGHT_MAX: usize = 8;

/// Default number of epochs between two incremental checkpoints.
pub const CHECKPOINT_EVERY_EPOCHS_DEFAULT: u64 = 1_000;

/// Default number of idempotent requests whose outcome is remembered (oldest forgotten first).
pub const DEDUP_WINDOW_MAX_DEFAULT: usize = 1_000_000;

/// Checkpoint rows written to storage per call, so no single storage write grows without bound.
pub const CHECKPOINT_CHUNK_ROWS_MAX: usize = 4_096;

/// A conflict-aborted transaction is retried at most this many times in a row before the
/// client gets `AbortReason::RetriesExhausted`. With the serial fallback on, this is never
/// reached, because the fallback commits or user-aborts every transaction it runs.
pub const CONFLICT_RETRIES_MAX: u32 = 1_000;

/// Default most steps one transaction may run in total, across all its waves: handler steps,
/// foreign-key probes and unique-index claims. `CHAIN_WAVES_MAX` bounds how long a chain may
/// be; this bounds how wide it may grow, so a handler that emits two events per step (which
/// doubles the steps every wave) is aborted after about ten waves instead of exhausting memory.
/// A thousand steps is far beyond the services' transactions, whose widest wave is a broadcast
/// to one service's partitions. Counted by the epoch driver between waves, so it never depends
/// on which partition finished first.
pub const TXN_STEPS_MAX_DEFAULT: u64 = 1_024;

/// Default most events (`TxnCtx::emit`, `broadcast`, `emit_to_partition`) one transaction may
/// emit in total. Checked at each emit, so a handler that emits in a loop is stopped at the
/// emit that crosses it, before the queued events grow further. Every emitted event becomes a
/// step, so a wide chain meets `TXN_STEPS_MAX_DEFAULT` first; this one bounds what a single
/// wave may queue before the driver counts its steps (at most this many events per partition
/// a transaction runs in, per wave).
pub const TXN_EMITTED_EVENTS_MAX_DEFAULT: u64 = 4_096;

/// Default most bytes one transaction may write: the rmp-serde size of every key and row it
/// puts (and key it deletes), event it emits and outbox message it queues. Sixteen MiB is
/// thousands of times a business transaction's writes, yet it keeps one careless handler's
/// buffered writes well inside memory. Measured with a counting writer that allocates nothing.
pub const TXN_BYTES_WRITTEN_MAX_DEFAULT: u64 = 16 << 20;

/// Default most work units one transaction may use. A unit is one deterministic operation of
/// its handlers: a `get`, `put`, `delete` or `emit`, a `scan` or `lookup` call, and each row
/// a scan or lookup returns. Work, not wall-clock time, is what aborts a transaction: a time
/// limit would make the outcome depend on the machine's speed and load, and replay would then
/// decide differently from the original run. A unit is one map lookup or row copy, so a
/// million is far more than a business transaction does, yet bounds a runaway loop of reads
/// or a scan of a huge range (which never copies more rows than the units left); slow
/// handlers are reported by `SLOW_STEP_WARN_US` instead.
pub const TXN_WORK_MAX_DEFAULT: u64 = 1_000_000;

/// A handler step that takes longer than this (wall-clock) is reported with a `tracing`
/// warning. It is only a warning: wall-clock time never decides an outcome (see
/// `TXN_WORK_MAX_DEFAULT`). Microseconds.
pub const SLOW_STEP_WARN_US: u64 = 10_000;

/// Per-transaction limits: a transaction that goes past one is aborted with
/// `AbortReason::LimitExceeded` naming it, and no other transaction is affected. Part of the
/// application definition (`AppBuilder::txn_limits`), not of the runtime configuration,
/// because they decide outcomes: replay must apply the same limits as the original run, and
/// every executor of the application (the runtime, its replay, `SerialExecutor`) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// Most steps in total (see [`TXN_STEPS_MAX_DEFAULT`]).
    pub steps_max: u64,
    /// Most events emitted in total (see [`TXN_EMITTED_EVENTS_MAX_DEFAULT`]).
    pub emitted_events_max: u64,
    /// Most bytes written, in rmp-serde encoding (see [`TXN_BYTES_WRITTEN_MAX_DEFAULT`]).
    pub bytes_written_max: u64,
    /// Most work units (see [`TXN_WORK_MAX_DEFAULT`]).
    pub work_max: u64,
}

impl TxnLimits {
    /// The most a transaction may use of `limit`.
    pub fn max(&self, limit: crate::error::LimitKind) -> u64 {
        use crate::error::LimitKind;
        match limit {
            LimitKind::Steps => self.steps_max,
            LimitKind::EmittedEvents => self.emitted_events_max,
            LimitKind::BytesWritten => self.bytes_written_max,
            LimitKind::Work => self.work_max,
        }
    }
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            steps_max: TXN_STEPS_MAX_DEFAULT,
            emitted_events_max: TXN_EMITTED_EVENTS_MAX_DEFAULT,
            bytes_written_max: TXN_BYTES_WRITTEN_MAX_DEFAULT,
            work_max: TXN_WORK_MAX_DEFAULT,
        }
    }
}

/// Decoded log records recovery reads ahead of replay, so recovery holds this many epochs in
/// memory instead of the whole log tail.
pub const RECOVERY_EPOCHS_READ_AHEAD_MAX: usize = 64;

const _: () = assert!(RECOVERY_EPOCHS_READ_AHEAD_MAX >= 1);
const _: () = assert!(EPOCH_DURATION_US_DEFAULT <= EPOCH_DURATION_US_MAX);
const _: () = assert!(EPOCH_TXNS_MAX_DEFAULT <= EPOCH_TXNS_MAX);
const _: () = assert!(EPOCH_TXNS_MAX <= u32::MAX as usize);
const _: () = assert!(
    EPOCHS_IN_FLIGHT_MAX >= 2,
    "the log write must overlap execution"
);
const _: () = assert!(
    CHAIN_WAVES_MAX as u64 <= TXN_STEPS_MAX_DEFAULT,
    "a chain of the longest allowed length must fit in the default steps"
);
const _: () = assert!(
    TXN_STEPS_MAX_DEFAULT <= TXN_EMITTED_EVENTS_MAX_DEFAULT,
    "a wide chain must meet the steps limit, counted between waves, before the events limit"
);
const _: () = assert!(TXN_EMITTED_EVENTS_MAX_DEFAULT <= TXN_WORK_MAX_DEFAULT);
