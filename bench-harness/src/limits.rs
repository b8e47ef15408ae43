//! The harness's tunable bounds, in one place. Units come last in each name.

/// An upper bound of the checkouts per second any system reaches in a marketplace run on one
/// machine (the fastest, the one-thread `serial` baseline, runs about 100,000 at small scale).
/// The initial stock is sized from it so that no product can run out within a run.
pub const MARKET_CHECKOUTS_PER_S_MAX: u64 = 1_000_000;

/// The most units of one product a checkout takes (its items are distinct products, 1–10 units
/// each).
pub const MARKET_UNITS_PER_CHECKOUT_MAX: u64 = 10;

const _: () = assert!(
    MARKET_CHECKOUTS_PER_S_MAX * MARKET_UNITS_PER_CHECKOUT_MAX * 86_400 * 365 < i64::MAX as u64,
    "a year-long run's stock must fit in a stock row's i64"
);

/// How long a `--nodes` run waits for a started node to answer `/ready` (its join, and for the
/// first node its recovery from the store), in seconds.
pub const NODE_READY_WAIT_S: u64 = 60;

/// The lease of the nodes' shared store in a `--nodes` run: a killed sequencer is replaced at
/// most this long after its last renewal, so it bounds the failover time measured, in
/// milliseconds.
pub const NODE_LEASE_TTL_MS: u64 = 2_000;

/// How long after `--kill-node-at` the killed node is started again, in milliseconds: after the
/// lease has moved, so that the restart measures a rejoin, not a race for the lease.
pub const KILLED_NODE_RESTART_AFTER_MS: u64 = 3_000;

const _: () = assert!(
    KILLED_NODE_RESTART_AFTER_MS > NODE_LEASE_TTL_MS,
    "the killed node restarts after its lease ran out"
);

/// How long a `--nodes` client keeps resubmitting one request (same id, node after node) while
/// no node acknowledges it, in seconds; then it counts as an error.
pub const NODE_RETRY_DEADLINE_S: u64 = 30;

/// The pause after every node refused a request in turn (an election under way), before the
/// next round of resubmissions, in milliseconds.
pub const NODE_RETRY_PAUSE_MS: u64 = 20;

/// The longest pause between two rounds of resubmissions of one request: the pause doubles
/// after each round in which every node refused it, up to this, so a failover's waiting
/// clients do not take the CPU its recovery needs. In milliseconds.
pub const NODE_RETRY_PAUSE_MAX_MS: u64 = 640;

const _: () = assert!(
    NODE_RETRY_PAUSE_MS >= 1 && NODE_RETRY_PAUSE_MAX_MS >= NODE_RETRY_PAUSE_MS,
    "the resubmission pause grows from its first length to its longest"
);
const _: () = assert!(
    NODE_RETRY_PAUSE_MAX_MS * 4 <= NODE_RETRY_DEADLINE_S * 1000,
    "a client keeps resubmitting several times at the longest pause before it gives up"
);

const _: () = assert!(
    NODE_RETRY_DEADLINE_S * 1000 > 2 * NODE_LEASE_TTL_MS,
    "a client outlasts a failover"
);
