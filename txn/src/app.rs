//! Defining an application: services, their partitions, tables and handlers.
//!
//! An [`App`] names the event and output types shared by all its services. An [`AppBuilder`]
//! declares services and tables and returns typed handles ([`ServiceRef`], [`Table`]) that
//! handlers use; [`AppBuilder::build`] validates the whole definition at once.

pub use crate::constraint::OnDelete;
use crate::constraint::{
    Check, ChildLink, Constraints, FkTarget, ForeignKey, Placement, TableOptions, Unique,
    UniqueTarget,
};
use crate::context::TxnCtx;
use crate::error::{HandlerResult, TxnError};
use crate::ids::GlobalPartition;
pub use crate::ids::ServiceRef;
use crate::precedence::Rule;
use crate::table::{AnyTable, TableState};
use std::any::Any;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

pub use crate::contract::App;
use crate::contract::{EventInfo, EventOf, IngressError, Request, Service, Svc};

impl<S: Service> Svc<S> {
    /// Declares that in this service an event of type `Before` always precedes, in TID
    /// order, a later event of type `After` in the same partition (see
    /// [`AppBuilder::precedence`]): `stock.precedence::<Reserve, Confirm>(&mut builder)`.
    /// Both must be events of this service, so a rule naming any other type does not compile.
    pub fn precedence<Before: EventOf<S>, After: EventOf<S>>(
        self,
        builder: &mut AppBuilder<S::App>,
    ) {
        builder.precedence(self.raw(), Before::KIND, After::KIND);
    }
}
pub use crate::row::{Key, Row};

/// A handler: runs one event of a transaction in one partition.
pub type Handler<A> =
    Arc<dyn Fn(&mut TxnCtx<'_, A>, &<A as App>::Event) -> HandlerResult + Send + Sync>;

/// A typed handle to a table of a service.
pub struct Table<K, V> {
    pub(crate) service: u32,
    pub(crate) idx: u32,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

impl<K, V> Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table(service {}, #{})", self.service, self.idx)
    }
}

/// A typed handle to a secondary index of a table: rows by the value `I` derived from them.
pub struct Index<I, K, V> {
    pub(crate) service: u32,
    pub(crate) table: u32,
    pub(crate) idx: u32,
    #[allow(clippy::type_complexity)]
    _types: PhantomData<fn() -> (I, K, V)>,
}

impl<I, K, V> Clone for Index<I, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<I, K, V> Copy for Index<I, K, V> {}

impl<I, K, V> Debug for Index<I, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Index(service {}, table #{}, #{})",
            self.service, self.table, self.idx
        )
    }
}

impl<I, K, V> Index<I, K, V> {
    /// The table this index is on.
    pub fn table(self) -> Table<K, V> {
        Table {
            service: self.service,
            idx: self.table,
            _types: PhantomData,
        }
    }
}

pub(crate) type TableFactory = Arc<dyn Fn() -> Box<dyn AnyTable> + Send + Sync>;

/// Turns a table's collected constraints (a `Constraints<V>` behind `Any`) into its factory.
type Finalize = Box<dyn FnOnce(Box<dyn Any + Send + Sync>) -> TableFactory + Send + Sync>;

pub(crate) struct TableDef {
    pub name: String,
    /// What the stored layout depends on (see `fingerprint`).
    pub shape: crate::table_shape::TableShape,
    /// Set by `build`; until then the table is being declared.
    pub make: Option<TableFactory>,
    /// `Constraints<V>` collected while declaring.
    constraints: Option<Box<dyn Any + Send + Sync>>,
    finalize: Option<Finalize>,
    /// Its personal fields, if it has any (`AppBuilder::personal_data`).
    pub personal: Option<Arc<crate::governance::TableGovernance>>,
}

/// Builds a service's request from an event kind and its JSON payload (`Service::request_from_json`).
type IngressFn<A> = fn(ServiceRef, &str, &[u8], Option<u32>) -> Result<Request<A>, IngressError>;

fn ingress_of<S: Service>(
    raw: ServiceRef,
    kind: &str,
    payload: &[u8],
    partition: Option<u32>,
) -> Result<Request<S::App>, IngressError> {
    S::request_from_json(Svc::new(raw), kind, payload, partition)
}

