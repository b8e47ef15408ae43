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

/// Default fewest requests an epoch must hold before it may close early, on a quiet queue,
/// instead of at `epoch_duration` (`RuntimeConfig::epoch_quiet_close_txns`). Enough that the
/// per-epoch fixed costs (one message per partition per phase, one log record, one reply batch)
/// stay a small share of the epoch's work; below it an epoch waits for its timer as before.
pub const EPOCH_QUIET_CLOSE_TXNS_DEFAULT: usize = 256;

/// Default fewest requests an epoch must hold before it may close because it holds half of
/// the requests outstanding (`RuntimeConfig::epoch_split_txns`): the same floor as the quiet
/// close, for the same per-epoch fixed costs.
pub const EPOCH_SPLIT_TXNS_DEFAULT: usize = EPOCH_QUIET_CLOSE_TXNS_DEFAULT;

/// An epoch splits (`RuntimeConfig::epoch_split_txns`) only while the sequencer's last turn
/// took at most this many `epoch_duration`s. Past that the clients' round trip is a small share
/// of the cycle, so a split gains little and costs a per-epoch overhead and queueing latency:
/// the marketplace's 17 ms turns gained nothing from it and its p99 rose by a fifth, while
/// YCSB-T's 1–2 ms turns gained 9–12 % (Zipf 0.99) and 2–5 % (uniform), and transfer's
/// neither gained nor lost beyond noise. In epoch durations.
pub const EPOCH_SPLIT_TURNS_MAX: u32 = 4;

/// How many times the sequencer yields to the tasks of its worker, finding the submission
/// queue empty each time, before it takes the queue for quiet and closes the epoch early. A
/// yield costs a scheduler round trip (about a microsecond), so this bounds the spinning per
/// epoch; the timer is no alternative, its resolution is a millisecond. In yields.
pub const EPOCH_QUIET_YIELDS: usize = 8;

/// Longest event chain (number of waves) one transaction may take within an epoch. A chain
/// that is still emitting after this many steps is aborted, so a cycle of events cannot spin.
pub const CHAIN_WAVES_MAX: usize = 64;

/// Transactions of the serial pass whose outcomes are handed to the reply stage together: their
/// replies leave while the pass runs the rest (one reply batch per this many; smaller lets
/// clients come back sooner, at one channel send and wake-up per batch), in transactions.
pub const SERIAL_PASS_SETTLE_TXNS: usize = 64;
const _: () = assert!(SERIAL_PASS_SETTLE_TXNS >= 1 && SERIAL_PASS_SETTLE_TXNS <= EPOCH_TXNS_MAX);

/// Requests that may wait in the submission queue before `submit` applies backpressure.
pub const SUBMIT_QUEUE_MAX: usize = 1 << 16;

/// Places the submission queue's two lists keep once emptied: a burst that filled them to
/// `SUBMIT_QUEUE_MAX` gives the rest of its memory back, a steady stream reallocates nothing.
pub const SUBMIT_QUEUE_KEPT_CAPACITY: usize = 4_096;
const _: () = assert!(SUBMIT_QUEUE_KEPT_CAPACITY <= SUBMIT_QUEUE_MAX);

/// Epochs executed but not yet durable; the sequencer waits when the log falls this far behind.
pub const EPOCHS_IN_FLIGHT_MAX: usize = 8;

/// Default number of epochs between two incremental checkpoints.
pub const CHECKPOINT_EVERY_EPOCHS_DEFAULT: u64 = 1_000;

/// Default `RuntimeConfig::checkpoint_rest_factor`: after a checkpoint that took T to write,
/// the next waits at least this many times T after it completed. Under transfer (2 M rows,
/// nearly all dirty) a write takes 6-7 s and fell due every ~8 s, so the checkpoint thread was
/// busy all the time (~35 % of the process's CPU); 2 holds it to about a third of the time.
pub const CHECKPOINT_REST_FACTOR_DEFAULT: u32 = 2;

