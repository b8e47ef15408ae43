//! Three `vmsdb node` processes on loopback serving the transfer ledger from one private
//! PostgreSQL store (started by the test, always stopped): the lease holder is the sequencer,
//! the two others forward to it. Clients send transfers over HTTP to every node in turn, with
//! ids they choose, and retry anything not acknowledged with the same id on the next node.
//! Run 1 SIGKILLs a node that is not the sequencer mid-run, run 2 the sequencer. Checked: every
//! acknowledged transfer is in the final balances exactly once (recomputed from the acks),
//! resubmitting any id on another node gives its original outcome, money is conserved in every
//! audit taken during the run and through every node after it (no partial transaction
//! visible), and the killed node restarts, rejoins (membership shows it again) and serves
//! requests. The failover time (kill → first commit of a request sent after the kill) is
//! printed. The `spread_partitions_*` runs do the same with the partitions spread over the
//! nodes (`--spread-partitions`): the sequencer re-places them after the kill and again when
//! the killed node rejoins; the audits (a named query, which reaches every node's partitions)
//! run there too, and the balances are checked at the end from the store. A sequencer whose
//! runtime failed and was replaced answers `/ready` 200 again.
//!
//! Without the PostgreSQL server binaries these tests FAIL in CI (`CI` set) and elsewhere
//! print a loud skip line and return.

use crate::common;

use crate::common::node::WAIT;
use crate::common::serving::{DEADLINE, NAMES, Progress, ServingCluster};
use crate::common::{next_random, seed};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use txn::storage::{PostgresStorage, Storage, StorageError};
use txn_storage::postgres_instance::{self, PgInstance};

const LEASE_TTL: &str = "2s";
const ACCOUNTS: u64 = 30;
const INITIAL_BALANCE: i64 = 1_000;
const CLIENTS: u64 = 3;

/// What every ledger node is started with after its name and addresses.
fn ledger_args(store: &str) -> [&str; 10] {
    [
        "--app",
        "ledger",
        "--partitions",
        "8",
        "--store",
        store,
        "--lease-ttl",
        LEASE_TTL,
        "--epoch-duration",
        "2ms",
    ]
}

/// Deposits every account's initial balance through the nodes in turn, and checks that an id
/// reused for another event is refused.
async fn open_accounts(http: &reqwest::Client, urls: &[String]) {
    for account in 0..ACCOUNTS {
        let body = json!({"account": account, "entry": account, "amount": INITIAL_BALANCE});
        let url = &urls[account as usize % 3];
        let id = format!("9999/{account}");
        let answer = submit(http, url, "Deposit", &id, &body).await;
        let (status, outcome) = answer.expect("a node answers");
        assert!(
            status == 200 && outcome["committed"] == true,
            "deposit {account}: {outcome}"
        );
    }
    // An id reused for another event is refused by the sequencer, through a forwarder too.
    let other = json!({"account": 1, "entry": 1, "amount": 5});
    let answer = submit(http, &urls[2], "Deposit", "9999/0", &other).await;
    let (status, error) = answer.expect("a forwarder answers");
    assert_eq!(
        (status, &error["code"]),
        (409, &json!("request_id_reused")),
        "{error}"
    );
}

/// POSTs an accounts event with `Idempotency-Key: id`; status and JSON answer, or `None` when
/// the node did not answer (refused, reset, killed, timed out).
async fn submit(
    http: &reqwest::Client,
    url: &str,
    kind: &str,
    id: &str,
    body: &Value,
) -> Option<(u16, Value)> {
    let path = format!("{url}/v1/services/accounts/events/{kind}");
    common::post_json(http, &path, Some(id), body).await
}

/// POSTs query `name`; status and JSON answer, or `None` without an answer.
async fn query(http: &reqwest::Client, url: &str, name: &str, body: Value) -> Option<(u16, Value)> {
    common::post_json(http, &format!("{url}/v1/queries/{name}"), None, &body).await
}

/// One acknowledged transfer: its id, body and outcome.
struct Acked {
    id: String,
    body: Value,
    outcome: Value,
}

