//! One table of one partition: committed rows plus the current epoch's buffered accesses.
//!
//! During an epoch every transaction reads the rows as committed at the end of the previous
//! epoch (`rows` is never touched until commit) and buffers its writes in `access`, keyed by
//! row. Each access entry remembers which transactions (by `Seq`) read and wrote the row, so the
//! deterministic conflict check of the decide phase is one pass over the touched rows:
//! **the lowest non-user-aborted writer of a row reserves it; every other writer and every later
//! reader of that row conflicts** (Aria's write-after-write and read-after-write rules).
//! Key-range scans are remembered as ranges and conflict with any lower reserved write inside
//! them, so phantoms are caught too.

use crate::bitset::SeqSet;
use crate::constraint::{ConstraintStep, Constraints, OnDelete, ParentDeleted, Placement};
use crate::contract::RowHint;
use crate::coordination::TableSummary;
use crate::delta::{DeltaError, DeltaOp, DeltaWithReader, decide_deltas, in_seq_order};
use crate::dense_rows::{DenseRows, ProbeCount};
use crate::ids::{GlobalPartition, Seq};
use crate::index::{IndexOps, IndexState};
use crate::limits::{
    CHECKPOINT_CHUNK_ROWS_MAX, CHECKPOINT_COPY_SPREAD_EPOCHS, SPARE_ACCESSES_MAX, SPARE_DELTAS_MAX,
};
use crate::row_key::{CheckpointRow, DeferredRows};
use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;
use std::any::Any;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// The two dirty bits of `Slot::meta`. One of them (`TableState::dirty_bit`) is set while the
/// row is in `TableState::dirty` (changed since the last checkpoint), so a row changed many times
/// is listed once. When a checkpoint begins, the list is handed to the copy and the tables
/// switch to the other bit: the old one then marks the rows the checkpoint has not copied yet.
const DIRTY_BITS: u32 = 0b11 << 30;

/// The dirty bit a table starts with.
const FIRST_DIRTY_BIT: u32 = 1 << 31;

/// The bits of `Slot::meta` that locate the row's access of the current epoch: 0 for none,
/// `i + 1` for `TableState::accesses[i]`.
const ACCESS_BITS: u32 = !DIRTY_BITS;

/// The position an access remembers for a row with no dense entry to reach: a hashed row
/// missing when the epoch first accessed it, or a row of an ordered table (whose access is
/// found by key in `TableState::unslotted`, never in its slot).
const NO_POSITION: u32 = u32::MAX;

/// A committed row, and in the same map slot where its access of the current epoch is and
/// whether it changed since the last checkpoint: every phase finds all three with one probe of
/// the rows, instead of probing a map of accesses and a set of dirty keys as well.
pub(crate) struct Slot<V> {
    pub value: V,
    meta: u32,
}

impl<V> Slot<V> {
    /// The index of the row's access in `TableState::accesses`, if it has one this epoch.
    fn access(&self) -> Option<usize> {
        match self.meta & ACCESS_BITS {
            0 => None,
            i => Some(i as usize - 1),
        }
    }

    fn set_access(&mut self, index: usize) {
        assert!(
            index < ACCESS_BITS as usize,
            "more than 2^30 row accesses in one epoch"
        );
        self.meta = (self.meta & DIRTY_BITS) | (index as u32 + 1);
    }

    fn clear_access(&mut self) {
        self.meta &= DIRTY_BITS;
    }

    /// Marks the row dirty with `bit`; whether it was not already (then its key must be listed).
    fn mark_dirty(&mut self, bit: u32) -> bool {
        let newly = self.meta & bit == 0;
        self.meta |= bit;
        newly
    }

    /// Clears `bit` (a checkpoint's copy bit); whether it was set, i.e. whether the checkpoint
    /// being copied still needs this row's value.
    fn take_copy_bit(&mut self, bit: u32) -> bool {
        let set = self.meta & bit != 0;
        self.meta &= !bit;
        set
    }
}

/// What a change of a committed row owes the checkpoints: list the row as changed since the
/// last one (`dirty`, marked with `bit`) and, while a checkpoint is being copied, first copy
/// the row's old value into `copies` if that checkpoint has not copied it yet (its slot still
/// has `copy_bit`). This copy-on-write is what lets a checkpoint be copied a bounded number of
/// rows per epoch instead of all at once between two epochs.
struct Tracking<'a, K, V> {
    dirty: &'a mut Vec<K>,
    bit: u32,
    /// 0 while no checkpoint is being copied.
    copy_bit: u32,
    copies: Option<&'a mut Vec<(K, V)>>,
}

impl<K: Clone, V> Tracking<'_, K, V> {
    /// Records what `set_occupied` found for the row `key`.
    fn note(&mut self, key: &K, copy: Option<V>, newly_dirty: bool) {
        if let (Some(old), Some(copies)) = (copy, self.copies.as_mut()) {
            copies.push((key.clone(), old));
        }
        if newly_dirty {
            self.dirty.push(key.clone());
        }
    }
}

/// The `Tracking` a committed change owes the checkpoints, from a table's fields (none while
/// dirty tracking is off).
fn tracking_of<'a, K, V>(
    track_dirty: bool,
    dirty: &'a mut Vec<K>,
    bit: u32,
    copying: &'a mut Option<CheckpointCopy<K, V>>,
) -> Option<Tracking<'a, K, V>> {
    let copy_bit = copying.as_ref().map_or(0, |c| c.bit);
    track_dirty.then(|| Tracking {
        dirty,
        bit,
        copy_bit,
        copies: copying.as_mut().map(|c| &mut c.present),
    })
}

/// Committed rows: hashed for point access (stored densely, see `dense_rows`), or ordered when
/// the table is scanned (with the count of its tree's searches, in debug builds).
pub(crate) enum Rows<K, V> {
    Hash(DenseRows<K, Slot<V>>),
    Ordered(BTreeMap<K, Slot<V>>, ProbeCount),
}

/// What changing an occupied slot gave: the old value when it is replaced, a copy of the old
/// value for the checkpoint being copied, and whether the row's key must now be listed dirty.
type SetOccupied<V> = (Option<V>, Option<V>, bool);

/// Sets an occupied `slot` to `value` (`None` deletes, which the caller then does): clears the
/// row's access and, when `tracking` (its dirty bit and copy bit), marks it dirty and copies its
/// old value if the checkpoint being copied still needs it.
fn set_occupied<V: Clone>(
    slot: &mut Slot<V>,
    value: Option<V>,
    tracking: Option<(u32, u32)>,
) -> SetOccupied<V> {
    slot.clear_access();
    let (mut copy, mut newly_dirty) = (None, false);
    if let Some((bit, copy_bit)) = tracking {
        if copy_bit != 0 && slot.take_copy_bit(copy_bit) {
            copy = Some(slot.value.clone());
        }
        newly_dirty = slot.mark_dirty(bit);
    }
    let old = value.map(|v| std::mem::replace(&mut slot.value, v));
    (old, copy, newly_dirty)
}

/// The slot a missing row `key` gets when set to `value` (none for a delete); the key is listed
/// in `dirty` either way, since the checkpoint may hold a deleted row. A missing row has
/// nothing for a checkpoint being copied: it was missing when the copy began, or was copied
/// before it was deleted.
fn vacant_slot<K: Clone, V>(
    key: &K,
    value: Option<V>,
    tracking: Option<&mut Tracking<'_, K, V>>,
) -> Option<Slot<V>> {
    let meta = match tracking {
        Some(t) => {
            t.dirty.push(key.clone());
            t.bit
        }
        None => 0,
    };
    value.map(|value| Slot { value, meta })
}

/// The position `i` of a dense entry as an access remembers it.
fn position_u32(i: usize) -> u32 {
    let position = u32::try_from(i).expect("dense positions fit in u32");
    debug_assert_ne!(position, NO_POSITION);
    position
}

/// Sets the hashed row at position `i` to `v` (`None` deletes) like `Rows::set`, without a
/// probe unless it deletes. Returns the old value and, when a delete moved another row into
/// position `i`, that row's access index: its access must now remember position `i`.
fn set_hashed_at<K: Hash + Eq + Clone, V: Clone>(
    m: &mut DenseRows<K, Slot<V>>,
    i: usize,
    v: Option<V>,
    tracking: Option<Tracking<'_, K, V>>,
) -> (Option<V>, Option<usize>) {
    let bits = tracking.as_ref().map(|t| (t.bit, t.copy_bit));
    let deleting = v.is_none();
    let (key, slot) = m.entry_mut(i);
    let (old, copy, newly_dirty) = set_occupied(slot, v, bits);
    if let Some(mut t) = tracking {
        t.note(key, copy, newly_dirty);
    }
    if !deleting {
        return (old, None);
    }
    let removed = m.remove_at(i).1.value;
    let moved = (i < m.len()).then(|| m.entry(i).1.access()).flatten();
    (Some(removed), moved)
}

