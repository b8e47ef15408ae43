//! Named queries (`AppBuilder::query`, `Client::query_named`) across nodes: a runtime on node
//! "a" drives epochs over a small transfer ledger whose partitions alternate between "a" and
//! "b" (a `PartitionHost` behind a `LoopbackLink`, every batch and reply encoded).
//!
//! Checked: a registered query over every partition of both nodes sees one consistent snapshot
//! while transfers run (the total balance is never observed broken) and answers exactly as the
//! same log replayed in one process; an unknown name is refused naming it, a name registered
//! twice fails the build, arguments that do not decode fail naming the query and partition;
//! a query that needs a node that stopped answering fails with `NodeFailed` naming it. The
//! transfers print their seed; `TXN_TEST_SEED=<n>` replays them.

use crate::common::{copy_of_log, rng, seed};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use txn::storage::MemoryStorage;
use txn::{
    App, AppBuilder, AppDef, ClusterPlacement, LoopbackLink, NamedQuery, PartitionHost,
    RecoverFrom, Runtime, RuntimeConfig, ServiceRef, Table, TxnError,
};

const NODES: [&str; 2] = ["a", "b"];
const N_PARTITIONS: u32 = 6;
const N_ACCOUNTS: u64 = 32;
const INITIAL_BALANCE: i64 = 100;

struct BankApp;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum BankEvent {
    Deposit { account: u64, amount: i64 },
    Transfer { from: u64, to: u64, amount: i64 },
    Credit { to: u64, amount: i64 },
}

impl App for BankApp {
    type Event = BankEvent;
    type Output = ();
}

/// One partition's part of an audit: the sum of its balances and its number of accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AuditPart {
    total: i64,
    n_accounts: u64,
}

struct Bank {
    app: Arc<AppDef<BankApp>>,
    accounts: ServiceRef,
    audit: NamedQuery<(), AuditPart>,
    balance: NamedQuery<u64, Option<i64>>,
}

fn bank() -> Bank {
    bank_with_audit_named("audit")
}

/// The ledger: transfers debit `from` in its partition and credit `to` in its own (another
/// partition, often on the other node), so a snapshot that saw one half would miss money. Only
/// its audit query is registered as `audit_name` (a node of another build may call it otherwise).
fn bank_with_audit_named(audit_name: &str) -> Bank {
    let mut b = AppBuilder::<BankApp>::new();
    let accounts = b.service("accounts", N_PARTITIONS);
    let balances: Table<u64, i64> = b.table(accounts, "balances");
    b.handler(accounts, move |ctx, ev| {
        match ev {
            BankEvent::Deposit { account, amount } => {
                let balance = ctx.get(balances, account)?.unwrap_or(0);
                ctx.put(balances, *account, balance + amount)?;
            }
            BankEvent::Transfer { from, to, amount } => {
                let balance = ctx.get(balances, from)?.unwrap_or(0);
                if balance < *amount {
                    return Err(ctx.abort(format!("account {from} holds {balance}")));
                }
                ctx.put(balances, *from, balance - amount)?;
                let credit = BankEvent::Credit {
                    to: *to,
                    amount: *amount,
                };
                ctx.emit_raw(accounts, to, credit);
            }
            BankEvent::Credit { to, amount } => {
                let balance = ctx.get(balances, to)?.unwrap_or(0);
                ctx.put(balances, *to, balance + amount)?;
            }
        }
        Ok(())
    });
    let audit = b.query(audit_name, move |view, _: &()| AuditPart {
        total: view.iter(balances).map(|(_, v)| *v).sum(),
        n_accounts: view.len(balances) as u64,
    });
    let balance = b.query("balance", move |view, account: &u64| {
        view.get(balances, account).copied()
    });
    Bank {
        app: b.build().expect("a valid application"),
        accounts,
        audit,
        balance,
    }
}

/// Global partition `gp` lives on node `gp % 2`.
fn owners() -> Vec<String> {
    (0..N_PARTITIONS)
        .map(|gp| NODES[gp as usize % NODES.len()].to_string())
        .collect()
}

/// A runtime on "a" over `storage`, with "b"'s partitions on a host behind a loopback link.
async fn start_two(
    bank: &Bank,
    storage: Arc<MemoryStorage>,
    phase_timeout: Duration,
) -> (Runtime<BankApp>, Arc<PartitionHost<BankApp>>, LoopbackLink) {
    start_two_with_host_app(bank, bank.app.clone(), storage, phase_timeout).await
}

