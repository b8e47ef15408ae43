//! Secondary indexes: maintained at commit and on recovery, read by snapshot queries, and
//! transactional in handlers (no phantoms: a racing insert makes a lookup run again); a row
//! can be indexed under several values (`index_many`).

use crate::common;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::storage::MemoryStorage;
use txn::{App, AppBuilder, AppDef, Index, Runtime, RuntimeConfig, ServiceRef, Table};

struct Orders;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Put {
        order: u64,
        customer: u64,
    },
    Delete {
        order: u64,
        customer: u64,
    },
    /// Counts a customer's orders with the index, inside a transaction.
    Count {
        customer: u64,
    },
    /// Writes basket `basket` of `group` holding `products` (none: deletes it).
    PutBasket {
        group: u64,
        basket: u64,
        products: Vec<u64>,
    },
    /// Counts the baskets of `group` holding `product` with the multi-valued index.
    CountProduct {
        group: u64,
        product: u64,
    },
}

impl App for Orders {
    type Event = Ev;
    type Output = usize;
}

type Key = (u64, u64); // (customer, order): placed by customer, so a customer's orders share a partition

struct Fx {
    app: Arc<AppDef<Orders>>,
    svc: ServiceRef,
    orders: Table<Key, u64>,
    by_customer: Index<u64, Key, u64>,
    baskets: Table<Key, Vec<u64>>,
    by_product: Index<u64, Key, Vec<u64>>,
}

fn build() -> Fx {
    let mut b = AppBuilder::<Orders>::new();
    let svc = b.service("orders", 3);
    let orders = b.table::<Key, u64>(svc, "orders");
    b.place_by(orders, |k: &Key| k.0);
    let by_customer = b.index(orders, "by_customer", |customer: &u64| Some(*customer));
    // (group, basket), placed by group; a basket is indexed under every product it holds.
    let baskets = b.table::<Key, Vec<u64>>(svc, "baskets");
    b.place_by(baskets, |k: &Key| k.0);
    let by_product = b.index_many(baskets, "by_product", |products: &Vec<u64>| {
        products.clone()
    });
    b.handler(svc, move |ctx, ev| {
        match ev {
            Ev::Put { order, customer } => ctx.put(orders, (*customer, *order), *customer)?,
            Ev::Delete { order, customer } => ctx.delete(orders, &(*customer, *order))?,
            Ev::Count { customer } => {
                let n = ctx.lookup(by_customer, customer)?.len();
                ctx.set_output(n);
            }
            Ev::PutBasket {
                group,
                basket,
                products,
            } if products.is_empty() => ctx.delete(baskets, &(*group, *basket))?,
            Ev::PutBasket {
                group,
                basket,
                products,
            } => ctx.put(baskets, (*group, *basket), products.clone())?,
            Ev::CountProduct { group, product } => {
                let found = ctx.lookup(by_product, product)?;
                let n = found.iter().filter(|((g, _), _)| g == group).count();
                ctx.set_output(n);
            }
        }
        Ok(())
    });
    Fx {
        app: b.build().unwrap(),
        svc,
        orders,
        by_customer,
        baskets,
        by_product,
    }
}

async fn count_by_query(rt: &Runtime<Orders>, fx: &Fx, customer: u64) -> usize {
    let ix = fx.by_customer;
    rt.client()
        .query(&[fx.svc], move |v| v.lookup(ix, &customer).len())
        .await
        .unwrap()
        .iter()
        .sum()
}

// Goal: the index follows inserts and deletes, answers queries, and is rebuilt on recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_follows_writes_and_survives_restart() {
    let fx = build();
    let storage = MemoryStorage::new();
    let config = RuntimeConfig {
        storage: Arc::new(storage),
        checkpoint_every_epochs: 4,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let c = rt.client();
    for order in 0..10u64 {
        let customer = order % 3;
        assert!(
            c.submit_raw(fx.svc, &customer, Ev::Put { order, customer })
                .await
                .unwrap()
                .committed()
        );
    }
    assert_eq!(count_by_query(&rt, &fx, 0).await, 4);
    assert_eq!(count_by_query(&rt, &fx, 1).await, 3);
    assert!(
        c.submit_raw(
            fx.svc,
            &0u64,
            Ev::Delete {
                order: 3,
                customer: 0
            }
        )
        .await
        .unwrap()
        .committed()
    );
    assert_eq!(count_by_query(&rt, &fx, 0).await, 3);
    let out = c
        .submit_raw(fx.svc, &1u64, Ev::Count { customer: 1 })
        .await
        .unwrap();
    assert_eq!(out.result, Ok(Some(3)));
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    assert!(rt.recovery_report().checkpoint_epoch.is_some());
    assert_eq!(
        count_by_query(&rt, &fx, 0).await,
        3,
        "index rebuilt from checkpoint + log"
    );
    assert_eq!(count_by_query(&rt, &fx, 2).await, 3);
    let orders = fx.orders;
    let n: usize = rt
        .client()
        .query(&[fx.svc], move |v| v.len(orders))
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(n, 9);
    rt.shutdown().await;
}

