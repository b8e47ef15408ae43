//! #[handler] on a method of an impl block that is not a #[service].

use serde::{Deserialize, Serialize};
use txn::{HandlerResult, TxnCtx, handler};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    Deposit { to: u64, amount: i64 },
}

struct Bank;

impl txn::App for Bank {
    type Event = Ev;
    type Output = ();
}

struct Accounts;

impl Accounts {
    #[handler]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Ev) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {
    let _ = Accounts;
}
