//! Handlers with no event parameter, with two, and with an event that is not a named type or
//! is borrowed mutably.

mod common;

use common::Deposit;
use serde::{Deserialize, Serialize};
use txn::{HandlerResult, TxnCtx, app, handler, service};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct Withdraw {
    #[key]
    from: u64,
    amount: i64,
}

#[app(services(Accounts))]
struct Bank;

struct Accounts;

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn none(&self, _ctx: &mut TxnCtx<'_, Bank>) -> HandlerResult {
        Ok(())
    }

    #[handler]
    fn two(&self, _ctx: &mut TxnCtx<'_, Bank>, d: &Deposit, w: &Withdraw) -> HandlerResult {
        let _ = (d, w);
        Ok(())
    }

    #[handler]
    fn tuple(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: (u64, i64)) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    fn mutable(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &mut Withdraw) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {}