impl<K: Ord + Hash + Eq + Clone, V: Clone> Rows<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        self.slot(k).map(|s| &s.value)
    }
    fn slot(&self, k: &K) -> Option<&Slot<V>> {
        match self {
            Rows::Hash(m) => m.get(k),
            Rows::Ordered(m, searches) => {
                searches.add();
                m.get(k)
            }
        }
    }
    fn slot_mut(&mut self, k: &K) -> Option<&mut Slot<V>> {
        match self {
            Rows::Hash(m) => m.get_mut(k),
            Rows::Ordered(m, searches) => {
                searches.add();
                m.get_mut(k)
            }
        }
    }
    /// Hashed row `k`'s slot and its position for `slot_at` (one probe). An ordered row's
    /// access is found by key instead (`TableState::locate`).
    fn locate_slot(&mut self, k: &K) -> Option<(u32, &mut Slot<V>)> {
        match self {
            Rows::Hash(m) => {
                let i = m.position_of(k)?;
                Some((position_u32(i), &mut m.entry_mut(i).1))
            }
            Rows::Ordered(..) => unreachable!("an ordered row's access is found by key"),
        }
    }
    /// Row `k`'s slot, reached through the `position` that `locate_slot` gave for it this epoch
    /// (no probe of a hashed row; an ordered row is searched for).
    fn slot_at(&self, k: &K, position: u32) -> Option<&Slot<V>> {
        match self {
            Rows::Hash(m) => (position != NO_POSITION).then(|| &m.entry(position as usize).1),
            Rows::Ordered(..) => self.slot(k),
        }
    }
    /// Sets row `k` to `v` (`None` deletes) in one probe (deleting a hashed row takes two more:
    /// one drops its index bucket, one re-points the entry moved into its place), clearing its
    /// access and doing what `tracking` asks; returns the old value.
    fn set(&mut self, k: K, v: Option<V>, tracking: Option<Tracking<'_, K, V>>) -> Option<V> {
        match self {
            Rows::Hash(m) => {
                let mut value = Some(v);
                let mut tracking = Some(tracking);
                let found = m.upsert(k, |key| {
                    let mut t = tracking.take().flatten();
                    vacant_slot(key, value.take().flatten(), t.as_mut())
                });
                let (Some(i), Some(v), Some(tracking)) = (found, value, tracking) else {
                    return None;
                };
                let (old, moved) = set_hashed_at(m, i, v, tracking);
                debug_assert!(
                    moved.is_none(),
                    "a delete outside the commit moved a row whose access remembers its position"
                );
                old
            }
            Rows::Ordered(m, searches) => {
                searches.add();
                Self::set_ordered(m.entry(k), v, tracking)
            }
        }
    }
    /// `set` on an ordered table's entry for the row, found by one search.
    fn set_ordered(
        entry: std::collections::btree_map::Entry<'_, K, Slot<V>>,
        v: Option<V>,
        tracking: Option<Tracking<'_, K, V>>,
    ) -> Option<V> {
        use std::collections::btree_map::Entry;
        let bits = tracking.as_ref().map(|t| (t.bit, t.copy_bit));
        match entry {
            Entry::Occupied(mut o) => {
                let (old, copy, newly_dirty) = set_occupied(o.get_mut(), v, bits);
                if let Some(mut t) = tracking {
                    t.note(o.key(), copy, newly_dirty);
                }
                match old {
                    Some(old) => Some(old),
                    None => Some(o.remove().value),
                }
            }
            Entry::Vacant(e) => {
                let mut tracking = tracking;
                if let Some(slot) = vacant_slot(e.key(), v, tracking.as_mut()) {
                    e.insert(slot);
                }
                None
            }
        }
    }
    /// Changes the existing row `k` by `change` in one probe (its slot is changed in place),
    /// clearing its access and doing what `tracking` asks, like `set`; returns the old value,
    /// or `change`'s error with the row left as it was, or `None` if there is no row `k`.
    fn modify<E>(
        &mut self,
        k: &K,
        change: impl FnOnce(&mut V) -> Result<(), E>,
        tracking: Option<Tracking<'_, K, V>>,
    ) -> Option<Result<V, E>> {
        let slot = self.slot_mut(k)?;
        let mut new = slot.value.clone();
        if let Err(error) = change(&mut new) {
            return Some(Err(error));
        }
        let bits = tracking.as_ref().map(|t| (t.bit, t.copy_bit));
        let (old, copy, newly_dirty) = set_occupied(slot, Some(new), bits);
        if let Some(mut t) = tracking {
            t.note(k, copy, newly_dirty);
        }
        Some(Ok(old.expect("a replaced row gives its old value")))
    }
    /// How many times a hashed table's index was probed, or an ordered table's tree searched
    /// (a range counts once), so far (debug builds only).
    pub fn probes(&self) -> Option<u64> {
        match self {
            Rows::Hash(m) => m.probes(),
            Rows::Ordered(_, searches) => searches.get(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Rows::Hash(m) => m.len(),
            Rows::Ordered(m, _) => m.len(),
        }
    }
    /// Every row, in entry order for hash tables and key order for ordered ones.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        match self {
            Rows::Hash(m) => Box::new(m.iter().map(|(k, s)| (k, &s.value))),
            Rows::Ordered(m, _) => Box::new(m.iter().map(|(k, s)| (k, &s.value))),
        }
    }
    /// The rows of an ordered table with keys in `range`, in key order (none for a hash table).
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        match self {
            Rows::Hash(_) => Box::new(std::iter::empty()),
            Rows::Ordered(m, searches) => {
                searches.add();
                Box::new(m.range(range).map(|(k, s)| (k, &s.value)))
            }
        }
    }
    /// Sets every row's meta bits to `meta`: no access of an epoch, and `meta`'s dirty bits.
    fn reset_meta(&mut self, meta: u32) {
        let set = |s: &mut Slot<V>| s.meta = meta;
        match self {
            Rows::Hash(m) => m.slots_mut().for_each(set),
            Rows::Ordered(m, _) => m.values_mut().for_each(set),
        }
    }
    /// Forgets which rows are dirty or still to copy (dirty tracking was turned off).
    fn clear_dirty_bits(&mut self) {
        let clear = |s: &mut Slot<V>| s.meta &= ACCESS_BITS;
        match self {
            Rows::Hash(m) => m.slots_mut().for_each(clear),
            Rows::Ordered(m, _) => m.values_mut().for_each(clear),
        }
    }
}

/// Who touched one row during the current epoch, and the buffered writes.
struct Access<V> {
    /// `(seq, value)`: `None` deletes. At most one entry per seq (a rewrite replaces it).
    writers: SmallVec<[(Seq, Option<V>); 1]>,
    /// Transactions that read the committed row (not their own write).
    readers: SmallVec<[Seq; 2]>,
    /// Whether `writers` is in ascending seq order (see `own_write`).
    writers_ascending: bool,
    /// Merge-able deltas of transactions that have no buffered write of this row (a
    /// transaction's delta on its own write changes the write instead).
    deltas: Vec<DeltaOp<V>>,
    /// Whether `deltas` is in ascending seq order.
    deltas_ascending: bool,
}

impl<V> Access<V> {
    fn new() -> Self {
        Access {
            writers: SmallVec::new(),
            readers: SmallVec::new(),
            writers_ascending: true,
            deltas: Vec::new(),
            deltas_ascending: true,
        }
    }

    /// Whether transaction `seq` may have deltas here (a cheap test, exact in the common case).
    fn may_have_deltas(&self, seq: Seq) -> bool {
        match self.deltas.last() {
            None => false,
            Some(last) => !(last.seq < seq && self.deltas_ascending),
        }
    }

    /// Applies transaction `seq`'s deltas on this row, in its order, to its view `value`.
    /// Wrapping: a view that overflows belongs to a transaction the decide phase rejects.
    fn apply_own_deltas(&self, seq: Seq, value: &mut Option<V>) {
        if let Some(row) = value.as_mut().filter(|_| self.may_have_deltas(seq)) {
            for d in self.own_deltas(seq) {
                let field = (d.access)(row);
                *field = field.wrapping_add(d.delta);
            }
        }
    }

    /// Transaction `seq`'s deltas on this row, in its order. In ascending seq order they are
    /// found by binary search, so a hot row's many deltas of one epoch do not make each
    /// further delta of a transaction cost time linear in them.
    fn own_deltas(&self, seq: Seq) -> impl Iterator<Item = &DeltaOp<V>> {
        let from = if self.deltas_ascending {
            self.deltas.partition_point(|d| d.seq < seq)
        } else {
            0
        };
        self.deltas[from..].iter().filter(move |d| d.seq == seq)
    }

    /// Adds a delta of transaction `seq`, which has no buffered write of this row.
    fn push_delta(&mut self, op: DeltaOp<V>) {
        if self.deltas.last().is_some_and(|last| last.seq > op.seq) {
            self.deltas_ascending = false;
        }
        self.deltas.push(op);
    }

    /// Transaction `seq`'s buffered write of this row, if it has one. Steps of a wave run in
    /// seq order, so a row's writers are usually appended in ascending seq; then a `seq` above
    /// the last writer's — the common case — has no write here, known without scanning. A hot
    /// row with thousands of writers in one epoch would otherwise cost time quadratic in them.
    fn own_write(&mut self, seq: Seq) -> Option<&mut (Seq, Option<V>)> {
        match self.writers.last() {
            None => None,
            Some((last, _)) if *last < seq && self.writers_ascending => None,
            Some(_) => self.writers.iter_mut().rev().find(|(s, _)| *s == seq),
        }
    }

