//! Measures a standby's take-over of the transfer ledger on PostgreSQL: the active runtime
//! loads N accounts (N account rows and N entry rows), checkpoints them to a private
//! PostgreSQL server (`txn_storage::postgres_instance`) and dies without handing its lease
//! back (dropped mid-run: its renewals stop, its handle is fenced once the standby takes
//! over); a standby that waits for the lease then takes it and recovers. Prints the
//! checkpoint's time, the take-over split into waiting for the lease and recovery, and the time
//! of reading the checkpoint alone (the storage's share of recovery).
//!
//! `cargo run --release -p vmsdb --example pg_takeover -- [n_accounts] [lease_ttl_ms]`
//! (default 500,000 accounts = 1,000,000 rows, a 2,000 ms lease).

use futures::StreamExt as _;
use services::ledger::{Ledger, LedgerConfig, Transfer};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use txn::storage::{PostgresStorage, Storage as _};
use txn::{LeaseConfig, Runtime, RuntimeConfig};
use txn_storage::postgres_instance;

const INITIAL_BALANCE: i64 = 1_000;
/// Epochs between checkpoints: small, so the load is checkpointed soon after it ends.
const CHECKPOINT_EVERY_EPOCHS: u64 = 100;

/// A runtime configuration on a new handle on the store at `url`, holding the lease as
/// `holder` (waiting for it up to `wait`).
async fn config(url: &str, holder: &str, ttl: Duration, wait: Option<Duration>) -> RuntimeConfig {
    let url = url.to_string();
    let storage = tokio::task::spawn_blocking(move || PostgresStorage::open(&url))
        .await
        .unwrap()
        .expect("open the PostgreSQL store");
    RuntimeConfig {
        checkpoint_every_epochs: CHECKPOINT_EVERY_EPOCHS,
        lease: Some(LeaseConfig {
            holder: holder.to_string(),
            ttl,
            renew_every: ttl / txn::limits::LEASE_RENEWALS_PER_TTL,
            wait_for_lease: wait,
        }),
        ..RuntimeConfig::with_storage(Arc::new(storage))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n_accounts: u64 = args
        .next()
        .map_or(500_000, |a| a.parse().expect("n_accounts"));
    let ttl_ms: u64 = args
        .next()
        .map_or(2_000, |a| a.parse().expect("lease_ttl_ms"));
    let ttl = Duration::from_millis(ttl_ms);
    let pg = tokio::task::spawn_blocking(|| postgres_instance::for_test("pg_takeover", 20))
        .await
        .unwrap()
        .expect("PostgreSQL server binaries (apt-get install -y postgresql)");
    let url = pg.url();
    let ledger = Ledger::new(LedgerConfig::default()).expect("the ledger builds");

    let active = Runtime::start(
        ledger.app().clone(),
        config(&url, "active", ttl, None).await,
    )
    .await
    .expect("the active runtime starts");
    let client = active.client();
    let started = Instant::now();
    futures::stream::iter(0..n_accounts)
        .map(|i| client.submit_request(ledger.initial_deposit(i, INITIAL_BALANCE)))
        .buffer_unordered(4096)
        .for_each(|outcome| async move {
            assert!(outcome.expect("a deposit").committed());
        })
        .await;
    println!(
        "loaded {n_accounts} accounts ({} rows) in {:.2} s",
        2 * n_accounts,
        started.elapsed().as_secs_f64()
    );
    // Transfers until a checkpoint that began after the load has completed.
    let stats = active.stats();
    let started_after_load = stats.checkpoints_started.load(Ordering::Acquire);
    let mut i = 0u64;
    while stats.checkpoints_completed.load(Ordering::Acquire) <= started_after_load {
        let transfer = Transfer {
            src_account: i % n_accounts,
            src_entry: i % n_accounts,
            dst_account: (i + 1) % n_accounts,
            dst_entry: (i + 1) % n_accounts,
            amount: 1,
        };
        client
            .submit_request(ledger.transfer(transfer))
            .await
            .unwrap();
        i += 1;
    }
    println!(
        "checkpoint of {} rows on PostgreSQL: {:.2} s",
        stats.last_checkpoint_rows.load(Ordering::Acquire),
        stats.last_checkpoint_micros.load(Ordering::Acquire) as f64 / 1e6
    );

    // The active runtime dies: no shutdown, so its lease is not handed back.
    drop(client);
    drop(active);
    let died = Instant::now();
    let standby_config = config(&url, "standby", ttl, Some(Duration::from_secs(60))).await;
    let standby = Runtime::start(ledger.app().clone(), standby_config)
        .await
        .expect("the standby takes over");
    let takeover = died.elapsed();
    let recovery = standby.recovery_report().clone();
    let audit = ledger.audit(&standby.client()).await.unwrap();
    assert_eq!(audit.n_accounts, n_accounts);
    assert_eq!(
        audit.total_balance,
        i128::from(INITIAL_BALANCE) * i128::from(n_accounts as i64)
    );
    println!(
        "take-over after the active runtime died: {:.2} s = waiting for the lease (ttl {ttl_ms} ms) \
         {:.2} s + recovery {:.2} s ({} rows loaded from the checkpoint, {} epochs replayed); \
         lease: {}",
        takeover.as_secs_f64(),
        (takeover - recovery.duration).as_secs_f64(),
        recovery.duration.as_secs_f64(),
        recovery.rows_loaded,
        recovery.epochs_replayed,
        standby.stats().lease_status(),
    );
    standby.shutdown().await;
    read_checkpoint_alone(&url).await;
}

/// Times reading the latest checkpoint on a new handle with a visitor that only counts: the
/// storage's share of recovery, without loading the rows into partitions.
async fn read_checkpoint_alone(url: &str) {
    let url = url.to_string();
    let (n_rows, seconds) = tokio::task::spawn_blocking(move || {
        let storage = PostgresStorage::open(&url).expect("open the PostgreSQL store");
        let started = Instant::now();
        let mut n_rows = 0usize;
        storage
            .read_latest_checkpoint(&mut |_, _| {
                n_rows += 1;
                Ok(())
            })
            .expect("read the checkpoint");
        (n_rows, started.elapsed().as_secs_f64())
    })
    .await
    .unwrap();
    println!("reading the checkpoint alone ({n_rows} rows): {seconds:.2} s");
}
