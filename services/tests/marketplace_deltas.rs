//! The marketplace's coordination avoidance: checkouts of one product in one epoch do not
//! conflict on its stock (the reservation is an escrowed delta), on the seller's dashboard
//! aggregates or the customers' counters (deltas); deliveries pop a lane of each seller's queue,
//! so those of one epoch in different lanes do not conflict; and the coordination report shows
//! every declared delta as confluent or escrowed.

use services::load::submit_all;
use services::marketplace::{
    CartAddItem, MarketApp, MarketConfig, MarketOutput, Marketplace, PackageStatus, ProductKey,
    check, delivery_lane, seller_shard,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use txn::{Client, Outcome, Runtime, RuntimeConfig, SerialHints, Verdict};

/// Checkouts submitted together; also the most an epoch holds.
const N_CHECKOUTS: usize = 8;

fn config(delivery_lanes: u16) -> MarketConfig {
    MarketConfig {
        n_customers: 20,
        n_sellers: 4,
        products_per_seller: 10,
        initial_stock: 100,
        n_partitions: 3,
        payment_failure_pct: 0,
        seed: 5,
        delivery_lanes,
    }
}
/// A loaded marketplace on a runtime whose epochs last as long as allowed and hold at most
/// `epoch_txns_max` transactions, without serial hints (every transaction tries the parallel
/// pass first).
async fn started(
    config: MarketConfig,
    epoch_txns_max: usize,
) -> (Marketplace, Runtime<MarketApp>, Client<MarketApp>) {
    let m = Marketplace::new(config).unwrap();
    let rt_config = RuntimeConfig {
        epoch_duration: Duration::from_micros(txn::limits::EPOCH_DURATION_US_MAX),
        epoch_txns_max,
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
    (m, rt, client)
}

/// Submits `requests` at once and returns their outcomes in TID order.
async fn submit_together(
    client: &Client<MarketApp>,
    requests: Vec<txn::Request<MarketApp>>,
) -> Vec<Outcome<MarketOutput>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let client = client.clone();
            tokio::spawn(async move { client.submit_request(r).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes.sort_by_key(|o| o.tid);
    outcomes
}

fn item(seller_id: u32, product_id: u32) -> CartAddItem {
    CartAddItem {
        seller_id,
        product_id,
        quantity: 1,
        voucher: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_of_one_product_in_one_epoch_do_not_conflict_on_its_stock() {
    // Goal: eight checkouts of the same product in one epoch reserve its stock by deltas, so
    // none loses a conflict on the stock row: at least the first checkout of each dashboard
    // shard in an epoch commits in the parallel pass (since the shards became deltas too, all
    // do; see the next tests). With the stock as a read-modify-write, every checkout but the
    // lowest lost.
    let (m, rt, client) = started(config(1), N_CHECKOUTS).await;

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
    // `qty_free >= 0` (decrements) or confluent (increments); the dashboard aggregates and the
    // customer counters are confluent; and no declared delta falls back to a
    // read-modify-write.
    let m = Marketplace::new(config(1)).unwrap();
    let report = m.app().coordination_report();
    let verdict_in = |table: &str, field: &str, operation: txn::DeltaUse| {
        report
            .iter()
            .find(|e| e.table == table && e.field == field && e.operation == operation)
            .map(|e| e.verdict)
    };
    let verdict = |field: &str, operation| verdict_in("stock_levels", field, operation);
    use txn::DeltaUse::{Any, BoundedDecrements, Increments};
    assert_eq!(
        verdict("qty_free", BoundedDecrements),
        Some(Verdict::Escrow)
    );
    assert_eq!(verdict("qty_free", Increments), Some(Verdict::Confluent));
    // A reservation is confirmed or released in its own step: reserved units never show.
    assert_eq!(verdict("qty_reserved", Any), None);
    assert_eq!(verdict("order_count", Increments), Some(Verdict::Confluent));
    assert_eq!(verdict("ytd", Increments), Some(Verdict::Confluent));
    for field in ["count_orders", "count_items", "total_invoice"] {
        let v = verdict_in("seller_views", field, Any);
        assert_eq!(v, Some(Verdict::Confluent), "{field}");
    }
    for field in [
        "success_payment_count",
        "failed_payment_count",
        "delivery_count",
    ] {
        let v = verdict_in("customer_counters", field, Increments);
        assert_eq!(v, Some(Verdict::Confluent), "{field}");
    }
    assert!(
        report
            .iter()
            .all(|e| matches!(e.verdict, Verdict::Confluent | Verdict::Escrow)),
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_of_one_seller_in_one_epoch_all_commit_in_the_parallel_pass() {
    // Goal: sixteen checkouts of one product by distinct customers, in epochs of up to
    // sixteen, all commit in the parallel pass: the stock, the seller's dashboard shards and
    // the customers' counters change by deltas. With the dashboard as a read-modify-write of
    // one of its 8 shards, an epoch holding more than 8 of them had two on one shard, and the
    // higher TID lost.
    const N: usize = 16;
    let (m, rt, client) = started(config(1), N).await;
    let requests = (0..N as u32)
        .map(|c| m.checkout(c, vec![item(1, 12)]))
        .collect();
    let outcomes = submit_together(&client, requests).await;
    let mut per_epoch: BTreeMap<u64, usize> = BTreeMap::new();
    for o in &outcomes {
        assert!(
            matches!(o.result, Ok(Some(MarketOutput::CheckedOut { .. }))),
            "{o:?}"
        );
        let pos = o.serial_pos.expect("committed");
        assert_eq!(
            pos.pass, 0,
            "every checkout commits in parallel: {outcomes:?}"
        );
        *per_epoch.entry(pos.epoch).or_default() += 1;
    }
    assert!(
        per_epoch.values().any(|n| *n > 8),
        "no epoch held more checkouts than there are shards, so nothing was tested: \
         {per_epoch:?}"
    );
    let s = m.snapshot(&client).await.unwrap();
    let v = check(&s, &m.expected(Some(N as u64), 0));
    assert!(v.values().all(|n| *n == 0), "{v:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_one_seller_in_different_lanes_commit_in_the_parallel_pass() {
    // Goal: with two delivery lanes, deliveries of the same two sellers in one epoch pop
    // different packages when they drew different lanes, so the first of each lane commits in
    // the parallel pass although all deliver to the same customer (its delivery counter is a
    // delta). With one queue per seller every delivery but the lowest TID popped the same
    // head and lost.
    const LANES: u16 = 2;
    const N_ORDERS: usize = 16;
    const N_DELIVERIES: usize = 8;
    let (m, rt, client) = started(config(LANES), N_DELIVERIES).await;
    let mut orders_per_lane = [0usize; LANES as usize];
    for _ in 0..N_ORDERS {
        let r = m.checkout(0, vec![item(1, 10), item(2, 20)]);
        let outcome = client.submit_request(r).await.unwrap();
        let Ok(Some(MarketOutput::CheckedOut { order, .. })) = outcome.result else {
            panic!("{outcome:?}");
        };
        orders_per_lane[usize::from(delivery_lane(order.order_id, LANES))] += 1;
    }
    let requests = (0..N_DELIVERIES)
        .map(|_| m.update_delivery(vec![1, 2]))
        .collect();
    let outcomes = submit_together(&client, requests).await;

    let mut deliveries_per_lane = [0usize; LANES as usize];
    let mut first_of_lane: BTreeMap<(u64, u16), &Outcome<MarketOutput>> = BTreeMap::new();
    for o in &outcomes {
        assert!(o.result.is_ok(), "{o:?}");
        let lane = delivery_lane(o.tid.0, LANES);
        deliveries_per_lane[usize::from(lane)] += 1;
        let epoch = o.serial_pos.expect("committed").epoch;
        first_of_lane.entry((epoch, lane)).or_insert(o);
    }
    assert!(
        (0..LANES as usize).all(|l| deliveries_per_lane[l] <= orders_per_lane[l]),
        "a lane ran out of packages, so some deliveries popped nothing: orders \
         {orders_per_lane:?}, deliveries {deliveries_per_lane:?}"
    );
    let epochs_with_both_lanes = first_of_lane
        .keys()
        .filter(|(epoch, lane)| *lane == 1 && first_of_lane.contains_key(&(*epoch, 0)))
        .count();
    assert!(
        epochs_with_both_lanes > 0,
        "no epoch held deliveries of both lanes, so nothing was tested: {outcomes:?}"
    );
    for o in first_of_lane.values() {
        let pos = o.serial_pos.expect("committed");
        assert_eq!(
            pos.pass, 0,
            "the first delivery of a lane in an epoch shares no row with a lower TID: \
             {outcomes:?}"
        );
    }

    let s = m.snapshot(&client).await.unwrap();
    let delivered = s
        .packages
        .values()
        .filter(|p| p.status == PackageStatus::Delivered)
        .count();
    assert_eq!(
        delivered,
        2 * N_DELIVERIES,
        "every delivery took one package of each seller"
    );
    assert_eq!(s.customer_counters[&0].delivery_count, delivered as i64);
    let v = check(&s, &m.expected(Some(N_ORDERS as u64), 0));
    assert!(v.values().all(|n| *n == 0), "{v:?}");
    rt.shutdown().await;
}
