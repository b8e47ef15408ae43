//! The marketplace's merge-able deltas: checkouts of one product in one epoch do not conflict
//! on its stock (the reservation is an escrowed delta), and the coordination report shows every
//! declared delta as confluent or escrowed.

use services::load::submit_all;
use services::marketplace::{
    CartAddItem, MarketConfig, MarketOutput, Marketplace, ProductKey, check, seller_shard,
};
use std::collections::BTreeSet;
use std::time::Duration;
use txn::{Runtime, RuntimeConfig, SerialHints, Verdict};

/// Checkouts submitted together; also the most an epoch holds.
const N_CHECKOUTS: usize = 8;

fn config() -> MarketConfig {
    MarketConfig {
        n_customers: 20,
        n_sellers: 4,
        products_per_seller: 10,
        initial_stock: 100,
        n_partitions: 3,
        payment_failure_pct: 0,
        seed: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_of_one_product_in_one_epoch_do_not_conflict_on_its_stock() {
    // Goal: eight checkouts of the same product in one epoch reserve its stock by deltas, so
    // none loses a conflict on the stock row: only checkouts whose seller-dashboard shard a
    // lower-TID checkout of the epoch also updates (a read-modify-write) may run in the serial
    // pass. With the stock as a read-modify-write, every checkout but the lowest lost.
    let m = Marketplace::new(config()).unwrap();
    let rt_config = RuntimeConfig {
        // The longest epoch: the checkouts, submitted at once, share one or two of them.
        epoch_duration: Duration::from_micros(txn::limits::EPOCH_DURATION_US_MAX),
        epoch_txns_max: N_CHECKOUTS,
        serial_hints: SerialHints::Off,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(m.app().clone(), rt_config).await.unwrap();
    let client = rt.client();
    let load = m.load_requests();
    let n = load.len();
    let report = submit_all(&client, n, 64, move |i| load[i].clone())
        .await
        .unwrap();
    assert_eq!(report.n_committed, n as u64, "{:?}", report.first_abort);

    let item = CartAddItem {
        seller_id: 1,
        product_id: 12,
        quantity: 2,
        voucher: false,
    };
    let checkouts: Vec<_> = (0..N_CHECKOUTS as u32)
        .map(|c| {
            let client = client.clone();
            let request = m.checkout(c, vec![item]);
            tokio::spawn(async move { client.submit_request(request).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(N_CHECKOUTS);
    for checkout in checkouts {
        outcomes.push(checkout.await.unwrap());
    }
    outcomes.sort_by_key(|o| o.tid);

    // Per epoch, the first checkout of each dashboard shard shares no row with a lower TID.
    let mut shards_taken = BTreeSet::new();
    let mut n_checked_behind_a_lower_tid = 0;
    for o in &outcomes {
        let Ok(Some(MarketOutput::CheckedOut { order, .. })) = o.result else {
            panic!("every checkout commits: {o:?}");
        };
        let pos = o.serial_pos.expect("committed");
        let shard = seller_shard(order.customer_id, order.order_id);
        let first_in_epoch = !shards_taken.iter().any(|(epoch, _)| *epoch == pos.epoch);
        if shards_taken.insert((pos.epoch, shard)) {
            assert_eq!(
                pos.pass, 0,
                "a checkout that shares no row with a lower TID of its epoch commits in the \
                 parallel pass: {outcomes:?}"
            );
            n_checked_behind_a_lower_tid += u32::from(!first_in_epoch);
        }
    }
    assert!(
        n_checked_behind_a_lower_tid > 0,
        "no epoch held two checkouts of different shards, so nothing was tested: {outcomes:?}"
    );

    let s = m.snapshot(&client).await.unwrap();
    let key = ProductKey {
        seller_id: 1,
        product_id: 12,
    };
    let stock = s.stock_items[&key];
    assert_eq!(stock.qty_available, 100 - 2 * N_CHECKOUTS as i64);
    assert_eq!(
        (stock.qty_reserved, stock.order_count),
        (0, N_CHECKOUTS as u64)
    );
    let v = check(&s, &m.expected(Some(N_CHECKOUTS as u64), 0));
    assert!(v.values().all(|n| *n == 0), "{v:?}");
    rt.shutdown().await;
}

#[test]
fn the_coordination_report_escrows_the_stock_and_coordinates_nothing() {
    // Goal: the stock counters are declared as deltas; the free units are escrowed against
    // `qty_free >= 0` (decrements) or confluent (increments), and no declared delta falls
    // back to a read-modify-write.
    let m = Marketplace::new(config()).unwrap();
    let report = m.app().coordination_report();
    let verdict = |field: &str, operation: txn::DeltaUse| {
        report
            .iter()
            .find(|e| e.table == "stock_levels" && e.field == field && e.operation == operation)
            .map(|e| e.verdict)
    };
    use txn::DeltaUse::{Any, BoundedDecrements, Increments};
    assert_eq!(
        verdict("qty_free", BoundedDecrements),
        Some(Verdict::Escrow)
    );
    assert_eq!(verdict("qty_free", Increments), Some(Verdict::Confluent));
    assert_eq!(verdict("qty_reserved", Any), Some(Verdict::Confluent));
    assert_eq!(verdict("order_count", Increments), Some(Verdict::Confluent));
    assert_eq!(verdict("ytd", Increments), Some(Verdict::Confluent));
    assert!(
        report
            .iter()
            .all(|e| matches!(e.verdict, Verdict::Confluent | Verdict::Escrow)),
        "{report:#?}"
    );
}