/// Default `RuntimeConfig::checkpoint_nice`: how far the checkpoint thread lowers its own CPU
/// priority (Linux nice steps above the process's, at most [`CHECKPOINT_NICE_MAX`]) on a store
/// whose checkpoints have their own writer. At 10 its weight is about a tenth of a normal
/// thread's when the cores are contended, so a checkpoint (mostly redb's merge, ~25 s under the
/// marketplace benchmark on two cores) gives the epoch workers the CPU they want and uses what
/// they leave, slowed but never starved.
pub const CHECKPOINT_NICE_DEFAULT: u8 = 10;

/// The largest `RuntimeConfig::checkpoint_nice`: Linux's nice values go up to 19.
pub const CHECKPOINT_NICE_MAX: u8 = 19;
const _: () = assert!(CHECKPOINT_NICE_DEFAULT <= CHECKPOINT_NICE_MAX);

/// Default number of idempotent requests whose outcome is remembered (oldest forgotten first).
pub const DEDUP_WINDOW_MAX_DEFAULT: usize = 1_000_000;

/// Default bound on the bytes of outcomes the dedup window remembers, in each of its two parts
/// (ids chosen by clients, ids generated by `Client`); past it the oldest are forgotten first.
pub const DEDUP_WINDOW_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

/// Default number of epochs the outcome of a request with a generated id is remembered after
/// the epoch it settled in, so a caller whose submission failed with an unknown outcome can
/// resubmit it by id. An epoch lasts at least `EPOCH_DURATION_US_DEFAULT` unless it fills up, so
/// this is at least a quarter second of traffic; a checkpoint carries the generated ids of at
/// most this many epochs, one row per epoch and 64 KiB.
pub const GENERATED_ID_WINDOW_EPOCHS_DEFAULT: u64 = 256;

/// Largest value of one checkpoint row holding generated ids of one epoch, in bytes: an epoch's
/// ids are cut into chunks of this size.
pub const DEDUP_GROUP_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Default largest encoded size of one submitted event, in bytes; a larger one is refused
/// before it reaches the log, so one oversized request cannot stall everyone's epoch.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// Hottest keys each table of each partition remembers for conflict attribution
/// (`Runtime::conflict_stats`): the keys whose rows made the most transactions lose, the
/// least-counted one giving way to a new key, so memory stays bounded however many keys
/// conflict. In keys.
pub const CONFLICT_HOT_KEYS_MAX: usize = 8;

/// Checkpoint rows written to storage per call, so no single storage write grows without bound.
pub const CHECKPOINT_CHUNK_ROWS_MAX: usize = 4_096;

/// Most epochs of log records one step of the truncation after a checkpoint removes; each step
/// holds the log appender's turn, handed over fairly, so an epoch's append waits for one step
/// at most. Removing a long log in one write held the log's writer for as long as it took (in
/// `txn/storage/benches/checkpoint_write.rs`, 432 ms for 5,000 epochs of 60 KB records). In
/// epochs.
pub const CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP: u64 = 64;
const _: () = assert!(CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP >= 1);

/// Most rows of a checkpoint each partition copies between two epochs (one probe and one clone
/// each, about a microsecond at most), so a large checkpoint (the first after a bulk load holds
/// every row) holds up each epoch by a few milliseconds instead of stopping the pipeline until
/// all its rows are copied; a row changed before its turn is copied by the change. A partition
/// copies less when its checkpoint is smaller (`CHECKPOINT_COPY_SPREAD_EPOCHS`). In rows.
pub const CHECKPOINT_COPY_ROWS_PER_EPOCH: usize = 4_096;

/// Fewest rows of a checkpoint a partition copies between two epochs while it has any left, so
/// a small checkpoint is done in one step or a few. In rows.
pub const CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN: usize = 256;

