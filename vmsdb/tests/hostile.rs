//! Hostile and careless input gets a clear JSON 4xx (or 503) and affects nothing else:
//! malformed JSON, wrong types, unknown services, events and queries, internal events,
//! oversized bodies, bad keys and partitions, missing or wrong tokens, floods, slow clients, and
//! a non-loopback address without a token.

use crate::common::TestServer;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vmsdb::{AppChoice, ServeError, Server, Settings};

const DEPOSIT: &str = "/v1/services/accounts/events/Deposit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_fitting_statuses() {
    let server = TestServer::start(AppChoice::Ledger, |s| s.limits.body_bytes_max = 2048).await;
    let cases: [(&str, String, u16, &str); 12] = [
        (DEPOSIT, "{\"account\": 1,".into(), 400, "bad_payload"),
        (DEPOSIT, "not json".into(), 400, "bad_payload"),
        (
            DEPOSIT,
            r#"{"account": "one", "entry": 1, "amount": 1}"#.into(),
            400,
            "bad_payload",
        ),
        (
            DEPOSIT,
            r#"{"account": 1, "entry": 1, "amount": 1.5}"#.into(),
            400,
            "bad_payload",
        ),
        (
            DEPOSIT,
            r#"{"account": -1, "entry": 1, "amount": 1}"#.into(),
            400,
            "bad_payload",
        ),
        (
            "/v1/services/acounts/events/Deposit",
            "{}".into(),
            404,
            "unknown_service",
        ),
        (
            "/v1/services/accounts/events/Withdraw",
            "{}".into(),
            404,
            "unknown_event",
        ),
        (
            "/v1/services/assets/events/DepositEntry",
            r#"{"entry": 1, "amount": 5, "balance": 5}"#.into(),
            403,
            "internal_event",
        ),
        ("/v1/queries/everything", "{}".into(), 404, "unknown_query"),
        (
            "/v1/queries/balance",
            r#"{"account": 1}"#.into(),
            400,
            "bad_payload",
        ),
        (
            DEPOSIT,
            format!(
                r#"{{"account": 1, "entry": 1, "amount": 1, "pad": "{}"}}"#,
                "x".repeat(4096)
            ),
            413,
            "body_too_large",
        ),
        ("/v1/nothing/here", "{}".into(), 404, "unknown_route"),
    ];
    for (path, body, status, code) in cases {
        let a = server.post(path, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "POST {path}: {}",
            a.body
        );
        assert!(!a.body["message"].as_str().unwrap().is_empty());
    }
    // None of it ran anything.
    let audit = server.post("/v1/queries/audit", "{}").await;
    assert_eq!(audit.body["n_accounts"], 0, "{}", audit.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings_keys_and_internal_events_are_refused_before_anything_runs() {
    let server = TestServer::start(AppChoice::Ledger, |_| {}).await;
    // An internal event is refused even fire-and-forget, before any 202.
    let internal = server
        .post(
            "/v1/services/assets/events/DepositEntry?wait=false",
            r#"{"entry": 1, "amount": 5, "balance": 5}"#,
        )
        .await;
    assert_eq!((internal.status, internal.code()), (403, "internal_event"));
    let cases = [
        (
            format!("{DEPOSIT}?partition=many"),
            &[][..],
            400,
            "bad_query",
        ),
        (format!("{DEPOSIT}?wait=perhaps"), &[][..], 400, "bad_query"),
        (
            "/v1/services/ycsb/events/Load".to_string(),
            &[][..],
            404,
            "unknown_service",
        ),
        (
            DEPOSIT.to_string(),
            &[("Idempotency-Key", "seven")][..],
            400,
            "bad_idempotency_key",
        ),
        (
            DEPOSIT.to_string(),
            &[("Idempotency-Key", "9223372036854775808/1")][..],
            400,
            "bad_idempotency_key",
        ),
    ];
    for (path, headers, status, code) in cases {
        let a = server
            .post_with(&path, r#"{"account": 1, "entry": 1, "amount": 1}"#, headers)
            .await;
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "POST {path}: {}",
            a.body
        );
    }
    // None of it ran anything.
    let audit = server.post("/v1/queries/audit", "{}").await;
    assert_eq!(audit.body["n_accounts"], 0, "{}", audit.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_route_but_health_and_ready_needs_it() {
    let token = "s3cret-token";
    let server = TestServer::start(AppChoice::Ledger, |s| s.token = Some(token.into())).await;
    let good = format!("Bearer {token}");
    let wrong = [
        vec![],
        vec![("Authorization", "Bearer s3cret-toke")],
        vec![("Authorization", "Bearer s3cret-token2")],
        vec![("Authorization", token)],
        vec![("Authorization", "Basic czNjcmV0LXRva2Vu")],
    ];
    for headers in &wrong {
        let a = server
            .post_with(
                DEPOSIT,
                r#"{"account": 1, "entry": 1, "amount": 1}"#,
                headers,
            )
            .await;
        assert_eq!((a.status, a.code()), (401, "unauthorized"), "{headers:?}");
        for path in [
            "/v1/services",
            "/metrics",
            "/openapi.json",
            "/v1/requests/1/1",
        ] {
            assert_eq!(
                server.get_with(path, headers).await.status,
                401,
                "GET {path} {headers:?}"
            );
        }
        let q = server.post_with("/v1/queries/audit", "{}", headers).await;
        assert_eq!(q.status, 401);
    }
    assert_eq!(server.get("/health").await.status, 200);
    assert_eq!(server.get("/ready").await.status, 200);
    let auth = [("Authorization", good.as_str())];
    let audit = server.post_with("/v1/queries/audit", "{}", &auth).await;
    assert_eq!(
        audit.body["n_accounts"], 0,
        "the refused deposits never ran"
    );
    let a = server
        .post_with(DEPOSIT, r#"{"account": 1, "entry": 1, "amount": 1}"#, &auth)
        .await;
    assert_eq!(a.body["committed"], true);
    assert_eq!(server.get_with("/metrics", &auth).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(AppChoice::Ledger, dir.path());
    settings.listen = "0.0.0.0:0".parse().unwrap();
    let refused = Server::start(settings.clone()).await;
    assert!(
        matches!(refused, Err(ServeError::Unprotected { .. })),
        "{:?}",
        refused.err()
    );
    settings.token = Some("t".into());
    let mut server = Server::start(settings)
        .await
        .expect("with a token it listens anywhere");
    server.wait_started().await.unwrap();
    server.shutdown().await.unwrap();
}

/// Opens a raw connection and sends `bytes`, leaving it open.
async fn send_raw(server: &TestServer, bytes: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(bytes.as_bytes()).await.unwrap();
    stream
}

/// Reads until the server closes the connection (bounded: fails after `within`).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the server closed the connection in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_concurrency_limit_is_shed_with_503() {
    let server =
        TestServer::start(AppChoice::Ledger, |s| s.limits.concurrent_requests_max = 1).await;
    // A request whose body never finishes holds the only slot.
    let head = format!("POST {DEPOSIT} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"acc");
    let holder = send_raw(&server, &head).await;
    let mut shed = None;
    // Bounded: the holder's headers reach the server within a few tries.
    for _ in 0..1000 {
        let a = server.get("/v1/services").await;
        if a.status == 503 {
            shed = Some(a);
            break;
        }
        tokio::task::yield_now().await;
    }
    let shed = shed.expect("a second request is shed while the slot is held");
    assert_eq!(shed.code(), "overloaded");
    drop(holder);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_and_body_timeouts() {
    let server = TestServer::start(AppChoice::Ledger, |s| {
        s.limits.header_read_timeout = Duration::from_millis(200);
        s.limits.body_read_timeout = Duration::from_millis(200);
    })
    .await;
    // Headers that never end: the connection is closed (the defaults would wait 10 s).
    let mut stream = send_raw(&server, "GET /v1/services HTTP/1.1\r\nHost: x\r\n").await;
    read_until_closed(&mut stream, Duration::from_secs(5)).await;
    // A body that never ends: answered 408 with a JSON error.
    let head = format!(
        "POST {DEPOSIT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{{"
    );
    let mut stream = send_raw(&server, &head).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
    // The server still serves everyone else.
    let a = server
        .post(
            DEPOSIT,
            &json!({"account": 1, "entry": 1, "amount": 1}).to_string(),
        )
        .await;
    assert_eq!(a.body["committed"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_answered_503() {
    let server = TestServer::start(AppChoice::Ledger, |s| {
        s.limits.request_timeout = Duration::from_millis(200);
        s.limits.body_read_timeout = Duration::from_secs(5);
    })
    .await;
    let head = format!(
        "POST {DEPOSIT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{{"
    );
    let mut stream = send_raw(&server, &head).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    server.stop().await;
}
