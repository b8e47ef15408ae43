//! The routes the Online Marketplace benchmark's driver sends, replayed in-process with its
//! exact payloads: ingestion, cart adds, checkouts, price and product updates, dashboards,
//! resets, the commit counters and the committed-count event stream.

use crate::common::{Answer, TestServer};
use serde_json::{Value, json};
use services::marketplace::version_of_text;
use std::time::Duration;
use vmsdb::AppChoice;

/// A product row exactly as the driver ingests it (snake_case, `version` before `status`).
fn product_row(seller_id: u32, product_id: u32, price: &str) -> String {
    format!(
        r#"{{"seller_id":{seller_id},"product_id":{product_id},"name":"Ergonomic Steel Shirt","sku":"Q0ZV8NFL6H0X1MCA","category":"Electronics","description":"The Apollotech B340 is an affordable wireless mouse","price":{price},"freight_value":4.13,"version":"0","status":"approved"}}"#
    )
}

/// A stock row exactly as the driver ingests it.
fn stock_row(seller_id: u32, product_id: u32) -> String {
    format!(
        r#"{{"seller_id":{seller_id},"product_id":{product_id},"qty_available":10000,"qty_reserved":0,"order_count":0,"ytd":57,"data":"Et quia dolor qui.","version":"0"}}"#
    )
}

/// A cart item exactly as the driver adds it (PascalCase).
fn cart_item(seller_id: u32, product_id: u32, quantity: u32, version: &str) -> String {
    format!(
        r#"{{"SellerId":{seller_id},"ProductId":{product_id},"ProductName":"Ergonomic Steel Shirt","UnitPrice":47.13,"FreightValue":4.13,"Quantity":{quantity},"Voucher":0.0,"Version":"{version}"}}"#
    )
}

/// A checkout exactly as the driver sends it (PascalCase, `instanceId` camelCase).
fn checkout(customer_id: u32, instance: &str) -> String {
    format!(
        r#"{{"CustomerId":{customer_id},"FirstName":"Maria","LastName":"Silva","Street":"Lake Laverne","Complement":"Kuhn Hill","City":"Avenue","State":"Ohio","ZipCode":"12345","PaymentType":"CREDIT_CARD","CardNumber":"6771-8983-1193-8216","CardHolderName":"Maria Kuhn Silva","CardExpiration":"0827","CardSecurityNumber":"123","CardBrand":"VISA","Installments":3,"instanceId":"{instance}"}}"#
    )
}

/// A price update exactly as the driver sends it (camelCase).
fn price_update(seller_id: u32, product_id: u32, price: &str, version: &str) -> String {
    format!(
        r#"{{"sellerId":{seller_id},"productId":{product_id},"price":{price},"version":"{version}","instanceId":"11-18"}}"#
    )
}

/// A product update exactly as the driver sends it (snake_case, `status` before `version`).
fn product_update(seller_id: u32, product_id: u32, version: &str) -> String {
    format!(
        r#"{{"seller_id":{seller_id},"product_id":{product_id},"name":"Ergonomic Steel Shirt","sku":"Q0ZV8NFL6H0X1MCA","category":"Electronics","description":"The Apollotech B340 is an affordable wireless mouse","price":47.13,"freight_value":4.13,"status":"approved","version":"{version}"}}"#
    )
}

/// Sends `method path` with a JSON `body` (or none, with `Content-Length: 0`); the status and
/// the raw body.
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.http.request(method, format!("{}{path}", server.url));
    request = match body {
        Some(body) => request
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body),
        None => request.header("Content-Length", "0"),
    };
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Sends a write the driver expects `200` with an empty body for.
async fn write_ok(server: &TestServer, method: &str, path: &str, body: Option<String>) {
    let (status, text) = send(server, method, path, body).await;
    assert_eq!((status, text.as_str()), (200, ""), "{method} {path}");
}

/// A count from `GET /status/{which}` with `Accept: application/octet-stream`.
async fn count(server: &TestServer, which: &str) -> i64 {
    let response = server
        .http
        .get(format!("{}/status/{which}", server.url))
        .header("Accept", "application/octet-stream")
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.expect("body");
    assert_eq!(bytes.len(), 8, "the count is 8 bytes");
    i64::from_le_bytes(bytes[..].try_into().unwrap())
}

