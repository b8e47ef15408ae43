//! `vmsdb why` and `vmsdb replay` on a ledger data directory written with history retained:
//! the account's versions with their writers and readers, a refused transfer's steps and
//! abort reason, JSON output, and a clear error for a directory whose log was truncated.

use services::ledger::{Ledger, LedgerConfig, Transfer};

use crate::common::vmsdb;
use txn::{Outcome, Retention, Runtime, RuntimeConfig};

/// Writes a ledger store: two deposits, a transfer that commits and one refused for lack of
/// funds. Returns the refused transfer's outcome.
async fn write_store(
    dir: &std::path::Path,
    retention: Option<Retention>,
) -> Outcome<services::ledger::LedgerOutput> {
    let ledger = Ledger::new(LedgerConfig::default()).expect("ledger builds");
    let config = RuntimeConfig {
        history_retention: retention,
        checkpoint_every_epochs: 1,
        ..RuntimeConfig::durable(dir).expect("store opens")
    };
    let rt = Runtime::start(ledger.app().clone(), config)
        .await
        .expect("runtime starts");
    let client = rt.client();
    for i in [1, 2] {
        let outcome = client
            .submit_request(ledger.initial_deposit(i, 100))
            .await
            .expect("deposit");
        assert!(outcome.committed());
    }
    let transfer = |amount| Transfer {
        src_account: 1,
        src_entry: 1,
        dst_account: 2,
        dst_entry: 2,
        amount,
    };
    let ok = client
        .submit_request(ledger.transfer(transfer(30)))
        .await
        .expect("transfer");
    assert!(ok.committed());
    let refused = client
        .submit_request(ledger.transfer(transfer(500)))
        .await
        .expect("transfer");
    assert!(!refused.committed());
    rt.shutdown().await;
    refused
}

/// `vmsdb why` on account 1 of the ledger in `data_dir`, with `extra` flags.
fn why_account_1(data_dir: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["why", "--app", "ledger", "--data-dir", data_dir];
    args.extend(["--table", "accounts", "--key", "1"]);
    args.extend(extra);
    vmsdb(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_and_replay_print_a_rows_history_and_a_refused_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let refused = write_store(dir.path(), Some(Retention::Everything)).await;
    let data_dir = dir.path().to_str().unwrap();

    let (ok, out, err) = why_account_1(data_dir, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("accounts.accounts key 1: 2 committed change(s)"),
        "{out}"
    );
    assert!(out.contains(r#"put {"balance":100,"id":1}"#), "{out}");
    assert!(out.contains(r#"put {"balance":70,"id":1}"#), "{out}");
    assert!(
        out.contains("read by"),
        "the refused transfer is not a reader, the committed one is: {out}"
    );
    assert_eq!(
        out.matches("read by").count(),
        2,
        "the deposit's own read and the transfer's: {out}"
    );

    let (ok, out, err) = why_account_1(data_dir, &["--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["versions"][1]["change"]["value"]["balance"], 70);

    let tid = refused.tid.to_string();
    let (ok, out, err) = vmsdb(&[
        "replay",
        "--app",
        "ledger",
        "--data-dir",
        data_dir,
        "--tid",
        &tid,
    ]);
    assert!(ok, "{err}");
    let reason = refused.result.clone().expect_err("refused");
    assert!(out.contains("aborted in pass"), "{out}");
    assert!(
        out.contains(&reason.to_string()),
        "the abort reason as it ran: {out}"
    );
    assert!(
        out.contains(r#"read accounts.accounts[1] = {"balance":70,"id":1}"#),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_refuses_a_store_whose_log_was_truncated() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), None).await;
    let data_dir = dir.path().to_str().unwrap();
    let (ok, _, err) = why_account_1(data_dir, &[]);
    assert!(!ok);
    assert!(err.contains("history is not retained"), "{err}");
}

#[test]
fn serve_retain_history_reaches_the_settings() {
    use clap::Parser;
    let settings = |extra: &[&str]| {
        let mut args = vec!["vmsdb", "serve", "--app", "ledger", "--data-dir", "/tmp/x"];
        args.extend(extra);
        let vmsdb::Command::Serve(serve) =
            vmsdb::Cli::try_parse_from(args).expect("parses").command
        else {
            panic!("a serve command");
        };
        vmsdb::Settings::resolve(serve, None).expect("resolves")
    };
    assert!(settings(&["--retain-history"]).retain_history);
    assert!(!settings(&[]).retain_history);
}