/// What a typed service (`AppBuilder::add_service`) adds to its definition: its event types
/// and how to decode them.
pub(crate) struct Typed<A: App> {
    /// The service type's name: its variant in the application's envelope.
    pub type_name: &'static str,
    pub events: &'static [EventInfo],
    ingress: IngressFn<A>,
}

pub(crate) struct ServiceDef<A: App> {
    pub name: String,
    pub service: ServiceRef,
    /// Set for services declared with `add_service`.
    pub typed: Option<Typed<A>>,
    pub tables: Vec<TableDef>,
    pub handler: Option<Handler<A>>,
    /// Declared event precedence rules of the service.
    pub precedence: Vec<Rule>,
    /// The purposes its handlers serve, by event kind (`Service::HANDLER_PURPOSES`).
    pub purposes: Vec<(&'static str, &'static [&'static str])>,
}

/// A validated application definition, shared by every partition.
pub struct AppDef<A: App> {
    pub(crate) services: Vec<ServiceDef<A>>,
    pub(crate) n_global: u32,
    /// For each global partition: (service index, partition within the service).
    pub(crate) gp_index: Vec<(u32, u32)>,
    /// What one transaction may use before it is aborted.
    pub(crate) txn_limits: crate::limits::TxnLimits,
    /// Personal-data categories, purposes and the tables they apply to (`governance.rs`).
    pub(crate) governance: crate::governance::Governance,
    /// The named queries (`AppBuilder::query`).
    pub(crate) queries: crate::query::NamedQueries,
}

impl<A: App> AppDef<A> {
    /// Number of partitions across all services.
    pub fn n_partitions_total(&self) -> u32 {
        self.n_global
    }

    /// Looks a service up by name.
    pub fn service(&self, name: &str) -> Result<ServiceRef, TxnError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.service)
            .ok_or_else(|| TxnError::UnknownService(name.to_string()))
    }

    /// The names of the services, in declaration order.
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(|s| s.name.as_str())
    }

    /// The event types a service declared with `AppBuilder::add_service` takes (empty for
    /// services whose handler is a closure).
    pub fn events(&self, service: ServiceRef) -> &'static [EventInfo] {
        self.services[service.idx as usize]
            .typed
            .as_ref()
            .map_or(&[], |t| t.events)
    }

    /// Builds the request for an event given by service name, kind and JSON payload (what a
    /// server receives), routed by the event's key, or to `partition` for an event without
    /// one. Clients still refuse internal events when it is submitted.
    pub fn request_from_json(
        &self,
        service: &str,
        kind: &str,
        payload: &[u8],
        partition: Option<u32>,
    ) -> Result<Request<A>, IngressError> {
        let def = self
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| IngressError::UnknownService(service.to_string()))?;
        let Some(typed) = &def.typed else {
            return Err(IngressError::UnknownEvent {
                service: service.to_string(),
                kind: kind.to_string(),
                known: "nothing decodable: its handler is a closure".to_string(),
            });
        };
        (typed.ingress)(def.service, kind, payload, partition).map_err(|e| e.named(service))
    }

    /// The name of a service.
    pub fn service_name(&self, service: ServiceRef) -> &str {
        &self.services[service.idx as usize].name
    }

    /// The global partition of `partition` of `service`, or an error naming the service if it
    /// has no such partition.
    pub(crate) fn check_partition(
        &self,
        service: ServiceRef,
        partition: u32,
    ) -> Result<GlobalPartition, TxnError> {
        if partition >= service.n_partitions {
            return Err(TxnError::UnknownPartition {
                service: self.service_name(service).to_string(),
                partition,
                n_partitions: service.n_partitions,
            });
        }
        Ok(service.gp(partition))
    }

    pub(crate) fn locate(&self, gp: GlobalPartition) -> (u32, u32) {
        self.gp_index[gp as usize]
    }
}

