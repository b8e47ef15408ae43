//! The README's example: a two-step transfer inside one service, kept in a data directory.

use serde::{Deserialize, Serialize};
use std::path::Path;
use txn::{AppBuilder, HandlerResult, Runtime, Svc, Table, TxnCtx, TxnError, handler, service};

/// Inbound: move `amount` from account `from` to account `to`.
#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
struct Withdraw {
    #[key]
    from: u64,
    to: u64,
    amount: i64,
}

/// Credit `amount` to account `to` (a step of a transfer, or a deposit of its own).
#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
struct Deposit {
    #[key]
    to: u64,
    amount: i64,
}

/// One service, partitioned by account; a transaction returns a balance.
#[txn::app(services(Accounts), output = i64)]
struct Bank;

struct Accounts {
    balances: Table<u64, i64>,
    me: Svc<Accounts>,
}

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn withdraw(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Withdraw) -> HandlerResult {
        let balance = ctx.get(self.balances, &ev.from)?.unwrap_or(0);
        if balance < ev.amount {
            return Err(ctx.abort(format!("account {} has {balance} < {}", ev.from, ev.amount)));
        }
        ctx.put(self.balances, ev.from, balance - ev.amount)?;
        // The credit runs in the partition owning `to`, in the same transaction.
        let deposit = Deposit {
            to: ev.to,
            amount: ev.amount,
        };
        ctx.emit(self.me, deposit);
        Ok(())
    }

    #[handler]
    fn deposit(&self, ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let balance = ctx.get(self.balances, &ev.to)?.unwrap_or(0) + ev.amount;
        ctx.put(self.balances, ev.to, balance)?;
        ctx.set_output(balance);
        Ok(())
    }
}

/// Deposits 10 into account 1 and moves 5 of it to account 2; returns account 2's new balance.
/// The accounts live in `dir`, so each run adds to what the runs before it left.
pub async fn run(dir: &Path) -> Result<Option<i64>, TxnError> {
    let mut b = AppBuilder::<Bank>::new();
    let accounts = b.add_service::<Accounts>("accounts", 4);
    let balances = b.table::<u64, i64>(*accounts, "balances");
    Accounts {
        balances,
        me: accounts,
    }
    .register(&mut b, accounts);
    // Durable by default: the epoch log and checkpoints go to an embedded store in `dir`.
    let rt = Runtime::open(b.build()?, dir).await?;
    let client = rt.client();
    client
        .submit(accounts, Deposit { to: 1, amount: 10 })
        .await?;
    let transfer = Withdraw {
        from: 1,
        to: 2,
        amount: 5,
    };
    let outcome = client.submit(accounts, transfer).await?;
    println!("{:?}", outcome.result); // Ok(Some(5)) on the first run, Ok(Some(10)) on the next
    rt.shutdown().await;
    Ok(outcome.result.ok().flatten())
}

#[tokio::main]
async fn main() -> Result<(), TxnError> {
    run(Path::new("bank-data")).await?;
    Ok(())
}