/// Epochs a partition spreads the copy of a checkpoint over: each step copies this fraction of
/// the rows the checkpoint listed (within the two bounds above), not the most it may. The cost
/// of a copy step is paid by the epoch it follows on the same two cores, so copying a few
/// million changed rows at the most every partition may (each of 32 partitions 4,096 rows a
/// step) doubled the cost of every epoch until the copy was done. A quarter of the default
/// checkpoint interval at most, so a checkpoint is copied long before the next falls due. In
/// epochs.
pub const CHECKPOINT_COPY_SPREAD_EPOCHS: usize = 200;
const _: () = assert!(
    CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN >= 1
        && CHECKPOINT_COPY_ROWS_PER_EPOCH_MIN <= CHECKPOINT_COPY_ROWS_PER_EPOCH,
    "a copy step copies at least one row, and its floor is below its ceiling"
);
const _: () = assert!(
    CHECKPOINT_COPY_SPREAD_EPOCHS >= 1
        && 4 * CHECKPOINT_COPY_SPREAD_EPOCHS as u64 <= CHECKPOINT_EVERY_EPOCHS_DEFAULT,
    "a checkpoint is copied within a quarter of the default interval"
);

/// Checkpoint copy steps a cluster's sequencer takes after each epoch while a checkpoint is
/// being copied (one process takes one): a cluster's epochs last several times longer, so a
/// copy of `CHECKPOINT_COPY_SPREAD_EPOCHS` steps at one an epoch took seconds (2.6-2.8 s at
/// ~10 ms an epoch), and each second of it is a second more of log a take-over replays.
pub const CLUSTER_CHECKPOINT_STEPS_PER_EPOCH: usize = 4;
const _: () = assert!(CLUSTER_CHECKPOINT_STEPS_PER_EPOCH >= 1);

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
/// buffered writes well inside memory. Measured without encoding or allocating
/// (`context/encoded_len.rs`).
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

/// Handler steps that take longer than this (wall-clock) are reported with a `tracing`
/// warning: one partition's wave of steps in the parallel pass, or one transaction's chain in
/// the serial pass, is timed as a whole (a clock read per step cost ~2 % of the marketplace's
/// CPU). It is only a warning: wall-clock time never decides an outcome (see
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
    #[inline]
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

/// Replayed epochs whose outcomes wait to be settled into the dedup window beside the replay
/// (each holds its requests and results), so settling overlaps the next epochs' runs. In epochs.
pub const RECOVERY_EPOCHS_SETTLE_AHEAD_MAX: usize = 16;

/// Most distinct purposes an application may declare (handlers and `allow` together): a
/// handler's purposes are one bit mask, so a personal-data read checks them in one `AND`.
pub const PURPOSES_MAX: usize = 64;

/// Rows `governance::forget_dir` writes per `write_checkpoint_rows` call when it rewrites a
/// store's state, so one storage transaction stays small.
pub const FORGET_ROWS_PER_WRITE_MAX: usize = 4_096;

/// Checkpoint rows recovery sends a partition in one `Job::Load` message (the partitions are
/// owned by their actors, so loading is a message too; a chunk amortizes it). In rows.
pub const RECOVERY_LOAD_CHUNK_ROWS_MAX: usize = 4_096;

/// Chunks of checkpoint rows read but not yet sent, and chunks sent but not yet loaded by
/// their partition: each is bounded by this (the reader and the sender wait beyond it), so
/// recovery holds at most twice this many chunks in memory. In chunks.
pub const RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX: usize = 64;

/// Row bytes (keys and values) recovery gathers from chunks of distinct partitions before it
/// sends them to their nodes, one batch per node: a round trip per round instead of per chunk.
/// Below the link's payload limit, with room for the encoding. In bytes.
pub const RECOVERY_LOAD_ROUND_BYTES_MAX: usize = 4 << 20;

/// Default length of the store lease a runtime takes (`LeaseConfig::ttl`): after the holder
/// dies, a standby waits at most this long before it can take over, so it bounds failover.
pub const LEASE_TTL_MS_DEFAULT: u64 = 5_000;

/// Renewals of the lease per lease length (`LeaseConfig::renew_every` = ttl / this), so one or
/// two lost renewals in a row do not yet lose the lease.
pub const LEASE_RENEWALS_PER_TTL: u32 = 3;

