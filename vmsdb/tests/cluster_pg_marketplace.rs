//! Three `vmsdb node` processes on loopback serving the Online Marketplace from one private
//! PostgreSQL store (started by the test, always stopped): the lease holder is the sequencer,
//! the two others forward to it. Every driver route is first sent to every node (ingestion,
//! cart adds, seals, checkouts, price updates, dashboards), then clients check out over HTTP
//! through every node in turn, with ids they choose, retrying anything not acknowledged with the
//! same id on the next node, while price updates and dashboards go through the driver routes.
//! Run 1 SIGKILLs a node that is not the sequencer mid-run, run 2 the sequencer. Checked: every
//! acknowledged checkout resubmitted by id on another node gets its original outcome and the
//! orders are exactly the committed checkouts (nothing acknowledged lost, nothing twice); the
//! `audit` query, taken through every node during the run and at the end, reports no violation
//! of any consistency criterion (no partial transaction visible, invariants hold); the killed
//! node restarts, rejoins (membership shows it again) and serves requests.
//!
//! Without the PostgreSQL server binaries these tests FAIL in CI (`CI` set) and elsewhere
//! print a loud skip line and return.

use crate::common;

use crate::common::next_random;
use crate::common::serving::{NAMES, Progress, ServingCluster};
use serde_json::{Value, json};
use services::marketplace::data::INITIAL_STOCK;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use txn_storage::postgres_instance::{self, PgInstance};

const LEASE_TTL: &str = "2s";
const SELLERS: u64 = 4;
const PRODUCTS_PER_SELLER: u64 = 4;
const CLIENTS: u64 = 3;
/// Each client checks out for its own customers, so clients never share a cart.
const CUSTOMERS_PER_CLIENT: u64 = 40;

/// Sends `method url` with a JSON body (or none); the status and the raw body, or `None` when
/// the node did not answer (refused, reset, killed, timed out).
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Option<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let request = match body {
        Some(body) => http.request(method, url).json(body),
        None => http.request(method, url).header("Content-Length", "0"),
    };
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Sends a driver write that must be answered 200 with an empty body.
async fn driver_ok(http: &reqwest::Client, method: &str, url: &str, body: Option<&Value>) {
    let answer = send(http, method, url, body).await;
    assert_eq!(
        answer,
        Some((200, String::new())),
        "{method} {url} {body:?}"
    );
}

/// A product row as the driver ingests it, and as it replaces one by version `version`
/// (snake_case).
fn product_row(seller_id: u64, product_id: u64, version: &str) -> Value {
    json!({"seller_id": seller_id, "product_id": product_id, "name": "Steel Shirt",
           "sku": "Q0ZV8", "category": "Clothes", "description": "A shirt", "price": 47.13,
           "freight_value": 4.13, "status": "approved", "version": version})
}

/// A cart item as the driver adds it (PascalCase), at the ingested price.
fn cart_item(seller_id: u64, product_id: u64) -> Value {
    json!({"SellerId": seller_id, "ProductId": product_id, "ProductName": "Steel Shirt",
           "UnitPrice": 47.13, "FreightValue": 4.13, "Quantity": 2, "Voucher": 0.0,
           "Version": "0"})
}

/// A checkout as the driver sends it (PascalCase, `instanceId` camelCase).
fn driver_checkout(customer_id: u64) -> Value {
    json!({"CustomerId": customer_id, "FirstName": "Maria", "LastName": "Silva",
           "Street": "Lake", "Complement": "Hill", "City": "Avenue", "State": "Ohio",
           "ZipCode": "12345", "PaymentType": "CREDIT_CARD", "CardNumber": "6771-8983",
           "CardHolderName": "Maria Silva", "CardExpiration": "0827",
           "CardSecurityNumber": "123", "CardBrand": "VISA", "Installments": 3,
           "instanceId": "1"})
}

/// A price update as the driver sends it (camelCase): `cents` for the product's version "0".
fn price_update(seller_id: u64, product_id: u64, cents: u64) -> Value {
    json!({"sellerId": seller_id, "productId": product_id, "price": cents as f64 / 100.0,
           "version": "0", "instanceId": "1"})
}

