//! The transfer ledger of `services::ledger`, run on the durable embedded store and checked:
//! the program `docs/tutorial-ledger.md` walks through.
//!
//! ```sh
//! cargo run -p services --example ledger
//! ```
//!
//! It opens accounts with deposits, runs a transfer that commits and two that abort (each abort
//! discards whatever its chain had already written), looks balances up, runs concurrent
//! random transfers, then checks the invariants and replays every transaction on the
//! `SerialExecutor` in the reported serial order. It restarts on the same directory and checks
//! the recovered state again. It exits with status 1 if any check fails.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use services::ledger::{
    self, Deposit, Ledger, LedgerApp, LedgerConfig, LedgerExpected, LedgerOutput, Transfer,
};
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use txn::{
    AbortReason, Client, Outcome, Request, RequestId, Runtime, RuntimeConfig, SerialPos, TxnError,
};

/// Accounts (and entries) the example opens.
const N_ACCOUNTS: u64 = 100;
/// What each account and entry is opened with.
const INITIAL_BALANCE: i64 = 1_000;
/// What the idempotent deposit into account 0 adds.
const EXTRA_DEPOSIT: i64 = 50;
/// Concurrent clients.
const N_CLIENTS: u64 = 16;
/// Random transfers each client submits.
const TRANSFERS_PER_CLIENT: u64 = 200;

/// One transaction of the history: where it stands in the serial order, what was asked, and
/// what came back.
struct Record {
    pos: SerialPos,
    request: Request<LedgerApp>,
    result: Result<Option<LedgerOutput>, AbortReason>,
}

/// The durable embedded store in `dir`, 1 ms epochs, an incremental checkpoint every 500 epochs.
fn runtime_config(dir: &Path) -> Result<RuntimeConfig, Box<dyn Error>> {
    Ok(RuntimeConfig {
        epoch_duration: Duration::from_millis(1),
        checkpoint_every_epochs: 500,
        ..RuntimeConfig::durable(dir)?
    })
}

/// Keeps a transaction that ran in the history, for the serial replay.
fn record(history: &mut Vec<Record>, request: Request<LedgerApp>, outcome: &Outcome<LedgerOutput>) {
    if let Some(pos) = outcome.serial_pos {
        let result = outcome.result.clone();
        history.push(Record {
            pos,
            request,
            result,
        });
    }
}

/// Submits a request built by `Ledger` and keeps it in the history.
async fn submit(
    client: &Client<LedgerApp>,
    request: Request<LedgerApp>,
    history: &mut Vec<Record>,
) -> Result<Outcome<LedgerOutput>, TxnError> {
    let outcome = client.submit_request(request.clone()).await?;
    record(history, request, &outcome);
    Ok(outcome)
}

/// Submits each list of requests from its own concurrent client, in order; returns the
/// history of all of them.
async fn run_clients(
    client: &Client<LedgerApp>,
    lists: Vec<Vec<Request<LedgerApp>>>,
) -> Result<Vec<Record>, TxnError> {
    let mut tasks = Vec::new();
    for requests in lists {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut history = Vec::new();
            for request in requests {
                submit(&client, request, &mut history).await?;
            }
            Ok::<_, TxnError>(history)
        }));
    }
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await.expect("a client task panicked")?);
    }
    Ok(history)
}

/// The deposits that open every account and entry, spread over `N_CLIENTS` clients.
fn opening_deposits(ledger: &Ledger) -> Vec<Vec<Request<LedgerApp>>> {
    (0..N_CLIENTS)
        .map(|c| {
            (c..N_ACCOUNTS)
                .step_by(N_CLIENTS as usize)
                .map(|i| ledger.initial_deposit(i, INITIAL_BALANCE))
                .collect()
        })
        .collect()
}

/// Random transfers between opened accounts, `TRANSFERS_PER_CLIENT` for each of `N_CLIENTS`.
fn random_transfers(ledger: &Ledger, seed: u64) -> Vec<Vec<Request<LedgerApp>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut transfer = move || Transfer {
        src_account: rng.random_range(0..N_ACCOUNTS),
        src_entry: rng.random_range(0..N_ACCOUNTS),
        dst_account: rng.random_range(0..N_ACCOUNTS),
        dst_entry: rng.random_range(0..N_ACCOUNTS),
        amount: rng.random_range(1..=400),
    };
    (0..N_CLIENTS)
        .map(|_| {
            (0..TRANSFERS_PER_CLIENT)
                .map(|_| ledger.transfer(transfer()))
                .collect()
        })
        .collect()
}

/// An idempotent deposit: resubmitting its id returns the first outcome and runs nothing.
async fn deposit_twice(
    ledger: &Ledger,
    client: &Client<LedgerApp>,
    history: &mut Vec<Record>,
) -> Result<bool, TxnError> {
    let id = RequestId { client: 1, seq: 0 };
    let deposit = Deposit {
        account: 0,
        entry: 0,
        amount: EXTRA_DEPOSIT,
    };
    let accounts = ledger.accounts_service;
    let first = client.submit_with_id(id, accounts, deposit).await?;
    record(history, accounts.request(deposit), &first);
    let again = client.submit_with_id(id, accounts, deposit).await?;
    println!(
        "deposit {id:?}: {:?}, resubmitted: {:?}",
        first.result, again.result
    );
    Ok(again == first)
}

