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