/// Shortest wait between two attempts to take a lease someone else holds, while a runtime waits
/// for it (`LeaseConfig::wait_for_lease`), so a lease about to end is not polled in a busy loop.
pub const LEASE_RETRY_WAIT_MS_MIN: u64 = 20;

/// Epochs at the end of the log whose changed rows a cluster's recovery hands to the
/// partitions a take-over kept (`PartitionHost::re_place`), besides those it hands every
/// other partition. A kept partition may be behind the log: the runtime before logs an epoch
/// before running it and may stop in the middle of it, so its owner can miss the last logged
/// epoch; these bring it to the log's end. At least 2 (the epoch stopped in, and one in reserve
/// for an owner that missed the commit of the one before). In epochs.
pub const TAKE_OVER_LOG_TAIL_EPOCHS: u64 = 4;

const _: () = assert!(TAKE_OVER_LOG_TAIL_EPOCHS >= 2);
const _: () = assert!(RECOVERY_EPOCHS_READ_AHEAD_MAX >= 1);
const _: () = assert!(RECOVERY_EPOCHS_SETTLE_AHEAD_MAX >= 1);
const _: () = assert!(RECOVERY_LOAD_CHUNK_ROWS_MAX >= 1 && RECOVERY_LOAD_CHUNKS_IN_FLIGHT_MAX >= 1);
const _: () = assert!(RECOVERY_LOAD_ROUND_BYTES_MAX * 2 <= PHASE_MESSAGE_BYTES_MAX);
const _: () = assert!(EPOCH_DURATION_US_DEFAULT <= EPOCH_DURATION_US_MAX);
const _: () = assert!(EPOCH_QUIET_CLOSE_TXNS_DEFAULT <= EPOCH_TXNS_MAX_DEFAULT);
const _: () = assert!(EPOCH_QUIET_YIELDS >= 1);
const _: () = assert!(CHECKPOINT_COPY_ROWS_PER_EPOCH >= 1);
const _: () = assert!(EPOCH_TXNS_MAX_DEFAULT <= EPOCH_TXNS_MAX);
const _: () = assert!(REPLY_SLOTS_POOLED_MAX >= 1);
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
const _: () = assert!(
    REQUEST_BYTES_MAX_DEFAULT * 16 <= txn_storage::limits::EPOCH_BATCH_BYTES_MAX,
    "an epoch of many maximal requests must still fit in one log record"
);
const _: () = assert!(GENERATED_ID_WINDOW_EPOCHS_DEFAULT <= CHECKPOINT_EVERY_EPOCHS_DEFAULT);
const _: () = assert!(
    DEDUP_GROUP_CHUNK_BYTES_MAX + 4 * 1024 <= txn_storage::limits::CHECKPOINT_VALUE_BYTES_MAX,
    "a chunk may overshoot by one small entry and must still fit in a checkpoint row"
);
const _: () = assert!(
    CONFLICT_HOT_KEYS_MAX >= 1,
    "conflict attribution names at least the hottest key"
);

/// Largest encoded phase message between nodes (`wire.rs`: a `PhaseBatch` or a `PhaseReply`),
/// in bytes. One link request or reply carries one, so this is the link's payload limit; a
/// phase whose work for one node is larger must be split by the driver (e.g. checkpoint rows in
/// chunks).
pub const PHASE_MESSAGE_BYTES_MAX: usize = actor_runtime::limits::CLUSTER_LINK_PAYLOAD_BYTES_MAX;

/// Default most row bytes (keys and values, plus `wire::WIRE_ROW_OVERHEAD_BYTES` each) one
/// node's answer to a checkpoint copy step carries (`ClusterPlacement::checkpoint_answer_bytes_max`).
/// A partition that has copied all its rows of a checkpoint hands them to its node, which sends
/// them in shares of at most this size over the next steps, so no answer exceeds the link's
/// payload limit however many rows the checkpoint holds (the first one after a take-over holds
/// every row). Half the message limit: the other half is room for the encoding of the answer
/// itself (a dozen bytes per partition). In bytes.
pub const CHECKPOINT_ANSWER_BYTES_MAX_DEFAULT: usize = PHASE_MESSAGE_BYTES_MAX / 2;

