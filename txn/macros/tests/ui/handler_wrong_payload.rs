//! Handler types the contract cannot use: an event type that is not serializable, and an error
//! type that is not an abort. Each error points at the type in the handler's signature.

mod common;

use common::Deposit;
use txn::{HandlerResult, TxnCtx, app, handler, service};

/// Not `Serialize`: it cannot go into the log.
#[derive(Clone, Debug)]
pub struct Audit {
    pub account: u64,
}

#[app(services(Accounts))]
struct Bank;

struct Accounts;

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn audit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Audit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> Result<(), String> {
        let _ = ev;
        Ok(())
    }
}

fn main() {}