    /// Adds `seq`'s first write of this row.
    fn push_writer(&mut self, seq: Seq, value: Option<V>) {
        if self.writers.last().is_some_and(|(last, _)| *last > seq) {
            self.writers_ascending = false;
        }
        self.writers.push((seq, value));
    }
}

/// Accesses of past epochs, emptied, whose lists kept their heap memory, for the rows later
/// epochs touch: so a row's delta list is not allocated anew and regrown by doubling every
/// epoch. Bounded in accesses (`SPARE_ACCESSES_MAX`) and in the delta capacity they hold
/// together (`SPARE_DELTAS_MAX`).
struct SpareAccesses<V> {
    accesses: Vec<Access<V>>,
    /// The capacity of the delta lists of `accesses`, summed.
    n_deltas: usize,
}

impl<V> SpareAccesses<V> {
    fn new() -> Self {
        SpareAccesses {
            accesses: Vec::new(),
            n_deltas: 0,
        }
    }

    /// An access for a row first touched this epoch: a spare one when there is one.
    fn take(&mut self) -> Access<V> {
        match self.accesses.pop() {
            Some(access) => {
                self.n_deltas -= access.deltas.capacity();
                access
            }
            None => Access::new(),
        }
    }

    /// Keeps the settled `access`, emptied, if its lists hold heap memory (a delta list, or
    /// writers or readers past their inline room) and it fits in the bounds.
    fn recycle(&mut self, mut access: Access<V>) {
        let deltas = access.deltas.capacity();
        let holds_heap = deltas > 0 || access.writers.spilled() || access.readers.spilled();
        let fits =
            self.accesses.len() < SPARE_ACCESSES_MAX && self.n_deltas + deltas <= SPARE_DELTAS_MAX;
        if !holds_heap || !fits {
            return;
        }
        access.writers.clear();
        access.readers.clear();
        access.deltas.clear();
        access.writers_ascending = true;
        access.deltas_ascending = true;
        self.n_deltas += deltas;
        self.accesses.push(access);
    }
}

/// The conflict losses a table caused since it was made; touched only when a conflict
/// happens, so attribution costs nothing on a conflict-free epoch.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ConflictTally {
    /// Transactions this table's rows made lose. A transaction that loses on several rows of
    /// a partition counts once there, for the first of them the decide phase walks; one that
    /// loses in several partitions counts once in each.
    pub losers: u64,
    /// The rows that made the most transactions lose, as the key's `Debug` text and that count,
    /// at most `limits::CONFLICT_HOT_KEYS_MAX`: a new key replaces the least-counted one, so a
    /// key that keeps conflicting stays and counts are exact since the key was admitted (lower
    /// bounds), while keys that conflict once each come and go.
    pub hot_keys: Vec<(String, u64)>,
}

impl ConflictTally {
    /// Records that row `key` made `lost` transactions lose.
    fn record(&mut self, key: &dyn std::fmt::Debug, lost: u64) {
        self.losers += lost;
        let text = format!("{key:?}");
        if let Some(hot) = self.hot_keys.iter_mut().find(|(k, _)| *k == text) {
            hot.1 += lost;
        } else if self.hot_keys.len() < crate::limits::CONFLICT_HOT_KEYS_MAX {
            self.hot_keys.push((text, lost));
        } else if let Some(coldest) = self.hot_keys.iter_mut().min_by_key(|(_, n)| *n) {
            *coldest = (text, lost);
        }
    }
}

/// A table of one partition, typed.
pub(crate) struct TableState<K, V> {
    pub service: String,
    pub name: String,
    pub constraints: Arc<Constraints<V>>,
    /// Which partition owns a key.
    pub placement: Placement<K>,
    /// Every partition holds a full copy: no ownership check.
    pub replicated: bool,
    pub rows: Rows<K, V>,
    /// The epoch's accesses, in first-access order, each with its row's key; a committed row's
    /// slot holds the index of its access. Empty while a transaction runs alone (the parallel
    /// pass's were settled by the commit before the serial pass starts). Kept between epochs
    /// with its capacity, so recording an access allocates nothing once the table is warm.
    accesses: Vec<(K, Access<V>)>,
    /// For each access (same index), its row's position in a hashed table's dense entries, or
    /// `NO_POSITION`: decide and commit reach the row through it without probing. Positions
    /// hold for the epoch, since the rows change only at its commit, where a delete moving
    /// another row into its hole re-points that row's access here.
    positions: Vec<u32>,
    /// The access `locate` returned last. A transaction writing the row it has just read (a
    /// read-modify-write step) finds the access by comparing one key instead of probing again.
    /// Any index is safe to try: an epoch has at most one access per key.
    last_located: usize,
    /// The access indexes of the rows whose slot does not hold it: in a hashed table the keys
    /// with no committed row (reads of missing rows, inserts); in an ordered table every key
    /// accessed, so a write finds its access without searching the tree, and the commit has
    /// no access to clear in the tree (it searches it only to apply a write).
    unslotted: FxHashMap<K, u32>,
    /// Whether one transaction runs alone (the serial pass): it reads and writes the rows in
    /// place, no access is recorded, and `undo` remembers what to restore if it aborts.
    solo: bool,
    /// The old values of the rows the solo transaction changed, in change order.
    undo: Vec<(K, Option<V>)>,
    scans: Vec<(Seq, Bound<K>, Bound<K>)>,
    /// In an ordered table, the accesses each transaction wrote this epoch (indexes into
    /// `accesses`), so a scan finds its own writes without visiting every access of the epoch.
    writes_by_seq: FxHashMap<Seq, SmallVec<[u32; 2]>>,
    /// Whether any access of the epoch holds a delta (so scans apply their own deltas).
    has_deltas: bool,
    /// Secondary indexes of this partition's rows.
    pub indexes: Vec<Box<dyn IndexOps<K, V>>>,
    /// Index lookups of the current epoch: `(seq, index, looked-up value)`.
    index_reads: Vec<(Seq, usize, Box<dyn Any + Send + Sync>)>,
    /// Keys of the rows changed since the last checkpoint (only tracked when checkpoints are
    /// taken). A row still present is listed once (its slot's dirty bit says it is listed); a
    /// row deleted and inserted again may be listed twice, which `take_dirty` folds.
    dirty: Vec<K>,
    track_dirty: bool,
    /// Which of `DIRTY_BITS` marks the rows listed in `dirty`.
    dirty_bit: u32,
    /// The checkpoint being copied, if one is (see `CheckpointCopy`).
    copying: Option<CheckpointCopy<K, V>>,
    /// Conflict attribution; a cell because the decide phase only reads the table.
    conflict_tally: std::cell::RefCell<ConflictTally>,
    /// Accesses of past epochs, emptied with their lists' capacity kept, for the rows the
    /// next epochs touch.
    spare_accesses: SpareAccesses<V>,
    /// The positions of a row's deltas sorted by seq, when they were not recorded in seq
    /// order (`delta::in_seq_order`): one buffer for every row, kept between epochs. A cell
    /// because the decide phase only reads the table.
    delta_order: std::cell::RefCell<Vec<u32>>,
}

impl<K: crate::row::Key, V: crate::row::Row> TableState<K, V> {
    pub fn new(
        service: String,
        name: String,
        ordered: bool,
        constraints: Arc<Constraints<V>>,
        placement: Placement<K>,
    ) -> Self {
        TableState {
            constraints,
            placement,
            replicated: false,
            indexes: Vec::new(),
            index_reads: Vec::new(),
            service,
            name,
            rows: if ordered {
                Rows::Ordered(BTreeMap::new(), ProbeCount::default())
            } else {
                Rows::Hash(DenseRows::new())
            },
            accesses: Vec::new(),
            positions: Vec::new(),
            last_located: 0,
            unslotted: FxHashMap::default(),
            solo: false,
            undo: Vec::new(),
            scans: Vec::new(),
            writes_by_seq: FxHashMap::default(),
            has_deltas: false,
            dirty: Vec::new(),
            track_dirty: true,
            dirty_bit: FIRST_DIRTY_BIT,
            copying: None,
            conflict_tally: Default::default(),
            spare_accesses: SpareAccesses::new(),
            delta_order: Default::default(),
        }
    }

    /// Applies one committed change to the rows and every index; returns the old row.
    /// One probe of the rows: the row's slot also loses its access of the epoch and becomes
    /// dirty.
    fn apply(&mut self, key: K, value: Option<V>) -> Option<V> {
        let tracking = tracking_of(
            self.track_dirty,
            &mut self.dirty,
            self.dirty_bit,
            &mut self.copying,
        );
        if self.indexes.is_empty() {
            return self.rows.set(key, value, tracking);
        }
        let (index_key, new) = (key.clone(), value.clone());
        let old = self.rows.set(key, value, tracking);
        for ix in &mut self.indexes {
            ix.update(&index_key, old.as_ref(), new.as_ref());
        }
        old
    }

