//! Data governance: personal-data categories on table fields, the purposes each category may be
//! used for, the purposes handlers serve, the read check `TxnCtx` runs, and the build-time
//! check `#[service]` generates. Semantics: `docs/governance.md`.
//!
//! A row type declares its personal fields (`#[pii]`, `#[category(card)]` under
//! `#[derive(Table)]`, which implements [`Governed`]) and whose data it is (its *subject*). The
//! application declares once which purposes each category may serve (`#[app(allow(..))]`, or
//! [`AppBuilder::allow`](crate::AppBuilder::allow) for a hand-written `App`), and each handler
//! the purposes it serves (`#[handler(purpose = "checkout")]`). A handler step that reads a row
//! with a personal field whose category allows none of its purposes aborts with
//! [`AbortReason::PurposeNotAllowed`](crate::AbortReason::PurposeNotAllowed).

use crate::row::{Key, Row};
use std::any::Any;
use std::sync::Arc;

/// `(category, purposes it may serve)` pairs, as `#[app(allow(..))]` declares them.
pub type PurposePolicy = &'static [(&'static str, &'static [&'static str])];

/// `(field, category)` of each personal field of a row type, in field order.
pub type PersonalFields = &'static [(&'static str, &'static str)];

/// What a row type declares about personal data. `#[derive(Table)]` implements it (with the
/// fields marked `#[pii]` or `#[category(..)]`); rows of other types declare none.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say whether it holds personal data",
    label = "a table row read by a #[handler] must declare its personal data",
    note = "derive `txn::Table` on the row type, or write `impl txn::governance::Governed for \
            {Self} {{}}` for a row without personal fields"
)]
pub trait Governed {
    /// The personal fields and their categories; empty for a row without personal data.
    const PERSONAL_FIELDS: PersonalFields = &[];
}

macro_rules! not_personal {
    ($($t:ty),* $(,)?) => { $(impl Governed for $t {})* };
}
not_personal!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String
);
impl<T> Governed for Vec<T> {}
impl<T> Governed for Option<T> {}
impl<K, V> Governed for std::collections::BTreeMap<K, V> {}
impl<A, B> Governed for (A, B) {}
impl<A, B, C> Governed for (A, B, C) {}

/// What an erasure did ([`crate::erasure::forget_dir`] on a stopped store,
/// [`Client::forget`](crate::Client::forget) on a running one).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ForgetReport {
    pub subject: String,
    /// Rows of the subject whose personal fields were erased.
    pub rows_erased: usize,
    /// The epoch of the checkpoint that now holds the erased state (the log is empty below it).
    pub checkpoint_epoch: u64,
}

/// The type-erased personal-data rules of one table, kept in its `TableDef`.
pub(crate) struct TableGovernance {
    pub fields: PersonalFields,
    /// The subject of a row (its `&K` and `&V` behind `Any`), for audits.
    pub subject_of: SubjectOf,
    /// Given a checkpoint row's rmp key and value and a subject: the row re-encoded with its
    /// personal fields erased if it is the subject's, `None` if it is not.
    pub erase_encoded: EraseEncoded,
    /// Given a live row's `&K` and `&mut V` behind `Any` and a subject: erases the row's
    /// personal fields in place if it is the subject's and says whether it did (live erasure,
    /// `Client::forget`).
    pub erase_row: EraseRow,
}

/// See [`TableGovernance::subject_of`].
pub(crate) type SubjectOf = Box<dyn Fn(&dyn Any, &dyn Any) -> Option<String> + Send + Sync>;

/// See [`TableGovernance::erase_row`].
pub(crate) type EraseRow = Box<dyn Fn(&dyn Any, &mut dyn Any, &str) -> bool + Send + Sync>;

/// See [`TableGovernance::erase_encoded`].
pub(crate) type EraseEncoded =
    Box<dyn Fn(&[u8], &[u8], &str) -> Result<Option<Vec<u8>>, String> + Send + Sync>;

impl TableGovernance {
    /// The rules of a table with rows `V` keyed by `K`: `subject` names a row's subject,
    /// `erase` clears its personal fields.
    pub fn new<K: Key, V: Row>(
        fields: PersonalFields,
        subject: fn(&K, &V) -> String,
        erase: fn(&mut V),
    ) -> Self {
        TableGovernance {
            fields,
            subject_of: Box::new(move |key, row| {
                Some(subject(key.downcast_ref::<K>()?, row.downcast_ref::<V>()?))
            }),
            erase_encoded: Box::new(move |key, row, wanted| {
                let key: K = rmp_serde::from_slice(key).map_err(|e| e.to_string())?;
                let mut row: V = rmp_serde::from_slice(row).map_err(|e| e.to_string())?;
                if subject(&key, &row) != wanted {
                    return Ok(None);
                }
                erase(&mut row);
                rmp_serde::to_vec(&row).map(Some).map_err(|e| e.to_string())
            }),
            erase_row: Box::new(move |key, row, wanted| {
                let (Some(key), Some(row)) = (key.downcast_ref::<K>(), row.downcast_mut::<V>())
                else {
                    return false;
                };
                if subject(key, row) != wanted {
                    return false;
                }
                erase(row);
                true
            }),
        }
    }
}