async fn query(server: &TestServer, name: &str, body: Value) -> Value {
    let answer: Answer = server
        .post(&format!("/v1/queries/{name}"), &body.to_string())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

async fn product(server: &TestServer, seller_id: u32, product_id: u32) -> Value {
    let body = json!({"seller_id": seller_id, "product_id": product_id});
    query(server, "product", body).await
}

/// The `committed` event stream as the driver reads it: lines, of which it takes `data:` ones.
struct EventStream {
    response: reqwest::Response,
    pending: String,
}

impl EventStream {
    async fn open(server: &TestServer) -> EventStream {
        let response = server
            .http
            .get(format!("{}/status/committed", server.url))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .expect("the stream's headers arrive before any event");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        EventStream {
            response,
            pending: String::new(),
        }
    }

    /// The value of the next `data:` line (a bare integer, as the driver parses it).
    async fn next(&mut self) -> i64 {
        loop {
            if let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                if let Some(data) = line.strip_prefix("data:") {
                    return data.trim().parse().expect("a bare integer");
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("stream readable")
                .expect("stream open");
            self.pending.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn ingest_seller(server: &TestServer, seller_id: u32, products: u32) {
    for product_id in 1..=products {
        write_ok(
            server,
            "POST",
            "/product",
            Some(product_row(seller_id, product_id, "47.13")),
        )
        .await;
        write_ok(
            server,
            "POST",
            "/stock",
            Some(stock_row(seller_id, product_id)),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_session_runs_with_its_exact_payloads() {
    // Goal: every write the driver sends is answered 200 with an empty body, and does what
    // the driver means: rows are ingested, an acknowledged cart add is seen by the checkout,
    // which consumes the cart (for a customer never ingested), a price update applies only to
    // the version it names, a product update makes a new version stock follows, dashboards
    // answer for sellers with and without orders, and resets wipe their service.
    let server = TestServer::start(AppChoice::Marketplace, |_| {}).await;
    let mut events = EventStream::open(&server).await;
    ingest_seller(&server, 1, 2).await;
    let p = product(&server, 1, 1).await;
    assert_eq!(p["product"]["price"], 4713);
    assert_eq!(p["product"]["freight_value"], 413);
    assert_eq!(p["stock"]["qty_available"], 10000);
    assert_eq!(p["product"]["version"], version_of_text("0"));

    write_ok(
        &server,
        "PATCH",
        "/cart/42/add",
        Some(cart_item(1, 1, 4, "0")),
    )
    .await;
    write_ok(
        &server,
        "PATCH",
        "/cart/42/add",
        Some(cart_item(1, 2, 1, "0")),
    )
    .await;
    write_ok(&server, "POST", "/cart", Some(checkout(42, "11-17"))).await;
    assert_eq!(events.next().await, 1);
    let dashboard = query(&server, "dashboard", json!({"seller_id": 1})).await;
    assert_eq!(dashboard["view"]["count_orders"], 1, "{dashboard}");
    assert_eq!(dashboard["view"]["count_items"], 2, "{dashboard}");
    assert_eq!(dashboard["entries"].as_array().unwrap().len(), 1);
    assert_eq!(
        product(&server, 1, 1).await["stock"]["qty_available"],
        10000 - 4
    );
    let (status, body) = send(&server, "GET", "/seller/dashboard/1", None).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["view"]["count_orders"], 1);
    let (status, body) = send(&server, "GET", "/seller/dashboard/77", None).await;
    assert_eq!(status, 200, "a seller with no orders has a dashboard");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["view"]["count_orders"], 0);
    assert_eq!(body["entries"], json!([]));

    // The cart was consumed: checking out again is accepted, and settles as an abort.
    write_ok(&server, "POST", "/cart", Some(checkout(42, "11-18"))).await;
    assert_eq!(events.next().await, 2);
    let metrics = server.get_text("/metrics", &[]).await.1;
    assert!(
        metrics.contains(r#"vmsdb_http_aborted_total{service="cart",kind="empty_cart"} 1"#),
        "{metrics}"
    );

    // A price update names the version it saw: it applies to that version only.
    write_ok(
        &server,
        "PATCH",
        "/product",
        Some(price_update(1, 1, "49.9578", "0")),
    )
    .await;
    assert_eq!(events.next().await, 3);
    assert_eq!(product(&server, 1, 1).await["product"]["price"], 4996);
    write_ok(
        &server,
        "PUT",
        "/product",
        Some(product_update(1, 1, "11-19")),
    )
    .await;
    assert_eq!(events.next().await, 4);
    let p = product(&server, 1, 1).await;
    assert_eq!(p["product"]["version"], version_of_text("11-19"));
    assert_eq!(p["stock"]["version"], version_of_text("11-19"));
    assert_eq!(p["product"]["price"], 4713);
    write_ok(
        &server,
        "PATCH",
        "/product",
        Some(price_update(1, 1, "50.0", "0")),
    )
    .await;
    assert_eq!(events.next().await, 5);
    assert_eq!(
        product(&server, 1, 1).await["product"]["price"],
        4713,
        "stale version"
    );
    write_ok(
        &server,
        "PATCH",
        "/product",
        Some(price_update(1, 1, "50.0", "11-19")),
    )
    .await;
    assert_eq!(events.next().await, 6);
    assert_eq!(product(&server, 1, 1).await["product"]["price"], 5000);

    // A cart item at the new version checks out.
    write_ok(
        &server,
        "PATCH",
        "/cart/7/add",
        Some(cart_item(1, 1, 1, "11-19")),
    )
    .await;
    write_ok(&server, "POST", "/cart", Some(checkout(7, "11-20"))).await;
    assert_eq!(events.next().await, 7);
    let dashboard = query(&server, "dashboard", json!({"seller_id": 1})).await;
    assert_eq!(dashboard["view"]["count_orders"], 2, "{dashboard}");
    // An item at a replaced version is dropped from the order, the rest is sold.
    write_ok(
        &server,
        "PATCH",
        "/cart/9/add",
        Some(cart_item(1, 1, 1, "0")),
    )
    .await;
    write_ok(
        &server,
        "PATCH",
        "/cart/9/add",
        Some(cart_item(1, 2, 3, "0")),
    )
    .await;
    write_ok(&server, "POST", "/cart", Some(checkout(9, "11-22"))).await;
    assert_eq!(events.next().await, 8);
    let dashboard = query(&server, "dashboard", json!({"seller_id": 1})).await;
    assert_eq!(dashboard["view"]["count_orders"], 3, "{dashboard}");
    assert_eq!(dashboard["view"]["count_items"], 2 + 1 + 1, "{dashboard}");
    let stock = &product(&server, 1, 2).await["stock"];
    assert_eq!(stock["qty_available"], 10000 - 1 - 3, "{stock}");
    write_ok(
        &server,
        "PATCH",
        "/cart/8/add",
        Some(cart_item(1, 2, 1, "0")),
    )
    .await;
    write_ok(&server, "PATCH", "/cart/8/seal", None).await;
    write_ok(&server, "POST", "/cart", Some(checkout(8, "11-21"))).await;
    assert_eq!(events.next().await, 9);
    let metrics = server.get_text("/metrics", &[]).await.1;
    assert!(
        metrics.contains(r#"vmsdb_http_aborted_total{service="cart",kind="empty_cart"} 2"#),
        "a sealed cart is empty: {metrics}"
    );
    assert_eq!(
        (
            count(&server, "submitted").await,
            count(&server, "committed").await
        ),
        (9, 9)
    );

    for service in [
        "cart", "product", "stock", "order", "payment", "shipment", "seller",
    ] {
        write_ok(&server, "PATCH", &format!("/{service}/reset"), None).await;
    }
    let p = product(&server, 1, 2).await;
    assert_eq!(
        (&p["product"], &p["stock"]),
        (&Value::Null, &Value::Null),
        "{p}"
    );
    let dashboard = query(&server, "dashboard", json!({"seller_id": 1})).await;
    assert_eq!(dashboard["view"]["count_orders"], 0, "{dashboard}");
    assert_eq!(dashboard["entries"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_cased_field_is_refused_and_changes_nothing() {
    // Goal: field names are matched case-sensitively per payload; a payload in the wrong
    // casing is a 400 before anything runs: no row, no count.
    let server = TestServer::start(AppChoice::Marketplace, |_| {}).await;
    let camel_product = product_row(3, 1, "10.0").replace("seller_id", "sellerId");
    let (status, body) = send(&server, "POST", "/product", Some(camel_product)).await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "bad_payload");
    assert!(
        body["message"].as_str().unwrap().contains("seller_id"),
        "{body}"
    );
    assert_eq!(product(&server, 3, 1).await["product"], Value::Null);

    ingest_seller(&server, 3, 1).await;
    let pascal_price = price_update(3, 1, "99.0", "0").replace("sellerId", "SellerId");
    let (status, _) = send(&server, "PATCH", "/product", Some(pascal_price)).await;
    assert_eq!(status, 400);
    let snake_cart = cart_item(3, 1, 1, "0").replace("SellerId", "seller_id");
    let (status, _) = send(&server, "PATCH", "/cart/5/add", Some(snake_cart)).await;
    assert_eq!(status, 400);
    let camel_checkout = checkout(5, "1-1").replace("CustomerId", "customerId");
    let (status, _) = send(&server, "POST", "/cart", Some(camel_checkout)).await;
    assert_eq!(status, 400);
    assert_eq!(product(&server, 3, 1).await["product"]["price"], 4713);
    assert_eq!(
        (
            count(&server, "submitted").await,
            count(&server, "committed").await
        ),
        (0, 0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_only_after_everything_acknowledged_settled() {
    // Goal: the committed-count stream sends no event on connect and one after each settled
    // batch whose value covers every transaction acknowledged before it; with many
    // transactions in flight at once the counts still end equal, and a second client after the
    // first left gets the later events.
    let server = TestServer::start(AppChoice::Marketplace, |s| {
        s.epoch_duration = Some(Duration::from_millis(5));
    })
    .await;
    ingest_seller(&server, 1, 3).await;
    let mut events = EventStream::open(&server).await;
    assert_eq!(count(&server, "committed").await, 0);
    for round in 1..=3 {
        let update = price_update(1, 1, &format!("{round}0.0"), "0");
        write_ok(&server, "PATCH", "/product", Some(update)).await;
        // The first event after an acknowledgement already counts it.
        assert_eq!(events.next().await, round);
    }

    // Many at once: each acknowledgement is held until the batch before it settled, so when
    // every request was answered the last event still to come covers them all.
    let mut in_flight = Vec::new();
    for i in 0..24u32 {
        let body = match i % 3 {
            0 => price_update(1, 2, "11.0", "0"),
            1 => product_update(1, 3, &format!("7-{i}")),
            _ => checkout(100 + i, &format!("7-{i}")),
        };
        let method = ["PATCH", "PUT", "POST"][(i % 3) as usize];
        let path = ["/product", "/product", "/cart"][(i % 3) as usize];
        let server = &server;
        in_flight.push(async move { send(server, method, path, Some(body)).await });
    }
    for (status, body) in futures::future::join_all(in_flight).await {
        assert_eq!((status, body.as_str()), (200, ""));
    }
    assert_eq!(count(&server, "submitted").await, 27);
    let mut last = 3;
    while last < 27 {
        let value = events.next().await;
        assert!(value > last, "each event counts more: {value} after {last}");
        last = value;
    }
    assert_eq!(count(&server, "committed").await, 27);
    drop(events);

    let mut second = EventStream::open(&server).await;
    write_ok(
        &server,
        "PATCH",
        "/product",
        Some(price_update(1, 1, "12.0", "0")),
    )
    .await;
    assert_eq!(second.next().await, 28);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_query_names_the_criteria_a_state_breaks() {
    // Goal: `audit` evaluates every criterion at one snapshot and says what is wrong: the
    // driver's stock rows come with a year-to-date of 57 units no order sold (criterion 2, one
    // violation per product, each described), a committed checkout count the orders do not
    // match breaks criterion 8, and everything else holds after a checkout.
    let server = TestServer::start(AppChoice::Marketplace, |_| {}).await;
    ingest_seller(&server, 1, 2).await;
    write_ok(
        &server,
        "PATCH",
        "/cart/7/add",
        Some(cart_item(1, 1, 2, "0")),
    )
    .await;
    write_ok(&server, "POST", "/cart", Some(checkout(7, "1-1"))).await;
    // The checkout was answered once queued; a write answered once durable, queued after it,
    // is sequenced after it: once it is answered, the checkout has run.
    write_ok(&server, "PATCH", "/cart/8/seal", None).await;
    let audit = query(&server, "audit", json!({"committed_checkouts": 2})).await;
    assert_eq!(audit["n_orders"], 1, "{audit}");
    let criteria = audit["criteria"].as_object().expect("criteria");
    assert_eq!(criteria.len(), 8, "{audit}");
    let stock = &criteria["2_stock_no_oversell"];
    assert_eq!(stock["violations"], 2, "{audit}");
    let examples = stock["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 2, "{audit}");
    let untouched = "product_id: 2 } is Some(StockItem { qty_available: 10000";
    assert!(
        examples
            .iter()
            .any(|e| e.as_str().unwrap().contains(untouched)),
        "{audit}"
    );
    let orders = &criteria["8_orders_match_committed_checkouts"];
    assert_eq!(orders["violations"], 1, "{audit}");
    assert_eq!(audit["violations"], 3, "nothing else is broken: {audit}");
    let answer = server
        .post("/v1/queries/audit", r#"{"committed_checkout": 1}"#)
        .await;
    assert_eq!((answer.status, answer.code()), (400, "bad_payload"));
}
