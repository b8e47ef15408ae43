//! Secondary indexes: rows of a table by a derived value, per partition.
//!
//! An index is kept up to date by the commit phase (and recovery), so queries read it at the
//! same snapshot as the rows. A handler's `TxnCtx::lookup` is transactional: it records the
//! looked-up value, and in the decide phase any lower-TID write that moves a row into or out of
//! that value conflicts with it — no phantoms.
//!
//! A row may be indexed under several values (`AppBuilder::index_many`, e.g. a cart under each
//! product it holds), or none.

use smallvec::SmallVec;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The type-erased operations a table performs on its indexes.
pub(crate) trait IndexOps<K, V>: Send + Sync {
    /// A row changed from `old` to `new`.
    fn update(&mut self, key: &K, old: Option<&V>, new: Option<&V>);
    /// Whether a change from `old` to `new` changes which rows `value` (an `&I`) finds.
    fn touches(&self, old: Option<&V>, new: Option<&V>, value: &(dyn Any + Send + Sync)) -> bool;
    fn as_any(&self) -> &dyn Any;
}

/// Derives a row's index values into the buffer (none: not indexed).
pub(crate) type Extract<V, I> = Arc<dyn Fn(&V, &mut Values<I>) + Send + Sync>;

/// A row's index values, sorted and without duplicates; inline for the common one or two.
pub(crate) type Values<I> = SmallVec<[I; 2]>;

/// Makes a fresh, empty index for one partition.
pub(crate) type IndexFactory<K, V> = Arc<dyn Fn() -> Box<dyn IndexOps<K, V>> + Send + Sync>;

/// The index of one partition: value → keys of the rows with that value.
pub(crate) struct IndexState<I, K, V> {
    pub extract: Extract<V, I>,
    pub map: BTreeMap<I, BTreeSet<K>>,
}

impl<I: Ord, K, V> IndexState<I, K, V> {
    /// The index values of `row` (none for no row), sorted and deduplicated.
    pub fn values(&self, row: Option<&V>) -> Values<I> {
        let mut values = Values::new();
        if let Some(row) = row {
            (self.extract)(row, &mut values);
            if values.len() > 1 {
                values.sort_unstable();
                values.dedup();
            }
        }
        values
    }
}

impl<I: Ord + Clone + Send + Sync + 'static, K: Ord + Clone + Send + Sync + 'static, V: 'static>
    IndexOps<K, V> for IndexState<I, K, V>
{
    fn update(&mut self, key: &K, old: Option<&V>, new: Option<&V>) {
        let before = self.values(old);
        let after = self.values(new);
        if before == after {
            return;
        }
        for b in before.iter().filter(|b| after.binary_search(b).is_err()) {
            if let Some(keys) = self.map.get_mut(b) {
                keys.remove(key);
                if keys.is_empty() {
                    self.map.remove(b);
                }
            }
        }
        for a in after
            .into_iter()
            .filter(|a| before.binary_search(a).is_err())
        {
            self.map.entry(a).or_default().insert(key.clone());
        }
    }

    fn touches(&self, old: Option<&V>, new: Option<&V>, value: &(dyn Any + Send + Sync)) -> bool {
        let Some(value) = value.downcast_ref::<I>() else {
            return false;
        };
        let before = self.values(old);
        let after = self.values(new);
        before.binary_search(value).is_ok() != after.binary_search(value).is_ok()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
