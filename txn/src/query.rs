//! Read-only snapshot queries.
//!
//! A query is sequenced like a transaction and runs in wave 0 of an epoch, in every partition it
//! targets, against the state committed at the end of the previous epoch. Every partition holds
//! exactly that state during the whole execute phase (writes are buffered until commit), so a
//! query sees one consistent snapshot of all services, never a half-applied transaction, and
//! neither blocks nor aborts any writer.
//!
//! A query is a closure (`Client::query`), which runs only on the node that asked, or a named
//! query registered with the application (`AppBuilder::query`): a function of a partition's
//! view and serde arguments, called by name with encoded arguments, whose encoded per-partition
//! parts the asking client decodes and merges. A named query's name and arguments travel in the
//! wave-0 phase batch to the nodes holding the partitions it names (`wire.rs`), so it reads
//! the same snapshot there as a closure query does here.

use crate::app::{App, AppDef, Index, Key, Row, ServiceRef, Table};
use crate::partition::PartitionState;
use crate::table::TableState;
use std::any::Any;
use std::ops::RangeBounds;
use std::sync::Arc;

/// What a query's closure returned in one partition, type-erased.
pub(crate) type QueryPart = Box<dyn Any + Send>;

/// One query as a partition runs it: its type-erased per-partition closure and, for a named
/// query, its name and argument bytes, which is what travels to another node's partitions
/// (a closure cannot).
#[derive(Clone)]
pub(crate) struct QueryFn {
    pub run: Arc<dyn Fn(&ReadView<'_>) -> QueryPart + Send + Sync>,
    pub named: Option<Arc<NamedCall>>,
}

impl QueryFn {
    /// A closure query: it runs only where it was asked.
    pub fn closure(run: Arc<dyn Fn(&ReadView<'_>) -> QueryPart + Send + Sync>) -> Self {
        QueryFn { run, named: None }
    }
}

/// A call of a named query: the name it was registered under and its encoded arguments.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NamedCall {
    pub name: String,
    pub args: Vec<u8>,
}

/// What a named query answers in one partition: its part, rmp-serde encoded, or why it could
/// not (its arguments or its part did not decode or encode). It is the `QueryPart` of a named
/// query, on this node and on every other.
pub(crate) type NamedPart = Result<Vec<u8>, String>;

/// A registered query's per-partition function over encoded arguments and parts.
type NamedFn = Arc<dyn Fn(&ReadView<'_>, &[u8]) -> NamedPart + Send + Sync>;

/// The named queries of an application (`AppBuilder::query`): registered at build time, in
/// the `AppDef`, so the same set exists on every node that runs the application.
#[derive(Default)]
pub(crate) struct NamedQueries {
    entries: Vec<(String, NamedFn)>,
    /// Names registered twice, refused by `AppBuilder::build`.
    pub duplicates: Vec<String>,
}

impl NamedQueries {
    /// Registers `per_partition` under `name`, typed over its arguments and part.
    pub fn register<Args, Part>(
        &mut self,
        name: &str,
        per_partition: impl Fn(&ReadView<'_>, &Args) -> Part + Send + Sync + 'static,
    ) where
        Args: serde::de::DeserializeOwned + 'static,
        Part: serde::Serialize + 'static,
    {
        if self.find(name).is_some() {
            self.duplicates.push(name.to_string());
            return;
        }
        let run: NamedFn = Arc::new(move |view, args| {
            let args: Args = rmp_serde::from_slice(args).map_err(|e| {
                format!(
                    "its arguments do not decode as {}: {e}",
                    type_name::<Args>()
                )
            })?;
            rmp_serde::to_vec(&per_partition(view, &args))
                .map_err(|e| format!("its part does not encode: {e}"))
        });
        self.entries.push((name.to_string(), run));
    }

    fn find(&self, name: &str) -> Option<&NamedFn> {
        self.entries
            .iter()
            .find(|(entry, _)| entry == name)
            .map(|(_, run)| run)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// The query to run for `call`, or `None` if no query has its name.
    pub fn query_fn(&self, call: Arc<NamedCall>) -> Option<QueryFn> {
        let run = self.find(&call.name)?.clone();
        let args = call.clone();
        let run: Arc<dyn Fn(&ReadView<'_>) -> QueryPart + Send + Sync> =
            Arc::new(move |view| Box::new(run(view, &args.args)) as QueryPart);
        Some(QueryFn {
            run,
            named: Some(call),
        })
    }
}

fn type_name<T>() -> &'static str {
    std::any::type_name::<T>()
}

/// The handle of a named query (`AppBuilder::query`): its name, and the types of its
/// arguments and of the part each partition answers, so `Client::query_named` takes and
/// returns them typed. Merging the parts is the caller's (a fold over them, in partition
/// order), on the node that asked.
pub struct NamedQuery<Args, Part> {
    name: Arc<str>,
    types: std::marker::PhantomData<fn(&Args) -> Part>,
}

impl<Args, Part> NamedQuery<Args, Part> {
    pub(crate) fn new(name: &str) -> Self {
        NamedQuery {
            name: name.into(),
            types: std::marker::PhantomData,
        }
    }

    /// The name it was registered under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<Args, Part> Clone for NamedQuery<Args, Part> {
    fn clone(&self) -> Self {
        NamedQuery {
            name: self.name.clone(),
            types: std::marker::PhantomData,
        }
    }
}

impl<Args, Part> std::fmt::Debug for NamedQuery<Args, Part> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedQuery({:?})", self.name)
    }
}

/// The parts of one query from all its partitions, or why it failed.
pub(crate) type QueryResult = Result<Vec<QueryPart>, crate::error::TxnError>;

/// Read access to the committed rows of one partition at the query's snapshot.
pub struct ReadView<'a> {
    tables: &'a [Box<dyn crate::table::AnyTable>],
    service_idx: u32,
    partition: u32,
    service_name: &'a str,
    governance: &'a crate::governance::Governance,
    /// The purposes a `Client::query_for` query serves (a mask); `None`: not checked.
    purposes: Option<u64>,
}

impl<'a> ReadView<'a> {
    pub(crate) fn new<A: App>(part: &'a PartitionState<A>, app: &'a AppDef<A>) -> Self {
        ReadView {
            tables: &part.tables,
            service_idx: part.service_idx,
            partition: part.partition,
            service_name: &app.services[part.service_idx as usize].name,
            governance: &app.governance,
            purposes: None,
        }
    }