/// Like `start_two`, with node "b" running `host_app`.
async fn start_two_with_host_app(
    bank: &Bank,
    host_app: Arc<AppDef<BankApp>>,
    storage: Arc<MemoryStorage>,
    phase_timeout: Duration,
) -> (Runtime<BankApp>, Arc<PartitionHost<BankApp>>, LoopbackLink) {
    let link = LoopbackLink::new();
    let host = Arc::new(PartitionHost::start(host_app, "b", &owners()).unwrap());
    let serving = host.clone();
    link.add_node("b", move |bytes| {
        let host = serving.clone();
        async move { host.handle(bytes).await }
    });
    let placement = ClusterPlacement {
        phase_timeout,
        ..ClusterPlacement::new("a", owners(), Arc::new(link.clone()))
    };
    let config = RuntimeConfig {
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::with_storage(storage)
    };
    let rt = Runtime::start(bank.app.clone(), config.cluster(placement))
        .await
        .unwrap();
    (rt, host, link)
}

async fn deposit_everywhere(rt: &Runtime<BankApp>, accounts: ServiceRef) {
    let client = rt.client();
    for account in 0..N_ACCOUNTS {
        let deposit = BankEvent::Deposit {
            account,
            amount: INITIAL_BALANCE,
        };
        let outcome = client
            .submit_raw(accounts, &account, deposit)
            .await
            .unwrap();
        assert!(outcome.committed(), "{outcome:?}");
    }
}

/// Random transfers until `stop`; returns how many committed.
async fn transfer_until(
    client: txn::Client<BankApp>,
    accounts: ServiceRef,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> u32 {
    use rand::Rng;
    let mut rng = rng(seed);
    let mut committed = 0;
    while !stop.load(Ordering::Relaxed) {
        let (from, to) = (
            rng.random_range(0..N_ACCOUNTS),
            rng.random_range(0..N_ACCOUNTS),
        );
        let amount = rng.random_range(1..=30);
        let transfer = BankEvent::Transfer { from, to, amount };
        let outcome = client.submit_raw(accounts, &from, transfer).await.unwrap();
        committed += u32::from(outcome.committed());
    }
    committed
}

// Goal: a registered query over partitions on two nodes sees one consistent snapshot while
// transfers run (the total is never broken), answers for the other node's partitions too
// (which a closure query cannot), and gives the same parts as the same log in one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_query_across_two_nodes_sees_one_snapshot_and_answers_as_one_process() {
    let seed = seed("named-query-snapshot");
    let bank = Arc::new(bank());
    let storage = Arc::new(MemoryStorage::new());
    let (rt, host, _link) = start_two(&bank, storage.clone(), Duration::from_secs(30)).await;
    deposit_everywhere(&rt, bank.accounts).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = rt.client();
            let writing = transfer_until(client, bank.accounts, seed + w, stop.clone());
            tokio::spawn(writing)
        })
        .collect();
    let client = rt.client();
    let expected_total = N_ACCOUNTS as i64 * INITIAL_BALANCE;
    let mut moved_seen = false;
    for _ in 0..150 {
        let parts = client
            .query_named(&bank.audit, &[bank.accounts], &())
            .await
            .unwrap();
        assert_eq!(parts.len(), N_PARTITIONS as usize);
        let total: i64 = parts.iter().map(|p| p.total).sum();
        assert_eq!(
            total, expected_total,
            "seed {seed}: a query saw a half-applied transfer: {parts:?}"
        );
        assert_eq!(parts.iter().map(|p| p.n_accounts).sum::<u64>(), N_ACCOUNTS);
        // Money moved between partitions, so some partition is off its starting share.
        moved_seen |= parts
            .iter()
            .any(|p| p.total.rem_euclid(INITIAL_BALANCE) != 0);
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for w in writers {
        committed += w.await.unwrap();
    }
    assert!(
        committed > 0 && moved_seen,
        "seed {seed}: the transfers must run while the queries do"
    );
    // A closure still cannot reach "b"'s partitions.
    let error = client.query(&[bank.accounts], |_| ()).await.unwrap_err();
    assert!(matches!(&error, TxnError::QueryNotLocal { node, .. } if node == "b"));
    let (cluster_parts, cluster_balances) = final_answers(&client, &bank).await;
    let traffic = rt.stats().node_traffic();
    rt.shutdown().await;
    host.stop().await;
    eprintln!("named-query-snapshot: seed {seed}: {committed} transfers, {traffic:?}");

    let replay = RuntimeConfig {
        recover_from: RecoverFrom::LogStart,
        ..RuntimeConfig::with_storage(Arc::new(copy_of_log(&storage)))
    };
    let rt = Runtime::start(bank.app.clone(), replay).await.unwrap();
    let one_process = final_answers(&rt.client(), &bank).await;
    rt.shutdown().await;
    assert_eq!(
        (cluster_parts, cluster_balances),
        one_process,
        "seed {seed}: the same log in one process answers otherwise"
    );
}

