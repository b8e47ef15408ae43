//! Property-based fuzzing of request decoding through the HTTP handlers: arbitrary bytes,
//! arbitrary JSON and mutated valid payloads thrown at the generic event route, the batch
//! route, the query route and the marketplace driver's routes. Every answer must be a success
//! or a 4xx JSON error (`{"code", "message"}`), never a 5xx or a dropped connection, and a
//! refused request must submit nothing: the runtime's transaction count only grows by the
//! outcomes answered.
//!
//! Bounded for CI (`VMSDB_FUZZ_CASES`, default 256 cases per test); the seed is printed and
//! `TXN_TEST_SEED=<n>` replays it.

use crate::common::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use vmsdb::AppChoice;

/// Cases per test: `VMSDB_FUZZ_CASES`, else a bound that keeps CI quick.
fn cases() -> u32 {
    std::env::var("VMSDB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// A runner seeded from `TXN_TEST_SEED` (else from the clock), printing the seed.
fn runner(test: &str) -> TestRunner {
    let seed: u64 = std::env::var("TXN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let cases = cases();
    eprintln!("{test}: seed {seed}, {cases} cases (replay with TXN_TEST_SEED={seed})");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Field names the served applications use, so generated objects often come close to events.
const FIELDS: &[&str] = &[
    "account",
    "entry",
    "amount",
    "src_account",
    "src_entry",
    "dst_account",
    "dst_entry",
    "seller_id",
    "product_id",
    "price",
    "version",
    "CustomerId",
    "SellerId",
    "ProductId",
    "Quantity",
    "UnitPrice",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_string),
        ".{0,6}"
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid payload with one field replaced by an arbitrary value, or removed.
fn mutated(valid: Vec<Value>) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(valid),
        any::<prop::sample::Index>(),
        prop::option::of(json_value()),
    )
        .prop_map(|(mut value, field, replacement)| {
            if let Value::Object(map) = &mut value
                && !map.is_empty()
            {
                let key = map.keys().nth(field.index(map.len())).cloned().unwrap();
                match replacement {
                    Some(v) => map.insert(key, v),
                    None => map.remove(&key),
                };
            }
            value
        })
}

/// A request body: raw bytes, arbitrary JSON, or a valid payload mutated.
fn body(valid: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        mutated(valid.clone()).prop_map(|v| v.to_string().into_bytes()),
        prop::sample::select(valid).prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn ledger_valid() -> Vec<Value> {
    vec![
        json!({"account": 1, "entry": 1, "amount": 100}),
        json!({"src_account": 1, "src_entry": 1, "dst_account": 2, "dst_entry": 2, "amount": 5}),
        json!({"entry": 3, "amount": 7, "balance": 7}),
        json!({"account": 1, "entry": 1}),
    ]
}

/// One request to the ledger server.
#[derive(Debug, Clone)]
enum LedgerRequest {
    Event {
        service: String,
        kind: String,
        query: String,
        body: Vec<u8>,
    },
    Batch(Vec<u8>),
    Query {
        name: String,
        body: Vec<u8>,
    },
}

fn ledger_request() -> impl Strategy<Value = LedgerRequest> {
    let service = prop_oneof![
        prop::sample::select(vec!["accounts", "assets"]).prop_map(str::to_string),
        "[a-z%]{0,6}",
    ];
    let kind = prop_oneof![
        prop::sample::select(vec![
            "Deposit",
            "Transfer",
            "DepositEntry",
            "DebitSourceEntry",
            "CreditTargetAccount",
        ])
        .prop_map(str::to_string),
        "[A-Za-z%]{0,8}",
    ];
    let query = prop_oneof![
        Just(String::new()),
        (0u32..6).prop_map(|p| format!("?partition={p}")),
        "\\?[a-z=&%0-9]{0,12}",
    ];
    let batch_item = (
        prop::sample::select(vec!["accounts", "assets", "x"]),
        prop::sample::select(vec!["Deposit", "Transfer", "DepositEntry", "Nope"]),
        prop_oneof![mutated(ledger_valid()), json_value()],
    )
        .prop_map(|(s, k, e)| json!({"service": s, "kind": k, "event": e}));
    let batch = prop_oneof![
        prop::collection::vec(batch_item, 0..5).prop_map(|v| Value::Array(v).to_string()),
        json_value().prop_map(|v| v.to_string()),
    ]
    .prop_map(String::into_bytes);
    prop_oneof![
        4 => (service, kind, query, body(ledger_valid())).prop_map(|(service, kind, query, body)| {
            LedgerRequest::Event { service, kind, query, body }
        }),
        2 => batch.prop_map(LedgerRequest::Batch),
        1 => (prop::sample::select(vec!["balance", "audit", "nope"]), body(ledger_valid()))
            .prop_map(|(name, body)| LedgerRequest::Query { name: name.to_string(), body }),
    ]
}

/// The number of transactions the runtime settled (committed or aborted).
async fn settled(server: &TestServer) -> u64 {
    let stats = server.get("/v1/stats").await.body;
    let runtime = &stats["runtime"];
    runtime["committed"].as_u64().unwrap() + runtime["user_aborted"].as_u64().unwrap()
}

/// A 4xx must be a JSON error; nothing may be a 5xx.
fn check_answer(what: &str, status: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(
        status == 200 || status == 202 || (400..500).contains(&status),
        "{what}: status {status}, body {body}"
    );
    if status >= 400 {
        prop_assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{what}: a {status} without a JSON error: {body}"
        );
    }
    Ok(())
}

/// Sends one request; returns how many outcomes it answered.
async fn send_ledger(server: &TestServer, request: &LedgerRequest) -> Result<u64, TestCaseError> {
    let (path, body) = match request {
        LedgerRequest::Event {
            service,
            kind,
            query,
            body,
        } => (format!("/v1/services/{service}/events/{kind}{query}"), body),
        LedgerRequest::Batch(body) => ("/v1/batch".to_string(), body),
        LedgerRequest::Query { name, body } => (format!("/v1/queries/{name}"), body),
    };
    let answer = server.post_with(&path, body.clone(), &[]).await;
    let what = format!("POST {path} {:?}", String::from_utf8_lossy(body));
    check_answer(&what, answer.status, &answer.body)?;
    Ok(match request {
        LedgerRequest::Event { .. } => u64::from(answer.status == 200),
        LedgerRequest::Batch(_) if answer.status == 200 => {
            let items = answer.body.as_array().cloned().unwrap_or_default();
            for item in &items {
                if let Some(status) = item["status"].as_u64() {
                    check_answer(&what, status as u16, &item["error"])?;
                }
            }
            items.iter().filter(|i| i["committed"].is_boolean()).count() as u64
        }
        LedgerRequest::Batch(_) | LedgerRequest::Query { .. } => 0,
    })
}

#[test]
fn event_batch_and_query_decoding_never_fails_the_server() {
    // Goal: no input makes a decode path panic, answer 5xx or a non-JSON 4xx, and a refused
    // request submits nothing (the runtime settles exactly the outcomes the server answered).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(AppChoice::Ledger, |_| {}));
    let answered = std::cell::Cell::new(0u64);
    let started = std::time::Instant::now();
    runner("event_batch_and_query_decoding")
        .run(&ledger_request(), |request| {
            rt.block_on(async {
                answered.set(answered.get() + send_ledger(&server, &request).await?);
                let settled = settled(&server).await;
                prop_assert_eq!(settled, answered.get(), "after {:?}", request);
                Ok(())
            })
        })
        .unwrap();
    eprintln!("ran {} cases in {:?}", cases(), started.elapsed());
    rt.block_on(server.stop());
}

/// The marketplace driver's routes: method, path, whether tracked, and valid payloads.
fn driver_routes() -> Vec<(&'static str, &'static str, bool, Vec<Value>)> {
    let product = json!({"seller_id":1,"product_id":1,"name":"Shirt","sku":"Q0ZV8","category":"E","description":"A","price":47.13,"freight_value":4.13,"version":"0","status":"approved"});
    let stock = json!({"seller_id":1,"product_id":1,"qty_available":10000,"qty_reserved":0,"order_count":0,"ytd":57,"data":"x","version":"0"});
    let item = json!({"SellerId":1,"ProductId":1,"ProductName":"Shirt","UnitPrice":47.13,"FreightValue":4.13,"Quantity":4,"Voucher":0.0,"Version":"0"});
    let checkout = json!({"CustomerId":42,"FirstName":"M","LastName":"S","Street":"a","Complement":"b","City":"c","State":"d","ZipCode":"1","PaymentType":"CREDIT_CARD","CardNumber":"1","CardHolderName":"M S","CardExpiration":"0827","CardSecurityNumber":"123","CardBrand":"VISA","Installments":3,"instanceId":"11-17"});
    let price = json!({"sellerId":1,"productId":1,"price":9.99,"version":"0","instanceId":"1-2"});
    vec![
        ("POST", "/product", false, vec![product.clone()]),
        ("POST", "/stock", false, vec![stock]),
        ("PATCH", "/cart/42/add", false, vec![item]),
        ("POST", "/cart", true, vec![checkout]),
        ("PATCH", "/product", true, vec![price]),
        ("PUT", "/product", true, vec![product]),
    ]
}

#[test]
fn marketplace_driver_payload_decoding_never_fails_the_server() {
    // Goal: the driver's routes answer every payload with a success or a 4xx JSON error, and
    // only accepted tracked writes count as submitted.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(AppChoice::Marketplace, |_| {}));
    let strategy = (0..driver_routes().len()).prop_flat_map(move |i| {
        let (method, path, tracked, valid) = driver_routes().swap_remove(i);
        body(valid).prop_map(move |body| (method, path, tracked, body))
    });
    let tracked_accepted = std::cell::Cell::new(0u64);
    runner("marketplace_driver_payload_decoding")
        .run(&strategy, |(method, path, tracked, body)| {
            rt.block_on(async {
                let url = format!("{}{path}", server.url);
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let response = server
                    .http
                    .request(method, &url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.bytes().await.unwrap();
                let json: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
                let what = format!("{path} {:?}", String::from_utf8_lossy(&body));
                check_answer(&what, status, &json)?;
                tracked_accepted.set(tracked_accepted.get() + u64::from(tracked && status == 200));
                let (_, submitted) = server
                    .get_text("/status/submitted", &[("accept", "application/json")])
                    .await;
                prop_assert_eq!(
                    submitted.trim().parse::<u64>().unwrap(),
                    tracked_accepted.get()
                );
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(server.stop());
}
