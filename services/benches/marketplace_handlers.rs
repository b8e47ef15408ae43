//! The marketplace's hot handler path on the serial executor, where nothing but the handlers,
//! their row accesses and their emits run: one checkout of six items from three sellers, then
//! one update delivery of the same three sellers taking their oldest packages (each iteration
//! queues a package per seller and delivers one, so the queues stay the same length).
//!
//! Run: `cargo bench -p services --bench marketplace_handlers -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, criterion_group, criterion_main};
use services::marketplace::{CartAddItem, MarketApp, MarketConfig, Marketplace, SellerId};
use txn::SerialExecutor;

/// Customers the checkouts cycle through.
const N_CUSTOMERS: u32 = 200;

/// A loaded marketplace of 20 sellers of 10 products, 4 partitions per service, every payment
/// approved, one delivery lane.
fn loaded() -> (Marketplace, SerialExecutor<MarketApp>) {
    let config = MarketConfig {
        n_customers: N_CUSTOMERS,
        n_sellers: 20,
        products_per_seller: 10,
        initial_stock: 1_000_000_000,
        n_partitions: 4,
        payment_failure_pct: 0,
        seed: 3,
        delivery_lanes: 1,
    };
    let m = Marketplace::new(config).expect("a valid marketplace");
    let exec = m.loaded_serial(1);
    (m, exec)
}

/// Two items of each seller.
fn items(sellers: &[SellerId], customer_id: u32) -> Vec<CartAddItem> {
    let mut items = Vec::new();
    for seller_id in sellers {
        for k in 0..2 {
            items.push(CartAddItem {
                seller_id: *seller_id,
                product_id: seller_id * 10 + (customer_id + k) % 10,
                quantity: 1 + k,
                voucher: k == 1,
            });
        }
    }
    items
}

fn checkout_then_delivery(c: &mut Criterion) {
    let (m, mut exec) = loaded();
    let shipment = m.services.shipment;
    let first = shipment.partition_of(&0u32);
    // Sellers of one shipment partition, so the delivery runs as a whole there.
    let sellers: Vec<SellerId> = (0..m.config.n_sellers)
        .filter(|s| shipment.partition_of(s) == first)
        .take(3)
        .collect();
    let mut clock = 10u64;
    c.bench_function("checkout of 6 items, then a delivery of 3 sellers", |b| {
        b.iter(|| {
            clock += 2;
            let customer_id = (clock / 2 % u64::from(N_CUSTOMERS)) as u32;
            let checkout = m.checkout(customer_id, items(&sellers, customer_id));
            exec.run_request(checkout, clock)
                .expect("the checkout commits");
            let delivery = m.update_delivery(sellers.clone());
            exec.run_request(delivery, clock + 1)
                .expect("the delivery commits");
        });
    });
}

criterion_group!(benches, checkout_then_delivery);
criterion_main!(benches);
