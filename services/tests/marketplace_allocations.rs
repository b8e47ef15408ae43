//! Heap allocations per marketplace transaction in the services' own handlers, counted per
//! thread on the serial executor (which runs a transaction's every step on the calling thread
//! and itself allocates almost nothing per transaction): a checkout of six items from three
//! sellers and an update delivery of five sellers each stay within a small fixed budget, so a
//! handler that clones rows it only reads or grows its lists push by push shows up here. On a
//! runtime, the default mix's epochs stay within a budget too, which the runtime's per-row
//! delta lists, rebuilt every epoch, exceeded.

use services::marketplace::{
    CartAddItem, MarketApp, MarketConfig, Marketplace, Mix, OpGen, Scale, SellerId,
};
use txn::bench_api::alloc_count::{
    CountingPerThread, count_this_thread, server_allocations, thread_allocations,
};
use txn::{Client, Request, Runtime, RuntimeConfig, SerialExecutor};

#[global_allocator]
static GLOBAL: CountingPerThread = CountingPerThread;

/// Transactions measured per kind.
const N_MEASURED: u64 = 200;

/// A marketplace of 200 customers and 20 sellers of 10 products on 4 partitions per service,
/// loaded into a serial executor; every payment approved, one delivery lane.
fn loaded() -> (Marketplace, SerialExecutor<MarketApp>) {
    let config = MarketConfig {
        n_customers: 200,
        n_sellers: 20,
        products_per_seller: 10,
        initial_stock: 1_000_000,
        n_partitions: 4,
        payment_failure_pct: 0,
        seed: 3,
        delivery_lanes: 1,
    };
    let m = Marketplace::new(config).unwrap();
    let exec = m.loaded_serial(1);
    (m, exec)
}

