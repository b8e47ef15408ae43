//! Transactionally consistent replicas: a cart service keeps a replica of the product service's
//! prices in every partition, maintained by events of the same transaction as the update, so
//! at every snapshot each replica equals its source exactly.

use crate::common;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use txn::{App, AppBuilder, Runtime, RuntimeConfig};

struct Shop;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Changes a product's price (product service) and fans the new version out.
    SetPrice { product: u64, price: i64 },
    /// Upserts the replica in one cart partition.
    Replicate {
        product: u64,
        price: i64,
        version: u64,
    },
}

impl App for Shop {
    type Event = Ev;
    type Output = ();
}

// Goal: while prices change concurrently, every snapshot shows every cart partition's replica
// equal to the product's current price and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_stay_exactly_consistent() {
    let seed = common::seed("replica");
    let mut b = AppBuilder::<Shop>::new();
    let product_svc = b.service("product", 3);
    let cart_svc = b.service("cart", 4);
    let products = b.table::<u64, (i64, u64)>(product_svc, "products");
    let replicas = b.replicated_table::<u64, (i64, u64)>(cart_svc, "product_replicas");
    b.handler(product_svc, move |ctx, ev| {
        let Ev::SetPrice { product, price } = ev else {
            return Err(ctx.abort("product only takes SetPrice"));
        };
        let version = ctx.get(products, product)?.map_or(0, |(_, v)| v + 1);
        ctx.put(products, *product, (*price, version))?;
        let ev = Ev::Replicate {
            product: *product,
            price: *price,
            version,
        };
        ctx.broadcast_raw(cart_svc, ev);
        Ok(())
    });
    b.handler(cart_svc, move |ctx, ev| {
        let Ev::Replicate {
            product,
            price,
            version,
        } = ev
        else {
            return Err(ctx.abort("cart only takes Replicate"));
        };
        ctx.put(replicas, *product, (*price, *version))
    });
    let app = b.build().unwrap();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for c in 0..6u64 {
        let client = rt.client();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = common::rng(seed.wrapping_add(c));
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let product = rng.random_range(0..20u64);
                let ev = Ev::SetPrice {
                    product,
                    price: rng.random_range(1..10_000),
                };
                n += u32::from(
                    client
                        .submit_raw(product_svc, &product, ev)
                        .await
                        .unwrap()
                        .committed(),
                );
            }
            n
        }));
    }
    let client = rt.client();
    for _ in 0..150 {
        let snapshot = client
            .query(&[product_svc, cart_svc], move |v| {
                if v.is(product_svc) {
                    v.iter(products)
                        .map(|(k, x)| (u32::MAX, *k, *x))
                        .collect::<Vec<_>>()
                } else {
                    let p = v.partition();
                    v.iter(replicas).map(|(k, x)| (p, *k, *x)).collect()
                }
            })
            .await
            .unwrap();
        let rows: Vec<_> = snapshot.into_iter().flatten().collect();
        let sources: std::collections::BTreeMap<u64, (i64, u64)> = rows
            .iter()
            .filter(|r| r.0 == u32::MAX)
            .map(|r| (r.1, r.2))
            .collect();
        for p in 0..cart_svc.n_partitions() {
            let replica: std::collections::BTreeMap<u64, (i64, u64)> = rows
                .iter()
                .filter(|r| r.0 == p)
                .map(|r| (r.1, r.2))
                .collect();
            assert_eq!(
                replica, sources,
                "seed {seed}: cart partition {p} replica differs from its source"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut updates = 0;
    for w in writers {
        updates += w.await.unwrap();
    }
    rt.shutdown().await;
    assert!(
        updates > 50,
        "prices must have changed during the queries ({updates})"
    );
}
