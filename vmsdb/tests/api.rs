//! The HTTP API used as documented: submissions and their outcomes for the ledger and YCSB-T,
//! idempotent resubmission, fire-and-forget with a status lookup, services, queries, metrics in
//! the Prometheus text format and the OpenAPI document listing every route.

use crate::common::TestServer;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use vmsdb::AppChoice;

fn deposit(account: u64, amount: i64) -> String {
    json!({"account": account, "entry": account, "amount": amount}).to_string()
}

const TRANSFER: &str = "/v1/services/accounts/events/Transfer";

/// A transfer of `amount` from account and entry 1 to account and entry 2.
fn transfer(amount: i64) -> String {
    json!({"src_account": 1, "src_entry": 1, "dst_account": 2, "dst_entry": 2, "amount": amount})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_submissions_get_their_durable_outcomes() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let a = server
        .post("/v1/services/accounts/events/Deposit", &deposit(1, 10))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["committed"], true);
    assert_eq!(
        a.body["output"],
        json!({"Deposited": {"balance": 10, "entry_value": 10}})
    );
    assert!(a.body["tid"].as_u64().unwrap() > 0);
    assert!(a.body["request_id"].as_str().unwrap().contains('/'));
    let a = server
        .post("/v1/services/accounts/events/Deposit", &deposit(2, 1))
        .await;
    assert_eq!(a.body["committed"], true);

    // A business abort is an outcome too: 200, committed false, its kind and service named.
    let a = server.post(TRANSFER, &transfer(100)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["committed"], false);
    assert_eq!(a.body["abort"]["kind"], "insufficient_balance");
    assert_eq!(a.body["abort"]["service"], "accounts");
    assert!(a.body.get("output").is_none());

    let a = server.post(TRANSFER, &transfer(4)).await;
    assert_eq!(a.body["committed"], true, "{}", a.body);
    let b = server
        .post("/v1/queries/balance", r#"{"account": 2, "entry": 2}"#)
        .await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body, json!({"account": 5, "entry": 5}));
    let audit = server.post("/v1/queries/audit", "").await;
    assert_eq!(audit.body["n_accounts"], 2);
    assert_eq!(audit.body["total_balance"], 11);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ycsb_loads_by_partition_and_increments_by_key() {
    let server = TestServer::start(AppChoice::Ycsb, |s| {
        s.partitions = Some(1);
        s.ycsb_keys = 4;
    })
    .await;
    // `Load` carries no routing key: it names its partition.
    let load = r#"{"keys": [0, 1, 2, 3]}"#;
    let a = server.post("/v1/services/ycsb/events/Load", load).await;
    assert_eq!((a.status, a.code()), (400, "needs_partition"), "{}", a.body);
    let a = server
        .post("/v1/services/ycsb/events/Load?partition=0", load)
        .await;
    assert_eq!(a.body["committed"], true, "{}", a.body);
    let a = server
        .post("/v1/services/ycsb/events/Rmw", r#"{"keys": [2, 3, 2]}"#)
        .await;
    assert_eq!(a.body["committed"], true, "{}", a.body);
    assert_eq!(a.body["output"], Value::Null);
    let read = server.post("/v1/queries/read", r#"{"key": 2}"#).await;
    assert_eq!(read.body, json!({"key": 2, "value": 2}));
    let audit = server.post("/v1/queries/audit", "{}").await;
    assert_eq!(
        audit.body,
        json!({"n_rows": 4, "sum": 3, "n_negative": 0, "n_out_of_range": 0})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmission_with_the_same_idempotency_key_runs_once() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let key = [("Idempotency-Key", "77/1")];
    let path = "/v1/services/accounts/events/Deposit";
    let first = server.post_with(path, deposit(5, 10), &key).await;
    let again = server.post_with(path, deposit(5, 10), &key).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["request_id"], "77/1");
    assert_eq!(
        first.body, again.body,
        "the original outcome, not a second run"
    );
    let b = server
        .post("/v1/queries/balance", r#"{"account": 5, "entry": 5}"#)
        .await;
    assert_eq!(b.body["account"], 10, "deposited once");
    // The same key for another request is refused, and that request does not run.
    let other = server.post_with(path, deposit(5, 99), &key).await;
    assert_eq!(
        (other.status, other.code()),
        (409, "request_id_reused"),
        "{}",
        other.body
    );
    let b = server
        .post("/v1/queries/balance", r#"{"account": 5, "entry": 5}"#)
        .await;
    assert_eq!(b.body["account"], 10);
    server.stop().await;
}

/// Polls a fire-and-forget request's status until it is no longer pending (bounded: the
/// outcome is durable within a few epochs).
async fn settled(server: &TestServer, status_url: &str) -> Value {
    let mut status = Value::Null;
    for _ in 0..2000 {
        status = server.get(status_url).await.body;
        if status["state"] != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_table_forgets_the_oldest_settled_requests_first() {
    let server =
        TestServer::start(AppChoice::Ledger, |s| s.limits.status_table_settled_max = 2).await;
    let path = "/v1/services/accounts/events/Deposit?wait=false";
    for seq in 1..=3u64 {
        let key = format!("4/{seq}");
        let a = server
            .post_with(path, deposit(seq, 1), &[("Idempotency-Key", &key)])
            .await;
        assert_eq!(a.status, 202);
        // One at a time, so they settle in this order.
        assert_eq!(
            settled(&server, &format!("/v1/requests/{key}")).await["state"],
            "committed"
        );
    }
    assert_eq!(
        server.get("/v1/requests/4/1").await.code(),
        "unknown_request"
    );
    assert_eq!(server.get("/v1/requests/4/2").await.status, 200);
    assert_eq!(server.get("/v1/requests/4/3").await.status, 200);
    // A forgotten request's outcome is still in the runtime's dedup window: resubmitting it
    // with its key answers the original outcome.
    let again = server
        .post_with(
            "/v1/services/accounts/events/Deposit",
            deposit(1, 1),
            &[("Idempotency-Key", "4/1")],
        )
        .await;
    assert_eq!(again.body["output"]["Deposited"]["balance"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_answers_at_once_and_its_status_settles() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let path = "/v1/services/accounts/events/Deposit?wait=false";
    let a = server
        .post_with(path, deposit(9, 3), &[("Idempotency-Key", "8/1")])
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["request_id"], "8/1");
    assert_eq!(a.body["status_url"], "/v1/requests/8/1");
    let status = settled(&server, "/v1/requests/8/1").await;
    assert_eq!(status["state"], "committed", "{status}");
    assert_eq!(status["outcome"]["output"]["Deposited"]["balance"], 3);
    // Without a key, the server generates the id it answers with.
    let b = server.post(path, &deposit(10, 1)).await;
    assert_eq!(b.status, 202);
    let url = b.body["status_url"].as_str().unwrap().to_string();
    assert_eq!(server.get(&url).await.status, 200);
    let unknown = server.get("/v1/requests/1/1").await;
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_request"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_list_partitions_and_event_kinds_with_internal_ones_marked() {
    let server = TestServer::start(AppChoice::Ledger, |s| s.partitions = Some(3)).await;
    let a = server.get("/v1/services").await;
    assert_eq!(a.body["app"], "ledger");
    let services = a.body["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["accounts", "assets"]);
    assert!(services.iter().all(|s| s["partitions"] == 3));
    let accounts = &services[0]["events"];
    assert!(
        accounts
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "Deposit", "internal": false}))
    );
    assert!(
        accounts
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "CreditTargetAccount", "internal": true}))
    );
    let queries: Vec<&str> = a.body["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(queries, ["balance", "audit"]);
    server.stop().await;
}

/// Checks `text` is valid Prometheus text format: every sample's metric has a HELP and a TYPE
/// line before it, names are valid and `vmsdb_`-prefixed, values are numbers. Returns the
/// samples by name.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let (mut helped, mut typed, mut samples) = (BTreeSet::new(), BTreeSet::new(), BTreeMap::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(
                valid_name(name) && !help.is_empty(),
                "bad HELP line {line:?}"
            );
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(
                ["counter", "gauge"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.insert(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `name value`");
            let name = series.split_once('{').map_or(series, |(name, labels)| {
                assert!(labels.ends_with('}'), "bad labels in {line:?}");
                name
            });
            assert!(
                valid_name(name) && name.starts_with("vmsdb_"),
                "bad metric name in {line:?}"
            );
            assert!(
                helped.contains(name) && typed.contains(name),
                "{name} has no HELP/TYPE before it"
            );
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{series} twice"
            );
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_the_runtime_counters() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    for account in 0..3 {
        server
            .post("/v1/services/accounts/events/Deposit", &deposit(account, 1))
            .await;
    }
    server.post(TRANSFER, &transfer(100)).await;
    let (status, text) = server.get_text("/metrics", &[]).await;
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text);
    assert!(samples["vmsdb_committed_total"] >= 3.0, "{text}");
    assert!(samples["vmsdb_epochs_total"] >= 1.0);
    assert!(samples["vmsdb_log_appends_total"] >= 1.0);
    assert_eq!(samples["vmsdb_ready"], 1.0);
    let abort = r#"vmsdb_http_aborted_total{service="accounts",kind="insufficient_balance"}"#;
    assert_eq!(samples.get(abort), Some(&1.0), "{text}");
    for name in [
        "vmsdb_aborted_user_total",
        "vmsdb_conflicts_total",
        "vmsdb_log_append_seconds_total",
        "vmsdb_recovery_seconds",
        "vmsdb_in_flight_submissions",
        "vmsdb_submit_latency_window_outcomes",
    ] {
        assert!(samples.contains_key(name), "{name} missing");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_every_listed_route_is_served() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let doc = server.get("/openapi.json").await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let expected: BTreeSet<String> = [
        "POST /v1/services/{service}/events/{kind}",
        "GET /v1/requests/{client}/{seq}",
        "GET /v1/services",
        "POST /v1/queries/{name}",
        "POST /v1/subjects/{subject}/forget",
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /openapi.json",
        "POST /v1/batch",
        "GET /v1/stats",
        "GET /",
    ]
    .map(String::from)
    .into();
    assert_eq!(listed, expected);
    // Every listed route is served: the router does not answer `unknown_route` or 405.
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{service}", "accounts")
            .replace("{kind}", "Deposit")
            .replace("{client}", "1")
            .replace("{seq}", "1")
            .replace("{name}", "audit")
            .replace("{subject}", "nobody");
        let url = format!("{}{path}", server.url);
        let request = if method == "POST" {
            server.http.post(url).body("{}")
        } else {
            server.http.get(url)
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["code"] != "unknown_route",
            "{route} is listed but not served"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_settles_every_accepted_fire_and_forget_submission() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let path = "/v1/services/accounts/events/Deposit?wait=false";
    let n_accepted = 200;
    for account in 0..n_accepted {
        assert_eq!(server.post(path, &deposit(account, 1)).await.status, 202);
    }
    // Stopped right after the last 202: every accepted submission must still commit.
    let server = server.restart(AppChoice::Ledger).await;
    let audit = server.post("/v1/queries/audit", "{}").await;
    assert_eq!(audit.body["n_accounts"], n_accepted, "{}", audit.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_cannot_start_leaves_the_server_unready_with_json_503s() {
    let server = TestServer::start(AppChoice::Ledger, |s| s.partitions = Some(4)).await;
    let a = server
        .post("/v1/services/accounts/events/Deposit", &deposit(1, 1))
        .await;
    assert_eq!(a.body["committed"], true);
    let dir = server.stop().await;
    // The same store with another layout: the runtime refuses it.
    let mut settings = vmsdb::Settings::new(AppChoice::Ledger, dir.path());
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.partitions = Some(3);
    let mut server = vmsdb::Server::start(settings).await.unwrap();
    let refused = server.wait_started().await.unwrap_err().to_string();
    assert!(refused.contains("different application"), "{refused}");
    let url = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{url}{path}")).send();
    assert_eq!(get("/health").await.unwrap().status(), 200);
    let ready = get("/ready").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["status"],
        "start_failed"
    );
    let submit = http
        .post(format!("{url}/v1/services/accounts/events/Deposit"))
        .body(deposit(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(submit.status(), 503);
    assert_eq!(submit.json::<Value>().await.unwrap()["code"], "not_ready");
    // The failed start was reported once, by `wait_started`.
    server.shutdown().await.expect("a clean shutdown");
}
