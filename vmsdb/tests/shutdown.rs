//! The binary as an operator runs it: SIGTERM under load answers every request it accepted,
//! exits 0, and a restart on the same data directory finds every request that was answered
//! committed. Also: a non-loopback address without a token makes it exit non-zero.

use crate::common::{ServerProcess, wait_ready};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

const CLIENTS: u64 = 8;
/// SIGTERM goes out once this many submissions were answered.
const ANSWERS_BEFORE_SIGTERM: usize = 200;

/// What one client saw: accounts whose deposit was answered committed, any other answer, and
/// how many requests sent before SIGTERM were answered after it (in flight at the signal).
#[derive(Default)]
struct Seen {
    committed: Vec<u64>,
    unexpected: Vec<String>,
    answered_across_sigterm: usize,
}

/// Shared by the clients and the test.
struct Load {
    answered: AtomicUsize,
    enough: Notify,
    terminated: AtomicBool,
}

/// Deposits 1 into a fresh account per request until the server stops answering.
async fn client(url: String, first_account: u64, load: Arc<Load>) -> Seen {
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    for account in first_account.. {
        let body = json!({"account": account, "entry": account, "amount": 1});
        let sent_before_sigterm = !load.terminated.load(Ordering::SeqCst);
        let sent = http
            .post(format!("{url}/v1/services/accounts/events/Deposit"))
            .header("Idempotency-Key", format!("{first_account}/{account}"))
            .json(&body)
            .send()
            .await;
        // A refused or closed connection: the server stopped accepting.
        let Ok(response) = sent else { break };
        let status = response.status().as_u16();
        let Ok(answer) = response.json::<Value>().await else {
            break;
        };
        seen.answered_across_sigterm +=
            usize::from(sent_before_sigterm && load.terminated.load(Ordering::SeqCst));
        if status == 200 && answer["committed"] == true {
            seen.committed.push(account);
        } else {
            seen.unexpected.push(format!("{status} {answer}"));
        }
        if load.answered.fetch_add(1, Ordering::Relaxed) + 1 == ANSWERS_BEFORE_SIGTERM {
            load.enough.notify_one();
        }
    }
    seen
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the restarted server answers");
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_that_was_answered() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--app", "ledger", "--epoch-duration", "5ms"];
    let server = ServerProcess::start(dir.path(), &args);
    let url = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    wait_ready(&http, &url).await;
    let load = Arc::new(Load {
        answered: AtomicUsize::new(0),
        enough: Notify::new(),
        terminated: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(url.clone(), (c + 1) * 1_000_000, load.clone())))
        .collect();
    load.enough.notified().await;
    load.terminated.store(true, Ordering::SeqCst);
    server.terminate();
    let (mut committed, mut answered_across_sigterm) = (Vec::new(), 0);
    for c in clients {
        let seen = c.await.unwrap();
        assert!(
            seen.unexpected.is_empty(),
            "answers other than committed: {:?}",
            seen.unexpected
        );
        committed.extend(seen.committed);
        answered_across_sigterm += seen.answered_across_sigterm;
    }
    // With every client waiting on an epoch most of the time, some requests are in flight
    // when the signal lands: a graceful shutdown answers them instead of dropping them.
    assert!(
        answered_across_sigterm > 0,
        "no request in flight at SIGTERM was answered"
    );
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success(), "vmsdb exited with {status} after SIGTERM");
    assert!(committed.len() >= ANSWERS_BEFORE_SIGTERM);

    let server = ServerProcess::start(dir.path(), &args);
    let url = format!("http://{}", server.addr);
    wait_ready(&http, &url).await;
    let audit = post(&http, &format!("{url}/v1/queries/audit"), json!({})).await;
    let n_accounts = audit["n_accounts"].as_u64().unwrap() as usize;
    assert!(
        n_accounts >= committed.len(),
        "{audit} but {} were answered committed",
        committed.len()
    );
    for account in &committed {
        let balance = post(
            &http,
            &format!("{url}/v1/queries/balance"),
            json!({"account": account, "entry": account}),
        )
        .await;
        assert_eq!(
            balance,
            json!({"account": 1, "entry": 1}),
            "account {account} was answered committed"
        );
    }
    server.terminate();
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn without_a_token_a_non_loopback_address_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vmsdb"))
        .args([
            "serve",
            "--app",
            "ledger",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("VMSDB_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_option_and_where_it_comes_from() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vmsdb"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--app",
        "--data-dir",
        "--listen",
        "VMSDB_LISTEN",
        "--token-file",
        "VMSDB_TOKEN",
        "--config",
        "--body-bytes-max",
        "--request-timeout",
        "else from its environment variable",
    ] {
        assert!(
            help.contains(needle),
            "serve --help does not mention {needle}:\n{help}"
        );
    }
}
