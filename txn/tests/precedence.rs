//! Event precedence: with a declared rule "price before checkout", a checkout never serializes
//! before a lower-TID price update of its partition, even when they share no row and the price
//! update lost a conflict elsewhere (the case the serial fallback would otherwise reorder).

use crate::common;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, Runtime, RuntimeConfig, SerialPos, ServiceRef};

struct Cart;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Increments one of a few hot rows (so price updates conflict with each other).
    Price { hot: u64 },
    /// Writes its own row only (never conflicts on data).
    Checkout { key: u64 },
}

impl App for Cart {
    type Event = Ev;
    type Output = ();
    fn event_kind(event: &Ev) -> &'static str {
        match event {
            Ev::Price { .. } => "price",
            Ev::Checkout { .. } => "checkout",
        }
    }
}

fn app(with_rule: bool) -> (Arc<AppDef<Cart>>, ServiceRef) {
    let mut b = AppBuilder::<Cart>::new();
    let cart = b.service("cart", 1);
    let rows = b.table::<u64, i64>(cart, "rows");
    if with_rule {
        b.precedence(cart, "price", "checkout");
    }
    b.handler(cart, move |ctx, ev| {
        match ev {
            Ev::Price { hot } => {
                let v = ctx.get(rows, hot)?.unwrap_or(0);
                ctx.put(rows, *hot, v + 1)?;
            }
            Ev::Checkout { key } => ctx.put(rows, *key, 1)?,
        }
        Ok(())
    });
    (b.build().unwrap(), cart)
}

/// Runs price updates and checkouts concurrently; returns how many (price, checkout) pairs of
/// one epoch were serialized against TID order.
async fn inversions(with_rule: bool, seed: u64) -> usize {
    let (app, cart) = app(with_rule);
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let client = rt.client();
        tasks.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = common::rng(seed.wrapping_add(c));
            let mut seen: Vec<(bool, txn::Tid, SerialPos)> = Vec::new();
            for i in 0..120u64 {
                let is_price = rng.random_bool(0.5);
                let ev = if is_price {
                    Ev::Price {
                        hot: rng.random_range(0..2),
                    }
                } else {
                    Ev::Checkout {
                        key: 1_000 + c * 1_000 + i,
                    }
                };
                let out = client.submit_to_raw(cart, 0, ev).await.unwrap();
                seen.push((is_price, out.tid, out.serial_pos.expect("committed")));
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    rt.shutdown().await;
    let prices: Vec<_> = all.iter().filter(|x| x.0).collect();
    let checkouts: Vec<_> = all.iter().filter(|x| !x.0).collect();
    let mut n = 0;
    for p in &prices {
        for c in &checkouts {
            if p.1.epoch() == c.1.epoch() && p.1 < c.1 && c.2 < p.2 {
                n += 1;
            }
        }
    }
    n
}

// Goal: with the rule, no checkout is serialized before a lower-TID price update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn precedence_holds_under_concurrent_submission() {
    let seed = common::seed("precedence");
    assert_eq!(inversions(true, seed).await, 0, "seed {seed}");
}

// Goal: without the rule, the serial fallback does reorder such pairs (so the test above
// checks something the rule causes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_rule_the_fallback_reorders() {
    let seed = common::seed("no-precedence");
    assert!(
        inversions(false, seed).await > 0,
        "seed {seed}: expected reordered pairs"
    );
}

// Goal: a cycle of precedence rules is a start-up error.
#[test]
fn precedence_cycle_is_refused() {
    let mut b = AppBuilder::<Cart>::new();
    let cart = b.service("cart", 1);
    b.precedence(cart, "price", "checkout");
    b.precedence(cart, "checkout", "price");
    b.handler(cart, |_, _| Ok(()));
    let err = b.build().err().expect("refused").to_string();
    assert!(err.contains("cycle"), "{err}");
}