/// POSTs query `name`; status and JSON answer, or `None` without an answer.
async fn query(http: &reqwest::Client, url: &str, name: &str, body: Value) -> Option<(u16, Value)> {
    common::post_json(http, &format!("{url}/v1/queries/{name}"), None, &body).await
}

/// The audit through `url` (its body: what the run expects), which must report no violation
/// of any criterion; its order count.
async fn audit_clean(http: &reqwest::Client, url: &str, expected: Value) -> Option<u64> {
    let (status, audit) = query(http, url, "audit", expected).await?;
    if status != 200 {
        return None;
    }
    let criteria = audit["criteria"].as_object().expect("criteria");
    assert_eq!(criteria.len(), 8, "every criterion is reported: {audit}");
    assert_eq!(
        audit["violations"], 0,
        "the audit through {url} saw violations: {audit}"
    );
    Some(audit["n_orders"].as_u64().expect("n_orders"))
}

/// Ingests the catalogue through every node in turn, then sends every driver route to every
/// node; returns the orders the driver's checkouts made.
async fn drive_every_route(http: &reqwest::Client, urls: &[String]) -> u64 {
    let mut turn = 0;
    for seller_id in 1..=SELLERS {
        for product_id in 1..=PRODUCTS_PER_SELLER {
            let url = &urls[turn % 3];
            turn += 1;
            let product = product_row(seller_id, product_id, "0");
            driver_ok(http, "POST", &format!("{url}/product"), Some(&product)).await;
            let stock = json!({"seller_id": seller_id, "product_id": product_id,
                               "qty_available": INITIAL_STOCK, "qty_reserved": 0,
                               "order_count": 0, "ytd": 0, "data": "", "version": "0"});
            driver_ok(http, "POST", &format!("{url}/stock"), Some(&stock)).await;
        }
    }
    let customers = (0..CLIENTS * 1_000)
        .filter(|c| c % 1_000 < CUSTOMERS_PER_CLIENT)
        .map(|customer| {
            let url = &urls[customer as usize % 3];
            let path = format!("{url}/v1/services/customer/events/LoadCustomers");
            let body = json!({"customer_ids": [customer]});
            async move { common::post_json(http, &path, None, &body).await }
        });
    for answer in futures::future::join_all(customers).await {
        let (status, outcome) = answer.expect("an answer");
        assert!(status == 200 && outcome["committed"] == true, "{outcome}");
    }
    for (i, url) in urls.iter().enumerate() {
        let (customer, sealed) = (100_000 + i as u64, 200_000 + i as u64);
        let item = cart_item(1, 1 + i as u64);
        driver_ok(
            http,
            "PATCH",
            &format!("{url}/cart/{customer}/add"),
            Some(&item),
        )
        .await;
        let checkout = driver_checkout(customer);
        driver_ok(http, "POST", &format!("{url}/cart"), Some(&checkout)).await;
        driver_ok(
            http,
            "PATCH",
            &format!("{url}/cart/{sealed}/add"),
            Some(&item),
        )
        .await;
        driver_ok(http, "PATCH", &format!("{url}/cart/{sealed}/seal"), None).await;
        let update = price_update(2, 1 + i as u64, 5_000 + i as u64);
        driver_ok(http, "PATCH", &format!("{url}/product"), Some(&update)).await;
        let replaced = product_row(3, 1 + i as u64, "1");
        driver_ok(http, "PUT", &format!("{url}/product"), Some(&replaced)).await;
    }
    // The sequencer answers its own tracked writes once queued; a write answered once durable,
    // queued there after them, is sequenced after them: once it is answered, they have run.
    // (A forwarding node answers its tracked writes once durable.)
    driver_ok(http, "PATCH", &format!("{}/cart/1/seal", urls[0]), None).await;
    for (i, url) in urls.iter().enumerate() {
        // Every node sees every node's writes: the price updates and the checkouts.
        let body = json!({"seller_id": 2, "product_id": 1 + (i as u64 + 1) % 3});
        let (status, product) = query(http, url, "product", body).await.expect("an answer");
        assert_eq!(status, 200, "{product}");
        assert_eq!(product["product"]["price"], 5_000 + (i as u64 + 1) % 3);
        let dashboard = format!("{url}/seller/dashboard/1");
        let (status, text) = send(http, "GET", &dashboard, None)
            .await
            .expect("an answer");
        assert_eq!(status, 200, "{text}");
        let dashboard: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(dashboard["view"]["count_orders"], 3, "{dashboard}");
    }
    // A reset reads the rows to delete at one snapshot: only the sequencer (n1) runs it.
    let (status, text) = send(http, "PATCH", &format!("{}/order/reset", urls[1]), None)
        .await
        .expect("an answer");
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("not_sequencer") && text.contains("n1"),
        "{text}"
    );
    let mut orders = None;
    for url in urls {
        let expected = json!({"committed_checkouts": 3, "initial_stock": INITIAL_STOCK});
        let n = audit_clean(http, url, expected).await.expect("an audit");
        assert!(
            orders.is_none_or(|o| o == n),
            "the nodes disagree on the orders"
        );
        orders = Some(n);
    }
    assert_eq!(orders, Some(3), "one order per node's driver checkout");
    3
}

