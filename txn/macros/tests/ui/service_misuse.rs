//! #[service] with a key given twice and with an unknown argument, two handlers for one event
//! type, a method named like the generated `register`, #[service] on a struct and on a trait
//! impl.

mod common;

use common::Deposit;
use serde::{Deserialize, Serialize};
use txn::{HandlerResult, TxnCtx, app, handler, service};

#[app(services(Accounts, Audit))]
struct Bank;

#[service(key = u64, key = u32)]
impl Accounts {
    #[handler]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    fn deposit_again(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

struct Audit;

#[service(key = u64, name = "audit")]
impl Audit {
    #[handler]
    fn audit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Withdraw) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    fn register(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Withdraw;

#[service(key = u64)]
struct Accounts;

#[service(key = u64)]
impl Default for Bank {
    fn default() -> Self {
        Bank
    }
}

fn main() {}
