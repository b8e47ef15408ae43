//! Active/standby failover on a shared PostgreSQL store (a private server, started by the
//! test): two `vmsdb serve --app ledger --store postgres://...` processes; the second refuses
//! to start, or waits, while the first holds the store's lease; the first is SIGKILLed under a
//! load of transfers whose ids the clients choose; the standby takes the lease once it runs
//! out, recovers from the shared log and checkpoints, and serves: every acknowledged transfer
//! keeps its outcome, every unacknowledged one resubmitted by id runs at most once, and the
//! balances are exactly those of the transfers that committed. Also: a server whose lease is
//! taken over is fenced on its next append and writes nothing more.
//!
//! Without the PostgreSQL server binaries these tests FAIL in CI (`CI` set) and elsewhere
//! print a loud skip line and return.

use crate::common;

use crate::common::{ServerProcess, next_random, seed, wait_ready};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use txn::storage::{PostgresStorage, Storage};
use txn_storage::postgres_instance::{self, PgInstance};

/// The lease's length in these tests: the standby takes over at most this long after the kill.
const LEASE_TTL: &str = "2s";
const CLIENTS: u64 = 4;
const ACCOUNTS: u64 = 40;
const INITIAL_BALANCE: i64 = 1_000;
/// The active server is killed once this many transfers were answered.
const ANSWERS_BEFORE_KILL: usize = 300;

/// A private PostgreSQL server, started off the test's tokio workers.
async fn postgres(test: &'static str) -> Option<PgInstance> {
    tokio::task::spawn_blocking(move || postgres_instance::for_test(test, 40))
        .await
        .unwrap()
}

/// `vmsdb serve --app ledger --store URL` holding the lease as `holder`, plus `args`.
fn serve(url: &str, holder: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--app", "ledger", "--epoch-duration", "2ms"];
    all.extend(["--lease-ttl", LEASE_TTL, "--lease-holder", holder]);
    all.extend(args);
    ServerProcess::start_on(&["--store", url], &all)
}

/// POSTs `body` to `path` with `Idempotency-Key: id`; the status and JSON answer, or `None`
/// when the server did not answer (refused, reset, killed).
async fn submit(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    id: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    common::post_json(http, &format!("{url}{path}"), Some(id), body).await
}

async fn query(http: &reqwest::Client, url: &str, name: &str, body: Value) -> Value {
    let response = http
        .post(format!("{url}/v1/queries/{name}"))
        .json(&body)
        .send()
        .await
        .expect("the standby answers queries");
    response.json().await.expect("JSON")
}

/// `GET /v1/stats`.
async fn stats(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(format!("{url}/v1/stats")).send().await;
    response.expect("stats answer").json().await.expect("JSON")
}

/// One transfer a client sent: its id, body, and the outcome if one was acknowledged.
struct Sent {
    id: String,
    body: Value,
    acknowledged: Option<Value>,
}

/// Sends random transfers under ids `client/seq` until the server stops answering.
async fn transfer_client(
    url: String,
    client: u64,
    mut random: u64,
    answered: Arc<(AtomicUsize, Notify)>,
) -> Vec<Sent> {
    let http = reqwest::Client::new();
    let mut sent = Vec::new();
    for seq in 0.. {
        let src = next_random(&mut random) % ACCOUNTS;
        let dst = (src + 1 + next_random(&mut random) % (ACCOUNTS - 1)) % ACCOUNTS;
        let amount = 1 + next_random(&mut random) % 200;
        let body = json!({"src_account": src, "src_entry": src, "dst_account": dst,
                          "dst_entry": dst, "amount": amount});
        let id = format!("{client}/{seq}");
        let answer = submit(
            &http,
            &url,
            "/v1/services/accounts/events/Transfer",
            &id,
            &body,
        )
        .await;
        let acknowledged = match answer {
            Some((200, outcome)) => Some(outcome),
            _ => None,
        };
        let stop = acknowledged.is_none();
        sent.push(Sent {
            id,
            body,
            acknowledged,
        });
        if stop {
            return sent;
        }
        if answered.0.fetch_add(1, Ordering::Relaxed) + 1 == ANSWERS_BEFORE_KILL {
            answered.1.notify_one();
        }
    }
    unreachable!("the loop ends when the server stops answering")
}

/// Opens every account with its initial balance (ids `9999/<account>`).
async fn open_accounts(http: &reqwest::Client, url: &str) {
    for account in 0..ACCOUNTS {
        let body = json!({"account": account, "entry": account, "amount": INITIAL_BALANCE});
        let id = format!("9999/{account}");
        let answer = submit(
            http,
            url,
            "/v1/services/accounts/events/Deposit",
            &id,
            &body,
        )
        .await;
        let (status, outcome) = answer.expect("the active server answers");
        assert!(
            status == 200 && outcome["committed"] == true,
            "deposit {account}: {outcome}"
        );
    }
}