/// Runs 8 clients of 120 requests each, `request` drawing each one's routing key and event,
/// and checks the history against the serial replay.
async fn race_and_replay(seed: u64, request: fn(&mut rand_chacha::ChaCha8Rng) -> (u64, Ev)) {
    let fx = Arc::new(build());
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = rt.client();
        let svc = fx.svc;
        tasks.push(tokio::spawn(async move {
            let mut rng = common::rng(seed.wrapping_add(t));
            let mut out = Vec::new();
            for _ in 0..120 {
                let (key, ev) = request(&mut rng);
                let o = c.submit_raw(svc, &key, ev.clone()).await.unwrap();
                out.push((o.serial_pos.unwrap(), key, ev, o.result));
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
    let recorded = history
        .into_iter()
        .map(|(pos, key, event, result)| common::Recorded::<Orders> {
            pos,
            service: fx.svc,
            partition: fx.svc.partition_of(&key),
            event,
            result,
        })
        .collect();
    common::assert_matches_serial_replay(fx.app.clone(), recorded, hash, seed);
}

// Goal: lookups racing inserts and deletes of the same customer give exactly the serial
// replay's counts (an insert by a lower TID is never missed: no phantoms).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_lookups_match_serial_replay() {
    race_and_replay(common::seed("index"), |rng| {
        use rand::Rng;
        let customer = rng.random_range(0..3u64);
        let order = rng.random_range(0..40u64);
        let ev = match rng.random_range(0..10) {
            0..4 => Ev::Count { customer },
            4..8 => Ev::Put { order, customer },
            _ => Ev::Delete { order, customer },
        };
        (customer, ev)
    })
    .await;
}

/// The baskets holding `product`, by query, as `(group, basket)` keys.
async fn baskets_with(rt: &Runtime<Orders>, fx: &Fx, product: u64) -> Vec<Key> {
    let ix = fx.by_product;
    let parts = rt
        .client()
        .query(&[fx.svc], move |v| {
            v.lookup(ix, &product)
                .into_iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    let mut keys: Vec<Key> = parts.into_iter().flatten().collect();
    keys.sort();
    keys
}

// Goal: a row indexed under several values is found (once) under each, follows its changes
// from value to value, leaves the index when deleted, and is seen by in-transaction lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_is_indexed_under_each_of_its_values() {
    let fx = build();
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let put = |group: u64, basket: u64, products: Vec<u64>| Ev::PutBasket {
        group,
        basket,
        products,
    };
    for (basket, products) in [(1, vec![10, 11, 11]), (2, vec![11])] {
        let out = c.submit_raw(fx.svc, &7u64, put(7, basket, products)).await;
        assert!(out.unwrap().committed());
    }
    assert_eq!(baskets_with(&rt, &fx, 10).await, vec![(7, 1)]);
    assert_eq!(baskets_with(&rt, &fx, 11).await, vec![(7, 1), (7, 2)]);
    let entries = {
        let ix = fx.by_product;
        let parts = c
            .query(&[fx.svc], move |v| {
                let entries = v.index_entries(ix).into_iter();
                entries.map(|(p, k)| (*p, *k)).collect::<Vec<_>>()
            })
            .await
            .unwrap();
        parts.into_iter().flatten().collect::<Vec<_>>()
    };
    assert_eq!(entries, vec![(10, (7, 1)), (11, (7, 1)), (11, (7, 2))]);

    // Basket 1 moves from {10, 11} to {11, 12}; basket 2 is deleted.
    assert!(
        c.submit_raw(fx.svc, &7u64, put(7, 1, vec![12, 11]))
            .await
            .unwrap()
            .committed()
    );
    assert!(
        c.submit_raw(fx.svc, &7u64, put(7, 2, vec![]))
            .await
            .unwrap()
            .committed()
    );
    assert_eq!(baskets_with(&rt, &fx, 10).await, vec![]);
    assert_eq!(baskets_with(&rt, &fx, 11).await, vec![(7, 1)]);
    assert_eq!(baskets_with(&rt, &fx, 12).await, vec![(7, 1)]);
    let out = c
        .submit_raw(
            fx.svc,
            &7u64,
            Ev::CountProduct {
                group: 7,
                product: 12,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.result, Ok(Some(1)));
    let orders = fx.baskets;
    let n: usize = c
        .query(&[fx.svc], move |v| v.len(orders))
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(n, 1);
    rt.shutdown().await;
}

// Goal: lookups of a multi-valued index racing writes that add or remove one of a row's
// values give exactly the serial replay's counts (no phantoms through any of the values).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_valued_lookups_match_serial_replay() {
    race_and_replay(common::seed("index_many"), |rng| {
        use rand::Rng;
        let group = rng.random_range(0..2u64);
        let product = rng.random_range(0..4u64);
        let ev = if rng.random_range(0..10) < 4 {
            Ev::CountProduct { group, product }
        } else {
            let n_products = rng.random_range(0..4usize);
            Ev::PutBasket {
                group,
                basket: rng.random_range(0..12u64),
                products: (0..n_products).map(|_| rng.random_range(0..4u64)).collect(),
            }
        };
        (group, ev)
    })
    .await;
}