    /// Applies the committed change of the access at `index` (of row `key`): through the
    /// position the access remembers, so a hashed row that exists is set without a probe.
    fn apply_access(&mut self, index: usize, key: K, value: Option<V>) {
        let position = self.positions[index];
        if position == NO_POSITION {
            self.apply(key, value);
            return;
        }
        let Rows::Hash(rows) = &mut self.rows else {
            unreachable!("only hashed rows have positions");
        };
        let tracking = tracking_of(
            self.track_dirty,
            &mut self.dirty,
            self.dirty_bit,
            &mut self.copying,
        );
        let new = if self.indexes.is_empty() {
            None
        } else {
            value.clone()
        };
        let (old, moved) = set_hashed_at(rows, position as usize, value, tracking);
        if let Some(moved) = moved {
            self.positions[moved] = position;
        }
        for ix in &mut self.indexes {
            ix.update(&key, old.as_ref(), new.as_ref());
        }
    }

    /// The index of `key`'s access this epoch, made if it has none, and the committed row. In
    /// a hashed table: one probe of the rows for a row that exists (a missing row's access is
    /// kept in `unslotted`), none for the row located last. In an ordered table the access is
    /// found by key in `unslotted`, and the tree is searched only when the row is wanted
    /// (`want_row`; a write is not): a blind write, or the delete of a row a scan found, costs
    /// no search before the commit's.
    fn locate<'a>(
        rows: &'a mut Rows<K, V>,
        accesses: &mut Vec<(K, Access<V>)>,
        positions: &mut Vec<u32>,
        unslotted: &mut FxHashMap<K, u32>,
        last_located: &mut usize,
        (key, spare, want_row): (&K, &mut SpareAccesses<V>, bool),
    ) -> (usize, Option<&'a V>) {
        if matches!(rows, Rows::Ordered(..)) {
            if accesses.get(*last_located).is_none_or(|(k, _)| k != key) {
                *last_located = Self::unslotted_access(accesses, positions, unslotted, key, spare);
            }
            let committed = if want_row { rows.slot(key) } else { None };
            return (*last_located, committed.map(|s| &s.value));
        }
        if accesses.get(*last_located).is_some_and(|(k, _)| k == key) {
            let slot = rows.slot_at(key, positions[*last_located]);
            return (*last_located, slot.map(|s| &s.value));
        }
        let next = accesses.len();
        if let Some((position, slot)) = rows.locate_slot(key) {
            if let Some(index) = slot.access() {
                *last_located = index;
                return (index, Some(&slot.value));
            }
            slot.set_access(next);
            accesses.push((key.clone(), spare.take()));
            positions.push(position);
            *last_located = next;
            return (next, Some(&slot.value));
        }
        *last_located = Self::unslotted_access(accesses, positions, unslotted, key, spare);
        (*last_located, None)
    }

    /// The index of `key`'s access kept in `unslotted`, made if it has none.
    fn unslotted_access(
        accesses: &mut Vec<(K, Access<V>)>,
        positions: &mut Vec<u32>,
        unslotted: &mut FxHashMap<K, u32>,
        key: &K,
        spare: &mut SpareAccesses<V>,
    ) -> usize {
        if let Some(index) = unslotted.get(key) {
            return *index as usize;
        }
        let next = accesses.len();
        unslotted.insert(key.clone(), next as u32);
        accesses.push((key.clone(), spare.take()));
        positions.push(NO_POSITION);
        next
    }

    /// `key`'s access this epoch (made if it has none) with its index, and the committed row
    /// (`None` for an ordered table unless `want_row`).
    fn access_mut(&mut self, key: &K, want_row: bool) -> (usize, &mut Access<V>, Option<&V>) {
        let (index, committed) = Self::locate(
            &mut self.rows,
            &mut self.accesses,
            &mut self.positions,
            &mut self.unslotted,
            &mut self.last_located,
            (key, &mut self.spare_accesses, want_row),
        );
        (index, &mut self.accesses[index].1, committed)
    }

    /// `key`'s access this epoch, if it has one.
    fn access_of(&self, key: &K) -> Option<&Access<V>> {
        let index = match &self.rows {
            Rows::Ordered(..) => *self.unslotted.get(key)? as usize,
            Rows::Hash(_) => match self.rows.slot(key) {
                Some(slot) => slot.access()?,
                None => *self.unslotted.get(key)? as usize,
            },
        };
        Some(&self.accesses[index].1)
    }

    /// Looks up the rows with index value `value` for transaction `seq` (its own writes
    /// included) and records the lookup for conflict detection.
    pub fn lookup<I: crate::row::Key>(&mut self, seq: Seq, index: usize, value: &I) -> Vec<(K, V)> {
        let Some(ix) = self
            .indexes
            .get(index)
            .and_then(|ix| ix.as_any().downcast_ref::<IndexState<I, K, V>>())
        else {
            return Vec::new();
        };
        let mut found: BTreeMap<K, V> = ix
            .map
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| self.rows.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        // Own buffered writes (the parallel pass; a solo transaction's are in the rows).
        for (k, acc) in &self.accesses {
            if let Some((_, v)) = acc.writers.iter().find(|(s, _)| *s == seq) {
                match v {
                    Some(v) if ix.values(Some(v)).binary_search(value).is_ok() => {
                        found.insert(k.clone(), v.clone());
                    }
                    _ => {
                        found.remove(k);
                    }
                }
            }
        }
        self.index_reads.push((seq, index, Box::new(value.clone())));
        found.into_iter().collect()
    }

    /// A prefetch hint for the committed row whose key hashes to `hash` (`dense_rows::hash_of`):
    /// starts loading its index bucket, or (`entry`) the entry that bucket points to, which is
    /// best done some rows after the bucket's. Reads no entry and changes nothing, so a wrong
    /// hash costs only the loads; nothing for an ordered table.
    #[inline]
    pub fn prefetch_row(&self, hash: u64, entry: bool) {
        if let Rows::Hash(rows) = &self.rows {
            if entry {
                rows.prefetch_entry(hash);
            } else {
                rows.prefetch_bucket(hash);
            }
        }
    }

    pub fn is_ordered(&self) -> bool {
        matches!(self.rows, Rows::Ordered(..))
    }

    /// Reads `key` for transaction `seq`: its own buffered write if it has one, else the
    /// committed row (recording the read for conflict detection).
    pub fn get(&mut self, seq: Seq, key: &K) -> Option<V> {
        if self.solo {
            // The rows hold the solo transaction's own writes already.
            return self.rows.get(key).cloned();
        }
        let (_, acc, committed) = self.access_mut(key, true);
        if let Some((_, v)) = acc.own_write(seq) {
            return v.clone();
        }
        if acc.readers.last() != Some(&seq) {
            acc.readers.push(seq);
        }
        let mut value = committed.cloned();
        acc.apply_own_deltas(seq, &mut value);
        value
    }

    /// Whether `key` exists for transaction `seq`: recorded as a read exactly like
    /// [`TableState::get`], without copying the row (a delta never creates or removes a row,
    /// so the transaction's own deltas do not change the answer).
    pub fn contains(&mut self, seq: Seq, key: &K) -> bool {
        if self.solo {
            return self.rows.get(key).is_some();
        }
        let (_, acc, committed) = self.access_mut(key, true);
        if let Some((_, v)) = acc.own_write(seq) {
            return v.is_some();
        }
        if acc.readers.last() != Some(&seq) {
            acc.readers.push(seq);
        }
        committed.is_some()
    }

    /// Adds `op.delta` to a field of row `key` for transaction `op.seq`: `add_all` with one
    /// delta.
    pub fn add(&mut self, key: &K, op: DeltaOp<V>, read: fn(&V) -> i64) -> Result<(), DeltaError> {
        self.add_all(key, &[(op, read)]).map_err(|(_, error)| error)
    }

    /// Adds each `op.delta` of `ops` (all of one transaction, `read` reading the op's field) to
    /// row `key`, in order, with one access to the row: exactly as one `add` per op would,
    /// but found once. Alone, or on the transaction's own buffered write, the row's value is
    /// known and the deltas apply at once (checked); otherwise each is buffered as a delta,
    /// which conflicts with no other delta. A row missing from the committed state is an error
    /// recorded as a read, so a lower-TID transaction creating it makes this one run again.
    ///
    /// Otherwise each delta is first checked against the transaction's own view (the committed
    /// row plus its own deltas, the ones before it in `ops` included): a delta that fails there
    /// aborts the transaction now, recorded as a read of the row, so it runs again if a lower
    /// TID changed the row, and its failure stands if none did. The lowest TID thus never loses
    /// by escrow. On failure, returns the failing op's index in `ops` with the error; the
    /// transaction aborts, so the ops before it do not matter.
    ///
    /// Only for a table without indexes (the context turns deltas on an indexed table into a
    /// read-modify-write).
    pub fn add_all(
        &mut self,
        key: &K,
        ops: &[DeltaWithReader<V>],
    ) -> Result<(), (usize, DeltaError)> {
        debug_assert!(self.indexes.is_empty(), "a delta on an indexed table");
        let Some((first, _)) = ops.first() else {
            return Ok(());
        };
        if self.solo {
            // One probe: the row is changed in place, and its old value kept for the undo.
            let tracking = tracking_of(
                self.track_dirty,
                &mut self.dirty,
                self.dirty_bit,
                &mut self.copying,
            );
            let apply = |row: &mut V| {
                ops.iter()
                    .enumerate()
                    .try_for_each(|(i, (op, _))| op.apply_exact(row).map_err(|e| (i, e)))
            };
            let old = match self.rows.modify(key, apply, tracking) {
                None => return Err((0, DeltaError::MissingRow)),
                Some(result) => result?,
            };
            self.undo.push((key.clone(), Some(old)));
            return Ok(());
        }
        let seq = first.seq;
        let (_, acc, committed) = self.access_mut(key, true);
        // The transaction's own view of the row, once a delta needed it, with the deltas of
        // `ops` so far applied.
        let mut view: Option<V> = None;
        let mut pushed = false;
        let mut result = Ok(());
        for (i, (op, read)) in ops.iter().enumerate() {
            debug_assert_eq!(
                op.seq, seq,
                "the deltas of one add_all are one transaction's"
            );
            if let Some((_, own)) = acc.own_write(seq) {
                result = match own.as_mut() {
                    None => Err((i, DeltaError::MissingRow)),
                    Some(own) => op.apply_exact(own).map_err(|e| (i, e)),
                };
                if result.is_err() {
                    break;
                }
                continue;
            }
            let in_view = match committed {
                None => Err(DeltaError::MissingRow),
                Some(row) => {
                    if view.is_none() && acc.may_have_deltas(seq) {
                        view = Some(row.clone());
                        acc.apply_own_deltas(seq, &mut view);
                    }
                    match view.as_mut() {
                        Some(view) => op.apply_exact(view),
                        None => op.checked(read(row)).map(drop),
                    }
                }
            };
            if let Err(error) = in_view {
                if acc.readers.last() != Some(&seq) {
                    acc.readers.push(seq);
                }
                result = Err((i, error));
                break;
            }
            acc.push_delta(*op);
            pushed = true;
        }
        if pushed {
            self.has_deltas = true;
        }
        result
    }

    /// Buffers a write (`Some`) or delete (`None`) of `key` by transaction `seq`.
    pub fn write(&mut self, seq: Seq, key: K, value: Option<V>) {
        if self.solo {
            let old = self.apply(key.clone(), value);
            self.undo.push((key, old));
            return;
        }
        let (index, acc, _) = self.access_mut(&key, false);
        if acc.may_have_deltas(seq) && acc.own_deltas(seq).next().is_some() {
            // The write replaces the row, and with it this transaction's deltas on it. Their
            // bounds were checked on its own view only: it becomes a reader of the row, so a
            // lower TID changing the row makes it run again.
            acc.deltas.retain(|d| d.seq != seq);
            if !acc.readers.contains(&seq) {
                acc.readers.push(seq);
            }
        }
        if let Some(slot) = acc.own_write(seq) {
            slot.1 = value;
        } else {
            acc.push_writer(seq, value);
            if self.is_ordered() {
                let writes = self.writes_by_seq.entry(seq).or_default();
                writes.push(index as u32);
            }
        }
    }

    /// Scans a key range for transaction `seq`, merging its own buffered writes, and records
    /// for phantom detection the part of the range the result depends on. The table must be
    /// ordered. With `limit`, stops after that many rows: the recorded range then ends at the
    /// last row returned, so only writes up to it can make the scan stale.
    pub fn scan(
        &mut self,
        seq: Seq,
        range: (Bound<K>, Bound<K>),
        limit: Option<usize>,
    ) -> Vec<(K, V)> {
        let Rows::Ordered(rows, searches) = &self.rows else {
            unreachable!("scan on a hash table is rejected by the context");
        };
        // This transaction's own buffered writes in the range, which override the committed
        // rows (none when it runs alone: they are in the rows already).
        let own_writes = if self.solo {
            None
        } else {
            self.writes_by_seq.get(&seq)
        };
        let own: BTreeMap<&K, &Option<V>> = own_writes
            .into_iter()
            .flatten()
            .map(|i| &self.accesses[*i as usize])
            .filter(|(k, _)| range.contains(k))
            .filter_map(|(k, acc)| {
                acc.writers
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, v)| (k, v))
            })
            .collect();
        let limit = limit.unwrap_or(usize::MAX);
        let mut out: Vec<(K, V)> = Vec::new();
        // Found from the range's start alone, up to its end: one search down the tree, where a
        // range with both bounds searches for its end too (a queue's head is a scan of one row).
        assert_range_order(&range);
        let end = &range.1;
        searches.add();
        let mut committed = rows
            .range::<K, _>((range.0.as_ref(), Bound::Unbounded))
            .take_while(|(k, _)| !above_bound(*k, end))
            .map(|(k, slot)| (k, &slot.value))
            .peekable();
        let mut own_iter = own.into_iter().peekable();
        while out.len() < limit {
            // Merge the two key-ordered streams; an own write wins over a committed row.
            let take_own = match (committed.peek(), own_iter.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((ck, _)), Some((ok, _))) => *ok <= *ck,
            };
            if take_own {
                let (k, v) = own_iter.next().expect("peeked");
                if committed.peek().is_some_and(|(ck, _)| *ck == k) {
                    committed.next();
                }
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                }
            } else {
                let (k, v) = committed.next().expect("peeked");
                out.push((k.clone(), v.clone()));
            }
        }
        if self.has_deltas {
            for (k, v) in &mut out {
                if let Some(acc) = self.access_of(k) {
                    let mut value = Some(v.clone());
                    acc.apply_own_deltas(seq, &mut value);
                    *v = value.expect("deltas keep the row");
                }
            }
        }
        let hi = match out.last() {
            Some((k, _)) if out.len() == limit => Bound::Included(k.clone()),
            _ => range.1,
        };
        if !self.solo {
            // A transaction running alone conflicts with nothing: its scans need no record.
            self.scans.push((seq, range.0, hi));
        }
        out
    }
}

