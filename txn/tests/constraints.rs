//! Declared constraints: row checks, foreign keys within a service and across services, and
//! their behaviour under concurrency (checked against the serial replay).

use crate::common;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{AbortReason, App, AppBuilder, AppDef, Runtime, RuntimeConfig, ServiceRef, Table};

struct Shop;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    AddCustomer {
        id: u64,
    },
    /// Adds a customer, then places an order for `order_customer` in the orders service.
    AddCustomerThenOrder {
        id: u64,
        order: u64,
        order_customer: u64,
    },
    PlaceOrder {
        order: u64,
        customer: u64,
        qty: i64,
    },
    AddItem {
        item: u64,
        order: u64,
    },
}

impl App for Shop {
    type Event = Ev;
    type Output = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Customer {
    id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    customer: u64,
    qty: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    order: u64,
}

struct Fx {
    app: Arc<AppDef<Shop>>,
    customers_svc: ServiceRef,
    orders_svc: ServiceRef,
    customers: Table<u64, Customer>,
    orders: Table<u64, Order>,
    items: Table<u64, Item>,
}

fn build() -> Fx {
    let mut b = AppBuilder::<Shop>::new();
    let customers_svc = b.service("customers", 3);
    let orders_svc = b.service("orders", 3);
    let customers = b.table::<u64, Customer>(customers_svc, "customers");
    let orders = b.table::<u64, Order>(orders_svc, "orders");
    let items = b.table::<u64, Item>(orders_svc, "order_items");
    b.check(orders, "qty >= 0", |o: &Order| o.qty >= 0);
    b.foreign_key(
        orders,
        "orders.customer -> customers",
        customers,
        |o: &Order| Some(o.customer),
    );
    b.foreign_key(items, "order_items.order -> orders", orders, |i: &Item| {
        Some(i.order)
    });
    b.handler(customers_svc, move |ctx, ev| {
        match ev {
            Ev::AddCustomer { id } => ctx.put(customers, *id, Customer { id: *id })?,
            Ev::AddCustomerThenOrder {
                id,
                order,
                order_customer,
            } => {
                ctx.put(customers, *id, Customer { id: *id })?;
                let ev = Ev::PlaceOrder {
                    order: *order,
                    customer: *order_customer,
                    qty: 1,
                };
                ctx.emit_raw(orders_svc, order, ev);
            }
            other => return Err(ctx.abort(format!("customers cannot handle {other:?}"))),
        }
        Ok(())
    });
    b.handler(orders_svc, move |ctx, ev| {
        match ev {
            Ev::PlaceOrder {
                order,
                customer,
                qty,
            } => ctx.put(
                orders,
                *order,
                Order {
                    customer: *customer,
                    qty: *qty,
                },
            )?,
            Ev::AddItem { item, order } => ctx.put(items, *item, Item { order: *order })?,
            other => return Err(ctx.abort(format!("orders cannot handle {other:?}"))),
        }
        Ok(())
    });
    Fx {
        app: b.build().expect("valid app"),
        customers_svc,
        orders_svc,
        customers,
        orders,
        items,
    }
}

fn constraint_message(r: &Result<Option<()>, AbortReason>) -> String {
    match r {
        Err(AbortReason::Constraint {
            service,
            table,
            message,
        }) => format!("{service}.{table}: {message}"),
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

// Goal: a row failing a check aborts its transaction with a reason naming the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_violation_aborts_with_its_name() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    c.submit_raw(fx.customers_svc, &1u64, Ev::AddCustomer { id: 1 })
        .await
        .unwrap();
    let ev = Ev::PlaceOrder {
        order: 10,
        customer: 1,
        qty: -1,
    };
    let out = c.submit_raw(fx.orders_svc, &10u64, ev).await.unwrap();
    let msg = constraint_message(&out.result);
    assert!(
        msg.contains("orders.orders") && msg.contains("\"qty >= 0\""),
        "{msg}"
    );
    let orders = fx.orders;
    let n: usize = c
        .query(&[fx.orders_svc], move |v| v.len(orders))
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(n, 0);
    rt.shutdown().await;
}

// Goal: a cross-service foreign key violation aborts the whole transaction, in both services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_service_foreign_key_violation_aborts_whole_transaction() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    // Customer 5 is written first in the chain; the order refers to customer 999, which does not exist.
    let ev = Ev::AddCustomerThenOrder {
        id: 5,
        order: 50,
        order_customer: 999,
    };
    let out = c.submit_raw(fx.customers_svc, &5u64, ev).await.unwrap();
    let msg = constraint_message(&out.result);
    assert!(
        msg.contains("orders.customer -> customers")
            && msg.contains("no customers.customers row with key 999"),
        "{msg}"
    );
    let customers = fx.customers;
    let n: usize = c
        .query(&[fx.customers_svc], move |v| v.len(customers))
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(
        n, 0,
        "the customer written earlier in the chain must be discarded too"
    );

    // The parent written earlier in the same chain satisfies the key.
    let ev = Ev::AddCustomerThenOrder {
        id: 6,
        order: 60,
        order_customer: 6,
    };
    assert!(
        c.submit_raw(fx.customers_svc, &6u64, ev)
            .await
            .unwrap()
            .committed()
    );
    rt.shutdown().await;
}

// Goal: a foreign key within one service is enforced the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_within_a_service() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let out = c
        .submit_raw(fx.orders_svc, &1u64, Ev::AddItem { item: 1, order: 77 })
        .await
        .unwrap();
    assert!(constraint_message(&out.result).contains("order_items.order -> orders"));
    c.submit_raw(fx.customers_svc, &2u64, Ev::AddCustomer { id: 2 })
        .await
        .unwrap();
    let ev = Ev::PlaceOrder {
        order: 77,
        customer: 2,
        qty: 3,
    };
    assert!(
        c.submit_raw(fx.orders_svc, &77u64, ev)
            .await
            .unwrap()
            .committed()
    );
    let out = c
        .submit_raw(fx.orders_svc, &1u64, Ev::AddItem { item: 1, order: 77 })
        .await
        .unwrap();
    assert!(out.committed(), "{:?}", out.result);
    let items = fx.items;
    let n: usize = c
        .query(&[fx.orders_svc], move |v| v.len(items))
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(n, 1);
    rt.shutdown().await;
}