/// Every partition's audit part, and the balances of accounts 0..8 asked of the partitions
/// holding them (listed in reverse, so the caller's order is checked too).
async fn final_answers(
    client: &txn::Client<BankApp>,
    bank: &Bank,
) -> (Vec<AuditPart>, Vec<Option<i64>>) {
    let parts = client
        .query_named(&bank.audit, &[bank.accounts], &())
        .await
        .unwrap();
    let mut balances = Vec::new();
    for account in (0..8u64).rev() {
        let at = [(bank.accounts, bank.accounts.partition_of(&account))];
        let part = client
            .query_named_at(&bank.balance, &at, &account)
            .await
            .unwrap();
        balances.push(part[0]);
    }
    assert!(balances.iter().all(Option::is_some), "{balances:?}");
    (parts, balances)
}

// Goal: an unknown name is refused naming it (and the queries there are), arguments that do
// not decode fail naming the query and the partition (on the other node too), a node whose
// application lacks the name answers a failure naming it, and a name registered twice fails
// the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_bad_arguments_and_duplicates_are_refused() {
    let bank = bank();
    let storage = Arc::new(MemoryStorage::new());
    let (rt, host, _link) = start_two(&bank, storage, Duration::from_secs(30)).await;
    let client = rt.client();
    let everywhere: Vec<(ServiceRef, u32)> =
        (0..N_PARTITIONS).map(|p| (bank.accounts, p)).collect();
    let error = client
        .query_by_name("richest", &everywhere, Vec::new())
        .await
        .unwrap_err();
    match &error {
        TxnError::UnknownQuery { name, known } => {
            assert_eq!(name, "richest");
            assert_eq!(known, &["audit", "balance"]);
        }
        other => panic!("expected UnknownQuery, got {other}"),
    }
    assert!(error.to_string().contains("\"richest\""), "{error}");
    // Partition 1 is on "b": its failure comes back over the link.
    let on_b = [(bank.accounts, 1)];
    let error = client
        .query_by_name("balance", &on_b, b"\xc1".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TxnError::QueryFailed { query, at, .. }
            if query == "balance" && at == "accounts partition 1"),
        "{error}"
    );
    rt.shutdown().await;
    host.stop().await;

    let other_build = bank_with_audit_named("audit_v2").app;
    let storage = Arc::new(MemoryStorage::new());
    let timeout = Duration::from_secs(30);
    let (rt, host, _link) = start_two_with_host_app(&bank, other_build, storage, timeout).await;
    let error = rt
        .client()
        .query_named(&bank.audit, &[bank.accounts], &())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TxnError::QueryFailed { query, at, message }
            if query == "audit" && at == "accounts partition 1"
                && message.contains("node \"b\" has no query named \"audit\"")),
        "{error}"
    );
    rt.shutdown().await;
    host.stop().await;

    let mut b = AppBuilder::<BankApp>::new();
    let accounts = b.service("accounts", 1);
    b.handler(accounts, |_, _| Ok(()));
    b.query("audit", |_, _: &()| 0u64);
    b.query("audit", |_, _: &u64| 1u64);
    let error = b.build().err().expect("a duplicate name is refused");
    assert!(
        error
            .to_string()
            .contains("query \"audit\" is registered twice"),
        "{error}"
    );
}

// Goal: a named query that needs a node that stopped answering fails with `NodeFailed` naming
// it, within the phase timeout: never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_query_on_a_dead_node_fails_with_node_failed() {
    let bank = bank();
    let storage = Arc::new(MemoryStorage::new());
    let (rt, host, link) = start_two(&bank, storage, Duration::from_millis(300)).await;
    deposit_everywhere(&rt, bank.accounts).await;
    let client = rt.client();
    link.silence("b");
    let services = [bank.accounts];
    let asked = client.query_named(&bank.audit, &services, &());
    let error = tokio::time::timeout(Duration::from_secs(60), asked)
        .await
        .expect("the query must fail, not hang")
        .unwrap_err();
    assert!(
        matches!(&error, TxnError::NodeFailed { node, .. } if node == "b"),
        "{error}"
    );
    rt.shutdown().await;
    host.stop().await;
}