impl<K: crate::row::Key, V: crate::row::Row> TableState<K, V> {
    /// The decide phase for row `key`: the lowest writer not aborted by its handler reserves
    /// it, and every later writer, reader and index lookup it moves loses. Returns how many
    /// transactions it added to `conflicts`, and the seq after which a scan over the row
    /// loses (the reserved writer or the lowest delta that may commit, whichever is lower;
    /// `decide_scans` applies it).
    fn decide_row(
        &self,
        (key, position): (&K, u32),
        acc: &Access<V>,
        user_aborted: &SeqSet,
        conflicts: &mut SeqSet,
    ) -> (u64, Option<Seq>) {
        let reserved = acc
            .writers
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| !user_aborted.contains(*s))
            .min();
        let mut lost = 0u64;
        let mut first_delta = None;
        if !acc.deltas.is_empty() {
            let committed = self.rows.slot_at(key, position).map(|s| &s.value);
            let order = &mut *self.delta_order.borrow_mut();
            let (delta_lost, first) =
                Self::decide_row_deltas((committed, order), acc, reserved, user_aborted, conflicts);
            lost += delta_lost;
            first_delta = first;
        }
        let scans_after = match (reserved, first_delta) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        };
        let Some(w) = reserved else {
            return (lost, scans_after);
        };
        let mut lose = |s: Seq| lost += u64::from(conflicts.insert(s));
        for (s, _) in &acc.writers {
            if *s > w {
                lose(*s);
            }
        }
        for r in &acc.readers {
            if *r > w {
                lose(*r);
            }
        }
        if !self.index_reads.is_empty() {
            let old = self.rows.slot_at(key, position).map(|s| &s.value);
            let new = acc
                .writers
                .iter()
                .find(|(s, _)| *s == w)
                .and_then(|(_, v)| v.as_ref());
            for (s, ix, value) in &self.index_reads {
                if *s > w && self.indexes[*ix].touches(old, new, value.as_ref()) {
                    lose(*s);
                }
            }
        }
        (lost, scans_after)
    }

    /// The decide phase for the epoch's scans: a scan loses if its range holds a row whose
    /// `scans_after[i]` (see `decide_row`) is a lower seq. Each scan finds the rows of its
    /// range by binary search over the accessed keys in key order, so the cost grows with the
    /// rows each range holds, not with rows × scans (a queue table has thousands of each per
    /// epoch). Adds each row's losses to `lost[i]`.
    fn decide_scans(&self, scans_after: &[Option<Seq>], lost: &mut [u64], conflicts: &mut SeqSet) {
        let key_of = |i: &u32| &self.accesses[*i as usize].0;
        let mut by_key: Vec<u32> = (0..self.accesses.len() as u32).collect();
        by_key.sort_unstable_by(|a, b| key_of(a).cmp(key_of(b)));
        for (s, lo, hi) in &self.scans {
            let start = by_key.partition_point(|i| below_bound(key_of(i), lo));
            for i in &by_key[start..] {
                if above_bound(key_of(i), hi) {
                    break;
                }
                let i = *i as usize;
                if scans_after[i].is_some_and(|after| *s > after) {
                    lost[i] += u64::from(conflicts.insert(*s));
                }
            }
        }
    }

    /// The decide phase for the deltas on a row whose committed value is `committed` (see
    /// `delta::decide_deltas`): later readers of the row read after the lowest delta that may
    /// commit, so they lose; returns it too, for the scans.
    fn decide_row_deltas(
        (committed, order): (Option<&V>, &mut Vec<u32>),
        acc: &Access<V>,
        reserved: Option<Seq>,
        user_aborted: &SeqSet,
        conflicts: &mut SeqSet,
    ) -> (u64, Option<Seq>) {
        let (first, mut lost) = decide_deltas(
            committed,
            (&acc.deltas, acc.deltas_ascending, order),
            reserved,
            user_aborted,
            conflicts,
        );
        let Some(d) = first else {
            return (lost, None);
        };
        for r in &acc.readers {
            if *r > d {
                lost += u64::from(conflicts.insert(*r));
            }
        }
        (lost, first)
    }

    /// Applies the committed deltas on row `key` (of the access at `index`), in seq order, to
    /// its committed value.
    fn commit_deltas(
        &mut self,
        (index, key): (usize, K),
        (deltas, ascending): (&[DeltaOp<V>], bool),
        aborted: &SeqSet,
    ) {
        let mut committed = deltas
            .iter()
            .filter(|d| !aborted.contains(d.seq))
            .peekable();
        if committed.peek().is_none() {
            self.clear_access(self.positions[index]);
            return;
        }
        let slot = self.rows.slot_at(&key, self.positions[index]);
        let mut row = slot.map(|s| s.value.clone()).unwrap_or_else(|| {
            panic!(
                "committed delta on missing row {}.{} {key:?}: decide is broken",
                self.service, self.name
            )
        });
        let mut order = std::mem::take(self.delta_order.get_mut());
        for d in in_seq_order(deltas, ascending, &mut order) {
            if aborted.contains(d.seq) {
                continue;
            }
            let field = (d.access)(&mut row);
            *field = field.checked_add(d.delta).unwrap_or_else(|| {
                panic!(
                    "committed delta overflows {}.{} {key:?}: decide is broken",
                    self.service, self.name
                )
            });
        }
        *self.delta_order.get_mut() = order;
        self.apply_access(index, key, Some(row));
    }

    /// Takes the rows changed since the last checkpoint as typed copies, all at once (one probe
    /// per changed row), leaving them clean, for encoding later off the epoch path.
    fn take_rows(&mut self, key_prefix: Vec<u8>) -> TakenRows<K, V> {
        assert!(
            self.copying.is_none(),
            "{}.{}: a checkpoint was taken while another was being copied",
            self.service,
            self.name
        );
        self.begin_copy();
        self.copy_rows(usize::MAX);
        self.finish_copy(key_prefix)
            .expect("a copy of every row is finished")
    }

    /// Begins copying a checkpoint of the rows changed since the last one: hands the list of
    /// their keys to the copy (no row is touched) and switches new changes to the other dirty
    /// bit, so the old one marks the rows still to copy.
    fn begin_copy(&mut self) {
        debug_assert!(self.copying.is_none());
        let keys = std::mem::take(&mut self.dirty);
        let bit = self.dirty_bit;
        // No row has the other bit: the previous copy cleared it from every row it listed.
        self.dirty_bit ^= DIRTY_BITS;
        self.copying = Some(CheckpointCopy {
            present: Vec::with_capacity(keys.len()),
            pace: keys.len().div_ceil(CHECKPOINT_COPY_SPREAD_EPOCHS),
            keys,
            bit,
            deleted: Vec::new(),
        });
    }

    /// Copies up to `budget` rows of the checkpoint being copied (one probe each); returns the
    /// budget left.
    fn copy_rows(&mut self, mut budget: usize) -> usize {
        let Some(copy) = self.copying.as_mut() else {
            return budget;
        };
        while budget > 0 {
            let Some(key) = copy.keys.pop() else { break };
            budget -= 1;
            let row = self.rows.slot_mut(&key);
            match row.filter(|slot| slot.meta & copy.bit != 0) {
                Some(slot) => {
                    slot.meta &= !copy.bit;
                    let value = slot.value.clone();
                    copy.present.push((key, value));
                }
                // Missing when the copy began (inserted since, or not), or copied already,
                // on its first change since: a copy in `present` outranks this.
                None => copy.deleted.push(key),
            }
        }
        budget
    }

    /// The copied rows, once every listed row is copied.
    fn finish_copy(&mut self, key_prefix: Vec<u8>) -> Option<TakenRows<K, V>> {
        if self.copying.as_ref()?.keys.is_empty() {
            let copy = self.copying.take()?;
            return Some(TakenRows {
                present: copy.present,
                deleted: copy.deleted,
                key_prefix,
                sorted: false,
                next_present: 0,
                next_deleted: 0,
            });
        }
        None
    }

    /// Forgets a row's access of the epoch (a row the commit does not change), reaching the
    /// row through the access's `position`. Only a hashed row that exists holds its access; an
    /// ordered table's are all in `unslotted`, cleared with it.
    fn clear_access(&mut self, position: u32) {
        if let Rows::Hash(m) = &mut self.rows
            && position != NO_POSITION
        {
            m.entry_mut(position as usize).1.clear_access();
        }
    }
}

