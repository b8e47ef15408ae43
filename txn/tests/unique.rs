//! Unique constraints hold across partitions: a value is held by at most one row, changing or
//! deleting the row releases it, and concurrent claims behave exactly like the serial replay.

use crate::common;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::{AbortReason, App, AppBuilder, AppDef, Runtime, RuntimeConfig, ServiceRef, Table};

struct Accounts;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Upsert { id: u64, email: Option<String> },
    Delete { id: u64 },
}

impl App for Accounts {
    type Event = Ev;
    type Output = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Customer {
    email: Option<String>,
}

fn build() -> (Arc<AppDef<Accounts>>, ServiceRef, Table<u64, Customer>) {
    let mut b = AppBuilder::<Accounts>::new();
    let svc = b.service("customers", 4);
    let customers = b.table::<u64, Customer>(svc, "customers");
    b.unique(customers, "email", |c: &Customer| c.email.clone());
    b.handler(svc, move |ctx, ev| match ev {
        Ev::Upsert { id, email } => ctx.put(
            customers,
            *id,
            Customer {
                email: email.clone(),
            },
        ),
        Ev::Delete { id } => ctx.delete(customers, id),
    });
    (b.build().unwrap(), svc, customers)
}

fn upsert(id: u64, email: &str) -> Ev {
    Ev::Upsert {
        id,
        email: Some(email.to_string()),
    }
}

// Goal: a value held by one row is refused to another (in another partition), and is free again
// once its row changes or is deleted; rows without a value are not constrained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_value_is_held_by_one_row_and_released_on_change_and_delete() {
    let (app, svc, _) = build();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    // Two ids in different partitions.
    let (a, b) = (0..100u64)
        .flat_map(|a| (0..100u64).map(move |b| (a, b)))
        .find(|(a, b)| svc.partition_of(a) != svc.partition_of(b))
        .unwrap();
    assert!(
        c.submit_raw(svc, &a, upsert(a, "x@example.com"))
            .await
            .unwrap()
            .committed()
    );
    let out = c
        .submit_raw(svc, &b, upsert(b, "x@example.com"))
        .await
        .unwrap();
    match &out.result {
        Err(AbortReason::Constraint { message, .. }) => {
            assert!(
                message.contains("unique \"email\"") && message.contains(&format!("key {a}")),
                "{message}"
            )
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    // Rewriting the same value for the same row is fine.
    assert!(
        c.submit_raw(svc, &a, upsert(a, "x@example.com"))
            .await
            .unwrap()
            .committed()
    );
    // a changes its email: x is free for b.
    assert!(
        c.submit_raw(svc, &a, upsert(a, "y@example.com"))
            .await
            .unwrap()
            .committed()
    );
    assert!(
        c.submit_raw(svc, &b, upsert(b, "x@example.com"))
            .await
            .unwrap()
            .committed()
    );
    // a is deleted: y is free.
    assert!(
        c.submit_raw(svc, &a, Ev::Delete { id: a })
            .await
            .unwrap()
            .committed()
    );
    assert!(
        c.submit_raw(svc, &b, upsert(b, "y@example.com"))
            .await
            .unwrap()
            .committed()
    );
    // None values never collide.
    for id in [a, b] {
        let ev = Ev::Upsert { id, email: None };
        assert!(c.submit_raw(svc, &id, ev).await.unwrap().committed());
    }
    rt.shutdown().await;
}

// Goal: concurrent writers racing for a few values get exactly the serial replay's outcomes, and
// no two rows ever share a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_match_serial_replay() {
    let seed = common::seed("unique");
    let (app, svc, customers) = build();
    let rt = Runtime::start(app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let c = rt.client();
        tasks.push(tokio::spawn(async move {
            use rand::Rng;
            let mut rng = common::rng(seed.wrapping_add(t));
            let mut out = Vec::new();
            for _ in 0..100 {
                let id = rng.random_range(0..30u64);
                let ev = if rng.random_bool(0.15) {
                    Ev::Delete { id }
                } else {
                    upsert(id, &format!("e{}", rng.random_range(0..8)))
                };
                let o = c.submit_raw(svc, &id, ev.clone()).await.unwrap();
                out.push((o.serial_pos.unwrap(), id, ev, o.result));
            }
            out
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let emails = rt
        .client()
        .query(&[svc], move |v| {
            v.iter(customers)
                .filter_map(|(id, c)| c.email.clone().map(|e| (e, *id)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    let mut holders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (e, id) in emails.into_iter().flatten() {
        holders.entry(e).or_default().push(id);
    }
    assert!(
        holders.values().all(|ids| ids.len() == 1),
        "seed {seed}: duplicates {holders:?}"
    );

    let n_history = history.len();
    let recorded = history
        .into_iter()
        .map(|(pos, id, event, result)| common::Recorded::<Accounts> {
            pos,
            service: svc,
            partition: svc.partition_of(&id),
            event,
            result,
        })
        .collect();
    let refused = n_history - common::assert_matches_serial_replay(app, recorded, hash, seed);
    assert!(refused > 0, "the race must have refused some duplicates");
}