/// A foreign key just declared with [`AppBuilder::foreign_key`]: say here what deleting a
/// parent row that still has children does (by default, [`OnDelete::Restrict`]).
pub struct ForeignKeyDecl<'b, A: App, PK, PV> {
    builder: &'b mut AppBuilder<A>,
    parent: Table<PK, PV>,
    /// Its position among the parent table's `referenced_by`; `None` if it was refused.
    position: Option<usize>,
}

impl<'b, A: App, PK: Key, PV: Row> ForeignKeyDecl<'b, A, PK, PV> {
    fn unlinked(builder: &'b mut AppBuilder<A>, parent: Table<PK, PV>) -> Self {
        ForeignKeyDecl {
            builder,
            parent,
            position: None,
        }
    }

    /// What deleting a parent row that still has children does: `Restrict` (the default)
    /// aborts the deleting transaction, `Cascade` deletes the children (recursively) with it.
    pub fn on_delete(self, on_delete: OnDelete) {
        let Some(position) = self.position else {
            return;
        };
        let link = self
            .builder
            .constraints_of(self.parent)
            .and_then(|c| c.referenced_by.get_mut(position))
            .and_then(Arc::get_mut);
        if let Some(link) = link {
            link.on_delete = on_delete;
        }
    }
}

/// Declares the services of an application.
pub struct AppBuilder<A: App> {
    services: Vec<ServiceDef<A>>,
    next_gp: u32,
    problems: Vec<String>,
    /// Tables some foreign key refers to: their placement is fixed from then on.
    fk_parents: Vec<(u32, u32)>,
    txn_limits: crate::limits::TxnLimits,
    /// `(category, purposes)` declared with `allow`.
    allowed: Vec<(&'static str, Vec<&'static str>)>,
    /// Whether reads are checked against purposes (`AppBuilder::purpose_checks`).
    purpose_checks_off: bool,
    /// The named queries (`AppBuilder::query`).
    queries: crate::query::NamedQueries,
}

impl<A: App> Default for AppBuilder<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: App> AppBuilder<A> {
    /// An empty application.
    pub fn new() -> Self {
        AppBuilder {
            services: Vec::new(),
            next_gp: 0,
            problems: Vec::new(),
            fk_parents: Vec::new(),
            txn_limits: crate::limits::TxnLimits::default(),
            allowed: Vec::new(),
            purpose_checks_off: false,
            queries: Default::default(),
        }
    }

    /// Declares a service with `n_partitions` partitions.
    pub fn service(&mut self, name: &str, n_partitions: u32) -> ServiceRef {
        if n_partitions == 0 {
            self.problems
                .push(format!("service {name:?} must have at least one partition"));
        }
        if self.services.iter().any(|s| s.name == name) {
            self.problems
                .push(format!("service {name:?} is declared twice"));
        }
        let service = ServiceRef {
            idx: self.services.len() as u32,
            n_partitions: n_partitions.max(1),
            first_gp: self.next_gp,
        };
        self.next_gp += service.n_partitions;
        self.services.push(ServiceDef {
            name: name.to_string(),
            service,
            tables: Vec::new(),
            typed: None,
            handler: None,
            precedence: Vec::new(),
            purposes: Vec::new(),
        });
        service
    }

    /// Declares service `S` (a `#[service]` type) with `n_partitions` partitions; install its
    /// handlers with the generated `register`. The typed handle only takes `S`'s events.
    pub fn add_service<S: Service<App = A>>(&mut self, name: &str, n_partitions: u32) -> Svc<S> {
        let raw = self.service(name, n_partitions);
        self.services[raw.idx as usize].typed = Some(Typed {
            type_name: S::NAME,
            events: S::EVENTS,
            ingress: ingress_of::<S>,
        });
        self.services[raw.idx as usize].purposes = S::HANDLER_PURPOSES.to_vec();
        Svc::new(raw)
    }

    /// Declares a hash table (point access only) of `service`.
    pub fn table<K: Key, V: Row>(&mut self, service: ServiceRef, name: &str) -> Table<K, V> {
        self.add_table::<K, V>(service, name, false)
    }

