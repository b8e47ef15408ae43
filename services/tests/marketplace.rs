//! The Online Marketplace on a real runtime: a checkout leaves every related row, a stock
//! shortage or a failure in the last step leaves no trace, a declined payment is recorded,
//! price and product updates reach carts, deliveries flow to orders, sellers and customers,
//! and a concurrent mix at small scale ends with no violation of any criterion.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use services::Request;
use services::load::submit_all;
use services::marketplace::check::criteria;
use services::marketplace::data::MarketOp;
use services::marketplace::{
    CartAddItem, MarketApp, MarketConfig, MarketEvent, MarketOutput, MarketSnapshot, Marketplace,
    Mix, OrderKey, OrderStatus, PackageStatus, PaymentStatus, ProductKey, Scale, check, reasons,
};
use std::time::{Duration, Instant};
use txn::{AbortReason, Client, Runtime, RuntimeConfig, SerialExecutor};

fn tiny(payment_failure_pct: u8, initial_stock: i64) -> MarketConfig {
    MarketConfig {
        n_customers: 20,
        n_sellers: 4,
        products_per_seller: 10,
        initial_stock,
        n_partitions: 3,
        payment_failure_pct,
        seed: 5,
    }
}

async fn started(config: MarketConfig) -> (Marketplace, Runtime<MarketApp>) {
    let m = Marketplace::new(config).unwrap();
    let rt = Runtime::start(m.app().clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let load = m.load_requests();
    let n = load.len();
    let report = submit_all(&rt.client(), n, 64, move |i| load[i].clone())
        .await
        .unwrap();
    assert_eq!(report.n_committed, n as u64, "{:?}", report.first_abort);
    (m, rt)
}

async fn submit(
    client: &Client<MarketApp>,
    r: Request<MarketEvent>,
) -> Result<Option<MarketOutput>, AbortReason> {
    client
        .submit_to(r.service, r.partition, r.event)
        .await
        .unwrap()
        .result
}

fn item(seller_id: u32, product_id: u32, quantity: u32) -> CartAddItem {
    CartAddItem {
        seller_id,
        product_id,
        quantity,
        voucher: false,
    }
}

fn user_message(reason: &AbortReason) -> &str {
    match reason {
        AbortReason::User { message, .. } => message,
        other => panic!("expected a business abort, got {other:?}"),
    }
}

fn assert_consistent(m: &Marketplace, s: &MarketSnapshot, committed_checkouts: u64) {
    let v = check(s, &m.expected(Some(committed_checkouts), 0));
    assert!(v.values().all(|n| *n == 0), "{v:?}");
}

fn pk(seller_id: u32, product_id: u32) -> ProductKey {
    ProductKey {
        seller_id,
        product_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_commits_end_to_end_and_leaves_every_related_row() {
    // Goal: one approved checkout over two sellers creates the order with its items and
    // history, an approved payment of the invoice, a shipment with one package per seller,
    // the sellers' entries and aggregates, consumes the stock and counts the payment.
    let (m, rt) = started(tiny(0, 100)).await;
    let client = rt.client();
    let before = m.snapshot(&client).await.unwrap();
    let out = submit(
        &client,
        m.checkout(
            7,
            vec![
                item(1, 12, 3),
                CartAddItem {
                    voucher: true,
                    ..item(1, 15, 2)
                },
                item(3, 31, 1),
            ],
        ),
    )
    .await
    .unwrap();
    let Some(MarketOutput::CheckedOut {
        order,
        approved,
        total_invoice,
    }) = out
    else {
        panic!("unexpected output {out:?}")
    };
    assert!(approved);
    assert_eq!(order.customer_id, 7);
    let s = m.snapshot(&client).await.unwrap();
    rt.shutdown().await;

    let o = s.orders[&order];
    assert_eq!(o.status, OrderStatus::ReadyForShipment);
    assert_eq!(o.totals.count_items, 3);
    assert_eq!(o.totals.total_invoice, total_invoice);
    let price = |p: u32| before.products[&pk(p / 10, p)].price;
    let freight = |p: u32| before.products[&pk(p / 10, p)].freight_value;
    let items = 3 * price(12) + 2 * price(15) + price(31);
    let freights = 3 * freight(12) + 2 * freight(15) + freight(31);
    assert_eq!(o.totals.total_items, items);
    assert_eq!(o.totals.total_incentive, 2 * price(15) / 10);
    assert_eq!(total_invoice, items + freights - 2 * price(15) / 10);
    assert_eq!(s.order_items.len(), 3);
    assert_eq!(o.history_len, 3);
    assert_eq!(s.order_history.len(), 3);
    let payments: Vec<_> = s.payments.values().collect();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, PaymentStatus::Approved);
    assert_eq!(payments[0].value, total_invoice);
    let shipment = s.shipments[&order];
    assert_eq!(shipment.package_count, 2);
    assert_eq!(s.packages.len(), 2);
    assert_eq!(s.open_deliveries.len(), 2);
    let entry_sellers: Vec<u32> = s.order_entries.keys().map(|k| k.seller_id).collect();
    assert_eq!(entry_sellers, vec![1, 3]);
    assert_eq!(s.stock_items[&pk(1, 12)].qty_available, 97);
    assert_eq!(s.stock_items[&pk(1, 15)].qty_available, 98);
    assert_eq!(s.stock_items[&pk(3, 31)].qty_available, 99);
    assert_eq!(s.stock_items[&pk(3, 31)].qty_reserved, 0);
    assert_eq!(s.customers[&7].success_payment_count, 1);
    assert_consistent(&m, &s, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_shortage_or_a_failing_last_step_aborts_the_whole_checkout_with_no_trace() {
    // Goal: a checkout whose second seller lacks stock, and one whose very last step (the
    // customer's counters) fails after every other service did its part, both abort with a
    // clear reason and leave every service exactly as it was.
    let (m, rt) = started(tiny(0, 5)).await;
    let client = rt.client();
    let hash = client.state_hash().await.unwrap();

    let err = submit(&client, m.checkout(2, vec![item(0, 1, 3), item(2, 20, 6)]))
        .await
        .unwrap_err();
    assert!(
        user_message(&err).starts_with(reasons::STOCK_SHORTAGE),
        "{err}"
    );
    assert_eq!(client.state_hash().await.unwrap(), hash);

    // Customer 999 does not exist: only the customer step, in the last wave, notices.
    let err = submit(
        &client,
        m.checkout(999, vec![item(0, 1, 3), item(2, 20, 1)]),
    )
    .await
    .unwrap_err();
    assert!(
        user_message(&err).starts_with(reasons::UNKNOWN_CUSTOMER),
        "{err}"
    );
    assert_eq!(client.state_hash().await.unwrap(), hash);

    // Unknown products and empty checkouts are refused up front.
    let err = submit(&client, m.checkout(2, vec![item(0, 55, 1)]))
        .await
        .unwrap_err();
    assert!(user_message(&err).starts_with(reasons::UNKNOWN_PRODUCT));
    let err = submit(&client, m.checkout(2, vec![])).await.unwrap_err();
    assert!(user_message(&err).starts_with(reasons::EMPTY_CART));
    assert_eq!(client.state_hash().await.unwrap(), hash);

    // With enough stock the same checkout goes through.
    submit(&client, m.checkout(2, vec![item(0, 1, 3), item(2, 20, 5)]))
        .await
        .unwrap();
    let s = m.snapshot(&client).await.unwrap();
    rt.shutdown().await;
    assert_eq!(s.stock_items[&pk(2, 20)].qty_available, 0);
    assert_consistent(&m, &s, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_is_recorded_and_releases_the_reservation() {
    // Goal: a declined payment commits a PaymentFailed order with its items and the failed
    // payment, counts the failure, releases the stock, and creates no shipment or entry.
    let (m, rt) = started(tiny(100, 50)).await;
    let client = rt.client();
    let out = submit(&client, m.checkout(4, vec![item(0, 3, 4), item(1, 10, 2)]))
        .await
        .unwrap();
    let Some(MarketOutput::CheckedOut {
        order, approved, ..
    }) = out
    else {
        panic!("unexpected output {out:?}")
    };
    assert!(!approved);
    let s = m.snapshot(&client).await.unwrap();
    rt.shutdown().await;
    assert_eq!(s.orders[&order].status, OrderStatus::PaymentFailed);
    assert_eq!(s.order_items.len(), 2);
    assert!(
        s.payments
            .values()
            .all(|p| p.status == PaymentStatus::Failed)
    );
    assert!(s.shipments.is_empty() && s.packages.is_empty() && s.order_entries.is_empty());
    assert!(s.open_deliveries.is_empty());
    let st = s.stock_items[&pk(0, 3)];
    assert_eq!(
        (st.qty_available, st.qty_reserved, st.order_count),
        (50, 0, 0)
    );
    assert_eq!(s.customers[&4].failed_payment_count, 1);
    assert_consistent(&m, &s, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_and_product_updates_reach_replicas_and_cart_items() {
    // Goal: a price update reaches every cart partition's replica and the cart items holding
    // the product; a later checkout pays the new price; a new version reaches stock, replaces
    // the replicas and drops cart items on the old version.
    let (m, rt) = started(tiny(0, 100)).await;
    let client = rt.client();
    for customer in [1, 2, 3] {
        submit(
            &client,
            m.cart_add(customer, vec![item(2, 25, 1), item(3, 30, 2)]),
        )
        .await
        .unwrap();
    }
    let before = m.snapshot(&client).await.unwrap().products[&pk(2, 25)].price;
    let out = submit(&client, m.price_update(2, 25, 10)).await.unwrap();
    let Some(MarketOutput::Priced { price, version: 0 }) = out else {
        panic!("unexpected output {out:?}")
    };
    assert_eq!(price, before + before / 10);
    let s = m.snapshot(&client).await.unwrap();
    for c in [1, 2, 3] {
        let it = s.carts[&c]
            .items
            .iter()
            .find(|i| i.product_id == 25)
            .unwrap();
        assert_eq!(it.unit_price, price, "customer {c}");
    }
    for part in 0..3 {
        assert_eq!(s.replicas[&(part, pk(2, 25))].price, price);
    }
    assert_consistent(&m, &s, 0);

    // Customer 1 checks out the filled cart at the new price.
    let out = submit(&client, m.checkout(1, vec![])).await.unwrap();
    let Some(MarketOutput::CheckedOut { order, .. }) = out else {
        panic!("unexpected output {out:?}")
    };
    let s = m.snapshot(&client).await.unwrap();
    assert!(!s.carts.contains_key(&1));
    assert_eq!(
        s.order_items
            .values()
            .find(|i| i.product_id == 25)
            .unwrap()
            .unit_price,
        price
    );
    assert_eq!(s.orders[&order].totals.count_items, 2);

    // A new version: stock adopts it, carts 2 and 3 lose the old item and keep the other.
    let out = submit(&client, m.update_product(2, 25)).await.unwrap();
    assert_eq!(out, Some(MarketOutput::NewVersion(1)));
    let s = m.snapshot(&client).await.unwrap();
    rt.shutdown().await;
    assert_eq!(s.stock_items[&pk(2, 25)].version, 1);
    for c in [2, 3] {
        let products: Vec<u32> = s.carts[&c].items.iter().map(|i| i.product_id).collect();
        assert_eq!(products, vec![30], "customer {c}");
    }
    for part in 0..3 {
        assert_eq!(s.replicas[&(part, pk(2, 25))].version, 1);
    }
    assert_consistent(&m, &s, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_orders_sellers_and_customers_oldest_first() {
    // Goal: update delivery takes each seller's oldest open package, and when every package
    // of an order arrived the order is delivered, the entries left the dashboard and the
    // customer counted each package.
    let (m, rt) = started(tiny(0, 100)).await;
    let client = rt.client();
    let checkout = |customer, items| {
        let (client, r) = (client.clone(), m.checkout(customer, items));
        async move {
            match submit(&client, r).await.unwrap() {
                Some(MarketOutput::CheckedOut { order, .. }) => order,
                other => panic!("unexpected output {other:?}"),
            }
        }
    };
    let first: OrderKey = checkout(5, vec![item(0, 1, 1), item(2, 21, 1)]).await;
    let second: OrderKey = checkout(6, vec![item(0, 2, 1)]).await;
    let d = m.dashboard(&client, 0).await.unwrap();
    assert_eq!(d.entries.len(), 2);
    assert!(d.agrees());

    submit(&client, m.update_delivery(vec![0])).await.unwrap();
    let s = m.snapshot(&client).await.unwrap();
    assert_eq!(s.orders[&first].status, OrderStatus::InTransit);
    assert_eq!(s.orders[&second].status, OrderStatus::ReadyForShipment);
    assert_consistent(&m, &s, 2);

    // Seller 1 has nothing open: it is skipped.
    let out = submit(&client, m.update_delivery(vec![2, 0, 1]))
        .await
        .unwrap();
    assert_eq!(out, Some(MarketOutput::DeliveryRequested { sellers: 3 }));
    let s = m.snapshot(&client).await.unwrap();
    assert_eq!(s.orders[&first].status, OrderStatus::Delivered);
    assert_eq!(s.orders[&second].status, OrderStatus::Delivered);
    assert!(
        s.packages
            .values()
            .all(|p| p.status == PackageStatus::Delivered)
    );
    assert!(s.open_deliveries.is_empty());
    assert_eq!(s.customers[&5].delivery_count, 2);
    assert_eq!(s.customers[&6].delivery_count, 1);
    let d = m.dashboard(&client, 0).await.unwrap();
    assert!(d.entries.is_empty() && d.agrees(), "{d:?}");
    // Invalid requests are refused.
    let err = submit(&client, m.update_delivery(vec![1, 1]))
        .await
        .unwrap_err();
    assert!(user_message(&err).starts_with(reasons::INVALID_REQUEST));
    rt.shutdown().await;
    assert_consistent(&m, &s, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_mix_at_small_scale_ends_with_no_violation_and_replays_serially() {
    // Goal: many clients running the default mix (and then the checkout-heavy mix) over the
    // small-scale data leave a state where every criterion holds, every dashboard they read
    // agreed, and each transaction's outcome equals a serial replay in the reported order.
    let seed: u64 = std::env::var("SERVICES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with SERVICES_TEST_SEED={seed})");
    let config = MarketConfig::at_scale(Scale::Small, 4);
    let (m, rt) = started(config).await;
    let client = rt.client();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for c in 0..48u64 {
        let (client, m) = (client.clone(), m.clone());
        let mix = if c % 4 == 0 {
            Mix::CHECKOUT_HEAVY
        } else {
            Mix::DEFAULT
        };
        tasks.push(tokio::spawn(async move {
            let mut g = m
                .op_gen(ChaCha8Rng::seed_from_u64(seed ^ c).random(), mix, 0.5)
                .unwrap();
            let (mut history, mut torn) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let op = g.next_op();
                if let MarketOp::Dashboard { seller_id } = op {
                    torn += u64::from(!m.dashboard(&client, seller_id).await.unwrap().agrees());
                    continue;
                }
                let r = m.request(op).unwrap();
                let outcome = client
                    .submit_to(r.service, r.partition, r.event.clone())
                    .await
                    .unwrap();
                history.push((outcome.serial_pos.unwrap(), r, outcome.result));
            }
            (history, torn)
        }));
    }
    let (mut history, mut torn) = (Vec::new(), 0);
    for t in tasks {
        let (h, d) = t.await.unwrap();
        history.extend(h);
        torn += d;
    }
    let s = m.snapshot(&client).await.unwrap();
    rt.shutdown().await;

    let is_checkout = |e: &MarketEvent| matches!(e, MarketEvent::Checkout { .. });
    let committed = |kind: fn(&MarketEvent) -> bool| {
        history
            .iter()
            .filter(|(_, r, res)| res.is_ok() && kind(&r.event))
            .count() as u64
    };
    let checkouts = committed(is_checkout);
    let deliveries = committed(|e| matches!(e, MarketEvent::UpdateDelivery { .. }));
    let updates = committed(|e| {
        matches!(
            e,
            MarketEvent::PriceUpdate { .. } | MarketEvent::UpdateProduct { .. }
        )
    });
    eprintln!(
        "{} transactions: {checkouts} checkouts, {deliveries} deliveries, {updates} updates",
        history.len()
    );
    assert!(
        checkouts > 50 && deliveries > 50 && updates > 5,
        "seed {seed}: too little work"
    );
    assert!(
        s.packages
            .values()
            .any(|p| p.status == PackageStatus::Delivered)
    );
    let v = check(&s, &m.expected(Some(checkouts), torn));
    assert!(v.values().all(|n| *n == 0), "seed {seed}: {v:?}");
    assert_eq!(v.len(), criteria::ALL.len());

    // The serial executor replays the history at the reported serial positions (same TIDs,
    // so the same order ids and payment decisions) to the same outcomes, and its state passes
    // the same checks.
    history.sort_by_key(|(pos, _, _)| *pos);
    let mut serial = SerialExecutor::new(m.app().clone());
    for r in m.load_requests() {
        serial.run(r.service, r.partition, r.event, 0).unwrap();
    }
    for (pos, r, result) in history {
        let got = serial.run_at(pos, r.service, r.partition, r.event.clone(), pos.epoch);
        assert_eq!(got, result, "seed {seed}: {pos:?} {:?}", r.event);
    }
    let serial_state = m.snapshot_serial(&serial);
    let v = check(&serial_state, &m.expected(Some(checkouts), 0));
    assert!(v.values().all(|n| *n == 0), "seed {seed}: serial {v:?}");
    // Rows that do not depend on the epochs' timestamps (which an outcome does not report,
    // and which decide the order of open deliveries) are identical.
    assert!(serial_state.orders.keys().eq(s.orders.keys()));
    assert_eq!(serial_state.stock_items, s.stock_items);
    let payments = |s: &MarketSnapshot| -> Vec<_> {
        s.payments
            .iter()
            .map(|(k, p)| (*k, p.value, p.status, p.payment_type, p.installments))
            .collect()
    };
    assert_eq!(payments(&serial_state), payments(&s));
}
