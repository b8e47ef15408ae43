//! `txn/examples/bank.rs` with its rows declared by the macros too: the account row declares
//! its table and its no-overdraft check, the events are plain types routed by their `#[key]`
//! field, and the handlers are methods of a `#[service]`.
//!
//! Run with `cargo run -p txn-macros --example bank_with_macros`.

use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Runtime, RuntimeConfig, Svc, TxnCtx};
use txn_macros::{Event, Table, app, handler, service};

/// Inbound: move `amount` from account `from` to account `to`.
#[derive(Clone, Debug, Serialize, Deserialize, Event)]
struct Withdraw {
    #[key]
    from: u64,
    to: u64,
    amount: i64,
}

/// Credit `amount` to account `to` (a step of a transfer, or a deposit of its own).
#[derive(Clone, Debug, Serialize, Deserialize, Event)]
struct Deposit {
    #[key]
    to: u64,
    amount: i64,
}

/// One service, partitioned by account; a transaction returns a balance.
#[app(services(Accounts), output = i64)]
struct Bank;

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
    bank: Svc<Accounts>,
}

#[service(key = u64, vis = pub(crate))]
impl Accounts {
    #[handler]
    fn withdraw(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Withdraw) -> HandlerResult {
        let mut account = self.account(ctx, ev.from)?;
        account.balance -= ev.amount;
        ctx.put(self.accounts, account.key(), account)?;
        // The credit runs in the partition owning `to`, in the same transaction.
        let deposit = Deposit {
            to: ev.to,
            amount: ev.amount,
        };
        ctx.emit(self.bank, deposit);
        Ok(())
    }

    #[handler]
    fn deposit(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let mut account = self.account(ctx, ev.to)?;
        account.balance += ev.amount;
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
    let bank = b.add_service::<Accounts>("bank", 4);
    let accounts = Account::table(&mut b, *bank);
    Accounts { accounts, bank }.register(&mut b, bank);
    let rt = Runtime::start(b.build()?, RuntimeConfig::in_memory()).await?;
    let client = rt.client();
    let transfer = Withdraw {
        from: 1,
        to: 2,
        amount: 5,
    };
    // The first transfer overdraws account 1 and aborts; after the deposit the second commits.
    let requests = [
        bank.request(transfer.clone()),
        bank.request(Deposit { to: 1, amount: 10 }),
        bank.request(transfer),
    ];
    for request in requests {
        let kind = <Bank as txn::App>::event_kind(request.event());
        let outcome = client.submit_request(request).await?;
        match outcome.result {
            Ok(balance) => println!("{kind}: committed, new balance {balance:?}"),
            Err(reason) => println!("{kind}: aborted: {reason}"),
        }
    }
    rt.shutdown().await;
    Ok(())
}