    /// Declares that no two rows of `table` have the same value `value(row)` (rows where it is
    /// `None` are not constrained) — across all partitions of the service. A write that would
    /// duplicate a value held by another row aborts its whole transaction with
    /// `AbortReason::Constraint` naming `name`. Kept in a hidden index table of the service.
    pub fn unique<K: Key, V: Row, U: Key>(
        &mut self,
        table: Table<K, V>,
        name: &str,
        value: impl Fn(&V) -> Option<U> + Send + Sync + 'static,
    ) {
        let Some((service_name, table_name)) = self.table_name(table) else {
            self.problems.push(format!(
                "unique {name:?} names a table of another application"
            ));
            return;
        };
        let constrained = Arc::new((service_name, table_name.clone()));
        let service = self.services[table.service as usize].service;
        let index = self.add_table::<U, K>(service, &format!("{table_name}#unique:{name}"), false);
        let target = Arc::new(UniqueTarget {
            name: name.to_string(),
            index_table_idx: index.idx,
        });
        let locate = Box::new(move |row: &V| {
            value(row).map(|u| {
                let gp = service.gp(service.partition_of(&u));
                (rmp_serde::to_vec(&u).expect("keys serialize"), gp)
            })
        });
        if let Some(c) = self.constraints_of(table) {
            c.uniques.push(Unique {
                target,
                table: constrained,
                locate,
            });
        }
    }

    /// Declares a secondary index on `table`: its rows by `value(row)` (rows where it is `None`
    /// are not indexed), kept per partition at commit. Read it in queries with
    /// `ReadView::lookup` and in handlers with `TxnCtx::lookup` (transactional: a concurrent
    /// write that moves a row into or out of the looked-up value is a conflict).
    pub fn index<K: Key, V: Row, I: Key>(
        &mut self,
        table: Table<K, V>,
        name: &str,
        value: impl Fn(&V) -> Option<I> + Send + Sync + 'static,
    ) -> Index<I, K, V> {
        self.index_many(table, name, value)
    }

    /// Like [`AppBuilder::index`], but a row is indexed under every value `values(row)` yields
    /// (e.g. a cart under each product it holds); a lookup of any of them finds it once.
    pub fn index_many<K: Key, V: Row, I: Key, It: IntoIterator<Item = I>>(
        &mut self,
        table: Table<K, V>,
        name: &str,
        values: impl Fn(&V) -> It + Send + Sync + 'static,
    ) -> Index<I, K, V> {
        let extract: crate::index::Extract<V, I> =
            Arc::new(move |row: &V, out: &mut crate::index::Values<I>| out.extend(values(row)));
        let make: crate::index::IndexFactory<K, V> = Arc::new(move || {
            Box::new(crate::index::IndexState::<I, K, V> {
                extract: extract.clone(),
                map: Default::default(),
            })
        });
        let idx = match self.options_of(table) {
            Some(o) => {
                o.indexes.push(make);
                o.indexes.len() as u32 - 1
            }
            None => {
                self.problems.push(format!(
                    "index {name:?} names a table of another application"
                ));
                0
            }
        };
        Index {
            service: table.service,
            table: table.idx,
            idx,
            _types: PhantomData,
        }
    }

    /// Declares a replicated table of `service`: every partition holds its own full copy and
    /// may read and write any key of it (no owning partition). Keep the copies equal by
    /// writing them in the same transaction, e.g. with [`TxnCtx::broadcast`] — the way a cart
    /// service keeps replicas of product prices.
    pub fn replicated_table<K: Key, V: Row>(
        &mut self,
        service: ServiceRef,
        name: &str,
    ) -> Table<K, V> {
        let table = self.add_table::<K, V>(service, name, false);
        if let Some(o) = self.options_of(table) {
            o.replicated = true;
        }
        self.services[service.idx as usize].tables[table.idx as usize]
            .shape
            .replicated = true;
        table
    }

    /// Declares an ordered table of `service`: point access plus key-range scans.
    pub fn ordered_table<K: Key, V: Row>(
        &mut self,
        service: ServiceRef,
        name: &str,
    ) -> Table<K, V> {
        self.add_table::<K, V>(service, name, true)
    }

