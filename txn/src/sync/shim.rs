//! The one place the `sync` primitives get their atomics, locks and condition variables from.
//!
//! Under `cfg(loom)` these are loom's instrumented types, so a loom model explores every
//! interleaving (and, for atomics, every value the C++11 memory model allows a load to return);
//! otherwise they are the `std` types. loom's `Mutex`/`Condvar` mirror `std`'s API (including
//! `LockResult`), which is why this uses `std::sync` rather than `parking_lot`: the primitives
//! compile unchanged against both.

#[cfg(loom)]
pub(super) use loom::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};
#[cfg(not(loom))]
pub(super) use std::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use std::sync::PoisonError;

/// Locks `mutex`, ignoring poisoning.
///
/// Sound here because no critical section in this module runs foreign code (wakers are woken,
/// and values dropped, only after the guard is released) or can panic half-way through a state
/// change, so a poisoned lock still guards consistent state.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Blocks on `condvar`, releasing `guard` while asleep; ignores poisoning like [`lock`].
/// Callers re-check their condition in a loop (wake-ups may be spurious).
pub(super) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}