    /// This view, checked against `purposes` (a mask): reading a row with personal data none
    /// of them may use fails the query.
    pub(crate) fn serving(&self, purposes: u64) -> ReadView<'a> {
        ReadView {
            purposes: Some(purposes),
            ..*self
        }
    }

    /// Fails the query (a contained panic, reported as the query's error) if it serves
    /// declared purposes and table `idx` of `service` has a personal field none may use.
    fn check_purpose(&self, service: u32, idx: u32) {
        let Some(purposes) = self.purposes else {
            return;
        };
        let Some(rule) = self.governance.rule(service, idx) else {
            return;
        };
        if let Some(denied) = rule.denied(purposes) {
            panic!(
                "a query serving purposes {:?} may not read table #{idx} of {}: its field {} is \
                 personal data of category {}, allowed for none of them",
                self.governance.purpose_names(purposes),
                self.service_name,
                denied.field,
                denied.category
            );
        }
    }

    /// The service index of this partition (compare with [`ServiceRef::index`]).
    pub fn service_index(&self) -> u32 {
        self.service_idx
    }

    /// Whether this partition belongs to `service`.
    pub fn is(&self, service: ServiceRef) -> bool {
        service.idx == self.service_idx
    }

    /// The partition number within its service.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The service's name.
    pub fn service_name(&self) -> &str {
        self.service_name
    }

    fn table<K: Key, V: Row>(&self, table: Table<K, V>) -> Option<&'a TableState<K, V>> {
        if table.service != self.service_idx {
            return None;
        }
        if self.purposes.is_some() {
            self.check_purpose(table.service, table.idx);
        }
        self.tables
            .get(table.idx as usize)
            .and_then(|t| t.as_any().downcast_ref::<TableState<K, V>>())
    }

    /// Order-independent hash of every committed row of this partition.
    pub fn state_hash(&self) -> u64 {
        crate::partition::tables_hash(self.tables)
    }

    /// A committed row, or `None` if absent or the table is not in this partition's service.
    pub fn get<K: Key, V: Row>(&self, table: Table<K, V>, key: &K) -> Option<&'a V> {
        self.table(table)?.rows.get(key)
    }

    /// Every committed row of `table` in this partition (empty for other services' tables), in
    /// key order for ordered tables.
    pub fn iter<K: Key, V: Row>(
        &self,
        table: Table<K, V>,
    ) -> Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a> {
        match self.table(table) {
            Some(t) => t.rows.iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The committed rows of an ordered table whose keys fall in `range` (empty for hash tables
    /// and other services' tables).
    pub fn range<K: Key, V: Row, R: RangeBounds<K>>(
        &self,
        table: Table<K, V>,
        range: R,
    ) -> Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a> {
        match self.table(table) {
            Some(t) => t.rows.range(range),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The committed rows of this partition with index value `value`, in key order (empty for
    /// other services' tables).
    pub fn lookup<I: Key, K: Key, V: Row>(
        &self,
        index: Index<I, K, V>,
        value: &I,
    ) -> Vec<(&'a K, &'a V)> {
        let Some(t) = self.table(index.table()) else {
            return Vec::new();
        };
        let Some(ix) = t.indexes.get(index.idx as usize).and_then(|ix| {
            ix.as_any()
                .downcast_ref::<crate::index::IndexState<I, K, V>>()
        }) else {
            return Vec::new();
        };
        ix.map
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| t.rows.get(k).map(|v| (k, v)))
            .collect()
    }

    /// Every entry of `index` in this partition as `(value, row key)`, in value then key order
    /// (empty for other services' tables): what a lookup of each value would find.
    pub fn index_entries<I: Key, K: Key, V: Row>(
        &self,
        index: Index<I, K, V>,
    ) -> Vec<(&'a I, &'a K)> {
        let Some(ix) = self.table(index.table()).and_then(|t| {
            t.indexes.get(index.idx as usize).and_then(|ix| {
                ix.as_any()
                    .downcast_ref::<crate::index::IndexState<I, K, V>>()
            })
        }) else {
            return Vec::new();
        };
        ix.map
            .iter()
            .flat_map(|(value, keys)| keys.iter().map(move |k| (value, k)))
            .collect()
    }

    /// Number of committed rows of `table` in this partition.
    pub fn len<K: Key, V: Row>(&self, table: Table<K, V>) -> usize {
        self.table(table).map_or(0, |t| t.rows.len())
    }
}

impl<A: App> AppDef<A> {
    /// The names of the registered queries (`AppBuilder::query`), in registration order.
    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.queries.names()
    }
}