    fn add_table<K: Key, V: Row>(
        &mut self,
        service: ServiceRef,
        name: &str,
        ordered: bool,
    ) -> Table<K, V> {
        let def = &mut self.services[service.idx as usize];
        if def.tables.iter().any(|t| t.name == name) {
            self.problems
                .push(format!("table {}.{name} is declared twice", def.name));
        }
        let idx = def.tables.len() as u32;
        let table_name = name.to_string();
        let service_name = def.name.clone();
        let finalize: Finalize = Box::new(move |options| {
            let options = *options
                .downcast::<TableOptions<K, V>>()
                .expect("options of this table's key and row types");
            let constraints = Arc::new(options.constraints);
            let replicated = options.replicated;
            let indexes = options.indexes;
            let placement: Placement<K> = options
                .placement
                .unwrap_or_else(|| Arc::new(|k: &K, n| crate::route::partition_of(k, n)));
            Arc::new(move || {
                let mut t = TableState::<K, V>::new(
                    service_name.clone(),
                    table_name.clone(),
                    ordered,
                    constraints.clone(),
                    placement.clone(),
                );
                t.replicated = replicated;
                t.indexes = indexes.iter().map(|make| make()).collect();
                Box::new(t) as Box<dyn AnyTable>
            })
        });
        def.tables.push(TableDef {
            name: name.to_string(),
            shape: crate::table_shape::TableShape::new::<K, V>(name, ordered),
            make: None,
            constraints: Some(Box::new(TableOptions::<K, V>::default())),
            finalize: Some(finalize),
            personal: None,
        });
        Table {
            service: service.idx,
            idx,
            _types: PhantomData,
        }
    }

