//! #[handler] on a method of an impl block that is not a #[service].

use txn::{App, HandlerResult, TxnCtx};
use txn_macros::handler;

struct Bank;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Ev {
    Deposit { to: u64, amount: i64 },
}

impl App for Bank {
    type Event = Ev;
    type Output = ();
}

struct Accounts;

impl Accounts {
    #[handler(Ev::Deposit { .. })]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, _to: u64) -> HandlerResult {
        Ok(())
    }
}

fn main() {
    let _ = Accounts;
}
