//! The macros end to end: a three-service shop whose rows declare their tables with
//! `#[derive(Table)]`, whose events are plain types routed by their `#[key]` field (or a
//! hand-written `KeyOf`, or an explicit partition), whose services are `#[service]` impl
//! blocks and whose application is an `#[app]`, run on the `SerialExecutor` and on a real
//! `Runtime`.
//!
//! The `txn` table handle is always written `txn::Table` here: these tests import the derive
//! from `txn_macros`, and must keep compiling once `txn` re-exports it too.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{
    AbortReason, App, AppBuilder, AppDef, EventOf, HandlerResult, KeyOf, Runtime, RuntimeConfig,
    SerialExecutor, Service, Svc, TxnCtx, TxnError,
};
use txn_macros::{Event, EventKind, Table, app, handler, service};

#[app(services(Stock, Orders, Customers), output = Out)]
struct Shop;

/// To `stock`, routed by seller: its handler takes the event by reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
struct AddStock {
    #[key]
    seller: u64,
    product: u64,
    qty: i64,
}

/// To `stock`, routed by seller through the hand-written `KeyOf` below (no derive).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reservation {
    order: u64,
    seller: u64,
    product: u64,
    qty: i64,
}

impl KeyOf<u64> for Reservation {
    fn key(&self) -> &u64 {
        &self.seller
    }
}

/// To `orders`, emitted to the partition owning its order (no key): a tuple struct its
/// handler takes by value (a clone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct AddLine(u32, Reservation);

/// To one partition of `orders`: a unit struct, sent by partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CountLines;

/// To `customers`: a customer with a unique email and an optional unique nickname.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
struct AddCustomer {
    #[key]
    id: u64,
    email: String,
    nickname: Option<String>,
}

/// To `customers`: broadcasts the price to every partition's replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
struct SetPrice {
    #[key]
    product: u64,
    cents: i64,
}