    fn options_of<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
    ) -> Option<&mut TableOptions<K, V>> {
        self.services
            .get_mut(table.service as usize)?
            .tables
            .get_mut(table.idx as usize)?
            .constraints
            .as_mut()?
            .downcast_mut::<TableOptions<K, V>>()
    }

    fn constraints_of<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
    ) -> Option<&mut Constraints<V>> {
        self.options_of(table).map(|o| &mut o.constraints)
    }

    /// Places the rows of `table` by a value derived from the key instead of the whole key
    /// (e.g. stock items keyed by `(seller_id, product_id)` placed by `seller_id`), so related
    /// rows live in one partition. Route events with `ServiceRef::partition_of(&that value)`.
    pub fn place_by<K: Key, V: Row, P: Hash>(
        &mut self,
        table: Table<K, V>,
        place: impl Fn(&K) -> P + Send + Sync + 'static,
    ) {
        let name = self
            .table_name(table)
            .map(|(s, t)| format!("{s}.{t}"))
            .unwrap_or_default();
        if self.fk_parents.contains(&(table.service, table.idx)) {
            self.problems.push(format!(
                "table {name} is given a placement after a foreign key refers to it: declare place_by first"
            ));
        }
        let placement: Placement<K> =
            Arc::new(move |k: &K, n| crate::route::partition_of(&place(k), n));
        if let Some(def) = self
            .services
            .get_mut(table.service as usize)
            .and_then(|s| s.tables.get_mut(table.idx as usize))
        {
            def.shape.placed_by = Some(std::any::type_name::<P>().to_string());
        }
        match self.options_of(table) {
            Some(o) if o.placement.is_none() => o.placement = Some(placement),
            Some(_) => self
                .problems
                .push(format!("table {name} is given a placement twice")),
            None => self
                .problems
                .push("place_by names a table of another application".to_string()),
        }
    }

    fn table_name<K, V>(&self, table: Table<K, V>) -> Option<(String, String)> {
        let s = self.services.get(table.service as usize)?;
        let t = s.tables.get(table.idx as usize)?;
        Some((s.name.clone(), t.name.clone()))
    }

    /// Declares a check on the rows of `table` (e.g. `quantity >= 0`): a handler writing a row
    /// that fails it aborts its whole transaction with `AbortReason::Constraint` naming `name`.
    pub fn check<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        name: &str,
        pred: impl Fn(&V) -> bool + Send + Sync + 'static,
    ) {
        let check = Check {
            name: name.to_string(),
            pred: Box::new(pred),
        };
        match self.constraints_of(table) {
            Some(c) => c.checks.push(check),
            None => self.problems.push(format!(
                "check {name:?} names a table of another application"
            )),
        }
    }

    /// Declares that rows of `child` refer to rows of `parent` (in any service, also another
    /// one): `parent_key` extracts the referenced key, or `None` for no reference. Writing a
    /// child row whose parent does not exist aborts the whole transaction. Deleting a parent
    /// row that still has children aborts the deleting transaction unless the returned
    /// declaration says otherwise: `.on_delete(OnDelete::Cascade)` deletes the children with
    /// it. The runtime keeps a hidden index of the children by parent key for this.
    pub fn foreign_key<K: Key, V: Row, PK: Key, PV: Row>(
        &mut self,
        child: Table<K, V>,
        name: &str,
        parent: Table<PK, PV>,
        parent_key: impl Fn(&V) -> Option<PK> + Send + Sync + 'static,
    ) -> ForeignKeyDecl<'_, A, PK, PV> {
        let (Some((child_service, child_table)), Some((parent_service, parent_table))) =
            (self.table_name(child), self.table_name(parent))
        else {
            self.problems.push(format!(
                "foreign key {name:?} names a table of another application"
            ));
            return ForeignKeyDecl::unlinked(self, parent);
        };
        if self.options_of(parent).is_some_and(|o| o.replicated) {
            self.problems.push(format!(
                "foreign key {name:?} refers to a replicated table, which has no owning partition to probe"
            ));
            return ForeignKeyDecl::unlinked(self, parent);
        }
        let parent_ref = self.services[parent.service as usize].service;
        let parent_placement: Placement<PK> = self
            .options_of(parent)
            .and_then(|o| o.placement.clone())
            .unwrap_or_else(|| Arc::new(|k: &PK, n| crate::route::partition_of(k, n)));
        self.fk_parents.push((parent.service, parent.idx));
        let target = Arc::new(FkTarget {
            name: name.to_string(),
            parent_service,
            parent_table,
            parent_table_idx: parent.idx,
        });
        let parent_key = Arc::new(parent_key);
        let encoded_parent_key = parent_key.clone();
        let children = self.index(child, name, move |row: &V| {
            encoded_parent_key(row).map(|pk| rmp_serde::to_vec(&pk).expect("keys serialize"))
        });
        let locate = Box::new(move |row: &V| {
            parent_key(row).map(|pk| {
                let gp = parent_ref.gp(parent_placement(&pk, parent_ref.n_partitions));
                let bytes = rmp_serde::to_vec(&pk).expect("keys serialize");
                (bytes, gp)
            })
        });
        let mut duplicate = false;
        if let Some(c) = self.constraints_of(child) {
            duplicate = c.foreign_keys.iter().any(|f| f.target.name == name);
            c.foreign_keys.push(ForeignKey {
                target: target.clone(),
                locate,
            });
        }
        if duplicate {
            self.problems.push(format!(
                "foreign key {name:?} is declared twice on one table"
            ));
        }
        let link = Arc::new(ChildLink {
            target,
            child: Arc::new((child_service, child_table)),
            child_service: self.services[child.service as usize].service,
            child_table_idx: child.idx,
            child_index_idx: children.idx,
            on_delete: OnDelete::default(),
        });
        let position = self.constraints_of(parent).map(|c| {
            c.referenced_by.push(link);
            c.referenced_by.len() - 1
        });
        ForeignKeyDecl {
            builder: self,
            parent,
            position,
        }
    }

    /// Declares that in `service`, an event of kind `before` (see [`App::event_kind`]) with a lower
    /// TID is always processed before an event of kind `after` in the same partition — also
    /// when they touch no common row (e.g. price updates before checkouts in a cart). Rules are
    /// checked for cycles at build time.
    pub fn precedence(&mut self, service: ServiceRef, before: &'static str, after: &'static str) {
        self.services[service.idx as usize]
            .precedence
            .push(Rule { before, after });
    }

    /// Sets the handler that runs every event delivered to `service`.
    pub fn handler(
        &mut self,
        service: ServiceRef,
        handler: impl Fn(&mut TxnCtx<'_, A>, &A::Event) -> HandlerResult + Send + Sync + 'static,
    ) {
        let def = &mut self.services[service.idx as usize];
        if def.handler.is_some() {
            self.problems
                .push(format!("service {:?} has two handlers", def.name));
        }
        def.handler = Some(Arc::new(handler));
    }

    /// Sets the per-transaction limits (default: `TxnLimits::default()`). They are part of the
    /// application because they decide outcomes, so replay applies the same ones.
    pub fn txn_limits(&mut self, limits: crate::limits::TxnLimits) {
        if limits.steps_max == 0 {
            self.problems
                .push("txn_limits.steps_max is 0: no transaction could run".into());
        }
        self.txn_limits = limits;
    }

    /// Validates the definition, reporting every problem at once.
    pub fn build(mut self) -> Result<Arc<AppDef<A>>, TxnError> {
        if self.services.is_empty() {
            self.problems.push("the application has no services".into());
        }
        for s in &self.services {
            self.problems
                .extend(crate::precedence::validate(&s.name, &s.precedence));
            if s.handler.is_none() {
                self.problems
                    .push(format!("service {:?} has no handler", s.name));
            }
        }
        for name in &self.queries.duplicates {
            self.problems
                .push(format!("query {name:?} is registered twice"));
        }
        if !self.problems.is_empty() {
            return Err(TxnError::InvalidApp(self.problems));
        }
        for s in &mut self.services {
            for t in &mut s.tables {
                let finalize = t.finalize.take().expect("finalized once");
                let constraints = t.constraints.take().expect("constraints present");
                t.make = Some(finalize(constraints));
            }
        }
        let unsafe_deltas = crate::coordination::unsafe_pairs(&coordination_of(&self.services));
        if !unsafe_deltas.is_empty() {
            return Err(TxnError::InvalidApp(unsafe_deltas));
        }
        let gp_index = self
            .services
            .iter()
            .flat_map(|s| (0..s.service.n_partitions).map(move |p| (s.service.idx, p)))
            .collect();
        let rules: Vec<_> = self
            .services
            .iter()
            .map(|s| crate::governance::ServiceRules {
                handlers: s.purposes.clone(),
                tables: s.tables.iter().map(|t| t.personal.clone()).collect(),
            })
            .collect();
        let mut governance = crate::governance::compile(&rules, A::PURPOSES_ALLOWED, &self.allowed)
            .map_err(TxnError::InvalidApp)?;
        governance.enabled &= !self.purpose_checks_off;
        Ok(Arc::new(AppDef {
            services: self.services,
            n_global: self.next_gp,
            gp_index,
            txn_limits: self.txn_limits,
            governance,
            queries: self.queries,
        }))
    }

    /// Registers a named query: `per_partition` runs in each partition a call names, on the
    /// committed state of one snapshot, and returns that partition's part; the caller merges
    /// the parts (`Client::query_named`). Unlike a closure passed to `Client::query`, it is
    /// called by name with serde arguments, so it also runs on partitions another node holds.
    /// It must be a deterministic function of the view and its arguments, and every node must
    /// register the same queries (they build the same application). A name registered twice
    /// fails `build`.
    pub fn query<Args, Part>(
        &mut self,
        name: &str,
        per_partition: impl Fn(&crate::query::ReadView<'_>, &Args) -> Part + Send + Sync + 'static,
    ) -> crate::query::NamedQuery<Args, Part>
    where
        Args: serde::Serialize + serde::de::DeserializeOwned + 'static,
        Part: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        self.queries.register(name, per_partition);
        crate::query::NamedQuery::new(name)
    }
}

