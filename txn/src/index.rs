//! Secondary indexes: rows of a table by a derived value, per partition.
//!
//! An index is kept up to date by the commit phase (and recovery), so queries read it at the
//! same snapshot as the rows. A handler's `TxnCtx::lookup` is transactional: it records the
//! looked-up value, and in the decide phase any lower-TID write that moves a row into or out of
//! that value conflicts with it — no phantoms.

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

/// Derives a row's index value (`None`: not indexed).
pub(crate) type Extract<V, I> = Arc<dyn Fn(&V) -> Option<I> + Send + Sync>;

/// Makes a fresh, empty index for one partition.
pub(crate) type IndexFactory<K, V> = Arc<dyn Fn() -> Box<dyn IndexOps<K, V>> + Send + Sync>;

/// The index of one partition: value → keys of the rows with that value.
pub(crate) struct IndexState<I, K, V> {
    pub extract: Extract<V, I>,
    pub map: BTreeMap<I, BTreeSet<K>>,
}

impl<I: Ord + Clone + Send + Sync + 'static, K: Ord + Clone + Send + Sync + 'static, V: 'static>
    IndexOps<K, V> for IndexState<I, K, V>
{
    fn update(&mut self, key: &K, old: Option<&V>, new: Option<&V>) {
        let before = old.and_then(|v| (self.extract)(v));
        let after = new.and_then(|v| (self.extract)(v));
        if before == after {
            return;
        }
        if let Some(b) = before
            && let Some(keys) = self.map.get_mut(&b)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.map.remove(&b);
            }
        }
        if let Some(a) = after {
            self.map.entry(a).or_default().insert(key.clone());
        }
    }

    fn touches(&self, old: Option<&V>, new: Option<&V>, value: &(dyn Any + Send + Sync)) -> bool {
        let Some(value) = value.downcast_ref::<I>() else {
            return false;
        };
        let before = old.and_then(|v| (self.extract)(v));
        let after = new.and_then(|v| (self.extract)(v));
        before != after && (before.as_ref() == Some(value) || after.as_ref() == Some(value))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
