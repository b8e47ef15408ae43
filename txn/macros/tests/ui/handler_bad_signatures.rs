//! Handler signatures the dispatcher cannot call: `&mut self`, no return value, no context,
//! no event variant. All are reported at once, and the uses of `register` are not.

use txn::{App, HandlerResult, TxnCtx};
use txn_macros::{handler, service};

struct Bank;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Ev {
    Deposit { to: u64, amount: i64 },
    Withdraw { from: u64, amount: i64 },
    Audit,
    Close(u64),
}

impl App for Bank {
    type Event = Ev;
    type Output = ();
}

struct Accounts {
    opened: u64,
}

#[service]
impl Accounts {
    #[handler(Ev::Deposit { .. })]
    fn deposit(&mut self, _ctx: &mut TxnCtx<'_, Bank>, amount: i64) -> HandlerResult {
        self.opened += amount as u64;
        Ok(())
    }

    #[handler(Ev::Withdraw { .. })]
    fn withdraw(&self, _ctx: &mut TxnCtx<'_, Bank>, from: u64) {
        let _ = from;
    }

    #[handler(Ev::Audit)]
    fn audit(&self) -> HandlerResult {
        Ok(())
    }

    #[handler]
    fn close(&self, _ctx: &mut TxnCtx<'_, Bank>, _account: u64) -> HandlerResult {
        Ok(())
    }
}

fn main() {
    // `register` exists despite the mistakes above: they are the only errors reported.
    let mut b = txn::AppBuilder::<Bank>::new();
    let accounts = b.service("accounts", 1);
    Accounts { opened: 0 }.register(&mut b, accounts);
}
