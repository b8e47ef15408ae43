//! The Online Marketplace on a real runtime: a checkout leaves every related row, a stock
//! shortage or a failure in the last step leaves no trace, a declined payment is recorded,
//! price and product updates reach carts, deliveries flow to orders, sellers and customers,
//! clients cannot submit the steps of a chain, requests go to the partition owning their key,
//! and a concurrent mix at small scale ends with no violation of any criterion.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use services::load::submit_all;
use services::marketplace::check::criteria;
use services::marketplace::data::MarketOp;
use services::marketplace::{
    AdoptVersion, CartAddItem, CartsEvent, CheckoutDraft, CountDeliveries, CountPayment,
    CreateOrder, CreateShipment, CustomersEvent, DeliverPackages, EntriesDelivered, LoadSellerRow,
    LoadStock, MarketApp, MarketAppEvent, MarketConfig, MarketError, MarketOutput, MarketSnapshot,
    Marketplace, Mix, OrderKey, OrderStatus, OrdersDelivered, PackageStatus, Pay, PaymentStatus,
    PaymentType, ProductKey, ProductsEvent, ProviderDecision, QueueDeliveries, RecordEntries,
    Replica, ReplicatePrice, ReplicateProducts, Reserve, Scale, ShipmentsEvent, TakeOldest, Totals,
    check, kinds,
};
use std::time::{Duration, Instant};
use txn::{
    AbortReason, BusinessError, Client, Request, Runtime, RuntimeConfig, SerialExecutor, TxnError,
};

