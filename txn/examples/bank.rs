//! The README's example: a two-step transfer inside one service, kept in a data directory.

use serde::{Deserialize, Serialize};
use std::path::Path;
use txn::{App, AppBuilder, Runtime, TxnError};

struct Bank;
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    Withdraw { from: u64, to: u64, amount: i64 },
    Deposit { to: u64, amount: i64 },
}
impl App for Bank {
    type Event = Ev;
    type Output = i64;
}

/// Deposits 10 into account 1 and moves 5 of it to account 2; returns account 2's new balance.
/// The accounts live in `dir`, so each run adds to what the runs before it left.
pub async fn run(dir: &Path) -> Result<Option<i64>, TxnError> {
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.service("bank", 4);
    let accounts = b.table::<u64, i64>(bank, "accounts");
    b.handler(bank, move |ctx, ev| match ev {
        Ev::Withdraw { from, to, amount } => {
            let balance = ctx.get(accounts, from)?.unwrap_or(0);
            if balance < *amount {
                return Err(ctx.abort(format!("account {from} has {balance} < {amount}")));
            }
            ctx.put(accounts, *from, balance - amount)?;
            let deposit = Ev::Deposit {
                to: *to,
                amount: *amount,
            };
            ctx.emit(bank, to, deposit);
            Ok(())
        }
        Ev::Deposit { to, amount } => {
            let balance = ctx.get(accounts, to)?.unwrap_or(0);
            ctx.put(accounts, *to, balance + amount)?;
            ctx.set_output(balance + amount);
            Ok(())
        }
    });
    // Durable by default: the epoch log and checkpoints go to an embedded store in `dir`.
    let rt = Runtime::open(b.build()?, dir).await?;
    let client = rt.client();
    client
        .submit(bank, &1u64, Ev::Deposit { to: 1, amount: 10 })
        .await?;
    let transfer = Ev::Withdraw {
        from: 1,
        to: 2,
        amount: 5,
    };
    let outcome = client.submit(bank, &1u64, transfer).await?;
    println!("{:?}", outcome.result); // Ok(Some(5)) on the first run, Ok(Some(10)) on the next
    rt.shutdown().await;
    Ok(outcome.result.ok().flatten())
}

#[tokio::main]
async fn main() -> Result<(), TxnError> {
    run(Path::new("bank-data")).await?;
    Ok(())
}
