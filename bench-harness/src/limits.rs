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
