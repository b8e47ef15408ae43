//! A service left out of its application's `#[app(services(..))]` list.

mod common;

use common::Deposit;
use txn::{HandlerResult, TxnCtx, app, handler, service};

#[app(services(Audit))]
struct Bank;

struct Accounts;

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

struct Audit;

#[service(key = u64)]
impl Audit {
    #[handler]
    fn audit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {}