// Goal: foreign-key probes are reads like any other: racing customer creations and orders give
// exactly the outcomes of the serial replay (an order is never refused for a customer created
// before it in the serial order, and never accepted for one created after).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_keys_under_concurrency_match_serial_replay() {
    let seed = common::seed("fk-concurrency");
    let fx = Arc::new(build());
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = rt.client();
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = common::rng(seed.wrapping_add(t));
            let mut out = Vec::new();
            for i in 0..150u64 {
                let customer = rng.random_range(0..40u64);
                let (svc, key, ev) = if rng.random_bool(0.4) {
                    (fx.customers_svc, customer, Ev::AddCustomer { id: customer })
                } else {
                    let order = t * 1000 + i;
                    (
                        fx.orders_svc,
                        order,
                        Ev::PlaceOrder {
                            order,
                            customer,
                            qty: 1,
                        },
                    )
                };
                let o = c.submit_raw(svc, &key, ev.clone()).await.unwrap();
                out.push((o.serial_pos.unwrap(), svc, key, ev, o.result));
            }
            out
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    let n_history = history.len();
    let recorded = history
        .into_iter()
        .map(|(pos, svc, key, event, result)| common::Recorded::<Shop> {
            pos,
            service: svc,
            partition: svc.partition_of(&key),
            event,
            result,
        })
        .collect();
    let n_refused =
        n_history - common::assert_matches_serial_replay(fx.app.clone(), recorded, hash, seed);
    assert!(
        n_refused > 0,
        "some orders must have referred to customers not yet created"
    );
    eprintln!("fk-concurrency: {n_history} transactions, {n_refused} refused by the foreign key");
}

// Goal: start-up validation rejects a foreign key declared twice.
#[test]
fn duplicate_foreign_key_is_reported() {
    let mut b = AppBuilder::<Shop>::new();
    let s = b.service("s", 1);
    let parent = b.table::<u64, Customer>(s, "p");
    let child = b.table::<u64, Order>(s, "c");
    b.foreign_key(child, "fk", parent, |o: &Order| Some(o.customer));
    b.foreign_key(child, "fk", parent, |o: &Order| Some(o.customer));
    b.handler(s, |_, _| Ok(()));
    let err = b.build().err().expect("refused");
    assert!(
        err.to_string()
            .contains("foreign key \"fk\" is declared twice"),
        "{err}"
    );
}
