//! The transfer ledger on a real runtime: transfer semantics (preconditions, atomic abort across
//! the four rows, outputs), conservation under concurrent transfers, lookups, and agreement with
//! the serial executor.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use services::ledger::{
    self, AccountsEvent, Balance, Deposit, Ledger, LedgerApp, LedgerConfig, LedgerExpected,
    LedgerOutput, Transfer,
};
use services::load::submit_all;
use txn::{AbortReason, Client, Envelope, Request, Runtime, RuntimeConfig, SerialExecutor};

async fn started(config: LedgerConfig) -> (Ledger, Runtime<ledger::LedgerApp>) {
    let ledger = Ledger::new(config).unwrap();
    let rt = Runtime::start(ledger.app().clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    (ledger, rt)
}

async fn submit(
    client: &Client<ledger::LedgerApp>,
    r: Request<LedgerApp>,
) -> Result<Option<LedgerOutput>, AbortReason> {
    client.submit_request(r).await.unwrap().result
}

/// The kind of a business abort (a `LedgerError`'s).
fn user_kind(reason: &AbortReason) -> &str {
    match reason {
        AbortReason::User { kind, .. } => kind,
        other => panic!("expected a business abort, got {other:?}"),
    }
}

/// The `accounts` event of a request (every ledger request starts there).
fn accounts_event(r: &Request<LedgerApp>) -> &AccountsEvent {
    Envelope::<ledger::Accounts>::unwrap(r.event()).expect("a request to accounts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_precondition_in_any_step_leaves_all_four_rows_untouched() {
    // Goal: a transfer whose source account or source entry lacks funds aborts with a clear
    // reason, and neither the earlier debit nor any credit survives.
    let (ledger, rt) = started(LedgerConfig {
        n_partitions: 4,
        min_balance: 10,
    })
    .await;
    let client = rt.client();
    // Account 1 is rich, entry 1 is poor; account 2 is poor, entry 2 is rich.
    submit(&client, ledger.deposit(1, 1, 100)).await.unwrap();
    submit(&client, ledger.deposit(1, 2, 0)).await.unwrap_err(); // amount must be positive
    submit(&client, ledger.deposit(2, 2, 15)).await.unwrap();
    submit(&client, ledger.deposit(3, 3, 50)).await.unwrap();
    submit(&client, ledger.deposit(1, 2, 1000)).await.unwrap();
    let before = [
        ledger.lookup(&client, 1, 1).await.unwrap(),
        ledger.lookup(&client, 2, 2).await.unwrap(),
        ledger.lookup(&client, 3, 3).await.unwrap(),
    ];
    assert_eq!(
        before[0],
        Balance {
            account: Some(1100),
            entry: Some(100)
        }
    );

    // Step 2 fails: account 1 can pay 95 (stays ≥ 10) but entry 1 would drop to 5 < 10.
    let t = Transfer {
        src_account: 1,
        src_entry: 1,
        dst_account: 3,
        dst_entry: 3,
        amount: 95,
    };
    let reason = submit(&client, ledger.transfer(t)).await.unwrap_err();
    assert!(
        user_kind(&reason) == ledger::kinds::INSUFFICIENT_ASSETS,
        "{reason}"
    );

    // Step 1 fails: account 2 holds 15, cannot pay 6 and stay ≥ 10.
    let t = Transfer {
        src_account: 2,
        src_entry: 2,
        dst_account: 3,
        dst_entry: 3,
        amount: 6,
    };
    let reason = submit(&client, ledger.transfer(t)).await.unwrap_err();
    assert!(
        user_kind(&reason) == ledger::kinds::INSUFFICIENT_BALANCE,
        "{reason}"
    );

    // Step 3 fails: the target account does not exist; both debits must be undone.
    let t = Transfer {
        src_account: 1,
        src_entry: 2,
        dst_account: 99,
        dst_entry: 3,
        amount: 5,
    };
    let reason = submit(&client, ledger.transfer(t)).await.unwrap_err();
    assert!(
        user_kind(&reason) == ledger::kinds::UNKNOWN_ACCOUNT,
        "{reason}"
    );

    let after = [
        ledger.lookup(&client, 1, 1).await.unwrap(),
        ledger.lookup(&client, 2, 2).await.unwrap(),
        ledger.lookup(&client, 3, 3).await.unwrap(),
    ];
    assert_eq!(before, after, "an aborted transfer changed a row");
    assert_eq!(
        ledger.lookup(&client, 99, 99).await.unwrap(),
        Balance::default()
    );

    // Exactly at the minimum is allowed, and the output reports the source after the transfer.
    let t = Transfer {
        src_account: 1,
        src_entry: 1,
        dst_account: 3,
        dst_entry: 3,
        amount: 90,
    };
    let out = submit(&client, ledger.transfer(t)).await.unwrap();
    assert_eq!(
        out,
        Some(LedgerOutput::Transferred {
            src_balance: 1010,
            src_value: 10
        })
    );
    assert_eq!(
        ledger.lookup(&client, 3, 3).await.unwrap(),
        Balance {
            account: Some(140),
            entry: Some(140)
        }
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_totals_and_match_the_serial_executor() {
    // Goal: under contended concurrent transfers and deposits, totals change only by deposits,
    // nothing goes negative, and the final state equals a serial replay of the committed order.
    let seed: u64 = std::env::var("SERVICES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with SERVICES_TEST_SEED={seed})");
    let (ledger, rt) = started(LedgerConfig {
        n_partitions: 3,
        min_balance: 0,
    })
    .await;
    let client = rt.client();
    let n_accounts = 40u64;
    let l = ledger.clone();
    let load = submit_all(&client, n_accounts as usize, 16, move |i| {
        l.initial_deposit(i as u64, 50)
    })
    .await
    .unwrap();
    assert_eq!(load.n_committed, n_accounts);

    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let (client, ledger) = (client.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ c);
            let mut history = Vec::new();
            for _ in 0..60 {
                let r = if rng.random_ratio(1, 10) {
                    ledger.deposit(
                        rng.random_range(0..n_accounts),
                        rng.random_range(0..n_accounts),
                        rng.random_range(1..5),
                    )
                } else {
                    ledger.transfer(Transfer {
                        src_account: rng.random_range(0..n_accounts),
                        src_entry: rng.random_range(0..n_accounts),
                        dst_account: rng.random_range(0..n_accounts),
                        dst_entry: rng.random_range(0..n_accounts),
                        amount: rng.random_range(1..40),
                    })
                };
                let outcome = client.submit_request(r.clone()).await.unwrap();
                history.push((outcome.serial_pos.unwrap(), r, outcome.result));
            }
            history
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let audit = ledger.audit(&client).await.unwrap();
    let hash = client.state_hash().await.unwrap();
    rt.shutdown().await;

    let deposited: i128 = history
        .iter()
        .filter(|(_, _, result)| result.is_ok())
        .filter_map(|(_, r, _)| match accounts_event(r) {
            AccountsEvent::Deposit(Deposit { amount, .. }) => Some(i128::from(*amount)),
            _ => None,
        })
        .sum();
    let expected = LedgerExpected {
        n_accounts,
        total_deposited: 50 * i128::from(n_accounts) + deposited,
    };
    let violations = ledger::check(&audit, &expected);
    assert!(
        violations.values().all(|n| *n == 0),
        "seed {seed}: {violations:?}"
    );
    let n_committed_transfers = history
        .iter()
        .filter(|(_, r, res)| {
            res.is_ok() && matches!(accounts_event(r), AccountsEvent::Transfer(_))
        })
        .count();
    assert!(
        n_committed_transfers > 100,
        "seed {seed}: only {n_committed_transfers} transfers committed"
    );

    // The same history, serially in the reported order, gives the same state and outcomes.
    history.sort_by_key(|(pos, _, _)| *pos);
    let mut serial = SerialExecutor::new(ledger.app().clone());
    for i in 0..n_accounts {
        let r = ledger.initial_deposit(i, 50);
        serial.run_request(r, 0).unwrap();
    }
    for (pos, r, result) in history {
        let got = serial.run_request(r.clone(), 0);
        assert_eq!(got, result, "seed {seed}: {pos:?} {:?}", r.event());
    }
    assert_eq!(
        serial.state_hash(),
        hash,
        "seed {seed}: final state differs from the serial replay"
    );
    assert_eq!(ledger.audit_serial(&serial), audit);
}

#[test]
fn serial_executor_runs_the_ledger_and_lookups() {
    // Goal: the same app runs on the serial baseline with the same semantics.
    let ledger = Ledger::new(LedgerConfig::default()).unwrap();
    let mut exec = SerialExecutor::new(ledger.app().clone());
    for i in 0..4 {
        let r = ledger.initial_deposit(i, 10);
        exec.run_request(r, 0).unwrap();
    }
    let r = ledger.transfer(Transfer {
        src_account: 0,
        src_entry: 1,
        dst_account: 2,
        dst_entry: 3,
        amount: 11,
    });
    assert!(exec.run_request(r, 0).is_err());
    let r = ledger.transfer(Transfer {
        src_account: 0,
        src_entry: 1,
        dst_account: 2,
        dst_entry: 3,
        amount: 10,
    });
    assert_eq!(
        exec.run_request(r, 0),
        Ok(Some(LedgerOutput::Transferred {
            src_balance: 0,
            src_value: 0
        }))
    );
    assert_eq!(
        ledger.lookup_serial(&exec, 2, 3),
        Balance {
            account: Some(20),
            entry: Some(20)
        }
    );
    let v = ledger::check(
        &ledger.audit_serial(&exec),
        &LedgerExpected {
            n_accounts: 4,
            total_deposited: 40,
        },
    );
    assert!(v.values().all(|n| *n == 0), "{v:?}");
}