/// An active server holding the lease as `holder`, ready, with every account opened; and its
/// base URL.
async fn serve_accounts(
    http: &reqwest::Client,
    url: &str,
    holder: &str,
) -> (ServerProcess, String) {
    let server = serve(url, holder, &[]);
    let server_url = format!("http://{}", server.addr);
    wait_ready(http, &server_url).await;
    open_accounts(http, &server_url).await;
    (server, server_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_after_the_active_server_is_killed() {
    let test = "the_standby_takes_over_after_the_active_server_is_killed";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let seed = seed(test);
    let url = pg.url();
    let http = reqwest::Client::new();
    let (mut active, active_url) = serve_accounts(&http, &url, "active").await;

    // While the active server holds the lease, another one does not start...
    let refused = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_vmsdb"))
                .args([
                    "serve",
                    "--app",
                    "ledger",
                    "--listen",
                    "127.0.0.1:0",
                    "--store",
                    &url,
                ])
                .args(["--lease-holder", "refused"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a second server started: {stderr}"
    );
    assert!(stderr.contains("lease is held by \"active\""), "{stderr}");
    // ...and a standby waits, not ready, for the lease.
    let standby = serve(&url, "standby", &["--wait-for-lease", "120s"]);
    let standby_url = format!("http://{}", standby.addr);
    let ready = http
        .get(format!("{standby_url}/ready"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        ready.status().as_u16(),
        200,
        "the standby is ready while the lease runs"
    );

    let answered = Arc::new((AtomicUsize::new(0), Notify::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(transfer_client(
                active_url.clone(),
                c,
                seed ^ c,
                answered.clone(),
            ))
        })
        .collect();
    answered.1.notified().await;
    active.child.kill().expect("SIGKILL the active server");
    let killed_at = Instant::now();
    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await.unwrap());
    }
    wait_ready(&http, &standby_url).await;
    let takeover = killed_at.elapsed();
    let stats = stats(&http, &standby_url).await;
    let recovery_s = stats["recovery"]["seconds"].as_f64().unwrap();
    eprintln!(
        "{test}: kill -> standby serving {:.2} s: waiting for the lease {:.2} s (ttl {LEASE_TTL}), \
         recovery {recovery_s:.3} s; {} transfers sent, {} acknowledged; store: {}; lease: {}",
        takeover.as_secs_f64(),
        takeover.as_secs_f64() - recovery_s,
        sent.len(),
        sent.iter().filter(|s| s.acknowledged.is_some()).count(),
        stats["store"],
        stats["lease"],
    );
    assert_eq!(stats["lease"], "holding the lease, term 2");

    check_after_takeover(&http, &standby_url, &sent).await;
    drop(standby);
}

/// Resubmits every transfer by id to the standby: an acknowledged one gets its original
/// outcome; then the balances are exactly what the committed transfers made them.
async fn check_after_takeover(http: &reqwest::Client, url: &str, sent: &[Sent]) {
    let path = "/v1/services/accounts/events/Transfer";
    let mut balance = vec![INITIAL_BALANCE; ACCOUNTS as usize];
    for s in sent {
        let (status, outcome) = submit(http, url, path, &s.id, &s.body)
            .await
            .expect("the standby answers");
        assert_eq!(status, 200, "resubmitting {}: {outcome}", s.id);
        if let Some(acknowledged) = &s.acknowledged {
            assert_eq!(
                &outcome, acknowledged,
                "{} was acknowledged with another outcome",
                s.id
            );
        }
        if outcome["committed"] == true {
            let amount = s.body["amount"].as_i64().unwrap();
            balance[s.body["src_account"].as_u64().unwrap() as usize] -= amount;
            balance[s.body["dst_account"].as_u64().unwrap() as usize] += amount;
        }
    }
    for (account, expected) in balance.iter().enumerate() {
        let found = query(
            http,
            url,
            "balance",
            json!({"account": account, "entry": account}),
        )
        .await;
        assert_eq!(
            found,
            json!({"account": expected, "entry": expected}),
            "account {account}: every committed transfer applied exactly once"
        );
    }
    let audit = query(http, url, "audit", json!({})).await;
    assert_eq!(
        audit["total_balance"],
        json!(INITIAL_BALANCE * ACCOUNTS as i64),
        "{audit}"
    );
    assert_eq!(audit["n_negative_balances"], 0, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_lease_was_taken_over_is_fenced_and_writes_nothing() {
    let test = "a_server_whose_lease_was_taken_over_is_fenced_and_writes_nothing";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let url = pg.url();
    let http = reqwest::Client::new();
    let (server, server_url) = serve_accounts(&http, &url, "deposed").await;

    // Another handle steals the lease: it ends the running lease under the holder's own name,
    // then takes it with a new term.
    let thief = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let thief = PostgresStorage::open(&url).unwrap();
            thief.acquire_lease("deposed", Duration::ZERO).unwrap();
            let term = thief
                .acquire_lease("thief", Duration::from_secs(600))
                .unwrap();
            (thief, term)
        }
    });
    let (thief, term) = thief.await.unwrap();
    let thief = Arc::new(thief);
    let last_before = {
        let thief = thief.clone();
        tokio::task::spawn_blocking(move || thief.last_epoch().unwrap())
            .await
            .unwrap()
    };

    let body = json!({"account": 0, "entry": 0, "amount": 1});
    let answer = submit(
        &http,
        &server_url,
        "/v1/services/accounts/events/Deposit",
        "1/1",
        &body,
    )
    .await;
    let (status, error) = answer.expect("the deposed server answers");
    assert_eq!(
        (status, &error["code"]),
        (503, &json!("outcome_unknown")),
        "{error}"
    );
    let stats = stats(&http, &server_url).await;
    assert_eq!(stats["lease"], format!("fenced by term {term}"), "{stats}");
    let answer = submit(
        &http,
        &server_url,
        "/v1/services/accounts/events/Deposit",
        "1/2",
        &body,
    )
    .await;
    assert_ne!(
        answer.map(|(status, _)| status),
        Some(200),
        "a write was accepted after fencing"
    );
    let last_after = tokio::task::spawn_blocking(move || thief.last_epoch().unwrap())
        .await
        .unwrap();
    assert_eq!(
        last_after, last_before,
        "the deposed server logged an epoch after the take-over"
    );
    drop(server);
}