// Merge-able deltas: declarations and their analysis (`coordination.rs`).
impl<A: App> AppBuilder<A> {
    /// Declares the invariant `field >= min` on every row of `table`: a `put` of a row that
    /// breaks it aborts (`AbortReason::Constraint`), and every delta on the field is bounded by
    /// it (escrow), whatever minimum the handler passes. Unlike an opaque `check`, deltas on
    /// a table with only such bounds stay merge-able.
    pub fn field_min<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        field: crate::delta::Field<V>,
        min: i64,
    ) {
        match self.constraints_of(table) {
            Some(c) => c.field_mins.push(crate::constraint::FieldMin {
                field,
                min,
                name: format!("{} >= {min}", field.name()),
            }),
            None => self.problems.push(format!(
                "field_min on {} names a table of another application",
                field.name()
            )),
        }
    }

    /// Declares that handlers apply deltas to `field` of `table` as `usage` says, for
    /// [`AppDef::coordination_report`] and for `build`, which refuses a use that could break
    /// a declared invariant (unbounded decrements of a field with a minimum).
    pub fn delta_field<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        field: crate::delta::Field<V>,
        usage: crate::coordination::DeltaUse,
    ) {
        match self.constraints_of(table) {
            Some(c) => c.delta_uses.push((field.name(), usage)),
            None => self.problems.push(format!(
                "delta_field on {} names a table of another application",
                field.name()
            )),
        }
    }
}

