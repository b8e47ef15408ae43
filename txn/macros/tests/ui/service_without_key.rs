//! #[service] without `key`: the type that routes its events to its partitions.

mod common;

use common::Deposit;
use txn::{HandlerResult, TxnCtx, app, handler, service};

#[app(services(Accounts))]
struct Bank;

struct Accounts;

#[service]
impl Accounts {
    #[handler]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {}