fn tiny(payment_failure_pct: u8, initial_stock: i64) -> MarketConfig {
    MarketConfig {
        n_customers: 20,
        n_sellers: 4,
        products_per_seller: 10,
        initial_stock,
        n_partitions: 3,
        payment_failure_pct,
        seed: 5,
        delivery_lanes: 1,
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
    r: Request<MarketApp>,
) -> Result<Option<MarketOutput>, AbortReason> {
    client.submit_request(r).await.unwrap().result
}

fn item(seller_id: u32, product_id: u32, quantity: u32) -> CartAddItem {
    CartAddItem {
        seller_id,
        product_id,
        quantity,
        voucher: false,
    }
}

/// The kind of a business abort, after checking that its message starts with the kind's words
/// (`stock_shortage` → "stock shortage: ...").
fn business_kind(reason: &AbortReason) -> &str {
    match reason {
        AbortReason::User { kind, message, .. } => {
            assert!(message.starts_with(&kind.replace('_', " ")), "{reason}");
            kind
        }
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
    assert_eq!(s.customer_counters[&7].success_payment_count, 1);
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
    assert_eq!(business_kind(&err), kinds::STOCK_SHORTAGE, "{err}");
    assert_eq!(err.service(), Some("stock"), "{err}");
    assert_eq!(client.state_hash().await.unwrap(), hash);

    // Customer 999 does not exist: only the customer step, in the last wave, notices.
    let err = submit(
        &client,
        m.checkout(999, vec![item(0, 1, 3), item(2, 20, 1)]),
    )
    .await
    .unwrap_err();
    assert_eq!(business_kind(&err), kinds::UNKNOWN_CUSTOMER, "{err}");
    assert_eq!(err.service(), Some("customer"), "{err}");
    assert_eq!(client.state_hash().await.unwrap(), hash);

    // Unknown products and empty checkouts are refused up front.
    let err = submit(&client, m.checkout(2, vec![item(0, 55, 1)]))
        .await
        .unwrap_err();
    assert_eq!(business_kind(&err), kinds::UNKNOWN_PRODUCT, "{err}");
    let err = submit(&client, m.checkout(2, vec![])).await.unwrap_err();
    assert_eq!(business_kind(&err), kinds::EMPTY_CART, "{err}");
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
    assert_eq!(s.customer_counters[&4].failed_payment_count, 1);
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
    assert_eq!(s.customer_counters[&5].delivery_count, 2);
    assert_eq!(s.customer_counters[&6].delivery_count, 1);
    let d = m.dashboard(&client, 0).await.unwrap();
    assert!(d.entries.is_empty() && d.agrees(), "{d:?}");
    // Invalid requests are refused.
    let err = submit(&client, m.update_delivery(vec![1, 1]))
        .await
        .unwrap_err();
    assert_eq!(business_kind(&err), kinds::INVALID_REQUEST, "{err}");
    rt.shutdown().await;
    assert_consistent(&m, &s, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_submit_the_steps_of_a_chain() {
    // Goal: every step that only a handler may emit (the load's follow-ups, the checkout's,
    // update's and delivery's chains) is refused by the client before it reaches the log,
    // naming its kind, and nothing changes.
    let (m, rt) = started(tiny(0, 100)).await;
    let client = rt.client();
    let hash = client.state_hash().await.unwrap();
    let s = m.services;
    let order = OrderKey {
        customer_id: 1,
        order_id: 1,
    };
    let draft = Box::new(CheckoutDraft {
        order,
        items: vec![],
        totals: Totals::default(),
        created_ms: 0,
    });
    let replica = Replica {
        price: 1,
        freight_value: 1,
        version: 0,
        update_seq: 0,
    };
    let steps: Vec<(&str, Request<MarketApp>)> = vec![
        (
            "LoadStock",
            s.stock.request(LoadStock {
                seller_id: 1,
                products: vec![],
                initial_stock: 1,
            }),
        ),
        (
            "Reserve",
            s.stock.request_to_partition(
                0,
                Reserve {
                    lines: vec![],
                    approved: true,
                },
            ),
        ),
        (
            "AdoptVersion",
            s.stock.request(AdoptVersion {
                seller_id: 1,
                product_id: 10,
                version: 1,
            }),
        ),
        (
            "ReplicatePrice",
            s.cart.request_to_partition(
                0,
                ReplicatePrice {
                    seller_id: 1,
                    product_id: 10,
                    replica,
                },
            ),
        ),
        (
            "ReplicateProducts",
            s.cart.request_to_partition(
                0,
                ReplicateProducts {
                    seller_id: 1,
                    replicas: vec![],
                },
            ),
        ),
        (
            "CreateOrder",
            s.order.request(CreateOrder {
                draft: draft.clone(),
                approved: true,
            }),
        ),
        (
            "OrdersDelivered",
            s.order
                .request_to_partition(0, OrdersDelivered { orders: vec![] }),
        ),
        (
            "Pay",
            s.payment.request(Pay {
                draft,
                decision: ProviderDecision {
                    approved: true,
                    payment_type: PaymentType::Boleto,
                    installments: 1,
                    card_last4: 0,
                },
            }),
        ),
        (
            "CreateShipment",
            s.shipment.request_to_partition(
                0,
                CreateShipment {
                    order,
                    packages: vec![],
                    created_ms: 0,
                },
            ),
        ),
        (
            "QueueDeliveries",
            s.shipment
                .request_to_partition(0, QueueDeliveries { packages: vec![] }),
        ),
        (
            "TakeOldest",
            s.shipment
                .request_to_partition(0, TakeOldest { sellers: vec![1] }),
        ),
        (
            "DeliverPackages",
            s.shipment
                .request_to_partition(0, DeliverPackages { packages: vec![] }),
        ),
        (
            "LoadSellerRow",
            s.seller.request(LoadSellerRow { seller_id: 1 }),
        ),
        (
            "RecordEntries",
            s.seller
                .request_to_partition(0, RecordEntries { entries: vec![] }),
        ),
        (
            "EntriesDelivered",
            s.seller
                .request_to_partition(0, EntriesDelivered { entries: vec![] }),
        ),
        (
            "CountPayment",
            s.customer.request(CountPayment {
                customer_id: 1,
                approved: true,
            }),
        ),
        (
            "CountDeliveries",
            s.customer
                .request_to_partition(0, CountDeliveries { customers: vec![1] }),
        ),
    ];
    for (name, step) in steps {
        match client.submit_request(step).await {
            Err(TxnError::InternalEvent { kind, .. }) => assert_eq!(kind, name),
            other => panic!("{name} was not refused as internal: {other:?}"),
        }
    }
    assert_eq!(client.state_hash().await.unwrap(), hash);
    rt.shutdown().await;
}

#[test]
fn requests_go_to_the_partition_owning_their_key() {
    // Goal: every inbound request is routed by its own key: a customer batch to the partition
    // owning all of its customers, a seller's load and updates to the seller's product
    // partition, cart requests to the customer's cart partition, an update delivery to the
    // shipment partition of its first seller; one naming no seller is refused, not a panic.
    let m = Marketplace::new(tiny(0, 100)).unwrap();
    let s = m.services;
    let mut n_batches = 0;
    for r in m.load_requests() {
        match r.event() {
            MarketAppEvent::Customers(CustomersEvent::LoadCustomers(batch)) => {
                n_batches += 1;
                for id in &batch.customer_ids {
                    assert_eq!(s.customer.partition_of(id), r.partition(), "customer {id}");
                }
            }
            MarketAppEvent::Products(ProductsEvent::LoadSeller(load)) => {
                assert_eq!(s.product.partition_of(&load.seller_id), r.partition());
            }
            other => panic!("unexpected load request {other:?}"),
        }
    }
    assert_eq!(n_batches, s.customer.n_partitions());
    assert_eq!(
        m.checkout(7, vec![]).partition(),
        s.cart.partition_of(&7u32)
    );
    assert_eq!(
        m.cart_add(8, vec![]).partition(),
        s.cart.partition_of(&8u32)
    );
    assert_eq!(
        m.price_update(3, 31, 1).partition(),
        s.product.partition_of(&3u32)
    );
    assert_eq!(
        m.update_product(2, 20,).partition(),
        s.product.partition_of(&2u32)
    );
    for sellers in [vec![2, 0, 1], vec![1, 3], vec![3]] {
        let r = m.update_delivery(sellers.clone());
        assert_eq!(r.service(), *s.shipment);
        assert_eq!(
            r.partition(),
            s.shipment.partition_of(&sellers[0]),
            "{sellers:?}"
        );
    }
    let mut serial = SerialExecutor::new(m.app().clone());
    let err = serial
        .run_request(m.update_delivery(vec![]), 0)
        .unwrap_err();
    assert_eq!(business_kind(&err), kinds::INVALID_REQUEST, "{err}");
}

#[test]
fn every_business_error_has_a_kind_of_the_list_and_says_it_first() {
    // Goal: each marketplace business error aborts with one of the stable kinds reports group
    // by, and its message starts with that kind's words, so a message read alone names the
    // rule it broke.
    let order = OrderKey {
        customer_id: 1,
        order_id: 2,
    };
    let (seller_id, product_id) = (3, 31);
    let errors = [
        MarketError::StockShortage {
            seller_id,
            product_id,
            free: 0,
            wanted: 1,
        },
        MarketError::VersionMismatch {
            seller_id,
            product_id,
            stock_version: 1,
            cart_version: 0,
        },
        MarketError::EmptyCart { customer_id: 1 },
        MarketError::UnknownProduct {
            seller_id,
            product_id,
        },
        MarketError::NoStockItem {
            seller_id,
            product_id,
        },
        MarketError::UnknownCustomer { customer_id: 1 },
        MarketError::PriceChange { pct: 0 },
        MarketError::TooManyItems { n_items: 65 },
        MarketError::ItemQuantity {
            product_id,
            quantity: 0,
        },
        MarketError::DeliverySellers { n_sellers: 0 },
        MarketError::SellerNamedTwice { seller_id },
        MarketError::SettledUnreserved {
            seller_id,
            product_id,
            quantity: 1,
        },
        MarketError::StockItemMissing {
            seller_id,
            product_id,
        },
        MarketError::OrderExists { order },
        MarketError::DeliveryOfUnknownOrder { order },
        MarketError::PackageNotShipped {
            order,
            package_id: 1,
        },
        MarketError::ShipmentMissing { order },
        MarketError::OpenEntryMissing { seller_id, order },
    ];
    let all_kinds = [
        kinds::STOCK_SHORTAGE,
        kinds::VERSION_MISMATCH,
        kinds::EMPTY_CART,
        kinds::UNKNOWN_PRODUCT,
        kinds::UNKNOWN_CUSTOMER,
        kinds::INVALID_REQUEST,
        kinds::BROKEN_STATE,
    ];
    let mut used = std::collections::BTreeSet::new();
    for e in errors {
        let kind = e.kind();
        assert!(all_kinds.contains(&kind), "{e:?}");
        used.insert(kind);
        let abort = txn::Abort::from(e.clone());
        assert_eq!(abort.0.category(), kind);
        assert_eq!(business_kind(&abort.0), kind, "{e:?}");
    }
    assert_eq!(used.len(), all_kinds.len());
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
                let outcome = client.submit_request(r.clone()).await.unwrap();
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

    let is_checkout =
        |e: &MarketAppEvent| matches!(e, MarketAppEvent::Carts(CartsEvent::Checkout(_)));
    let committed = |kind: fn(&MarketAppEvent) -> bool| {
        history
            .iter()
            .filter(|(_, r, res)| res.is_ok() && kind(r.event()))
            .count() as u64
    };
    let checkouts = committed(is_checkout);
    let deliveries = committed(|e| {
        matches!(
            e,
            MarketAppEvent::Shipments(ShipmentsEvent::UpdateDelivery(_))
        )
    });
    let updates = committed(|e| {
        matches!(
            e,
            MarketAppEvent::Products(
                ProductsEvent::PriceUpdate(_) | ProductsEvent::UpdateProduct(_)
            )
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
    let mut serial = m.loaded_serial(0);
    for (pos, r, result) in history {
        let (service, partition, event) = r.clone().into_parts();
        let got = serial.run_at(pos, service, partition, event, pos.epoch);
        assert_eq!(got, result, "seed {seed}: {pos:?} {:?}", r.event());
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
