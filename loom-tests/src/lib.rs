//! Loom models of the concurrency primitives vmsdb's runtime is built on.
//!
//! [`sync`] is `txn/src/sync/` itself, compiled here through `#[path]`: the models check the
//! production code, with its `shim` module swapping in loom's atomics, mutexes and condition
//! variables under `cfg(loom)`. The models live in `tests/`; [`harness`] lets each of them run
//! both ways:
//!
//! - `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
//!   explores the interleavings with loom (see `docs/loom.md`);
//! - plain `cargo test` runs the same scenarios on real threads, many times over, with a
//!   watchdog that turns a lost wake-up into a failure instead of a hang.

#[path = "../../txn/src/sync/mod.rs"]
pub mod sync;

pub mod harness;
