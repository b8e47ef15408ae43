//! Internals opened up for the criterion micro-benchmarks in `bench-harness/benches/`.
//!
//! **Not a stable API; for the benches and the allocation-budget tests only.** Everything here
//! but `alloc_count` (the tests' counting allocator) is a thin, inlined delegation to the
//! production code (`TableState` in `table.rs`, the epoch record of the durability thread in
//! `runtime.rs`), so the benchmarks time the real hot paths rather than copies of them.
//! Nothing in `txn` itself uses this module.

use crate::app::{Key, Row, ServiceRef};
use crate::constraint::Constraints;
use crate::delta::{DeltaOp, DeltaWithReader, Field};
use crate::ids::Seq;
use crate::runtime::EpochRecordRef;
use crate::table::{AnyTable, TableState};
use serde::Serialize;
use std::sync::Arc;

pub use crate::envelope::Sequenced;

/// The dense set of an epoch's sequence numbers (`bitset::SeqSet`: abort and conflict sets),
/// wrapped so that this module adds nothing to the type's own public surface.
#[derive(Clone, Debug)]
pub struct SeqSet(crate::bitset::SeqSet);

impl SeqSet {
    /// An empty set able to hold `0..len`.
    #[inline]
    pub fn with_len(len: usize) -> Self {
        SeqSet(crate::bitset::SeqSet::with_len(len))
    }

    /// Adds `seq`; returns whether it was newly added.
    #[inline]
    pub fn insert(&mut self, seq: Seq) -> bool {
        self.0.insert(seq)
    }

    /// Whether `seq` is in the set.
    #[inline]
    pub fn contains(&self, seq: Seq) -> bool {
        self.0.contains(seq)
    }

    /// Adds every member of `other` (same capacity).
    #[inline]
    pub fn union_with(&mut self, other: &SeqSet) {
        self.0.union_with(&other.0)
    }

    /// Number of members.
    pub fn count(&self) -> usize {
        self.0.iter().count()
    }

    /// The capacity given at construction.
    pub fn capacity(&self) -> usize {
        self.0.len()
    }
}

/// One table of one partition (`TableState`), with no constraints or indexes, placed entirely
/// in partition 0 (placement is not consulted by the decide and commit phases).
pub struct BenchTable<K, V>(TableState<K, V>);

impl<K: Key, V: Row> BenchTable<K, V> {
    /// An empty hash table (`ordered: false`, as `AppBuilder::table` makes) or ordered table.
    /// Dirty-row tracking is on, as in a runtime that takes checkpoints (the default).
    pub fn new(ordered: bool) -> Self {
        BenchTable(TableState::new(
            "bench".into(),
            "rows".into(),
            ordered,
            Arc::new(Constraints::default()),
            Arc::new(|_: &K, _: u32| 0),
        ))
    }

    /// `TableState::get`: a read by transaction `seq` (recorded for conflict detection).
    #[inline]
    pub fn get(&mut self, seq: Seq, key: &K) -> Option<V> {
        self.0.get(seq, key)
    }

    /// `TableState::add` as `TxnCtx::add_bounded` calls it on a table without constraints:
    /// transaction `seq` adds `delta` to `field` of row `key`, which must stay at least `min`.
    /// Whether the delta was recorded (false: it failed on the transaction's own view).
    #[inline]
    pub fn add(&mut self, seq: Seq, key: &K, field: Field<V>, delta: i64, min: i64) -> bool {
        let op = DeltaOp {
            seq,
            access: field.accessor(),
            delta,
            min,
        };
        self.0.add(key, op, field.reader()).is_ok()
    }

    /// `TableState::add_all` as `TxnCtx::add_all` calls it on a table without constraints:
    /// transaction `seq` adds each `(field, delta)` to row `key`, unbounded. Whether the deltas
    /// were recorded or applied (false: one failed).
    pub fn add_all(&mut self, seq: Seq, key: &K, deltas: &[(Field<V>, i64)]) -> bool {
        let ops: Vec<DeltaWithReader<V>> = deltas
            .iter()
            .map(|(field, delta)| {
                let op = DeltaOp {
                    seq,
                    access: field.accessor(),
                    delta: *delta,
                    min: i64::MIN,
                };
                (op, field.reader())
            })
            .collect();
        self.0.add_all(key, &ops).is_ok()
    }

    /// `TableState::scan` (an ordered table): transaction `seq` reads the rows of `range`, at
    /// most `limit` of them, its own writes merged.
    pub fn scan(
        &mut self,
        seq: Seq,
        range: (std::ops::Bound<K>, std::ops::Bound<K>),
        limit: Option<usize>,
    ) -> Vec<(K, V)> {
        self.0.scan(seq, range, limit)
    }

    /// The hash of `key` that the committed rows' index uses (`dense_rows::hash_of`), for
    /// [`BenchTable::prefetch_row`].
    #[inline]
    pub fn row_hash(key: &K) -> u64 {
        crate::dense_rows::hash_of(key)
    }

    /// `TableState::prefetch_row`: starts loading the index bucket (or, `entry`, the entry) of
    /// the row whose key hashes to `hash`.
    #[inline]
    pub fn prefetch_row(&self, hash: u64, entry: bool) {
        self.0.prefetch_row(hash, entry)
    }

