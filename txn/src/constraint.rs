//! Declared constraints of a table: row checks and foreign keys (also across services).
//!
//! - A **check** (`AppBuilder::check`) is a predicate on a row, evaluated when a handler writes
//!   the row; a failing check aborts the whole transaction with `AbortReason::Constraint`.
//! - A **foreign key** (`AppBuilder::foreign_key`) says that a row of the child table refers to
//!   a row of a parent table, possibly in another service. Writing a child row sends a *probe*
//!   step, in the same transaction, to the partition owning the parent key; the probe reads the
//!   parent row like any handler read (so a concurrent delete of the parent by a lower TID is a
//!   read-after-write conflict and the transaction re-runs), and a missing parent aborts the
//!   whole transaction. The probe sees the parent as committed before the epoch plus this
//!   transaction's own writes that ran before the probe in chain order.
//!   What a parent delete does is declared with [`OnDelete`]: the runtime keeps, per foreign
//!   key, a hidden secondary index child-fk-value → child keys in the child table (placed
//!   where the children live). Deleting a parent row sends a [`ParentDeleted`] step, in the
//!   same transaction, to every partition of the child service; it looks the children up
//!   through that index (a recorded lookup, so a lower-TID child insert in the same epoch
//!   conflicts with it) and then aborts the transaction (`Restrict`) or deletes them
//!   (`Cascade`, recursively through their own children, within the `TxnLimits`).
//! - A **unique** constraint (`AppBuilder::unique`) keeps a hidden index table in the same
//!   service, placed by the unique value, mapping value → row key. Writing a row sends a claim
//!   step (and a release step for a changed value) to the value's partition in the same
//!   transaction: two transactions claiming one value conflict like any two writers, and a value
//!   held by another row aborts the transaction. Uniqueness is global, across partitions.

use crate::ids::GlobalPartition;
use std::sync::Arc;

/// A named predicate on rows of a table.
pub(crate) struct Check<V> {
    pub name: String,
    pub pred: Box<dyn Fn(&V) -> bool + Send + Sync>,
}

/// Where a foreign key points: resolved when the application is built.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FkTarget {
    /// The constraint's name, for messages.
    pub name: String,
    pub parent_service: String,
    pub parent_table: String,
    pub parent_table_idx: u32,
}

/// What deleting a parent row that still has children does (SQL's `ON DELETE`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum OnDelete {
    /// The delete is refused: the deleting transaction aborts with `AbortReason::Constraint`
    /// naming the foreign key and a child row.
    #[default]
    Restrict,
    /// The children are deleted in the same transaction (and theirs, recursively).
    Cascade,
}

/// A foreign key seen from its parent table: where the children live and what a delete does.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChildLink {
    pub target: Arc<FkTarget>,
    /// The child table's service and name, for messages.
    pub child: Arc<(String, String)>,
    #[serde(with = "crate::ids::service_ref_by_value")]
    pub child_service: crate::ids::ServiceRef,
    pub child_table_idx: u32,
    /// The hidden index of the child table: encoded parent key → child keys.
    pub child_index_idx: u32,
    pub on_delete: OnDelete,
}

/// A parent row was deleted: look its children up in one child partition and act on them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ParentDeleted {
    pub link: Arc<ChildLink>,
    /// The deleted parent's key, encoded (the value of the child table's hidden index).
    #[serde(with = "serde_bytes")]
    pub parent_key: Vec<u8>,
}

/// A step a table's write sends to another partition to keep its constraints.
pub(crate) enum ConstraintStep {
    Index(IndexOp),
    ParentDeleted(ParentDeleted),
}

/// A foreign key of a child table: extracts the parent key (encoded) and its global partition.
pub(crate) struct ForeignKey<V> {
    pub target: Arc<FkTarget>,
    #[allow(clippy::type_complexity)]
    pub locate: Box<dyn Fn(&V) -> Option<(Vec<u8>, GlobalPartition)> + Send + Sync>,
}

/// Where a unique constraint keeps its index: a hidden table of the same service, placed by the
/// unique value, mapping value → owning row key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct UniqueTarget {
    pub name: String,
    pub index_table_idx: u32,
}

/// A unique constraint of a table: extracts the (encoded) unique value and the index partition.
pub(crate) struct Unique<V> {
    pub target: Arc<UniqueTarget>,
    /// The constrained table's service and name, for messages.
    pub table: Arc<(String, String)>,
    #[allow(clippy::type_complexity)]
    pub locate: Box<dyn Fn(&V) -> Option<(Vec<u8>, GlobalPartition)> + Send + Sync>,
}

/// A declared lower bound `field >= min` (`AppBuilder::field_min`): checked on writes like a
/// check, and known to deltas, which keep it by escrow.
pub(crate) struct FieldMin<V> {
    pub field: crate::delta::Field<V>,
    pub min: i64,
    /// `"stock >= 0"`, for messages.
    pub name: String,
}

