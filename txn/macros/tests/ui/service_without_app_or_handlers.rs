//! A service whose application type cannot be read off its handlers, and a service with no
//! handlers.

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

type Ctx<'a> = TxnCtx<'a, Bank>;

struct Accounts;

#[service]
impl Accounts {
    #[handler(Ev::Deposit { .. })]
    fn deposit(&self, _ctx: &mut Ctx<'_>, to: u64) -> HandlerResult {
        let _ = to;
        Ok(())
    }
}

struct Audit;

#[service(app = Bank)]
impl Audit {
    fn audit(&self) {}
}

fn main() {}
