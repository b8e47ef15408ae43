//! Provenance on the Online Marketplace (`txn::history`): replaying a checkout that aborted for
//! a stock shortage reproduces its abort reason and shows the stock row the aborting step read.

use services::load::submit_all;
use services::marketplace::{CartAddItem, MarketApp, MarketConfig, Marketplace, kinds};
use std::sync::Arc;
use txn::history::{Access, History, ReplayOutcome};
use txn::storage::MemoryStorage;
use txn::{AbortReason, Retention, Runtime, RuntimeConfig};

fn item(seller_id: u32, product_id: u32, quantity: u32) -> CartAddItem {
    CartAddItem {
        seller_id,
        product_id,
        quantity,
        voucher: false,
    }
}

/// A small marketplace with `initial_stock` units of each product, loaded, on a runtime that
/// retains its history in memory (checkpointing every 4 epochs).
async fn loaded(initial_stock: i64) -> (Marketplace, Arc<MemoryStorage>, Runtime<MarketApp>) {
    let m = Marketplace::new(MarketConfig {
        n_customers: 20,
        n_sellers: 4,
        products_per_seller: 10,
        initial_stock,
        n_partitions: 3,
        payment_failure_pct: 0,
        seed: 5,
        delivery_lanes: 1,
    })
    .unwrap();
    let storage = Arc::new(MemoryStorage::new());
    let config = RuntimeConfig {
        history_retention: Some(Retention::Everything),
        checkpoint_every_epochs: 4,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let rt = Runtime::start(m.app().clone(), config).await.unwrap();
    let load = m.load_requests();
    let n = load.len();
    let report = submit_all(&rt.client(), n, 64, move |i| load[i].clone())
        .await
        .unwrap();
    assert_eq!(report.n_committed, n as u64, "{:?}", report.first_abort);
    (m, storage, rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_aborted_checkout_reproduces_its_abort_reason() {
    let (m, storage, rt) = loaded(5).await;
    // Seller 2 has 5 units of product 20: six cannot be reserved.
    let checkout = m.checkout(2, vec![item(0, 1, 3), item(2, 20, 6)]);
    let out = rt.client().submit_request(checkout).await.unwrap();
    rt.shutdown().await;
    let reason = out.result.clone().expect_err("the checkout aborts");
    let AbortReason::User { kind, .. } = &reason else {
        panic!("a business abort, got {reason:?}");
    };
    assert_eq!(kind, kinds::STOCK_SHORTAGE);

    let history = History::open(m.app().clone(), storage).unwrap();
    let replay = history.replay_tid(out.tid).await.unwrap();
    let pass = out.serial_pos.expect("a handler abort has a position").pass;
    assert_eq!(
        replay.outcome,
        ReplayOutcome::Aborted {
            pass,
            reason: reason.clone()
        }
    );
    let aborting = replay
        .steps
        .iter()
        .find(|s| s.aborted.is_some())
        .expect("one step aborted");
    assert_eq!(aborting.aborted.as_ref(), Some(&reason), "{replay:#?}");
    assert_eq!(aborting.service, "stock", "{replay:#?}");
    // The reservation read the product's stock version (its version check), then its bounded
    // delta on `qty_free` was refused: the reason, equal to the live one, names the 5 free units.
    let read_version = aborting.accesses.iter().any(|a| {
        matches!(a, Access::Read { table, key, value: Some(_) }
            if table == "stock.stock_versions" && key["product_id"] == 20)
    });
    assert!(
        read_version,
        "the step read the stock version of product 20: {replay:#?}"
    );
    assert!(
        !aborting
            .accesses
            .iter()
            .any(|a| matches!(a, Access::Delta { .. })),
        "a refused delta changes nothing: {replay:#?}"
    );
    let AbortReason::User { message, .. } = &reason else {
        unreachable!()
    };
    assert!(message.contains("5 units free"), "{message}");
}

/// "Which handlers read this customer's card data?": a successful checkout of customer 3 reads
/// the customer's row (card digits included) once, when the payment is counted (purpose
/// `payment`); loading wrote it without reading, and another customer's checkout reads only
/// that customer's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_checkout_steps_that_read_a_customers_card() {
    let (m, storage, rt) = loaded(50).await;
    let mine = rt
        .client()
        .submit_request(m.checkout(3, vec![item(0, 1, 1)]))
        .await
        .unwrap();
    assert!(mine.result.is_ok(), "{:?}", mine.result);
    let other = rt
        .client()
        .submit_request(m.checkout(4, vec![item(1, 11, 1)]))
        .await
        .unwrap();
    assert!(other.result.is_ok(), "{:?}", other.result);
    rt.shutdown().await;

    let history = History::open(m.app().clone(), storage).unwrap();
    let trail = history.audit("3").await.unwrap();
    let reads: Vec<_> = trail
        .iter()
        .map(|e| (e.tid, e.handler.as_str(), e.purposes.clone(), e.committed))
        .collect();
    assert_eq!(
        reads,
        [(mine.tid, "CountPayment", vec!["payment".to_string()], true)],
        "{trail:#?}"
    );
    assert!(
        trail
            .iter()
            .all(|e| e.table == "customer.customers" && e.fields == ["name", "card_last4"])
    );
}

/// A checkout reserves and settles each stock partition's items in one step: an approved
/// checkout over three sellers runs exactly one stock step per stock partition it touches,
/// which sells the units (`qty_free` down, `order_count` and `ytd` up) and never touches
/// `qty_reserved`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_settles_the_stock_in_the_step_that_reserves_it() {
    let (m, storage, rt) = loaded(50).await;
    let items = vec![item(0, 1, 2), item(1, 11, 1), item(2, 20, 3)];
    let partitions: std::collections::BTreeSet<u32> = items
        .iter()
        .map(|i| m.services.stock.partition_of(&i.seller_id))
        .collect();
    let out = rt
        .client()
        .submit_request(m.checkout(5, items))
        .await
        .unwrap();
    assert!(out.result.is_ok(), "{:?}", out.result);
    rt.shutdown().await;

    let history = History::open(m.app().clone(), storage).unwrap();
    let replay = history.replay_tid(out.tid).await.unwrap();
    let stock_steps: Vec<_> = replay
        .steps
        .iter()
        .filter(|s| s.service == "stock")
        .collect();
    let visited: std::collections::BTreeSet<u32> =
        stock_steps.iter().map(|s| s.partition).collect();
    assert_eq!(stock_steps.len(), partitions.len(), "{replay:#?}");
    assert_eq!(visited, partitions, "{replay:#?}");
    let deltas: Vec<(&str, i64)> = stock_steps
        .iter()
        .flat_map(|s| &s.accesses)
        .filter_map(|a| match a {
            Access::Delta { field, delta, .. } => Some((field.as_str(), *delta)),
            _ => None,
        })
        .collect();
    assert!(
        deltas.iter().all(|(field, _)| *field != "qty_reserved"),
        "{deltas:?}"
    );
    let sum = |name: &str| -> i64 {
        deltas
            .iter()
            .filter(|(f, _)| *f == name)
            .map(|(_, d)| d)
            .sum()
    };
    assert_eq!(
        (sum("qty_free"), sum("order_count"), sum("ytd")),
        (-6, 3, 6)
    );
}
