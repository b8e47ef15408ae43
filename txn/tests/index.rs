//! Secondary indexes: maintained at commit and on recovery, read by snapshot queries, and
//! transactional in handlers (no phantoms: a racing insert makes a lookup run again).

mod common;

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
}

fn build() -> Fx {
    let mut b = AppBuilder::<Orders>::new();
    let svc = b.service("orders", 3);
    let orders = b.table::<Key, u64>(svc, "orders");
    b.place_by(orders, |k: &Key| k.0);
    let by_customer = b.index(orders, "by_customer", |customer: &u64| Some(*customer));
    b.handler(svc, move |ctx, ev| {
        match ev {
            Ev::Put { order, customer } => ctx.put(orders, (*customer, *order), *customer)?,
            Ev::Delete { order, customer } => ctx.delete(orders, &(*customer, *order))?,
            Ev::Count { customer } => {
                let n = ctx.lookup(by_customer, customer)?.len();
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
            c.submit(fx.svc, &customer, Ev::Put { order, customer })
                .await
                .unwrap()
                .committed()
        );
    }
    assert_eq!(count_by_query(&rt, &fx, 0).await, 4);
    assert_eq!(count_by_query(&rt, &fx, 1).await, 3);
    assert!(
        c.submit(
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
        .submit(fx.svc, &1u64, Ev::Count { customer: 1 })
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

// Goal: lookups racing inserts and deletes of the same customer give exactly the serial
// replay's counts (an insert by a lower TID is never missed: no phantoms).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_lookups_match_serial_replay() {
    let seed = common::seed("index");
    let fx = Arc::new(build());
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = rt.client();
        let svc = fx.svc;
        tasks.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = common::rng(seed.wrapping_add(t));
            let mut out = Vec::new();
            for _ in 0..120 {
                let customer = rng.random_range(0..3u64);
                let order = rng.random_range(0..40u64);
                let ev = match rng.random_range(0..10) {
                    0..4 => Ev::Count { customer },
                    4..8 => Ev::Put { order, customer },
                    _ => Ev::Delete { order, customer },
                };
                let o = c.submit(svc, &customer, ev.clone()).await.unwrap();
                out.push((o.serial_pos.unwrap(), customer, ev, o.result));
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
        .map(
            |(pos, customer, event, result)| common::Recorded::<Orders> {
                pos,
                service: fx.svc,
                partition: fx.svc.partition_of(&customer),
                event,
                result,
            },
        )
        .collect();
    common::assert_matches_serial_replay(fx.app.clone(), recorded, hash, seed);
}
