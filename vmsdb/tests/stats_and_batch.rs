//! `POST /v1/batch` (many events per request, answered in order, refused items not submitted)
//! and `GET /v1/stats` / `GET /` (the live numbers and the console page, with a token).

use crate::common::TestServer;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use vmsdb::AppChoice;

fn deposit(account: u64, amount: i64) -> Value {
    json!({"service": "accounts", "kind": "Deposit", "event": {"account": account, "entry": account, "amount": amount}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_event_in_order_and_submits_only_what_decodes() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    let batch = json!([
        deposit(1, 10),
        {"service": "accounts", "kind": "Nope", "event": {}},
        deposit(2, 20),
        {"service": "accounts", "kind": "Deposit", "event": {"account": "x"}},
        {"service": "accounts", "kind": "Transfer", "event": {"src_account": 1, "src_entry": 1, "dst_account": 2, "dst_entry": 2, "amount": 1000}},
        {"service": "accounts", "kind": "Deposit", "event": {"account": 3, "entry": 3, "amount": 1}, "idempotency_key": "9/1"},
    ]);
    let answer = server.post("/v1/batch", &batch.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let items = answer.body.as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0]["committed"], true);
    assert_eq!(items[0]["output"]["Deposited"]["balance"], 10);
    assert_eq!(items[1]["status"], 404);
    assert_eq!(items[1]["error"]["code"], "unknown_event");
    assert_eq!(items[2]["output"]["Deposited"]["balance"], 20);
    assert_eq!(items[3]["status"], 400);
    assert_eq!(items[3]["error"]["code"], "bad_payload");
    assert_eq!(items[4]["committed"], false);
    assert_eq!(items[4]["abort"]["kind"], "insufficient_balance");
    assert_eq!(items[5]["request_id"], "9/1");
    // The same key again answers the first outcome (same TID) without running twice.
    let again = server
        .post("/v1/batch", &json!([batch[5]]).to_string())
        .await;
    assert_eq!(again.body[0]["tid"], items[5]["tid"]);
    let stats = server.get("/v1/stats").await.body;
    let runtime = &stats["runtime"];
    assert_eq!(runtime["committed"], 3, "{stats}");
    assert_eq!(runtime["user_aborted"], 1, "{stats}");
    for (body, code) in [
        ("{\"service\": \"accounts\"}", "bad_payload"),
        ("not json", "bad_payload"),
        (
            "[{\"service\": \"accounts\", \"kind\": \"Deposit\"}]",
            "bad_payload",
        ),
    ] {
        let refused = server.post("/v1/batch", body).await;
        assert_eq!((refused.status, refused.code()), (400, code), "{body}");
    }
    let too_many = Value::Array(vec![deposit(1, 1); vmsdb::limits::BATCH_EVENTS_MAX + 1]);
    let refused = server.post("/v1/batch", &too_many.to_string()).await;
    assert_eq!((refused.status, refused.code()), (400, "batch_too_large"));
    let stats = server.get("/v1/stats").await.body;
    assert_eq!(
        stats["runtime"]["committed"], 3,
        "refused batches submitted nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_latency_aborts_queues_recovery_and_throughput() {
    let token = "stats-token";
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];
    let server = TestServer::start(AppChoice::Ledger, |s| s.token = Some(token.into())).await;
    for account in 0..5 {
        let body = json!({"account": account, "entry": account, "amount": 5}).to_string();
        let path = "/v1/services/accounts/events/Deposit";
        assert_eq!(server.post_with(path, body, &headers).await.status, 200);
    }
    let abort =
        json!({"src_account": 0, "src_entry": 0, "dst_account": 1, "dst_entry": 1, "amount": 99});
    let path = "/v1/services/accounts/events/Transfer";
    server.post_with(path, abort.to_string(), &headers).await;
    assert_eq!(server.get("/v1/stats").await.status, 401);
    let stats = server.get_with("/v1/stats", &headers).await.body;
    assert_eq!(stats["app"], "ledger");
    assert_eq!(stats["phase"], "ok");
    assert_eq!(stats["latency"]["count"], 6, "{stats}");
    assert!(stats["latency"]["p99_us"].as_u64() > Some(0));
    assert!(stats["latency"]["p50_us"].as_u64() <= stats["latency"]["max_us"].as_u64());
    assert_eq!(stats["queues"]["in_flight"], 0);
    assert_eq!(stats["aborts"][0]["kind"], "insufficient_balance");
    assert_eq!(stats["aborts"][0]["count"], 1);
    assert!(stats["runtime"]["mean_epoch_txns"].as_f64() > Some(0.0));
    assert!(stats["runtime"]["phase_us_per_epoch"]["execute"].as_f64() > Some(0.0));
    assert_eq!(stats["recovery"]["epochs_replayed"], 0);
    assert_eq!(
        stats["conflicts_by_table"],
        json!([]),
        "distinct accounts never conflict"
    );
    // The sampler reads the counters once a second: poll (bounded) until a sample saw commits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = server.get_with("/v1/stats", &headers).await.body;
        let history = stats["history"].as_array().unwrap();
        if !history.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no throughput sample: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The console needs no token (it holds no data) and polls /v1/stats.
    let (status, page) = server.get_text("/", &[]).await;
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("/v1/stats"));
    assert!(page.contains("Authorization") && !page.contains("<link"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_losses_are_shown_by_table_in_stats_and_metrics() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    // One batch is submitted whole before any outcome is awaited, so its deposits to one
    // account share epochs: every one but the lowest TID of an epoch loses in the parallel pass.
    let batch = Value::Array(vec![deposit(7, 1); 200]);
    let answer = server.post("/v1/batch", &batch.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stats = server.get("/v1/stats").await.body;
    assert_eq!(stats["runtime"]["committed"], 200, "{stats}");
    let conflicts = stats["runtime"]["conflicts"].as_u64().unwrap();
    assert!(conflicts > 0, "the batch caused no conflict: {stats}");
    // Every loser read the account row a lower TID of its epoch wrote; its later step in
    // `assets` may lose there too, which that table counts as well.
    let tables = stats["conflicts_by_table"].as_array().unwrap();
    let accounts = tables
        .iter()
        .find(|t| t["table"].as_str().unwrap().starts_with("accounts."))
        .unwrap_or_else(|| panic!("no accounts table in {stats}"));
    assert_eq!(accounts["losers"].as_u64(), Some(conflicts), "{stats}");
    assert_eq!(accounts["hot_keys"][0]["key"], "7", "{stats}");
    assert_eq!(
        accounts["hot_keys"][0]["losers"].as_u64(),
        Some(conflicts),
        "{stats}"
    );
    let (status, metrics) = server.get_text("/metrics", &[]).await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("vmsdb_conflicts_by_table_total{table=\"accounts."))
        .unwrap_or_else(|| panic!("no per-table conflict line:\n{metrics}"));
    assert!(line.ends_with(&format!(" {conflicts}")), "{line}");
    server.stop().await;
}