/// The broadcast step of `SetPrice`: internal, so clients cannot submit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
struct CopyPrice {
    #[key]
    product: u64,
    cents: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Out {
    Stock(i64),
    Lines(usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Table)]
#[table(name = "stock_items", place_by = seller)]
#[check(self.reserved <= self.available)]
struct StockItem {
    #[key]
    seller: u64,
    #[key]
    product: u64,
    #[check(0..)]
    available: i64,
    reserved: i64,
}

/// Default name (`order_line`), ordered, a named check, placed by the order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Table)]
#[table(ordered, place_by(order))]
#[check(self.qty > 0, name = "positive quantity")]
struct OrderLine {
    #[key]
    order: u64,
    #[key]
    line: u32,
    product: u64,
    qty: i64,
}

/// A tuple struct row with a one-field key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Table)]
struct Counter(#[key] u64, #[check(..=3)] u32);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Table)]
struct Customer {
    #[key]
    id: u64,
    #[unique]
    email: String,
    #[unique(name = "nickname taken")]
    nickname: Option<String>,
}

/// A full copy in every partition of the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Table)]
#[table(replicated, name = "prices")]
struct Price {
    #[key]
    product: u64,
    cents: i64,
}

struct Customers {
    customers: txn::Table<u64, Customer>,
    prices: txn::Table<u64, Price>,
    me: Svc<Customers>,
}

#[service(key = u64, vis = pub(crate))]
impl Customers {
    /// Takes the event by value: the handler receives a clone it may move fields out of.
    #[handler]
    fn add(&self, ctx: &mut TxnCtx<'_, Shop>, ev: AddCustomer) -> HandlerResult {
        let c = Customer {
            id: ev.id,
            email: ev.email,
            nickname: ev.nickname,
        };
        ctx.put(self.customers, c.key(), c)
    }

    #[handler]
    fn set_price(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &SetPrice) -> HandlerResult {
        let copy = CopyPrice {
            product: ev.product,
            cents: ev.cents,
        };
        ctx.broadcast(self.me, copy);
        Ok(())
    }

    #[handler(internal)]
    fn copy_price(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &CopyPrice) -> HandlerResult {
        let price = Price {
            product: ev.product,
            cents: ev.cents,
        };
        ctx.put(self.prices, ev.product, price)
    }
}

struct Stock {
    items: txn::Table<(u64, u64), StockItem>,
    orders: Svc<Orders>,
}

#[service(key = u64, vis = pub(crate))]
impl Stock {
    #[handler]
    fn add_stock(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &AddStock) -> HandlerResult {
        let key = (ev.seller, ev.product);
        let mut item = ctx.get(self.items, &key)?.unwrap_or(StockItem {
            seller: ev.seller,
            product: ev.product,
            available: 0,
            reserved: 0,
        });
        item.available += ev.qty;
        ctx.set_output(Out::Stock(item.available));
        ctx.put(self.items, item.key(), item)
    }

    #[handler]
    fn reserve(&self, ctx: &mut TxnCtx<'_, Shop>, r: &Reservation) -> HandlerResult {
        let Some(mut item) = ctx.get(self.items, &(r.seller, r.product))? else {
            return Err(ctx.abort(format!("no product {} of seller {}", r.product, r.seller)));
        };
        item.reserved += r.qty;
        ctx.put(self.items, item.key(), item)?;
        // The line goes to the partition owning its order: any other would abort the
        // transaction with `WrongPartition` when the handler writes the line.
        let partition = self.orders.partition_of(&r.order);
        ctx.emit_to_partition(self.orders, partition, AddLine(1, r.clone()));
        Ok(())
    }

    /// Not a handler: stays an ordinary method.
    #[allow(dead_code)]
    fn helper(&self) -> Svc<Orders> {
        self.orders
    }
}

struct Orders {
    lines: txn::Table<(u64, u32), OrderLine>,
    counters: txn::Table<u64, Counter>,
}

#[service(app = Shop, key = u64, vis = pub(crate))]
impl Orders {
    #[handler]
    fn add_line(&self, ctx: &mut TxnCtx<'_, Shop>, AddLine(line, r): AddLine) -> HandlerResult {
        let row = OrderLine {
            order: r.order,
            line,
            product: r.product,
            qty: r.qty,
        };
        ctx.put(self.lines, row.key(), row)?;
        let n = ctx.get(self.counters, &r.order)?.map_or(0, |c| c.1) + 1;
        let counter = Counter(r.order, n);
        ctx.put(self.counters, counter.key(), counter)
    }

    #[handler]
    fn count_lines(&self, ctx: &mut TxnCtx<'_, Shop>, _: CountLines) -> HandlerResult {
        let n = ctx.scan(self.lines, ..)?.len();
        ctx.set_output(Out::Lines(n));
        Ok(())
    }
}

struct Fx {
    app: Arc<AppDef<Shop>>,
    stock: Svc<Stock>,
    orders: Svc<Orders>,
    customers: Svc<Customers>,
    prices: txn::Table<u64, Price>,
    items: txn::Table<(u64, u64), StockItem>,
    lines: txn::Table<(u64, u32), OrderLine>,
}

fn build() -> Fx {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.add_service::<Stock>("stock", 3);
    let orders = b.add_service::<Orders>("orders", 2);
    let customers = b.add_service::<Customers>("customers", 3);
    let items = StockItem::table(&mut b, *stock);
    let lines = OrderLine::table(&mut b, *orders);
    let counters = Counter::table(&mut b, *orders);
    Stock { items, orders }.register(&mut b, stock);
    Orders { lines, counters }.register(&mut b, orders);
    let prices = Price::table(&mut b, *customers);
    Customers {
        customers: Customer::table(&mut b, *customers),
        prices,
        me: customers,
    }
    .register(&mut b, customers);
    stock.precedence::<AddStock, Reservation>(&mut b);
    Fx {
        app: b.build().expect("valid app"),
        stock,
        orders,
        customers,
        prices,
        items,
        lines,
    }
}

fn reservation(order: u64, qty: i64) -> Reservation {
    Reservation {
        order,
        seller: 7,
        product: 70,
        qty,
    }
}

fn constraint(r: Result<Option<Out>, AbortReason>) -> String {
    match r {
        Err(AbortReason::Constraint {
            service,
            table,
            message,
        }) => format!("{service}.{table}: {message}"),
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

/// The order lines in every partition of `orders`, counted by `CountLines` sent to each.
fn count_lines(exec: &mut SerialExecutor<Shop>, orders: Svc<Orders>) -> usize {
    (0..orders.n_partitions())
        .map(
            |p| match exec.run_request(orders.request_to_partition(p, CountLines), 0) {
                Ok(Some(Out::Lines(n))) => n,
                other => panic!("CountLines in partition {p}: {other:?}"),
            },
        )
        .sum()
}

// Goal: each event runs the handler of its type, whatever its shape (named, tuple or unit
// struct; by reference or by value; routed by a derived key, a hand-written key or a
// partition), and the chain across two services commits as one transaction.
#[test]
fn handlers_run_for_their_event_types() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = AddStock {
        seller: 7,
        product: 70,
        qty: 5,
    };
    assert_eq!(exec.run(fx.stock, add, 0), Ok(Some(Out::Stock(5))));
    assert_eq!(exec.run(fx.stock, reservation(1, 2), 0), Ok(None));
    assert_eq!(exec.run(fx.stock, reservation(2, 3), 0), Ok(None));
    assert_eq!(count_lines(&mut exec, fx.orders), 2);
    let (items, lines) = (fx.items, fx.lines);
    let reserved: Vec<i64> = exec
        .query(&[*fx.stock], move |v| {
            v.iter(items).map(|(_, i)| i.reserved).sum::<i64>()
        })
        .into_iter()
        .filter(|r| *r != 0)
        .collect();
    assert_eq!(reserved, [5]);
    let mut line_keys: Vec<(u64, u32)> = exec
        .query(&[*fx.orders], move |v| {
            v.iter(lines).map(|(k, _)| *k).collect::<Vec<_>>()
        })
        .concat();
    line_keys.sort();
    assert_eq!(line_keys, [(1, 1), (2, 1)]);
}

// Goal: `emit_to_partition` delivers each line to the partition it names, in both partitions
// of `orders`: a line delivered elsewhere would abort with `WrongPartition`.
#[test]
fn emit_to_partition_reaches_the_named_partition() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = AddStock {
        seller: 7,
        product: 70,
        qty: 100,
    };
    exec.run(fx.stock, add, 0).unwrap();
    for order in 0..8 {
        exec.run(fx.stock, reservation(order, 1), 0)
            .unwrap_or_else(|e| panic!("order {order}: {e}"));
    }
    let lines = fx.lines;
    let per_partition = exec.query(&[*fx.orders], move |v| v.len(lines));
    assert_eq!(per_partition.iter().sum::<usize>(), 8);
    assert!(
        per_partition.iter().all(|n| *n > 0),
        "both partitions got lines: {per_partition:?}"
    );
}

// Goal: an event of another service, which only the untyped `*_raw` calls can deliver,
// aborts naming the service and the event.
#[test]
fn another_services_event_aborts_with_a_clear_reason() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let misrouted = ShopEvent::Orders(OrdersEvent::CountLines(CountLines));
    match exec.run_raw(*fx.stock, 0, misrouted, 0) {
        Err(AbortReason::User {
            service, message, ..
        }) => {
            assert_eq!(service, "stock");
            assert_eq!(
                message,
                "Stock received an event of another service: Orders(CountLines(CountLines))"
            );
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(count_lines(&mut exec, fx.orders), 0);
}

// Goal: struct and field checks declared on the row abort the writing transaction, named after
// their text (or their given name); the whole chain is discarded.
#[test]
fn declared_checks_abort_with_their_names() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = |qty| AddStock {
        seller: 7,
        product: 70,
        qty,
    };
    let msg = constraint(exec.run(fx.stock, add(-1), 0));
    assert_eq!(
        msg,
        "stock.stock_items: check \"available in 0..\" fails for key (7, 70)"
    );
    exec.run(fx.stock, add(4), 0).unwrap();
    let msg = constraint(exec.run(fx.stock, reservation(1, 5), 0));
    assert_eq!(
        msg,
        "stock.stock_items: check \"reserved <= available\" fails for key (7, 70)"
    );
    let msg = constraint(exec.run(fx.stock, reservation(1, 0), 0));
    assert_eq!(
        msg,
        "orders.order_line: check \"positive quantity\" fails for key (1, 1)"
    );
    // The reservation of 0 was discarded with the order line it emitted.
    assert_eq!(count_lines(&mut exec, fx.orders), 0);
    for order in 0..3 {
        exec.run(fx.stock, reservation(9, 1), 0)
            .unwrap_or_else(|e| panic!("reservation {order}: {e}"));
    }
    let msg = constraint(exec.run(fx.stock, reservation(9, 1), 0));
    assert_eq!(
        msg, "orders.counter: check \".1 in ..=3\" fails for key 9",
        "a tuple struct's field is named by its index"
    );
}

// Goal: `place_by = seller` places every product of a seller in the seller's partition, and
// events routed by their seller key never touch another partition's rows.
#[test]
fn place_by_puts_a_sellers_rows_together() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    for seller in 0..6u64 {
        for product in 0..4u64 {
            let ev = AddStock {
                seller,
                product,
                qty: 1,
            };
            exec.run(fx.stock, ev, 0).unwrap();
        }
    }
    let (items, stock) = (fx.items, fx.stock);
    let misplaced: usize = exec
        .query(&[*fx.stock], move |v| {
            v.iter(items)
                .filter(|(k, _)| stock.partition_of(&k.0) != v.partition())
                .count()
        })
        .iter()
        .sum();
    assert_eq!(misplaced, 0);
    let rows: usize = exec.query(&[*fx.stock], move |v| v.len(items)).iter().sum();
    assert_eq!(rows, 24);
}

/// The shop on an in-memory runtime.
async fn start() -> (Fx, Runtime<Shop>) {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    (fx, rt)
}

// Goal: the generated code runs under the real runtime like hand-written handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_the_runtime() {
    let (fx, rt) = start().await;
    let c = rt.client();
    let add = AddStock {
        seller: 7,
        product: 70,
        qty: 10,
    };
    let out = c.submit(fx.stock, add).await.unwrap();
    assert_eq!(out.result, Ok(Some(Out::Stock(10))));
    for order in 0..4 {
        let out = c.submit(fx.stock, reservation(order, 3)).await.unwrap();
        assert_eq!(out.committed(), order < 3, "{order}: {:?}", out.result);
    }
    let mut lines = 0;
    for p in 0..fx.orders.n_partitions() {
        let request = fx.orders.request_to_partition(p, CountLines);
        match c.submit_request(request).await.unwrap().result {
            Ok(Some(Out::Lines(n))) => lines += n,
            other => panic!("CountLines in partition {p}: {other:?}"),
        }
    }
    assert_eq!(lines, 3);
    let items = fx.items;
    let reserved: i64 = c
        .query(&[*fx.stock], move |v| {
            v.get(items, &(7, 70)).map_or(0, |i| i.reserved)
        })
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(reserved, 9);
    rt.shutdown().await;
}

