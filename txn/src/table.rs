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
use crate::coordination::TableSummary;
use crate::delta::{DeltaError, DeltaOp, decide_deltas, seq_order};
use crate::ids::{GlobalPartition, Seq};
use crate::index::{IndexOps, IndexState};
use crate::row_key::{CheckpointRow, DeferredRows};
use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;
use std::any::Any;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Committed rows: hashed for point access, or ordered when the table is scanned.
pub(crate) enum Rows<K, V> {
    Hash(FxHashMap<K, V>),
    Ordered(BTreeMap<K, V>),
}

impl<K: Ord + Hash + Eq, V> Rows<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        match self {
            Rows::Hash(m) => m.get(k),
            Rows::Ordered(m) => m.get(k),
        }
    }
    fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self {
            Rows::Hash(m) => m.insert(k, v),
            Rows::Ordered(m) => m.insert(k, v),
        }
    }
    fn remove(&mut self, k: &K) -> Option<V> {
        match self {
            Rows::Hash(m) => m.remove(k),
            Rows::Ordered(m) => m.remove(k),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Rows::Hash(m) => m.len(),
            Rows::Ordered(m) => m.len(),
        }
    }
    /// Every row, in arbitrary order for hash tables and key order for ordered ones.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&K, &V)> + '_> {
        match self {
            Rows::Hash(m) => Box::new(m.iter()),
            Rows::Ordered(m) => Box::new(m.iter()),
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
            for d in self.deltas.iter().filter(|d| d.seq == seq) {
                let field = (d.access)(row);
                *field = field.wrapping_add(d.delta);
            }
        }
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
    /// The epoch's accesses. Empty while a transaction runs alone (the parallel pass's were
    /// settled by the commit before the serial pass starts).
    access: FxHashMap<K, Access<V>>,
    /// Whether one transaction runs alone (the serial pass): it reads and writes the rows in
    /// place, no access is recorded, and `undo` remembers what to restore if it aborts.
    solo: bool,
    /// The old values of the rows the solo transaction changed, in change order.
    undo: Vec<(K, Option<V>)>,
    scans: Vec<(Seq, Bound<K>, Bound<K>)>,
    /// Whether any access of the epoch holds a delta (so scans apply their own deltas).
    has_deltas: bool,
    /// Secondary indexes of this partition's rows.
    pub indexes: Vec<Box<dyn IndexOps<K, V>>>,
    /// Index lookups of the current epoch: `(seq, index, looked-up value)`.
    index_reads: Vec<(Seq, usize, Box<dyn Any + Send + Sync>)>,
    /// Rows changed since the last checkpoint (only tracked when checkpoints are taken).
    dirty: FxHashSet<K>,
    track_dirty: bool,
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
                Rows::Ordered(BTreeMap::new())
            } else {
                Rows::Hash(FxHashMap::default())
            },
            access: FxHashMap::default(),
            solo: false,
            undo: Vec::new(),
            scans: Vec::new(),
            has_deltas: false,
            dirty: FxHashSet::default(),
            track_dirty: true,
        }
    }

    /// Applies one committed change to the rows and every index; returns the old row.
    fn apply(&mut self, key: K, value: Option<V>) -> Option<V> {
        let old = if self.indexes.is_empty() {
            match value {
                Some(v) => self.rows.insert(key.clone(), v),
                None => self.rows.remove(&key),
            }
        } else {
            let old = match &value {
                Some(v) => self.rows.insert(key.clone(), v.clone()),
                None => self.rows.remove(&key),
            };
            for ix in &mut self.indexes {
                ix.update(&key, old.as_ref(), value.as_ref());
            }
            old
        };
        Self::mark_dirty(&mut self.dirty, self.track_dirty, key);
        old
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
        for (k, acc) in &self.access {
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

    fn mark_dirty(dirty: &mut FxHashSet<K>, track: bool, key: K) {
        if track {
            dirty.insert(key);
        }
    }

    pub fn is_ordered(&self) -> bool {
        matches!(self.rows, Rows::Ordered(_))
    }

    /// Reads `key` for transaction `seq`: its own buffered write if it has one, else the
    /// committed row (recording the read for conflict detection).
    pub fn get(&mut self, seq: Seq, key: &K) -> Option<V> {
        if self.solo {
            // The rows hold the solo transaction's own writes already.
            return self.rows.get(key).cloned();
        }
        let accesses = &mut self.access;
        if let Some(acc) = accesses.get_mut(key) {
            if let Some((_, v)) = acc.own_write(seq) {
                return v.clone();
            }
            if acc.readers.last() != Some(&seq) {
                acc.readers.push(seq);
            }
            let mut value = self.rows.get(key).cloned();
            acc.apply_own_deltas(seq, &mut value);
            return value;
        }
        let mut acc = Access::new();
        acc.readers.push(seq);
        accesses.insert(key.clone(), acc);
        self.rows.get(key).cloned()
    }

    /// Adds `op.delta` to a field of row `key` for transaction `op.seq`. Alone, or on the
    /// transaction's own buffered write, the row's value is known and the delta applies at
    /// once (checked); otherwise it is buffered as a delta, which conflicts with no other
    /// delta. A row missing from the committed state is an error recorded as a read, so a
    /// lower-TID transaction creating it makes this one run again.
    ///
    /// Otherwise the delta is first checked against the transaction's own view (the committed
    /// row plus its own deltas, read through `read`): a delta that fails there aborts the
    /// transaction now, recorded as a read of the row, so it runs again if a lower TID changed
    /// the row, and its failure stands if none did. The lowest TID thus never loses by escrow.
    pub fn add(&mut self, key: &K, op: DeltaOp<V>, read: fn(&V) -> i64) -> Result<(), DeltaError> {
        if self.solo {
            let mut row = self.rows.get(key).cloned().ok_or(DeltaError::MissingRow)?;
            op.apply_exact(&mut row)?;
            let old = self.apply(key.clone(), Some(row));
            self.undo.push((key.clone(), old));
            return Ok(());
        }
        let seq = op.seq;
        if !self.access.contains_key(key) {
            self.access.insert(key.clone(), Access::new());
        }
        let acc = self.access.get_mut(key).expect("inserted above");
        if let Some((_, own)) = acc.own_write(seq) {
            return op.apply_exact(own.as_mut().ok_or(DeltaError::MissingRow)?);
        }
        let in_view = match self.rows.get(key) {
            None => Err(DeltaError::MissingRow),
            Some(row) if acc.may_have_deltas(seq) => {
                let mut view = Some(row.clone());
                acc.apply_own_deltas(seq, &mut view);
                op.apply_exact(view.as_mut().expect("the row exists"))
            }
            Some(row) => op.checked(read(row)).map(drop),
        };
        if let Err(error) = in_view {
            if acc.readers.last() != Some(&seq) {
                acc.readers.push(seq);
            }
            return Err(error);
        }
        self.has_deltas = true;
        acc.push_delta(op);
        Ok(())
    }

    /// Buffers a write (`Some`) or delete (`None`) of `key` by transaction `seq`.
    pub fn write(&mut self, seq: Seq, key: K, value: Option<V>) {
        if self.solo {
            let old = self.apply(key.clone(), value);
            self.undo.push((key, old));
            return;
        }
        let acc = self.access.entry(key).or_insert_with(Access::new);
        if acc.may_have_deltas(seq) && acc.deltas.iter().any(|d| d.seq == seq) {
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
        let Rows::Ordered(rows) = &self.rows else {
            unreachable!("scan on a hash table is rejected by the context");
        };
        let accesses = &self.access;
        // This transaction's own buffered writes in the range, which override the committed
        // rows (none when it runs alone: they are in the rows already).
        let own: BTreeMap<&K, &Option<V>> = accesses
            .iter()
            .filter(|(k, _)| range.contains(*k))
            .filter_map(|(k, acc)| {
                acc.writers
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, v)| (k, v))
            })
            .collect();
        let limit = limit.unwrap_or(usize::MAX);
        let mut out: Vec<(K, V)> = Vec::new();
        let mut committed = rows
            .range::<K, _>((range.0.as_ref(), range.1.as_ref()))
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
                if let Some(acc) = accesses.get(k) {
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
        self.scans.push((seq, range.0, hi));
        out
    }
}

impl<K: crate::row::Key, V: crate::row::Row> TableState<K, V> {
    /// The decide phase for the deltas on row `key` (see `delta::decide_deltas`): later
    /// readers and scans of the row read after the lowest delta that may commit, so they lose.
    fn decide_row_deltas(
        &self,
        key: &K,
        acc: &Access<V>,
        reserved: Option<Seq>,
        user_aborted: &SeqSet,
        conflicts: &mut SeqSet,
    ) {
        let committed = self.rows.get(key);
        let ascending = acc.deltas_ascending;
        let first = decide_deltas(
            committed,
            &acc.deltas,
            ascending,
            reserved,
            user_aborted,
            conflicts,
        );
        let Some(d) = first else { return };
        for r in &acc.readers {
            if *r > d {
                conflicts.insert(*r);
            }
        }
        for (s, lo, hi) in &self.scans {
            if *s > d && (lo.as_ref(), hi.as_ref()).contains(key) {
                conflicts.insert(*s);
            }
        }
    }

    /// Applies the committed deltas on row `key`, in seq order, to its committed value.
    fn commit_deltas(&mut self, key: K, deltas: &[DeltaOp<V>], ascending: bool, aborted: &SeqSet) {
        let mut committed = deltas
            .iter()
            .filter(|d| !aborted.contains(d.seq))
            .peekable();
        if committed.peek().is_none() {
            return;
        }
        let mut row = self.rows.get(&key).cloned().unwrap_or_else(|| {
            panic!(
                "committed delta on missing row {}.{} {key:?}: decide is broken",
                self.service, self.name
            )
        });
        for i in seq_order(deltas, ascending) {
            let d = &deltas[i as usize];
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
        self.apply(key, Some(row));
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
    /// Whether any row changed since the last `take_dirty` (only tracked when enabled).
    fn has_dirty(&self) -> bool;
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
    /// What the coordination analysis reads of this table's declarations.
    fn coordination(&self) -> TableSummary;
}

fn encode<T: Serialize>(t: &T) -> Vec<u8> {
    rmp_serde::to_vec(t).expect("rows and keys of a table serialize")
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
        for (key, acc) in &self.access {
            let reserved = acc
                .writers
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| !user_aborted.contains(*s))
                .min();
            if !acc.deltas.is_empty() {
                self.decide_row_deltas(key, acc, reserved, user_aborted, conflicts);
            }
            let Some(w) = reserved else { continue };
            for (s, _) in &acc.writers {
                if *s > w {
                    conflicts.insert(*s);
                }
            }
            for r in &acc.readers {
                if *r > w {
                    conflicts.insert(*r);
                }
            }
            for (s, lo, hi) in &self.scans {
                if *s > w && (lo.as_ref(), hi.as_ref()).contains(key) {
                    conflicts.insert(*s);
                }
            }
            if !self.index_reads.is_empty() {
                let old = self.rows.get(key);
                let new = acc
                    .writers
                    .iter()
                    .find(|(s, _)| *s == w)
                    .and_then(|(_, v)| v.as_ref());
                for (s, ix, value) in &self.index_reads {
                    if *s > w && self.indexes[*ix].touches(old, new, value.as_ref()) {
                        conflicts.insert(*s);
                    }
                }
            }
        }
    }

    fn commit(&mut self, aborted: &SeqSet) {
        // Taken out and put back so `apply` can borrow the table; the map keeps its capacity.
        let mut access = std::mem::take(&mut self.access);
        for (key, acc) in access.drain() {
            let mut survivors = acc
                .writers
                .into_iter()
                .filter(|(s, _)| !aborted.contains(*s));
            if let Some((_, value)) = survivors.next() {
                assert!(
                    survivors.next().is_none(),
                    "two committed writers of {}.{} {key:?}: conflict check is broken",
                    self.service,
                    self.name
                );
                // Deltas below the writer are overwritten by it; those above it lost.
                self.apply(key, value);
            } else if !acc.deltas.is_empty() {
                self.commit_deltas(key, &acc.deltas, acc.deltas_ascending, aborted);
            }
        }
        self.access = access;
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

    fn has_access(&self) -> bool {
        !self.access.is_empty()
            || !self.undo.is_empty()
            || !self.scans.is_empty()
            || !self.index_reads.is_empty()
    }

    fn set_solo(&mut self, solo: bool) {
        debug_assert!(
            !solo || self.access.is_empty(),
            "a transaction runs alone while the epoch's accesses are unsettled"
        );
        self.solo = solo;
    }

    fn set_track_dirty(&mut self, track: bool) {
        self.track_dirty = track;
        if !track {
            self.dirty = FxHashSet::default();
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

    fn take_dirty(&mut self, key_prefix: Vec<u8>) -> DeferredRows {
        let copies: Vec<(K, Option<V>)> = self
            .dirty
            .drain()
            .map(|k| {
                let v = self.rows.get(&k).cloned();
                (k, v)
            })
            .collect();
        Box::new(move |out: &mut Vec<CheckpointRow>| {
            let mut copies = copies;
            copies.sort_by(|a, b| a.0.cmp(&b.0));
            out.reserve(copies.len());
            for (k, v) in copies {
                let mut key = key_prefix.clone();
                rmp_serde::encode::write(&mut key, &k).expect("keys serialize");
                out.push((key, v.as_ref().map(encode)));
            }
        })
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
        let old = self.rows.insert(k.clone(), v.clone());
        for ix in &mut self.indexes {
            ix.update(&k, old.as_ref(), Some(&v));
        }
        Ok(())
    }
}