/// One acknowledged checkout: its id, body and outcome.
struct Acked {
    id: String,
    body: Value,
    outcome: Value,
}

/// A random checkout of one or two items for one of the client's customers.
fn random_checkout(client: u64, random: &mut u64) -> Value {
    let customer = client * 1_000 + next_random(random) % CUSTOMERS_PER_CLIENT;
    let n_items = 1 + next_random(random) % 2;
    let items: Vec<Value> = (0..n_items)
        .map(|_| {
            json!({"seller_id": 1 + next_random(random) % SELLERS,
                   "product_id": 1 + next_random(random) % PRODUCTS_PER_SELLER,
                   "quantity": 1 + next_random(random) % 3, "voucher": false})
        })
        .collect();
    json!({"customer_id": customer, "add": items})
}

/// Checks out under ids `client/seq` through the nodes in turn (every seventh step also a
/// driver price update, then a driver dashboard), until told to stop.
async fn market_client(
    shared: Arc<Progress>,
    driver_answers: Arc<AtomicUsize>,
    client: u64,
    mut random: u64,
) -> Vec<Acked> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut acked = Vec::new();
    let mut node = client as usize;
    for seq in 0.. {
        if shared.stop.load(Ordering::Acquire) {
            return acked;
        }
        if seq % 7 == 3 {
            driver_step(&driver_answers, &http, &shared.urls[node], &mut random).await;
        }
        let body = random_checkout(client, &mut random);
        let id = format!("{client}/{seq}");
        let sent_at = Instant::now();
        let submitting = |url: String| {
            let (http, id, body) = (&http, &id, &body);
            async move { submit(http, &url, id, body).await }
        };
        let (outcome, answered_by) = shared.submit_until_acked(&mut node, &id, submitting).await;
        shared.note_ack(sent_at, answered_by, &outcome);
        acked.push(Acked { id, body, outcome });
        node = (node + 1) % 3;
    }
    unreachable!("the loop ends when the test says stop")
}

/// A driver price update and a dashboard through `url`: answered 200, or 503 (or nothing)
/// while a node is down or a new sequencer takes over; never anything else.
async fn driver_step(answers: &AtomicUsize, http: &reqwest::Client, url: &str, random: &mut u64) {
    let (seller_id, product_id) = (
        1 + next_random(random) % SELLERS,
        1 + next_random(random) % PRODUCTS_PER_SELLER,
    );
    let update = price_update(seller_id, product_id, 4_000 + next_random(random) % 2_000);
    let updated = send(http, "PATCH", &format!("{url}/product"), Some(&update)).await;
    let dashboard = send(
        http,
        "GET",
        &format!("{url}/seller/dashboard/{seller_id}"),
        None,
    )
    .await;
    for answer in [updated, dashboard].into_iter().flatten() {
        match answer {
            (200, _) => {
                answers.fetch_add(1, Ordering::Relaxed);
            }
            (503, _) => {}
            (status, text) => panic!("a driver route through {url}: {status} {text}"),
        }
    }
}