/// Sends random transfers under ids `client/seq`, each to the next node in turn, retrying one
/// without an acknowledgement with the same id on the next node, until told to stop.
async fn transfer_client(shared: Arc<Progress>, client: u64, mut random: u64) -> Vec<Acked> {
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
        let src = next_random(&mut random) % ACCOUNTS;
        let dst = (src + 1 + next_random(&mut random) % (ACCOUNTS - 1)) % ACCOUNTS;
        let amount = 1 + next_random(&mut random) % 200;
        let body = json!({"src_account": src, "src_entry": src, "dst_account": dst,
                          "dst_entry": dst, "amount": amount});
        let id = format!("{client}/{seq}");
        let sent_at = Instant::now();
        let (outcome, answered_by) = shared
            .submit_until_acked(&mut node, &format!("transfer {id}"), |url| {
                let (http, id, body) = (&http, &id, &body);
                async move { submit(http, &url, "Transfer", id, body).await }
            })
            .await;
        shared.note_ack(sent_at, answered_by, &outcome);
        acked.push(Acked { id, body, outcome });
        node = (node + 1) % 3;
    }
    unreachable!("the loop ends when the test says stop")
}

/// An audit through `url`, if it answers, must show every unit of money and no negative
/// balance; whether it answered.
async fn audit_conserves(http: &reqwest::Client, url: &str) -> bool {
    let Some((200, audit)) = query(http, url, "audit", json!({})).await else {
        return false;
    };
    assert_eq!(
        audit["total_balance"],
        json!(INITIAL_BALANCE * ACCOUNTS as i64),
        "an audit through {url} saw a partial transfer: {audit}"
    );
    assert_eq!(audit["n_negative_balances"], 0, "{audit}");
    true
}

/// A private PostgreSQL server for `test` (`None`: skipped outside CI).
async fn postgres(test: &'static str) -> Option<PgInstance> {
    tokio::task::spawn_blocking(move || postgres_instance::for_test(test, 60))
        .await
        .unwrap()
}

/// One run: the cluster under load, node `victim` SIGKILLed and restarted, then every check.
async fn run(test: &'static str, victim: usize, spread: bool) {
    let Some(pg) = postgres(test).await else {
        return;
    };
    let seed = seed(test);
    let http = reqwest::Client::new();
    let store = pg.url();
    let mut args = ledger_args(&store).to_vec();
    if spread {
        args.push("--spread-partitions");
    }
    let mut cluster = ServingCluster::start(&http, &args).await;
    open_accounts(&http, &cluster.urls).await;
    let shared = Progress::new(cluster.urls.clone());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(transfer_client(shared.clone(), c, seed ^ c)))
        .collect();
    // The audit is a named query: with the partitions spread it reaches every node's too.
    let every = Duration::from_millis(50);
    let auditing = tokio::spawn(shared.clone().audit_rounds(every, |http, url| async move {
        audit_conserves(&http, &url).await
    }));

    let failover = cluster.kill_and_rejoin(&http, &shared, victim).await;
    let acked = shared.stop_clients(clients).await;
    let audits = auditing.await.unwrap();
    eprintln!(
        "{test}: {} killed; kill -> first commit of a request sent after it {:.2} s (lease ttl \
         {LEASE_TTL}); {} transfers acknowledged after {} retries ({} of them after \
         outcome_unknown), {} audits checked during the run",
        NAMES[victim],
        failover.as_secs_f64(),
        acked.len(),
        shared.retries.load(Ordering::Relaxed),
        shared.outcome_unknown.load(Ordering::Relaxed),
        audits,
    );
    assert!(audits > 0, "no audit was answered during the run");
    cluster.assert_all_running();
    let expected = resubmit_acked(&http, &cluster.urls, &acked).await;
    for url in &cluster.urls {
        let audited = audit_conserves(&http, url).await;
        assert!(audited, "no final audit through {url}");
    }
    if spread {
        drop(cluster);
        check_balances_in_process(&store, &expected).await;
    } else {
        check_balances(&http, &cluster.urls, &expected).await;
        drop(cluster);
    }
    drop(pg);
}

