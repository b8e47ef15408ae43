//! A service whose application type cannot be read off its handlers, and a service with no
//! handlers.

mod common;

use common::Deposit;
use txn::{HandlerResult, TxnCtx, app, handler, service};

// `Accounts` is not listed: without an application type it has no contract to list.
#[app(services(Audit))]
struct Bank;

type Ctx<'a> = TxnCtx<'a, Bank>;

struct Accounts;

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn deposit(&self, _ctx: &mut Ctx<'_>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

struct Audit;

#[service(app = Bank, key = u64)]
impl Audit {
    fn audit(&self) {}
}

fn main() {}