/// Runs `requests` at `timestamp_ms`, each committing; the allocations per transaction.
fn allocations_per_txn(
    exec: &mut SerialExecutor<MarketApp>,
    requests: Vec<Request<MarketApp>>,
    timestamp_ms: u64,
) -> f64 {
    let n = requests.len() as f64;
    let before = thread_allocations();
    for r in requests {
        // The outcome is dropped inside the count: it holds no heap data when committed.
        let outcome = exec.run_request(r, timestamp_ms);
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    (thread_allocations() - before) as f64 / n
}

/// Six items of three sellers (two each), sellers 0, 3 and 5.
fn six_items(customer_id: u32) -> Vec<CartAddItem> {
    let mut items = Vec::new();
    for seller_id in [0u32, 3, 5] {
        for k in 0..2 {
            items.push(CartAddItem {
                seller_id,
                product_id: seller_id * 10 + (customer_id + k) % 10,
                quantity: 1 + k,
                voucher: k == 1,
            });
        }
    }
    items
}

#[test]
fn a_checkout_and_a_delivery_allocate_within_a_small_budget() {
    // Goal: the handlers of a checkout (cart, stock, payment, order, seller, shipment,
    // customer steps) and of an update delivery do not allocate per row they read or per
    // element they push; the budgets are a little above what the steps need (the events'
    // own lists and the draft), well below the counts of handlers that clone what they read.
    let (m, mut exec) = loaded();
    let checkouts: Vec<_> = (0..N_MEASURED as u32)
        .map(|c| m.checkout(c, six_items(c)))
        .collect();
    let per_checkout = allocations_per_txn(&mut exec, checkouts, 10);

    // Sellers in the first shipment partition, so the delivery runs as a whole there.
    let shipment = m.services.shipment;
    let first = shipment.partition_of(&0u32);
    let sellers: Vec<SellerId> = (0..m.config.n_sellers)
        .filter(|s| shipment.partition_of(s) == first)
        .take(5)
        .collect();
    let deliveries: Vec<_> = (0..N_MEASURED)
        .map(|_| m.update_delivery(sellers.clone()))
        .collect();
    let per_delivery = allocations_per_txn(&mut exec, deliveries, 20);
    eprintln!(
        "allocations per checkout {per_checkout:.1}, per delivery of {} sellers {per_delivery:.1}",
        sellers.len()
    );
    let delivered = m.snapshot_serial(&exec);
    assert!(
        delivered.packages.values().any(|p| p.delivery_ms.is_some()),
        "the deliveries delivered packages"
    );
    assert!(
        per_checkout <= CHECKOUT_BUDGET,
        "{per_checkout:.1} per checkout"
    );
    assert!(
        per_delivery <= DELIVERY_BUDGET,
        "{per_delivery:.1} per delivery"
    );
}

/// Allocations a checkout of six items from three sellers may make: 15.1 measured (the cart
/// and the order lines, the stock lines and the payment's lists, the draft the order step
/// gets, the new rows' storage); 26.9 when every list grew push by push, the customer's row was
/// copied to learn it exists, and each step's group was collected anew.
const CHECKOUT_BUDGET: f64 = 18.0;
/// Allocations an update delivery of five sellers may make: 7.3 measured; 18.3 when the
/// sellers were copied into local and remote lists and each found package's customer row was
/// copied.
const DELIVERY_BUDGET: f64 = 10.0;

/// Transactions per `submit_many` batch of the default mix (about one epoch).
const MIX_BATCH_TXNS: usize = 256;

/// Runs `n_batches` batches of the default mix from `ops`; returns the allocations the
/// runtime's worker threads made meanwhile and how many transactions ran.
async fn run_mix(
    m: &Marketplace,
    client: &Client<MarketApp>,
    ops: &mut OpGen,
    n_batches: usize,
) -> (u64, u64) {
    let before = server_allocations();
    let mut n_txns = 0;
    for _ in 0..n_batches {
        // The dashboard is a query, not a transaction: it is left out.
        let requests: Vec<_> = std::iter::from_fn(|| Some(ops.next_op()))
            .filter_map(|op| m.request(op))
            .take(MIX_BATCH_TXNS)
            .collect();
        for outcome in client.submit_many(requests).await {
            outcome.expect("an outcome");
            n_txns += 1;
        }
    }
    (server_allocations() - before, n_txns)
}

#[test]
fn the_default_mix_on_a_runtime_allocates_within_a_budget() {
    // Goal: the runtime's per-row work of an epoch (the delta lists of every row a checkout or
    // a delivery adds to, the escrow walk of the decide phase) reuses its memory, so what a
    // transaction allocates on the runtime's threads is mostly its handlers' own.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(count_this_thread)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let config = MarketConfig {
        initial_stock: 1_000_000,
        ..MarketConfig::at_scale(Scale::Small, 4)
    };
    let m = Marketplace::new(config).unwrap();
    let per_txn = server.block_on(async {
        let rt = Runtime::start(m.app().clone(), RuntimeConfig::in_memory())
            .await
            .expect("the runtime starts");
        let client = rt.client();
        for outcome in client.submit_many(m.load_requests()).await {
            outcome.expect("loads").result.expect("loads");
        }
        let mut ops = m.op_gen(7, Mix::DEFAULT, 0.0).unwrap();
        // Warm up: every buffer of the pipeline and the spare accesses have their capacity.
        run_mix(&m, &client, &mut ops, 10).await;
        let (measured, n_txns) = run_mix(&m, &client, &mut ops, 20).await;
        drop(client);
        rt.shutdown().await;
        measured as f64 / n_txns as f64
    });
    eprintln!("{per_txn:.2} allocations per default-mix transaction on the runtime's threads");
    assert!(
        per_txn <= MIX_BUDGET,
        "{per_txn:.2} allocations per default-mix transaction on the runtime's threads"
    );
}

/// Allocations per transaction of the default mix the runtime's worker threads may make:
/// 9.97 measured (the handlers' own, their emits and the epoch's buffers); 16.87 when every
/// row's delta list was allocated anew each epoch and regrown by doubling, and the decide
/// phase's escrow walk kept a transaction's increments on a row in a list with room for 4.
const MIX_BUDGET: f64 = 12.0;
