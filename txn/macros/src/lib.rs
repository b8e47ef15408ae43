//! Derive and attribute macros for vmsdb services: rows that declare their own tables, event
//! kinds, and services whose handlers are plain methods.
//!
//! - [`derive@Table`] on a row struct: its `#[key]` fields, its table's name, ordering,
//!   placement and `#[check]`s, declared with one call `Row::table(&mut builder, service)`.
//! - [`derive@EventKind`] on the application's event enum: `event.kind()` is the variant's name.
//! - [`macro@service`] on an `impl` block and [`macro@handler`] on its methods: each handler runs
//!   one event variant; the generated `register` installs them all as the service's handler.
//!
//! The generated code names the transaction layer as `::txn`, so a crate using these macros
//! depends on `txn` under that name.

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
///   declares the table with everything below;
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
/// use txn_macros::Table;
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
/// # struct Shop;
/// # #[derive(Clone, Debug, Serialize, Deserialize)]
/// # enum Ev { Reserve { seller: u64, product: u64, qty: i64 } }
/// # impl txn::App for Shop { type Event = Ev; type Output = (); }
///
/// let mut b = txn::AppBuilder::<Shop>::new();
/// let stock = b.service("stock", 4);
/// // Declares `stock_items` keyed by (seller, product), placed by seller, with two checks.
/// let stock_items: txn::Table<(u64, u64), StockItem> = StockItem::table(&mut b, stock);
/// b.handler(stock, move |ctx, ev| {
///     let Ev::Reserve { seller, product, qty } = *ev;
///     let mut item = ctx.get(stock_items, &(seller, product))?
///         .ok_or_else(|| ctx.abort("no such item"))?;
///     item.reserved += qty; // aborts the transaction if it passes `available`
///     ctx.put(stock_items, item.key(), item)
/// });
/// # b.build().unwrap();
/// ```
///
/// Without the derive, the declaration is:
///
/// ```ignore
/// let stock_items = b.table::<(u64, u64), StockItem>(stock, "stock_items");
/// b.place_by(stock_items, |k: &(u64, u64)| k.0);
/// b.check(stock_items, "reserved <= available", |r: &StockItem| r.reserved <= r.available);
/// b.check(stock_items, "available in 0..", |r: &StockItem| r.available >= 0);
/// ```
#[proc_macro_derive(Table, attributes(table, key, check, unique))]
pub fn derive_table(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    table::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Names an event's variant: `event.kind()` returns `"Deposit"` for `Ev::Deposit { .. }`, and
/// `Ev::KINDS` lists every variant in declaration order.
///
/// Useful for metrics and logs keyed by event type, abort reasons, and precedence rules
/// between event types, without matching on every variant by hand.
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

/// Makes an `impl` block a service: its [`macro@handler`] methods run the events of the
/// variants they name, and a generated `register` installs them as the service's handler.
///
/// The type holds what the handlers need — table handles, other services' `ServiceRef`s to
/// emit to, configuration — and must be `Send + Sync + 'static` (it lives in the runtime).
/// The generated method is
///
/// ```ignore
/// pub fn register(self, builder: &mut txn::AppBuilder<MyApp>, service: txn::ServiceRef)
/// ```
///
/// It calls `AppBuilder::handler` once with a dispatcher that matches the event on the
/// handlers' variants. An event of a variant without a handler aborts its transaction with a
/// reason naming the event and the variants the service handles (a misrouted event is a bug in
/// the code that emitted it).
///
/// `MyApp` is read off the handlers' context parameter (`ctx: &mut TxnCtx<'_, MyApp>`); name it
/// with `#[service(app = MyApp)]` if the context is written another way (through a type
/// alias, say).
///
/// # Example
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use txn::{App, AppBuilder, HandlerResult, SerialExecutor, ServiceRef, Table, TxnCtx};
/// use txn_macros::{handler, service};
///
/// struct Bank;
/// impl App for Bank {
///     type Event = Ev;
///     type Output = i64;
/// }
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum Ev {
///     Withdraw { from: u64, to: u64, amount: i64 },
///     Deposit { to: u64, amount: i64 },
///     Close(u64),
/// }
///
/// struct Accounts {
///     balances: Table<u64, i64>,
///     me: ServiceRef,
/// }
///
/// #[service]
/// impl Accounts {
///     #[handler(Ev::Withdraw { .. })]
///     fn withdraw(&self, ctx: &mut TxnCtx<'_, Bank>, from: u64, to: u64, amount: i64) -> HandlerResult {
///         let balance = ctx.get(self.balances, &from)?.unwrap_or(0);
///         if balance < amount {
///             return Err(ctx.abort(format!("account {from} has {balance} < {amount}")));
///         }
///         ctx.put(self.balances, from, balance - amount)?;
///         ctx.emit(self.me, &to, Ev::Deposit { to, amount });
///         Ok(())
///     }
///
///     #[handler(Ev::Deposit { .. })]
///     fn deposit(&self, ctx: &mut TxnCtx<'_, Bank>, to: u64, amount: i64) -> HandlerResult {
///         let balance = ctx.get(self.balances, &to)?.unwrap_or(0) + amount;
///         ctx.put(self.balances, to, balance)?;
///         ctx.set_output(balance);
///         Ok(())
///     }
/// }
///
/// let mut b = AppBuilder::<Bank>::new();
/// let bank = b.service("bank", 4);
/// let balances = b.table(bank, "balances");
/// Accounts { balances, me: bank }.register(&mut b, bank);
///
/// let mut exec = SerialExecutor::new(b.build().unwrap());
/// let deposit = Ev::Deposit { to: 1, amount: 10 };
/// assert_eq!(exec.run_keyed(bank, &1u64, deposit, 0), Ok(Some(10)));
/// let withdraw = Ev::Withdraw { from: 1, to: 2, amount: 4 };
/// assert_eq!(exec.run_keyed(bank, &1u64, withdraw, 0), Ok(Some(4)));
/// // No handler for `Close`: the transaction aborts, naming the event.
/// let closed = exec.run_keyed(bank, &1u64, Ev::Close(1), 0);
/// assert!(closed.unwrap_err().to_string().contains("no handler for Close(1)"));
/// ```
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::service(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Marks a method of a [`macro@service`] `impl` block as the handler of one event variant.
///
/// The method takes `&self`, then the transaction context, then the variant's payload, and
/// returns `txn::HandlerResult`, or `Result<(), E>` for any `E: Into<txn::Abort>` (such as the
/// service's own `txn::BusinessError` type, so that `?` works on it):
///
/// | attribute | variant | parameters after `ctx` |
/// |-----------|---------|------------------------|
/// | `#[handler(Ev::Transfer)]` | tuple `Transfer(Transfer)` | its fields in order: `t: &Transfer` |
/// | `#[handler(Ev::Withdraw { .. })]` | struct `Withdraw { from, to, amount }` | any of its fields, by name: `from: u64, amount: i64` |
/// | either, no parameters | any | none: the handler only needs to know the variant |
///
/// A parameter of reference type borrows the field from the event; any other type receives a
/// clone (`amount: i64` rather than `amount: &i64`).
///
/// ```ignore
/// #[handler(Ev::Transfer)]
/// fn transfer(&self, ctx: &mut TxnCtx<'_, Ledger>, t: &Transfer) -> HandlerResult { .. }
///
/// #[handler(Ev::Deposit { .. })]
/// fn deposit(&self, ctx: &mut TxnCtx<'_, Ledger>, account: u64, amount: i64) -> HandlerResult { .. }
/// ```
///
/// Outside a `#[service]` impl block, `#[handler]` is a compile error.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::handler(attr.into(), item.into()).into()
}

/// Routes an event by its `#[key]` field: implements `txn::KeyOf<FieldType>`, so
/// `ctx.emit(service, event)` and `client.submit(service, event)` send the event to the
/// partition owning that key. The field's type must be the receiving service's key type
/// (`#[service(key = ..)]`), or the send does not compile.
///
/// ```ignore
/// #[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
/// pub struct Deposit {
///     #[key]
///     pub account: u64,
///     pub amount: i64,
/// }
/// ```
///
/// An event sent only to explicit partitions (`emit_to_partition`, `broadcast`) needs no key
/// and no derive; a key computed from the event is an `impl txn::KeyOf<K>` by hand.
#[proc_macro_derive(Event, attributes(key))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    contract::derive_event(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares an application: a unit struct, its services (each a `#[service]` type) and the
/// output type of its transactions. Generates `impl txn::App` and the envelope enum the epoch
/// log stores (`<App>Event`, one variant per service; rename it with `event = Name`), so no
/// user writes the application-wide event type by hand.
///
/// ```ignore
/// #[txn::app(services(Accounts, Assets), output = LedgerOutput)]
/// pub struct LedgerApp;
/// ```
#[proc_macro_attribute]
pub fn app(attr: TokenStream, item: TokenStream) -> TokenStream {
    contract::app(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
