//! #[service] with an unknown argument, two handlers for one variant, #[service] on a struct.

use txn::{App, HandlerResult, TxnCtx};
use txn_macros::{handler, service};

struct Bank;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Ev {
    Deposit { to: u64, amount: i64 },
}

impl App for Bank {
    type Event = Ev;
    type Output = ();
}

#[service(name = "accounts")]
impl Accounts {
    #[handler(Ev::Deposit { .. })]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, to: u64) -> HandlerResult {
        let _ = to;
        Ok(())
    }

    #[handler(Ev::Deposit { .. })]
    fn deposit_again(&self, _ctx: &mut TxnCtx<'_, Bank>, amount: i64) -> HandlerResult {
        let _ = amount;
        Ok(())
    }
}

#[service]
struct Accounts;

fn main() {}
