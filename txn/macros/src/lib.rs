//! Derive and attribute macros for vmsdb services: rows that declare their own tables, typed
//! service contracts, and services whose handlers are plain methods.
//!
//! - [`derive@Table`] on a row struct: its `#[key]` fields, its table's name, ordering,
//!   placement and `#[check]`s, declared with one call `Row::table(&mut builder, service)`.
//! - [`derive@Event`] on an event struct: its `#[key]` field routes it to a partition.
//! - [`macro@service`] on an `impl` block and [`macro@handler`] on its methods: each handler
//!   takes one event type; together they are the service's contract (`txn::Service`), and the
//!   generated `register` installs them as the service's handler.
//! - [`macro@app`] on a unit struct: the application (`txn::App`) and the envelope enum of
//!   every service's events, which the epoch log stores.
//! - [`derive@EventKind`] on the event enum of a hand-written `App`: `event.kind()` is the
//!   variant's name.
//!
//! The generated code names the transaction layer as `::txn`, so a crate using these macros
//! depends on `txn` under that name (which re-exports them all).

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod contract;
mod errors;
mod event_kind;
mod service;
mod table;
mod text;

/// Declares the table a row struct lives in: its primary key, placement and constraints.
///
/// Mark the primary key field(s) with `#[key]` (several make a tuple key, in field order). The
/// derive adds two associated functions:
///
/// - `fn table<A: App>(builder: &mut AppBuilder<A>, service: ServiceRef) -> Table<Key, Self>`
///   declares the table with everything below (pass a typed `Svc` as `*svc`);
/// - `fn key(&self) -> Key` returns (a clone of) the row's key, for `ctx.put(t, row.key(), row)`.
///
/// Attributes:
///
/// | attribute | on | means |
/// |-----------|----|-------|
/// | `#[key]` | field | part of the primary key |
/// | `#[table(name = "..")]` | struct | the table's name (default: the type's name in `snake_case`) |
/// | `#[table(ordered)]` | struct | an ordered table (`AppBuilder::ordered_table`): key-range scans |
/// | `#[table(replicated)]` | struct | a full copy in every partition (`AppBuilder::replicated_table`) |
/// | `#[table(place_by = field)]`, `place_by(a, b)` | struct | place rows by these key fields instead of the whole key (`AppBuilder::place_by`) |
/// | `#[check(<bool expression over self>)]` | struct | a row check named after its text (`self.` dropped) |
/// | `#[check(<range>)]` | field | the field's value must lie in the range: `0..`, `1..=100` |
/// | `#[check(.., name = "..")]` | either | the same, with another name |
/// | `#[unique]`, `#[unique(name = "..")]` | field | no two rows hold the same value (`AppBuilder::unique`, named after the field); an `Option` field constrains only its `Some` values |
/// | `#[pii]`, `#[category(card)]` | field | personal data of category `pii` / `card` (`docs/governance.md`): reads need a purpose the category allows |
/// | `#[subject]` | field | whose personal data the row is (required with personal fields) |
/// | `#[table(subject = key)]`, `subject = key.field` | struct | the key (or a field of it) names the subject |
///
/// A row failing a check or a unique constraint aborts the transaction that writes it with
/// `AbortReason::Constraint`, naming the constraint. Foreign keys need the parent table's
/// handle, so they stay `AppBuilder::foreign_key` calls. The row type must also be a `txn::Row`
/// (`Clone + Debug + Serialize + Deserialize`), and its key types `txn::Key`s.
///
/// # Example
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::{AppBuilder, HandlerResult, SerialExecutor, TxnCtx};
/// use txn_macros::{Event, Table, app, handler, service};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Table)]
/// #[table(name = "stock_items", place_by = seller)]
/// #[check(self.reserved <= self.available)]
/// struct StockItem {
///     #[key]
///     seller: u64,
///     #[key]
///     product: u64,
///     #[check(0..)]
///     available: i64,
///     reserved: i64,
/// }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Reserve {
///     #[key]
///     seller: u64,
///     product: u64,
///     qty: i64,
/// }
///
/// #[app(services(Stock))]
/// struct Shop;
///
/// struct Stock {
///     items: txn::Table<(u64, u64), StockItem>,
/// }
///
/// #[service(key = u64)]
/// impl Stock {
///     #[handler]
///     fn reserve(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Reserve) -> HandlerResult {
///         let mut item = ctx.get(self.items, &(ev.seller, ev.product))?
///             .ok_or_else(|| ctx.abort("no such item"))?;
///         item.reserved += ev.qty; // aborts the transaction if it passes `available`
///         ctx.put(self.items, item.key(), item)
///     }
/// }
///
/// let mut b = AppBuilder::<Shop>::new();
/// let stock = b.add_service::<Stock>("stock", 4);
/// // Declares `stock_items` keyed by (seller, product), placed by seller, with two checks.
/// let items: txn::Table<(u64, u64), StockItem> = StockItem::table(&mut b, *stock);
/// Stock { items }.register(&mut b, stock);
/// let mut exec = SerialExecutor::new(b.build().unwrap());
/// let reserve = Reserve { seller: 1, product: 2, qty: 1 };
/// assert!(exec.run(stock, reserve, 0).unwrap_err().to_string().contains("no such item"));
/// ```
///
/// Without the derive, the declaration is:
///
/// ```ignore
/// let stock_items = b.table::<(u64, u64), StockItem>(*stock, "stock_items");
/// b.place_by(stock_items, |k: &(u64, u64)| k.0);
/// b.check(stock_items, "reserved <= available", |r: &StockItem| r.reserved <= r.available);
/// b.check(stock_items, "available in 0..", |r: &StockItem| r.available >= 0);
/// ```
#[proc_macro_derive(Table, attributes(table, key, check, unique, pii, category, subject))]
pub fn derive_table(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    table::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Names an event's variant: `event.kind()` returns `"Deposit"` for `Ev::Deposit { .. }`, and
/// `Ev::KINDS` lists every variant in declaration order.
///
/// For applications whose `App` and event enum are written by hand (an `#[app]` application's
/// kinds are its event types' names already): useful for `App::event_kind`, metrics and logs
/// keyed by event type, and precedence rules between event types, without matching on every
/// variant by hand.
///
/// # Example
///
/// ```
/// use txn_macros::EventKind;
///
/// #[derive(Clone, Debug, EventKind)]
/// enum Ev {
///     Deposit { account: u64, amount: i64 },
///     Transfer(u64, u64, i64),
///     Audit,
/// }
///
/// assert_eq!(Ev::Transfer(1, 2, 5).kind(), "Transfer");
/// assert_eq!(Ev::Audit.kind(), "Audit");
/// assert_eq!(Ev::KINDS, ["Deposit", "Transfer", "Audit"]);
/// ```
///
/// Mark the steps only handlers may emit with `#[internal]`; `event.is_internal()` then says
/// so, for `App::is_internal` (clients are refused such events):
///
/// ```
/// use txn_macros::EventKind;
///
/// #[derive(Clone, Debug, EventKind)]
/// enum Ev {
///     Transfer { from: u64, to: u64, amount: i64 },
///     #[internal]
///     Credit { to: u64, amount: i64 },
/// }
///
/// assert!(!Ev::Transfer { from: 1, to: 2, amount: 5 }.is_internal());
/// assert!(Ev::Credit { to: 2, amount: 5 }.is_internal());
/// ```
#[proc_macro_derive(EventKind, attributes(internal))]
pub fn derive_event_kind(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event_kind::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes an `impl` block a service: its [`macro@handler`] methods each take one event type,
/// and together they are the service's contract.
///
/// The type holds what the handlers need — table handles, `txn::Svc` handles of the services
/// it emits to, configuration — and must be `Send + Sync + 'static` (it lives in the runtime).
///
/// # Arguments
///
/// | argument | required | means |
/// |----------|----------|-------|
/// | `key = K` | yes | the type that routes the service's events to its partitions (`txn::Service::Key`): every event sent by key (`ctx.emit`, `client.submit`, `exec.run`) carries a `K` ([`derive@Event`]) |
/// | `app = A` | no | the application; by default read off the handlers' context parameter `ctx: &mut TxnCtx<'_, A>` (name it when the context is written another way, through a type alias, say) |
/// | `vis = ..` | no | the visibility of the generated event enum, e.g. `vis = pub(crate)` (default `pub`, which is fine with event types private to the crate: outside it the enum can be named but not built) |
///
/// # Generated items
///
/// For `#[service(key = K)] impl Accounts { .. }` in application `A`:
///
/// - `enum AccountsEvent { Withdraw(Withdraw), Deposit(Deposit), .. }`: every event the
///   service takes, one variant per handler, named after its event type (derives `Clone`,
///   `Debug`, `Serialize`, `Deserialize`); the application's envelope wraps it;
/// - `impl txn::Service for Accounts`: `App = A`, `Key = K`, `Event = AccountsEvent`, `NAME`
///   (`"Accounts"`), `event_kind` (the event type's name), `is_internal`
///   (`#[handler(internal)]`) and `row_hint` (the routing key of an event type that has one:
///   the row its handler most likely reads first, for the partition to prefetch);
/// - `impl txn::EventOf<Accounts> for Withdraw` (and each other event type), with `KIND`
///   `"Withdraw"`: only the service's own event types can be sent to it, so sending another
///   service's event does not compile; `Svc::precedence::<Before, After>(&mut builder)` names
///   them the same way;
/// - `pub fn register(self, builder: &mut txn::AppBuilder<A>, service: txn::Svc<Self>)`: calls
///   `AppBuilder::handler` once with a dispatcher that runs each event's handler. An event of
///   another service (which only the untyped `*_raw` calls can deliver) aborts its transaction
///   with a reason naming the service and the event.
///
/// The service goes into [`macro@app`]'s `services(..)` list, and is added to the builder with
/// `AppBuilder::add_service::<Accounts>(name, n_partitions)`, which returns its `Svc`.
///
/// A mistake in a service (a handler signature, a missing `key`) is reported where it is, and
/// the service keeps its contract and `register`, so that its uses report nothing more.
///
/// # Example
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::{AppBuilder, HandlerResult, SerialExecutor, Svc, Table, TxnCtx};
/// use txn_macros::{Event, app, handler, service};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Withdraw {
///     #[key]
///     from: u64,
///     to: u64,
///     amount: i64,
/// }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Deposit {
///     #[key]
///     to: u64,
///     amount: i64,
/// }
///
/// #[app(services(Accounts), output = i64)]
/// struct Bank;
///
/// struct Accounts {
///     balances: Table<u64, i64>,
///     me: Svc<Accounts>,
/// }
///
/// #[service(key = u64)]
/// impl Accounts {
///     #[handler]
///     fn withdraw(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Withdraw) -> HandlerResult {
///         let balance = ctx.get(self.balances, &ev.from)?.unwrap_or(0);
///         if balance < ev.amount {
///             return Err(ctx.abort(format!("account {} has {balance} < {}", ev.from, ev.amount)));
///         }
///         ctx.put(self.balances, ev.from, balance - ev.amount)?;
///         // Runs in the partition owning `to`, in the same transaction.
///         ctx.emit(self.me, Deposit { to: ev.to, amount: ev.amount });
///         Ok(())
///     }
///
///     #[handler]
///     fn deposit(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
///         let balance = ctx.get(self.balances, &ev.to)?.unwrap_or(0) + ev.amount;
///         ctx.put(self.balances, ev.to, balance)?;
///         ctx.set_output(balance);
///         Ok(())
///     }
/// }
///
/// let mut b = AppBuilder::<Bank>::new();
/// let accounts = b.add_service::<Accounts>("accounts", 4);
/// let balances = b.table(*accounts, "balances");
/// Accounts { balances, me: accounts }.register(&mut b, accounts);
/// // Deposits run before withdrawals of the same partition in TID order.
/// accounts.precedence::<Deposit, Withdraw>(&mut b);
///
/// let mut exec = SerialExecutor::new(b.build().unwrap());
/// assert_eq!(exec.run(accounts, Deposit { to: 1, amount: 10 }, 0), Ok(Some(10)));
/// let withdraw = Withdraw { from: 1, to: 2, amount: 4 };
/// assert_eq!(exec.run(accounts, withdraw, 0), Ok(Some(4)));
///
/// // The generated contract: the event enum and the kinds.
/// use txn::{EventOf, Service};
/// let ev = AccountsEvent::Deposit(Deposit { to: 1, amount: 1 });
/// assert_eq!(<Accounts as Service>::event_kind(&ev), "Deposit");
/// assert_eq!(<Withdraw as EventOf<Accounts>>::KIND, "Withdraw");
/// ```
///
/// Sending an event to a service that has no handler for it does not compile:
///
/// ```compile_fail,E0277
/// # use serde::{Deserialize, Serialize};
/// # use txn::{AppBuilder, HandlerResult, SerialExecutor, TxnCtx};
/// # use txn_macros::{Event, app, handler, service};
/// # #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// # struct Reserve { #[key] product: u64 }
/// # #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// # struct AddLine { #[key] order: u64 }
/// # #[app(services(Stock, Orders))]
/// # struct Shop;
/// # struct Stock;
/// # #[service(key = u64)]
/// # impl Stock {
/// #     #[handler]
/// #     fn reserve(&self, _: &mut TxnCtx<'_, Shop>, _: &Reserve) -> HandlerResult { Ok(()) }
/// # }
/// # struct Orders;
/// # #[service(key = u64)]
/// # impl Orders {
/// #     #[handler]
/// #     fn add_line(&self, _: &mut TxnCtx<'_, Shop>, _: &AddLine) -> HandlerResult { Ok(()) }
/// # }
/// let mut b = AppBuilder::<Shop>::new();
/// let orders = b.add_service::<Orders>("orders", 1);
/// # Orders.register(&mut b, orders);
/// # let mut exec = SerialExecutor::new(b.build().unwrap());
/// // error: `Reserve` is not an event of service `Orders`
/// exec.run(orders, Reserve { product: 1 }, 0);
/// ```
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::service(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Marks a method of a [`macro@service`] `impl` block as the handler of one event type: the
/// type of its event parameter.
///
/// # Signature
///
/// ```ignore
/// #[handler]
/// fn withdraw(&self, ctx: &mut TxnCtx<'_, MyApp>, ev: &Withdraw) -> HandlerResult
/// ```
///
/// - `&self` (not `&mut self`: handlers run in many partitions at once, so state lives in
///   tables);
/// - the transaction context, `ctx: &mut TxnCtx<'_, MyApp>`;
/// - exactly one event: `ev: &Withdraw` borrows it from the log, `ev: Withdraw` receives a
///   clone (to move its fields out). The event type is a named type of your own (a struct,
///   tuple struct, unit struct or enum) that is `Clone + Debug + Serialize + Deserialize`;
///   what else the handler needs travels in its fields. Its name is its variant in the
///   service's event enum and its kind, so the event types of one service have distinct names,
///   and each has one handler;
/// - it returns `txn::HandlerResult`, or `Result<(), E>` for any `E: Into<txn::Abort>` (such
///   as the service's own `txn::BusinessError` type, so that `?` works on it; the abort keeps
///   the error's kind);
/// - it is neither `async` nor generic, and is not named `register` (the generated method).
///
/// `#[handler(internal)]` marks an event only handlers may emit (e.g. the credit step of a
/// transfer): `App::is_internal` says so, and `Client::submit` refuses it with
/// `TxnError::InternalEvent` before it reaches the log.
///
/// `#[handler(purpose = "checkout")]` (or `purposes("a", "b")`, with or without `internal`)
/// declares what the handler uses personal data for; a handler without one may read no
/// personal data. A read written directly in the body (`ctx.get(self.table, ..)`, `scan*`,
/// `lookup`) of a row type whose personal categories the `#[app(allow(..))]` policy allows for
/// none of the purposes does not compile; other reads are checked at run time
/// (`docs/governance.md`).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::{App, AppBuilder, BusinessError, SerialExecutor, Svc, Table, TxnCtx};
/// use txn_macros::{Event, app, handler, service};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Transfer { #[key] from: u64, to: u64, amount: i64 }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Credit { #[key] to: u64, amount: i64 }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("account {0} holds too little")]
/// struct Overdraft(u64);
///
/// impl BusinessError for Overdraft {
///     fn kind(&self) -> &'static str { "overdraft" }
/// }
///
/// #[app(services(Accounts))]
/// struct Bank;
///
/// struct Accounts { balances: Table<u64, i64>, me: Svc<Accounts> }
///
/// #[service(key = u64)]
/// impl Accounts {
///     // The service's own error type: `?` on a `Result<_, Overdraft>` aborts with its kind.
///     #[handler]
///     fn transfer(&self, ctx: &mut TxnCtx<'_, Bank>, t: Transfer) -> Result<(), Overdraft> {
///         let balance = ctx.get(self.balances, &t.from).map_err(|_| Overdraft(t.from))?;
///         if balance.unwrap_or(0) < t.amount {
///             return Err(Overdraft(t.from));
///         }
///         ctx.emit(self.me, Credit { to: t.to, amount: t.amount });
///         Ok(())
///     }
///
///     #[handler(internal)]
///     fn credit(&self, ctx: &mut TxnCtx<'_, Bank>, c: &Credit) -> txn::HandlerResult {
///         let balance = ctx.get(self.balances, &c.to)?.unwrap_or(0);
///         ctx.put(self.balances, c.to, balance + c.amount)
///     }
/// }
///
/// let credit = BankEvent::Accounts(AccountsEvent::Credit(Credit { to: 1, amount: 1 }));
/// assert!(Bank::is_internal(&credit));
///
/// let mut b = AppBuilder::<Bank>::new();
/// let accounts = b.add_service::<Accounts>("accounts", 2);
/// let balances = b.table(*accounts, "balances");
/// Accounts { balances, me: accounts }.register(&mut b, accounts);
/// let mut exec = SerialExecutor::new(b.build().unwrap());
/// let out = exec.run(accounts, Transfer { from: 1, to: 2, amount: 5 }, 0);
/// assert!(matches!(out, Err(txn::AbortReason::User { kind, .. }) if kind == "overdraft"));
/// ```
///
/// Outside a `#[service]` impl block, `#[handler]` is a compile error.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::handler(attr.into(), item.into()).into()
}

/// Routes an event by its `#[key]` field: implements `txn::KeyOf<FieldType>` returning that
/// field, so `ctx.emit(service, event)`, `client.submit(service, event)` and
/// `exec.run(service, event, ..)` send the event to the partition of `service` owning that
/// key. The field's type must be the receiving service's key type (`#[service(key = ..)]`),
/// or the send does not compile.
///
/// Mark exactly one field `#[key]` (a named or a tuple struct's field). An event sent only to
/// explicit partitions (`ctx.emit_to_partition`, `ctx.broadcast`,
/// `Svc::request_to_partition`) needs no key and no derive; a key computed from the event, or
/// an enum event, is an `impl txn::KeyOf<K>` by hand.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::KeyOf;
/// use txn_macros::Event;
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// pub struct Deposit {
///     #[key]
///     pub account: u64,
///     pub amount: i64,
/// }
///
/// /// Routed by the seller of the item, by hand.
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// pub struct Reserve {
///     pub item: (u64, u64), // (seller, product)
///     pub qty: i64,
/// }
///
/// impl KeyOf<u64> for Reserve {
///     fn key(&self) -> &u64 {
///         &self.item.0
///     }
/// }
///
/// assert_eq!(Deposit { account: 7, amount: 1 }.key(), &7);
/// assert_eq!(Reserve { item: (3, 4), qty: 1 }.key(), &3);
/// ```
#[proc_macro_derive(Event, attributes(key))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    contract::derive_event(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares an application: a unit struct, its services (each a [`macro@service`] type) and
/// the output type of its transactions.
///
/// | argument | required | means |
/// |----------|----------|-------|
/// | `services(A, B, ..)` | yes | the application's services; their type names are distinct |
/// | `output = O` | no | what a transaction returns to its client (`ctx.set_output`); default `()` |
/// | `event = Name` | no | the envelope enum's name; default `<App>Event` |
/// | `allow(pii = ["checkout", ..], card = [..])` | no | the purposes each personal-data category may serve (`App::PURPOSES_ALLOWED`, `docs/governance.md`) |
///
/// Generates `impl txn::App` (its `event_kind`, `is_internal` and `row_hint` ask the service
/// of the event) and the envelope the epoch log stores: `enum <App>Event { A(AEvent), B(BEvent), .. }`,
/// one variant per service, with the struct's visibility, and `impl txn::Envelope<A>` for
/// each service. Users never build the envelope by hand: events are the services' own types,
/// and `ctx.emit`, `client.submit` and `exec.run` wrap them.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::{App, HandlerResult, TxnCtx};
/// use txn_macros::{Event, app, handler, service};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Event)]
/// struct Restock { #[key] product: u64, qty: i64 }
///
/// #[app(services(Stock), output = i64, event = ShopLog)]
/// struct Shop;
///
/// struct Stock;
///
/// #[service(key = u64)]
/// impl Stock {
///     #[handler]
///     fn restock(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Restock) -> HandlerResult {
///         ctx.set_output(ev.qty);
///         Ok(())
///     }
/// }
///
/// let logged: <Shop as App>::Event = ShopLog::Stock(StockEvent::Restock(Restock { product: 1, qty: 2 }));
/// assert_eq!(Shop::event_kind(&logged), "Restock");
/// assert!(!Shop::is_internal(&logged));
/// ```
#[proc_macro_attribute]
pub fn app(attr: TokenStream, item: TokenStream) -> TokenStream {
    contract::app(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