/// Every acknowledged transfer resubmitted by id on another node gets its original outcome;
/// returns the balances the committed transfers give.
async fn resubmit_acked(http: &reqwest::Client, urls: &[String], acked: &[Acked]) -> Vec<i64> {
    let mut balance = vec![INITIAL_BALANCE; ACCOUNTS as usize];
    for (i, a) in acked.iter().enumerate() {
        let url = &urls[i % 3];
        let (status, outcome) = submit(http, url, "Transfer", &a.id, &a.body)
            .await
            .expect("a node answers");
        assert_eq!(status, 200, "resubmitting {}: {outcome}", a.id);
        assert_eq!(
            outcome, a.outcome,
            "{} was acknowledged with another outcome",
            a.id
        );
        if a.outcome["committed"] == true {
            let amount = a.body["amount"].as_i64().unwrap();
            balance[a.body["src_account"].as_u64().unwrap() as usize] -= amount;
            balance[a.body["dst_account"].as_u64().unwrap() as usize] += amount;
        }
    }
    balance
}

/// The balances are exactly the initial ones plus the committed transfers.
async fn check_balances(http: &reqwest::Client, urls: &[String], balance: &[i64]) {
    for (account, expected) in balance.iter().enumerate() {
        let body = json!({"account": account, "entry": account});
        let (status, found) = query(http, &urls[account % 3], "balance", body)
            .await
            .expect("a node answers");
        assert_eq!(status, 200, "{found}");
        assert_eq!(
            found,
            json!({"account": expected, "entry": expected}),
            "account {account}: every acknowledged transfer applied exactly once"
        );
    }
}