/// Where a table hands the steps that keep its constraints, with their target partitions.
pub(crate) type StepSink<'a> = dyn FnMut(GlobalPartition, ConstraintStep) + 'a;

/// The type-erased face of a table that partitions drive through the epoch phases.
pub(crate) trait AnyTable: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Adds to `conflicts` every transaction that loses a conflict on this table.
    fn decide(&self, user_aborted: &SeqSet, conflicts: &mut SeqSet);
    /// Applies the surviving writes and clears the epoch's accesses.
    fn commit(&mut self, aborted: &SeqSet);
    /// Applies (`keep`) or discards every buffered write: used when one transaction runs alone.
    fn commit_all(&mut self, keep: bool);
    /// Whether any access is buffered.
    fn has_access(&self) -> bool;
    /// `TableState::prefetch_row` for a hint whose key type is this table's (else nothing).
    fn prefetch_hinted(&self, hint: RowHint, entry: bool);
    /// Routes accesses to the solo map (serial fallback) or back to the epoch map.
    fn set_solo(&mut self, solo: bool);
    /// Whether changed rows are remembered for the next checkpoint.
    fn set_track_dirty(&mut self, track: bool);
    /// Order-independent hash of the committed rows.
    fn state_hash(&self) -> u64;
    /// Moves rows changed since the last checkpoint into `out` as encoded `(key, value)`.
    /// Takes the rows changed since the last checkpoint as typed copies, returning the work of
    /// encoding them (with `key_prefix` before each key) to be done later, off the epoch path.
    fn take_dirty(&mut self, key_prefix: Vec<u8>) -> DeferredRows;
    /// Like `take_dirty`, but the encoding is split into deferred chunks of at most
    /// `limits::CHECKPOINT_CHUNK_ROWS_MAX` rows, appended to `out`, which run in order: the
    /// encoded rows in memory are then one chunk's, not the whole table's.
    fn take_dirty_chunks(&mut self, key_prefix: Vec<u8>, out: &mut Vec<DeferredRows>);
    /// Begins an incremental checkpoint: the rows changed since the last one are copied later,
    /// by `copy_checkpoint_rows` and by the first change of each row, as of now.
    fn begin_checkpoint_copy(&mut self);
    /// Copies up to `budget` rows of the checkpoint begun; returns the budget left.
    fn copy_checkpoint_rows(&mut self, budget: usize) -> usize;
    /// Rows of the checkpoint begun still to visit (0 when none is being copied).
    fn checkpoint_rows_to_copy(&self) -> usize;
    /// Rows per step that copy the checkpoint begun in `CHECKPOINT_COPY_SPREAD_EPOCHS` steps
    /// (0 when none is being copied).
    fn checkpoint_copy_pace(&self) -> usize;
    /// Once every row of the checkpoint begun is copied, appends their deferred encodings like
    /// `take_dirty_chunks` and returns true; false while rows are left to copy.
    fn finish_checkpoint_copy(&mut self, key_prefix: Vec<u8>, out: &mut Vec<DeferredRows>) -> bool;
    /// Whether any row changed since the last `take_dirty` (only tracked when enabled).
    fn has_dirty(&self) -> bool;
    /// Readies the table of a partition a take-over keeps for the new runtime: forgets the
    /// epoch in progress (restoring the rows a transaction running alone changed), and any
    /// checkpoint being copied, and lists every row as changed since the last checkpoint.
    fn settle_for_take_over(&mut self);
    /// A foreign-key probe by transaction `seq`: reads the row with encoded key `key` (recording
    /// the read). `Ok(None)` if it exists, `Ok(Some(key as text))` if not.
    fn probe(&mut self, seq: Seq, key: &[u8]) -> Result<Option<String>, String>;
    /// For a unique index (keyed by the encoded unique value, holding the encoded row key):
    /// claims `value` for `row_key`, or returns the other row key holding it, as text.
    fn claim(&mut self, seq: Seq, value: &[u8], row_key: &[u8]) -> Result<Option<String>, String>;
    /// Releases `value` if `row_key` holds it.
    fn release(&mut self, seq: Seq, value: &[u8], row_key: &[u8]) -> Result<(), String>;
    /// A parent of rows of this table was deleted: finds, for transaction `seq`, the rows whose
    /// hidden foreign-key index holds the deleted parent's key (a recorded lookup, so a
    /// lower-TID write moving a row into or out of it conflicts). On `OnDelete::Cascade`,
    /// deletes them, handing `out` the steps that keep their own constraints. Returns how many
    /// rows it found and the first one's key as text.
    fn parent_deleted(
        &mut self,
        seq: Seq,
        deleted: &ParentDeleted,
        out: &mut StepSink<'_>,
    ) -> (usize, Option<String>);
    /// Loads one encoded committed row (recovery).
    fn load_row(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// Applies one encoded row change that a replay elsewhere computed (`None`: deleted), as
    /// a commit would: remembered for the next checkpoint, indexes kept.
    fn apply_row(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// Erases the personal fields of every committed row of `subject` (between epochs, live
    /// erasure): each changed row is applied like a commit, so it is dirty for the next
    /// checkpoint and its indexes follow. Returns how many rows it changed.
    fn erase_subject(&mut self, rules: &crate::governance::TableGovernance, subject: &str)
    -> usize;
    /// What the coordination analysis reads of this table's declarations.
    fn coordination(&self) -> TableSummary;
    /// The table's `service.table` name and the conflict losses it caused so far.
    fn conflict_tally(&self) -> (String, ConflictTally);
}

/// Whether `key` lies below the lower bound `lo` of a range.
fn below_bound<K: Ord>(key: &K, lo: &Bound<K>) -> bool {
    match lo {
        Bound::Included(lo) => key < lo,
        Bound::Excluded(lo) => key <= lo,
        Bound::Unbounded => false,
    }
}

/// Panics on an inverted range, as `BTreeMap::range` does (a scan searches from the start
/// bound alone, so the map no longer sees the end bound).
fn assert_range_order<K: Ord>((lo, hi): &(Bound<K>, Bound<K>)) {
    use Bound::{Excluded, Included};
    if let (Included(l) | Excluded(l), Included(h) | Excluded(h)) = (lo, hi) {
        assert!(l <= h, "range start is greater than range end in BTreeMap");
        let both_excluded = matches!((lo, hi), (Excluded(_), Excluded(_)));
        assert!(
            !(l == h && both_excluded),
            "range start and end are equal and excluded in BTreeMap"
        );
    }
}

/// Whether `key` lies above the upper bound `hi` of a range.
fn above_bound<K: Ord>(key: &K, hi: &Bound<K>) -> bool {
    match hi {
        Bound::Included(hi) => key > hi,
        Bound::Excluded(hi) => key >= hi,
        Bound::Unbounded => false,
    }
}

fn encode<T: Serialize>(t: &T) -> Vec<u8> {
    rmp_serde::to_vec(t).expect("rows and keys of a table serialize")
}

/// A checkpoint of one table being copied, a bounded number of rows per epoch: the keys listed
/// dirty when it began and not yet visited, the copy bit (the dirty bit of those rows, cleared
/// as each is copied), and the copies so far. A row changed before the copier reaches it is
/// copied by the change itself (`Tracking`), so every copy is the row as of the checkpoint's
/// epoch.
struct CheckpointCopy<K, V> {
    keys: Vec<K>,
    /// Rows a step copies so that the listed keys are done in `CHECKPOINT_COPY_SPREAD_EPOCHS`
    /// steps (the partition adds its tables' paces and bounds the sum).
    pace: usize,
    bit: u32,
    present: Vec<(K, V)>,
    /// Keys the copier found missing or without the copy bit; a key that also has a copy in
    /// `present` was present (and copied before it changed).
    deleted: Vec<K>,
}

/// The rows a checkpoint took from one table: copies of present rows and keys of deleted
/// ones, kept apart because a copy then needs no `Option` beside it (for small rows a third of
/// the copy). Encoded on the checkpoint thread, in key order and each key once (a row deleted
/// and inserted again is listed twice, with the same copy), a chunk at a time, so the encoded
/// rows in memory are one chunk's, not the table's.
struct TakenRows<K, V> {
    present: Vec<(K, V)>,
    deleted: Vec<K>,
    /// Written before each encoded key (see `row_key::row_key_prefix`).
    key_prefix: Vec<u8>,
    sorted: bool,
    /// How many of `present` and of `deleted` are encoded already.
    next_present: usize,
    next_deleted: usize,
}

impl<K: Ord + Serialize, V: Serialize> TakenRows<K, V> {
    /// The most rows the encoding yields (fewer when keys were listed twice).
    fn n_rows_max(&self) -> usize {
        self.present.len() + self.deleted.len()
    }

    /// Appends the next at most `max` rows to `out`, in key order.
    fn encode_next(&mut self, max: usize, out: &mut Vec<CheckpointRow>) {
        if !self.sorted {
            self.present.sort_by(|a, b| a.0.cmp(&b.0));
            self.present.dedup_by(|a, b| a.0 == b.0);
            self.deleted.sort();
            self.deleted.dedup();
            // A key with a copy was present when the checkpoint began: the copy is its row.
            let present = &self.present;
            self.deleted
                .retain(|k| present.binary_search_by(|(p, _)| p.cmp(k)).is_err());
            self.sorted = true;
        }
        let left = self.n_rows_max() - self.next_present - self.next_deleted;
        out.reserve(left.min(max));
        for _ in 0..max {
            let present = self.present.get(self.next_present);
            let deleted = self.deleted.get(self.next_deleted);
            // A key is present or deleted, never both (folded above).
            let row = match (present, deleted) {
                (Some((k, v)), gone) if gone.is_none_or(|gone| k < gone) => {
                    self.next_present += 1;
                    (self.encode_key(k), Some(encode(v)))
                }
                (_, Some(gone)) => {
                    self.next_deleted += 1;
                    (self.encode_key(gone), None)
                }
                _ => break,
            };
            out.push(row);
        }
    }

    fn encode_key(&self, k: &K) -> Vec<u8> {
        let mut key = self.key_prefix.clone();
        rmp_serde::encode::write(&mut key, k).expect("keys serialize");
        key
    }
}

/// Hands `taken`'s encoding over as deferred chunks of at most `CHECKPOINT_CHUNK_ROWS_MAX` rows.
fn push_chunks<K, V>(taken: TakenRows<K, V>, out: &mut Vec<DeferredRows>)
where
    K: Ord + Serialize + Send + 'static,
    V: Serialize + Send + 'static,
{
    let n_chunks = taken.n_rows_max().div_ceil(CHECKPOINT_CHUNK_ROWS_MAX);
    let shared = Arc::new(parking_lot::Mutex::new(taken));
    for _ in 0..n_chunks {
        let taken = shared.clone();
        out.push(Box::new(move |rows: &mut Vec<CheckpointRow>| {
            taken.lock().encode_next(CHECKPOINT_CHUNK_ROWS_MAX, rows)
        }));
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

impl<K: crate::row::Key, V: crate::row::Row> AnyTable for TableState<K, V> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn decide(&self, user_aborted: &SeqSet, conflicts: &mut SeqSet) {
        let rows_of = || self.accesses.iter().zip(self.positions.iter().copied());
        if self.scans.is_empty() {
            for ((key, acc), position) in rows_of() {
                let (lost, _) = self.decide_row((key, position), acc, user_aborted, conflicts);
                if lost > 0 {
                    self.conflict_tally.borrow_mut().record(key, lost);
                }
            }
            return;
        }
        let n_accesses = self.accesses.len();
        let (mut lost, mut scans_after) = (Vec::with_capacity(n_accesses), Vec::new());
        scans_after.reserve_exact(n_accesses);
        for ((key, acc), position) in rows_of() {
            let (row_lost, after) = self.decide_row((key, position), acc, user_aborted, conflicts);
            lost.push(row_lost);
            scans_after.push(after);
        }
        self.decide_scans(&scans_after, &mut lost, conflicts);
        for ((key, _), row_lost) in self.accesses.iter().zip(lost) {
            if row_lost > 0 {
                self.conflict_tally.borrow_mut().record(key, row_lost);
            }
        }
    }

    fn commit(&mut self, aborted: &SeqSet) {
        // Taken out and put back so `apply_access` can borrow the table; the list keeps its
        // capacity. Every access reaches its row through its position, without a probe unless
        // the row was missing or is ordered: `apply_access` and `clear_access` both forget it.
        // An ordered row is searched for only when a write is applied (its access is in
        // `unslotted`, not in its slot, so a read leaves nothing to clear).
        let mut accesses = std::mem::take(&mut self.accesses);
        for (index, (key, mut acc)) in accesses.drain(..).enumerate() {
            let mut survivors = acc.writers.drain(..).filter(|(s, _)| !aborted.contains(*s));
            let survivor = survivors.next();
            assert!(
                survivor.is_none() || survivors.next().is_none(),
                "two committed writers of {}.{} {key:?}: conflict check is broken",
                self.service,
                self.name
            );
            drop(survivors);
            if let Some((_, value)) = survivor {
                // Deltas below the writer are overwritten by it; those above it lost.
                self.apply_access(index, key, value);
            } else if !acc.deltas.is_empty() {
                let deltas = (&acc.deltas[..], acc.deltas_ascending);
                self.commit_deltas((index, key), deltas, aborted);
            } else {
                self.clear_access(self.positions[index]);
            }
            self.spare_accesses.recycle(acc);
        }
        self.accesses = accesses;
        self.positions.clear();
        self.writes_by_seq.clear();
        self.unslotted.clear();
        self.has_deltas = false;
        self.scans.clear();
        self.index_reads.clear();
    }

    fn commit_all(&mut self, keep: bool) {
        debug_assert!(self.solo, "commit_all outside the serial fallback");
        let mut undo = std::mem::take(&mut self.undo);
        if !keep {
            // Newest first, so a row changed twice ends at its value before the transaction.
            for (key, old) in undo.drain(..).rev() {
                self.apply(key, old);
            }
        }
        undo.clear();
        self.undo = undo;
        self.scans.clear();
        self.index_reads.clear();
    }

    #[inline]
    fn prefetch_hinted(&self, hint: RowHint, entry: bool) {
        if hint.key_type == std::any::TypeId::of::<K>() {
            self.prefetch_row(hint.hash, entry);
        }
    }

    fn has_access(&self) -> bool {
        !self.accesses.is_empty()
            || !self.undo.is_empty()
            || !self.scans.is_empty()
            || !self.index_reads.is_empty()
    }

    fn set_solo(&mut self, solo: bool) {
        debug_assert!(
            !solo || self.accesses.is_empty(),
            "a transaction runs alone while the epoch's accesses are unsettled"
        );
        self.solo = solo;
    }

    fn set_track_dirty(&mut self, track: bool) {
        self.track_dirty = track;
        if !track {
            self.dirty = Vec::new();
            self.copying = None;
            self.rows.clear_dirty_bits();
        }
    }

    fn state_hash(&self) -> u64 {
        let mut total = 0u64;
        let mut buf = Vec::new();
        for (k, v) in self.rows.iter() {
            buf.clear();
            rmp_serde::encode::write(&mut buf, k).expect("key serializes");
            rmp_serde::encode::write(&mut buf, v).expect("row serializes");
            let mut h = FxHasher::default();
            buf.hash(&mut h);
            total = total.wrapping_add(h.finish());
        }
        let mut h = FxHasher::default();
        self.name.hash(&mut h);
        total.wrapping_add(h.finish())
    }

    fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    fn settle_for_take_over(&mut self) {
        // Newest first, as when a transaction running alone aborts: its writes were never
        // committed, since the runtime that ran it is gone.
        let mut undo = std::mem::take(&mut self.undo);
        for (key, old) in undo.drain(..).rev() {
            self.apply(key, old);
        }
        self.solo = false;
        self.accesses.clear();
        self.positions.clear();
        self.last_located = 0;
        self.unslotted.clear();
        self.scans.clear();
        self.writes_by_seq.clear();
        self.has_deltas = false;
        self.index_reads.clear();
        // The store's latest complete checkpoint may be older than what this partition last
        // copied (a checkpoint the old runtime never completed), so every row is listed: the
        // next checkpoint then holds all of them, a superset of the rows changed since.
        self.copying = None;
        self.dirty_bit = FIRST_DIRTY_BIT;
        self.dirty = match self.track_dirty {
            true => self.rows.iter().map(|(k, _)| k.clone()).collect(),
            false => Vec::new(),
        };
        let meta = if self.track_dirty { FIRST_DIRTY_BIT } else { 0 };
        self.rows.reset_meta(meta);
    }

    fn take_dirty(&mut self, key_prefix: Vec<u8>) -> DeferredRows {
        let mut taken = self.take_rows(key_prefix);
        Box::new(move |out: &mut Vec<CheckpointRow>| taken.encode_next(usize::MAX, out))
    }

    fn take_dirty_chunks(&mut self, key_prefix: Vec<u8>, out: &mut Vec<DeferredRows>) {
        push_chunks(self.take_rows(key_prefix), out);
    }

    fn begin_checkpoint_copy(&mut self) {
        self.begin_copy();
    }

    fn copy_checkpoint_rows(&mut self, budget: usize) -> usize {
        self.copy_rows(budget)
    }

    fn checkpoint_rows_to_copy(&self) -> usize {
        self.copying.as_ref().map_or(0, |c| c.keys.len())
    }

    fn checkpoint_copy_pace(&self) -> usize {
        self.copying.as_ref().map_or(0, |c| c.pace)
    }

    fn finish_checkpoint_copy(&mut self, key_prefix: Vec<u8>, out: &mut Vec<DeferredRows>) -> bool {
        match self.finish_copy(key_prefix) {
            Some(taken) => {
                push_chunks(taken, out);
                true
            }
            None => false,
        }
    }

    fn probe(&mut self, seq: Seq, key: &[u8]) -> Result<Option<String>, String> {
        let k: K = decode(key).map_err(|e| format!("{}.{} key: {e}", self.service, self.name))?;
        Ok(match self.get(seq, &k) {
            Some(_) => None,
            None => Some(format!("{k:?}")),
        })
    }

    fn claim(&mut self, seq: Seq, value: &[u8], row_key: &[u8]) -> Result<Option<String>, String> {
        let u: K =
            decode(value).map_err(|e| format!("{}.{} value: {e}", self.service, self.name))?;
        match self.get(seq, &u) {
            Some(holder) if encode(&holder) != row_key => Ok(Some(format!("{holder:?}"))),
            Some(_) => Ok(None),
            None => {
                let holder: V = decode(row_key)
                    .map_err(|e| format!("{}.{} row key: {e}", self.service, self.name))?;
                self.write(seq, u, Some(holder));
                Ok(None)
            }
        }
    }

    fn release(&mut self, seq: Seq, value: &[u8], row_key: &[u8]) -> Result<(), String> {
        let u: K =
            decode(value).map_err(|e| format!("{}.{} value: {e}", self.service, self.name))?;
        if self
            .get(seq, &u)
            .is_some_and(|holder| encode(&holder) == row_key)
        {
            self.write(seq, u, None);
        }
        Ok(())
    }

    fn parent_deleted(
        &mut self,
        seq: Seq,
        deleted: &ParentDeleted,
        out: &mut StepSink<'_>,
    ) -> (usize, Option<String>) {
        let index = deleted.link.child_index_idx as usize;
        let cascade = deleted.link.on_delete == OnDelete::Cascade;
        let children = self.lookup::<Vec<u8>>(seq, index, &deleted.parent_key);
        let found = (
            children.len(),
            children.first().map(|(k, _)| format!("{k:?}")),
        );
        if cascade {
            let constraints = self.constraints.clone();
            for (key, row) in children {
                constraints.steps_for_change(&key, Some(&row), None, &mut |gp, step| out(gp, step));
                self.write(seq, key, None);
            }
        }
        found
    }

    fn conflict_tally(&self) -> (String, ConflictTally) {
        let name = format!("{}.{}", self.service, self.name);
        (name, self.conflict_tally.borrow().clone())
    }

    fn coordination(&self) -> TableSummary {
        let c = &self.constraints;
        TableSummary {
            checks: c.checks.iter().map(|check| check.name.clone()).collect(),
            field_mins: c
                .field_mins
                .iter()
                .map(|b| (b.field.name(), b.min))
                .collect(),
            delta_uses: c.delta_uses.clone(),
            n_whole_row: c.foreign_keys.len() + c.uniques.len() + self.indexes.len(),
        }
    }

    fn load_row(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let k: K = decode(key).map_err(|e| format!("{}.{} key: {e}", self.service, self.name))?;
        let v: V = decode(value).map_err(|e| format!("{}.{} row: {e}", self.service, self.name))?;
        let old = self.rows.set(k.clone(), Some(v.clone()), None);
        for ix in &mut self.indexes {
            ix.update(&k, old.as_ref(), Some(&v));
        }
        Ok(())
    }

    fn apply_row(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let k: K = decode(key).map_err(|e| format!("{}.{} key: {e}", self.service, self.name))?;
        let v: Option<V> = value
            .map(decode)
            .transpose()
            .map_err(|e| format!("{}.{} row: {e}", self.service, self.name))?;
        self.apply(k, v);
        Ok(())
    }

    fn erase_subject(
        &mut self,
        rules: &crate::governance::TableGovernance,
        subject: &str,
    ) -> usize {
        let mut erased: Vec<(K, V)> = Vec::new();
        for (key, row) in self.rows.iter() {
            if (rules.subject_of)(key, row).as_deref() != Some(subject) {
                continue;
            }
            let mut row = row.clone();
            if (rules.erase_row)(key, &mut row, subject) {
                erased.push((key.clone(), row));
            }
        }
        let n_erased = erased.len();
        for (key, row) in erased {
            self.apply(key, Some(row));
        }
        n_erased
    }
}