/// Three transfers from account 1: one that commits, then one that fails its precondition in
/// step 1 and one to a missing account, which aborts in step 3.
async fn show_transfers(
    ledger: &Ledger,
    client: &Client<LedgerApp>,
    history: &mut Vec<Record>,
) -> Result<(), TxnError> {
    let transfer = |dst_account, amount| Transfer {
        src_account: 1,
        src_entry: 1,
        dst_account,
        dst_entry: 2,
        amount,
    };
    let cases = [
        ("a transfer of 300", transfer(2, 300)),
        ("more than the balance", transfer(2, 5_000)),
        ("to a missing account", transfer(N_ACCOUNTS + 7, 100)),
    ];
    for (what, t) in cases {
        let outcome = submit(client, ledger.transfer(t), history).await?;
        match outcome.result {
            Ok(output) => println!("  {what}: committed at {:?}: {output:?}", outcome.tid),
            Err(reason) => println!("  {what}: aborted: {reason}"),
        }
    }
    let balance = ledger.lookup(client, 1, 1).await?;
    println!("  account 1 and entry 1 after them: {balance:?}");
    Ok(())
}

/// Replays the history one transaction at a time in serial order on the `SerialExecutor`:
/// every result must be the same, and so must the final state. Returns the checks' verdict.
fn replays_serially(ledger: &Ledger, history: &mut [Record], state_hash: u64) -> bool {
    history.sort_by_key(|r| r.pos);
    let mut serial = txn::SerialExecutor::new(ledger.app().clone());
    let mut n_differ = 0;
    for r in history.iter() {
        let got = serial.run_request_at(r.pos, r.request.clone(), 0);
        n_differ += u64::from(got != r.result);
    }
    let same_state = serial.state_hash() == state_hash;
    println!(
        "  serial replay of {} transactions: {n_differ} results differ, same final state: \
         {same_state}",
        history.len()
    );
    n_differ == 0 && same_state
}

/// Audits one snapshot and checks it against what the committed deposits say.
async fn invariants_hold(
    ledger: &Ledger,
    client: &Client<LedgerApp>,
    expected: &LedgerExpected,
) -> Result<bool, TxnError> {
    let audit = ledger.audit(client).await?;
    let violations = ledger::check(&audit, expected);
    for (criterion, n) in &violations {
        println!("  [{}] {criterion}", if *n == 0 { "ok" } else { "FAILED" });
    }
    Ok(violations.values().all(|n| *n == 0))
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let ledger = Ledger::new(LedgerConfig::default())?;
    let dir = tempfile::tempdir()?;
    let rt = Runtime::start(ledger.app().clone(), runtime_config(dir.path())?).await?;
    let client = rt.client();

    // Open the accounts: ordinary deposits from concurrent clients.
    let mut history = run_clients(&client, opening_deposits(&ledger)).await?;
    println!("opened {} accounts and entries", history.len());
    let mut ok = deposit_twice(&ledger, &client, &mut history).await?;
    println!("transfers:");
    show_transfers(&ledger, &client, &mut history).await?;
    let seed: u64 = std::env::var("LEDGER_SEED").map_or_else(
        |_| rand::random(),
        |s| s.parse().expect("LEDGER_SEED is a number"),
    );
    println!("random transfers from {N_CLIENTS} clients, seed {seed} (LEDGER_SEED replays them)");
    history.extend(run_clients(&client, random_transfers(&ledger, seed)).await?);

    println!("checks:");
    let expected = LedgerExpected {
        n_accounts: N_ACCOUNTS,
        total_deposited: i128::from(INITIAL_BALANCE) * i128::from(N_ACCOUNTS)
            + i128::from(EXTRA_DEPOSIT),
    };
    ok &= invariants_hold(&ledger, &client, &expected).await?;
    let state_hash = client.state_hash().await?;
    ok &= replays_serially(&ledger, &mut history, state_hash);

    // Restart on the same directory: recover from the checkpoint and the log after it.
    rt.shutdown().await;
    let rt = Runtime::start(ledger.app().clone(), runtime_config(dir.path())?).await?;
    let client = rt.client();
    let r = rt.recovery_report();
    println!(
        "restart: checkpoint of epoch {:?}, {} epochs replayed, up to epoch {}",
        r.checkpoint_epoch, r.epochs_replayed, r.last_epoch
    );
    let recovered_hash = client.state_hash().await?;
    println!(
        "  the state before shutdown: {}",
        recovered_hash == state_hash
    );
    ok &= recovered_hash == state_hash;
    ok &= invariants_hold(&ledger, &client, &expected).await?;
    rt.shutdown().await;
    println!(
        "{}",
        if ok {
            "all checks passed"
        } else {
            "some checks FAILED"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
