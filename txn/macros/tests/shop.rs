//! The macros end to end: a two-service shop whose rows declare their tables with
//! `#[derive(Table)]` and whose services are `#[service]` impl blocks, run on the
//! `SerialExecutor` and on a real `Runtime`.
//!
//! The `txn` table handle is always written `txn::Table` here: these tests import the derive
//! from `txn_macros`, and must keep compiling once `txn` re-exports it too.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{
    AbortReason, App, AppBuilder, AppDef, HandlerResult, Runtime, RuntimeConfig, SerialExecutor,
    ServiceRef, TxnCtx,
};
use txn_macros::{EventKind, Table, handler, service};

struct Shop;

impl App for Shop {
    type Event = Ev;
    type Output = Out;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, EventKind)]
enum Ev {
    /// Struct variant: its handler takes the fields by name.
    AddStock {
        seller: u64,
        product: u64,
        qty: i64,
    },
    /// Newtype variant: its handler takes the payload by reference.
    Reserve(Reservation),
    /// Tuple variant with two fields: taken by value, in order.
    AddLine(u64, Reservation),
    /// Unit variant: its handler takes nothing.
    CountLines,
    /// No service handles it.
    Unrouted {
        x: u64,
    },
    /// To `customers`: a customer with a unique email and an optional unique nickname.
    AddCustomer {
        id: u64,
        email: String,
        nickname: Option<String>,
    },
    /// To `customers`: broadcasts the price to every partition's replica.
    SetPrice {
        product: u64,
        cents: i64,
    },
    CopyPrice {
        product: u64,
        cents: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reservation {
    order: u64,
    seller: u64,
    product: u64,
    qty: i64,
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
    me: ServiceRef,
}

#[service]
impl Customers {
    #[handler(Ev::AddCustomer { .. })]
    fn add(
        &self,
        ctx: &mut TxnCtx<'_, Shop>,
        id: u64,
        email: String,
        nickname: Option<String>,
    ) -> HandlerResult {
        let c = Customer {
            id,
            email,
            nickname,
        };
        ctx.put(self.customers, c.key(), c)
    }

    #[handler(Ev::SetPrice { .. })]
    fn set_price(&self, ctx: &mut TxnCtx<'_, Shop>, product: u64, cents: i64) -> HandlerResult {
        ctx.broadcast(self.me, Ev::CopyPrice { product, cents });
        Ok(())
    }

    #[handler(Ev::CopyPrice { .. })]
    fn copy_price(&self, ctx: &mut TxnCtx<'_, Shop>, product: u64, cents: i64) -> HandlerResult {
        ctx.put(self.prices, product, Price { product, cents })
    }
}

struct Stock {
    items: txn::Table<(u64, u64), StockItem>,
    orders: ServiceRef,
}

#[service]
impl Stock {
    #[handler(Ev::AddStock { .. })]
    fn add_stock(
        &self,
        ctx: &mut TxnCtx<'_, Shop>,
        seller: u64,
        qty: i64,
        product: &u64,
    ) -> HandlerResult {
        let key = (seller, *product);
        let mut item = ctx.get(self.items, &key)?.unwrap_or(StockItem {
            seller,
            product: *product,
            available: 0,
            reserved: 0,
        });
        item.available += qty;
        ctx.set_output(Out::Stock(item.available));
        ctx.put(self.items, item.key(), item)
    }

    #[handler(Ev::Reserve)]
    fn reserve(&self, ctx: &mut TxnCtx<'_, Shop>, r: &Reservation) -> HandlerResult {
        let Some(mut item) = ctx.get(self.items, &(r.seller, r.product))? else {
            return Err(ctx.abort(format!("no product {} of seller {}", r.product, r.seller)));
        };
        item.reserved += r.qty;
        ctx.put(self.items, item.key(), item)?;
        ctx.emit(self.orders, &r.order, Ev::AddLine(1, r.clone()));
        Ok(())
    }

    /// Not a handler: stays an ordinary method.
    #[allow(dead_code)]
    fn helper(&self) -> ServiceRef {
        self.orders
    }
}

struct Orders {
    lines: txn::Table<(u64, u32), OrderLine>,
    counters: txn::Table<u64, Counter>,
}

#[service(app = Shop)]
impl Orders {
    #[handler(Ev::AddLine)]
    fn add_line(&self, ctx: &mut TxnCtx<'_, Shop>, line: u64, r: Reservation) -> HandlerResult {
        let row = OrderLine {
            order: r.order,
            line: line as u32,
            product: r.product,
            qty: r.qty,
        };
        ctx.put(self.lines, row.key(), row)?;
        let n = ctx.get(self.counters, &r.order)?.map_or(0, |c| c.1) + 1;
        let counter = Counter(r.order, n);
        ctx.put(self.counters, counter.key(), counter)
    }

    #[handler(Ev::CountLines)]
    fn count_lines(&self, ctx: &mut TxnCtx<'_, Shop>) -> HandlerResult {
        let n = ctx.scan(self.lines, ..)?.len();
        ctx.set_output(Out::Lines(n));
        Ok(())
    }
}

struct Fx {
    app: Arc<AppDef<Shop>>,
    stock: ServiceRef,
    orders: ServiceRef,
    customers: ServiceRef,
    prices: txn::Table<u64, Price>,
    items: txn::Table<(u64, u64), StockItem>,
    lines: txn::Table<(u64, u32), OrderLine>,
}

fn build() -> Fx {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.service("stock", 3);
    let orders = b.service("orders", 1);
    let customers = b.service("customers", 3);
    let items = StockItem::table(&mut b, stock);
    let lines = OrderLine::table(&mut b, orders);
    let counters = Counter::table(&mut b, orders);
    Stock { items, orders }.register(&mut b, stock);
    Orders { lines, counters }.register(&mut b, orders);
    let prices = Price::table(&mut b, customers);
    Customers {
        customers: Customer::table(&mut b, customers),
        prices,
        me: customers,
    }
    .register(&mut b, customers);
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

fn reservation(order: u64, qty: i64) -> Ev {
    Ev::Reserve(Reservation {
        order,
        seller: 7,
        product: 70,
        qty,
    })
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

// Goal: each event runs the handler of its variant, whatever the variant's shape, and the
// chain across two services commits as one transaction.
#[test]
fn handlers_run_for_their_variants() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = Ev::AddStock {
        seller: 7,
        product: 70,
        qty: 5,
    };
    assert_eq!(
        exec.run_keyed(fx.stock, &7u64, add, 0),
        Ok(Some(Out::Stock(5)))
    );
    assert_eq!(
        exec.run_keyed(fx.stock, &7u64, reservation(1, 2), 0),
        Ok(None)
    );
    assert_eq!(
        exec.run_keyed(fx.stock, &7u64, reservation(2, 3), 0),
        Ok(None)
    );
    assert_eq!(
        exec.run(fx.orders, 0, Ev::CountLines, 0),
        Ok(Some(Out::Lines(2)))
    );
    let (items, lines) = (fx.items, fx.lines);
    let reserved: Vec<i64> = exec
        .query(&[fx.stock], move |v| {
            v.iter(items).map(|(_, i)| i.reserved).sum::<i64>()
        })
        .into_iter()
        .filter(|r| *r != 0)
        .collect();
    assert_eq!(reserved, [5]);
    let line_keys: Vec<(u64, u32)> = exec
        .query(&[fx.orders], move |v| {
            v.iter(lines).map(|(k, _)| *k).collect::<Vec<_>>()
        })
        .concat();
    assert_eq!(line_keys, [(1, 1), (2, 1)]);
}

// Goal: an event of a variant the service has no handler for aborts, naming the event and what
// the service handles.
#[test]
fn unhandled_variant_aborts_with_a_clear_reason() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let out = exec.run_keyed(fx.stock, &1u64, Ev::Unrouted { x: 1 }, 0);
    match out {
        Err(AbortReason::User {
            service, message, ..
        }) => {
            assert_eq!(service, "stock");
            assert_eq!(
                message,
                "Stock has no handler for Unrouted { x: 1 } (it handles Ev::AddStock, Ev::Reserve)"
            );
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    let out = exec.run(fx.orders, 0, Ev::CountLines, 0);
    assert_eq!(out, Ok(Some(Out::Lines(0))));
}

// Goal: struct and field checks declared on the row abort the writing transaction, named after
// their text (or their given name); the whole chain is discarded.
#[test]
fn declared_checks_abort_with_their_names() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = |qty| Ev::AddStock {
        seller: 7,
        product: 70,
        qty,
    };
    let msg = constraint(exec.run_keyed(fx.stock, &7u64, add(-1), 0));
    assert_eq!(
        msg,
        "stock.stock_items: check \"available in 0..\" fails for key (7, 70)"
    );
    exec.run_keyed(fx.stock, &7u64, add(4), 0).unwrap();
    let msg = constraint(exec.run_keyed(fx.stock, &7u64, reservation(1, 5), 0));
    assert_eq!(
        msg,
        "stock.stock_items: check \"reserved <= available\" fails for key (7, 70)"
    );
    let msg = constraint(exec.run_keyed(fx.stock, &7u64, reservation(1, 0), 0));
    assert_eq!(
        msg,
        "orders.order_line: check \"positive quantity\" fails for key (1, 1)"
    );
    // The reservation of 0 was discarded with the order line it emitted.
    assert_eq!(
        exec.run(fx.orders, 0, Ev::CountLines, 0),
        Ok(Some(Out::Lines(0)))
    );
    for order in 0..3 {
        exec.run_keyed(fx.stock, &7u64, reservation(9, 1), 0)
            .unwrap_or_else(|e| panic!("reservation {order}: {e}"));
    }
    let msg = constraint(exec.run_keyed(fx.stock, &7u64, reservation(9, 1), 0));
    assert_eq!(
        msg, "orders.counter: check \".1 in ..=3\" fails for key 9",
        "a tuple struct's field is named by its index"
    );
}

// Goal: `place_by = seller` places every product of a seller in the seller's partition, and
// handlers that follow that routing never touch another partition's rows.
#[test]
fn place_by_puts_a_sellers_rows_together() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    for seller in 0..6u64 {
        for product in 0..4u64 {
            let ev = Ev::AddStock {
                seller,
                product,
                qty: 1,
            };
            exec.run_keyed(fx.stock, &seller, ev, 0).unwrap();
        }
    }
    let (items, stock) = (fx.items, fx.stock);
    let misplaced: usize = exec
        .query(&[fx.stock], move |v| {
            v.iter(items)
                .filter(|(k, _)| stock.partition_of(&k.0) != v.partition())
                .count()
        })
        .iter()
        .sum();
    assert_eq!(misplaced, 0);
    let rows: usize = exec.query(&[fx.stock], move |v| v.len(items)).iter().sum();
    assert_eq!(rows, 24);
}

// Goal: the generated code runs under the real runtime like hand-written handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_the_runtime() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let add = Ev::AddStock {
        seller: 7,
        product: 70,
        qty: 10,
    };
    let out = c.submit(fx.stock, &7u64, add).await.unwrap();
    assert_eq!(out.result, Ok(Some(Out::Stock(10))));
    for order in 0..4 {
        let out = c
            .submit(fx.stock, &7u64, reservation(order, 3))
            .await
            .unwrap();
        assert_eq!(out.committed(), order < 3, "{order}: {:?}", out.result);
    }
    let out = c.submit_to(fx.orders, 0, Ev::CountLines).await.unwrap();
    assert_eq!(out.result, Ok(Some(Out::Lines(3))));
    let items = fx.items;
    let reserved: i64 = c
        .query(&[fx.stock], move |v| {
            v.get(items, &(7, 70)).map_or(0, |i| i.reserved)
        })
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(reserved, 9);
    rt.shutdown().await;
}