const _: () = assert!(
    2 * CHECKPOINT_ANSWER_BYTES_MAX_DEFAULT <= PHASE_MESSAGE_BYTES_MAX,
    "a node's share of checkpoint rows leaves half a phase message for the rest of the answer"
);
const _: () = assert!(
    CHECKPOINT_ANSWER_BYTES_MAX_DEFAULT
        >= 16
            * (txn_storage::limits::CHECKPOINT_KEY_BYTES_MAX
                + txn_storage::limits::CHECKPOINT_VALUE_BYTES_MAX),
    "a share holds many maximal checkpoint rows, so a checkpoint takes few steps"
);

/// Default longest wait for another node's answer to one phase batch (`ClusterPlacement`); a
/// node silent for longer fails the epoch with an error naming it, never a hang. In
/// milliseconds.
pub const CLUSTER_PHASE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

const _: () = assert!(
    CLUSTER_PHASE_TIMEOUT_MS_DEFAULT >= 10 * EPOCH_DURATION_US_MAX / 1_000,
    "a phase batch may take as long as several epochs before its node counts as failed"
);

const _: () = assert!(
    REQUEST_BYTES_MAX_DEFAULT * 8 <= PHASE_MESSAGE_BYTES_MAX,
    "one node's wave batch must hold several maximal requests"
);

const _: () = assert!(
    PURPOSES_MAX <= u64::BITS as usize,
    "a handler's purposes are one u64 bit mask"
);
const _: () = assert!(
    LEASE_RENEWALS_PER_TTL >= 2,
    "a single late renewal must not lose the lease"
);
const _: () = assert!(
    LEASE_RETRY_WAIT_MS_MIN * 10 <= LEASE_TTL_MS_DEFAULT,
    "waiting for a lease polls several times per lease length"
);

/// Reply slots a runtime's client handles keep for reuse once their callers have their
/// outcomes (`runtime/reply_slot.rs`): enough for every request usually in flight alone, so
/// submitting allocates no reply channel; each slot has room for one outcome. Count.
pub const REPLY_SLOTS_POOLED_MAX: usize = 4_096;

/// Largest encoded delta record the history base of a bounded retention writes (one chunk of a
/// checkpoint's changed rows, `runtime/retention.rs`): a checkpoint's rows are split into
/// records of at most this size, one per epoch key of the checkpoint interval. In bytes.
pub const HISTORY_BASE_RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;

const _: () = assert!(
    HISTORY_BASE_RECORD_BYTES_MAX <= txn_storage::limits::EPOCH_BATCH_BYTES_MAX,
    "a delta record is appended like an epoch record"
);
const _: () = assert!(
    HISTORY_BASE_RECORD_BYTES_MAX
        >= 4 * (txn_storage::limits::CHECKPOINT_KEY_BYTES_MAX
            + txn_storage::limits::CHECKPOINT_VALUE_BYTES_MAX),
    "a delta record holds several maximal checkpoint rows"
);

/// Emptied row accesses a table of a partition keeps from one epoch for the rows the next
/// epochs touch (`table.rs`, `SpareAccesses`): only accesses whose lists hold heap memory
/// (a delta list, or writers or readers past their inline room) are kept, so a row's delta
/// list is not allocated anew and regrown every epoch. In accesses.
pub const SPARE_ACCESSES_MAX: usize = 4_096;

/// The deltas (by capacity) the emptied row accesses a table of a partition keeps may hold
/// together (`table.rs`, `SpareAccesses`): 2 MiB at 32 bytes a delta. A hot row's long list is
/// kept while it fits, so it is not regrown every epoch either. In deltas.
pub const SPARE_DELTAS_MAX: usize = 64 * 1024;

const _: () = assert!(
    SPARE_DELTAS_MAX >= 8 * SPARE_ACCESSES_MAX,
    "every spare access can keep a list of 8 deltas (a dashboard entry takes 7 on one row)"
);
