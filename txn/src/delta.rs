//! Merge-able integer deltas (`TxnCtx::add`, `TxnCtx::add_bounded`): how a handler names a
//! row's counter field, and the decide-phase rule that lets deltas on one row commit together.
//!
//! Deltas on a row commute, so they do not conflict with each other. A bounded delta keeps its
//! field at or above a minimum by escrow: in the decide phase it wins only if the bound holds
//! even when every lower-TID decrement of the epoch on that row commits and no increment does.
//! The same walk keeps the field inside `i64` whatever subset of the deltas commits.

use crate::bitset::SeqSet;
use crate::ids::Seq;
use smallvec::SmallVec;

/// An `i64` field of row type `V`, named for [`TxnCtx::add`](crate::TxnCtx::add).
///
/// It is a name and two plain function pointers to the field (to read it and to change it), so
/// naming a field costs nothing at run time and cannot name a field of another row type. Build
/// one with [`field!`](crate::field) (`txn::field!(Account, balance)`) or [`Field::new`]. The
/// name appears in messages and identifies the field for a bound declared with
/// `AppBuilder::field_min`; the accessors decide which field changes.
pub struct Field<V> {
    name: &'static str,
    read: fn(&V) -> i64,
    access: fn(&mut V) -> &mut i64,
}

impl<V> Clone for Field<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Field<V> {}

impl<V> std::fmt::Debug for Field<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Field({})", self.name)
    }
}

impl<V> Field<V> {
    /// The field `name` of `V`, read by `read` (`|row| row.balance`) and changed through
    /// `access` (`|row| &mut row.balance`).
    pub const fn new(
        name: &'static str,
        read: fn(&V) -> i64,
        access: fn(&mut V) -> &mut i64,
    ) -> Self {
        Field { name, read, access }
    }

    /// The field's value in `row`.
    pub fn read(&self, row: &V) -> i64 {
        (self.read)(row)
    }

    /// The field's name, as given.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The reader of the field.
    pub(crate) fn reader(&self) -> fn(&V) -> i64 {
        self.read
    }

    /// The accessor of the field.
    pub(crate) fn accessor(&self) -> fn(&mut V) -> &mut i64 {
        self.access
    }
}

/// A `Field` of a row type, by the type and the field's name: `txn::field!(Account, balance)`.
///
/// ```
/// #[derive(Clone, Debug)]
/// struct Account {
///     balance: i64,
/// }
///
/// const BALANCE: txn::Field<Account> = txn::field!(Account, balance);
/// assert_eq!(BALANCE.name(), "balance");
/// assert_eq!(BALANCE.read(&Account { balance: 7 }), 7);
/// ```
#[macro_export]
macro_rules! field {
    ($row:ty, $field:ident) => {
        $crate::Field::<$row>::new(
            ::core::stringify!($field),
            |row: &$row| row.$field,
            |row: &mut $row| &mut row.$field,
        )
    };
}

/// One buffered delta of the parallel pass: transaction `seq` adds `delta` to the field
/// `access` reaches, which must stay at least `min` (`i64::MIN` when unbounded). Only the
/// accessor is kept, not the whole `Field`, so every row access stays small (32 bytes here).
pub(crate) struct DeltaOp<V> {
    pub seq: Seq,
    pub access: fn(&mut V) -> &mut i64,
    pub delta: i64,
    pub min: i64,
}

/// A delta with the reader of the field it changes (`Field::read`), as `TableState::add_all`
/// takes them: the reader checks a delta against a row without copying it.
pub(crate) type DeltaWithReader<V> = (DeltaOp<V>, fn(&V) -> i64);

impl<V> Clone for DeltaOp<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for DeltaOp<V> {}

/// Why a delta could not be applied to a row it saw exactly (its own write, or alone).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DeltaError {
    /// The row does not exist.
    MissingRow,
    /// The field would leave `i64`.
    Overflow { value: i64 },
    /// The field would end below the delta's minimum.
    BelowMin { value: i64 },
}

impl<V> DeltaOp<V> {
    /// Applies this delta to `row` exactly (the transaction sees the row's true value).
    pub fn apply_exact(&self, row: &mut V) -> Result<(), DeltaError> {
        let value = (self.access)(row);
        *value = self.checked(*value)?;
        Ok(())
    }

    /// The field's new value if it was `value`, or why the delta cannot apply.
    pub fn checked(&self, value: i64) -> Result<i64, DeltaError> {
        let new = value
            .checked_add(self.delta)
            .ok_or(DeltaError::Overflow { value })?;
        if new < self.min {
            return Err(DeltaError::BelowMin { value });
        }
        Ok(new)
    }
}

