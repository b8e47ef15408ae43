//! Typed business aborts: a handler's `?` on its service's own error type aborts the
//! transaction with that error's kind, and `TxnCtx::abort_with` names a kind directly.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{
    AbortReason, App, AppBuilder, AppDef, BusinessError, HandlerResult, Runtime, RuntimeConfig,
    SerialExecutor, ServiceRef, Table, TxnCtx,
};

struct Bank;

impl App for Bank {
    type Event = Ev;
    type Output = i64;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Ev {
    Deposit {
        account: u64,
        amount: i64,
    },
    Withdraw {
        account: u64,
        amount: i64,
    },
    /// Aborts with `abort_with`, naming its kind in place.
    Freeze {
        account: u64,
    },
    /// Aborts with the plain `abort`.
    Close {
        account: u64,
    },
}

/// The bank service's own errors.
#[derive(Debug, thiserror::Error)]
enum BankError {
    #[error("account {account} holds {balance}, {amount} wanted")]
    InsufficientFunds {
        account: u64,
        balance: i64,
        amount: i64,
    },
}

impl BusinessError for BankError {
    fn kind(&self) -> &'static str {
        match self {
            BankError::InsufficientFunds { .. } => "insufficient_funds",
        }
    }
}

/// The rule the withdraw handler checks, as a function of the service's own error type.
fn check_funds(account: u64, balance: i64, amount: i64) -> Result<(), BankError> {
    if balance < amount {
        return Err(BankError::InsufficientFunds {
            account,
            balance,
            amount,
        });
    }
    Ok(())
}

fn handle(ctx: &mut TxnCtx<'_, Bank>, balances: Table<u64, i64>, ev: &Ev) -> HandlerResult {
    match ev {
        Ev::Deposit { account, amount } => {
            let balance = ctx.get(balances, account)?.unwrap_or(0) + amount;
            ctx.put(balances, *account, balance)?;
            ctx.set_output(balance);
        }
        Ev::Withdraw { account, amount } => {
            let balance = ctx.get(balances, account)?.unwrap_or(0);
            check_funds(*account, balance, *amount)?;
            ctx.put(balances, *account, balance - amount)?;
            ctx.set_output(balance - amount);
        }
        Ev::Freeze { account } => {
            return Err(ctx.abort_with("frozen", format!("account {account}: frozen")));
        }
        Ev::Close { account } => return Err(ctx.abort(format!("account {account}: closed"))),
    }
    Ok(())
}

fn build() -> (Arc<AppDef<Bank>>, ServiceRef) {
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.service("bank", 4);
    let balances = b.table::<u64, i64>(bank, "balances");
    b.handler(bank, move |ctx, ev| handle(ctx, balances, ev));
    (b.build().unwrap(), bank)
}

fn user(kind: &str, message: &str) -> AbortReason {
    AbortReason::User {
        service: "bank".into(),
        kind: kind.into(),
        message: message.into(),
    }
}

#[test]
fn question_mark_on_a_business_error_aborts_with_its_kind() {
    // Goal: `?` on the service's own error gives a `User` abort with the error's kind and
    // message, naming the service it ran in, and the transaction leaves no write behind.
    let (app, bank) = build();
    let mut exec = SerialExecutor::new(app);
    let deposit = Ev::Deposit {
        account: 7,
        amount: 3,
    };
    assert_eq!(exec.run_keyed_raw(bank, &7u64, deposit, 0), Ok(Some(3)));
    let withdraw = Ev::Withdraw {
        account: 7,
        amount: 5,
    };
    let aborted = exec.run_keyed_raw(bank, &7u64, withdraw, 0);
    assert_eq!(
        aborted,
        Err(user("insufficient_funds", "account 7 holds 3, 5 wanted"))
    );
    assert_eq!(aborted.unwrap_err().category(), "insufficient_funds");
    let withdraw = Ev::Withdraw {
        account: 7,
        amount: 3,
    };
    assert_eq!(exec.run_keyed_raw(bank, &7u64, withdraw, 0), Ok(Some(0)));
}

#[test]
fn abort_with_names_its_kind_and_abort_uses_the_default() {
    // Goal: `abort_with` carries the kind it is given; the plain `abort` keeps working with
    // the default kind.
    let (app, bank) = build();
    let mut exec = SerialExecutor::new(app);
    assert_eq!(
        exec.run_keyed_raw(bank, &1u64, Ev::Freeze { account: 1 }, 0),
        Err(user("frozen", "account 1: frozen"))
    );
    assert_eq!(
        exec.run_keyed_raw(bank, &1u64, Ev::Close { account: 1 }, 0),
        Err(user(AbortReason::USER_KIND_DEFAULT, "account 1: closed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_reports_the_business_kind_to_the_client() {
    // Goal: through the epoch pipeline, the client's outcome carries the kind as data.
    let (app, bank) = build();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let withdraw = Ev::Withdraw {
        account: 2,
        amount: 1,
    };
    let outcome = client.submit_raw(bank, &2u64, withdraw).await.unwrap();
    assert_eq!(
        outcome.result,
        Err(user("insufficient_funds", "account 2 holds 0, 1 wanted"))
    );
    rt.shutdown().await;
}
