//! Parameters that do not fit the variant: a field name it does not have, a type other than
//! the field's, a struct variant named without `{ .. }`, a tuple field of another type.

use txn::{App, HandlerResult, TxnCtx};
use txn_macros::{handler, service};

struct Bank;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Ev {
    Deposit { to: u64, amount: i64 },
    Withdraw { from: u64, amount: i64 },
    Close(u64),
}

impl App for Bank {
    type Event = Ev;
    type Output = ();
}

struct Accounts;

#[service]
impl Accounts {
    #[handler(Ev::Deposit { .. })]
    fn deposit(&self, _ctx: &mut TxnCtx<'_, Bank>, account: u64, amount: &u32) -> HandlerResult {
        let _ = (account, amount);
        Ok(())
    }

    #[handler(Ev::Withdraw)]
    fn withdraw_without_braces(&self, _ctx: &mut TxnCtx<'_, Bank>, amount: i64) -> HandlerResult {
        let _ = amount;
        Ok(())
    }

    #[handler(Ev::Close)]
    fn close(&self, _ctx: &mut TxnCtx<'_, Bank>, account: String) -> HandlerResult {
        let _ = account;
        Ok(())
    }
}

fn main() {}
