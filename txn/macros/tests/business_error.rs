//! `#[service]` handlers that return the service's own error type: `?` works on it, and the
//! transaction aborts with the error's kind. The service keeps the default `pub` event enum over
//! its private event type, which must not warn (clippy runs with `-D warnings`).

use serde::{Deserialize, Serialize};
use txn::{AbortReason, AppBuilder, BusinessError, SerialExecutor, TxnCtx};
use txn_macros::{Event, app, handler, service};

#[app(services(Accounts), output = i64)]
struct Bank;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
struct Withdraw {
    #[key]
    account: u64,
    amount: i64,
}

#[derive(Debug, thiserror::Error)]
enum BankError {
    #[error("account {0}: {1}")]
    Abort(u64, String),
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
            BankError::Abort(..) => "abort",
            BankError::InsufficientFunds { .. } => "insufficient_funds",
        }
    }
}

struct Accounts {
    balances: txn::Table<u64, i64>,
}

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn withdraw(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Withdraw) -> Result<(), BankError> {
        // A context error is not a `BankError`: the service maps it into its own type.
        let read = ctx.get(self.balances, &ev.account);
        let balance = read.map_err(|e| BankError::Abort(ev.account, e.to_string()))?;
        let balance = balance.unwrap_or(0);
        check_funds(ev.account, balance, ev.amount)?;
        ctx.set_output(balance - ev.amount);
        Ok(())
    }
}

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

#[test]
fn a_handler_returning_its_own_error_aborts_with_its_kind() {
    // Goal: a `#[handler]` returning `Result<(), BankError>` compiles, and its error reaches
    // the caller as a `User` abort of the error's kind, naming the service.
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.add_service::<Accounts>("bank", 2);
    let balances = b.table::<u64, i64>(*bank, "balances");
    Accounts { balances }.register(&mut b, bank);
    let mut exec = SerialExecutor::new(b.build().unwrap());
    let withdraw = Withdraw {
        account: 4,
        amount: 9,
    };
    assert_eq!(
        exec.run(bank, withdraw, 0),
        Err(AbortReason::User {
            service: "bank".into(),
            kind: "insufficient_funds".into(),
            message: "account 4 holds 0, 9 wanted".into(),
        })
    );
}
