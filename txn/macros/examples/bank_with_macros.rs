//! `txn/examples/bank.rs` written with the macros: the account row declares its table and its
//! no-overdraft check, and the handlers are methods of a `#[service]`.
//!
//! Run with `cargo run -p txn-macros --example bank_with_macros`.

use serde::{Deserialize, Serialize};
use txn::{App, AppBuilder, HandlerResult, Runtime, RuntimeConfig, ServiceRef, TxnCtx};
use txn_macros::{EventKind, Table, handler, service};

struct Bank;

#[derive(Clone, Debug, Serialize, Deserialize, EventKind)]
enum Ev {
    Withdraw { from: u64, to: u64, amount: i64 },
    Deposit { to: u64, amount: i64 },
}

impl App for Bank {
    type Event = Ev;
    type Output = i64;
}

/// A row of `accounts`; a write that would make `balance` negative aborts its transaction.
#[derive(Clone, Debug, Serialize, Deserialize, Table)]
#[table(name = "accounts")]
struct Account {
    #[key]
    id: u64,
    #[check(0..)]
    balance: i64,
}

/// The bank service: its table, and itself to emit the deposit step to.
struct Accounts {
    accounts: txn::Table<u64, Account>,
    bank: ServiceRef,
}

#[service]
impl Accounts {
    #[handler(Ev::Withdraw { .. })]
    fn withdraw(
        &self,
        ctx: &mut TxnCtx<'_, Bank>,
        from: u64,
        to: u64,
        amount: i64,
    ) -> HandlerResult {
        let mut account = self.account(ctx, from)?;
        account.balance -= amount;
        ctx.put(self.accounts, account.key(), account)?;
        ctx.emit(self.bank, &to, Ev::Deposit { to, amount });
        Ok(())
    }

    #[handler(Ev::Deposit { .. })]
    fn deposit(&self, ctx: &mut TxnCtx<'_, Bank>, to: u64, amount: i64) -> HandlerResult {
        let mut account = self.account(ctx, to)?;
        account.balance += amount;
        ctx.set_output(account.balance);
        ctx.put(self.accounts, account.key(), account)
    }

    /// The account `id`, empty if it has never been written.
    fn account(&self, ctx: &mut TxnCtx<'_, Bank>, id: u64) -> Result<Account, txn::Abort> {
        Ok(ctx
            .get(self.accounts, &id)?
            .unwrap_or(Account { id, balance: 0 }))
    }
}

#[tokio::main]
async fn main() -> Result<(), txn::TxnError> {
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.service("bank", 4);
    let accounts = Account::table(&mut b, bank);
    Accounts { accounts, bank }.register(&mut b, bank);
    let rt = Runtime::start(b.build()?, RuntimeConfig::in_memory()).await?;
    let client = rt.client();
    let requests = [
        Ev::Withdraw {
            from: 1,
            to: 2,
            amount: 5,
        },
        Ev::Deposit { to: 1, amount: 10 },
        Ev::Withdraw {
            from: 1,
            to: 2,
            amount: 5,
        },
    ];
    for ev in requests {
        let kind = ev.kind();
        let outcome = client.submit(bank, &1u64, ev).await?;
        match outcome.result {
            Ok(balance) => println!("{kind}: committed, new balance {balance:?}"),
            Err(reason) => println!("{kind}: aborted: {reason}"),
        }
    }
    rt.shutdown().await;
    Ok(())
}