// Goal: a `#[handler(internal)]` event is refused to clients before it reaches the log, while
// the handler that emits it still runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_events_are_refused_to_clients() {
    let (fx, rt) = start().await;
    let c = rt.client();
    let copy = CopyPrice {
        product: 70,
        cents: 1,
    };
    match c.submit(fx.customers, copy).await {
        Err(TxnError::InternalEvent { service, kind }) => {
            assert_eq!(
                (service.as_str(), kind.as_str()),
                ("customers", "CopyPrice")
            );
        }
        other => panic!("expected InternalEvent, got {other:?}"),
    }
    let set = SetPrice {
        product: 70,
        cents: 250,
    };
    assert!(c.submit(fx.customers, set).await.unwrap().committed());
    let prices = fx.prices;
    let copies = c
        .query(&[*fx.customers], move |v| {
            v.get(prices, &70).map(|p| p.cents)
        })
        .await
        .unwrap();
    assert_eq!(copies, vec![Some(250); 3]);
    rt.shutdown().await;
}

// Goal: the kind of an event is its type's name, at every level: the service's generated
// enum, the application's envelope and `EventOf::KIND`; `is_internal` follows
// `#[handler(internal)]`.
#[test]
fn event_kinds_are_the_type_names() {
    let reserve = StockEvent::Reservation(reservation(1, 1));
    assert_eq!(<Stock as Service>::event_kind(&reserve), "Reservation");
    assert_eq!(Shop::event_kind(&ShopEvent::Stock(reserve)), "Reservation");
    let count = ShopEvent::Orders(OrdersEvent::CountLines(CountLines));
    assert_eq!(Shop::event_kind(&count), "CountLines");
    assert_eq!(<AddLine as EventOf<Orders>>::KIND, "AddLine");
    assert_eq!(<AddStock as EventOf<Stock>>::KIND, "AddStock");
    assert_eq!(<Stock as Service>::NAME, "Stock");
    let copy = CopyPrice {
        product: 1,
        cents: 1,
    };
    let set = SetPrice {
        product: 1,
        cents: 1,
    };
    assert!(Shop::is_internal(&ShopEvent::Customers(
        CustomersEvent::CopyPrice(copy)
    )));
    assert!(!Shop::is_internal(&ShopEvent::Customers(
        CustomersEvent::SetPrice(set)
    )));
}

