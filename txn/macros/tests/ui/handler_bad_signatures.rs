//! Handler signatures the dispatcher cannot call: `&mut self`, no return value, no context,
//! the old variant-naming argument and other arguments, async, generic. All are reported at
//! once, and the uses of `register` are not.

mod common;

use common::Deposit;
use txn::{AppBuilder, HandlerResult, TxnCtx, app, handler, service};

#[app(services(Accounts))]
struct Bank;

struct Accounts {
    opened: u64,
}

#[service(key = u64)]
impl Accounts {
    #[handler]
    fn deposit(&mut self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        self.opened += ev.amount as u64;
        Ok(())
    }

    #[handler]
    fn withdraw(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) {
        let _ = ev;
    }

    #[handler]
    fn audit(&self) -> HandlerResult {
        Ok(())
    }

    #[handler(Deposit { .. })]
    fn old_style(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler(internal, replicated)]
    fn internal_and_more(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler("deposit")]
    fn literal(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    async fn later(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }

    #[handler]
    fn generic<T>(&self, _ctx: &mut TxnCtx<'_, Bank>, ev: &Deposit) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {
    // `register` exists despite the mistakes above: they are the only errors reported.
    let mut b = AppBuilder::<Bank>::new();
    let accounts = b.add_service::<Accounts>("accounts", 1);
    Accounts { opened: 0 }.register(&mut b, accounts);
}
