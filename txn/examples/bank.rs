//! The README's example: a two-step transfer inside one service, aborted when funds are short.

use serde::{Deserialize, Serialize};
use txn::{App, AppBuilder, Runtime, RuntimeConfig};

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

#[tokio::main]
async fn main() -> Result<(), txn::TxnError> {
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
            ctx.emit(
                bank,
                to,
                Ev::Deposit {
                    to: *to,
                    amount: *amount,
                },
            );
            Ok(())
        }
        Ev::Deposit { to, amount } => {
            let balance = ctx.get(accounts, to)?.unwrap_or(0);
            ctx.put(accounts, *to, balance + amount)?;
            ctx.set_output(balance + amount);
            Ok(())
        }
    });
    let rt = Runtime::start(b.build()?, RuntimeConfig::default()).await?;
    let client = rt.client();
    let outcome = client
        .submit(
            bank,
            &1u64,
            Ev::Withdraw {
                from: 1,
                to: 2,
                amount: 5,
            },
        )
        .await?;
    println!("transfer before any deposit: {:?}", outcome.result);
    let outcome = client
        .submit(bank, &1u64, Ev::Deposit { to: 1, amount: 10 })
        .await?;
    println!("deposit 10 into account 1: {:?}", outcome.result);
    let outcome = client
        .submit(
            bank,
            &1u64,
            Ev::Withdraw {
                from: 1,
                to: 2,
                amount: 5,
            },
        )
        .await?;
    println!(
        "transfer 5 from 1 to 2: {:?} (account 2's new balance)",
        outcome.result
    );
    rt.shutdown().await;
    Ok(())
}