/// POSTs a checkout with `Idempotency-Key: id`; status and JSON answer, or `None`.
async fn submit(http: &reqwest::Client, url: &str, id: &str, body: &Value) -> Option<(u16, Value)> {
    let path = format!("{url}/v1/services/cart/events/Checkout");
    common::post_json(http, &path, Some(id), body).await
}

/// A private PostgreSQL server for `test` (`None`: skipped outside CI).
async fn postgres(test: &'static str) -> Option<PgInstance> {
    tokio::task::spawn_blocking(move || postgres_instance::for_test(test, 60))
        .await
        .unwrap()
}

/// One run: the marketplace on three nodes under load, node `victim` SIGKILLed and restarted,
/// then every check.
async fn run(test: &'static str, victim: usize) {
    let Some(pg) = postgres(test).await else {
        return;
    };
    let seed = common::seed(test);
    let http = reqwest::Client::new();
    let store = pg.url();
    let args = [
        "--app",
        "marketplace",
        "--partitions",
        "2",
        "--store",
        &store,
        "--lease-ttl",
        LEASE_TTL,
        "--epoch-duration",
        "2ms",
    ];
    let mut cluster = ServingCluster::start(&http, &args).await;
    let orders_before = drive_every_route(&http, &cluster.urls).await;
    let shared = Progress::new(cluster.urls.clone());
    let driver_answers = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let answers = driver_answers.clone();
            tokio::spawn(market_client(shared.clone(), answers, c, seed ^ c))
        })
        .collect();
    // Each answered audit must report no violation (a partial checkout would break criteria
    // 1, 2, 6 or 7).
    let every = Duration::from_millis(100);
    let auditing = tokio::spawn(shared.clone().audit_rounds(every, |http, url| async move {
        audit_clean(&http, &url, json!({})).await.is_some()
    }));

    let failover = cluster.kill_and_rejoin(&http, &shared, victim).await;
    let acked = shared.stop_clients(clients).await;
    let audits = auditing.await.unwrap();
    eprintln!(
        "{test}: {} killed; kill -> first commit of a checkout sent after it {:.2} s (lease ttl \
         {LEASE_TTL}); {} checkouts acknowledged after {} retries ({} of them after \
         outcome_unknown), {} driver answers, {} audits checked during the run",
        NAMES[victim],
        failover.as_secs_f64(),
        acked.len(),
        shared.retries.load(Ordering::Relaxed),
        shared.outcome_unknown.load(Ordering::Relaxed),
        driver_answers.load(Ordering::Relaxed),
        audits,
    );
    assert!(audits > 0, "no audit was answered during the run");
    cluster.assert_all_running();
    let committed = resubmit_acked(&http, &cluster.urls, &acked).await;
    assert!(committed > 0, "no checkout committed");
    for url in &cluster.urls {
        let expected = json!({"committed_checkouts": orders_before + committed});
        let orders = audit_clean(&http, url, expected)
            .await
            .expect("a final audit");
        assert_eq!(
            orders,
            orders_before + committed,
            "the orders are exactly the committed checkouts (through {url})"
        );
    }
    drop(cluster);
    drop(pg);
}

/// Every acknowledged checkout resubmitted by id on another node gets its original outcome;
/// returns how many committed.
async fn resubmit_acked(http: &reqwest::Client, urls: &[String], acked: &[Acked]) -> u64 {
    let mut committed = 0;
    for (i, a) in acked.iter().enumerate() {
        let url = &urls[i % 3];
        let (status, outcome) = submit(http, url, &a.id, &a.body)
            .await
            .expect("a node answers");
        assert_eq!(status, 200, "resubmitting {}: {outcome}", a.id);
        assert_eq!(
            outcome, a.outcome,
            "{} was acknowledged with another outcome",
            a.id
        );
        committed += u64::from(a.outcome["committed"] == true);
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marketplace_on_three_nodes_survives_the_loss_of_a_forwarding_node() {
    run(
        "the_marketplace_on_three_nodes_survives_the_loss_of_a_forwarding_node",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marketplace_on_three_nodes_survives_the_loss_of_the_sequencer() {
    run(
        "the_marketplace_on_three_nodes_survives_the_loss_of_the_sequencer",
        0,
    )
    .await;
}