    /// `TableState::write`: a buffered write (`Some`) or delete (`None`) by transaction `seq`.
    #[inline]
    pub fn write(&mut self, seq: Seq, key: K, value: Option<V>) {
        self.0.write(seq, key, value)
    }

    /// `AnyTable::decide`: ORs into `conflicts` every transaction losing a conflict.
    #[inline]
    pub fn decide(&self, user_aborted: &SeqSet, conflicts: &mut SeqSet) {
        AnyTable::decide(&self.0, &user_aborted.0, &mut conflicts.0)
    }

    /// `AnyTable::commit`: applies the writes of transactions not in `aborted`, clears the
    /// epoch's accesses.
    #[inline]
    pub fn commit(&mut self, aborted: &SeqSet) {
        AnyTable::commit(&mut self.0, &aborted.0)
    }

    /// `AnyTable::set_solo`: one transaction runs alone (the serial pass), changing the rows
    /// in place.
    pub fn set_solo(&mut self, solo: bool) {
        AnyTable::set_solo(&mut self.0, solo)
    }

    /// `AnyTable::commit_all`: keeps (`keep`) or undoes the changes of the transaction that
    /// ran alone.
    pub fn commit_all(&mut self, keep: bool) {
        AnyTable::commit_all(&mut self.0, keep)
    }

    /// `AnyTable::has_access`.
    pub fn has_access(&self) -> bool {
        AnyTable::has_access(&self.0)
    }

    /// `AnyTable::set_track_dirty` (off: as a runtime with `checkpoint_every_epochs == 0`).
    pub fn set_track_dirty(&mut self, track: bool) {
        AnyTable::set_track_dirty(&mut self.0, track)
    }

    /// `AnyTable::take_dirty`, with the deferred encoding dropped unrun: empties the set of rows
    /// changed since the last checkpoint, keeping its capacity, as a checkpoint does.
    pub fn clear_dirty(&mut self) {
        drop(AnyTable::take_dirty(&mut self.0, Vec::new()));
    }

    /// How many times the committed rows' hash index was probed so far: counted in debug
    /// builds only (`None` in release builds, and for an ordered table).
    pub fn row_probes(&self) -> Option<u64> {
        self.0.rows.probes()
    }

    /// Number of committed rows.
    pub fn len(&self) -> usize {
        self.0.rows.len()
    }

    /// Whether the table has no committed rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request as the sequencer logs it: to `partition` of `service` (what `Client::submit_to`
/// builds), with no idempotency key.
pub fn request<E>(service: ServiceRef, partition: u32, event: E) -> Sequenced<E> {
    Sequenced {
        target: service.gp(partition),
        event,
        id: None,
        retries: 0,
    }
}

/// Encodes an epoch's log record exactly as the durability thread does (the runtime's
/// `EpochRecordRef`, in rmp-serde's bytes), appending to `buf`, for an epoch run with the default
/// `Fallback::Serial` and no serial hints. The storage backend then wraps it in the
/// checksummed envelope (`txn::storage::record::encode`).
pub fn encode_epoch_record<E: Serialize>(
    epoch: u64,
    timestamp_ms: u64,
    requests: &[Sequenced<E>],
    buf: &mut Vec<u8>,
) -> Result<(), rmp_serde::encode::Error> {
    let record = EpochRecordRef {
        epoch,
        timestamp_ms,
        requests,
        fallback: crate::envelope::Fallback::Serial,
        serial: &[],
        erase: &[],
    };
    record.encode(buf)
}

/// Heap allocations counted per thread, for the allocation-budget tests of `txn` and
/// `services` (a test binary installs [`CountingPerThread`](alloc_count::CountingPerThread) as
/// its `#[global_allocator]`; one copy here instead of one per test file).
pub mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    thread_local! {
        // Const-initialized and without destructor: reading it never allocates.
        static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        /// Whether this thread is a worker of a runtime whose allocations `SERVER_ALLOCATIONS`
        /// counts (tests run side by side in one binary, so a global count needs the threads).
        static COUNTED_SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
    }

    /// Allocations made on the threads marked by [`count_this_thread`], all together.
    static SERVER_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    /// Counts one allocation of the calling thread.
    fn count_allocation() {
        THREAD_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        if COUNTED_SERVER_THREAD.with(Cell::get) {
            SERVER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The system allocator, counting each thread's allocations in that thread.
    pub struct CountingPerThread;

    // SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for CountingPerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count_allocation();
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count_allocation();
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count_allocation();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Allocations the calling thread has made so far.
    pub fn thread_allocations() -> u64 {
        THREAD_ALLOCATIONS.with(Cell::get)
    }

    /// Counts the calling thread's allocations into [`server_allocations`] from now on (for a
    /// runtime's `on_thread_start`).
    pub fn count_this_thread() {
        COUNTED_SERVER_THREAD.with(|c| c.set(true));
    }

    /// Allocations made so far on every thread marked by [`count_this_thread`].
    pub fn server_allocations() -> u64 {
        SERVER_ALLOCATIONS.load(Ordering::Relaxed)
    }
}