impl<A: App> AppDef<A> {
    /// For each declared delta field (`AppBuilder::delta_field`) and each invariant of its
    /// table: whether the delta is confluent, safe by escrow, coordinated or unsafe, and why.
    pub fn coordination_report(&self) -> Vec<crate::coordination::CoordinationEntry> {
        coordination_of(&self.services)
    }
}

/// The coordination report of built services (their tables have factories).
fn coordination_of<A: App>(
    services: &[ServiceDef<A>],
) -> Vec<crate::coordination::CoordinationEntry> {
    let mut out = Vec::new();
    for s in services {
        for t in &s.tables {
            let make = t.make.as_ref().expect("built tables have factories");
            crate::coordination::classify(&s.name, &t.name, &make().coordination(), &mut out);
        }
    }
    out
}

impl<K, V> crate::governance::ReadsRows for Table<K, V> {
    type Row = V;
}
impl<I, K, V> crate::governance::ReadsRows for Index<I, K, V> {
    type Row = V;
}

// Data governance: personal fields, purposes (`governance.rs`, `docs/governance.md`).
impl<A: App> AppBuilder<A> {
    /// Declares that personal data of `category` may be used for `purposes`. For apps written
    /// by hand; `#[app(allow(..))]` applications declare it there (once: `build` refuses both).
    pub fn allow(&mut self, category: &'static str, purposes: &[&'static str]) {
        self.allowed.push((category, purposes.to_vec()));
    }

    /// Turns the run-time purpose checks of reads on (the default) or off. **Only for measuring
    /// their cost** (the bench harness's `--purpose-checks off`): with them off a handler may
    /// read personal data for any purpose. The build-time checks of `#[service]` still apply.
    pub fn purpose_checks(&mut self, on: bool) {
        self.purpose_checks_off = !on;
    }

    /// Declares the purposes the handler of events of `kind` (`App::event_kind`) of `service`
    /// serves. For services whose handler is a closure; `#[handler(purpose = "..")]` declares
    /// them for `#[service]` handlers.
    pub fn handler_purposes(
        &mut self,
        service: ServiceRef,
        kind: &'static str,
        purposes: &'static [&'static str],
    ) {
        self.services[service.idx as usize]
            .purposes
            .push((kind, purposes));
    }

    /// Declares the personal fields of `table` (`(field, category)` pairs), whose data each row
    /// is (`subject`), and how to erase them (`erase`, used by `erasure::forget_dir`).
    /// `#[derive(Table)]` calls it for rows with `#[pii]` or `#[category(..)]` fields.
    pub fn personal_data<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        fields: crate::governance::PersonalFields,
        subject: fn(&K, &V) -> String,
        erase: fn(&mut V),
    ) {
        let rules = crate::governance::TableGovernance::new(fields, subject, erase);
        match self
            .services
            .get_mut(table.service as usize)
            .and_then(|s| s.tables.get_mut(table.idx as usize))
        {
            Some(def) => def.personal = Some(Arc::new(rules)),
            None => self
                .problems
                .push("personal_data names a table of another application".to_string()),
        }
    }
}