/// The application's purposes, compiled at `build` into bit masks: one bit per purpose.
#[derive(Default)]
pub(crate) struct Governance {
    /// Whether any table has personal fields: when not, reads check nothing.
    pub enabled: bool,
    pub purposes: Vec<&'static str>,
    /// Per category name: the mask of purposes it may serve.
    pub allowed: Vec<(&'static str, u64)>,
    /// Per service: `(event kind, mask of the purposes its handler serves)`.
    pub handlers: Vec<Vec<(&'static str, u64)>>,
    /// Per service, per table: its personal fields with their categories' allowed masks.
    pub tables: Vec<Vec<Option<Arc<TableRule>>>>,
}

/// A table's personal fields, each with the purposes its category allows.
pub(crate) struct TableRule {
    pub fields: Vec<(&'static str, &'static str, u64)>,
    pub governance: Arc<TableGovernance>,
}

/// One read that the policy refuses: the field, its category and the step's purposes.
pub(crate) struct Denied {
    pub field: &'static str,
    pub category: &'static str,
}

impl Governance {
    /// The bit of `purpose`, adding it if new; `None` past `PURPOSES_MAX`.
    fn bit(&mut self, purpose: &'static str) -> Option<u64> {
        let i = match self.purposes.iter().position(|p| *p == purpose) {
            Some(i) => i,
            None => {
                self.purposes.push(purpose);
                self.purposes.len() - 1
            }
        };
        (i < crate::limits::PURPOSES_MAX).then(|| 1u64 << i)
    }

    /// The mask of `purposes`, or the problem with them.
    pub fn mask(&mut self, purposes: &[&'static str]) -> Result<u64, String> {
        let mut mask = 0;
        for p in purposes {
            mask |= self.bit(p).ok_or_else(|| {
                format!(
                    "more than {} distinct purposes are declared (at {p:?})",
                    crate::limits::PURPOSES_MAX
                )
            })?;
        }
        Ok(mask)
    }

    /// The purposes category `category` may serve.
    pub fn allowed_mask(&self, category: &str) -> u64 {
        self.allowed
            .iter()
            .filter(|(c, _)| *c == category)
            .fold(0, |acc, (_, m)| acc | m)
    }

    /// The rule of table `table` of service `service`, if it has personal fields.
    #[inline]
    pub fn rule(&self, service: u32, table: u32) -> Option<&TableRule> {
        self.tables
            .get(service as usize)?
            .get(table as usize)?
            .as_deref()
    }

    /// The purposes of the handler of `kind` in service `service`.
    pub fn handler_mask(&self, service: u32, kind: &str) -> u64 {
        self.handlers
            .get(service as usize)
            .and_then(|h| h.iter().find(|(k, _)| *k == kind))
            .map_or(0, |(_, m)| *m)
    }

    /// The mask of the declared purposes among `names` (one no handler or category declares
    /// allows nothing, so it adds no bit).
    pub fn mask_of_names(&self, names: &[&str]) -> u64 {
        self.purposes
            .iter()
            .enumerate()
            .filter(|(_, p)| names.contains(p))
            .fold(0, |mask, (i, _)| mask | (1 << i))
    }

    /// The names of the purposes in `mask`.
    pub fn purpose_names(&self, mask: u64) -> Vec<String> {
        self.purposes
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| p.to_string())
            .collect()
    }
}

impl TableRule {
    /// The first personal field none of whose category's allowed purposes is in `purposes`.
    #[inline]
    pub fn denied(&self, purposes: u64) -> Option<Denied> {
        self.fields
            .iter()
            .find(|(_, _, allowed)| allowed & purposes == 0)
            .map(|(field, category, _)| Denied { field, category })
    }
}

/// What the build-time check of a handler's direct reads found (`#[service]` evaluates it in a
/// constant, so a refused read is a compile error carrying [`Verdict::denied`]'s message).
#[doc(hidden)]
pub struct Verdict {
    bytes: [u8; VERDICT_BYTES_MAX],
    len: usize,
}

/// The longest build-time refusal message, in bytes (longer ones are cut).
const VERDICT_BYTES_MAX: usize = 480;

impl Verdict {
    const fn allowed() -> Self {
        Verdict {
            bytes: [0; VERDICT_BYTES_MAX],
            len: 0,
        }
    }

    const fn push(mut self, text: &str) -> Self {
        let text = text.as_bytes();
        let mut i = 0;
        while i < text.len() && self.len < VERDICT_BYTES_MAX {
            self.bytes[self.len] = text[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    /// The refusal, if the read is refused.
    pub const fn denied(&self) -> Option<&str> {
        if self.len == 0 {
            return None;
        }
        match core::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(text) => Some(text),
            Err(_) => Some("a handler reads personal data its purposes do not allow"),
        }
    }
}

/// A table or index handle: the row type it reads. The build-time check finds reads by their
/// shape (`.get(self.field, ..)`), so a slice's `.get(self.index)` looks like one: integers
/// read no rows.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a table nor an index handle",
    note = "#[service] checks the purposes of `.get(self.<field>, ..)`, `.scan*(..)` and \
            `.lookup(..)` calls on table fields; read other fields through a local variable"
)]
pub trait ReadsRows {
    type Row;
}

macro_rules! reads_no_rows {
    ($($t:ty),* $(,)?) => { $(impl ReadsRows for $t { type Row = (); })* };
}
reads_no_rows!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `policy` lets `category` serve one of `purposes`.
const fn allows(policy: PurposePolicy, category: &str, purposes: &[&str]) -> bool {
    let mut i = 0;
    while i < policy.len() {
        if same(policy[i].0, category) {
            let mut j = 0;
            while j < policy[i].1.len() {
                let mut k = 0;
                while k < purposes.len() {
                    if same(policy[i].1[j], purposes[k]) {
                        return true;
                    }
                    k += 1;
                }
                j += 1;
            }
        }
        i += 1;
    }
    false
}

/// The build-time check of one direct read in a handler: `field` (a closure `|s: &Service|
/// &s.table` naming the handle, only used for its type) read by handler `handler` serving
/// `purposes`, under the policy of application `A`.
#[doc(hidden)]
pub const fn verdict<A: crate::App, S, T: ReadsRows, F: Fn(&S) -> &T>(
    field: F,
    purposes: &[&str],
    handler: &str,
    table: &str,
) -> Verdict
where
    T::Row: Governed,
{
    core::mem::forget(field);
    let fields = <T::Row as Governed>::PERSONAL_FIELDS;
    let mut i = 0;
    while i < fields.len() {
        let (name, category) = fields[i];
        if !allows(A::PURPOSES_ALLOWED, category, purposes) {
            let v = Verdict::allowed()
                .push("handler `")
                .push(handler)
                .push("` reads `self.")
                .push(table)
                .push("`, whose field `")
                .push(name)
                .push("` is personal data of category `")
                .push(category)
                .push("`, which the application allows for none of the handler's purposes");
            return if purposes.is_empty() {
                v.push(" (it declares none: add #[handler(purpose = \"..\")])")
            } else {
                v.push(" (add the purpose to the category in #[app(allow(..))])")
            };
        }
        i += 1;
    }
    Verdict::allowed()
}

/// What `compile` needs of one service: its handlers' purposes by event kind, and each of
/// its tables' personal-data rules.
pub(crate) struct ServiceRules {
    pub handlers: Vec<(&'static str, &'static [&'static str])>,
    pub tables: Vec<Option<Arc<TableGovernance>>>,
}

/// Compiles the declared policy (`from_app`, or `from_builder` for hand-written apps) and the
/// services' handler purposes into masks, or lists what is wrong with them.
pub(crate) fn compile(
    services: &[ServiceRules],
    from_app: PurposePolicy,
    from_builder: &[(&'static str, Vec<&'static str>)],
) -> Result<Governance, Vec<String>> {
    let mut g = Governance::default();
    let mut problems = Vec::new();
    if !from_app.is_empty() && !from_builder.is_empty() {
        problems.push(
            "purposes are declared both in #[app(allow(..))] and with AppBuilder::allow: \
             declare them in one place"
                .to_string(),
        );
    }
    let policy = from_app
        .iter()
        .map(|(c, p)| (*c, p.to_vec()))
        .chain(from_builder.iter().cloned());
    for (category, purposes) in policy {
        match g.mask(&purposes) {
            Ok(mask) => g.allowed.push((category, mask)),
            Err(e) => problems.push(e),
        }
    }
    for s in services {
        let mut handlers = Vec::new();
        for (kind, purposes) in &s.handlers {
            match g.mask(purposes) {
                Ok(mask) => handlers.push((*kind, mask)),
                Err(e) => problems.push(e),
            }
        }
        g.handlers.push(handlers);
        let tables = s.tables.iter().map(|t| {
            let governance = t.clone()?;
            let fields = governance
                .fields
                .iter()
                .map(|(f, c)| (*f, *c, g.allowed_mask(c)))
                .collect();
            Some(Arc::new(TableRule { fields, governance }))
        });
        let tables: Vec<_> = tables.collect();
        g.enabled |= tables.iter().any(Option::is_some);
        g.tables.push(tables);
    }
    if problems.is_empty() {
        Ok(g)
    } else {
        Err(problems)
    }
}
