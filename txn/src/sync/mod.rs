//! Concurrency primitives of the epoch runtime, small enough to be model-checked.
//!
//! | primitive | protocol step (`ARCHITECTURE.md`, `docs/loom.md`) | replaces |
//! |-----------|---------------------------------------------------|----------|
//! | [`PhaseBarrier`] | the barrier after every phase (execute waves, decide, commit): the driver waits for one result per partition and takes them in slot order | one `oneshot` per partition per phase |
//! | [`AtomicSeqSet`] | decide: partitions OR their conflict sets into one abort set | collecting and merging one `SeqSet` per partition |
//! | [`DurableWatermark`] | log → reply: replies of epoch `e` leave only once `e` is durable | `watch::channel(Durable)` |
//!
//! None of them depends on tokio: the async waits work with any executor (they only use
//! [`std::task::Waker`]), and every primitive also has a blocking wait for plain threads.
//!
//! All atomics, locks and condition variables come from the private `shim` module, which
//! swaps in [loom](https://docs.rs/loom)'s model-checked versions under `cfg(loom)`. The
//! `loom-tests` crate compiles *these very files* (through `#[path]`), so the loom models
//! exercise the production code, not a copy. Rules for code in this module:
//!
//! - import `Arc`, `Mutex`, `Condvar` and atomics only through `shim` (never `std::sync`
//!   directly), so loom sees every synchronising operation (the one exception is an immutable
//!   `std::sync::Arc<str>` message, which synchronises nothing);
//! - depend on nothing else in the crate (the module must compile on its own inside
//!   `loom-tests`);
//! - state the contract and the memory-ordering argument in the item docs, and add a loom
//!   model to `loom-tests/tests/` for every behaviour a caller relies on (see `docs/loom.md`).

mod barrier;
mod seq_set;
mod shim;
mod watermark;

pub use barrier::{Abandoned, BarrierWait, Depositor, PhaseBarrier};
pub use seq_set::AtomicSeqSet;
pub use watermark::{DurabilityFailed, DurableWait, DurableWatermark};

#[cfg(all(test, not(loom)))]
mod test_util;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    // Goal: every handle can cross threads and its futures can run in a spawned (`Send`) task.
    #[test]
    fn handles_and_futures_are_send() {
        send_sync::<PhaseBarrier<Vec<u8>>>();
        send_sync::<Depositor<Vec<u8>>>();
        send::<BarrierWait<Vec<u8>>>();
        send_sync::<AtomicSeqSet>();
        send_sync::<DurableWatermark>();
        send::<DurableWait<'static>>();
    }
}