// Goal: a typed precedence rule names its events by type; the rules are checked at build
// time under those kinds (a rule of a kind before itself, a cycle), in the named service.
#[test]
fn typed_precedence_rules_use_the_type_names() {
    let invalid = |rules: fn(Svc<Stock>, &mut AppBuilder<Shop>)| {
        let mut b = AppBuilder::<Shop>::new();
        let stock = b.add_service::<Stock>("stock", 1);
        let orders = b.add_service::<Orders>("orders", 1);
        let items = StockItem::table(&mut b, *stock);
        let lines = OrderLine::table(&mut b, *orders);
        let counters = Counter::table(&mut b, *orders);
        Stock { items, orders }.register(&mut b, stock);
        Orders { lines, counters }.register(&mut b, orders);
        rules(stock, &mut b);
        match b.build() {
            Err(TxnError::InvalidApp(problems)) => problems,
            Err(other) => panic!("expected InvalidApp, got {other}"),
            Ok(_) => Vec::new(),
        }
    };
    assert_eq!(
        invalid(|stock, b| stock.precedence::<AddStock, Reservation>(b)),
        Vec::<String>::new()
    );
    assert_eq!(
        invalid(|stock, b| stock.precedence::<Reservation, Reservation>(b)),
        ["service \"stock\": precedence rule puts \"Reservation\" before itself"]
    );
    let cycle = invalid(|stock, b| {
        stock.precedence::<AddStock, Reservation>(b);
        stock.precedence::<Reservation, AddStock>(b);
    });
    assert!(
        cycle.contains(
            &"service \"stock\": precedence rules form a cycle through \"AddStock\"".into()
        ),
        "{cycle:?}"
    );
}