/// `deltas` in ascending seq order (insertion order among equal seqs, which is the
/// transaction's own order). A list already ascending — the common case: a wave's steps run in
/// seq order — is walked as it is; otherwise `order` (a buffer the caller keeps, so this
/// allocates nothing once it has grown) receives the sorted positions.
pub(crate) fn in_seq_order<'a, V>(
    deltas: &'a [DeltaOp<V>],
    ascending: bool,
    order: &'a mut Vec<u32>,
) -> impl Iterator<Item = &'a DeltaOp<V>> + 'a {
    order.clear();
    let n_in_place = if ascending {
        deltas.len()
    } else {
        order.extend(0..deltas.len() as u32);
        // Stable, so a transaction's own deltas keep their order.
        order.sort_by_key(|i| deltas[*i as usize].seq);
        0
    };
    let sorted: &'a [u32] = order;
    deltas[..n_in_place]
        .iter()
        .chain(sorted.iter().map(move |i| &deltas[*i as usize]))
}

/// The decide phase for the deltas on one row: adds to `conflicts` every delta's transaction
/// that must not commit in parallel, and returns the lowest seq whose delta may commit (later
/// readers of the row read after it, so they lose) and how many transactions it added.
/// `order` is a buffer for `in_seq_order`.
///
/// A delta above the row's reserved plain writer loses (it relies on the row the write
/// replaces), even one of a transaction that aborted on its own. The others are walked in seq
/// order keeping two bounds of each field: `low` adds only the decrements, `high` only the
/// increments, of every transaction below the writer, aborted or not. Whatever subset of them
/// commits, the field's true value after each delta lies between the bounds, so a delta
/// commits only if `low` stays at or above its minimum and neither bound leaves `i64`. The
/// outcome depends only on the row's accesses, never on the order rows are decided in.
pub(crate) fn decide_deltas<V: Clone>(
    committed: Option<&V>,
    (deltas, ascending, order): (&[DeltaOp<V>], bool, &mut Vec<u32>),
    reserved: Option<Seq>,
    user_aborted: &SeqSet,
    conflicts: &mut SeqSet,
) -> (Option<Seq>, u64) {
    let mut lost = 0u64;
    let Some(committed) = committed else {
        // Deltas are recorded only on rows that existed at the epoch's start; keep it safe.
        for d in deltas {
            lost += u64::from(conflicts.insert(d.seq));
        }
        return (None, lost);
    };
    let (mut low, mut high) = (committed.clone(), committed.clone());
    let mut first = None;
    let mut ops = in_seq_order(deltas, ascending, order).peekable();
    while let Some(seq) = ops.peek().map(|d| d.seq) {
        // A delta relies on the row existing, as a read does: above the reserved writer it
        // loses even if its transaction aborted on its own (that abort may rest on the row).
        if reserved.is_some_and(|w| seq > w) {
            lost += u64::from(conflicts.insert(seq));
            while ops.next_if(|d| d.seq == seq).is_some() {}
            continue;
        }
        // Every delta counts against the bounds, a loser's or an aborted transaction's too
        // (conservative), and nothing is read from `conflicts`: it holds losers of rows
        // decided before this one, in an order replay need not repeat. A transaction its
        // handler aborted is checked too: its abort may come after a bound that would have
        // failed first, so it must run again alone unless its bounds surely hold.
        if !user_aborted.contains(seq) {
            first.get_or_insert(seq);
        }
        let group = std::iter::from_fn(|| ops.next_if(|d| d.seq == seq));
        if !walk_transaction(group, &mut low, &mut high) {
            lost += u64::from(conflicts.insert(seq));
        }
    }
    (first, lost)
}

/// Walks one transaction's deltas on a row (`group`, in its order) through the bounds: every
/// delta moves `high` up or `low` down, and the transaction's own increments also count in
/// `low` for its own later bounds (they commit with it), then are taken back out, since other
/// transactions may not count on them. With no lower-TID delta on the row, `low` is then the
/// transaction's exact view, so the lowest TID never loses by escrow when its view passes.
/// Whether the transaction's bounds surely hold and no bound leaves `i64`.
fn walk_transaction<'a, V: 'a>(
    group: impl Iterator<Item = &'a DeltaOp<V>>,
    low: &mut V,
    high: &mut V,
) -> bool {
    // Inline room for as many increments as a transaction usually makes on one row (a
    // seller's dashboard shard takes 7 per entry), so the walk allocates nothing.
    let mut own_increments: SmallVec<[&DeltaOp<V>; 16]> = SmallVec::new();
    let mut holds = true;
    for d in group {
        let bound = if d.delta < 0 { &mut *low } else { &mut *high };
        let value = (d.access)(bound);
        let Some(new) = value.checked_add(d.delta) else {
            holds = false;
            continue;
        };
        *value = new;
        if d.delta > 0 {
            // Below `high`, which took the same increment without overflowing.
            *(d.access)(low) += d.delta;
            own_increments.push(d);
        }
        holds &= *(d.access)(low) >= d.min;
    }
    for d in own_increments {
        *(d.access)(low) -= d.delta;
    }
    holds
}

#[cfg(test)]
mod tests {
    use super::DeltaOp;

    // Goal: a buffered delta stays small, since every touched row's access holds one inline.
    #[test]
    fn a_delta_op_is_32_bytes() {
        assert_eq!(std::mem::size_of::<DeltaOp<(u64, String)>>(), 32);
    }
}