/// All constraints of one table.
pub(crate) struct Constraints<V> {
    pub checks: Vec<Check<V>>,
    pub field_mins: Vec<FieldMin<V>>,
    /// Declared delta uses by field name (`AppBuilder::delta_field`), for the analysis only.
    pub delta_uses: Vec<(&'static str, crate::coordination::DeltaUse)>,
    pub foreign_keys: Vec<ForeignKey<V>>,
    pub uniques: Vec<Unique<V>>,
    /// The foreign keys that refer to this table (it is their parent).
    pub referenced_by: Vec<Arc<ChildLink>>,
}

impl<V> Default for Constraints<V> {
    fn default() -> Self {
        Constraints {
            checks: Vec::new(),
            field_mins: Vec::new(),
            delta_uses: Vec::new(),
            foreign_keys: Vec::new(),
            uniques: Vec::new(),
            referenced_by: Vec::new(),
        }
    }
}

impl<V> Constraints<V> {
    /// The name of the first check `row` fails.
    pub fn failed_check(&self, row: &V) -> Option<&str> {
        let bound = self.field_mins.iter().find(|b| b.field.read(row) < b.min);
        if let Some(bound) = bound {
            return Some(bound.name.as_str());
        }
        self.checks
            .iter()
            .find(|c| !(c.pred)(row))
            .map(|c| c.name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
            && self.field_mins.is_empty()
            && self.foreign_keys.is_empty()
            && self.uniques.is_empty()
    }

    /// Whether a constraint must see the whole new row (an opaque check, a unique value, a
    /// foreign key), so a delta on the table runs as a read-modify-write.
    pub fn needs_whole_row(&self) -> bool {
        !(self.checks.is_empty() && self.foreign_keys.is_empty() && self.uniques.is_empty())
    }

    /// The tighter of `min` and the declared minimum of `field` (by name), if any.
    pub fn min_of(&self, field: &crate::delta::Field<V>, min: i64) -> i64 {
        self.field_mins
            .iter()
            .filter(|b| b.field.name() == field.name())
            .fold(min, |min, b| min.max(b.min))
    }

    /// Pushes to `out` the steps that keep the unique constraints and the foreign keys that
    /// refer to this table when the row `key` changes from `old` to `new`.
    pub fn steps_for_change<K: crate::row::Key>(
        &self,
        key: &K,
        old: Option<&V>,
        new: Option<&V>,
        out: &mut impl FnMut(GlobalPartition, ConstraintStep),
    ) {
        if !self.uniques.is_empty() {
            self.unique_steps(key, old, new, out);
        }
        if old.is_none() || new.is_some() || self.referenced_by.is_empty() {
            return;
        }
        let parent_key = rmp_serde::to_vec(key).expect("keys serialize");
        for link in &self.referenced_by {
            for p in 0..link.child_service.n_partitions() {
                let step = ConstraintStep::ParentDeleted(ParentDeleted {
                    link: link.clone(),
                    parent_key: parent_key.clone(),
                });
                out(link.child_service.gp(p), step);
            }
        }
    }

    /// The unique-index releases and claims for a row changing from `old` to `new`.
    fn unique_steps<K: crate::row::Key>(
        &self,
        key: &K,
        old: Option<&V>,
        new: Option<&V>,
        out: &mut impl FnMut(GlobalPartition, ConstraintStep),
    ) {
        let row_key = rmp_serde::to_vec(key).expect("keys serialize");
        for u in &self.uniques {
            let before = old.and_then(|o| (u.locate)(o));
            let after = new.and_then(|n| (u.locate)(n));
            if before.as_ref().map(|b| &b.0) == after.as_ref().map(|a| &a.0) {
                continue;
            }
            for (claim, located) in [(false, before), (true, after)] {
                if let Some((value, target)) = located {
                    let op = IndexOp {
                        target: u.target.clone(),
                        child: u.table.clone(),
                        claim,
                        value,
                        row_key: row_key.clone(),
                    };
                    out(target, ConstraintStep::Index(op));
                }
            }
        }
    }
}

/// A foreign-key probe: look up `key` in table `table_idx` of the target partition.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Probe {
    pub target: Arc<FkTarget>,
    /// The child row's service and table, for the abort message.
    pub child: Arc<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

/// Maps a key to its partition among `n` (the table's placement).
pub(crate) type Placement<K> = Arc<dyn Fn(&K, u32) -> u32 + Send + Sync>;

/// Everything declared about a table besides its name: constraints and placement.
pub(crate) struct TableOptions<K, V> {
    pub constraints: Constraints<V>,
    /// `None`: rows are placed by their whole key.
    pub placement: Option<Placement<K>>,
    /// Every partition holds its own full copy (no owning partition).
    pub replicated: bool,
    /// Secondary indexes, in declaration order.
    pub indexes: Vec<crate::index::IndexFactory<K, V>>,
}

impl<K, V> Default for TableOptions<K, V> {
    fn default() -> Self {
        TableOptions {
            constraints: Constraints::default(),
            placement: None,
            replicated: false,
            indexes: Vec::new(),
        }
    }
}

/// Claim (`claim: true`) or release a unique value for a row key, in the index's partition.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct IndexOp {
    pub target: Arc<UniqueTarget>,
    pub child: Arc<(String, String)>,
    pub claim: bool,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub row_key: Vec<u8>,
}