// Goal: `key()` is the tuple of the #[key] fields in field order (or the one key field); an
// event's derived `KeyOf` returns its #[key] field.
#[test]
fn keys() {
    let line = OrderLine {
        order: 4,
        line: 2,
        product: 9,
        qty: 1,
    };
    assert_eq!(line.key(), (4, 2));
    assert_eq!(Counter(3, 1).key(), 3);
    let add = AddStock {
        seller: 5,
        product: 6,
        qty: 7,
    };
    assert_eq!(KeyOf::<u64>::key(&add), &5);
    assert_eq!(KeyOf::<u64>::key(&reservation(1, 1)), &7);
}

// Goal: `#[unique]` fields hold across partitions (an `Option` only when `Some`), named after
// the field or the given name.
#[test]
fn unique_fields() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let mut add = |id: u64, email: &str, nickname: Option<&str>| {
        let ev = AddCustomer {
            id,
            email: email.to_string(),
            nickname: nickname.map(str::to_string),
        };
        exec.run(fx.customers, ev, 0)
    };
    assert_eq!(add(1, "a@x", None), Ok(None));
    assert_eq!(add(2, "b@x", None), Ok(None), "None is not constrained");
    assert_eq!(add(3, "c@x", Some("cat")), Ok(None));
    let msg = constraint(add(4, "a@x", None));
    assert!(msg.contains("unique \"email\""), "{msg}");
    let msg = constraint(add(5, "e@x", Some("cat")));
    assert!(msg.contains("unique \"nickname taken\""), "{msg}");
}

// Goal: `#[table(replicated)]` declares a table every partition holds a copy of, filled by a
// `broadcast`.
#[test]
fn replicated_table() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let ev = SetPrice {
        product: 70,
        cents: 250,
    };
    assert_eq!(exec.run(fx.customers, ev, 0), Ok(None));
    let prices = fx.prices;
    let copies = exec.query(&[*fx.customers], move |v| v.get(prices, &70).cloned());
    let expected = Some(Price {
        product: 70,
        cents: 250,
    });
    assert_eq!(copies, vec![expected; 3]);
}

/// An enum for a hand-written `App`, where `#[derive(EventKind)]` still names the variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, EventKind)]
enum LegacyEv {
    Restock { seller: u64, qty: i64 },
    Reserve(Reservation),
    Audit,
}

// Goal: `kind()` names the variant, `KINDS` lists them all (for hand-written applications).
#[test]
fn event_kind_derive_names_variants() {
    assert_eq!(LegacyEv::Reserve(reservation(1, 1)).kind(), "Reserve");
    assert_eq!(LegacyEv::Audit.kind(), "Audit");
    assert_eq!(LegacyEv::Restock { seller: 1, qty: 1 }.kind(), "Restock");
    assert_eq!(LegacyEv::KINDS, ["Restock", "Reserve", "Audit"]);
}