// Goal: `kind()` names the variant, `KINDS` lists them all.
#[test]
fn event_kinds() {
    assert_eq!(reservation(1, 1).kind(), "Reserve");
    assert_eq!(Ev::CountLines.kind(), "CountLines");
    assert_eq!(Ev::Unrouted { x: 0 }.kind(), "Unrouted");
    assert_eq!(
        Ev::KINDS,
        [
            "AddStock",
            "Reserve",
            "AddLine",
            "CountLines",
            "Unrouted",
            "AddCustomer",
            "SetPrice",
            "CopyPrice"
        ]
    );
}

// Goal: `key()` is the tuple of the #[key] fields in field order (or the one key field).
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
}

// Goal: `#[unique]` fields hold across partitions (an `Option` only when `Some`), named after
// the field or the given name.
#[test]
fn unique_fields() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let add = |id: u64, email: &str, nickname: Option<&str>| Ev::AddCustomer {
        id,
        email: email.to_string(),
        nickname: nickname.map(str::to_string),
    };
    let mut run = |ev: Ev| {
        let Ev::AddCustomer { id, .. } = ev else {
            unreachable!()
        };
        exec.run_keyed(fx.customers, &id, ev, 0)
    };
    assert_eq!(run(add(1, "a@x", None)), Ok(None));
    assert_eq!(
        run(add(2, "b@x", None)),
        Ok(None),
        "None is not constrained"
    );
    assert_eq!(run(add(3, "c@x", Some("cat"))), Ok(None));
    let msg = constraint(run(add(4, "a@x", None)));
    assert!(msg.contains("unique \"email\""), "{msg}");
    let msg = constraint(run(add(5, "e@x", Some("cat"))));
    assert!(msg.contains("unique \"nickname taken\""), "{msg}");
}

// Goal: `#[table(replicated)]` declares a table every partition holds a copy of.
#[test]
fn replicated_table() {
    let fx = build();
    let mut exec = SerialExecutor::new(fx.app.clone());
    let ev = Ev::SetPrice {
        product: 70,
        cents: 250,
    };
    assert_eq!(exec.run(fx.customers, 1, ev, 0), Ok(None));
    let prices = fx.prices;
    let copies = exec.query(&[fx.customers], move |v| v.get(prices, &70).cloned());
    let expected = Some(Price {
        product: 70,
        cents: 250,
    });
    assert_eq!(copies, vec![expected; 3]);
}