/// The balances, read once every node stopped by a runtime this test recovers from the store
/// (at one snapshot), are exactly the initial ones plus the committed transfers.
async fn check_balances_in_process(store: &str, balance: &[i64]) {
    use vmsdb::engine::{Engine, Served};
    let mut settings = vmsdb::Settings::new(vmsdb::AppChoice::Ledger, std::path::PathBuf::new());
    settings.store_url = Some(store.to_string());
    settings.partitions = Some(8);
    settings.wait_for_lease = Some(DEADLINE);
    let options = vmsdb::apps::AppOptions {
        partitions: Some(8),
        ycsb_keys: 0,
    };
    let served = Served::<vmsdb::apps::LedgerServed>::open_typed(options, &settings)
        .await
        .expect("the store recovers in this process");
    for (account, expected) in balance.iter().enumerate() {
        let body = json!({"account": account, "entry": account}).to_string();
        let running = served.query("balance", body.as_bytes()).expect("a query");
        let found = running.await.expect("the balance");
        assert_eq!(
            found,
            json!({"account": expected, "entry": expected}),
            "account {account}: every acknowledged transfer applied exactly once"
        );
    }
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_the_loss_of_a_forwarding_node() {
    run(
        "three_nodes_survive_the_loss_of_a_forwarding_node",
        1,
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_the_loss_of_the_sequencer() {
    run("three_nodes_survive_the_loss_of_the_sequencer", 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_partitions_survive_the_loss_of_a_forwarding_node() {
    run(
        "spread_partitions_survive_the_loss_of_a_forwarding_node",
        1,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_partitions_survive_the_loss_of_the_sequencer() {
    run(
        "spread_partitions_survive_the_loss_of_the_sequencer",
        0,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_whose_lease_is_taken_over_stops() {
    let test = "a_sequencer_whose_lease_is_taken_over_stops";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let store = pg.url();
    let mut cluster = ServingCluster::new(&ledger_args(&store));
    cluster.spawn(0);
    cluster.wait_line(0, "sequencer n1 term 1");
    // Another holder ends the node's lease under the node's own holder name (which the store
    // names), then takes it with a new term.
    let url = pg.url();
    tokio::task::spawn_blocking(move || {
        let thief = PostgresStorage::open(&url).unwrap();
        let holder = match thief.acquire_lease("thief", Duration::from_secs(600)) {
            Err(StorageError::LeaseHeld { holder, .. }) => holder,
            other => panic!("the node does not hold the lease: {other:?}"),
        };
        assert!(holder.starts_with("n1:"), "{holder}");
        thief.acquire_lease(&holder, Duration::ZERO).unwrap();
        thief
            .acquire_lease("thief", Duration::from_secs(600))
            .unwrap();
    })
    .await
    .unwrap();
    let node = cluster.node(0);
    let (status, stderr) = tokio::task::block_in_place(|| node.wait_exit());
    assert!(!status.success(), "the deposed node kept running");
    assert!(stderr.contains("lost the store's lease"), "{stderr}");
}

/// Whether an error answer says the store failed under the request (`storage_failed`, or an
/// `outcome_unknown` whose cause is the store): what makes a node's `/ready` say
/// `storage_failed`.
fn store_failed(error: &Value) -> bool {
    let message = error["message"].as_str().unwrap_or_default();
    error["code"] == "storage_failed"
        || (error["code"] == "outcome_unknown" && message.contains("(storage failed"))
}

/// Sends transfers to the first node only, under ids `client/seq`, until told to stop, noting
/// each commit in `shared` and counting in `storage_failed` the answers that said the store
/// failed under the request (the node's runtime failed under it).
async fn pinned_client(shared: Arc<Progress>, client: u64, storage_failed: Arc<AtomicUsize>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut random = client;
    for seq in 0.. {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let src = next_random(&mut random) % ACCOUNTS;
        let dst = (src + 1 + next_random(&mut random) % (ACCOUNTS - 1)) % ACCOUNTS;
        let body = json!({"src_account": src, "src_entry": src, "dst_account": dst,
                          "dst_entry": dst, "amount": 1});
        let id = format!("{client}/{seq}");
        let sent_at = Instant::now();
        match submit(&http, &shared.urls[0], "Transfer", &id, &body).await {
            Some((200, outcome)) => shared.note_ack(sent_at, 0, &outcome),
            Some((_, error)) if store_failed(&error) => {
                storage_failed.fetch_add(1, Ordering::AcqRel);
            }
            // Between runtimes the node has no sequencer (`no_sequencer`): pace the retries.
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// With the partitions spread, a node hosting some that stops answering fails the sequencer's
/// runtime: a phase batch gets no answer within the phase timeout, and requests sent to the
/// sequencer get `storage_failed`. The node is frozen (SIGSTOP) under a failure timeout longer
/// than the phase timeout, so its sessions stay open and it is not declared dead first: the
/// runtime fails before the membership changes (a SIGKILL would race the runtime's failure
/// against the session's close, and a runtime replaced for the placement alone never fails).
/// Once the frozen node is killed, the sequencer replaces its runtime by one placed over the
/// survivors. Its `/ready` must then answer 200 again: the store failure belonged to the
/// replaced runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_whose_runtime_was_replaced_is_ready_again() {
    let test = "a_sequencer_whose_runtime_was_replaced_is_ready_again";
    let Some(pg) = postgres(test).await else {
        return;
    };
    let http = reqwest::Client::new();
    let store = pg.url();
    let mut args = ledger_args(&store).to_vec();
    args.extend(["--spread-partitions", "--failure-timeout", "60s"]);
    let mut cluster = ServingCluster::start(&http, &args).await;
    open_accounts(&http, &cluster.urls).await;
    let shared = Progress::new(cluster.urls.clone());
    let storage_failed = Arc::new(AtomicUsize::new(0));
    let pinned = tokio::spawn(pinned_client(shared.clone(), 7, storage_failed.clone()));
    let acks = &shared.acks;
    cluster.wait_count(&shared, acks, 20, "acks by n1").await;
    cluster.node(1).signal("-STOP");
    // The phase timeout is 5 s; the wait covers it three times over.
    let frozen_at = Instant::now();
    while storage_failed.load(Ordering::Acquire) == 0 {
        assert!(
            frozen_at.elapsed() < 3 * WAIT,
            "n2 was frozen {:?} ago and n1 never answered storage_failed; the nodes:\n{}",
            frozen_at.elapsed(),
            cluster.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{test}: n1 answered storage_failed {:?} after n2 froze",
        frozen_at.elapsed()
    );
    cluster.kill(1);
    cluster.wait_spread(0, &["n1", "n3"]);
    common::wait_ready(&http, &cluster.urls[0]).await;
    let acks_before = acks.load(Ordering::Acquire);
    cluster
        .wait_count(
            &shared,
            acks,
            acks_before + 20,
            "acks by n1 after its runtime was replaced",
        )
        .await;
    shared.stop.store(true, Ordering::Release);
    pinned.await.unwrap();
    eprintln!(
        "{test}: n1 answered storage_failed {} times",
        storage_failed.load(Ordering::Acquire)
    );
    drop(cluster);
    drop(pg);
}
